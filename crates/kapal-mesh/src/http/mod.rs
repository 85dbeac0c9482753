//! The HTTP request path as a stack of small tower services.
//!
//! Outbound: [`ErrorResponses`] → [`Router`] → [`Observe`] → [`Mirror`] → [`Fault`] →
//! [`RequestTimeout`] → [`Retry`] → [`Balance`]. Inbound: [`ErrorResponses`] → [`InboundTarget`] → [`Authorize`] →
//! [`Observe`] → [`Balance`] (to the local application). The router (or the inbound target)
//! decides a request's [`RouteCtx`]; below it, each layer takes a [`Routed`] request, the route
//! beside the request. Facts about the connection ([`ConnInfo`]) are given to the layers that
//! need them when a connection's stack is built.

mod authz;
mod balance;
mod error;
mod fault;
mod mirror;
mod observe;
mod retry;
mod router;
mod timeout;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

pub use authz::{Authorize, authorize, authorize_tcp};
pub use balance::{Balance, Upstream};
pub use error::{Answered, ErrorResponses, ProxyError};
pub use fault::Fault;
pub use mirror::{Copied, MIRROR_TIMEOUT, Mirror, Tee};
pub use observe::Observe;
pub use retry::Retry;
pub use router::{InboundTarget, Router};
pub use timeout::RequestTimeout;

use crate::Body;
use crate::route::Rule;
use crate::state::{InboundKey, ServiceRt, Shared};

/// A request inside the proxy.
pub type Req = http::Request<Body>;
/// A response inside the proxy.
pub type Res = http::Response<Body>;
/// Boxed future of a layer.
pub type ResFuture = Pin<Box<dyn Future<Output = Result<Res, ProxyError>> + Send>>;

/// The connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub remote: SocketAddr,
    /// The client's SPIFFE ID when it connected with mesh mTLS.
    pub client_identity: Option<Arc<str>>,
    /// `inbound` or `outbound`.
    pub direction: &'static str,
}

/// The routing decision for a request.
#[derive(Clone)]
pub struct RouteCtx {
    /// The service the request was addressed to.
    pub service: Arc<ServiceRt>,
    /// The rule that matched.
    pub rule: Arc<Rule>,
    /// The backend service chosen by the traffic split.
    pub backend: Arc<ServiceRt>,
}

/// A request with the route it took, as the layers below the router see it. The route rides
/// beside the request rather than in its extensions, where it would cost three allocations per
/// request and a map lookup (and three reference counts) in every layer that reads it.
pub struct Routed {
    /// Where the request goes.
    pub ctx: RouteCtx,
    /// The request.
    pub req: Req,
    /// When this attempt began: when the request was routed, or for a retry, a mirrored copy,
    /// or after an injected delay, when that attempt did. One clock reading serves the layers
    /// below: latency, the retry budget, the balancer's choice and its RTT, and which idle
    /// upstream connections have expired.
    pub start: tokio::time::Instant,
}

impl Routed {
    /// `req`, routed by `ctx` now.
    pub fn new(ctx: RouteCtx, req: Req) -> Self {
        Routed { ctx, req, start: tokio::time::Instant::now() }
    }
}

/// The inner service of a layer below the router.
pub trait Inner:
    tower::Service<Routed, Response = Res, Error = ProxyError, Future = ResFuture> + Clone + Send + 'static
{
}
impl<S> Inner for S where
    S: tower::Service<Routed, Response = Res, Error = ProxyError, Future = ResFuture> + Clone + Send + 'static
{
}

/// The inner service of [`ErrorResponses`]: the router, or the inbound target, which route
/// plain requests.
pub trait Entry: tower::Service<Req, Response = Res, Error = ProxyError, Future = ResFuture> + Send + 'static {}
impl<S> Entry for S where S: tower::Service<Req, Response = Res, Error = ProxyError, Future = ResFuture> + Send + 'static
{}

/// A future that is already resolved (a layer answering without the inner service).
fn ready(result: Result<Res, ProxyError>) -> ResFuture {
    Box::pin(std::future::ready(result))
}

/// Whether a `Connection` header lists `token` (case-insensitive, comma-separated lists).
pub(crate) fn connection_has(headers: &http::HeaderMap, token: &str) -> bool {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// An authority's `host[:port]`, without the user info a URI may carry (`user:pw@`), which is
/// neither a `Host` nor an `:authority` (RFC 9112 §3.2, RFC 9113 §8.3.1).
pub(crate) fn without_userinfo(authority: &http::uri::Authority) -> &str {
    let a = authority.as_str();
    a.rsplit_once('@').map_or(a, |(_, host)| host)
}

/// A full body from bytes.
pub fn full(bytes: impl Into<bytes::Bytes>) -> Body {
    Body::new(http_body_util::Full::new(bytes.into()))
}

/// The outbound request stack.
pub type OutboundStack = ErrorResponses<Router<Observe<Mirror<Fault<RequestTimeout<Retry<Balance>>>>>>>;
/// The inbound request stack.
pub type InboundStack = ErrorResponses<InboundTarget<Authorize<Observe<Balance>>>>;

/// The outbound stack for the service named `service`.
pub fn outbound(shared: Arc<Shared>, service: String, conn: ConnInfo) -> OutboundStack {
    let balance = Balance::new(shared.clone());
    let resilient = Fault::new(RequestTimeout::new(Retry::new(shared.clone(), balance)));
    let inner = Observe::new(shared.clone(), conn, Mirror::new(shared.clone(), resilient));
    ErrorResponses::new(Router::new(shared, service, inner))
}

/// The inbound stack for the local application identified by `key`.
pub fn inbound(shared: Arc<Shared>, key: InboundKey, conn: ConnInfo) -> InboundStack {
    let observe = Observe::new(shared.clone(), conn.clone(), Balance::new(shared.clone()));
    let inner = Authorize::new(shared.clone(), &conn, observe);
    ErrorResponses::new(InboundTarget::new(shared, key, inner))
}

/// Implements `tower::Service` for a layer struct with an `inner` field whose logic lives in an
/// `async fn run(self, req) -> Result<Res, ProxyError>` method; the inner service is always
/// ready (readiness is decided per request, e.g. by the balancer).
///
/// A layer on every request's path instead does its synchronous part in
/// `fn serve(&mut self, req) -> ResFuture`, calls the inner service there, and moves into its
/// future only what it needs after the response: `layer_service!(Name, serve)`. Cloning the
/// layer per request would clone the whole stack below it, and its future would carry it.
///
/// Layers below the router take [`Routed`] requests; the router and the inbound target, which
/// take plain requests and route them, use `layer_service!(Name, entry)` with a `serve`.
macro_rules! layer_service {
    ($name:ident, serve) => {
        $crate::http::layer_service!(@impl $name, $crate::http::Routed, |this, req| this.serve(req));
    };
    // The router and the inbound target: they take plain requests and route them.
    ($name:ident, entry) => {
        $crate::http::layer_service!(@impl $name, $crate::http::Req, |this, req| this.serve(req));
    };
    ($name:ident) => {
        $crate::http::layer_service!(@impl $name, $crate::http::Routed, |this, req| Box::pin(this.clone().run(req)));
    };
    // A layer with nothing to do for most requests: when `$idle` says so of the request's route,
    // the request goes straight to the inner service, whose future is returned as it is — no
    // clone of the stack below, no future of this layer to allocate and poll.
    ($name:ident, idle: $idle:expr) => {
        $crate::http::layer_service!(@impl $name, $crate::http::Routed, |this, req| {
            let idle: fn(&$crate::http::RouteCtx, &$crate::http::Req) -> bool = $idle;
            if idle(&req.ctx, &req.req) {
                return this.inner.call(req);
            }
            Box::pin(this.clone().run(req))
        });
    };
    (@impl $name:ident, $req_ty:ty, |$this:ident, $req:ident| $call:expr) => {
        impl<S: $crate::http::Inner> tower::Service<$req_ty> for $name<S> {
            type Response = $crate::http::Res;
            type Error = $crate::http::ProxyError;
            type Future = $crate::http::ResFuture;

            fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
                std::task::Poll::Ready(Ok(()))
            }

            fn call(&mut self, $req: $req_ty) -> Self::Future {
                let $this = self;
                $call
            }
        }
    };
}
pub(crate) use layer_service;

/// Routes for the layers' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use super::RouteCtx;
    use crate::config::ProxyConfig;
    use crate::route::RequestView;
    use crate::state::Shared;

    /// The proxy state for one service `app` whose one rule is `rule` (YAML flow mapping entries),
    /// with `service` (YAML) added to the service, and the route context of `GET /` to it.
    pub(crate) fn route(service: &str, rule: &str) -> (Arc<Shared>, RouteCtx) {
        let yaml = format!(
            "apiVersion: kapal.dev/v1alpha1\nkind: ProxyConfig\nservices:
  - name: app
    endpoints: [{{address: '127.0.0.1:9'}}]
    routes: [{{{rule}}}]
    {service}
"
        );
        let shared = Arc::new(Shared::new(ProxyConfig::from_yaml(&yaml).unwrap(), Default::default(), None).unwrap());
        let service = shared.snapshot().services["app"].clone();
        let headers = http::HeaderMap::new();
        let view = RequestView { method: &http::Method::GET, path: "/", query: None, headers: &headers };
        let rule = service.routes.find(&view).unwrap().clone();
        (shared, RouteCtx { service: service.clone(), rule, backend: service })
    }
}

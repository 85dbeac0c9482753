//! Routing: which rule matches, redirects, header filters, URL rewrites and the weighted backend
//! choice.

use std::sync::{Arc, Weak};

use http::{HeaderValue, StatusCode, header};
use rand::Rng;

use super::{Inner, ProxyError, Req, Res, ResFuture, RouteCtx, Routed, full, layer_service, ready};
use crate::route::{self, RequestView, Rule};
use crate::state::{InboundKey, ServiceRt, Shared};

/// Outbound routing for one service, against the current config snapshot.
#[derive(Clone)]
pub struct Router<S> {
    shared: Arc<Shared>,
    service: Arc<str>,
    /// The route every request takes while the config is this generation: kept when routing
    /// does not depend on the request (no rules to match, no request filters, one backend), as
    /// for most services. A stack is built per connection, so this is the connection's. Weak,
    /// so that an idle connection does not keep a replaced config's services (and their
    /// endpoints' upstream connections) alive.
    fixed: Option<(u64, FixedRoute)>,
    inner: S,
}

impl<S: Inner> Router<S> {
    /// Routes requests addressed to `service`.
    pub fn new(shared: Arc<Shared>, service: String, inner: S) -> Self {
        Router { shared, service: service.into(), fixed: None, inner }
    }

    fn serve(&mut self, mut req: Req) -> ResFuture {
        let ctx = match self.route(&mut req) {
            Ok(Decision::Forward(ctx)) => ctx,
            Ok(Decision::Answered(res)) => return ready(Ok(res)),
            Err(e) => return ready(Err(e)),
        };
        if ctx.rule.response_headers.is_empty() {
            return self.inner.call(Routed::new(ctx, req));
        }
        let rule = ctx.rule.clone();
        let fut = self.inner.call(Routed::new(ctx, req));
        Box::pin(async move {
            let mut res = fut.await?;
            for m in &rule.response_headers {
                route::apply_header_modifier(res.headers_mut(), m);
            }
            Ok(res)
        })
    }

    /// Matches the request to a rule, applies its request filters and picks the backend (the
    /// [`RouteCtx`] the request goes on with), or answers it (a redirect).
    fn route(&mut self, req: &mut Req) -> Result<Decision, ProxyError> {
        let generation = self.shared.generation();
        if let Some((g, fixed)) = &self.fixed
            && *g == generation
            && let Some(ctx) = fixed.upgrade()
        {
            return Ok(Decision::Forward(ctx));
        }
        let snapshot = self.shared.snapshot();
        let service = snapshot
            .services
            .get(&*self.service)
            .ok_or_else(|| ProxyError::UnknownService(self.service.to_string()))?;
        let rule = if service.routes.is_empty() {
            service.default_rule.clone()
        } else {
            let view = RequestView {
                method: req.method(),
                path: req.uri().path(),
                query: req.uri().query(),
                headers: req.headers(),
            };
            service.routes.find(&view).cloned().ok_or(ProxyError::NoRoute)?
        };
        if let Some(redirect) = &rule.redirect {
            return Ok(Decision::Answered(redirect_response(redirect, req)));
        }
        for m in &rule.request_headers {
            route::apply_header_modifier(req.headers_mut(), m);
        }
        if let Some(rewrite) = &rule.rewrite {
            let uri = req.uri().clone();
            let rewritten = route::rewrite_uri(&uri, req.headers_mut(), rewrite)
                .ok_or_else(|| ProxyError::BadRequest(format!("URL rewrite of {uri} is not a valid URI")))?;
            *req.uri_mut() = rewritten;
        }
        let backend_name = match rule.backends.as_slice() {
            [(only, _)] => only,
            _ => rule.pick_backend(rand::rng().random::<f64>()),
        };
        let backend =
            snapshot.services.get(backend_name).ok_or_else(|| ProxyError::UnknownService(backend_name.to_string()))?;
        let fixed = service.routes.is_empty()
            && rule.request_headers.is_empty()
            && rule.rewrite.is_none()
            && rule.backends.len() == 1;
        let ctx = RouteCtx { service: service.clone(), rule, backend: backend.clone() };
        self.fixed = fixed.then(|| (generation, FixedRoute::new(&ctx)));
        Ok(Decision::Forward(ctx))
    }
}

/// A [`RouteCtx`] kept without keeping what it points to.
#[derive(Clone)]
struct FixedRoute {
    service: Weak<ServiceRt>,
    rule: Weak<Rule>,
    backend: Weak<ServiceRt>,
}

impl FixedRoute {
    fn new(ctx: &RouteCtx) -> Self {
        FixedRoute {
            service: Arc::downgrade(&ctx.service),
            rule: Arc::downgrade(&ctx.rule),
            backend: Arc::downgrade(&ctx.backend),
        }
    }

    fn upgrade(&self) -> Option<RouteCtx> {
        Some(RouteCtx {
            service: self.service.upgrade()?,
            rule: self.rule.upgrade()?,
            backend: self.backend.upgrade()?,
        })
    }
}

/// What routing made of a request.
enum Decision {
    /// Send it on; the response gets this rule's response filters.
    Forward(RouteCtx),
    /// The router answers it itself.
    Answered(Res),
}

layer_service!(Router, entry);

fn redirect_response(r: &crate::config::RequestRedirect, req: &Req) -> Res {
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("");
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = route::redirect_location(r, "http", host, pq);
    let mut res = http::Response::new(full(""));
    *res.status_mut() = StatusCode::from_u16(r.status_code).unwrap_or(StatusCode::FOUND);
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

/// Inbound: every request on a connection goes to the local application it is for.
#[derive(Clone)]
pub struct InboundTarget<S> {
    shared: Arc<Shared>,
    key: InboundKey,
    inner: S,
}

impl<S: Inner> InboundTarget<S> {
    /// Targets the local application identified by `key`.
    pub fn new(shared: Arc<Shared>, key: InboundKey, inner: S) -> Self {
        InboundTarget { shared, key, inner }
    }

    fn serve(&mut self, req: Req) -> ResFuture {
        let Some(local) = self.shared.inbound_target(self.key) else {
            return ready(Err(ProxyError::Internal("inbound target not in config")));
        };
        let local = local.service;
        let ctx = RouteCtx { service: local.clone(), rule: local.default_rule.clone(), backend: local };
        self.inner.call(Routed::new(ctx, req))
    }
}

layer_service!(InboundTarget, entry);

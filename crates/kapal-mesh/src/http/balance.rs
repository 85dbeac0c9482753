//! The innermost layer: pick an endpoint of the backend (P2C over peak EWMA) and send.

use std::sync::Arc;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{StatusCode, Uri, Version, header};
use hyper_util::rt::TokioIo;
use rand::Rng;
use tokio::time::Instant;

use super::{ProxyError, Req, ResFuture, Routed};
use crate::balance::{Outcome, Transition, p2c_at};
use crate::client::SendError;
use crate::metrics::EndpointLabels;
use crate::state::{Endpoint, ServiceRt, Shared};

/// Sends each request to one endpoint of the backend chosen by the router.
#[derive(Clone)]
pub struct Balance {
    shared: Arc<Shared>,
}

impl Balance {
    /// The balancer.
    pub fn new(shared: Arc<Shared>) -> Self {
        Balance { shared }
    }

    /// What a request needs before it is sent, done in the service's `call`: the endpoint, and
    /// the request rewritten for the protocol it goes out in.
    fn prepare(&self, routed: Routed) -> Result<Attempt, ProxyError> {
        let Routed { ctx, mut req, start } = routed;
        let backend = ctx.backend;
        let lb = &backend.cfg.load_balancer;
        // The attempt's start (`Routed::start`) serves as the time of the choice and of the RTT's start.
        let picked = p2c_at(&backend.endpoints, lb, start, || rand::rng().random::<f64>());
        let ep = Chosen::new(picked.ok_or_else(|| ProxyError::NoEndpoints(backend.cfg.name.clone()))?.endpoint.clone());
        // An HTTP/1.1 upgrade (WebSocket, …) is forwarded as HTTP/1.1 and then tunnelled.
        let upgrade = is_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
        let h2 = upgrade.is_none() && backend.upstream_h2().unwrap_or(req.version() == Version::HTTP_2);
        // HTTP/2 names the authority in the URI (`:authority`); the HTTP/1.1 pool sends the path
        // and a `Host`, which is what a client's HTTP/1.1 request mostly has already.
        if h2 {
            *req.version_mut() = Version::HTTP_2;
            *req.uri_mut() = absolute_uri(&req, ep.addr)?;
            // The authority is `:authority` now. A `Host` as well may not differ from it (RFC 9113
            // §8.3.1), and some servers (nginx) refuse a request with both.
            req.headers_mut().remove(header::HOST);
        } else {
            *req.version_mut() = Version::HTTP_11;
            if req.uri().authority().is_none()
                && let Some(host) = req.headers().get(header::HOST)
                && !is_authority(host.as_bytes())
            {
                return Err(ProxyError::BadRequest(format!("request target: invalid Host {host:?}")));
            }
        }
        Ok(Attempt { shared: self.shared.clone(), backend, ep, req, start, upgrade, h2 })
    }
}

/// The endpoint chosen for a request, which counts it among its pending requests from the
/// choice on: hyper's HTTP/2 server calls the stack for every stream of a batch of frames
/// before it polls any of their futures, and each choice must see the ones before it.
struct Chosen(Arc<Endpoint>);

impl Chosen {
    fn new(ep: Arc<Endpoint>) -> Self {
        ep.stats.begin();
        Chosen(ep)
    }
}

impl std::ops::Deref for Chosen {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.0
    }
}

impl Drop for Chosen {
    fn drop(&mut self) {
        self.0.stats.end();
    }
}

/// A request on its way to the endpoint chosen for it.
struct Attempt {
    shared: Arc<Shared>,
    backend: Arc<ServiceRt>,
    ep: Chosen,
    req: Req,
    start: Instant,
    /// The client's side of an HTTP/1.1 upgrade it asked for.
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// Whether it goes out over HTTP/2.
    h2: bool,
}

impl Attempt {
    /// The attempt's future. Each protocol has a future of its own, sized for its client alone:
    /// one future holding either would be as big as the larger (the HTTP/2 client's), and is
    /// copied whole into its box on every request.
    fn send(self) -> ResFuture {
        if self.h2 { Box::pin(self.send_h2()) } else { Box::pin(self.send_h1()) }
    }

    async fn send_h1(self) -> Result<super::Res, ProxyError> {
        let Attempt { shared, backend, ep, req, start, upgrade, .. } = self;
        let mut in_flight = InFlight { shared: &shared, backend: &backend, ep: &ep, start, done: false };
        let res = ep.client.send_h1(req, start).await;
        in_flight.answered(res, upgrade)
    }

    async fn send_h2(self) -> Result<super::Res, ProxyError> {
        let Attempt { shared, backend, ep, req, start, .. } = self;
        let mut in_flight = InFlight { shared: &shared, backend: &backend, ep: &ep, start, done: false };
        let res = ep.client.send_h2(req).await;
        in_flight.answered(res, None)
    }
}

/// Which endpoint answered (a response extension, for exported spans; set only when spans are
/// exported).
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Its address.
    pub addr: std::net::SocketAddr,
    /// Its SPIFFE identity, when meshed.
    pub identity: Option<Arc<str>>,
}

fn is_upgrade(req: &Req) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && super::connection_has(req.headers(), "upgrade")
}

/// Copies bytes both ways once client and upstream have both switched protocols.
async fn tunnel(downstream: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (down, up) = match tokio::try_join!(downstream, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(%error, "upgrade failed");
            return;
        }
    };
    let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
    if let Err(error) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
        tracing::debug!(%error, "upgraded connection ended with an error");
    }
}

/// Bookkeeping of one attempt. When the attempt is cancelled (a timeout fired), dropping it
/// still counts the elapsed time as latency and the attempt as a failure, so that a hanging
/// endpoint gets expensive for the balancer and can be ejected.
struct InFlight<'a> {
    shared: &'a Shared,
    backend: &'a ServiceRt,
    ep: &'a Endpoint,
    start: Instant,
    done: bool,
}

impl InFlight<'_> {
    /// Records the endpoint's answer (or failure) and makes it the layer's result; a switch of
    /// protocols the client asked for (`upgrade`) is tunnelled.
    fn answered(
        &mut self,
        res: Result<super::Res, SendError>,
        upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Result<super::Res, ProxyError> {
        let outcome = match &res {
            Ok(r) if r.status().is_server_error() => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        };
        self.finish(outcome, res.is_ok());
        match res {
            Ok(mut res) => {
                // Only exported spans read it; an extension costs two allocations per response.
                if self.shared.spans.is_some() {
                    res.extensions_mut().insert(Upstream { addr: self.ep.addr, identity: self.ep.identity.clone() });
                }
                if let Some(downstream) = upgrade
                    && res.status() == StatusCode::SWITCHING_PROTOCOLS
                {
                    let upstream = hyper::upgrade::on(&mut res);
                    tokio::spawn(tunnel(downstream, upstream));
                }
                Ok(res)
            }
            Err(SendError::Connect(e)) => Err(ProxyError::Connect(e)),
            Err(SendError::Io(e)) => Err(ProxyError::Upstream(e)),
        }
    }

    fn finish(&mut self, outcome: Outcome, answered: bool) {
        self.done = true;
        let lb = &self.backend.cfg.load_balancer;
        if answered {
            let end = Instant::now();
            self.ep.stats.observe_rtt_at(lb, end.saturating_duration_since(self.start), end);
        }
        let (service, endpoint) = (&self.backend.cfg.name, self.ep.addr);
        match self.ep.stats.record(self.backend.cfg.outlier_detection.as_ref(), outcome) {
            Transition::Ejected => {
                tracing::warn!(%service, %endpoint, "endpoint ejected after failures");
                let labels = EndpointLabels { service: service.clone(), endpoint: endpoint.to_string() };
                self.shared.metrics.ejections.get_or_create(&labels).inc();
            }
            Transition::Recovered => tracing::info!(%service, %endpoint, "endpoint recovered"),
            Transition::None => {}
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.ep.stats.observe_rtt(&self.backend.cfg.load_balancer, self.start.elapsed());
            self.finish(Outcome::Failure, false);
        }
    }
}

/// Whether `host` can be a `Host` header's value, `host[:port]` (RFC 9110 §7.2): the characters
/// of a URI authority without user info. Checked in place; `Authority`'s parser would copy it.
fn is_authority(host: &[u8]) -> bool {
    !host.is_empty() && host.iter().all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:%[]".contains(b))
}

/// `http://<original authority><path>`, for HTTP/2 upstreams (`:scheme`, `:authority`, `:path`);
/// the connector decides where to connect. Built from the
/// request's own (shared) parts rather than formatted and parsed again: this runs per request.
fn absolute_uri(req: &Req, fallback: std::net::SocketAddr) -> Result<Uri, ProxyError> {
    let bad = |e: &dyn std::fmt::Display| ProxyError::BadRequest(format!("request target: {e}"));
    let authority = match req.uri().authority() {
        Some(a) if a.as_str().contains('@') => Authority::try_from(super::without_userinfo(a)).map_err(|e| bad(&e))?,
        Some(a) => a.clone(),
        None => match req.headers().get(header::HOST) {
            Some(host) => Authority::try_from(host.as_bytes()).map_err(|e| bad(&e))?,
            None => Authority::try_from(fallback.to_string()).map_err(|e| bad(&e))?,
        },
    };
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = Some(req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
    Uri::from_parts(parts).map_err(|e| bad(&e))
}

impl tower::Service<Routed> for Balance {
    type Response = super::Res;
    type Error = ProxyError;
    type Future = ResFuture;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), ProxyError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Routed) -> ResFuture {
        match self.prepare(req) {
            Ok(attempt) => attempt.send(),
            Err(e) => super::ready(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, host: Option<&str>) -> Req {
        let mut b = http::Request::get(uri);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        b.body(super::super::full("")).unwrap()
    }

    #[test]
    fn absolute_uri_keeps_the_original_authority_and_target() {
        let ep: std::net::SocketAddr = "10.0.0.1:8080".parse().unwrap();
        let uri = absolute_uri(&req("/a/b?x=1", Some("web.default:80")), ep).unwrap();
        assert_eq!(uri, "http://web.default:80/a/b?x=1");
        let uri = absolute_uri(&req("http://api.example/v1", Some("ignored")), ep).unwrap();
        assert_eq!(uri, "http://api.example/v1");
        // `:authority` may not carry user info (RFC 9113 §8.3.1).
        let uri = absolute_uri(&req("http://user:pw@api.example:81/v1", None), ep).unwrap();
        assert_eq!(uri, "http://api.example:81/v1");
        assert_eq!(absolute_uri(&req("/", None), ep).unwrap(), "http://10.0.0.1:8080/");
        let err = absolute_uri(&req("/", Some("bad host")), ep).unwrap_err();
        assert_eq!(err.reason(), "bad-request");
    }

    #[tokio::test]
    async fn a_chosen_endpoint_counts_the_request_from_the_choice_until_the_attempt_ends() {
        use tower::Service;

        use crate::config::ProxyConfig;
        use crate::http::{RouteCtx, full};
        use crate::route::RequestView;

        // Two endpoints nothing listens on (loopback; the attempts below are never sent, but
        // the last, which is refused).
        let yaml = "apiVersion: kapal.dev/v1alpha1\nkind: ProxyConfig\nservices:
  - name: app
    endpoints: [{address: '127.0.0.1:9'}, {address: '127.0.0.2:9'}]
    routes:
      - matches: [{path: {type: PathPrefix, value: /}}]
";
        let shared = Arc::new(Shared::new(ProxyConfig::from_yaml(yaml).unwrap(), Default::default(), None).unwrap());
        let service = shared.snapshot().services["app"].clone();
        let headers = http::HeaderMap::new();
        let view = RequestView { method: &http::Method::GET, path: "/", query: None, headers: &headers };
        let rule = service.routes.find(&view).unwrap().clone();
        let ctx = RouteCtx { service: service.clone(), rule, backend: service.clone() };
        let pending = || service.endpoints.iter().map(|w| w.endpoint.stats.pending()).collect::<Vec<_>>();
        let mut balance = Balance::new(shared.clone());
        // As hyper's HTTP/2 server does with a batch of streams: every call before any poll.
        // The second choice sees the first and takes the other endpoint (same latency, fewer
        // pending).
        let first = balance.call(Routed::new(ctx.clone(), Req::new(full(""))));
        assert_eq!(pending().iter().sum::<usize>(), 1);
        let second = balance.call(Routed::new(ctx.clone(), Req::new(full(""))));
        assert_eq!(pending(), [1, 1]);
        // An attempt dropped unpolled (a timeout, the client gone) ends its count.
        drop(first);
        assert_eq!(pending().iter().sum::<usize>(), 1);
        drop(second);
        assert_eq!(pending(), [0, 0]);
        // So does one that ran: nothing listens, the connection is refused.
        let refused = balance.call(Routed::new(ctx.clone(), Req::new(full("")))).await;
        assert!(matches!(refused, Err(ProxyError::Connect(_))), "{refused:?}");
        assert_eq!(pending(), [0, 0]);
    }

    #[test]
    fn host_values_are_checked_as_authorities() {
        for good in ["web", "web.default.svc:8080", "10.0.0.1:80", "[::1]:8080", "xn--bcher-kva.example"] {
            assert!(is_authority(good.as_bytes()), "{good}");
        }
        for bad in ["", "bad host", "a/b", "user@host", "a\"b", "tab\there"] {
            assert!(!is_authority(bad.as_bytes()), "{bad}");
        }
    }
}

//! Routing: which rule matches, redirects, header filters, URL rewrites and the weighted backend
//! choice.

use std::sync::Arc;

use http::{HeaderValue, StatusCode, header};
use rand::Rng;

use super::{Inner, ProxyError, Req, Res, RouteCtx, full, layer_service};
use crate::route::{self, RequestView};
use crate::state::{InboundKey, Shared};

/// Outbound routing for one service, against the current config snapshot.
#[derive(Clone)]
pub struct Router<S> {
    shared: Arc<Shared>,
    service: Arc<str>,
    inner: S,
}

impl<S: Inner> Router<S> {
    /// Routes requests addressed to `service`.
    pub fn new(shared: Arc<Shared>, service: String, inner: S) -> Self {
        Router { shared, service: service.into(), inner }
    }

    async fn run(mut self, mut req: Req) -> Result<Res, ProxyError> {
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
            return Ok(redirect_response(redirect, &req));
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
        let backend_name = rule.pick_backend(rand::rng().random::<f64>());
        let backend =
            snapshot.services.get(backend_name).ok_or_else(|| ProxyError::UnknownService(backend_name.to_string()))?;
        req.extensions_mut().insert(RouteCtx {
            service: service.clone(),
            rule: rule.clone(),
            backend: backend.clone(),
        });
        let mut res = self.inner.call(req).await?;
        for m in &rule.response_headers {
            route::apply_header_modifier(res.headers_mut(), m);
        }
        Ok(res)
    }
}

layer_service!(Router);

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

    async fn run(mut self, mut req: Req) -> Result<Res, ProxyError> {
        let local =
            self.shared.inbound_target(self.key).ok_or(ProxyError::Internal("inbound target not in config"))?.service;
        req.extensions_mut().insert(RouteCtx {
            service: local.clone(),
            rule: local.default_rule.clone(),
            backend: local,
        });
        self.inner.call(req).await
    }
}

layer_service!(InboundTarget);

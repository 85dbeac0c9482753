//! Retries with a budget, a replay buffer for small bodies and a per-try timeout.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Body as _;

use super::{Inner, ProxyError, Res, ResFuture, RouteCtx, Routed, full, layer_service};
use crate::config::RetryPolicy;
use crate::metrics::RetryLabels;
use crate::state::Shared;

/// Retries failed attempts as the route's retry policy allows, within the service's budget.
#[derive(Clone)]
pub struct Retry<S> {
    shared: Arc<Shared>,
    inner: S,
}

fn retryable(policy: &RetryPolicy, res: &Result<Res, ProxyError>) -> bool {
    match res {
        Ok(r) => {
            policy.codes.contains(&r.status().as_u16())
                || r.headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok()?.parse::<u32>().ok())
                    .is_some_and(|code| policy.grpc_codes.contains(&code))
        }
        // The request never left: safe for any method.
        Err(ProxyError::Connect(_)) => policy.on_connect_failure,
        Err(ProxyError::Upstream(_) | ProxyError::TryTimeout) => policy.on_reset,
        Err(_) => false,
    }
}

fn replay(ctx: &RouteCtx, parts: &http::request::Parts, body: &Bytes) -> Routed {
    let mut req = http::Request::new(full(body.clone()));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    *req.extensions_mut() = parts.extensions.clone();
    Routed::new(ctx.clone(), req)
}

impl<S: Inner> Retry<S> {
    /// Wraps `inner`.
    pub fn new(shared: Arc<Shared>, inner: S) -> Self {
        Retry { shared, inner }
    }

    /// One attempt: the inner service's future, bounded by the per-try timeout if there is one.
    fn attempt(&mut self, req: Routed, per_try: Option<std::time::Duration>) -> ResFuture {
        let fut = self.inner.call(req);
        match per_try {
            None => fut,
            Some(limit) => {
                Box::pin(async move { tokio::time::timeout(limit, fut).await.map_err(|_| ProxyError::TryTimeout)? })
            }
        }
    }

    fn serve(&mut self, routed: Routed) -> ResFuture {
        let ctx = &routed.ctx;
        // Every request to a service that retries earns the budget its share; only retries
        // spend it.
        if ctx.service.retries {
            ctx.service.budget.deposit(routed.start);
        }
        if ctx.rule.retry.is_some() {
            return Box::pin(self.clone().run(routed));
        }
        // One attempt: nothing to keep for after it but the per-try timeout.
        let per_try = ctx.rule.timeouts.backend_request.and_then(|d| d.enabled());
        self.attempt(routed, per_try)
    }

    async fn run(mut self, routed: Routed) -> Result<Res, ProxyError> {
        let ctx = routed.ctx.clone();
        let per_try = ctx.rule.timeouts.backend_request.and_then(|d| d.enabled());
        let Some(policy) = ctx.rule.retry.as_ref() else { return self.attempt(routed, per_try).await };
        // Only bodies of known, small size are buffered for replay; streams go through once.
        if routed.req.body().size_hint().upper().is_none_or(|n| n > policy.max_body_bytes) {
            return self.attempt(routed, per_try).await;
        }
        let (parts, body) = routed.req.into_parts();
        // The size hint is exact for Content-Length bodies and hyper enforces it, so this is bounded.
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => return Err(ProxyError::BadRequest(format!("reading request body: {e}"))),
        };
        let labels = |result: &'static str| RetryLabels {
            service: ctx.service.cfg.name.clone(),
            route: ctx.rule.name.clone(),
            result,
        };
        let mut retries = 0;
        loop {
            let res = self.attempt(replay(&ctx, &parts, &body), per_try).await;
            if retries >= policy.attempts || !retryable(policy, &res) {
                return res;
            }
            if !ctx.service.budget.try_withdraw() {
                self.shared.metrics.retries.get_or_create(&labels("budget_exhausted")).inc();
                return res;
            }
            retries += 1;
            self.shared.metrics.retries.get_or_create(&labels("retried")).inc();
            tracing::debug!(attempt = retries, "retrying");
            if let Some(backoff) = policy.backoff.and_then(|d| d.enabled()) {
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

layer_service!(Retry, serve);

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

/// Whether a failed attempt may be made again.
///
/// A request that never reached the endpoint (a connect failure, or an HTTP/2 stream the server
/// refused) may go again whatever its method. Once the endpoint had it (an error status, a
/// reset, a per-try timeout), only idempotent methods (RFC 9110 §9.2.2) go again, unless the
/// policy says the route's other requests are safe to repeat too (`nonIdempotent`). The
/// `grpcCodes` are, as in gRPC's own retry policy, the route owner's word that calls failing
/// with them are safe to repeat: every gRPC call is a POST, retried on them all the same.
fn retryable(policy: &RetryPolicy, method: &http::Method, res: &Result<Res, ProxyError>) -> bool {
    let repeatable = policy.non_idempotent || method.is_idempotent();
    match res {
        Ok(r) => {
            (repeatable && policy.codes.contains(&r.status().as_u16()))
                || r.headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok()?.parse::<u32>().ok())
                    .is_some_and(|code| policy.grpc_codes.contains(&code))
        }
        Err(ProxyError::Connect(_)) => policy.on_connect_failure,
        Err(ProxyError::Upstream(_) | ProxyError::TryTimeout) => repeatable && policy.on_reset,
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
            if retries >= policy.attempts || !retryable(policy, &parts.method, &res) {
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use http::{Method, StatusCode};
    use tokio::time::Instant;
    use tower::Service;

    use super::*;
    use crate::http::{Req, RouteCtx};

    /// What the scripted endpoint does with one attempt.
    enum Step {
        Status(u16),
        Grpc(u32),
        Refused,
        Reset,
        /// Answers 200 after this long.
        Slow(Duration),
    }

    /// One attempt as the endpoint saw it.
    #[derive(Debug, PartialEq)]
    struct Seen {
        method: Method,
        body: Bytes,
        at: Duration,
    }

    struct Script {
        steps: Mutex<VecDeque<Step>>,
        seen: Mutex<Vec<Seen>>,
        epoch: Instant,
    }

    /// The retry layer over a scripted endpoint, for a service whose one rule has `rule` (YAML
    /// flow mapping entries), the route context of a request to it, and the script.
    fn layer(rule: &str, steps: Vec<Step>) -> (Retry<impl Inner>, RouteCtx, Arc<Script>) {
        layer_in("", rule, steps)
    }

    /// As [`layer`], with `service` (YAML) added to the service.
    fn layer_in(service: &str, rule: &str, steps: Vec<Step>) -> (Retry<impl Inner>, RouteCtx, Arc<Script>) {
        let (shared, ctx) = crate::http::testing::route(service, rule);
        let script =
            Arc::new(Script { steps: Mutex::new(steps.into()), seen: Mutex::default(), epoch: Instant::now() });
        let endpoint = script.clone();
        let inner = tower::service_fn(move |routed: Routed| {
            let script = endpoint.clone();
            let res: ResFuture = Box::pin(async move {
                let (parts, body) = routed.req.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                script.seen.lock().unwrap().push(Seen { method: parts.method, body, at: script.epoch.elapsed() });
                let step = script.steps.lock().unwrap().pop_front().unwrap_or(Step::Status(200));
                let status = |code: u16| http::Response::builder().status(code).body(full("")).unwrap();
                match step {
                    Step::Status(code) => Ok(status(code)),
                    Step::Grpc(code) => {
                        let mut res = status(200);
                        res.headers_mut().insert("grpc-status", code.into());
                        Ok(res)
                    }
                    Step::Refused => Err(ProxyError::Connect("connection refused".into())),
                    Step::Reset => Err(ProxyError::Upstream("connection reset".into())),
                    Step::Slow(d) => {
                        tokio::time::sleep(d).await;
                        Ok(status(200))
                    }
                }
            });
            res
        });
        (Retry::new(shared, inner), ctx, script)
    }

    fn request(ctx: &RouteCtx, method: Method, body: &'static str) -> Routed {
        let mut req = Req::new(full(body));
        *req.method_mut() = method;
        Routed::new(ctx.clone(), req)
    }

    async fn status(retry: &mut Retry<impl Inner>, routed: Routed) -> Result<StatusCode, String> {
        retry.call(routed).await.map(|r| r.status()).map_err(|e| e.to_string())
    }

    #[tokio::test(start_paused = true)]
    async fn idempotent_requests_are_replayed_with_their_body_after_the_backoff() {
        let steps = vec![Step::Status(503), Step::Reset, Step::Status(200)];
        let (mut retry, ctx, script) = layer("retry: {attempts: 2, codes: [503], backoff: 25ms}", steps);
        assert_eq!(status(&mut retry, request(&ctx, Method::PUT, "payload")).await, Ok(StatusCode::OK));
        let seen = script.seen.lock().unwrap();
        let attempt = |ms| Seen { method: Method::PUT, body: Bytes::from("payload"), at: Duration::from_millis(ms) };
        assert_eq!(*seen, [attempt(0), attempt(25), attempt(50)]);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_run_out_with_the_last_answer() {
        let steps = vec![Step::Status(503), Step::Status(502), Step::Status(503), Step::Status(200)];
        let (mut retry, ctx, script) = layer("retry: {attempts: 2, codes: [502, 503]}", steps);
        assert_eq!(status(&mut retry, request(&ctx, Method::GET, "")).await, Ok(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(script.seen.lock().unwrap().len(), 3);
        // A status not in `codes` is an answer, not a failure to retry.
        let (mut retry, ctx, script) = layer("retry: {attempts: 2, codes: [503]}", vec![Step::Status(500)]);
        assert_eq!(status(&mut retry, request(&ctx, Method::GET, "")).await, Ok(StatusCode::INTERNAL_SERVER_ERROR));
        assert_eq!(script.seen.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_post_goes_again_only_when_it_never_reached_the_endpoint() {
        // The endpoint had it: a status, a reset.
        for step in [Step::Status(503), Step::Reset] {
            let (mut retry, ctx, script) = layer("retry: {attempts: 2, codes: [503]}", vec![step]);
            assert!(status(&mut retry, request(&ctx, Method::POST, "order")).await != Ok(StatusCode::OK));
            assert_eq!(script.seen.lock().unwrap().len(), 1);
        }
        // It never left.
        let (mut retry, ctx, script) = layer("retry: {attempts: 2, codes: [503]}", vec![Step::Refused]);
        assert_eq!(status(&mut retry, request(&ctx, Method::POST, "order")).await, Ok(StatusCode::OK));
        assert_eq!(script.seen.lock().unwrap().len(), 2);
        // A gRPC status the policy names: the route owner says such calls are safe to repeat.
        let (mut retry, ctx, script) = layer("retry: {attempts: 2, codes: [], grpcCodes: [14]}", vec![Step::Grpc(14)]);
        assert_eq!(status(&mut retry, request(&ctx, Method::POST, "call")).await, Ok(StatusCode::OK));
        assert_eq!(script.seen.lock().unwrap().len(), 2);
        // Or the policy says the route's POSTs are safe to repeat.
        let policy = "retry: {attempts: 2, codes: [503], nonIdempotent: true}";
        let (mut retry, ctx, script) = layer(policy, vec![Step::Status(503), Step::Reset]);
        assert_eq!(status(&mut retry, request(&ctx, Method::POST, "order")).await, Ok(StatusCode::OK));
        assert_eq!(script.seen.lock().unwrap().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn connect_failures_and_resets_are_retried_only_as_the_policy_says() {
        let policy = "retry: {attempts: 2, onConnectFailure: false, onReset: false}";
        for step in [Step::Refused, Step::Reset] {
            let (mut retry, ctx, script) = layer(policy, vec![step]);
            assert!(status(&mut retry, request(&ctx, Method::GET, "")).await.is_err());
            assert_eq!(script.seen.lock().unwrap().len(), 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_per_try_timeout_is_retried_and_the_next_attempt_starts_when_it_fires() {
        let rule = "timeouts: {backendRequest: 100ms}, retry: {attempts: 2}";
        let steps = vec![Step::Slow(Duration::from_secs(5)), Step::Slow(Duration::from_millis(10))];
        let (mut retry, ctx, script) = layer(rule, steps);
        let started = Instant::now();
        assert_eq!(status(&mut retry, request(&ctx, Method::GET, "")).await, Ok(StatusCode::OK));
        assert_eq!(started.elapsed(), Duration::from_millis(110));
        let at: Vec<_> = script.seen.lock().unwrap().iter().map(|s| s.at).collect();
        assert_eq!(at, [Duration::ZERO, Duration::from_millis(100)]);
        // The last attempt's timeout is the answer.
        let steps = vec![Step::Slow(Duration::from_secs(5)), Step::Slow(Duration::from_secs(5))];
        let (mut retry, ctx, _) = layer("timeouts: {backendRequest: 100ms}, retry: {attempts: 1}", steps);
        let err = status(&mut retry, request(&ctx, Method::GET, "")).await.unwrap_err();
        assert_eq!(err, ProxyError::TryTimeout.to_string());
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_over_the_replay_limit_or_of_unknown_size_goes_once() {
        let policy = "retry: {attempts: 2, codes: [503], maxBodyBytes: 4}";
        let (mut retry, ctx, script) = layer(policy, vec![Step::Status(503)]);
        assert_eq!(status(&mut retry, request(&ctx, Method::PUT, "12345")).await, Ok(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(script.seen.lock().unwrap().len(), 1);
        // Within the limit it is replayed.
        let (mut retry, ctx, script) = layer(policy, vec![Step::Status(503)]);
        assert_eq!(status(&mut retry, request(&ctx, Method::PUT, "1234")).await, Ok(StatusCode::OK));
        assert_eq!(script.seen.lock().unwrap().len(), 2);
        // A streamed body has no known size.
        let (mut retry, ctx, script) = layer(policy, vec![Step::Status(503)]);
        let chunks =
            futures::stream::iter([Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from("a")))]);
        let req = Req::new(crate::Body::new(http_body_util::StreamBody::new(chunks)));
        assert_eq!(status(&mut retry, Routed::new(ctx.clone(), req)).await, Ok(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(script.seen.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_bounds_retries_across_requests() {
        let budget = "retryBudget: {ratio: 0.5, minRetriesPerSecond: 1, ttl: 2s}";
        let steps = (0..20).map(|_| Step::Status(503)).collect();
        let (mut retry, ctx, script) = layer_in(budget, "retry: {attempts: 5, codes: [503]}", steps);
        let mut attempts = Vec::new();
        for _ in 0..3 {
            assert_eq!(status(&mut retry, request(&ctx, Method::GET, "")).await, Ok(StatusCode::SERVICE_UNAVAILABLE));
            attempts.push(std::mem::take(&mut *script.seen.lock().unwrap()).len());
        }
        // Retries may be fewer than the reserve of 2 (1/s over 2 s) plus half the requests: the
        // first request retries 3 times (2.5 allowed after 1 request), the second not at all
        // (3 after 2), the third once (3.5 after 3).
        assert_eq!(attempts, [4, 1, 2]);
    }
}

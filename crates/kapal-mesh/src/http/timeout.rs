//! The route's whole-request timeout (`timeouts.request`), covering all retries.

use super::{Inner, ProxyError, Res, Routed, layer_service};

/// Fails with 504 when the route's request timeout fires.
#[derive(Clone)]
pub struct RequestTimeout<S> {
    inner: S,
}

impl<S: Inner> RequestTimeout<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        RequestTimeout { inner }
    }

    async fn run(mut self, req: Routed) -> Result<Res, ProxyError> {
        let limit = req.ctx.rule.timeouts.request.and_then(|d| d.enabled());
        let fut = self.inner.call(req);
        match limit {
            None => fut.await,
            Some(limit) => tokio::time::timeout(limit, fut).await.map_err(|_| ProxyError::RequestTimeout)?,
        }
    }
}

layer_service!(RequestTimeout, idle: |ctx, _| ctx.rule.timeouts.request.and_then(|d| d.enabled()).is_none());

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::time::Instant;
    use tower::Service;

    use super::*;
    use crate::http::{Req, ResFuture, Retry, full, testing};

    /// Counts what happens to its attempts, each answering 200 after `delay`.
    #[derive(Default)]
    struct Endpoint {
        started: AtomicUsize,
        answered: AtomicUsize,
        dropped: AtomicUsize,
    }

    struct Dropped(Arc<Endpoint>, bool);

    impl Drop for Dropped {
        fn drop(&mut self) {
            if !self.1 {
                self.0.dropped.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn slow(endpoint: &Arc<Endpoint>, delay: Duration) -> impl Inner {
        let endpoint = endpoint.clone();
        tower::service_fn(move |_: Routed| {
            let endpoint = endpoint.clone();
            let res: ResFuture = Box::pin(async move {
                endpoint.started.fetch_add(1, Ordering::SeqCst);
                let mut guard = Dropped(endpoint.clone(), false);
                tokio::time::sleep(delay).await;
                guard.1 = true;
                endpoint.answered.fetch_add(1, Ordering::SeqCst);
                Ok(http::Response::new(full("ok")))
            });
            res
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_request_timeout_fails_the_request_when_it_fires_and_drops_the_attempt() {
        let (_, ctx) = testing::route("", "timeouts: {request: 1s}");
        let endpoint = Arc::default();
        let started = Instant::now();
        let res = RequestTimeout::new(slow(&endpoint, Duration::from_secs(5)))
            .call(Routed::new(ctx, Req::new(full(""))))
            .await;
        assert!(matches!(res, Err(ProxyError::RequestTimeout)));
        assert_eq!(res.unwrap_err().status(), http::StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        let e = &endpoint;
        assert_eq!(
            (e.started.load(Ordering::SeqCst), e.answered.load(Ordering::SeqCst), e.dropped.load(Ordering::SeqCst)),
            (1, 0, 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_request_timeout_the_answer_is_waited_for() {
        let (_, ctx) = testing::route("", "name: plain");
        let endpoint = Arc::default();
        let started = Instant::now();
        let res = RequestTimeout::new(slow(&endpoint, Duration::from_secs(5)))
            .call(Routed::new(ctx, Req::new(full(""))))
            .await;
        assert_eq!(res.unwrap().status(), http::StatusCode::OK);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn the_request_timeout_covers_every_retry() {
        let (shared, ctx) =
            testing::route("", "timeouts: {request: 250ms, backendRequest: 100ms}, retry: {attempts: 5}");
        let endpoint = Arc::default();
        let mut stack = RequestTimeout::new(Retry::new(shared, slow(&endpoint, Duration::from_secs(5))));
        let started = Instant::now();
        let res = stack.call(Routed::new(ctx, Req::new(full("")))).await;
        assert!(matches!(res, Err(ProxyError::RequestTimeout)));
        assert_eq!(started.elapsed(), Duration::from_millis(250));
        // Tries at 0, 100 and 200 ms (each cut by the per-try timeout or, the last, by this one).
        let e = &endpoint;
        assert_eq!(
            (e.started.load(Ordering::SeqCst), e.answered.load(Ordering::SeqCst), e.dropped.load(Ordering::SeqCst)),
            (3, 0, 3)
        );
    }
}

//! Fault injection: delay and/or abort a percentage of requests.

use std::time::Duration;

use http::StatusCode;
use rand::Rng;

use super::{Inner, ProxyError, Res, Routed, layer_service};

/// Applies the route's `fault` settings.
#[derive(Clone)]
pub struct Fault<S> {
    inner: S,
}

fn roll(percentage: f64) -> bool {
    rand::rng().random::<f64>() * 100.0 < percentage
}

impl<S: Inner> Fault<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Fault { inner }
    }

    async fn run(mut self, mut req: Routed) -> Result<Res, ProxyError> {
        if let Some(fault) = &req.ctx.rule.fault {
            let delay: Option<Duration> = fault.delay.as_ref().filter(|d| roll(d.percentage)).map(|d| d.fixed_delay.0);
            let abort = fault.abort.as_ref().filter(|a| roll(a.percentage)).map(|a| a.http_status);
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
                // The layers below time the attempt, which starts only now: an injected delay
                // must not count as the endpoint's latency.
                req.start = tokio::time::Instant::now();
            }
            if let Some(status) = abort {
                return Err(ProxyError::Fault(StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)));
            }
        }
        self.inner.call(req).await
    }
}

layer_service!(Fault, idle: |ctx, _| ctx.rule.fault.is_none());

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::time::Instant;
    use tower::Service;

    use super::*;
    use crate::http::{Req, ResFuture, RouteCtx, full};

    /// A route whose every request is delayed by 50 ms.
    fn delayed_route() -> RouteCtx {
        crate::http::testing::route("", "fault: {delay: {fixedDelay: 50ms, percentage: 100}}").1
    }

    #[tokio::test(start_paused = true)]
    async fn the_attempt_after_an_injected_delay_starts_when_the_delay_ends() {
        let seen = Arc::new(Mutex::new(None));
        let record = seen.clone();
        let inner = tower::service_fn(move |req: Routed| {
            *record.lock().unwrap() = Some(req.start);
            let res: ResFuture = Box::pin(async { Ok(http::Response::new(full("ok"))) });
            res
        });
        let routed = Routed::new(delayed_route(), Req::new(full("")));
        let routed_at = routed.start;
        Fault::new(inner).call(routed).await.unwrap();
        let start = seen.lock().unwrap().expect("the inner service was called");
        // The balancer times the endpoint from `start`: the injected delay is not its latency.
        assert_eq!(start - routed_at, Duration::from_millis(50));
        assert_eq!(Instant::now(), start);
    }
}

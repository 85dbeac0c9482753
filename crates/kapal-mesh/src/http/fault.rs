//! Fault injection: delay and/or abort a percentage of requests.

use std::time::Duration;

use http::StatusCode;
use rand::Rng;

use super::{Inner, ProxyError, Req, Res, layer_service, route_ctx};

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

    async fn run(mut self, req: Req) -> Result<Res, ProxyError> {
        let ctx = route_ctx(&req)?;
        if let Some(fault) = &ctx.rule.fault {
            let delay: Option<Duration> = fault.delay.as_ref().filter(|d| roll(d.percentage)).map(|d| d.fixed_delay.0);
            let abort = fault.abort.as_ref().filter(|a| roll(a.percentage)).map(|a| a.http_status);
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            if let Some(status) = abort {
                return Err(ProxyError::Fault(StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)));
            }
        }
        self.inner.call(req).await
    }
}

layer_service!(Fault, idle: |ctx, _| ctx.rule.fault.is_none());

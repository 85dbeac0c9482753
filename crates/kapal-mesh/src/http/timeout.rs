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

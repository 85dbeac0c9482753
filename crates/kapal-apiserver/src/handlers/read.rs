//! GET of one object.

use std::time::Duration;

use kapal_api::ApiError;

use super::list::too_large_rv;
use axum::body::Body;
use http::{Response, StatusCode};

use super::Ctx;
use crate::ApiServer;
use crate::cache::Cached;
use crate::http::bytes_response;
use crate::output::{negotiate, single};

impl ApiServer {
    pub(crate) async fn get(&self, ctx: &Ctx) -> Result<Response<Body>, ApiError> {
        let output = negotiate(&ctx.headers, &ctx.query)?;
        let cached = self.read_object(ctx).await?;
        Ok(bytes_response(StatusCode::OK, "application/json", single(&ctx.served, &output, &cached)))
    }

    /// Reads the object a named request addresses, honouring `resourceVersion` semantics.
    pub(crate) async fn read_object(&self, ctx: &Ctx) -> Result<Cached, ApiError> {
        self.catch_up(ctx).await?;
        self.cached(ctx)
    }

    /// Waits until the cache is fresh enough for a read's `resourceVersion`: unset means the
    /// latest (a consistent read), `0` anything, `N` at least N (504 if it never comes).
    pub(crate) async fn catch_up(&self, ctx: &Ctx) -> Result<(), ApiError> {
        match ctx.query.get("resourceVersion") {
            None | Some("") => {
                self.cache.sync().await;
            }
            Some("0") => {}
            Some(rv) => {
                let rv: i64 =
                    rv.parse().map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?;
                if !self.cache.wait_for(rv, Duration::from_secs(3)).await {
                    return Err(too_large_rv(rv, self.cache.revision()));
                }
            }
        }
        Ok(())
    }

    /// The cached object a named request addresses, or 404.
    pub(crate) fn cached(&self, ctx: &Ctx) -> Result<Cached, ApiError> {
        let info = &ctx.served.info;
        let name = ctx.path.name.as_deref().unwrap_or_default();
        self.cache
            .get(&info.key(ctx.namespace(), name))
            .ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))
    }
}

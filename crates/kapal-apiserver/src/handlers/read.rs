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
        self.cached(ctx).await
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

    /// The object a named request addresses (from the cache, or the store for kinds the cache
    /// does not hold), or 404.
    pub(crate) async fn cached(&self, ctx: &Ctx) -> Result<Cached, ApiError> {
        let info = &ctx.served.info;
        let name = ctx.path.name.as_deref().unwrap_or_default();
        self.lookup(ctx).await?.ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))
    }

    /// The object a named request addresses, if it exists.
    pub(crate) async fn lookup(&self, ctx: &Ctx) -> Result<Option<Cached>, ApiError> {
        let name = ctx.path.name.as_deref().unwrap_or_default();
        let key = ctx.served.info.key(ctx.namespace(), name);
        self.cache.get_current(&key).await.map_err(crate::store_error)
    }
}

//! The generic resource handlers: one code path for every resource, driven by the registry.

pub(crate) mod delete;
mod eviction;
mod list;
mod read;
mod subresource;
mod watch;
mod write;

use std::sync::Arc;

use axum::body::Body;
use http::{HeaderMap, Method, Response, StatusCode};
use kapal_api::ApiError;
use serde_json::Value;

use crate::ApiServer;
use crate::auth::User;
use crate::http::{Query, error_response, json_response};
use crate::resources::Served;
use crate::route::ResourcePath;

pub(crate) use delete::DeleteOptions;

/// Everything a handler needs to know about the request.
pub struct Ctx {
    pub method: Method,
    pub headers: HeaderMap,
    pub query: Query,
    pub user: User,
    pub path: ResourcePath,
    pub served: Arc<Served>,
    pub body: bytes::Bytes,
}

impl Ctx {
    pub fn namespace(&self) -> Option<&str> {
        if self.served.info.namespaced() { self.path.namespace.as_deref() } else { None }
    }

    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.query.0.iter().find(|(k, _)| k == "dryRun") {
            None => Ok(false),
            Some((_, v)) if v == "All" => Ok(true),
            Some((_, v)) => {
                Err(ApiError::bad_request(format!("Invalid dry run value: \"{v}\": supported values: \"All\"")))
            }
        }
    }

    /// The field manager of a write: `fieldManager`, else the user agent's program name.
    pub fn field_manager(&self) -> Result<String, ApiError> {
        if let Some(m) = self.query.get("fieldManager") {
            if m.len() > 128 {
                return Err(ApiError::bad_request("fieldManager: Too long: may not be more than 128 bytes"));
            }
            return Ok(m.to_string());
        }
        let agent = self.headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("unknown");
        let program = agent.split('/').next().unwrap_or(agent);
        Ok(program.chars().take(128).collect())
    }
}

/// A successful handler result.
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub warnings: Vec<String>,
}

impl Reply {
    pub fn ok(body: Value) -> Reply {
        Reply { status: StatusCode::OK, body, warnings: Vec::new() }
    }
}

impl ApiServer {
    /// Serves one request on a resource path.
    pub(crate) async fn serve_resource(&self, ctx: Ctx) -> Response<Body> {
        let result = self.dispatch(&ctx).await;
        match result {
            Ok(Dispatched::Reply(reply)) => {
                let mut resp = json_response(reply.status, &reply.body);
                crate::http::add_warnings(&mut resp, &reply.warnings);
                resp
            }
            Ok(Dispatched::Response(resp)) => resp,
            Err(err) => error_response(&err),
        }
    }

    async fn dispatch(&self, ctx: &Ctx) -> Result<Dispatched, ApiError> {
        let info = &ctx.served.info;
        tracing::trace!(user = %ctx.user.name, method = %ctx.method, resource = %info.plural, "dispatch");
        if ctx.path.namespace.is_some() && !info.namespaced() {
            return Err(ApiError::no_route());
        }
        if let Some(sub) = ctx.path.subresource.clone() {
            if info.subresource(&sub).is_none() {
                return Err(ApiError::no_route());
            }
            return self.subresource(ctx, &sub).await;
        }
        let named = ctx.path.name.is_some();
        let watching = ctx.query.flag("watch");
        let reply = match (ctx.method.clone(), named) {
            (Method::GET, _) if watching => return self.watch(ctx).await.map(Dispatched::Response),
            (Method::GET, true) => return self.get(ctx).await.map(Dispatched::Response),
            (Method::GET, false) => return self.list(ctx).await,
            (Method::POST, false) => self.create(ctx).await?,
            (Method::PUT, true) => self.update(ctx).await?,
            (Method::PATCH, true) => self.patch(ctx).await?,
            (Method::DELETE, true) => self.delete(ctx).await?,
            (Method::DELETE, false) => self.delete_collection(ctx).await?,
            (method, _) => {
                let verb = match method {
                    Method::POST => "create",
                    Method::PUT => "update",
                    Method::PATCH => "patch",
                    _ => method.as_str(),
                };
                return Err(ApiError::method_not_allowed(&info.group, &info.plural, verb));
            }
        };
        Ok(Dispatched::Reply(reply))
    }
}

/// What a handler produced: a JSON reply, or a ready response (streams, tables).
pub enum Dispatched {
    Reply(Reply),
    Response(Response<Body>),
}

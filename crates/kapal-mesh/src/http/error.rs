//! Proxy errors and the outermost layer that turns them into responses.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, StatusCode};

use super::{Entry, Req, Res, full};
use crate::BoxError;

/// Why the proxy answered instead of the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route of the service matches the request.
    #[error("no route matches the request")]
    NoRoute,
    /// The service is not (or no longer) in the config.
    #[error("service {0} is not configured")]
    UnknownService(String),
    /// Authorization policy denied the request.
    #[error("denied by authorization policy")]
    Forbidden,
    /// The request itself is unusable.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The backend has no available endpoint (none configured, or all ejected).
    #[error("service {0} has no available endpoints")]
    NoEndpoints(String),
    /// No connection to the chosen endpoint could be made.
    #[error("connecting upstream: {0}")]
    Connect(BoxError),
    /// The upstream connection failed mid-request.
    #[error("upstream connection failed: {0}")]
    Upstream(BoxError),
    /// The route's request timeout fired.
    #[error("request timed out")]
    RequestTimeout,
    /// The per-try (backendRequest) timeout fired on the last attempt.
    #[error("upstream attempt timed out")]
    TryTimeout,
    /// Fault injection aborted the request.
    #[error("fault injected")]
    Fault(StatusCode),
    /// A bug in the proxy.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl ProxyError {
    /// The status the client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute | ProxyError::UnknownService(_) => StatusCode::NOT_FOUND,
            ProxyError::Forbidden => StatusCode::FORBIDDEN,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NoEndpoints(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect(_) | ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::RequestTimeout | ProxyError::TryTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Fault(status) => *status,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `x-kapal-error` header value: a stable, machine-readable reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no-route",
            ProxyError::UnknownService(_) => "unknown-service",
            ProxyError::Forbidden => "unauthorized",
            ProxyError::BadRequest(_) => "bad-request",
            ProxyError::NoEndpoints(_) => "no-endpoints",
            ProxyError::Connect(_) => "connect-failed",
            ProxyError::Upstream(_) => "upstream-reset",
            ProxyError::RequestTimeout => "request-timeout",
            ProxyError::TryTimeout => "per-try-timeout",
            ProxyError::Fault(_) => "fault-injected",
            ProxyError::Internal(_) => "internal",
        }
    }

    /// The gRPC status for a gRPC client.
    pub fn grpc_status(&self) -> u32 {
        match self.status().as_u16() {
            400 => 3,        // INVALID_ARGUMENT
            403 => 7,        // PERMISSION_DENIED
            404 => 12,       // UNIMPLEMENTED
            429 => 8,        // RESOURCE_EXHAUSTED
            502..=503 => 14, // UNAVAILABLE
            504 => 4,        // DEADLINE_EXCEEDED
            401 => 16,       // UNAUTHENTICATED
            _ => 13,         // INTERNAL
        }
    }

    /// The synthetic response for a gRPC client: HTTP 200, trailers-only, with `grpc-status`.
    pub fn into_grpc_response(self) -> Res {
        let mut res = http::Response::new(full(""));
        let headers = res.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from(self.grpc_status()));
        if let Ok(message) = HeaderValue::from_str(&self.to_string().replace('%', "%25")) {
            headers.insert("grpc-message", message);
        }
        headers.insert("x-kapal-error", HeaderValue::from_static(self.reason()));
        res
    }

    /// The synthetic response.
    pub fn into_response(self) -> Res {
        let mut res = http::Response::new(full(format!("{self}\n")));
        *res.status_mut() = self.status();
        res.headers_mut().insert("x-kapal-error", HeaderValue::from_static(self.reason()));
        res.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        res
    }
}

/// Outermost layer: errors become responses with `x-kapal-error`.
#[derive(Clone)]
pub struct ErrorResponses<S> {
    inner: S,
}

impl<S> ErrorResponses<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        ErrorResponses { inner }
    }
}

impl<S: Entry> tower::Service<Req> for ErrorResponses<S> {
    type Response = Res;
    type Error = Infallible;
    type Future = Answered;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Answered {
        let grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/grpc"));
        Answered { inner: self.inner.call(req), grpc }
    }
}

/// The response of the stack, or the response for its error.
pub struct Answered {
    inner: super::ResFuture,
    grpc: bool,
}

impl Future for Answered {
    type Output = Result<Res, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let grpc = self.grpc;
        self.inner.as_mut().poll(cx).map(|res| {
            Ok(res.unwrap_or_else(|error| {
                tracing::debug!(%error, "answering with a proxy error");
                if grpc { error.into_grpc_response() } else { error.into_response() }
            }))
        })
    }
}

//! The admin server: `/metrics`, `/ready`, `/live`, `/config`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Method, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::http::{Res, full};
use crate::state::Shared;

/// Serves the admin endpoints for the life of the process (also while draining). `ready` is
/// false before start-up completes and once draining starts, so that the kubelet stops
/// sending traffic while the proxy keeps serving the requests already on their way.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, ready: Arc<AtomicBool>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let (shared, ready) = (shared.clone(), ready.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let res = respond(&req, &shared, &ready);
                async move { Ok::<_, std::convert::Infallible>(res) }
            });
            let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = conn.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn respond(req: &http::Request<Incoming>, shared: &Shared, ready: &AtomicBool) -> Res {
    let text = |status: StatusCode, ctype: &'static str, body: String| {
        let mut res = http::Response::new(full(body));
        *res.status_mut() = status;
        res.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(ctype));
        res
    };
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            text(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", shared.metrics.encode())
        }
        "/live" => text(StatusCode::OK, "text/plain", "live\n".into()),
        "/ready" if ready.load(Ordering::Relaxed) => text(StatusCode::OK, "text/plain", "ready\n".into()),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n".into()),
        "/config" => match serde_json::to_string_pretty(&*shared.snapshot().config) {
            Ok(json) => text(StatusCode::OK, "application/json", json),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
        },
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

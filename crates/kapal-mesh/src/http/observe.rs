//! Golden metrics per route and backend, trace context, one span per request, access log.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::HeaderValue;
use tokio::time::Instant;
use tracing::Instrument;

use super::{ConnInfo, Inner, ProxyError, Req, Res, RouteCtx, layer_service, route_ctx};
use crate::metrics::{LatencyLabels, RequestLabels, status_class};
use crate::state::Shared;
use crate::trace::TraceContext;

const TRACEPARENT: &str = "traceparent";

/// Counts responses, records latency (to response headers), propagates `traceparent`.
#[derive(Clone)]
pub struct Observe<S> {
    shared: Arc<Shared>,
    inner: S,
}

impl<S: Inner> Observe<S> {
    /// Wraps `inner`.
    pub fn new(shared: Arc<Shared>, inner: S) -> Self {
        Observe { shared, inner }
    }

    async fn run(mut self, mut req: Req) -> Result<Res, ProxyError> {
        let ctx = route_ctx(&req)?;
        let conn = req.extensions().get::<ConnInfo>().cloned();
        let direction = conn.as_ref().map_or("outbound", |c| c.direction);
        let trace = TraceContext::continue_from(req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok()));
        if let Ok(v) = HeaderValue::from_str(&trace.to_string()) {
            req.headers_mut().insert(TRACEPARENT, v);
        }
        let span = tracing::debug_span!(
            "request",
            direction,
            service = %ctx.service.cfg.name,
            route = %ctx.rule.name,
            backend = %ctx.backend.cfg.name,
            method = %req.method(),
            path = %req.uri().path(),
            trace_id = %trace.trace_id_hex(),
            span_id = %format_args!("{:016x}", trace.span_id),
        );
        let log_line = self.shared.access_log.load(Ordering::Relaxed).then(|| AccessLog::start(&req, &conn, &trace));
        let start = Instant::now();
        let res = self.inner.call(req).instrument(span).await;
        let elapsed = start.elapsed();
        let status = match &res {
            Ok(r) => r.status(),
            Err(e) => e.status(),
        };
        let identity = conn.as_ref().and_then(|c| c.client_identity.as_deref()).unwrap_or("").to_string();
        self.record(&ctx, direction, status.as_u16(), identity, elapsed);
        if let Some(line) = log_line {
            line.finish(&ctx, direction, &res, elapsed);
        }
        res
    }

    fn record(
        &self,
        ctx: &RouteCtx,
        direction: &'static str,
        status: u16,
        identity: String,
        elapsed: std::time::Duration,
    ) {
        let m = &self.shared.metrics;
        let latency = LatencyLabels {
            direction,
            service: ctx.service.cfg.name.clone(),
            route: ctx.rule.name.clone(),
            backend: ctx.backend.cfg.name.clone(),
        };
        m.latency.get_or_create(&latency).observe(elapsed.as_secs_f64());
        let labels = RequestLabels {
            direction,
            service: latency.service,
            route: latency.route,
            backend: latency.backend,
            status_class: status_class(status),
            client_identity: identity,
        };
        m.requests.get_or_create(&labels).inc();
    }
}

layer_service!(Observe);

/// One access log line, JSON.
struct AccessLog(serde_json::Map<String, serde_json::Value>);

impl AccessLog {
    fn start(req: &Req, conn: &Option<ConnInfo>, trace: &TraceContext) -> Self {
        let mut m = serde_json::Map::new();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        m.insert("time".into(), (now.as_millis() as u64).into());
        m.insert("method".into(), req.method().as_str().into());
        m.insert("path".into(), req.uri().path().into());
        let authority = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .or_else(|| req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string));
        m.insert("authority".into(), authority.into());
        m.insert("version".into(), format!("{:?}", req.version()).into());
        m.insert("client".into(), conn.as_ref().map(|c| c.remote.to_string()).into());
        m.insert("client_identity".into(), conn.as_ref().and_then(|c| c.client_identity.as_deref()).into());
        m.insert("trace_id".into(), trace.trace_id_hex().into());
        m.insert("span_id".into(), format!("{:016x}", trace.span_id).into());
        AccessLog(m)
    }

    fn finish(mut self, ctx: &RouteCtx, direction: &str, res: &Result<Res, ProxyError>, elapsed: std::time::Duration) {
        let m = &mut self.0;
        m.insert("direction".into(), direction.into());
        m.insert("service".into(), ctx.service.cfg.name.as_str().into());
        m.insert("route".into(), ctx.rule.name.as_str().into());
        m.insert("backend".into(), ctx.backend.cfg.name.as_str().into());
        let (status, error) = match res {
            Ok(r) => (r.status().as_u16(), None),
            Err(e) => (e.status().as_u16(), Some(e.reason())),
        };
        m.insert("status".into(), status.into());
        m.insert("error".into(), error.into());
        m.insert("duration_ms".into(), (elapsed.as_secs_f64() * 1000.0).into());
        let line = serde_json::Value::Object(std::mem::take(m)).to_string();
        use std::io::Write;
        // A full or closed stdout must not fail the request.
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
}

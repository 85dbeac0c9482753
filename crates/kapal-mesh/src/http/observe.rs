//! Golden metrics per route and backend, trace context, one span per request (a `tracing` span
//! with a DEBUG event as the request ends, and an OTLP span when export is on), access log.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use http::{HeaderName, HeaderValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tracing::Instrument;

use super::{ConnInfo, Inner, ProxyError, Req, Res, ResFuture, RouteCtx, Routed, Upstream, layer_service};
use crate::metrics::{LatencyLabels, RequestLabels, status_class};
use crate::otlp::{AttrValue, SpanKind, SpanRecord};
use crate::route::Rule;
use crate::state::{ServiceRt, Shared};
use crate::trace::TraceContext;

/// A `HeaderName` rather than a `&str`, which would be parsed again on every use.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Counts responses, records latency (to response headers), propagates `traceparent`.
#[derive(Clone)]
pub struct Observe<S> {
    shared: Arc<Shared>,
    /// The connection the requests arrive on.
    conn: Arc<ConnInfo>,
    /// One per connection (a stack is built per connection).
    handles: Arc<Mutex<Handles>>,
    inner: S,
}

/// The metric handles of the last route and backend a connection's requests went to. The
/// requests of a keep-alive connection nearly always share them, and finding them in the metric
/// families costs five label strings, two hashes and two locks per request.
#[derive(Default)]
struct Handles {
    key: Option<HandlesKey>,
    latency: Option<Histogram>,
    /// By status class: 1xx … 5xx.
    requests: [Option<Counter>; 5],
}

/// What the handles are for. Weak, so that a connection does not keep an old config's services
/// alive; a weak pointer also keeps the allocation, so its address cannot be reused by another
/// rule or service while it is compared.
struct HandlesKey {
    service: Weak<ServiceRt>,
    rule: Weak<Rule>,
    backend: Weak<ServiceRt>,
    direction: &'static str,
    identity: Option<Arc<str>>,
}

impl Handles {
    fn is_for(&self, ctx: &RouteCtx, direction: &'static str, identity: &Option<Arc<str>>) -> bool {
        self.key.as_ref().is_some_and(|k| {
            std::ptr::eq(k.service.as_ptr(), Arc::as_ptr(&ctx.service))
                && std::ptr::eq(k.rule.as_ptr(), Arc::as_ptr(&ctx.rule))
                && std::ptr::eq(k.backend.as_ptr(), Arc::as_ptr(&ctx.backend))
                && k.direction == direction
                && k.identity == *identity
        })
    }
}

impl<S: Inner> Observe<S> {
    /// Wraps `inner`, for the requests of the connection `conn`.
    pub fn new(shared: Arc<Shared>, conn: ConnInfo, inner: S) -> Self {
        Observe { shared, conn: Arc::new(conn), handles: Arc::default(), inner }
    }

    fn serve(&mut self, routed: Routed) -> ResFuture {
        let Routed { ctx, mut req, start } = routed;
        let conn = &self.conn;
        let direction = conn.direction;
        let trace = TraceContext::continue_from(req.headers().get(&TRACEPARENT).and_then(|v| v.to_str().ok()));
        if let Ok(mut v) = HeaderValue::from_bytes(&trace.traceparent()) {
            // A new span ID per request: a value HPACK should never index. Entering each into
            // an HTTP/2 connection's table would evict the headers that do repeat, which then
            // go out in full again.
            v.set_sensitive(true);
            req.headers_mut().insert(TRACEPARENT, v);
        }
        // A disabled span still evaluates and records its fields when tracing's `log` feature is
        // on (as it is in this build's dependency tree), so it is only made when it is wanted.
        let span = tracing::enabled!(tracing::Level::DEBUG).then(|| {
            tracing::debug_span!(
                "request",
                direction,
                service = %ctx.service.cfg.name,
                route = %ctx.rule.name,
                backend = %ctx.backend.cfg.name,
                method = %req.method(),
                path = %req.uri().path(),
                trace_id = %format_args!("{:032x}", trace.trace_id),
                span_id = %format_args!("{:016x}", trace.span_id),
            )
        });
        let log_line = self.shared.access_log.load(Ordering::Relaxed).then(|| AccessLog::start(&req, conn, &trace));
        // Unsampled traces (flag bit 0 clear) are not exported. The connection itself is only
        // needed for the span; the metrics need its identity.
        let otlp = self
            .shared
            .spans
            .as_ref()
            .filter(|_| trace.flags & 1 == 1)
            .map(|spans| (spans.clone(), SpanStart::new(&req, start), conn.clone()));
        let identity = conn.client_identity.clone();
        let fut = self.inner.call(Routed { ctx: ctx.clone(), req, start });
        let (shared, handles) = (self.shared.clone(), self.handles.clone());
        Box::pin(async move {
            let res = match &span {
                Some(span) => fut.instrument(span.clone()).await,
                None => fut.await,
            };
            let elapsed = start.elapsed();
            let status = match &res {
                Ok(r) => r.status(),
                Err(e) => e.status(),
            };
            // The fmt subscriber prints a span only with the events inside it: one at the end
            // makes every request show up in a debug log, with the span's fields.
            if let Some(span) = &span {
                tracing::debug!(
                    parent: span,
                    status = status.as_u16(),
                    duration_ms = elapsed.as_secs_f64() * 1000.0,
                    error = res.as_ref().err().map(ProxyError::reason),
                    "request"
                );
            }
            record(&shared, &handles, &ctx, direction, status.as_u16(), identity, elapsed);
            if let Some((spans, started, conn)) = otlp {
                spans.record(started.finish(&ctx, &conn, direction, trace, &res, elapsed));
            }
            if let Some(line) = log_line {
                line.finish(&ctx, direction, &res, elapsed);
            }
            res
        })
    }
}

layer_service!(Observe, serve);

fn record(
    shared: &Shared,
    handles: &Mutex<Handles>,
    ctx: &RouteCtx,
    direction: &'static str,
    status: u16,
    identity: Option<Arc<str>>,
    elapsed: std::time::Duration,
) {
    let mut handles = handles.lock().unwrap_or_else(|p| p.into_inner());
    if !handles.is_for(ctx, direction, &identity) {
        *handles = Handles {
            key: Some(HandlesKey {
                service: Arc::downgrade(&ctx.service),
                rule: Arc::downgrade(&ctx.rule),
                backend: Arc::downgrade(&ctx.backend),
                direction,
                identity: identity.clone(),
            }),
            ..Handles::default()
        };
    }
    let latency = handles.latency.get_or_insert_with(|| {
        let labels = LatencyLabels {
            direction,
            service: ctx.service.cfg.name.clone(),
            route: ctx.rule.name.clone(),
            backend: ctx.backend.cfg.name.clone(),
        };
        shared.metrics.latency.get_or_create(&labels).clone()
    });
    latency.observe(elapsed.as_secs_f64());
    let class = status_class(status);
    let slot = usize::from((status / 100).clamp(1, 5) - 1);
    let requests = handles.requests[slot].get_or_insert_with(|| {
        let labels = RequestLabels {
            direction,
            service: ctx.service.cfg.name.clone(),
            route: ctx.rule.name.clone(),
            backend: ctx.backend.cfg.name.clone(),
            status_class: class,
            client_identity: identity.as_deref().unwrap_or("").to_string(),
        };
        shared.metrics.requests.get_or_create(&labels).clone()
    });
    requests.inc();
}

/// What an OTLP span needs from the request, taken before the request moves on.
struct SpanStart {
    at: std::time::SystemTime,
    method: http::Method,
    path: String,
    authority: Option<String>,
}

impl SpanStart {
    /// The span of a request routed at `start`. Its end is `at` plus the time elapsed since
    /// `start`, so `at` is the wall-clock time of `start` itself: read later, it would put the
    /// end after the response by however long the task waited between the two readings.
    fn new(req: &Req, start: tokio::time::Instant) -> Self {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .or_else(|| req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string));
        SpanStart {
            at: {
                let now = std::time::SystemTime::now();
                now.checked_sub(start.elapsed()).unwrap_or(now)
            },
            method: req.method().clone(),
            path: req.uri().path().to_string(),
            authority,
        }
    }

    fn finish(
        self,
        ctx: &RouteCtx,
        conn: &ConnInfo,
        direction: &'static str,
        trace: TraceContext,
        res: &Result<Res, ProxyError>,
        elapsed: std::time::Duration,
    ) -> SpanRecord {
        let status = match res {
            Ok(r) => r.status().as_u16(),
            Err(e) => e.status().as_u16(),
        };
        let str = |s: &str| AttrValue::Str(s.to_string());
        let mut attributes = vec![
            ("http.request.method", str(self.method.as_str())),
            ("http.route", str(&ctx.rule.name)),
            ("http.response.status_code", AttrValue::Int(i64::from(status))),
            ("url.path", AttrValue::Str(self.path)),
            ("kapal.direction", str(direction)),
            ("kapal.service", str(&ctx.service.cfg.name)),
            ("kapal.backend", str(&ctx.backend.cfg.name)),
        ];
        if let Some(authority) = self.authority {
            attributes.push(("server.address", AttrValue::Str(authority)));
        }
        attributes.push(("client.address", AttrValue::Str(conn.remote.ip().to_string())));
        // The peer is the client on inbound requests and the endpoint that answered on outbound.
        let upstream = res.as_ref().ok().and_then(|r| r.extensions().get::<Upstream>());
        let peer_identity = match direction {
            "inbound" => conn.client_identity.clone(),
            _ => upstream.and_then(|u| u.identity.clone()),
        };
        if let Some(u) = upstream.filter(|_| direction != "inbound") {
            attributes.push(("network.peer.address", AttrValue::Str(u.addr.ip().to_string())));
            attributes.push(("network.peer.port", AttrValue::Int(i64::from(u.addr.port()))));
        }
        if let Some(id) = peer_identity {
            attributes.push(("kapal.peer.identity", str(&id)));
        }
        if let Err(e) = res {
            attributes.push(("kapal.error", str(e.reason())));
        }
        let kind = if direction == "inbound" { SpanKind::Server } else { SpanKind::Client };
        SpanRecord {
            trace,
            name: format!("{} {}", self.method, ctx.service.cfg.name),
            kind,
            start: self.at,
            end: self.at + elapsed,
            attributes,
            error: status >= 500,
        }
    }
}

/// One access log line, JSON.
struct AccessLog(serde_json::Map<String, serde_json::Value>);

impl AccessLog {
    fn start(req: &Req, conn: &ConnInfo, trace: &TraceContext) -> Self {
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
        m.insert("client".into(), conn.remote.to_string().into());
        m.insert("client_identity".into(), conn.client_identity.as_deref().into());
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

//! OTLP trace export (`--otlp-endpoint`): one span per proxied request, sent over OTLP/HTTP with
//! the JSON encoding (`POST {endpoint}/v1/traces`, an `ExportTraceServiceRequest`).
//!
//! The encoder is written by hand with `serde_json` instead of using the `opentelemetry` SDK with
//! its `tonic`/`prost` exporters: the proxy emits a single span shape, and the SDK stack would
//! add a second gRPC implementation, a protobuf toolchain and their build time to a sidecar
//! that needs one POST. The data path only does a non-blocking `try_send` into a bounded queue;
//! when the queue is full the span is dropped and counted (`kapal_proxy_otlp_spans_total
//! {result="dropped"}`). A background task batches (by size and interval) and exports; a failed
//! export is counted (`result="failed"`) and not retried.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::metrics::{Metrics, OutcomeLabels};
use crate::trace::TraceContext;

/// Where and how spans are exported.
#[derive(Debug, Clone)]
pub struct OtlpOptions {
    /// Collector base URL (`http://collector:4318`); spans go to `{endpoint}/v1/traces`.
    pub endpoint: String,
    /// `service.name` of the resource.
    pub service_name: String,
    /// Spans per export request at most; a full batch is sent at once.
    pub batch_size: usize,
    /// A partial batch is sent at least this often.
    pub interval: Duration,
    /// Spans waiting at most; more are dropped.
    pub queue: usize,
    /// Limit of one export request.
    pub timeout: Duration,
}

impl OtlpOptions {
    /// Defaults for `endpoint`: service `kapal-proxy`, batches of 512 every 5s, queue 2048,
    /// 10s per export.
    pub fn new(endpoint: impl Into<String>) -> Self {
        OtlpOptions {
            endpoint: endpoint.into(),
            service_name: "kapal-proxy".into(),
            batch_size: 512,
            interval: Duration::from_secs(5),
            queue: 2048,
            timeout: Duration::from_secs(10),
        }
    }
}

/// The endpoint is unusable.
#[derive(Debug, thiserror::Error)]
#[error("--otlp-endpoint {url:?}: {message}")]
pub struct OtlpError {
    /// The URL as given.
    pub url: String,
    /// What is wrong with it.
    pub message: String,
}

/// OTLP `SpanKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Inbound: the proxy serves the request for the local application.
    Server = 2,
    /// Outbound: the proxy calls a service for the local application.
    Client = 3,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// `stringValue`.
    Str(String),
    /// `intValue`.
    Int(i64),
}

/// One finished span.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// Trace, span and parent IDs.
    pub trace: TraceContext,
    /// Span name.
    pub name: String,
    /// Server (inbound) or client (outbound).
    pub kind: SpanKind,
    /// When the request arrived.
    pub start: SystemTime,
    /// When the response headers were ready.
    pub end: SystemTime,
    /// Attributes.
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// Status `ERROR` (else unset).
    pub error: bool,
}

/// Hands spans to the exporter without ever waiting.
#[derive(Clone)]
pub struct Spans {
    tx: mpsc::Sender<SpanRecord>,
    metrics: Arc<Metrics>,
}

impl Spans {
    /// Queues `span`; drops (and counts) it when the queue is full.
    pub fn record(&self, span: SpanRecord) {
        if self.tx.try_send(span).is_err() {
            self.metrics.spans.get_or_create(&OutcomeLabels { result: "dropped" }).inc();
        }
    }
}

/// Sends one encoded export request. A seam: HTTP in production, a channel in tests.
pub trait Export: Send + Sync + 'static {
    /// Sends `body` (an `ExportTraceServiceRequest` in JSON).
    fn export(&self, body: Bytes) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// OTLP/HTTP JSON export to a collector.
pub struct HttpExport {
    client: Client<HttpConnector, Full<Bytes>>,
    url: Uri,
    timeout: Duration,
}

impl HttpExport {
    /// Exports to `{endpoint}/v1/traces` (plain HTTP).
    pub fn new(endpoint: &str, timeout: Duration) -> Result<Self, OtlpError> {
        let bad = |message: &str| OtlpError { url: endpoint.to_string(), message: message.to_string() };
        let base: Uri = endpoint.parse().map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        if base.scheme_str() != Some("http") || base.authority().is_none() {
            return Err(bad("must be an http://host:port URL (https is not supported)"));
        }
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/')).parse().map_err(|_| bad("invalid path"))?;
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(HttpExport { client, url, timeout })
    }
}

impl Export for HttpExport {
    fn export(&self, body: Bytes) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            let req = Request::post(self.url.clone())
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(body))
                .map_err(|e| e.to_string())?;
            let res = tokio::time::timeout(self.timeout, self.client.request(req))
                .await
                .map_err(|_| format!("no answer within {:?}", self.timeout))?
                .map_err(|e| e.to_string())?;
            if res.status().is_success() { Ok(()) } else { Err(format!("collector answered {}", res.status())) }
        })
    }
}

/// Starts exporting to the collector of `opts`.
pub fn start(opts: OtlpOptions, metrics: Arc<Metrics>) -> Result<Spans, OtlpError> {
    let export = HttpExport::new(&opts.endpoint, opts.timeout)?;
    Ok(start_with(Arc::new(export), opts, metrics))
}

/// Starts the batching task with any [`Export`].
pub fn start_with(export: Arc<dyn Export>, opts: OtlpOptions, metrics: Arc<Metrics>) -> Spans {
    let (tx, rx) = mpsc::channel(opts.queue.max(1));
    tokio::spawn(batch_loop(rx, export, opts, metrics.clone()));
    Spans { tx, metrics }
}

async fn batch_loop(
    mut rx: mpsc::Receiver<SpanRecord>,
    export: Arc<dyn Export>,
    opts: OtlpOptions,
    metrics: Arc<Metrics>,
) {
    let size = opts.batch_size.max(1);
    let mut batch = Vec::with_capacity(size);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + opts.interval, opts.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let done = tokio::select! {
            span = rx.recv() => match span {
                Some(span) => {
                    batch.push(span);
                    if batch.len() < size {
                        continue;
                    }
                    false
                }
                None => true,
            },
            _ = tick.tick() => false,
        };
        if !batch.is_empty() {
            let spans = std::mem::take(&mut batch);
            let body = encode(&spans, &opts.service_name);
            let result = match export.export(Bytes::from(body.to_string())).await {
                Ok(()) => "exported",
                Err(error) => {
                    tracing::warn!(%error, spans = spans.len(), "OTLP export failed; spans dropped");
                    "failed"
                }
            };
            metrics.spans.get_or_create(&OutcomeLabels { result }).inc_by(spans.len() as u64);
        }
        if done {
            return;
        }
    }
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos().to_string()
}

fn attribute(key: &str, value: &AttrValue) -> Value {
    let value = match value {
        AttrValue::Str(s) => json!({ "stringValue": s }),
        // int64 is a string in the protobuf JSON mapping.
        AttrValue::Int(i) => json!({ "intValue": i.to_string() }),
    };
    json!({ "key": key, "value": value })
}

fn span(s: &SpanRecord) -> Value {
    let mut v = json!({
        "traceId": format!("{:032x}", s.trace.trace_id),
        "spanId": format!("{:016x}", s.trace.span_id),
        "name": s.name,
        "kind": s.kind as i32,
        "startTimeUnixNano": nanos(s.start),
        "endTimeUnixNano": nanos(s.end),
        "attributes": s.attributes.iter().map(|(k, v)| attribute(k, v)).collect::<Vec<_>>(),
    });
    if let Some(parent) = s.trace.parent_id {
        v["parentSpanId"] = json!(format!("{parent:016x}"));
    }
    if s.error {
        v["status"] = json!({ "code": 2 });
    }
    v
}

/// An `ExportTraceServiceRequest` holding `spans`, in OTLP's JSON encoding.
pub fn encode(spans: &[SpanRecord], service_name: &str) -> Value {
    json!({
        "resourceSpans": [{
            "resource": { "attributes": [attribute("service.name", &AttrValue::Str(service_name.to_string()))] },
            "scopeSpans": [{
                "scope": { "name": "kapal-mesh", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans.iter().map(span).collect::<Vec<_>>(),
            }],
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct ToChannel(mpsc::UnboundedSender<(tokio::time::Instant, Value)>);

    impl Export for ToChannel {
        fn export(&self, body: Bytes) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
            let value = serde_json::from_slice(&body).map_err(|e| e.to_string());
            Box::pin(async move {
                let _ = self.0.send((tokio::time::Instant::now(), value?));
                Ok(())
            })
        }
    }

    fn record(n: u64) -> SpanRecord {
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        SpanRecord {
            trace: TraceContext { trace_id: 0xabc, span_id: n, parent_id: Some(7), flags: 1 },
            name: format!("GET web {n}"),
            kind: SpanKind::Client,
            start,
            end: start + Duration::from_millis(3),
            attributes: vec![
                ("http.response.status_code", AttrValue::Int(503)),
                ("kapal.service", AttrValue::Str("web".into())),
            ],
            error: true,
        }
    }

    fn spans(v: &Value) -> &Vec<Value> {
        v["resourceSpans"][0]["scopeSpans"][0]["spans"].as_array().unwrap()
    }

    #[test]
    fn encoding_follows_the_otlp_json_mapping() {
        let v = encode(&[record(1)], "proxy-a");
        let attr = &v["resourceSpans"][0]["resource"]["attributes"][0];
        assert_eq!(attr, &json!({"key": "service.name", "value": {"stringValue": "proxy-a"}}));
        let s = &spans(&v)[0];
        assert_eq!(s["traceId"], "00000000000000000000000000000abc");
        assert_eq!(s["spanId"], "0000000000000001");
        assert_eq!(s["parentSpanId"], "0000000000000007");
        assert_eq!(s["kind"], 3);
        assert_eq!(s["startTimeUnixNano"], "1700000000000000000");
        assert_eq!(s["endTimeUnixNano"], "1700000000003000000");
        assert_eq!(s["attributes"][0], json!({"key": "http.response.status_code", "value": {"intValue": "503"}}));
        assert_eq!(s["status"]["code"], 2);
    }

    #[tokio::test(start_paused = true)]
    async fn spans_are_batched_by_size_and_by_interval() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let opts = OtlpOptions { batch_size: 3, interval: Duration::from_secs(1), ..OtlpOptions::new("unused") };
        let metrics = Arc::new(Metrics::default());
        let t0 = tokio::time::Instant::now();
        let sink = start_with(Arc::new(ToChannel(tx)), opts, metrics.clone());
        for n in 1..=7 {
            sink.record(record(n));
        }
        let mut got = Vec::new();
        for _ in 0..3 {
            let (at, v) = rx.recv().await.unwrap();
            got.push((
                at - t0,
                spans(&v).iter().map(|s| s["spanId"].as_str().unwrap().to_string()).collect::<Vec<_>>(),
            ));
        }
        let ids = |r: std::ops::RangeInclusive<u64>| r.map(|n| format!("{n:016x}")).collect::<Vec<_>>();
        assert_eq!(got[0], (Duration::ZERO, ids(1..=3)));
        assert_eq!(got[1], (Duration::ZERO, ids(4..=6)));
        // The seventh waits for the interval.
        assert_eq!(got[2], (Duration::from_secs(1), ids(7..=7)));
        assert!(metrics.encode().contains(r#"kapal_proxy_otlp_spans_total{result="exported"} 7"#));
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let opts = OtlpOptions { queue: 2, ..OtlpOptions::new("unused") };
        let metrics = Arc::new(Metrics::default());
        let sink = start_with(Arc::new(ToChannel(tx)), opts, metrics.clone());
        // The batching task has not run yet (single-threaded runtime): only two fit.
        for n in 1..=5 {
            sink.record(record(n));
        }
        assert!(metrics.encode().contains(r#"kapal_proxy_otlp_spans_total{result="dropped"} 3"#));
    }

    #[test]
    fn endpoints_must_be_plain_http() {
        assert!(HttpExport::new("http://collector:4318", Duration::from_secs(1)).is_ok());
        let err = HttpExport::new("https://collector:4318", Duration::from_secs(1)).err().unwrap();
        assert!(err.to_string().starts_with("--otlp-endpoint \"https://collector:4318\""), "{err}");
        assert!(HttpExport::new("collector", Duration::from_secs(1)).is_err());
    }
}

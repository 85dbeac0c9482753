//! The proxy's Prometheus metrics (served on the admin port at `/metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of an HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// The service the request was addressed to (inbound: the local port).
    pub service: String,
    /// The matched route rule.
    pub route: String,
    /// The backend service that answered.
    pub backend: String,
    /// `2xx`, `4xx`, `5xx`, …
    pub status_class: &'static str,
    /// The client's SPIFFE ID, or empty for plaintext clients.
    pub client_identity: String,
}

/// Labels of a latency histogram.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LatencyLabels {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// Service.
    pub service: String,
    /// Route rule.
    pub route: String,
    /// Backend service.
    pub backend: String,
}

/// Labels of a retry counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RetryLabels {
    /// Service.
    pub service: String,
    /// Route rule.
    pub route: String,
    /// `retried` or `budget_exhausted`.
    pub result: &'static str,
}

/// Labels naming an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct EndpointLabels {
    /// Service.
    pub service: String,
    /// `ip:port`.
    pub endpoint: String,
}

/// Just a direction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DirectionLabels {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
}

/// A direction and a result/kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabels {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// What happened.
    pub result: &'static str,
}

/// Just a result.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// What happened.
    pub result: &'static str,
}

/// Labels of a mirrored request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct MirrorLabels {
    /// The service the original request was addressed to.
    pub service: String,
    /// The matched route rule.
    pub route: String,
    /// The service the copy went to.
    pub mirror: String,
    /// `sent` (answered, whatever the status), `failed`, `body_too_large`, `overloaded`.
    pub result: &'static str,
}

/// All metrics of one proxy.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// HTTP responses.
    pub requests: Family<RequestLabels, Counter>,
    /// Time to response headers.
    pub latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    /// Retries.
    pub retries: Family<RetryLabels, Counter>,
    /// Endpoint ejections by outlier detection.
    pub ejections: Family<EndpointLabels, Counter>,
    /// Accepted TCP connections.
    pub tcp_connections: Family<DirectionLabels, Counter>,
    /// Open TCP connections.
    pub tcp_open: Family<DirectionLabels, Gauge>,
    /// Bytes received from clients (`result` = `read`) or sent to them (`write`).
    pub tcp_bytes: Family<ResultLabels, Counter>,
    /// TLS handshakes by result (`ok`, `error`).
    pub tls_handshakes: Family<ResultLabels, Counter>,
    /// Protocol detection results (`http1`, `http2`, `tls`, `opaque`, `timeout`).
    pub detect: Family<ResultLabels, Counter>,
    /// Config reloads (`ok`, `error`).
    pub config_reloads: Family<ResultLabels, Counter>,
    /// Certificate reloads (`ok`, `error`).
    pub cert_reloads: Family<ResultLabels, Counter>,
    /// Control-plane stream events (`connected`, `connect_error`, `disconnected`).
    pub control_plane_streams: Family<OutcomeLabels, Counter>,
    /// Requests copied by RequestMirror filters.
    pub mirrored: Family<MirrorLabels, Counter>,
    /// OTLP spans (`exported`, `dropped` when the queue was full, `failed` when the export failed).
    pub spans: Family<OutcomeLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~52 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("kapal_proxy"),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            retries: Family::default(),
            ejections: Family::default(),
            tcp_connections: Family::default(),
            tcp_open: Family::default(),
            tcp_bytes: Family::default(),
            tls_handshakes: Family::default(),
            detect: Family::default(),
            config_reloads: Family::default(),
            cert_reloads: Family::default(),
            control_plane_streams: Family::default(),
            mirrored: Family::default(),
            spans: Family::default(),
        };
        let r = &mut m.registry;
        r.register("requests", "HTTP responses by route, backend, status class and client", m.requests.clone());
        r.register("request_duration_seconds", "Time to response headers", m.latency.clone());
        r.register("retries", "Retries by result", m.retries.clone());
        r.register("endpoint_ejections", "Endpoints ejected by outlier detection", m.ejections.clone());
        r.register("tcp_connections", "Accepted TCP connections", m.tcp_connections.clone());
        r.register("tcp_open_connections", "Open TCP connections", m.tcp_open.clone());
        r.register("tcp_bytes", "Bytes read from / written to clients", m.tcp_bytes.clone());
        r.register("tls_handshakes", "TLS handshakes by result", m.tls_handshakes.clone());
        r.register("protocol_detections", "Protocol detection results, incl. timeouts", m.detect.clone());
        r.register("config_reloads", "Config reloads by result", m.config_reloads.clone());
        r.register("certificate_reloads", "Certificate reloads by result", m.cert_reloads.clone());
        r.register("control_plane_streams", "Control-plane stream events", m.control_plane_streams.clone());
        r.register("mirrored_requests", "Requests copied by RequestMirror filters", m.mirrored.clone());
        r.register("otlp_spans", "OTLP spans by result", m.spans.clone());
        m
    }
}

impl Metrics {
    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// `2xx` etc. for a status code.
pub fn status_class(code: u16) -> &'static str {
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

//! The proxy's configuration model: what the control plane (or a file) tells one proxy.
//!
//! The shape follows Gateway API HTTPRoute (GAMMA: routes attach to a service) with Kapal's own
//! fields for retries, load balancing, outlier detection, fault injection and authorization.
//! [`ProxyConfig::from_yaml`]/[`ProxyConfig::from_json`] parse and validate; every validation
//! error names the field path (`services[0].routes[1].matches[0].path.value`).

mod duration;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

pub use duration::Duration;
pub use validate::{ConfigError, FieldError};

/// The only `apiVersion` this proxy understands.
pub const API_VERSION: &str = "kapal.dev/v1alpha1";
/// The only `kind` this proxy understands.
pub const KIND: &str = "ProxyConfig";

/// One proxy's whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    /// Must be [`API_VERSION`].
    pub api_version: String,
    /// Must be [`KIND`].
    pub kind: String,
    /// Destinations the local application talks to (outbound), and backends routes refer to.
    #[serde(default)]
    pub services: Vec<Service>,
    /// Listeners for traffic to the local application.
    #[serde(default)]
    pub inbound: Vec<Inbound>,
    /// Who may call the local application through the inbound listeners.
    #[serde(default)]
    pub authorization: AuthorizationPolicy,
}

/// Application protocol of a port: a hint from config (Service `appProtocol`), or `detect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Peek at the first bytes (bounded by a short timeout) and fall back to opaque TCP.
    #[default]
    Detect,
    /// HTTP/1.1 (the upstream connection is HTTP/1.1).
    Http1,
    /// HTTP/2 with prior knowledge (h2c, or h2 inside mesh TLS).
    Http2,
    /// gRPC: HTTP/2 with trailers.
    Grpc,
    /// Opaque TCP: bytes are forwarded, nothing is parsed.
    Opaque,
}

/// A destination service: its endpoints, routes and policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    /// Unique name; `backendRefs` refer to services by this name.
    pub name: String,
    /// An explicit outbound listener for this service (standalone use, no traffic redirection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Addresses (cluster IP:port) that identify this service to the transparent outbound
    /// listener (`--outbound`), which sees them as the original destination of a connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<SocketAddr>,
    /// Protocol hint; `detect` when absent.
    #[serde(default)]
    pub protocol: Protocol,
    /// The service's endpoints.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// HTTP routes attached to this service, in precedence order. None: all traffic to endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<HttpRoute>,
    /// Limits how many retries may add on top of the original requests.
    #[serde(default)]
    pub retry_budget: RetryBudget,
    /// Endpoint selection.
    #[serde(default)]
    pub load_balancer: LoadBalancer,
    /// Ejection of failing endpoints; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// TCP connect timeout per endpoint.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
}

fn default_connect_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(1))
}

/// One endpoint (a pod, or a peer proxy's inbound listener).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// Where to connect.
    pub address: SocketAddr,
    /// Relative share of the service's traffic (default 1; 0 = none).
    #[serde(default = "one")]
    pub weight: u32,
    /// Free-form labels (version, zone, …) for humans: kept in the config and shown by `/config`,
    /// but neither routing nor metrics use them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The endpoint's SPIFFE identity: when set, the endpoint is a meshed proxy and the connection
    /// is mutual TLS, verified to present exactly this identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

fn one() -> u32 {
    1
}

/// One HTTPRoute rule (`spec.rules[]`), attached to the enclosing service.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    /// Rule name, used in metrics (`route` label); defaults to the rule's index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// OR-ed matches; none means "every request" (PathPrefix `/`).
    #[serde(default)]
    pub matches: Vec<HttpRouteMatch>,
    /// Filters applied in order.
    #[serde(default)]
    pub filters: Vec<HttpRouteFilter>,
    /// Weighted traffic split; empty means the enclosing service itself.
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
    /// Request and per-try timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Retry policy; no retries when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Fault injection for chaos tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultInjection>,
}

/// `HTTPRouteMatch`: all set conditions must hold.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteMatch {
    /// Path condition; PathPrefix `/` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// HTTP method, e.g. `GET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Header conditions (names case-insensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatch>,
    /// Query parameter conditions (names case-sensitive; first value used).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<ValueMatch>,
}

/// Path match types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PathMatchType {
    /// Case-sensitive equality.
    Exact,
    /// Segment-wise prefix: `/abc` matches `/abc/def`, not `/abcd`.
    #[default]
    PathPrefix,
    /// A `regex` crate expression matched against the whole path.
    RegularExpression,
}

/// `HTTPPathMatch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathMatch {
    /// Match type; PathPrefix when absent.
    #[serde(default, rename = "type")]
    pub kind: PathMatchType,
    /// The path, prefix or expression.
    pub value: String,
}

/// Header / query value match types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ValueMatchType {
    /// Equality.
    #[default]
    Exact,
    /// A `regex` crate expression matched against the whole value.
    RegularExpression,
}

/// `HTTPHeaderMatch` / `HTTPQueryParamMatch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValueMatch {
    /// Match type; Exact when absent.
    #[serde(default, rename = "type")]
    pub kind: ValueMatchType,
    /// Header or parameter name.
    pub name: String,
    /// Expected value or expression.
    pub value: String,
}

/// `HTTPRouteFilter`: a `type` and the matching payload field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum HttpRouteFilter {
    /// Modify request headers before forwarding.
    RequestHeaderModifier {
        /// The modifications.
        #[serde(rename = "requestHeaderModifier")]
        request_header_modifier: HeaderModifier,
    },
    /// Modify response headers before returning them.
    ResponseHeaderModifier {
        /// The modifications.
        #[serde(rename = "responseHeaderModifier")]
        response_header_modifier: HeaderModifier,
    },
    /// Answer with a redirect instead of forwarding.
    RequestRedirect {
        /// The redirect.
        #[serde(rename = "requestRedirect")]
        request_redirect: RequestRedirect,
    },
    /// Rewrite the host and/or path before forwarding.
    #[serde(rename = "URLRewrite")]
    UrlRewrite {
        /// The rewrite.
        #[serde(rename = "urlRewrite")]
        url_rewrite: UrlRewrite,
    },
    /// Send a copy of each request to another service; its response is ignored.
    RequestMirror {
        /// The mirror.
        #[serde(rename = "requestMirror")]
        request_mirror: RequestMirror,
    },
}

/// `HTTPURLRewriteFilter`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlRewrite {
    /// Replaces the `Host` header (`:authority`), port included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Replaces the path (the query is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

/// `HTTPPathModifier`: a `type` and the matching payload field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum PathModifier {
    /// Replace the whole path.
    ReplaceFullPath {
        /// The new path.
        #[serde(rename = "replaceFullPath")]
        replace_full_path: String,
    },
    /// Replace the part of the path matched by the rule's (only) PathPrefix match,
    /// element-wise: prefix `/foo` and replacement `/xyz` turn `/foo/bar` into `/xyz/bar`.
    ReplacePrefixMatch {
        /// The new prefix; may be empty.
        #[serde(rename = "replacePrefixMatch")]
        replace_prefix_match: String,
    },
}

/// `HTTPRequestMirrorFilter` (with `percent`), plus Kapal's body limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMirror {
    /// The service that receives the copies.
    pub backend_ref: MirrorBackendRef,
    /// Share of requests mirrored, 0–100 (default 100).
    #[serde(default = "hundred")]
    pub percent: u32,
    /// Largest request body copied; a request with a larger body is not mirrored (default 64 KiB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
}

/// The service a mirror sends to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MirrorBackendRef {
    /// Name of a service in `services`.
    pub name: String,
}

fn hundred() -> u32 {
    100
}

/// `HTTPHeaderFilter`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderModifier {
    /// Overwrite (or create) these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderValue>,
    /// Append these values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderValue>,
    /// Remove these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderValue {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// `HTTPRequestRedirectFilter`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestRedirect {
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// New host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// New path (the whole path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// New port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// 301, 302 (default), 303, 307 or 308.
    #[serde(default = "default_redirect_status")]
    pub status_code: u16,
}

fn default_redirect_status() -> u16 {
    302
}

/// `HTTPBackendRef`: a service name and a weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendRef {
    /// Name of a service in `services`.
    pub name: String,
    /// Share of the rule's traffic (default 1, 0–1,000,000).
    #[serde(default = "one")]
    pub weight: u32,
}

/// `HTTPRouteTimeouts`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeouts {
    /// Whole request including retries; `0s`/absent = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Duration>,
    /// One attempt to a backend; `0s`/absent = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<Duration>,
}

/// When and how often to retry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Maximum retries after the first attempt.
    #[serde(default = "one")]
    pub attempts: u32,
    /// HTTP status codes that are retried (default 502, 503, 504): for idempotent methods, or
    /// any with `nonIdempotent`.
    #[serde(default = "default_retry_codes")]
    pub codes: Vec<u16>,
    /// gRPC status codes that are retried when a response carries them in its headers (a
    /// trailers-only response, how gRPC servers fail fast), e.g. 14 (UNAVAILABLE). As in gRPC's
    /// retry policy, naming a code says calls failing with it are safe to repeat: they are
    /// retried although gRPC calls are POSTs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc_codes: Vec<u32>,
    /// Retry when the connection to the endpoint could not be made (default true).
    #[serde(default = "yes")]
    pub on_connect_failure: bool,
    /// Retry when the connection failed mid-request (reset) or an attempt timed out (default
    /// true): for idempotent methods, or any with `nonIdempotent`.
    #[serde(default = "yes")]
    pub on_reset: bool,
    /// Minimum wait between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
    /// Largest request body buffered for replay; larger bodies are not retried (default 64 KiB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Retry requests of methods that are not idempotent (POST, PATCH, …) after the endpoint
    /// had them too: on a status code, a reset or a per-try timeout (default false: for those
    /// methods only connect failures, refused HTTP/2 streams and the `grpcCodes`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub non_idempotent: bool,
}

fn default_retry_codes() -> Vec<u16> {
    vec![502, 503, 504]
}

fn yes() -> bool {
    true
}

fn default_max_body() -> u64 {
    64 * 1024
}

/// A retry budget (Linkerd-style): retries may add at most `ratio` of the requests in the last
/// `ttl`, plus `minRetriesPerSecond`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Fraction of requests that may be retried (0.0–1.0).
    pub ratio: f64,
    /// Retries always allowed per second regardless of ratio.
    pub min_retries_per_second: u32,
    /// Window over which requests and retries are counted.
    pub ttl: Duration,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self { ratio: 0.2, min_retries_per_second: 10, ttl: Duration(std::time::Duration::from_secs(10)) }
    }
}

/// Load balancing: power of two choices over peak-EWMA latency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancer {
    /// Latency assumed for an endpoint before it has answered.
    pub default_rtt: Duration,
    /// Decay time constant of the EWMA.
    pub decay: Duration,
}

impl Default for LoadBalancer {
    fn default() -> Self {
        Self {
            default_rtt: Duration(std::time::Duration::from_millis(30)),
            decay: Duration(std::time::Duration::from_secs(10)),
        }
    }
}

/// Consecutive-failure ejection with exponential back-off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Consecutive failures (5xx, connect errors) that eject an endpoint.
    #[serde(default = "default_consecutive")]
    pub consecutive_failures: u32,
    /// First ejection time; doubled on each consecutive ejection.
    #[serde(default = "default_base_ejection")]
    pub base_ejection_time: Duration,
    /// Cap of the ejection time.
    #[serde(default = "default_max_ejection")]
    pub max_ejection_time: Duration,
}

fn default_consecutive() -> u32 {
    7
}
fn default_base_ejection() -> Duration {
    Duration(std::time::Duration::from_secs(1))
}
fn default_max_ejection() -> Duration {
    Duration(std::time::Duration::from_secs(60))
}

/// Fault injection; delay and abort are independent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultInjection {
    /// Delay some requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    /// Fail some requests without forwarding them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

/// Delay `percentage` % of requests by `fixedDelay`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    /// How long.
    pub fixed_delay: Duration,
    /// Share of requests, 0–100.
    pub percentage: f64,
}

/// Answer `percentage` % of requests with `httpStatus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    /// Status to answer with (200–599).
    pub http_status: u16,
    /// Share of requests, 0–100.
    pub percentage: f64,
}

/// An inbound listener forwarding to the local application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inbound {
    /// Where peers (and unmeshed clients) connect.
    pub listen: SocketAddr,
    /// The application's port on 127.0.0.1.
    pub forward_port: u16,
    /// Protocol hint; `detect` when absent.
    #[serde(default)]
    pub protocol: Protocol,
    /// Refuse plaintext connections.
    #[serde(default)]
    pub require_mtls: bool,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let the request through.
    #[default]
    Allow,
    /// Answer 403.
    Deny,
}

/// Inbound authorization: any matching `deny` rule denies; else any matching `allow` rule
/// allows; else `defaultAction`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicy {
    /// What happens when no rule matches.
    #[serde(default)]
    pub default_action: Action,
    /// The rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<AuthorizationRule>,
}

/// One rule; empty lists match anything, non-empty lists match if any entry matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationRule {
    /// What to do when the rule matches.
    pub action: Action,
    /// Client SPIFFE identities; `*` = any authenticated client, `prefix*` = prefix match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    /// Paths; `prefix*` = prefix match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

impl ProxyConfig {
    /// Parses and validates YAML.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses and validates JSON.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = serde_json::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses JSON when the text starts with `{`, YAML otherwise.
    pub fn from_text(text: &str) -> Result<Self, ConfigError> {
        if text.trim_start().starts_with('{') { Self::from_json(text) } else { Self::from_yaml(text) }
    }

    /// Looks a service up by name.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

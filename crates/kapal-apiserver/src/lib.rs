//! Kapal's Kubernetes API server.
//!
//! One generic handler path serves every resource, driven by the registry (built-in kinds and
//! CRDs alike); per-kind behaviour lives in [`strategy`]. Reads and watches come from the
//! [`cache::WatchCache`]; writes go to the [`kapal_store::Store`] with optimistic concurrency.

// `ApiError` is the whole `metav1.Status` a client gets; it is built only on error paths and
// returned once per request, so its size does not matter.
#![allow(clippy::result_large_err)]

pub mod alloc;
pub mod auth;
mod bootstrap;
pub mod cache;
mod convert;
mod crd;
mod discovery;
mod handlers;
pub mod http;
mod join;
pub mod metrics;
pub mod objects;
mod openapi;
mod output;
mod patch;
pub mod pki;
mod podqos;
mod priority;
mod quota;
pub mod resources;
pub mod route;
mod server;
mod strategy;
mod typed;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use axum::body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use kapal_api::ApiError;
use kapal_store::{Store, StoreError};

pub use server::Running;

use crate::alloc::ServiceCidr;
use crate::auth::{Tokens, User};
use crate::handlers::Ctx;
use crate::http::{Query, error_response, json_response};
use crate::metrics::{LatencyLabels, Metrics, RequestLabels};
use crate::resources::Resources;
use crate::route::Route;

/// The Kubernetes version Kapal speaks.
pub const KUBERNETES_VERSION: (&str, &str, &str) = ("1", "33", "v1.33.0+kapal");

/// How to run the API server.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub bind_address: IpAddr,
    /// 0 picks a free port (tests).
    pub port: u16,
    /// The address other nodes and the `kubernetes` Service use; a host address by default.
    pub advertise_address: Option<IpAddr>,
    /// The cluster join token; generated and saved under the data dir when not given.
    pub token: Option<String>,
    /// Where to write the admin kubeconfig (`<data-dir>/kubeconfig.yaml` by default).
    pub write_kubeconfig: Option<PathBuf>,
    pub service_cidr: String,
    /// Extra names for the serving certificate.
    pub tls_sans: Vec<String>,
    /// Watch events kept for resuming watches; older resourceVersions get 410 Gone.
    pub watch_cache_history: usize,
    /// `etcd://h1:2379,h2:2379` (or `http(s)://…`) to keep state in etcd; `sqlite://PATH` or
    /// none for the embedded store under the data dir.
    pub datastore_endpoint: Option<String>,
    /// TLS files for an `https://` etcd.
    pub datastore_cafile: Option<PathBuf>,
    pub datastore_certfile: Option<PathBuf>,
    pub datastore_keyfile: Option<PathBuf>,
    /// Key prefix in etcd (`/registry` by default).
    pub etcd_prefix: Option<String>,
    /// How much store history automatic compaction keeps.
    pub retention: kapal_store::Retention,
    /// Seconds new pods tolerate `node.kubernetes.io/not-ready` and `…/unreachable` NoExecute
    /// taints unless they say otherwise (DefaultTolerationSeconds admission).
    pub default_not_ready_toleration_seconds: i64,
    pub default_unreachable_toleration_seconds: i64,
}

impl Config {
    /// Defaults matching `kapal server` with no flags, under `data_dir`.
    pub fn new(data_dir: PathBuf) -> Config {
        Config {
            data_dir,
            bind_address: IpAddr::from([0, 0, 0, 0]),
            port: 6443,
            advertise_address: None,
            token: None,
            write_kubeconfig: None,
            service_cidr: "10.43.0.0/16".into(),
            tls_sans: Vec::new(),
            watch_cache_history: cache::DEFAULT_HISTORY,
            datastore_endpoint: None,
            datastore_cafile: None,
            datastore_certfile: None,
            datastore_keyfile: None,
            etcd_prefix: None,
            retention: kapal_store::Retention::default(),
            default_not_ready_toleration_seconds: kapal_api::defaults::DEFAULT_TOLERATION_SECONDS,
            default_unreachable_toleration_seconds: kapal_api::defaults::DEFAULT_TOLERATION_SECONDS,
        }
    }
}

/// The API server's shared state.
pub struct ApiServer {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) cache: Arc<cache::WatchCache>,
    pub(crate) resources: Arc<Resources>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tokens: Tokens,
    pub(crate) service_cidr: ServiceCidr,
    openapi: openapi::OpenApi,
    ready: AtomicBool,
    /// The CA that agents fetch from `/cacerts` before they trust the server.
    cacerts: std::sync::OnceLock<join::CaBundle>,
    /// DefaultTolerationSeconds for not-ready and unreachable nodes.
    pub(crate) toleration_seconds: (i64, i64),
}

/// Maps a store error to the Status a client sees.
pub(crate) fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(m) => ApiError::unavailable(format!("storage is unavailable: {m}")),
        StoreError::Compacted { requested, compacted } => ApiError::gone_too_old(requested, compacted),
        StoreError::FutureRevision { requested, current } => handlers_too_large(requested, current),
        StoreError::WatchLagged => ApiError::unavailable("watch fell behind"),
        other => ApiError::internal(other.to_string()),
    }
}

fn handlers_too_large(requested: i64, current: i64) -> ApiError {
    ApiError::timeout(format!("Timeout: Too large resource version: {requested}, current: {current}"))
}

impl ApiServer {
    /// Builds the server state on a store: loads the watch cache and wires CRDs in.
    /// `toleration_seconds` are the DefaultTolerationSeconds for not-ready and unreachable nodes.
    pub async fn new(
        store: Arc<dyn Store>,
        service_cidr: ServiceCidr,
        history: usize,
        toleration_seconds: (i64, i64),
    ) -> anyhow::Result<Arc<ApiServer>> {
        let metrics = Arc::new(Metrics::new());
        let store: Arc<dyn Store> = Arc::new(metrics::Metered { inner: store, metrics: metrics.clone() });
        let cache = cache::WatchCache::start(store.clone(), history).await.context("loading the watch cache")?;
        let resources = Arc::new(Resources::new());
        let crd_prefix = "/registry/apiextensions.k8s.io/customresourcedefinitions/";
        let r = resources.clone();
        cache.add_hook(
            crd_prefix,
            Box::new(move |ev| {
                let name = ev.key.trim_start_matches(crd_prefix);
                let crd = (ev.change != cache::Change::Deleted).then(|| ev.object.object());
                r.set_crd(name, crd.as_deref());
            }),
        );
        Ok(Arc::new(ApiServer {
            store,
            cache,
            resources,
            metrics,
            tokens: Tokens::default(),
            service_cidr,
            openapi: openapi::OpenApi::default(),
            ready: AtomicBool::new(false),
            cacerts: std::sync::OnceLock::new(),
            toleration_seconds,
        }))
    }

    /// Accepts `token` as a bearer token for `user`.
    pub fn add_token(&self, token: &str, user: User) {
        self.tokens.add(token, user);
    }

    /// Serves one HTTP request from a connection whose client certificate gave `cert_user`.
    pub async fn handle(
        self: &Arc<Self>,
        req: hyper::Request<Incoming>,
        cert_user: Option<User>,
    ) -> hyper::Response<Body> {
        let start = Instant::now();
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_string();
        let query = Query::parse(parts.uri.query());
        let route = route::parse(&path);
        let user = match auth::authenticate(cert_user.as_ref(), &parts.headers, &self.tokens) {
            Ok(Some(u)) => u,
            Ok(None) if auth::is_public(&path) => User::new("system:anonymous", &["system:unauthenticated"]),
            _ => return error_response(&ApiError::unauthorized()),
        };
        let resp = match route {
            Route::Resource(p) => {
                let snapshot = self.resources.snapshot();
                let Some(served) = snapshot.get(&p.group, &p.version, &p.plural).cloned() else {
                    return error_response(&ApiError::no_route());
                };
                let body = match read_body(body).await {
                    Ok(b) => b,
                    Err(e) => return error_response(&e),
                };
                let verb = verb_of(&parts.method, p.name.is_some(), query.flag("watch"));
                let labels = (
                    verb,
                    served.info.group.clone(),
                    served.info.plural.clone(),
                    p.subresource.clone().unwrap_or_default(),
                );
                let ctx = Ctx { method: parts.method, headers: parts.headers, query, user, path: p, served, body };
                let resp = self.serve_resource(ctx).await;
                self.record(labels, resp.status().as_u16(), start);
                resp
            }
            Route::RootDiscovery { core } => discovery::root(&self.resources.snapshot(), core, &parts.headers),
            Route::GroupDiscovery { group } => discovery::group(&self.resources.snapshot(), &group),
            Route::GroupVersionDiscovery { group, version } => {
                discovery::group_version(&self.resources.snapshot(), &group, &version)
            }
            Route::Other => self.serve_other(&path, &query, &parts.headers),
        };
        tracing::debug!(path, status = resp.status().as_u16(), "request");
        resp
    }

    fn record(
        &self,
        (verb, group, resource, subresource): (&'static str, String, String, String),
        code: u16,
        start: Instant,
    ) {
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                verb: verb.into(),
                group: group.clone(),
                resource: resource.clone(),
                subresource,
                code: code.to_string(),
            })
            .inc();
        if verb != "WATCH" {
            self.metrics
                .latency
                .get_or_create(&LatencyLabels { verb: verb.into(), group, resource })
                .observe(start.elapsed().as_secs_f64());
        }
    }

    fn serve_other(&self, path: &str, query: &Query, headers: &::http::HeaderMap) -> hyper::Response<Body> {
        match path.trim_end_matches('/') {
            "/version" => json_response(
                ::http::StatusCode::OK,
                &serde_json::json!({
                    "major": KUBERNETES_VERSION.0,
                    "minor": KUBERNETES_VERSION.1,
                    "gitVersion": KUBERNETES_VERSION.2,
                    "gitCommit": env!("CARGO_PKG_VERSION"),
                    "gitTreeState": "clean",
                    "buildDate": "1970-01-01T00:00:00Z",
                    "goVersion": "rust",
                    "compiler": "rustc",
                    "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
                }),
            ),
            "/cacerts" => match self.cacerts.get() {
                Some(bundle) => bundle.response(),
                None => error_response(&ApiError::no_route()),
            },
            "/healthz" | "/livez" => {
                http::bytes_response(::http::StatusCode::OK, "text/plain; charset=utf-8", b"ok".to_vec())
            }
            "/readyz" => {
                if self.ready.load(Ordering::SeqCst) {
                    http::bytes_response(::http::StatusCode::OK, "text/plain; charset=utf-8", b"ok".to_vec())
                } else {
                    http::bytes_response(
                        ::http::StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        b"[-]bootstrap failed: not finished\nreadyz check failed".to_vec(),
                    )
                }
            }
            "/metrics" => {
                self.metrics.objects.set(self.cache.len() as i64);
                http::bytes_response(
                    ::http::StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    self.metrics.render().into_bytes(),
                )
            }
            p if p.starts_with("/openapi/") => self.openapi.serve(&self.resources.snapshot(), p, query, headers),
            "" => json_response(
                ::http::StatusCode::OK,
                &serde_json::json!({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/metrics", "/openapi/v2", "/openapi/v3", "/readyz", "/version"]}),
            ),
            _ => error_response(&ApiError::no_route()),
        }
    }

    /// Publishes the cluster CA at `/cacerts`, vouched for by the join token.
    pub(crate) fn set_cacerts(&self, bundle: join::CaBundle) {
        let _ = self.cacerts.set(bundle);
    }

    /// The cluster CA certificate (PEM), once the PKI is loaded.
    pub(crate) fn ca_pem(&self) -> Option<String> {
        self.cacerts.get().map(|b| b.pem().to_string())
    }

    /// Marks the server ready (`/readyz` 200).
    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// How many objects the watch cache holds.
    pub fn cached_objects(&self) -> usize {
        self.cache.len()
    }
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn verb_of(method: &::http::Method, named: bool, watch: bool) -> &'static str {
    match (method.as_str(), named, watch) {
        ("GET", _, true) => "WATCH",
        ("GET", true, _) => "GET",
        ("GET", false, _) => "LIST",
        ("POST", _, _) => "POST",
        ("PUT", _, _) => "PUT",
        ("PATCH", _, _) => "PATCH",
        ("DELETE", true, _) => "DELETE",
        ("DELETE", false, _) => "DELETECOLLECTION",
        _ => "OTHER",
    }
}

async fn read_body(body: Incoming) -> Result<bytes::Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, http::MAX_BODY + 1);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                Err(ApiError::too_large(format!(
                    "the request body is larger than the limit of {} bytes",
                    http::MAX_BODY
                )))
            } else {
                Err(ApiError::bad_request(format!("reading the request body: {e}")))
            }
        }
    }
}

/// Starts the API server described by `config`: store, certificates, kubeconfig, listener,
/// bootstrap objects.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    server::start(config).await
}

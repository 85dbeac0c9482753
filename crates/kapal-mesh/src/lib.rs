//! Kapal's mesh sidecar proxy (`kapal proxy`).
//!
//! A stack of small tower layers (routing, metrics, faults, timeouts, retries, balancing) behind
//! listeners that detect the protocol, terminate mesh mTLS and serve HTTP/1.1, HTTP/2 and gRPC
//! with hyper, or forward opaque TCP. Config comes from a file (hot-reloaded) or a control-plane
//! stream ([`control`]). Entry points: [`run`] for the CLI, [`Proxy`] for embedding and
//! tests.

pub mod admin;
pub mod balance;
mod body;
pub mod budget;
pub mod client;
pub mod config;
pub mod control;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod identity;
pub mod io;
pub mod metrics;
pub mod otlp;
pub mod route;
pub mod server;
pub mod state;
pub mod tls;
pub mod trace;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore, watch};
use tokio::task::JoinHandle;

use crate::config::ProxyConfig;
use crate::control::{ControlPlane, ControlPlaneOptions};
use crate::metrics::{Metrics, ResultLabels};
use crate::server::{ConnCtx, Kind};
use crate::state::{InboundKey, Shared};
use crate::tls::{MeshTls, TlsFiles};

/// Boxed error for bodies and I/O.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub use body::Body;

/// Errors starting or reconfiguring the proxy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The config could not be compiled.
    #[error(transparent)]
    Apply(#[from] state::ApplyError),
    /// Certificates could not be loaded.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// A listener could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The OTLP exporter could not be set up.
    #[error(transparent)]
    Otlp(#[from] otlp::OtlpError),
    /// The control-plane client could not be set up.
    #[error(transparent)]
    ControlPlane(#[from] control::ControlPlaneError),
    /// Flags that do not fit together, or a feature that does not exist yet.
    #[error("{0}")]
    Usage(String),
}

/// Limits and timeouts of the listeners.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Admin server address; none = no admin server.
    pub admin: Option<SocketAddr>,
    /// How long to wait for a client's first bytes before treating the connection as opaque TCP.
    pub detect_timeout: Duration,
    /// HTTP/1 header read timeout (slowloris, idle keep-alive): how long a connection with
    /// nothing in flight may take to send a whole request head; it is closed after one to one
    /// and a half of it. HTTP/2 connections are not held to it.
    pub header_read_timeout: Duration,
    /// Maximum size of request headers in bytes.
    pub max_header_bytes: usize,
    /// Maximum number of HTTP/1 request headers.
    pub max_headers: usize,
    /// Maximum concurrently open client connections over all listeners.
    pub max_connections: usize,
    /// Write a JSON access log line per request to stdout.
    pub access_log: bool,
    /// Transparent outbound listener (traffic redirected from the application's egress).
    pub outbound: Option<SocketAddr>,
    /// Transparent inbound listener (traffic redirected to the application's ports).
    pub inbound: Option<SocketAddr>,
    /// How transparent listeners learn a connection's original destination.
    pub original_dst: Arc<dyn server::OriginalDst>,
    /// Where the proxy counts; shared with the control-plane client, which runs before the
    /// proxy starts.
    pub metrics: Arc<Metrics>,
    /// Export one span per request over OTLP/HTTP.
    pub otlp: Option<otlp::OtlpOptions>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            admin: None,
            detect_timeout: Duration::from_millis(300),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_connections: 20_000,
            access_log: false,
            outbound: None,
            inbound: None,
            original_dst: Arc::new(server::SoOriginalDst),
            metrics: Arc::new(Metrics::default()),
            otlp: None,
        }
    }
}

type ListenerKey = (String, SocketAddr);

const CONTROL_PLANE: &str = "control_plane";

/// Reads documents until a valid one arrives: the proxy's first config.
async fn first_config(control: &mut ControlPlane, metrics: &Metrics) -> ProxyConfig {
    loop {
        match control.next().await {
            Ok(config) => return config,
            Err(error) => {
                metrics.config_reloads.get_or_create(&ResultLabels { direction: CONTROL_PLANE, result: "error" }).inc();
                tracing::error!(%error, "control-plane config rejected; waiting for a valid one to start");
            }
        }
    }
}

/// A running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    ctx: ConnCtx,
    drain: watch::Sender<bool>,
    listeners: Mutex<HashMap<ListenerKey, (SocketAddr, JoinHandle<()>)>>,
    ready: Arc<AtomicBool>,
    admin: Option<SocketAddr>,
}

fn desired_listeners(config: &ProxyConfig, opts: &ProxyOptions) -> Vec<(ListenerKey, Kind)> {
    let transparent = [
        opts.outbound.map(|a| (("transparent-outbound".to_string(), a), Kind::TransparentOutbound)),
        opts.inbound.map(|a| (("transparent-inbound".to_string(), a), Kind::TransparentInbound)),
    ];
    let outbound = config
        .services
        .iter()
        .filter_map(|s| s.listen.map(|addr| ((format!("out:{}", s.name), addr), Kind::Outbound(s.name.clone()))));
    let inbound =
        config.inbound.iter().map(|ib| (("in".to_string(), ib.listen), Kind::Inbound(InboundKey::Listen(ib.listen))));
    outbound.chain(inbound).chain(transparent.into_iter().flatten()).collect()
}

impl Proxy {
    /// Validates `config`, binds its listeners and the admin server, and starts serving.
    pub async fn start(config: ProxyConfig, opts: ProxyOptions, tls: Option<Arc<MeshTls>>) -> Result<Self, Error> {
        config.validate()?;
        let mut shared = Shared::new(config.clone(), opts.metrics.clone(), tls)?;
        shared.spans = opts.otlp.clone().map(|o| otlp::start(o, opts.metrics.clone())).transpose()?;
        let shared = Arc::new(shared);
        shared.access_log.store(opts.access_log, Ordering::Relaxed);
        let (drain, drain_rx) = watch::channel(false);
        let ctx = ConnCtx {
            shared: shared.clone(),
            slots: Arc::new(Semaphore::new(opts.max_connections)),
            opts: Arc::new(opts.clone()),
            drain: drain_rx,
        };
        let ready = Arc::new(AtomicBool::new(false));
        let admin = match opts.admin {
            None => None,
            Some(addr) => {
                let l = TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
                let bound = l.local_addr().map_err(|source| Error::Bind { addr, source })?;
                tokio::spawn(admin::serve(l, shared.clone(), ready.clone()));
                Some(bound)
            }
        };
        let proxy = Proxy { shared, ctx, drain, listeners: Mutex::default(), ready, admin };
        proxy.reconcile(&config, || Ok(())).await?;
        proxy.ready.store(true, Ordering::Relaxed);
        Ok(proxy)
    }

    /// Binds listeners that `config` adds, runs `apply`, then starts them and stops the ones it
    /// removes. On any error nothing changes.
    async fn reconcile(&self, config: &ProxyConfig, apply: impl FnOnce() -> Result<(), Error>) -> Result<(), Error> {
        let mut listeners = self.listeners.lock().await;
        let desired = desired_listeners(config, &self.ctx.opts);
        let mut fresh = Vec::new();
        for (key, kind) in &desired {
            if listeners.contains_key(key) {
                continue;
            }
            let addr = key.1;
            let l = TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
            fresh.push((key.clone(), kind.clone(), l));
        }
        apply()?;
        for (key, kind, l) in fresh {
            let bound = l.local_addr().map_err(|source| Error::Bind { addr: key.1, source })?;
            tracing::info!(listen = %bound, ?kind, "listening");
            let task = tokio::spawn(server::accept_loop(l, kind, self.ctx.clone()));
            listeners.insert(key, (bound, task));
        }
        let keep: std::collections::HashSet<_> = desired.into_iter().map(|(k, _)| k).collect();
        listeners.retain(|key, (bound, task)| {
            let stay = keep.contains(key);
            if !stay {
                // Open connections keep running; only accepting stops.
                tracing::info!(listen = %bound, "listener removed");
                task.abort();
            }
            stay
        });
        Ok(())
    }

    /// Validates and applies a new config; on error the current one keeps serving.
    pub async fn reload(&self, config: ProxyConfig) -> Result<(), Error> {
        self.reload_from(config, "local").await
    }

    /// [`Proxy::reload`], counted under `source` (`local` for files, `control_plane`).
    async fn reload_from(&self, config: ProxyConfig, source: &'static str) -> Result<(), Error> {
        let result = async {
            config.validate()?;
            let shared = self.shared.clone();
            let cfg = config.clone();
            self.reconcile(&config, move || Ok(shared.apply(cfg)?)).await
        }
        .await;
        let label = if result.is_ok() { "ok" } else { "error" };
        self.shared.metrics.config_reloads.get_or_create(&ResultLabels { direction: source, result: label }).inc();
        result
    }

    /// Applies every document of the control-plane stream, like a file reload: a valid one
    /// hot-swaps the config, an invalid one is logged and counted
    /// (`config_reloads{direction="control_plane",result="error"}`) and the last good config
    /// keeps serving. A document equal to the current config (a reconnect resends it) is
    /// counted as `unchanged` and not re-applied.
    pub async fn follow_control_plane(self: Arc<Self>, mut control: ControlPlane) {
        loop {
            let result = match control.next().await {
                Ok(config) if *self.config() == config => {
                    let labels = ResultLabels { direction: CONTROL_PLANE, result: "unchanged" };
                    self.shared.metrics.config_reloads.get_or_create(&labels).inc();
                    continue;
                }
                Ok(config) => self.reload_from(config, CONTROL_PLANE).await,
                Err(e) => {
                    let labels = ResultLabels { direction: CONTROL_PLANE, result: "error" };
                    self.shared.metrics.config_reloads.get_or_create(&labels).inc();
                    Err(e.into())
                }
            };
            match result {
                Ok(()) => tracing::info!("config from the control plane applied"),
                Err(error) => tracing::error!(%error, "control-plane config rejected; keeping the last good config"),
            }
        }
    }

    /// The bound address of the outbound listener of `service`.
    pub async fn outbound_addr(&self, service: &str) -> Option<SocketAddr> {
        let listeners = self.listeners.lock().await;
        listeners.iter().find(|((k, _), _)| k.strip_prefix("out:") == Some(service)).map(|(_, (a, _))| *a)
    }

    /// The bound address of the inbound listener configured as `listen`.
    pub async fn inbound_addr(&self, listen: SocketAddr) -> Option<SocketAddr> {
        self.listeners.lock().await.get(&("in".to_string(), listen)).map(|(a, _)| *a)
    }

    /// The bound address of the transparent outbound (`"outbound"`) or inbound (`"inbound"`)
    /// listener.
    pub async fn transparent_addr(&self, direction: &str) -> Option<SocketAddr> {
        let listeners = self.listeners.lock().await;
        listeners.iter().find(|((k, _), _)| k.strip_prefix("transparent-") == Some(direction)).map(|(_, (a, _))| *a)
    }

    /// The admin server's address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Metrics (also served at `/metrics`).
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The config currently serving.
    pub fn config(&self) -> Arc<ProxyConfig> {
        self.shared.snapshot().config.clone()
    }

    /// Graceful drain: readiness fails, listeners stop accepting, open connections finish their
    /// requests (HTTP/1 `Connection: close`, HTTP/2 GOAWAY); returns when all are closed or
    /// after `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        self.ready.store(false, Ordering::Relaxed);
        let _ = self.drain.send(true);
        let all = u32::try_from(self.ctx.opts.max_connections).unwrap_or(u32::MAX);
        match tokio::time::timeout(grace, self.ctx.slots.acquire_many(all)).await {
            Ok(_) => tracing::info!("drained all connections"),
            Err(_) => tracing::warn!(
                open = self.ctx.opts.max_connections - self.ctx.slots.available_permits(),
                "drain grace period over; closing remaining connections"
            ),
        }
    }

    /// Polls `path` and reloads on change; a bad file is logged and ignored.
    pub async fn watch_config_file(self: Arc<Self>, path: PathBuf, every: Duration) {
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut seen: Option<SystemTime> = mtime(&path);
        loop {
            tokio::time::sleep(every).await;
            let now = mtime(&path);
            if now == seen {
                continue;
            }
            seen = now;
            let result = match tokio::fs::read_to_string(&path).await {
                Ok(text) => match ProxyConfig::from_text(&text) {
                    Ok(cfg) => self.reload(cfg).await,
                    Err(e) => {
                        let labels = ResultLabels { direction: "local", result: "error" };
                        self.shared.metrics.config_reloads.get_or_create(&labels).inc();
                        Err(e.into())
                    }
                },
                Err(source) => Err(Error::Read { path: path.clone(), source }),
            };
            match result {
                Ok(()) => tracing::info!(path = %path.display(), "config reloaded"),
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "config rejected; keeping the last good config")
                }
            }
        }
    }
}

/// `kapal proxy` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// Proxy config file (YAML or JSON); reloaded when it changes. With --control-plane it is
    /// only the config served until the first document arrives (and is not watched).
    #[arg(long, env = "KAPAL_PROXY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Transparent outbound listener: the application's egress redirected here (nftables
    /// REDIRECT); services are found by original destination (`addresses`), other traffic is
    /// passed through.
    #[arg(long)]
    pub outbound: Option<SocketAddr>,
    /// Transparent inbound listener: traffic to the application's ports redirected here, sent
    /// on to 127.0.0.1 at the original port (mTLS, policy and metrics applied).
    #[arg(long)]
    pub inbound: Option<SocketAddr>,
    /// Log one JSON line per request to stdout.
    #[arg(long)]
    pub access_log: bool,
    /// Admin server address (/metrics, /ready, /live, /config).
    #[arg(long, default_value = "127.0.0.1:4191")]
    pub admin: SocketAddr,
    /// Directory holding cert.pem, key.pem and ca.pem (mesh identity); reloaded on change.
    #[arg(long, conflicts_with_all = ["cert", "key", "ca"])]
    pub identity_dir: Option<PathBuf>,
    /// Certificate chain (PEM) with the proxy's SPIFFE ID; needs --key and --ca.
    #[arg(long, requires_all = ["key", "ca"])]
    pub cert: Option<PathBuf>,
    /// Private key (PEM).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Mesh trust anchors (PEM).
    #[arg(long, requires = "cert")]
    pub ca: Option<PathBuf>,
    /// Streaming config endpoint of the mesh control plane (`http://` or `https://`): a GET whose
    /// body is newline-delimited JSON ProxyConfig documents; reconnects with back-off.
    #[arg(long, env = "KAPAL_PROXY_CONTROL_PLANE")]
    pub control_plane: Option<String>,
    /// Trust anchors (PEM) for an https --control-plane. With a mesh identity (--identity-dir or
    /// --cert) the proxy presents its certificate to the control plane as a TLS client.
    #[arg(long, requires = "control_plane")]
    pub control_plane_ca: Option<PathBuf>,
    /// OpenTelemetry collector (`http://host:4318`): one span per request is exported over
    /// OTLP/HTTP JSON to `{URL}/v1/traces`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans (default `kapal-proxy`).
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub otlp_service_name: Option<String>,
    /// Timeout for protocol detection before falling back to opaque TCP.
    #[arg(long, default_value = "300ms", value_parser = parse_duration)]
    pub detect_timeout: config::Duration,
    /// How long to drain connections after SIGTERM.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: config::Duration,
    /// Maximum open client connections.
    #[arg(long, default_value_t = 20_000)]
    pub max_connections: usize,
    /// How often config and certificate files are checked for changes.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub reload_interval: config::Duration,
    /// Threads that serve connections [default: the CPUs the proxy may use: its CPU affinity
    /// and its cgroup's CPU quota]. With one, the proxy runs on a single-threaded runtime, which
    /// does 2–6 % less work per request than a multi-threaded one of one thread.
    #[arg(long, env = "KAPAL_PROXY_THREADS")]
    pub threads: Option<std::num::NonZeroUsize>,
}

impl ProxyArgs {
    /// The runtime `run` wants: `--threads`, else as many threads as CPUs it may use, and with
    /// one thread the single-threaded scheduler (as a one-CPU sidecar usually has).
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let threads = match self.threads {
            Some(n) => n.get(),
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let mut builder = if threads == 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(threads);
            b
        };
        builder.enable_all().build()
    }
}

fn parse_duration(s: &str) -> Result<config::Duration, String> {
    config::Duration::parse(s)
}

/// Runs `kapal proxy` until SIGTERM/SIGINT, then drains.
pub async fn run(args: ProxyArgs) -> Result<(), Error> {
    let metrics = Arc::new(Metrics::default());
    let files = match (&args.identity_dir, &args.cert, &args.key, &args.ca) {
        (Some(dir), ..) => Some(TlsFiles::in_dir(dir)),
        (None, Some(cert), Some(key), Some(ca)) => {
            Some(TlsFiles { cert: cert.clone(), key: key.clone(), ca: ca.clone() })
        }
        _ => None,
    };
    let tls = files.map(MeshTls::load).transpose()?.map(Arc::new);
    let mut control = match &args.control_plane {
        None => None,
        Some(url) => {
            let opts = ControlPlaneOptions {
                ca: args.control_plane_ca.clone(),
                identity: tls.clone(),
                ..ControlPlaneOptions::new(url)
            };
            Some(ControlPlane::new(opts, metrics.clone())?)
        }
    };
    let config = match (&args.config, &mut control) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.clone(), source })?;
            ProxyConfig::from_text(&text)?
        }
        (None, Some(control)) => {
            tracing::info!("waiting for the first config from the control plane");
            first_config(control, &metrics).await
        }
        (None, None) => return Err(Error::Usage("--config FILE or --control-plane URL is required".into())),
    };
    let opts = ProxyOptions {
        admin: Some(args.admin),
        detect_timeout: args.detect_timeout.0,
        max_connections: args.max_connections,
        access_log: args.access_log,
        outbound: args.outbound,
        inbound: args.inbound,
        metrics,
        otlp: args.otlp_endpoint.as_ref().map(|endpoint| {
            let defaults = otlp::OtlpOptions::new(endpoint);
            otlp::OtlpOptions {
                service_name: args.otlp_service_name.clone().unwrap_or(defaults.service_name.clone()),
                ..defaults
            }
        }),
        ..ProxyOptions::default()
    };
    let proxy = Arc::new(Proxy::start(config, opts, tls.clone()).await?);
    tracing::info!(identity = ?tls.as_ref().and_then(|t| t.identity()), admin = ?proxy.admin_addr(), "proxy started");
    let every = args.reload_interval.0;
    if let Some(tls) = tls {
        tokio::spawn(tls.watch(every, proxy.shared.metrics.clone()));
    }
    match (control, args.config) {
        (Some(control), _) => drop(tokio::spawn(proxy.clone().follow_control_plane(control))),
        (None, Some(path)) => drop(tokio::spawn(proxy.clone().watch_config_file(path, every))),
        (None, None) => {}
    }
    wait_for_signal().await;
    tracing::info!("shutting down: draining connections");
    proxy.shutdown(args.drain_timeout.0).await;
    Ok(())
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the proxy");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        proxy: ProxyArgs,
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "kapal-proxy",
            "--config",
            "/etc/kapal/proxy.yaml",
            "--identity-dir",
            "/var/run/kapal/identity",
            "--outbound",
            "127.0.0.1:4140",
            "--inbound",
            "0.0.0.0:4143",
            "--detect-timeout",
            "500ms",
            "--access-log",
            "--control-plane",
            "http://kapal:8080/mesh?pod=default/web-0",
            "--otlp-endpoint",
            "http://otel:4318",
        ])
        .unwrap();
        let cli = cli.proxy;
        assert_eq!(cli.otlp_endpoint.as_deref(), Some("http://otel:4318"));
        assert_eq!(cli.control_plane.as_deref(), Some("http://kapal:8080/mesh?pod=default/web-0"));
        assert_eq!(cli.outbound, Some("127.0.0.1:4140".parse().unwrap()));
        assert_eq!(cli.detect_timeout.0, Duration::from_millis(500));
        assert!(cli.access_log);
        assert_eq!(cli.admin, "127.0.0.1:4191".parse().unwrap());
        // Identity files come either as a directory or as three files.
        assert!(Cli::try_parse_from(["p", "--identity-dir", "/d", "--cert", "/c"]).is_err());
        assert!(Cli::try_parse_from(["p", "--cert", "/c"]).is_err());
        assert!(Cli::try_parse_from(["p", "--detect-timeout", "1.5s"]).is_err());
    }

    #[test]
    fn the_runtime_has_the_threads_asked_for() {
        use tokio::runtime::RuntimeFlavor;
        let runtime = |extra: &[&str]| Cli::try_parse_from([&["p"], extra].concat()).unwrap().proxy.runtime().unwrap();
        // One thread: the single-threaded scheduler, which still serves (timers and I/O on).
        let one = runtime(&["--threads", "1"]);
        assert_eq!(one.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        one.block_on(async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        });
        let three = runtime(&["--threads", "3"]);
        assert_eq!(three.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(three.metrics().num_workers(), 3);
        // By default (unless the environment says otherwise), one thread per CPU the process
        // may use.
        if std::env::var_os("KAPAL_PROXY_THREADS").is_none() {
            let cpus = std::thread::available_parallelism().unwrap().get();
            assert_eq!(runtime(&[]).metrics().num_workers(), cpus);
        }
        let err = Cli::try_parse_from(["p", "--threads", "0"]).unwrap_err().to_string();
        assert!(err.contains("--threads"), "{err}");
    }

    #[tokio::test]
    async fn bad_and_missing_inputs_are_reported() {
        let args = |extra: &[&str]| Cli::try_parse_from([&["p"], extra].concat()).unwrap().proxy;
        let err = run(args(&["--control-plane", "https://kapal:8443"])).await.unwrap_err();
        assert!(err.to_string().contains("--control-plane-ca"), "{err}");
        let err = run(args(&["--control-plane", "unix:///run/cp.sock"])).await.unwrap_err();
        assert!(err.to_string().contains("--control-plane \"unix:///run/cp.sock\""), "{err}");
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "apiVersion: kapal.dev/v1alpha1\nkind: ProxyConfig\n").unwrap();
        let config = file.path().to_str().unwrap();
        let err = run(args(&["--config", config, "--otlp-endpoint", "https://otel:4318"])).await.unwrap_err();
        assert!(err.to_string().contains("--otlp-endpoint \"https://otel:4318\""), "{err}");
        let err = run(args(&[])).await.unwrap_err();
        assert!(err.to_string().contains("--config") && err.to_string().contains("--control-plane"), "{err}");
        assert!(Cli::try_parse_from(["p", "--control-plane-ca", "/ca.pem"]).is_err());
        let err = run(args(&["--config", "/nonexistent/proxy.yaml"])).await.unwrap_err();
        assert!(err.to_string().contains("/nonexistent/proxy.yaml"), "{err}");
    }
}

//! The HTTPS listener: TLS with optional client certificates, HTTP/1.1 and HTTP/2.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::alloc::ServiceCidr;
use crate::auth::{User, user_from_certificate};
use crate::pki::{Pki, host_addresses, write_kubeconfig};
use crate::{ApiServer, Config};

/// A running API server.
pub struct Running {
    pub addr: SocketAddr,
    pub api: Arc<ApiServer>,
    pub pki: Pki,
    pub kubeconfig_path: PathBuf,
    /// The admin kubeconfig's contents.
    pub kubeconfig: String,
    /// The cluster join token (also a bearer token for the API).
    pub token: String,
    /// A token for in-process clients (controllers) that authenticates as `system:kapal`.
    pub loopback_token: String,
    shutdown: watch::Sender<bool>,
}

impl Running {
    /// Stops accepting connections.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// The `https://127.0.0.1:port` URL of the server.
    pub fn loopback_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }
}

fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn load_or_create_token(config: &Config) -> Result<String> {
    if let Some(t) = &config.token {
        return Ok(t.clone());
    }
    let path = config.data_dir.join("token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Ok(t);
        }
    }
    let t = random_token();
    std::fs::write(&path, format!("{t}\n")).with_context(|| format!("writing {}", path.display()))?;
    Ok(t)
}

pub(crate) async fn start(config: Config) -> Result<Running> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let service_cidr = ServiceCidr::parse(&config.service_cidr).map_err(|e| anyhow::anyhow!("--service-cidr: {e}"))?;
    let store = open_store(&config).await?;
    kapal_store::spawn_compactor(store.clone(), config.retention);
    let tolerations = (config.default_not_ready_toleration_seconds, config.default_unreachable_toleration_seconds);
    let api = ApiServer::new(store, service_cidr, config.watch_cache_history, tolerations).await?;

    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
    let addresses = host_addresses();
    let mut sans: Vec<String> = vec!["localhost".into(), "127.0.0.1".into()];
    for name in [hostname.clone()].into_iter().chain(addresses.iter().cloned()).chain(config.tls_sans.iter().cloned()) {
        if !name.is_empty() && !sans.contains(&name) {
            sans.push(name);
        }
    }
    sans.push(service_cidr.nth(1).to_string());
    for n in ["kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"] {
        sans.push(n.into());
    }
    let token = load_or_create_token(&config)?;
    // Servers sharing a store share the CA and admin identity (the token unlocks them).
    crate::join::sync(&api.store, &config.data_dir.join("tls"), &token).await?;
    let pki = Pki::load_or_create(&config.data_dir.join("tls"), &sans)?;
    api.set_cacerts(crate::join::CaBundle::new(&pki.ca.cert, &token));

    let listener = TcpListener::bind((config.bind_address, config.port)).await.with_context(|| {
        format!("listening on {}:{} (--bind-address/--https-listen-port)", config.bind_address, config.port)
    })?;
    let addr = listener.local_addr()?;

    let loopback_token = random_token();
    api.add_token(&token, User::new("system:kapal:token", &["system:masters"]));
    api.add_token(&loopback_token, User::new("system:kapal", &["system:masters"]));

    let advertise = config
        .advertise_address
        .map(|a| a.to_string())
        .or_else(|| addresses.iter().find(|a| !a.starts_with("127.")).cloned())
        .unwrap_or_else(|| "127.0.0.1".into());
    crate::bootstrap::run(&api, &advertise, addr.port()).await?;
    api.set_ready();

    let kubeconfig_path = config.write_kubeconfig.clone().unwrap_or_else(|| config.data_dir.join("kubeconfig.yaml"));
    let kubeconfig = pki.kubeconfig(&format!("https://127.0.0.1:{}", addr.port()));
    write_kubeconfig(&kubeconfig_path, &kubeconfig)?;

    let tls = tls_config(&pki)?;
    let (shutdown, rx) = watch::channel(false);
    tokio::spawn(accept_loop(listener, tls, api.clone(), rx));
    tracing::info!(%addr, kubeconfig = %kubeconfig_path.display(), "API server listening");
    Ok(Running { addr, api, pki, kubeconfig_path, kubeconfig, token, loopback_token, shutdown })
}

/// The store `config` asks for: etcd for an etcd endpoint, the embedded SQLite otherwise.
async fn open_store(config: &Config) -> Result<Arc<dyn kapal_store::Store>> {
    let endpoint = config.datastore_endpoint.as_deref().filter(|e| !e.is_empty());
    let sqlite_path = match endpoint {
        None => Some(config.data_dir.join("db").join("state.db")),
        Some(e) if e.starts_with("sqlite://") => Some(PathBuf::from(e.trim_start_matches("sqlite://"))),
        Some(_) => None,
    };
    if let Some(path) = sqlite_path {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let store = kapal_store::sqlite::SqliteStore::open(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
        return Ok(Arc::new(store));
    }
    let endpoint = endpoint.unwrap_or_default();
    let mut etcd = kapal_store::etcd::EtcdConfig::parse_endpoint(endpoint)
        .map_err(|e| anyhow::anyhow!("--datastore-endpoint: {e}"))?;
    etcd.ca_file = config.datastore_cafile.clone();
    etcd.cert_file = config.datastore_certfile.clone();
    etcd.key_file = config.datastore_keyfile.clone();
    if let Some(prefix) = &config.etcd_prefix {
        etcd.prefix = prefix.clone();
    }
    let store = kapal_store::etcd::EtcdStore::connect(etcd)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to etcd ({endpoint}): {e}"))?;
    tracing::info!(endpoint, "using etcd");
    Ok(Arc::new(store))
}

fn tls_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pki.ca.cert.as_bytes()) {
        roots.add(cert.context("reading the CA certificate")?)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .context("building the client certificate verifier")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pki.serving.cert.as_bytes())
        .collect::<Result<_, _>>()
        .context("reading the serving certificate")?;
    let key = PrivateKeyDer::from_pem_slice(pki.serving.key.as_bytes()).context("reading the serving key")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    api: Arc<ApiServer>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.changed() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let api = api.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let cert_user = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|c| user_from_certificate(c));
            let service = hyper::service::service_fn(move |req| {
                let api = api.clone();
                let cert_user = cert_user.clone();
                async move { Ok::<_, std::convert::Infallible>(api.handle(req, cert_user).await) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http2().max_concurrent_streams(1000);
            if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

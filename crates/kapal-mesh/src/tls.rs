//! Mesh mTLS: TLS 1.3 (rustls, ring) with SPIFFE identities, hot-reloaded from PEM files.
//!
//! Chains are verified against the mesh CA by webpki; server *names* are not used (peers are
//! addressed by IP), instead the peer's SPIFFE URI SAN is checked against the identity the
//! config expects. The ALPN protocol marks meshed traffic and says what it carries.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::metrics::{Metrics, ResultLabels};

/// ALPN for HTTP (HTTP/1.1 or HTTP/2, detected by the server) between two proxies.
pub const ALPN_HTTP: &[u8] = b"kapal.mesh/http";
/// ALPN for opaque TCP between two proxies.
pub const ALPN_TCP: &[u8] = b"kapal.mesh/tcp";

/// Errors loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is missing.
        message: String,
    },
    /// rustls refused the material.
    #[error("building TLS config: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("building client verifier: {0}")]
    Verifier(String),
}

/// Where the proxy's certificate chain, key and mesh CA bundle live.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Leaf (+ intermediates), PEM.
    pub cert: PathBuf,
    /// Private key, PEM (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// Trust anchors, PEM.
    pub ca: PathBuf,
}

impl TlsFiles {
    /// `cert.pem`, `key.pem`, `ca.pem` in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem"), ca: dir.join("ca.pem") }
    }

    fn mtimes(&self) -> [Option<SystemTime>; 3] {
        [&self.cert, &self.key, &self.ca].map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    }
}

/// The current TLS material; new connections use the newest, open ones keep theirs.
#[derive(Debug)]
pub struct MeshTls {
    files: TlsFiles,
    current: RwLock<Arc<Loaded>>,
}

#[derive(Debug)]
struct Loaded {
    server: Arc<ServerConfig>,
    client_http: Arc<ClientConfig>,
    client_tcp: Arc<ClientConfig>,
    /// The chain and key, for connections that authenticate with them outside the mesh.
    certified: Arc<CertifiedKey>,
    identity: Option<String>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsError::Pem { path: path.to_path_buf(), message: "no certificate found".into() });
    }
    Ok(certs)
}

/// A client config for an ordinary HTTPS server (the control plane): the server's chain is
/// verified against the trust anchors in `ca` and its name against the URL host, as any HTTPS
/// client would; ALPN `http/1.1`. With `identity`, the proxy authenticates itself with its mesh
/// certificate — the current one at each handshake, so a rotated certificate is presented from
/// the next connection on.
pub fn https_client_config(ca: &Path, identity: Option<Arc<MeshTls>>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(ca)? {
        roots.add(cert)?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(tls) => {
            let mut config = builder.with_client_cert_resolver(Arc::new(CurrentCertificate(tls)));
            // A resumed session carries the identity of the handshake that created it: every
            // connection does a full handshake, so the server sees the certificate in use now.
            config.resumption = rustls::client::Resumption::disabled();
            config
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Resolves to the proxy's current mesh certificate.
#[derive(Debug)]
struct CurrentCertificate(Arc<MeshTls>);

impl ResolvesClientCert for CurrentCertificate {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl Loaded {
    fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let chain = certs(&files.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?)
            .map_err(|e| TlsError::Pem { path: files.key.clone(), message: format!("no private key: {e}") })?;
        let mut roots = RootCertStore::empty();
        for ca in certs(&files.ca)? {
            roots.add(ca)?;
        }
        let roots = Arc::new(roots);
        let identity = peer_identity(&chain[0]);

        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        server.alpn_protocols = vec![ALPN_HTTP.to_vec(), ALPN_TCP.to_vec()];

        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let client = |alpn: &[u8]| -> Result<Arc<ClientConfig>, TlsError> {
            let mut c = ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SpiffeVerifier(server_verifier.clone())))
                .with_client_auth_cert(chain.clone(), key.clone_key())?;
            c.alpn_protocols = vec![alpn.to_vec()];
            c.enable_sni = false;
            Ok(Arc::new(c))
        };
        let (client_http, client_tcp) = (client(ALPN_HTTP)?, client(ALPN_TCP)?);
        let certified = Arc::new(CertifiedKey::from_der(chain, key, &provider())?);
        Ok(Loaded { server: Arc::new(server), client_http, client_tcp, certified, identity })
    }
}

impl MeshTls {
    /// Loads the files once.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let loaded = Loaded::load(&files)?;
        Ok(MeshTls { files, current: RwLock::new(Arc::new(loaded)) })
    }

    fn current(&self) -> Arc<Loaded> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Config for accepting mesh connections (client certificate required).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current().server.clone()
    }

    /// Config for connecting to a peer proxy; `opaque` picks the ALPN.
    pub fn client_config(&self, opaque: bool) -> Arc<ClientConfig> {
        let c = self.current();
        if opaque { c.client_tcp.clone() } else { c.client_http.clone() }
    }

    /// This proxy's own SPIFFE ID, from its certificate.
    pub fn identity(&self) -> Option<String> {
        self.current().identity.clone()
    }

    /// Reloads now; on error the previous material stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = Loaded::load(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        Ok(())
    }

    /// Polls the files' modification times and reloads on change, forever. A reload that
    /// failed (files are often written one after another, and a read can fall between them) is
    /// tried again at every poll until the files load, even if they change no more: the last
    /// write can land within the same tick of the file system's clock as the failed read.
    pub async fn watch(self: Arc<Self>, every: Duration, metrics: Arc<Metrics>) {
        let mut seen = self.files.mtimes();
        let mut failed = false;
        loop {
            tokio::time::sleep(every).await;
            let now = self.files.mtimes();
            let changed = now != seen;
            if !changed && !failed {
                continue;
            }
            seen = now;
            let result = match self.reload() {
                Ok(()) => {
                    tracing::info!(identity = ?self.identity(), "reloaded certificates");
                    failed = false;
                    "ok"
                }
                // Told once per change, not at every retry.
                Err(_) if !changed => continue,
                Err(error) => {
                    tracing::warn!(%error, "certificate reload failed; keeping the previous certificate");
                    failed = true;
                    "error"
                }
            };
            metrics.cert_reloads.get_or_create(&ResultLabels { direction: "local", result }).inc();
        }
    }
}

/// The SPIFFE ID (URI SAN starting with `spiffe://`) of a certificate.
pub fn peer_identity(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(uri.to_string()),
        _ => None,
    })
}

/// Verifies the chain with webpki but accepts any name: the SPIFFE identity is checked by the
/// caller after the handshake, against the endpoint's expected identity.
#[derive(Debug)]
struct SpiffeVerifier(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            // webpki checks the name only after the chain, so this error means the chain is good.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The name passed to rustls when connecting; never checked (see [`SpiffeVerifier`]).
pub fn placeholder_server_name() -> ServerName<'static> {
    ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())
}

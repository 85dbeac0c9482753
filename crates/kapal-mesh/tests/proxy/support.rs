//! Test backends, clients and proxy helpers on real sockets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kapal_mesh::config::ProxyConfig;
use kapal_mesh::tls::MeshTls;
use kapal_mesh::{Proxy, ProxyOptions};
use tokio::net::TcpListener;

/// What a backend answers.
pub struct Reply {
    pub status: StatusCode,
    pub delay: Duration,
}

impl Reply {
    pub fn ok() -> Self {
        Reply { status: StatusCode::OK, delay: Duration::ZERO }
    }
    pub fn status(code: u16) -> Self {
        Reply { status: StatusCode::from_u16(code).unwrap(), delay: Duration::ZERO }
    }
}

pub type Handler = Arc<dyn Fn(&http::request::Parts, usize) -> Reply + Send + Sync>;

/// An HTTP/1.1 + HTTP/2 backend on 127.0.0.1:0 that answers with its name and echoes request
/// headers starting with `x-` back as `echo-<name>`.
pub struct Backend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
}

impl Backend {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

pub async fn backend(name: &'static str, handler: Handler) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (handler, counter) = (handler.clone(), counter.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (handler, counter) = (handler.clone(), counter.clone());
                    async move {
                        let n = counter.fetch_add(1, Ordering::SeqCst);
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                        let reply = handler(&parts, n);
                        if !reply.delay.is_zero() {
                            tokio::time::sleep(reply.delay).await;
                        }
                        let mut res = Response::new(Full::new(Bytes::from(format!("{name}:{}", body.len()))));
                        *res.status_mut() = reply.status;
                        res.headers_mut().insert("x-backend", name.parse().unwrap());
                        for (k, v) in &parts.headers {
                            if k.as_str().starts_with("x-") || k == "traceparent" {
                                res.headers_mut().insert(
                                    http::HeaderName::from_bytes(format!("echo-{k}").as_bytes()).unwrap(),
                                    v.clone(),
                                );
                            }
                        }
                        Ok::<_, Infallible>(res)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Backend { addr, hits }
}

/// What a [`serve`] backend answers with.
pub type TestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// A backend on 127.0.0.1:0 that answers every request with `handle`: HTTP/1.1 (with upgrades)
/// and HTTP/2, for tests that need answers [`backend`] does not give.
pub async fn serve<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handle = handle.clone();
            let svc = hyper::service::service_fn(move |req| {
                let answer = handle(req);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

pub async fn ok_backend(name: &'static str) -> Backend {
    backend(name, Arc::new(|_, _| Reply::ok())).await
}

pub fn h1_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn send(client: &Client<HttpConnector, Full<Bytes>>, req: Request<Full<Bytes>>) -> Answer {
    let res = client.request(req).await.expect("request through the proxy");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    Answer { status: parts.status, headers: parts.headers, body: String::from_utf8_lossy(&body).into_owned() }
}

pub async fn get(client: &Client<HttpConnector, Full<Bytes>>, url: String) -> Answer {
    send(client, Request::get(url).body(Full::default()).unwrap()).await
}

pub const HEAD: &str = "apiVersion: kapal.dev/v1alpha1\nkind: ProxyConfig\n";

pub fn options() -> ProxyOptions {
    ProxyOptions { admin: Some("127.0.0.1:0".parse().unwrap()), ..ProxyOptions::default() }
}

pub async fn proxy(yaml: &str) -> Proxy {
    proxy_with_tls(yaml, None).await
}

pub async fn proxy_with_tls(yaml: &str, tls: Option<Arc<MeshTls>>) -> Proxy {
    let config = ProxyConfig::from_yaml(&format!("{HEAD}{yaml}")).unwrap();
    Proxy::start(config, options(), tls).await.unwrap()
}

/// `http://<outbound listener of service>`.
pub async fn url(proxy: &Proxy, service: &str) -> String {
    format!("http://{}", proxy.outbound_addr(service).await.unwrap())
}

pub async fn admin(proxy: &Proxy, path: &str) -> Answer {
    get(&h1_client(), format!("http://{}{path}", proxy.admin_addr().unwrap())).await
}

/// A throw-away mesh CA issuing SPIFFE leaf certificates.
pub struct Pki {
    ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    pub fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "kapal test mesh CA");
        let cert = params.self_signed(&key).unwrap();
        Pki { ca_pem: cert.pem(), issuer: rcgen::Issuer::new(params, key) }
    }

    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// (cert PEM, key PEM) for `spiffe`.
    pub fn leaf(&self, spiffe: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::URI(spiffe.try_into().unwrap())];
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// (cert PEM, key PEM) for an ordinary HTTPS server at 127.0.0.1.
    pub fn server_leaf(&self) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::IpAddress([127, 0, 0, 1].into())];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes cert.pem/key.pem/ca.pem for `spiffe` into `dir`.
    pub fn write(&self, dir: &std::path::Path, spiffe: &str) -> kapal_mesh::tls::TlsFiles {
        let (cert, key) = self.leaf(spiffe);
        std::fs::write(dir.join("ca.pem"), &self.ca_pem).unwrap();
        std::fs::write(dir.join("cert.pem"), cert).unwrap();
        std::fs::write(dir.join("key.pem"), key).unwrap();
        kapal_mesh::tls::TlsFiles::in_dir(dir)
    }

    /// Loaded TLS material for `spiffe` (files kept in a temp dir that lives as long as the test).
    pub fn identity(&self, spiffe: &str) -> (Arc<MeshTls>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let files = self.write(dir.path(), spiffe);
        (Arc::new(MeshTls::load(files).unwrap()), dir)
    }
}

pub fn spiffe(sa: &str) -> String {
    format!("spiffe://cluster.local/ns/default/sa/{sa}")
}

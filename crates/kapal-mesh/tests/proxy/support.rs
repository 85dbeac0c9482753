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

/// Waits up to 5 s for `fut`, failing with `what`: a proxy that buffers a stream fails a test
/// instead of hanging it.
pub async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), fut).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Polls `done` every 5 ms for up to 10 s, failing with `what`.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

/// One gRPC message: uncompressed flag, 4-byte big-endian length, payload.
pub fn grpc_message(payload: &[u8]) -> Bytes {
    let mut m = Vec::with_capacity(5 + payload.len());
    m.push(0);
    m.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    m.extend_from_slice(payload);
    m.into()
}

/// Reads whole gRPC messages off a body as they arrive, however its DATA frames split them, and
/// then its trailers.
pub struct GrpcReader<B> {
    body: B,
    buf: bytes::BytesMut,
    trailers: Option<http::HeaderMap>,
}

impl<B> GrpcReader<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    pub fn new(body: B) -> Self {
        GrpcReader { body, buf: bytes::BytesMut::new(), trailers: None }
    }

    /// The next message's payload; `None` once the body has ended, which it must do between
    /// messages.
    pub async fn message(&mut self) -> Option<Bytes> {
        loop {
            if self.buf.len() >= 5 {
                assert_eq!(self.buf[0], 0, "compressed-flag of a message");
                let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() >= 5 + len {
                    let mut m = self.buf.split_to(5 + len);
                    return Some(m.split_off(5).freeze());
                }
            }
            let Some(frame) = self.body.frame().await else {
                assert!(self.buf.is_empty(), "the body ended inside a message: {:?}", self.buf);
                return None;
            };
            match frame.expect("a frame of a gRPC body").into_data() {
                Ok(data) => self.buf.extend_from_slice(&data),
                Err(frame) => self.trailers = frame.into_trailers().ok(),
            }
        }
    }

    /// The trailers, once [`message`](Self::message) has returned `None`.
    pub fn trailers(&self) -> &http::HeaderMap {
        self.trailers.as_ref().expect("the body ended with trailers")
    }
}

/// The request body of a streaming gRPC call: its messages are sent on the channel, and it ends
/// when the sender is dropped.
pub type GrpcStream = http_body_util::StreamBody<
    futures::channel::mpsc::UnboundedReceiver<Result<hyper::body::Frame<Bytes>, Infallible>>,
>;

/// A gRPC-style echo server on 127.0.0.1:0 (HTTP/2, `application/grpc`, length-prefixed
/// messages, the status in trailers). Its response starts at once, and it answers each request
/// message as soon as it has arrived: `/kapal.test.Echo/Unary` with `hello, <message>`,
/// `/kapal.test.Echo/Stream` with `echo: <message>`. Once the request has ended, the trailers
/// say `grpc-status: 0` and, in `x-echo-count`, how many messages were read.
/// `/kapal.test.Echo/Fail` reads the request and fails with NOT_FOUND (5) in trailers; a
/// request that is not gRPC (not HTTP/2, another content type, no `te: trailers`) fails with
/// INVALID_ARGUMENT (3).
pub async fn grpc_echo() -> SocketAddr {
    serve(|req: Request<Incoming>| async move {
        let grpc = req.version() == http::Version::HTTP_2
            && req.headers().get(http::header::CONTENT_TYPE).is_some_and(|v| v == "application/grpc")
            && req.headers().get(http::header::TE).is_some_and(|v| v == "trailers");
        let prefix = match req.uri().path() {
            "/kapal.test.Echo/Unary" => Some("hello, "),
            "/kapal.test.Echo/Stream" => Some("echo: "),
            _ => None,
        };
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mut messages = GrpcReader::new(req.into_body());
        tokio::spawn(async move {
            let mut count = 0;
            while let Some(m) = messages.message().await {
                count += 1;
                if let (true, Some(prefix)) = (grpc, prefix) {
                    let reply = grpc_message(&[prefix.as_bytes(), &m].concat());
                    let _ = tx.unbounded_send(Ok(hyper::body::Frame::data(reply)));
                }
            }
            let (status, message) = match prefix {
                _ if !grpc => ("3", Some("not a gRPC request")),
                Some(_) => ("0", None),
                None => ("5", Some("no such greeting")),
            };
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", status.parse().unwrap());
            if let Some(message) = message {
                trailers.insert("grpc-message", message.parse().unwrap());
            }
            trailers.insert("x-echo-count", count.into());
            let _ = tx.unbounded_send(Ok(hyper::body::Frame::trailers(trailers)));
        });
        let mut res = Response::new(BodyExt::boxed_unsync(http_body_util::StreamBody::new(rx)));
        res.headers_mut().insert(http::header::CONTENT_TYPE, "application/grpc".parse().unwrap());
        res
    })
    .await
}

/// A gRPC request to `url` (`http://host:port/pkg.Service/Method`) with `body`.
pub fn grpc_request<B>(url: String, body: B) -> Request<B> {
    Request::post(url).header("content-type", "application/grpc").header("te", "trailers").body(body).unwrap()
}

/// A bidirectional stream with [`grpc_echo`] behind `base`: each message must come back before
/// the next is sent, so neither direction may be held back until its end, and the trailers must
/// follow the client's end of stream.
pub async fn grpc_bidi_echo(base: &str) {
    let client = Client::builder(TokioExecutor::new()).http2_only(true).build_http::<GrpcStream>();
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let send = |payload: &str| tx.unbounded_send(Ok(hyper::body::Frame::data(grpc_message(payload.as_bytes()))));
    // The first message goes with the call, as a gRPC client sends it: a server may wait for it
    // before it answers.
    send("ping 0").unwrap();
    let call =
        client.request(grpc_request(format!("{base}/kapal.test.Echo/Stream"), http_body_util::StreamBody::new(rx)));
    let res = within("response head of the stream", call).await.expect("streaming call through the proxy");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[http::header::CONTENT_TYPE], "application/grpc");
    let mut echoes = GrpcReader::new(res.into_body());
    for i in 0..4 {
        if i > 0 {
            send(&format!("ping {i}")).unwrap();
        }
        let echo = within(&format!("echo {i} while the request stream is open"), echoes.message()).await;
        assert_eq!(echo.as_deref(), Some(format!("echo: ping {i}").as_bytes()));
    }
    drop(tx);
    assert_eq!(within("end of the response stream", echoes.message()).await, None);
    let trailers = echoes.trailers();
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-echo-count"], "4");
}

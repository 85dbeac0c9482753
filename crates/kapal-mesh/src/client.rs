//! Connections to one endpoint: TCP, or mutual TLS to a peer proxy with its identity checked;
//! HTTP/1.1 connections pooled for keep-alive ([`h1`]), one multiplexed HTTP/2 connection
//! ([`h2`]).
//!
//! Each endpoint already is its own pool, so there is no pool key to hash and no shared map to
//! lock: a checkout is a short critical section on the endpoint's idle list, and a connection
//! goes back to the list when the response body has ended (not from a task per request).
//! HTTP/1.1 requests without a body to stream are written and answered by the request's own
//! task (`h1::wire`); other HTTP/1.1 connections have a driver task of hyper's, spawned once
//! per connection.

mod h1;
mod h2;

pub(crate) use h1::{PooledBody, WireBody};
pub(crate) use h2::H2Body;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::io::Io;
use crate::metrics::{Metrics, ResultLabels};
use crate::tls::{self, MeshTls};
use crate::{Body, BoxError};

/// How to reach one endpoint.
#[derive(Clone)]
pub struct Connector {
    addr: SocketAddr,
    timeout: Duration,
    /// Mesh TLS material and the identity the peer must present.
    tls: Option<(Arc<MeshTls>, String)>,
    metrics: Arc<Metrics>,
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect failed.
    #[error("connecting to {addr}: {source}")]
    Tcp {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// TCP connect took too long.
    #[error("connecting to {0}: timed out")]
    Timeout(SocketAddr),
    /// The TLS handshake failed.
    #[error("TLS handshake with {addr}: {source}")]
    Tls {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The peer is not who the config says it is.
    #[error("peer {addr} presented identity {got:?}, expected {expected}")]
    IdentityMismatch {
        /// The endpoint.
        addr: SocketAddr,
        /// What the peer presented.
        got: Option<String>,
        /// What the config expects.
        expected: String,
    },
    /// The endpoint wants mTLS but this proxy has no certificate.
    #[error("endpoint {0} requires mTLS but the proxy has no identity (--identity-dir/--cert)")]
    NoIdentity(SocketAddr),
}

impl Connector {
    /// A connector for `addr`; `identity` set means mutual TLS.
    pub fn new(
        addr: SocketAddr,
        timeout: Duration,
        identity: Option<String>,
        tls: Option<Arc<MeshTls>>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ConnectError> {
        let tls = match (identity, tls) {
            (None, _) => None,
            (Some(id), Some(tls)) => Some((tls, id)),
            (Some(_), None) => return Err(ConnectError::NoIdentity(addr)),
        };
        Ok(Connector { addr, timeout, tls, metrics })
    }

    /// Opens a connection; `opaque` selects the mesh ALPN for raw TCP.
    pub async fn connect(&self, opaque: bool) -> Result<Box<dyn Io>, ConnectError> {
        let addr = self.addr;
        let tcp = tokio::time::timeout(self.timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectError::Timeout(addr))?
            .map_err(|source| ConnectError::Tcp { addr, source })?;
        let _ = tcp.set_nodelay(true);
        let Some((tls, expected)) = &self.tls else { return Ok(Box::new(tcp)) };
        let connector = tokio_rustls::TlsConnector::from(tls.client_config(opaque));
        let stream = match connector.connect(tls::placeholder_server_name(), tcp).await {
            Ok(s) => s,
            Err(source) => {
                self.count_handshake("error");
                return Err(ConnectError::Tls { addr, source });
            }
        };
        let got = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(tls::peer_identity);
        if got.as_deref() != Some(expected.as_str()) {
            self.count_handshake("error");
            return Err(ConnectError::IdentityMismatch { addr, got, expected: expected.clone() });
        }
        self.count_handshake("ok");
        Ok(Box::new(stream))
    }

    /// The endpoint's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn count_handshake(&self, result: &'static str) {
        self.metrics.tls_handshakes.get_or_create(&ResultLabels { direction: "outbound", result }).inc();
    }
}

/// Idle HTTP/1.1 connections older than this are closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle HTTP/1.1 connections kept per endpoint; more are closed when they come back.
const MAX_IDLE: usize = 128;

/// Connections to one endpoint: a pool of idle HTTP/1.1 connections, one shared HTTP/2
/// connection, and raw connections for opaque TCP.
pub struct EndpointClient {
    /// Raw connections (opaque TCP).
    pub connector: Connector,
    h1: h1::Pool,
    h2: h2::Shared,
}

impl EndpointClient {
    /// Clients for the endpoint behind `connector`.
    pub fn new(connector: Connector) -> Self {
        EndpointClient { connector, h1: h1::Pool::new(IDLE_TIMEOUT, MAX_IDLE), h2: h2::Shared::default() }
    }

    /// Sends a request; HTTP/2 when `h2` (the URI must then be absolute), else HTTP/1.1 (the
    /// `Host` header or an absolute URI names the authority). `now` is when the request began
    /// (the caller has read the clock already); HTTP/1.1 uses it to tell expired idle
    /// connections.
    pub async fn send(
        &self,
        req: http::Request<Body>,
        h2: bool,
        now: tokio::time::Instant,
    ) -> Result<http::Response<Body>, SendError> {
        if h2 { self.send_h2(req).await } else { self.send_h1(req, now).await }
    }

    /// [`send`](Self::send) over HTTP/1.1, whose future holds the request only while no pooled
    /// connection took it.
    pub fn send_h1(
        &self,
        req: http::Request<Body>,
        now: tokio::time::Instant,
    ) -> impl Future<Output = Result<http::Response<Body>, SendError>> + Send + '_ {
        self.h1.send(&self.connector, req, now)
    }

    /// [`send`](Self::send) over HTTP/2, whose future holds no HTTP/1.1 state.
    pub fn send_h2(
        &self,
        req: http::Request<Body>,
    ) -> impl Future<Output = Result<http::Response<Body>, SendError>> + Send + '_ {
        self.h2.send(&self.connector, req)
    }

    /// Idle HTTP/1.1 connections in the pool (for tests and debugging).
    pub fn idle_h1(&self) -> usize {
        self.h1.idle()
    }
}

/// Why sending to an endpoint failed.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made: the request was never sent.
    Connect(BoxError),
    /// The connection failed while the request was in flight.
    Io(BoxError),
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use futures::StreamExt;
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::body::{Frame, Incoming};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A backend (HTTP/1.1 and HTTP/2) counting the connections it accepted. Requests to
    /// `/pair` wait until a second `/pair` request is in flight; `/stream` answers with a body
    /// that never ends; `/slow` answers after 1.5 s.
    async fn backend() -> (SocketAddr, Arc<AtomicUsize>) {
        let pair = Arc::new(tokio::sync::Barrier::new(2));
        counting(move |stream| {
            let pair = pair.clone();
            async move {
                let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let pair = pair.clone();
                    async move {
                        let body = match req.uri().path() {
                            "/stream" => {
                                let frames = futures::stream::iter([Ok::<_, Infallible>(Frame::data(
                                    Bytes::from_static(b"part"),
                                ))])
                                .chain(futures::stream::pending());
                                StreamBody::new(frames).boxed_unsync()
                            }
                            path => {
                                if path == "/pair" {
                                    pair.wait().await;
                                }
                                if path == "/slow" {
                                    tokio::time::sleep(Duration::from_millis(1500)).await;
                                }
                                Full::new(Bytes::from_static(b"ok")).map_err(|n| match n {}).boxed_unsync()
                            }
                        };
                        Ok::<_, Infallible>(http::Response::new(body))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            }
        })
        .await
    }

    /// Accepts connections on a loopback port, counting them, and serves each with `serve` on a
    /// task of its own.
    async fn counting<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicUsize>)
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream));
            }
        });
        (addr, accepted)
    }

    /// Waits until `done` holds, failing with `failure` after 5 s.
    async fn eventually(failure: &str, done: impl Fn() -> bool) {
        let wait = async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait).await.expect(failure);
    }

    fn client(addr: SocketAddr) -> EndpointClient {
        let connector = Connector::new(addr, Duration::from_secs(5), None, None, Arc::default()).unwrap();
        EndpointClient::new(connector)
    }

    async fn get(client: &EndpointClient, path: &str, h2: bool) -> String {
        let uri = format!("http://{}{path}", client.connector.addr());
        let mut req = http::Request::get(uri).body(crate::http::full("")).unwrap();
        if h2 {
            *req.version_mut() = http::Version::HTTP_2;
        }
        let res =
            client.send(req, h2, tokio::time::Instant::now()).await.unwrap_or_else(|e| panic!("GET {path}: {e:?}"));
        let body = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }

    #[tokio::test]
    async fn http1_connections_are_reused_across_requests() {
        let (addr, accepted) = backend().await;
        let client = client(addr);
        for _ in 0..3 {
            assert_eq!(get(&client, "/", false).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(client.idle_h1(), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_not_reused() {
        let (addr, accepted) = scripted_backend().await;
        let client = client(addr);
        assert_eq!(get(&client, "/once", false).await, "ok");
        // Wait until the idle connection is seen closed (its driver task, or the probe of a
        // connection driven by requests).
        while client.h1.open_idle() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(get(&client, "/once", false).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_that_served_a_request_longer_than_the_idle_timeout_is_reused() {
        let (addr, accepted) = backend().await;
        let connector = Connector::new(addr, Duration::from_secs(5), None, None, Arc::default()).unwrap();
        // Idle time counts from when a connection comes back, not from when its request began.
        let pool = h1::Pool::new(Duration::from_secs(1), 8);
        for path in ["/slow", "/"] {
            let req = http::Request::get(format!("http://{addr}{path}")).body(crate::http::full("")).unwrap();
            let res = pool.send(&connector, req, tokio::time::Instant::now()).await.unwrap();
            assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_http1_requests_open_separate_connections() {
        let (addr, accepted) = backend().await;
        let client = client(addr);
        // Each `/pair` request is answered only once the other one has arrived.
        let (a, b) = tokio::join!(get(&client, "/pair", false), get(&client, "/pair", false));
        assert_eq!((a.as_str(), b.as_str()), ("ok", "ok"));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(client.idle_h1(), 2);
        assert_eq!(get(&client, "/", false).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_abandoned_response_body_does_not_return_its_connection() {
        let (addr, accepted) = backend().await;
        let client = client(addr);
        let req = http::Request::get(format!("http://{addr}/stream")).body(crate::http::full("")).unwrap();
        let mut body = client.send(req, false, tokio::time::Instant::now()).await.unwrap().into_body();
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "part");
        drop(body);
        assert_eq!(client.idle_h1(), 0);
        assert_eq!(get(&client, "/", false).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn http2_requests_are_multiplexed_on_one_connection() {
        let (addr, accepted) = backend().await;
        let client = client(addr);
        let (a, b) = tokio::join!(get(&client, "/pair", true), get(&client, "/pair", true));
        assert_eq!((a.as_str(), b.as_str()), ("ok", "ok"));
        assert_eq!(get(&client, "/", true).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// A backend answering each request with the canned response its path names, written as
    /// it is; it closes the connection after some of them (`/once` without saying so).
    async fn scripted_backend() -> (SocketAddr, Arc<AtomicUsize>) {
        counting(|mut stream| async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            let mut more = [0u8; 1024];
                            match stream.read(&mut more).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&more[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                        if path == "/hang" {
                            let _ = stream.read(&mut [0u8; 1]).await;
                            return;
                        }
                        if path == "/dribble" {
                            let response =
                                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-t: 2\r\n\r\n";
                            for byte in response {
                                if stream.write_all(&[*byte]).await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                            continue;
                        }
                        let (response, close): (Vec<u8>, bool) = match path.as_str() {
                            "/chunked" => (
                                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nx-t: 1\r\n\r\n".to_vec(),
                                false,
                            ),
                            "/interim" => (
                                b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
                                false,
                            ),
                            "/head" => (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n".to_vec(), false),
                            // Closed after one response without saying so.
                            "/once" => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(), true),
                            "/empty204" => (b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), false),
                            "/keep10" => {
                                (b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok".to_vec(), false)
                            }
                            "/close" => {
                                (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok".to_vec(), true)
                            }
                            "/extra" => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA".to_vec(), false),
                            "/http10" => (b"HTTP/1.0 200 OK\r\n\r\nbye".to_vec(), true),
                            "/garbage" => (b"NOT HTTP AT ALL\r\n\r\n".to_vec(), true),
                            "/short" => (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc".to_vec(), true),
                            "/big" => {
                                let mut r = b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n".to_vec();
                                r.resize(r.len() + (1 << 20), b'x');
                                (r, false)
                            }
                            _ => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(), false),
                        };
                        if stream.write_all(&response).await.is_err() || close {
                            return;
                        }
                    }
        })
        .await
    }

    #[tokio::test]
    async fn http1_responses_are_framed_as_their_heads_say() {
        let (addr, accepted) = scripted_backend().await;
        let client = client(addr);
        let send = |method: http::Method, path: &str| {
            let req = http::Request::builder().method(method).uri(format!("http://{addr}{path}"));
            client.send(req.body(crate::http::full("")).unwrap(), false, tokio::time::Instant::now())
        };
        // Chunked, with an extension and trailers.
        let res = send(http::Method::GET, "/chunked").await.unwrap();
        let collected = res.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().map(|t| &t["x-t"]), Some(&http::HeaderValue::from_static("1")));
        assert_eq!(collected.to_bytes(), "hello world");
        // Chunked, sent a byte at a time: every line and the data cross reads.
        let res = send(http::Method::GET, "/dribble").await.unwrap();
        let collected = res.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().map(|t| &t["x-t"]), Some(&http::HeaderValue::from_static("2")));
        assert_eq!(collected.to_bytes(), "abc");
        // An interim response is skipped; a HEAD response has no body whatever its length says.
        assert_eq!(get(&client, "/interim", false).await, "ok");
        let res = send(http::Method::HEAD, "/head").await.unwrap();
        assert_eq!(res.headers()[http::header::CONTENT_LENGTH], "10");
        assert!(res.into_body().collect().await.unwrap().to_bytes().is_empty());
        // An empty body that is dropped unread (as hyper does with a 204) gives its connection back.
        let res = send(http::Method::GET, "/empty204").await.unwrap();
        assert_eq!(res.status(), http::StatusCode::NO_CONTENT);
        drop(res);
        assert_eq!(client.idle_h1(), 1);
        // HTTP/1.0 that asks for keep-alive keeps it.
        assert_eq!(get(&client, "/keep10", false).await, "ok");
        // A large body, read in growing steps.
        let res = send(http::Method::GET, "/big").await.unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes().len(), 1 << 20);
        assert_eq!(get(&client, "/", false).await, "ok");
        // All of these kept the one connection.
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(client.idle_h1(), 1);
        // HTTP/1.0 without keep-alive: the body runs to the close, and the connection is not
        // kept; nor is one whose response says `Connection: close`.
        let mut expected = 1;
        for path in ["/http10", "/close"] {
            assert_eq!(get(&client, path, false).await, if path == "/http10" { "bye" } else { "ok" });
            assert_eq!(client.idle_h1(), 0, "{path}");
            assert_eq!(get(&client, "/", false).await, "ok");
            expected += 1;
            assert_eq!(accepted.load(Ordering::SeqCst), expected, "{path}");
        }
        // Bytes beyond the response: the connection cannot be trusted with another request.
        assert_eq!(get(&client, "/extra", false).await, "ok");
        assert_eq!(client.idle_h1(), 0);
        // A request abandoned while its answer is awaited (a timeout) takes its connection along.
        assert_eq!(get(&client, "/", false).await, "ok");
        let abandoned = tokio::time::timeout(Duration::from_millis(100), send(http::Method::GET, "/hang")).await;
        assert!(abandoned.is_err());
        assert_eq!(client.idle_h1(), 0);
        assert_eq!(get(&client, "/", false).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), expected + 2);
        // A body cut short is an error; a response that is no HTTP is an error.
        let res = send(http::Method::GET, "/short").await.unwrap();
        assert!(res.into_body().collect().await.is_err());
        assert!(matches!(send(http::Method::GET, "/garbage").await, Err(SendError::Io(_))));
        assert_eq!(client.idle_h1(), 0);
    }

    #[tokio::test]
    async fn connect_failures_are_connect_errors() {
        let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let client = client(addr);
        for h2 in [false, true] {
            let req = http::Request::get(format!("http://{addr}/")).body(crate::http::full("")).unwrap();
            assert!(matches!(client.send(req, h2, tokio::time::Instant::now()).await, Err(SendError::Connect(_))));
        }
    }

    /// An HTTP/2 backend: `/echo` answers with the request's body and, as trailers, its length
    /// and its `x-check` trailer; `/headers` answers with the names of the request's headers;
    /// `/once` answers and then closes the connection.
    async fn h2_backend() -> (SocketAddr, Arc<AtomicUsize>) {
        counting(|stream| async move {
            let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
            let close_tx = std::sync::Mutex::new(Some(close_tx));
            let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                if req.uri().path() == "/once"
                    && let Some(tx) = close_tx.lock().unwrap().take()
                {
                    let _ = tx.send(());
                }
                async move {
                    let body = match req.uri().path() {
                        "/echo" => {
                            let collected = req.into_body().collect().await.unwrap();
                            let mut trailers = collected.trailers().cloned().unwrap_or_default();
                            let bytes = collected.to_bytes();
                            trailers.insert("x-len", bytes.len().into());
                            let frames = [Ok::<_, Infallible>(Frame::data(bytes)), Ok(Frame::trailers(trailers))];
                            StreamBody::new(futures::stream::iter(frames)).boxed_unsync()
                        }
                        "/headers" => {
                            let names: Vec<&str> = req.headers().keys().map(|k| k.as_str()).collect();
                            Full::new(Bytes::from(names.join(","))).map_err(|n| match n {}).boxed_unsync()
                        }
                        _ => Full::new(Bytes::from_static(b"ok")).map_err(|n| match n {}).boxed_unsync(),
                    };
                    Ok::<_, Infallible>(http::Response::new(body))
                }
            });
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                // The response is on its way; the connection ends once it is sent.
                _ = close_rx => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        })
        .await
    }

    #[tokio::test]
    async fn http2_bodies_stream_both_ways_beyond_the_flow_control_windows() {
        let (addr, _) = h2_backend().await;
        let client = client(addr);
        // 6 MiB each way: more than a stream's window (hyper's server: 1 MiB; ours: 2 MiB) and
        // the connection's (5 MiB), so both sides must give window back as they read.
        let chunk: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-check", "abc".parse().unwrap());
        let data = Bytes::from(chunk.clone());
        let frames =
            (0..96).map(move |_| Ok::<_, Infallible>(Frame::data(data.clone()))).chain([Ok(Frame::trailers(trailers))]);
        let body = crate::Body::new(StreamBody::new(futures::stream::iter(frames)));
        let mut req = http::Request::post(format!("http://{addr}/echo")).body(body).unwrap();
        *req.version_mut() = http::Version::HTTP_2;
        // A side that gives no window back stalls the exchange: fail rather than hang.
        let exchange =
            async { client.send(req, true, tokio::time::Instant::now()).await.unwrap().into_body().collect().await };
        let collected = tokio::time::timeout(Duration::from_secs(30), exchange).await.expect("stalled").unwrap();
        let trailers = collected.trailers().cloned().expect("trailers");
        assert_eq!((trailers["x-len"].to_str().unwrap(), trailers["x-check"].to_str().unwrap()), ("6291456", "abc"));
        let bytes = collected.to_bytes();
        assert_eq!(bytes.len(), 96 * 65_536);
        assert!(bytes.chunks(65_536).all(|c| c == &chunk[..]));
    }

    #[tokio::test]
    async fn hop_by_hop_headers_are_not_sent_on_http2() {
        let (addr, _) = h2_backend().await;
        let client = client(addr);
        let mut req = http::Request::get(format!("http://{addr}/headers"))
            .header("connection", "keep-alive, x-hop")
            .header("connection", "x-hop2")
            .header("keep-alive", "timeout=5")
            .header("x-hop", "1")
            .header("x-hop2", "1")
            .header("te", "gzip")
            .header("x-kept", "1")
            .body(crate::http::full(""))
            .unwrap();
        *req.version_mut() = http::Version::HTTP_2;
        let res = client.send(req, true, tokio::time::Instant::now()).await.unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "x-kept");
    }

    #[tokio::test]
    async fn an_http2_connection_the_server_closed_is_replaced() {
        let (addr, accepted) = h2_backend().await;
        let client = client(addr);
        assert_eq!(get(&client, "/once", true).await, "ok");
        eventually("the closed connection was not noticed", || !client.h2.is_open()).await;
        assert_eq!(get(&client, "/", true).await, "ok");
        assert_eq!(get(&client, "/", true).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_request_after_a_goaway_goes_on_a_new_connection_while_the_old_one_finishes() {
        // The first connection takes one request, holds it, and sends GOAWAY: it will take no
        // more streams but stays open until the held one is answered. Later connections answer
        // at once.
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (goaway_sent, goaway) = tokio::sync::oneshot::channel::<()>();
        let first = Arc::new(std::sync::Mutex::new(Some((released, goaway_sent))));
        fn answer(body: &'static [u8], mut respond: ::h2::server::SendResponse<Bytes>) {
            let mut send = respond.send_response(http::Response::new(()), false).unwrap();
            send.send_data(Bytes::from_static(body), true).unwrap();
        }
        let (addr, accepted) = counting(move |stream| {
            let mut first = first.lock().unwrap().take();
            async move {
                let mut conn = ::h2::server::handshake(stream).await.unwrap();
                while let Some(Ok((_, respond))) = conn.accept().await {
                    match first.take() {
                        Some((released, goaway_sent)) => {
                            tokio::spawn(async move {
                                let _ = released.await;
                                answer(b"held", respond);
                            });
                            conn.graceful_shutdown();
                            let _ = goaway_sent.send(());
                        }
                        None => answer(b"ok", respond),
                    }
                }
            }
        })
        .await;
        let client = Arc::new(client(addr));
        let held = tokio::spawn({
            let client = client.clone();
            async move { get(&client, "/held", true).await }
        });
        goaway.await.unwrap();
        eventually("the GOAWAY did not reach the client", || client.h2.refuses_new_streams()).await;
        assert_eq!(get(&client, "/", true).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "the second request did not get a new connection");
        release.send(()).unwrap();
        assert_eq!(held.await.unwrap(), "held", "the held request lost its connection");
        assert_eq!(get(&client, "/", true).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_http2_stream_is_a_request_that_never_left_and_a_reset_one_is_not() {
        let (addr, _) = counting(|stream| async move {
            let mut conn = ::h2::server::handshake(stream).await.unwrap();
            while let Some(Ok((req, mut respond))) = conn.accept().await {
                let reason = if req.uri().path() == "/refused" {
                    ::h2::Reason::REFUSED_STREAM
                } else {
                    ::h2::Reason::INTERNAL_ERROR
                };
                respond.send_reset(reason);
            }
        })
        .await;
        let client = client(addr);
        let send = |path: &str| {
            let mut req = http::Request::get(format!("http://{addr}{path}")).body(crate::http::full("")).unwrap();
            *req.version_mut() = http::Version::HTTP_2;
            client.send(req, true, tokio::time::Instant::now())
        };
        assert!(matches!(send("/refused").await, Err(SendError::Connect(_))));
        assert!(matches!(send("/reset").await, Err(SendError::Io(_))));
    }

    #[tokio::test]
    async fn an_abandoned_http2_request_stops_sending_its_body() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            // Reads the request body, never answers, and tells how the body ended.
            let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let ended_tx = ended_tx.clone();
                async move {
                    let mut body = req.into_body();
                    let end = loop {
                        match body.frame().await {
                            Some(Ok(_)) => continue,
                            Some(Err(_)) => break "reset",
                            None => break "end",
                        }
                    };
                    let _ = ended_tx.send(end);
                    std::future::pending::<Result<http::Response<Full<Bytes>>, Infallible>>().await
                }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
        let client = client(addr);
        // A client that sent a part of its body and then stalled.
        let frames = futures::stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"part")))])
            .chain(futures::stream::pending());
        let body = crate::Body::new(StreamBody::new(frames));
        let mut req = http::Request::post(format!("http://{addr}/")).body(body).unwrap();
        *req.version_mut() = http::Version::HTTP_2;
        // The caller gives up (a per-try timeout): the stream is reset, not left open with a
        // task feeding it.
        let send = client.send(req, true, tokio::time::Instant::now());
        assert!(tokio::time::timeout(Duration::from_millis(200), send).await.is_err());
        let end = tokio::time::timeout(Duration::from_secs(5), ended.recv()).await.expect("the stream was left open");
        assert_eq!(end, Some("reset"));
    }
}

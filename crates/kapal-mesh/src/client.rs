//! Connections to one endpoint: TCP, or mutual TLS to a peer proxy with its identity checked,
//! pooled by hyper's client (HTTP/1.1 keep-alive, HTTP/2 multiplexing).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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

    fn count_handshake(&self, result: &'static str) {
        self.metrics.tls_handshakes.get_or_create(&ResultLabels { direction: "outbound", result }).inc();
    }
}

impl tower::Service<http::Uri> for Connector {
    type Response = Conn;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        // The URI carries the original authority (for Host/:authority); where to connect is fixed.
        let this = self.clone();
        Box::pin(async move { Ok(Conn(TokioIo::new(this.connect(false).await?))) })
    }
}

/// A connection as hyper's client sees it.
pub struct Conn(TokioIo<Box<dyn Io>>);

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl Read for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl Write for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Pooled HTTP/1.1 and HTTP/2 clients for one endpoint.
pub struct EndpointClient {
    /// Raw connections (opaque TCP).
    pub connector: Connector,
    h1: Client<Connector, Body>,
    h2: Client<Connector, Body>,
}

impl EndpointClient {
    /// Clients for the endpoint behind `connector`.
    pub fn new(connector: Connector) -> Self {
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_timer(TokioTimer::new()).pool_idle_timeout(Duration::from_secs(30));
        let h1 = b.build(connector.clone());
        b.timer(TokioTimer::new()).http2_only(true);
        let h2 = b.build(connector.clone());
        EndpointClient { connector, h1, h2 }
    }

    /// Sends a request; HTTP/2 when `h2`, else HTTP/1.1. The URI must be absolute.
    pub async fn send(&self, req: http::Request<Body>, h2: bool) -> Result<http::Response<Body>, SendError> {
        use http_body_util::BodyExt;
        let res = if h2 { self.h2.request(req).await } else { self.h1.request(req).await };
        match res {
            Ok(res) => Ok(res.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync())),
            Err(e) if e.is_connect() => Err(SendError::Connect(Box::new(e))),
            Err(e) => Err(SendError::Io(Box::new(e))),
        }
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

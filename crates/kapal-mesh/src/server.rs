//! Listeners: accept, detect the protocol (bounded), terminate mesh TLS, then serve HTTP through
//! the tower stack or forward opaque TCP.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::BytesMut;
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::Service;

use crate::balance::p2c;
use crate::config::{Action, Protocol};
use crate::http::{self as stack, ConnInfo, Req};
use crate::io::ServerIo;
use crate::metrics::{DirectionLabels, ResultLabels};
use crate::state::{InboundKey, Shared};
use crate::tls::{ALPN_HTTP, ALPN_TCP};
use crate::{BoxError, ProxyOptions};

/// What a listener is for.
#[derive(Debug, Clone)]
pub enum Kind {
    /// Outbound traffic to the named service.
    Outbound(String),
    /// Inbound traffic for a local application.
    Inbound(InboundKey),
    /// Redirected outbound traffic: the service is found by the original destination; unknown
    /// destinations are passed through as TCP.
    TransparentOutbound,
    /// Redirected inbound traffic: forwarded to 127.0.0.1 at the original destination port.
    TransparentInbound,
}

impl Kind {
    fn direction(&self) -> &'static str {
        match self {
            Kind::Outbound(_) | Kind::TransparentOutbound => "outbound",
            Kind::Inbound(_) | Kind::TransparentInbound => "inbound",
        }
    }
}

/// Reads the destination a connection had before it was redirected to the proxy. A seam: the
/// kernel answers only for traffic redirected by nftables/iptables, tests answer themselves.
pub trait OriginalDst: std::fmt::Debug + Send + Sync + 'static {
    /// The original destination of `stream`.
    fn original_dst(&self, stream: &TcpStream) -> std::io::Result<SocketAddr>;
}

/// `SO_ORIGINAL_DST` (`IP6T_SO_ORIGINAL_DST` for IPv6).
#[derive(Debug, Default)]
pub struct SoOriginalDst;

impl OriginalDst for SoOriginalDst {
    fn original_dst(&self, stream: &TcpStream) -> std::io::Result<SocketAddr> {
        let sock = socket2::SockRef::from(stream);
        let addr = if stream.local_addr()?.is_ipv6() { sock.original_dst_v6()? } else { sock.original_dst_v4()? };
        addr.as_socket().ok_or_else(|| std::io::Error::other("original destination is not an IP address"))
    }
}

/// Turns a transparent listener's connection into the kind it really is, or `None` when it was
/// handled (passed through) or refused here.
async fn resolve(kind: Kind, stream: &TcpStream, ctx: &ConnCtx) -> Result<Option<Kind>, BoxError> {
    let original = match kind {
        Kind::TransparentOutbound | Kind::TransparentInbound => ctx.opts.original_dst.original_dst(stream)?,
        other => return Ok(Some(other)),
    };
    // A client that connected to the listener itself would make the proxy connect to itself.
    if original == stream.local_addr()? {
        return Err("connection was not redirected (no original destination)".into());
    }
    Ok(Some(match kind {
        Kind::TransparentInbound => Kind::Inbound(InboundKey::Port(original.port())),
        _ => match ctx.shared.snapshot().by_address.get(&original) {
            Some(service) => Kind::Outbound(service.clone()),
            None => return Ok(None),
        },
    }))
}

/// What the first bytes of a connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// An HTTP/1 request line or the HTTP/2 preface.
    Http,
    /// A TLS ClientHello.
    Tls,
    /// Anything else.
    Opaque,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const METHODS: &[&[u8]] =
    &[b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"CONNECT ", b"OPTIONS ", b"TRACE ", b"PATCH "];

/// Classifies a connection's first bytes; `None` while more bytes could change the answer.
pub fn classify(buf: &[u8]) -> Option<Detected> {
    if buf.is_empty() {
        return None;
    }
    if buf[0] == 0x16 {
        return Some(Detected::Tls);
    }
    let mut undecided = false;
    for token in std::iter::once(&H2_PREFACE).chain(METHODS) {
        if buf.len() >= token.len() {
            if buf.starts_with(token) {
                return Some(Detected::Http);
            }
        } else if token.starts_with(buf) {
            undecided = true;
        }
    }
    if undecided { None } else { Some(Detected::Opaque) }
}

/// Reads until [`classify`] decides, EOF, or `timeout`. `None` = timed out (the client waits for
/// the server to speak first). The bytes read are returned for replay.
pub async fn detect<S: AsyncRead + Unpin>(io: &mut S, timeout: Duration) -> (Option<Detected>, BytesMut) {
    let mut buf = BytesMut::with_capacity(32);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Err(_) => return (None, buf),
            Ok(Ok(0)) | Ok(Err(_)) => return (Some(Detected::Opaque), buf),
            Ok(Ok(_)) => {
                if let Some(d) = classify(&buf) {
                    return (Some(d), buf);
                }
            }
        }
    }
}

/// Reads the rest of the first TLS record into `buf` and tells whether its ClientHello asks for
/// a mesh ALPN protocol. The bytes stay in `buf` for replay.
pub async fn is_mesh_hello<S: AsyncRead + Unpin>(io: &mut S, buf: &mut BytesMut, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if buf.len() >= 5 {
            let len = 5 + usize::from(u16::from_be_bytes([buf[3], buf[4]]));
            if buf.len() >= len || len > 5 + 16 * 1024 {
                break;
            }
        }
        match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return false,
        }
    }
    hello_asks_for_mesh(buf)
}

/// Whether the TLS ClientHello at the start of `record` offers a mesh ALPN protocol.
pub fn hello_asks_for_mesh(record: &[u8]) -> bool {
    let mut acceptor = rustls::server::Acceptor::default();
    if acceptor.read_tls(&mut &record[..]).is_err() {
        return false;
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => {
            accepted.client_hello().alpn().is_some_and(|mut protos| protos.any(|p| p == ALPN_HTTP || p == ALPN_TCP))
        }
        _ => false,
    }
}

/// Everything a connection task needs.
#[derive(Clone)]
pub struct ConnCtx {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// Limits and timeouts.
    pub opts: Arc<ProxyOptions>,
    /// Flips to true when the proxy drains.
    pub drain: watch::Receiver<bool>,
    /// Connection slots.
    pub slots: Arc<Semaphore>,
}

/// Accepts connections until drained.
pub async fn accept_loop(listener: TcpListener, kind: Kind, ctx: ConnCtx) {
    let mut drain = ctx.drain.clone();
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = drain.changed() => return,
        };
        let Ok(permit) = ctx.slots.clone().try_acquire_owned() else {
            tracing::warn!(%remote, "connection limit reached; closing connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, remote, kind.clone(), ctx.clone(), permit));
    }
}

/// One accepted connection's task. An idle connection costs what this future holds while it
/// waits for the client's first bytes, so the big per-protocol state machine ([`handle`]) is
/// only allocated once there is something to serve.
async fn connection(stream: TcpStream, remote: SocketAddr, kind: Kind, ctx: ConnCtx, permit: OwnedSemaphorePermit) {
    let labels = DirectionLabels { direction: kind.direction() };
    let metrics = ctx.shared.metrics.clone();
    metrics.tcp_connections.get_or_create(&labels).inc();
    let open = metrics.tcp_open.get_or_create(&labels).clone();
    open.inc();
    if wait_for_request(&stream, &kind, &ctx).await
        && let Err(error) = Box::pin(handle(stream, remote, kind, &ctx)).await
    {
        tracing::debug!(%remote, %error, "connection ended with an error");
    }
    open.dec();
    drop(permit);
}

/// For a listener hinted as HTTP (no detection), waits until the client sends, bounded like a
/// header read; false when it never did. Serving HTTP costs about 4 KiB per connection before
/// the first byte (the connection state machines, hyper's buffers), so an idle HTTP connection
/// waits here instead, for the price of the socket and a small task. Other connections go
/// straight on (detection has its own, short, timeout).
async fn wait_for_request(stream: &TcpStream, kind: &Kind, ctx: &ConnCtx) -> bool {
    let Kind::Outbound(name) = kind else { return true };
    let protocol = ctx.shared.snapshot().services.get(name).map_or(Protocol::Detect, |s| s.cfg.protocol);
    if matches!(protocol, Protocol::Detect | Protocol::Opaque) {
        return true;
    }
    first_bytes(stream, ctx.opts.header_read_timeout).await
}

/// Waits until the client has sent something: false on EOF, error or timeout. `readable()`
/// alone is not enough: it may report a fresh socket readable before any byte arrived (seen
/// with every accepted connection), which let all idle connections into hyper; a peek retries
/// until a byte is really there.
async fn first_bytes(stream: &TcpStream, timeout: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(timeout, stream.peek(&mut byte)).await, Ok(Ok(n)) if n > 0)
}

async fn handle(stream: TcpStream, remote: SocketAddr, kind: Kind, ctx: &ConnCtx) -> Result<(), BoxError> {
    let direction = kind.direction();
    let m = &ctx.shared.metrics;
    let read = m.tcp_bytes.get_or_create(&ResultLabels { direction, result: "read" }).clone();
    let written = m.tcp_bytes.get_or_create(&ResultLabels { direction, result: "write" }).clone();
    let transparent = matches!(kind, Kind::TransparentOutbound | Kind::TransparentInbound);
    let Some(kind) = Box::pin(resolve(kind, &stream, ctx)).await? else {
        // Not a destination of the mesh: pass the bytes through unchanged.
        let original = ctx.opts.original_dst.original_dst(&stream)?;
        let mut upstream = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(original))
            .await
            .map_err(|_| format!("connecting to {original}: timed out"))??;
        let mut io = ServerIo::new(stream, read, written);
        Box::pin(tokio::io::copy_bidirectional(&mut io, &mut upstream)).await?;
        return Ok(());
    };
    let mut io = ServerIo::new(stream, read, written);
    let (protocol, require_mtls) = match &kind {
        Kind::Outbound(name) => {
            (ctx.shared.snapshot().services.get(name).map_or(Protocol::Detect, |s| s.cfg.protocol), false)
        }
        Kind::Inbound(key) => {
            ctx.shared.inbound_target(*key).map_or((Protocol::Detect, false), |t| (t.protocol, t.require_mtls))
        }
        Kind::TransparentOutbound | Kind::TransparentInbound => (Protocol::Detect, false),
    };
    let inbound = matches!(kind, Kind::Inbound(_));
    // Inbound connections may be mesh TLS whatever the app protocol is, so they are always peeked.
    let detected = if inbound || protocol == Protocol::Detect {
        let (mut d, mut buf) = Box::pin(detect(&mut io, ctx.opts.detect_timeout)).await;
        // TLS that is not addressed to the mesh (an unmeshed client speaking TLS to the app
        // itself) is the application's business: pass it through like any opaque stream.
        if inbound
            && d == Some(Detected::Tls)
            && !Box::pin(is_mesh_hello(&mut io, &mut buf, ctx.opts.detect_timeout)).await
        {
            d = Some(Detected::Opaque);
        }
        io.rewind(buf.freeze());
        let result = match d {
            Some(Detected::Http) => "http",
            Some(Detected::Tls) => "tls",
            Some(Detected::Opaque) => "opaque",
            None => "timeout",
        };
        m.detect.get_or_create(&ResultLabels { direction, result }).inc();
        d
    } else {
        // A listener's own service was waited for in [`wait_for_request`]; one found by
        // original destination is waited for here.
        if transparent
            && protocol != Protocol::Opaque
            && !Box::pin(first_bytes(io.get_ref(), ctx.opts.header_read_timeout)).await
        {
            return Ok(());
        }
        None
    };
    match kind {
        Kind::Outbound(service) => {
            let info = ConnInfo { remote, client_identity: None, direction };
            if as_http(protocol, inbound, detected) {
                Box::pin(serve_http(io, Stack::Outbound(stack::outbound(ctx.shared.clone(), service, info)), ctx)).await
            } else {
                Box::pin(forward_outbound_tcp(io, &service, ctx)).await
            }
        }
        Kind::Inbound(listen) if detected == Some(Detected::Tls) => {
            let Some(tls) = &ctx.shared.tls else { return Err("TLS connection but the proxy has no identity".into()) };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
            // Boxed, like the other per-protocol futures, so an idle connection's task stays small.
            let tls_stream = match Box::pin(acceptor.accept(io)).await {
                Ok(s) => s,
                Err(e) => {
                    m.tls_handshakes.get_or_create(&ResultLabels { direction, result: "error" }).inc();
                    return Err(e.into());
                }
            };
            m.tls_handshakes.get_or_create(&ResultLabels { direction, result: "ok" }).inc();
            let conn = tls_stream.get_ref().1;
            let identity = conn.peer_certificates().and_then(|c| c.first()).and_then(crate::tls::peer_identity);
            let opaque = conn.alpn_protocol() == Some(ALPN_TCP);
            if opaque || protocol == Protocol::Opaque {
                Box::pin(forward_inbound_tcp(tls_stream, listen, identity.as_deref(), ctx)).await
            } else {
                let info = ConnInfo { remote, client_identity: identity.map(Into::into), direction };
                Box::pin(serve_http(tls_stream, Stack::Inbound(stack::inbound(ctx.shared.clone(), listen, info)), ctx))
                    .await
            }
        }
        Kind::TransparentOutbound | Kind::TransparentInbound => Err("unresolved transparent connection".into()),
        Kind::Inbound(_) if require_mtls => {
            tracing::info!(%remote, "plaintext connection refused: this listener requires mTLS");
            Ok(())
        }
        Kind::Inbound(listen) => {
            if as_http(protocol, inbound, detected) {
                let info = ConnInfo { remote, client_identity: None, direction };
                Box::pin(serve_http(io, Stack::Inbound(stack::inbound(ctx.shared.clone(), listen, info)), ctx)).await
            } else {
                Box::pin(forward_inbound_tcp(io, listen, None, ctx)).await
            }
        }
    }
}

/// Whether a plaintext connection is served as HTTP: hints first, detection otherwise.
fn as_http(protocol: Protocol, inbound: bool, detected: Option<Detected>) -> bool {
    match protocol {
        Protocol::Opaque => false,
        Protocol::Http1 | Protocol::Http2 | Protocol::Grpc => detected != Some(Detected::Opaque) || !inbound,
        Protocol::Detect => detected == Some(Detected::Http),
    }
}

/// A whole request stack. An enum rather than a boxed service, so that connection tasks are not
/// generic over it and its response future is not boxed once more per request.
pub enum Stack {
    /// To a service.
    Outbound(stack::OutboundStack),
    /// To a local application.
    Inbound(stack::InboundStack),
}

impl Stack {
    fn call(&mut self, req: Req) -> stack::Answered {
        match self {
            Stack::Outbound(s) => s.call(req),
            Stack::Inbound(s) => s.call(req),
        }
    }
}

async fn serve_http<I>(io: I, stack: Stack, ctx: &ConnCtx) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    // hyper calls the service through a shared reference; the connection's one stack is
    // called in place (every layer is always ready and its futures own what they need), not
    // cloned per request. The lock is never contended: one connection, one caller at a time.
    let stack = std::sync::Mutex::new(stack);
    let guard = Arc::new(HeadGuard::default());
    let marks = guard.clone();
    let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let response = marks.open();
        // A request body still arriving keeps the connection busy too (hyper reads the next
        // head only after it).
        let req = if req.body().is_end_stream() || marks.is_h2() {
            req.map(crate::Body::incoming)
        } else {
            let open = marks.open();
            req.map(|body| crate::Body::new(MarkedBody { body, _open: Some(open) }))
        };
        let answered = stack.lock().unwrap_or_else(|p| p.into_inner()).call(req);
        Marked { answered, open: Some(response) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No header-read timeout of hyper's: it arms a timer per request; the connection's
    // `HeadGuard` keeps one.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(ctx.opts.max_header_bytes.max(8192))
        .max_headers(ctx.opts.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(ctx.opts.max_header_bytes).unwrap_or(u32::MAX));
    let io = Sniffed { io, guard: guard.clone(), matched: 0 };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut drain = ctx.drain.clone();
    let drained = drain.changed();
    let expired = guard.expired(ctx.opts.header_read_timeout);
    tokio::pin!(drained, expired);
    let side = Side::new();
    let end = std::future::poll_fn(|cx| {
        if let Poll::Ready(res) = conn.as_mut().poll(cx) {
            return Poll::Ready(End::Served(res));
        }
        side.poll(cx, |cx| {
            if drained.as_mut().poll(cx).is_ready() {
                return Poll::Ready(End::Drain);
            }
            expired.as_mut().poll(cx).map(|()| End::Expired)
        })
    })
    .await;
    let end = match end {
        End::Drain => {
            // In-flight requests finish; a head still arriving is held to the timeout as before.
            conn.as_mut().graceful_shutdown();
            std::future::poll_fn(|cx| {
                if let Poll::Ready(res) = conn.as_mut().poll(cx) {
                    return Poll::Ready(End::Served(res));
                }
                expired.as_mut().poll(cx).map(|()| End::Expired)
            })
            .await
        }
        end => end,
    };
    match end {
        End::Served(res) => res,
        End::Drain | End::Expired => {
            tracing::debug!("no request head within the header read timeout; closing the connection");
            Ok(())
        }
    }
}

/// Why a connection's HTTP serving ended.
enum End<T> {
    /// The connection ended.
    Served(T),
    /// The proxy drains.
    Drain,
    /// The client sent no request head in time.
    Expired,
}

/// Futures polled beside a connection (the drain signal, the header-read guard) that wake
/// only rarely, polled only once their own waker has fired rather than each time the
/// connection's task wakes for its I/O — twice per request and more.
struct Side {
    flag: Arc<SideFlag>,
    waker: Waker,
}

struct SideFlag {
    woken: AtomicBool,
    /// The connection task's waker, woken in turn.
    task: OnceLock<Waker>,
}

impl Wake for SideFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Some(task) = self.task.get() {
            task.wake_by_ref();
        }
    }
}

impl Side {
    fn new() -> Self {
        let flag = Arc::new(SideFlag { woken: AtomicBool::new(true), task: OnceLock::new() });
        Side { waker: Waker::from(flag.clone()), flag }
    }

    /// Polls the side futures through `poll` when they asked to be (or at first).
    fn poll<T>(&self, cx: &mut Context<'_>, poll: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
        let task = self.flag.task.get_or_init(|| cx.waker().clone());
        // A task's waker stays the same while the task lives; were this future ever polled from
        // elsewhere, the side futures are polled each time with that waker, as a plain
        // `select!` would, and again with this one once back on the task.
        if !task.will_wake(cx.waker()) {
            self.flag.woken.store(true, Ordering::Release);
            return poll(cx);
        }
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        poll(&mut Context::from_waker(&self.waker))
    }
}

/// The header read timeout of an HTTP/1 connection: a client must send a whole request head
/// within the timeout of the connection having nothing in flight (opened, or the last request
/// and response done), else the connection is closed — slow headers (slowloris) and idle
/// keep-alive alike, as hyper's own timeout does. hyper's arms a timer per request; this is one
/// timer per connection, which wakes every half timeout and looks at two counters, so a head
/// is given between one and one and a half timeouts. HTTP/2 connections, known by their
/// preface, are left alone.
#[derive(Default)]
struct HeadGuard {
    /// Requests whose head has arrived.
    heads: AtomicU64,
    /// Request bodies still arriving and responses not yet sent in full.
    open: AtomicU64,
    h2: AtomicBool,
}

impl HeadGuard {
    /// A request's head arrived: one more thing in flight, until the mark is dropped.
    fn open(self: &Arc<Self>) -> Open {
        self.heads.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        Open(self.clone())
    }

    fn is_h2(&self) -> bool {
        self.h2.load(Ordering::Relaxed)
    }

    /// Resolves when the connection has waited for a request head for the timeout.
    async fn expired(&self, timeout: Duration) {
        // The head count when the connection was first seen waiting, and since when.
        let mut waiting = Some((0, tokio::time::Instant::now()));
        loop {
            tokio::time::sleep(timeout / 2).await;
            if self.is_h2() {
                return std::future::pending().await;
            }
            let heads = self.heads.load(Ordering::Relaxed);
            waiting = match waiting {
                _ if self.open.load(Ordering::Relaxed) > 0 => None,
                // Seen waiting at every tick since, with no head in between.
                Some((seen, since)) if seen == heads && since.elapsed() >= timeout => return,
                Some((seen, since)) if seen == heads => Some((seen, since)),
                _ => Some((heads, tokio::time::Instant::now())),
            };
        }
    }
}

/// Something in flight on a guarded connection (a request body, a response); over when dropped.
struct Open(Arc<HeadGuard>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection as hyper reads and writes it: its bytes are told to the guard, whether they
/// begin with the HTTP/2 preface; small writes go out with `write`.
struct Sniffed<I> {
    io: I,
    guard: Arc<HeadGuard>,
    /// Bytes of the preface's start matched so far; `DECIDED` once known.
    matched: usize,
}

/// How much of the preface tells it from an HTTP/1 request line: no method starts with "PRI".
const PREFACE_START: &[u8] = b"PRI";
const DECIDED: usize = usize::MAX;

impl<I: AsyncRead + Unpin> AsyncRead for Sniffed<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        std::task::ready!(std::pin::Pin::new(&mut this.io).poll_read(cx, buf))?;
        if this.matched != DECIDED {
            for &byte in &buf.filled()[before..] {
                if byte != PREFACE_START[this.matched] {
                    this.matched = DECIDED;
                    break;
                }
                this.matched += 1;
                if this.matched == PREFACE_START.len() {
                    this.guard.h2.store(true, Ordering::Relaxed);
                    this.matched = DECIDED;
                    break;
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Sniffed<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    /// Small writes go out with `write` (see [`crate::io::poll_write_coalesced`]).
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        crate::io::poll_write_coalesced(&mut self.io, cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The stack's answer, whose body keeps the response in flight until hyper drops it.
struct Marked {
    answered: stack::Answered,
    open: Option<Open>,
}

impl std::future::Future for Marked {
    type Output = Result<http::Response<MarkedBody<crate::Body>>, std::convert::Infallible>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let res = std::task::ready!(std::pin::Pin::new(&mut this.answered).poll(cx));
        let open = this.open.take();
        Poll::Ready(res.map(|r| r.map(|body| MarkedBody { body, _open: open })))
    }
}

/// A body with the in-flight mark that ends with it.
struct MarkedBody<B> {
    body: B,
    _open: Option<Open>,
}

impl<B> hyper::body::Body for MarkedBody<B>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, BoxError>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

async fn forward_outbound_tcp<I>(mut io: I, service: &str, ctx: &ConnCtx) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Send + Unpin,
{
    let snapshot = ctx.shared.snapshot();
    let svc = snapshot.services.get(service).ok_or("service no longer configured")?;
    let picked = {
        let mut rng = rand::rng();
        p2c(&svc.endpoints, &svc.cfg.load_balancer, || rand::Rng::random::<f64>(&mut rng)).cloned()
    };
    let ep = picked.ok_or("no available endpoints")?.endpoint;
    let _pending = ep.stats.start();
    let mut upstream = ep.client.connector.connect(true).await?;
    tokio::io::copy_bidirectional(&mut io, &mut upstream).await?;
    Ok(())
}

async fn forward_inbound_tcp<I>(
    mut io: I,
    key: InboundKey,
    identity: Option<&str>,
    ctx: &ConnCtx,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Send + Unpin,
{
    if stack::authorize_tcp(&ctx.shared.snapshot().config.authorization, identity) == Action::Deny {
        tracing::info!(client = ?identity, "TCP connection denied by authorization policy");
        return Ok(());
    }
    let local = ctx.shared.inbound_target(key).ok_or("inbound target no longer configured")?.service;
    let ep = local.endpoints.first().ok_or("no local endpoint")?.endpoint.clone();
    let mut upstream = ep.client.connector.connect(true).await?;
    tokio::io::copy_bidirectional(&mut io, &mut upstream).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Some(Detected::Http));
        assert_eq!(classify(&[0x16, 3, 1]), Some(Detected::Tls));
        assert_eq!(classify(b"\x00\x00\x00\x01"), Some(Detected::Opaque));
        assert_eq!(classify(b"EHLO x"), Some(Detected::Opaque));
        // Prefixes of a method or the preface need more bytes.
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"PRI * HT"), None);
        assert_eq!(classify(b"P"), None);
        assert_eq!(classify(b""), None);
    }

    #[tokio::test]
    async fn an_idle_connection_task_stays_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (stream, remote) = accepted.unwrap();
        let config = crate::config::ProxyConfig::from_text("apiVersion: kapal.dev/v1alpha1\nkind: ProxyConfig\n");
        let shared = Arc::new(Shared::new(config.unwrap(), Default::default(), None).unwrap());
        let slots = Arc::new(Semaphore::new(1));
        let permit = slots.clone().try_acquire_owned().unwrap();
        let opts = Arc::new(ProxyOptions::default());
        let ctx = ConnCtx { shared, opts, drain: watch::channel(false).1, slots };
        let task = connection(stream, remote, Kind::Outbound("web".into()), ctx, permit);
        // What 10,000 idle connections cost is mostly this, times 10,000: the per-protocol
        // state machine must stay behind a box until the client sends something.
        let size = std::mem::size_of_val(&task);
        assert!(size <= 1024, "connection future is {size} bytes");
        drop((task, client));
    }

    #[tokio::test(start_paused = true)]
    async fn detection_times_out_when_the_client_waits_for_the_server() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let start = tokio::time::Instant::now();
        let (d, buf) = detect(&mut server, Duration::from_millis(300)).await;
        assert_eq!(d, None);
        assert!(buf.is_empty());
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        // A split request line is reassembled.
        let task = tokio::spawn(async move { detect(&mut server, Duration::from_secs(1)).await });
        tokio::io::AsyncWriteExt::write_all(&mut client, b"PO").await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        tokio::io::AsyncWriteExt::write_all(&mut client, b"ST /x HTTP/1.1\r\n").await.unwrap();
        let (d, buf) = task.await.unwrap();
        assert_eq!(d, Some(Detected::Http));
        assert!(buf.starts_with(b"POST /x"));
    }
}

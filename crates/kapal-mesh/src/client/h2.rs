//! The shared HTTP/2 connection of one endpoint: every request is a stream on it; a new one is
//! opened when it has closed.
//!
//! Spoken with the `h2` crate directly rather than through hyper's client: a request's task
//! opens its stream and awaits the response itself, where hyper's client hands each request to
//! a dispatch task over a channel and spawns a task per response that answers over another
//! channel. That is two task hand-offs and a spawn fewer per request, on the path whose cost
//! sets the proxy's added latency. The connection's frames are still read and written on the
//! connection's own task, and a request body still streams on a task of its own.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use ::h2::client::SendRequest;
use ::h2::{RecvStream, SendStream};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, header};
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::time::Instant;

use super::{Connector, SendError};
use crate::{Body, BoxError};

/// hyper's client defaults, which this client had before it spoke `h2` itself.
const MAX_SEND_STREAMS_BEFORE_SETTINGS: usize = 100;
const STREAM_WINDOW: u32 = 2 << 20;
const CONNECTION_WINDOW: u32 = 5 << 20;
const MAX_SEND_BUFFER: usize = 1 << 20;
const MAX_HEADER_LIST: u32 = 16 << 10;

/// A connection: its handle, and whether its task has ended.
#[derive(Clone)]
struct Conn {
    /// Requests take turns with the connection's one handle, so that at most one stream waits
    /// to be opened (beyond the server's SETTINGS_MAX_CONCURRENT_STREAMS), as in hyper's
    /// client: the others wait here unsent, and go on a new connection if this one closes (a
    /// stream already given an ID would instead fail with the connection's GOAWAY).
    tx: Arc<tokio::sync::Mutex<SendRequest<Bytes>>>,
    closed: Arc<AtomicBool>,
}

/// One HTTP/2 connection to an endpoint, opened on first use.
#[derive(Default)]
pub(super) struct Shared {
    conn: Mutex<Option<Conn>>,
    /// Held while connecting, so that concurrent requests share one attempt; remembers when
    /// and why the last attempt failed, so that the requests that waited for it fail with it
    /// instead of each trying (and timing out) in turn.
    connecting: tokio::sync::Mutex<Option<(Instant, String)>>,
}

impl Shared {
    /// Sends `req` (absolute URI) as a stream of the shared connection. A request the
    /// connection refused before sending anything (it had closed, or a GOAWAY had come) goes
    /// on a new one.
    pub(super) async fn send(
        &self,
        connector: &Connector,
        req: http::Request<Body>,
    ) -> Result<http::Response<Body>, SendError> {
        let conn = match self.current() {
            Some(conn) => conn,
            // Boxed, like the HTTP/1.1 pool's: a cold path that would make every request's
            // future big.
            None => Box::pin(self.connect(connector, None)).await?,
        };
        // Ready once the previous request's stream has opened; it fails when the connection
        // can open no more streams, and then nothing was sent.
        let mut tx = conn.tx.clone().lock_owned().await;
        if std::future::poll_fn(|cx| tx.poll_ready(cx)).await.is_err() {
            drop(tx);
            tx = Box::pin(self.connect(connector, Some(&conn.closed))).await?.tx.lock_owned().await;
            std::future::poll_fn(|cx| tx.poll_ready(cx)).await.map_err(|e| SendError::Connect(e.into()))?;
        }
        let (mut parts, body) = req.into_parts();
        strip_connection_headers(&mut parts.headers);
        if let Some(len) = body.size_hint().exact()
            && (len != 0 || !matches!(parts.method, Method::GET | Method::HEAD | Method::DELETE | Method::CONNECT))
            && !parts.headers.contains_key(header::CONTENT_LENGTH)
        {
            parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        let eos = body.is_end_stream();
        let (response, send) =
            tx.send_request(http::Request::from_parts(parts, ()), eos).map_err(|e| SendError::Connect(e.into()))?;
        drop(tx);
        // Told when the response has come; dropped unsent when the request is abandoned first
        // (a timeout, the client gone), which stops the body and resets the stream.
        let answered = (!eos).then(|| {
            let (answered, told) = tokio::sync::oneshot::channel();
            tokio::spawn(pipe(body, send, told));
            answered
        });
        let res = response.await.map_err(io)?;
        if let Some(answered) = answered {
            let _ = answered.send(());
        }
        let (parts, recv) = res.into_parts();
        let body = H2Body::new(recv).with_length(&parts.headers);
        Ok(http::Response::from_parts(parts, Body::h2(body)))
    }

    /// Whether a connection is open (for tests).
    #[cfg(test)]
    pub(super) fn is_open(&self) -> bool {
        self.current().is_some()
    }

    /// Whether the open connection takes no new streams, as after a GOAWAY (for tests).
    #[cfg(test)]
    pub(super) fn refuses_new_streams(&self) -> bool {
        let Some(conn) = self.current() else { return false };
        let Ok(mut tx) = conn.tx.try_lock() else { return false };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(tx.poll_ready(&mut cx), Poll::Ready(Err(_)))
    }

    fn current(&self) -> Option<Conn> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.as_ref().filter(|c| !c.closed.load(Ordering::Acquire)).cloned()
    }

    /// A connection, replacing the one whose `closed` flag is `failed`: the current one if
    /// another request has opened it meanwhile, else a new one.
    async fn connect(&self, connector: &Connector, failed: Option<&AtomicBool>) -> Result<Conn, SendError> {
        if let Some(closed) = failed {
            closed.store(true, Ordering::Release);
        }
        let waiting_since = Instant::now();
        let mut last_failure = self.connecting.lock().await;
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        if let Some((at, why)) = &*last_failure
            && *at >= waiting_since
        {
            return Err(SendError::Connect(why.clone().into()));
        }
        match handshake(connector).await {
            Ok(conn) => {
                *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                *last_failure = Some((Instant::now(), e.to_string()));
                Err(SendError::Connect(e))
            }
        }
    }
}

async fn handshake(connector: &Connector) -> Result<Conn, BoxError> {
    let io = connector.connect(false).await?;
    let (tx, conn) = ::h2::client::Builder::new()
        .initial_max_send_streams(MAX_SEND_STREAMS_BEFORE_SETTINGS)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_header_list_size(MAX_HEADER_LIST)
        .enable_push(false)
        // Small flushes of its frames go out with `write`, not `writev` (see `Coalesced`).
        .handshake::<_, Bytes>(crate::io::Coalesced(io))
        .await?;
    let closed = Arc::new(AtomicBool::new(false));
    let ended = closed.clone();
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(%error, "upstream HTTP/2 connection failed");
        }
        ended.store(true, Ordering::Release);
    });
    Ok(Conn { tx: Arc::new(tokio::sync::Mutex::new(tx)), closed })
}

/// A stream's failure. A stream the server refused (RST_STREAM with REFUSED_STREAM) was not
/// processed (RFC 9113 §8.7): to the retry layer that is as safe to send again as a request
/// that never left.
fn io(e: ::h2::Error) -> SendError {
    if e.is_remote() && e.reason() == Some(::h2::Reason::REFUSED_STREAM) {
        return SendError::Connect(Box::new(e));
    }
    SendError::Io(Box::new(e))
}

/// Headers that name a property of one HTTP/1.1 connection, which HTTP/2 forbids (RFC 9113
/// §8.2.2): `Connection` and those it lists, and the ones that are always hop by hop. `TE`
/// may stay only as `trailers`.
fn strip_connection_headers(headers: &mut HeaderMap) {
    // Most requests have none (an HTTP/2 client's never do): one pass over the names finds
    // that for less than the hash lookups of removing each.
    let hop_by_hop = |name: &header::HeaderName| {
        [header::CONNECTION, header::TRANSFER_ENCODING, header::UPGRADE, header::TE].contains(name)
            || name.as_str() == "keep-alive"
            || name.as_str() == "proxy-connection"
    };
    if !headers.keys().any(hop_by_hop) {
        return;
    }
    // Every `Connection` line's list counts, not only the first line's.
    let listed: Vec<HeaderValue> = headers.get_all(header::CONNECTION).iter().cloned().collect();
    headers.remove(header::CONNECTION);
    for name in listed.iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')) {
        headers.remove(name.trim());
    }
    for name in [header::TRANSFER_ENCODING, header::UPGRADE] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    if headers.get(header::TE).is_some_and(|te| te != "trailers") {
        headers.remove(header::TE);
    }
}

/// Streams a request body to its stream, waiting for flow-control capacity before each
/// chunk, and ends the stream with an empty DATA frame or the trailers. A body that fails
/// resets the stream (the server must not take a truncated body for a whole one), and so does
/// a request abandoned before its response came (`answered` dropped unsent), as hyper does.
async fn pipe(mut body: Body, mut send: SendStream<Bytes>, answered: tokio::sync::oneshot::Receiver<()>) {
    let mut answered = Some(answered);
    let result: Result<(), Stop> = async {
        loop {
            let frame = std::future::poll_fn(|cx| {
                if abandoned(&mut answered, cx) {
                    return Poll::Ready(Err(Stop::Abandoned));
                }
                // A reset from the server (it answered early and wants no more) ends the body.
                if let Poll::Ready(reset) = send.poll_reset(cx) {
                    let error = match reset {
                        Ok(reason) => ::h2::Error::from(reason),
                        Err(error) => error,
                    };
                    return Poll::Ready(Err(Stop::Failed(error.into())));
                }
                Pin::new(&mut body).poll_frame(cx).map(Ok)
            })
            .await?;
            let Some(frame) = frame.transpose().map_err(Stop::Failed)? else {
                send.send_data(Bytes::new(), true).map_err(Stop::failed)?;
                return Ok(());
            };
            let frame = match frame.into_data() {
                Ok(data) => {
                    let eos = body.is_end_stream();
                    // Capacity first, so that a slow server holds the body back here rather
                    // than in the connection's send buffer.
                    send.reserve_capacity(1);
                    while send.capacity() == 0 {
                        let capacity = std::future::poll_fn(|cx| {
                            if abandoned(&mut answered, cx) {
                                return Poll::Ready(Err(Stop::Abandoned));
                            }
                            send.poll_capacity(cx).map(Ok)
                        });
                        match capacity.await? {
                            Some(Ok(_)) => {}
                            Some(Err(e)) => return Err(Stop::failed(e)),
                            None => return Err(Stop::Failed("the stream closed while its body was being sent".into())),
                        }
                    }
                    send.send_data(data, eos).map_err(Stop::failed)?;
                    if eos {
                        return Ok(());
                    }
                    continue;
                }
                Err(frame) => frame,
            };
            if let Ok(trailers) = frame.into_trailers() {
                send.send_trailers(trailers).map_err(Stop::failed)?;
                return Ok(());
            }
        }
    }
    .await;
    match result {
        Ok(()) => {}
        Err(Stop::Abandoned) => send.send_reset(::h2::Reason::CANCEL),
        Err(Stop::Failed(error)) => {
            tracing::debug!(%error, "request body to the upstream failed");
            send.send_reset(::h2::Reason::INTERNAL_ERROR);
        }
    }
}

/// Why a request body stopped before its end.
enum Stop {
    /// The request was abandoned before its response came.
    Abandoned,
    /// The body or the stream failed.
    Failed(BoxError),
}

impl Stop {
    fn failed(e: ::h2::Error) -> Self {
        Stop::Failed(e.into())
    }
}

/// Whether the request was abandoned before its response came; once it has come, `answered`
/// is done with.
fn abandoned(answered: &mut Option<tokio::sync::oneshot::Receiver<()>>, cx: &mut Context<'_>) -> bool {
    let Some(rx) = answered else { return false };
    match Pin::new(rx).poll(cx) {
        Poll::Ready(Ok(())) => {
            *answered = None;
            false
        }
        Poll::Ready(Err(_)) => true,
        Poll::Pending => false,
    }
}

/// A response body received on an HTTP/2 stream. Each chunk read gives its bytes of window
/// back to the server.
pub(crate) struct H2Body {
    recv: RecvStream,
    data_done: bool,
    /// From `content-length`, for the size hint.
    remaining: Option<u64>,
}

impl H2Body {
    fn new(recv: RecvStream) -> Self {
        H2Body { recv, data_done: false, remaining: None }
    }

    fn with_length(mut self, headers: &HeaderMap) -> Self {
        self.remaining = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
        self
    }
}

impl hyper::body::Body for H2Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(n) = &mut this.remaining {
                        *n = n.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                // RST_STREAM(NO_ERROR) is a server's early response: the body ends, whole
                // (RFC 9113 §8.1).
                Some(Err(e)) if e.reason() == Some(::h2::Reason::NO_ERROR) => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(trailers) => Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t)))),
            Err(e) if e.reason() == Some(::h2::Reason::NO_ERROR) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            _ if self.recv.is_end_stream() => SizeHint::with_exact(0),
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

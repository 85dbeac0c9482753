//! The HTTP/1.1 keep-alive pool of one endpoint.
//!
//! Idle connections wait in a LIFO list (the most recently used one is the likeliest to still
//! be open). A request takes one, or opens a new connection when none is ready; its response
//! body gives the connection back once it has ended, and drops it when it is abandoned early
//! (the connection cannot be reused then). Connections the server closed, upgraded ones and
//! ones idle for longer than the idle timeout are never handed out.
//!
//! Two kinds of connection are pooled apart, under one limit: those of [`wire`], which requests
//! without a body to stream (most of them: GET, HEAD, DELETE, an empty POST) speak on their own
//! task, and hyper's, for requests that stream a body, upgrades and `CONNECT`. hyper's driver
//! task closes an idle connection as soon as the server does; a [`wire`] connection the server
//! closed is found at its next checkout or by the sweep, and stays in CLOSE_WAIT until then.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{HeaderValue, Method, StatusCode, Uri, header};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::{ConnectError, Connector, SendError};
use crate::io::Io;
use crate::{Body, BoxError};

mod wire;

pub(crate) use wire::WireBody;

type Sender = http1::SendRequest<Body>;

/// Idle HTTP/1.1 connections to one endpoint.
pub(super) struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    idle: Mutex<Idle>,
    idle_timeout: Duration,
    max_idle: usize,
}

#[derive(Default)]
struct Idle {
    /// Connections driven by hyper (their own tasks), most recently returned last; each with
    /// when it came back.
    conns: VecDeque<(Sender, Instant)>,
    /// Connections driven by the requests on them ([`wire`]), likewise.
    wire: VecDeque<(Box<wire::Conn>, Instant)>,
    /// Whether a task is closing expired connections.
    sweeping: bool,
}

impl Pool {
    pub(super) fn new(idle_timeout: Duration, max_idle: usize) -> Self {
        Pool { inner: Arc::new(Inner { idle: Mutex::default(), idle_timeout, max_idle }) }
    }

    pub(super) fn idle(&self) -> usize {
        let idle = self.inner.lock();
        idle.conns.len() + idle.wire.len()
    }

    /// Idle connections not seen closed.
    #[cfg(test)]
    pub(super) fn open_idle(&self) -> usize {
        let mut idle = self.inner.lock();
        let wire = idle.wire.iter_mut().map(|(c, _)| c.is_open()).filter(|open| *open).count();
        idle.conns.iter().filter(|(tx, _)| !tx.is_closed()).count() + wire
    }

    /// Sends `req` on an idle connection or a new one. A request that a reused connection
    /// refused before sending anything (the server closed it meanwhile) is sent again, as the
    /// request never left.
    ///
    /// `now` is when the request began (the caller has read the clock already); it decides
    /// which idle connections have expired. On an idle connection the request is handed to it
    /// here, before the returned future is first polled: a request is a few hundred bytes, and
    /// every future it would otherwise wait in would copy it once more. The future is written
    /// out by hand for the same reason: as an `async` block it was three times as large.
    pub(super) fn send<'a>(
        &'a self,
        connector: &'a Connector,
        mut req: http::Request<Body>,
        now: Instant,
    ) -> impl Future<Output = Result<http::Response<Body>, SendError>> + Send + 'a {
        // hyper's future of a response has no name; a function pointer to its maker lets the
        // future below make another one after a reconnect.
        let dispatch: Dispatch<_> = Sender::try_send_request;
        let state = match to_origin_form(&mut req, connector.addr()) {
            Err(error) => State::Failed { error: Some(error) },
            Ok(()) if wire::can_send(&req) => self.on_wire(connector, now, |buf| wire::encode(&req, buf)),
            Ok(()) => self.on_hyper(connector, dispatch, req, now),
        };
        Sending { pool: self, connector, dispatch, state }
    }

    /// `req` handed to an idle connection of hyper's, or waiting for a new one.
    fn on_hyper<'a, F>(
        &'a self,
        connector: &'a Connector,
        dispatch: Dispatch<F>,
        req: http::Request<Body>,
        now: Instant,
    ) -> State<'a, F> {
        match self.inner.checkout(now) {
            Some(mut tx) => State::Sent { fut: dispatch(&mut tx, req), tx: Some(tx), reused: true },
            None => State::Connecting { conn: Box::pin(connect(connector)), req: Some(req) },
        }
    }

    /// A request head, which `head` writes into the buffer it is given, on an idle [`wire`]
    /// connection (into its own buffer, whose allocation serves request after request), or
    /// waiting for a new one.
    fn on_wire<'a, F>(
        &'a self,
        connector: &'a Connector,
        now: Instant,
        head: impl FnOnce(&mut Vec<u8>) -> wire::Sent,
    ) -> State<'a, F> {
        match self.inner.checkout_wire(now) {
            Some(mut conn) => {
                let sent = head(conn.wbuf());
                State::Wire { ex: wire::Exchange::new(conn, sent), reused: true }
            }
            None => {
                let mut buf = Vec::with_capacity(256);
                let sent = head(&mut buf);
                State::WireConnecting { conn: Box::pin(connector.connect(false)), head: Some((buf, sent)) }
            }
        }
    }

    fn response(&self, res: http::Response<Incoming>, tx: Sender) -> http::Response<Body> {
        // An upgraded connection belongs to the tunnel now.
        let reusable = res.status() != StatusCode::SWITCHING_PROTOCOLS;
        let conn = reusable.then(|| Checkin { tx, pool: Arc::downgrade(&self.inner) });
        res.map(|inner| Body::pooled(PooledBody { inner, conn, ended: false }))
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle connection of hyper's that can take a request.
    fn checkout(&self, now: Instant) -> Option<Sender> {
        self.take(|idle| &mut idle.conns, now, |tx| tx.is_ready())
    }

    /// The most recently used idle connection of [`wire`]'s that is still open.
    fn checkout_wire(&self, now: Instant) -> Option<Box<wire::Conn>> {
        self.take(|idle| &mut idle.wire, now, |conn| conn.is_open())
    }

    /// The most recently used connection of `list` that has not expired at `now` and is
    /// `usable`. The check runs outside the lock (a TLS connection's probe may decrypt a record).
    fn take<T>(
        &self,
        list: fn(&mut Idle) -> &mut VecDeque<(T, Instant)>,
        now: Instant,
        mut usable: impl FnMut(&mut T) -> bool,
    ) -> Option<T> {
        loop {
            let (mut conn, since) = list(&mut self.lock()).pop_back()?;
            if now.saturating_duration_since(since) < self.idle_timeout && usable(&mut conn) {
                return Some(conn);
            }
        }
    }

    fn checkin(self: &Arc<Self>, tx: Sender) {
        self.put(|idle| &mut idle.conns, tx);
    }

    fn checkin_wire(self: &Arc<Self>, conn: Box<wire::Conn>) {
        self.put(|idle| &mut idle.wire, conn);
    }

    /// Puts a connection back in `list`, unless the pool holds as many idle ones as it keeps.
    fn put<T>(self: &Arc<Self>, list: fn(&mut Idle) -> &mut VecDeque<(T, Instant)>, conn: T) {
        let mut idle = self.lock();
        if idle.conns.len() + idle.wire.len() >= self.max_idle {
            return;
        }
        // Stamped now, when it comes back: a connection that served a long request (a watch, a
        // download) is as fresh as one that served a short one.
        list(&mut idle).push_back((conn, Instant::now()));
        self.sweep_later(&mut idle);
    }

    /// Makes sure a task closes the idle connections once they expire.
    fn sweep_later(self: &Arc<Self>, idle: &mut Idle) {
        if !idle.sweeping
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            idle.sweeping = true;
            rt.spawn(sweep(Arc::downgrade(self)));
        }
    }

    /// Drops expired and closed connections; whether any are left.
    fn prune(&self) -> bool {
        let mut idle = self.lock();
        let timeout = self.idle_timeout;
        idle.conns.retain(|(tx, since)| !tx.is_closed() && since.elapsed() < timeout);
        idle.wire.retain_mut(|(conn, since)| since.elapsed() < timeout && conn.is_open());
        idle.sweeping = !idle.conns.is_empty() || !idle.wire.is_empty();
        idle.sweeping
    }
}

/// Closes idle connections once they expire; runs while the pool has any.
async fn sweep(pool: Weak<Inner>) {
    loop {
        let Some(every) = pool.upgrade().map(|p| p.idle_timeout / 2) else { return };
        tokio::time::sleep(every).await;
        match pool.upgrade() {
            Some(p) if p.prune() => {}
            _ => return,
        }
    }
}

/// A request handed to a reused connection (with hyper's future of the response), or still to send.
type Dispatch<F> = fn(&mut Sender, http::Request<Body>) -> F;
/// Connecting upstream, boxed: it is a big future (TCP, maybe TLS), and kept inline it would make
/// every request's future that big, to allocate and move.
type Connect<'a> = Pin<Box<dyn Future<Output = Result<Sender, SendError>> + Send + 'a>>;
/// Connecting upstream for [`wire`], boxed likewise.
type ConnectIo<'a> = Pin<Box<dyn Future<Output = Result<Box<dyn Io>, ConnectError>> + Send + 'a>>;

pin_project_lite::pin_project! {
    /// The response to a request [`Pool::send`] sent.
    struct Sending<'a, F> {
        pool: &'a Pool,
        connector: &'a Connector,
        dispatch: Dispatch<F>,
        #[pin]
        state: State<'a, F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<'a, F> {
        /// Handed to a connection; `reused` when the pool gave it (its refusal is retried).
        Sent { #[pin] fut: F, tx: Option<Sender>, reused: bool },
        /// Waiting for a new connection.
        Connecting { conn: Connect<'a>, req: Option<http::Request<Body>> },
        /// On a connection this task drives; `reused` when the pool gave it.
        Wire { ex: wire::Exchange, reused: bool },
        /// Waiting for a new connection for [`wire`], with the request's head.
        WireConnecting { conn: ConnectIo<'a>, head: Option<(Vec<u8>, wire::Sent)> },
        /// Refused before it was sent.
        Failed { error: Option<SendError> },
    }
}

type Answer = Result<http::Response<Incoming>, hyper::client::conn::TrySendError<http::Request<Body>>>;

impl<F: Future<Output = Answer>> Future for Sending<'_, F> {
    type Output = Result<http::Response<Body>, SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Sent { fut, tx, reused } => {
                    let answer = ready!(fut.poll(cx));
                    let (tx, reused) = (tx.take(), *reused);
                    // hyper's future must not be polled again.
                    this.state.set(State::Failed { error: None });
                    let Some(tx) = tx else { return Poll::Ready(Err(polled_again())) };
                    match answer {
                        Ok(res) => return Poll::Ready(Ok(this.pool.response(res, tx))),
                        Err(mut e) => match e.take_message() {
                            Some(unsent) if reused => {
                                this.pool.on_hyper(this.connector, *this.dispatch, unsent, Instant::now())
                            }
                            // A new connection's refusal is final; one that took none of the
                            // request failed as a connection, as on the wire path.
                            Some(_) => return Poll::Ready(Err(SendError::Connect(Box::new(e.into_error())))),
                            None => return Poll::Ready(Err(SendError::Io(Box::new(e.into_error())))),
                        },
                    }
                }
                StateProj::Connecting { conn, req } => {
                    let connected = ready!(conn.as_mut().poll(cx));
                    let req = req.take();
                    this.state.set(State::Failed { error: None });
                    let mut tx = connected?;
                    let Some(req) = req else { return Poll::Ready(Err(polled_again())) };
                    State::Sent { fut: (this.dispatch)(&mut tx, req), tx: Some(tx), reused: false }
                }
                StateProj::Wire { ex, reused } => {
                    match ready!(ex.poll(cx, &this.pool.inner)) {
                        Ok(res) => return Poll::Ready(Ok(res)),
                        // A reused connection that took none of the request (the server closed
                        // it meanwhile): the request never left, so it goes on another.
                        // A new connection that took none of it failed as a connection.
                        Err(wire::Failed { unsent: Some(_), error }) if !*reused => {
                            return Poll::Ready(Err(SendError::Connect(error)));
                        }
                        Err(wire::Failed { unsent: Some((head, sent)), .. }) => {
                            this.pool.on_wire(this.connector, Instant::now(), |buf| {
                                *buf = head;
                                sent
                            })
                        }
                        Err(wire::Failed { error, .. }) => return Poll::Ready(Err(SendError::Io(error))),
                    }
                }
                StateProj::WireConnecting { conn, head } => {
                    let connected = ready!(conn.as_mut().poll(cx));
                    let head = head.take();
                    this.state.set(State::Failed { error: None });
                    let io = connected.map_err(|e| SendError::Connect(Box::new(e)))?;
                    let Some((head, sent)) = head else { return Poll::Ready(Err(polled_again())) };
                    let mut conn = wire::Conn::new(io);
                    *conn.wbuf() = head;
                    State::Wire { ex: wire::Exchange::new(conn, sent), reused: false }
                }
                StateProj::Failed { error } => return Poll::Ready(Err(error.take().unwrap_or_else(polled_again))),
            };
            this.state.set(next);
        }
    }
}

fn polled_again() -> SendError {
    SendError::Io("the send future was polled after it completed".into())
}

/// Opens a connection and spawns its driver.
async fn connect(connector: &Connector) -> Result<Sender, SendError> {
    let io = connector.connect(false).await.map_err(|e| SendError::Connect(Box::new(e)))?;
    // Requests go out as one flat buffer instead of a vectored write of head and body: small
    // requests, the usual case, cost less that way (measured: a few per cent of throughput);
    // a large upload pays one more copy of its bytes. Responses to clients stay vectored.
    let (tx, conn) = http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| SendError::Connect(Box::new(e) as BoxError))?;
    tokio::spawn(async move {
        if let Err(error) = conn.with_upgrades().await {
            tracing::debug!(%error, "upstream HTTP/1.1 connection failed");
        }
    });
    Ok(tx)
}

/// HTTP/1.1 sends the path (`origin-form`, or `authority-form` for CONNECT) and names the
/// authority in `Host`: the request target's own when it has one (an absolute URI, HTTP/2's
/// `:authority`, or one a route's filter set), which a proxy puts in place of the client's
/// `Host` (RFC 9112 §3.2.2), without user info; else the client's `Host`; else the endpoint's
/// address.
fn to_origin_form(req: &mut http::Request<Body>, fallback: std::net::SocketAddr) -> Result<(), SendError> {
    let bad = |e: &dyn std::fmt::Display| SendError::Connect(format!("request target: {e}").into());
    let host = match req.uri().authority() {
        Some(a) => Some(HeaderValue::from_str(crate::http::without_userinfo(a)).map_err(|e| bad(&e))?),
        None if req.headers().contains_key(header::HOST) => None,
        None => Some(HeaderValue::try_from(fallback.to_string()).map_err(|e| bad(&e))?),
    };
    if let Some(host) = host {
        req.headers_mut().insert(header::HOST, host);
    }
    if req.method() == Method::CONNECT {
        if let Some(a) = req.uri().authority().cloned() {
            *req.uri_mut() = Uri::from(a);
        }
    } else if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        let pq = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(pq);
    }
    Ok(())
}

/// A connection on its way back to the pool.
struct Checkin {
    tx: Sender,
    pool: Weak<Inner>,
}

impl Checkin {
    /// Returns the connection: at once when it can take the next request (the usual case: its
    /// driver has read the whole response before the body's end reached here), else once it
    /// can (it may still be sending the request body).
    fn release(self) {
        let Checkin { mut tx, pool } = self;
        let Some(pool) = pool.upgrade() else { return };
        if tx.is_ready() {
            pool.checkin(tx);
        } else if !tx.is_closed()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                if tx.ready().await.is_ok() {
                    pool.checkin(tx);
                }
            });
        }
    }
}

/// A response body that gives its connection back to the pool once it has ended.
pub(crate) struct PooledBody {
    inner: Incoming,
    conn: Option<Checkin>,
    ended: bool,
}

impl PooledBody {
    fn release(&mut self) {
        self.ended = true;
        if let Some(conn) = self.conn.take() {
            conn.release();
        }
    }
}

impl hyper::body::Body for PooledBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            // hyper stops polling a body that says it has ended.
            Some(Ok(_)) if this.inner.is_end_stream() => this.release(),
            Some(Ok(_)) => {}
            None => this.release(),
            // A broken response leaves the connection in an unknown state.
            Some(Err(_)) => this.conn = None,
        }
        Poll::Ready(frame.map(|f| f.map_err(|e| Box::new(e) as BoxError)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // An empty body (204, HEAD, Content-Length: 0) is never polled; a body abandoned
        // before its end leaves unread bytes on the connection, which is then dropped.
        if self.ended || self.inner.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, host: Option<&str>) -> http::Request<Body> {
        let mut b = http::Request::get(uri);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        b.body(crate::http::full("")).unwrap()
    }

    #[test]
    fn requests_go_out_in_origin_form_with_a_host() {
        let ep: std::net::SocketAddr = "10.0.0.1:8080".parse().unwrap();
        let mut r = req("http://web.default:80/a?x=1", None);
        to_origin_form(&mut r, ep).unwrap();
        assert_eq!(r.uri(), "/a?x=1");
        assert_eq!(r.headers()[header::HOST], "web.default:80");
        // An absolute URI's authority replaces the client's Host (RFC 9112 §3.2.2).
        let mut r = req("http://api.example", Some("replaced"));
        to_origin_form(&mut r, ep).unwrap();
        assert_eq!(r.uri(), "/");
        assert_eq!(r.headers()[header::HOST], "api.example");
        let mut r = req("/y", Some("kept"));
        to_origin_form(&mut r, ep).unwrap();
        assert_eq!(r.headers()[header::HOST], "kept");
        // User info is no part of a Host (nor sent on).
        let mut r = req("http://user:pw@api.example:8080/z", Some("b.example"));
        to_origin_form(&mut r, ep).unwrap();
        assert_eq!(r.uri(), "/z");
        assert_eq!(r.headers()[header::HOST], "api.example:8080");
        let mut r = req("/x", None);
        to_origin_form(&mut r, ep).unwrap();
        assert_eq!(r.uri(), "/x");
        assert_eq!(r.headers()[header::HOST], "10.0.0.1:8080");
        let mut r = req("http://db:5432", None);
        *r.method_mut() = Method::CONNECT;
        to_origin_form(&mut r, ep).unwrap();
        assert_eq!(r.uri(), "db:5432");
    }
}

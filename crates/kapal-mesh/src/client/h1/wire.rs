//! HTTP/1.1 exchanges driven by the request's own task: a request without a body to stream is
//! written, and its response read, by the future that sends it, and the response body is read
//! from the connection by whoever polls it (hyper's server connection, writing it to the
//! client). No connection task, no channel between tasks, no wake-up of another task: what
//! hyper's client costs on every request (a proxied request woke two tasks twice). Requests
//! with a body to stream, upgrades and `CONNECT` still go through hyper's client.
//!
//! Framing follows RFC 9112 §6 and hyper's client: no body for `HEAD` and for 1xx, 204 and 304
//! responses; `Transfer-Encoding` wins over `Content-Length` (chunked when it is the final
//! coding, else read to the end of the connection), and is refused on HTTP/1.0;
//! `Content-Length` values must agree; without either, the body runs to the end of the
//! connection. Interim 1xx responses are skipped; a 101 is an error (no upgrade was asked
//! for). A connection goes back to its pool only when the response said it may (HTTP/1.1
//! without `Connection: close`, HTTP/1.0 with `keep-alive` and without `close`; not with both
//! `Transfer-Encoding` and `Content-Length`, nor after a body that ran to the connection's
//! end), the request did not ask to close, and nothing was left unread.
//!
//! Where this differs from hyper's client: a later request on a connection whose server
//! answered as HTTP/1.0 with keep-alive still goes as HTTP/1.1 (hyper downgrades it), and an
//! empty reason phrase is replaced by the standard one.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header};
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Inner;
use crate::http::connection_has;
use crate::io::Io;
use crate::{Body, BoxError};

/// Largest response head (and trailer section) read: hyper's client default.
const MAX_HEAD: usize = 8192 + 4096 * 100;
/// Most headers in a response head: hyper's default.
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (with its extensions).
const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section: hyper's limit.
const MAX_TRAILERS: usize = 16 * 1024;
/// Room made in the read buffer before a read, at first; it doubles after each read that
/// filled it (a large body), up to `MAX_READ_SIZE`.
const READ_SIZE: usize = 8192;
const MAX_READ_SIZE: usize = 256 * 1024;

/// A connection to an endpoint, with its buffers.
pub(super) struct Conn {
    io: Box<dyn Io>,
    /// Bytes read and not yet used.
    rbuf: BytesMut,
    /// The request head being written (its allocation serves the next request too).
    wbuf: Vec<u8>,
    /// Room to make for the next read.
    read_size: usize,
    /// Where a response head's headers lie, while it is parsed (kept for the allocation).
    spans: Vec<Span>,
}

impl Conn {
    /// Boxed: a connection moves from the pool to a request, to its response's body and back,
    /// and the response (with its body) moves through every layer.
    pub(super) fn new(io: Box<dyn Io>) -> Box<Self> {
        Box::new(Conn { io, rbuf: BytesMut::new(), wbuf: Vec::new(), read_size: READ_SIZE, spans: Vec::new() })
    }

    /// The buffer a request head is written into before it is sent.
    pub(super) fn wbuf(&mut self) -> &mut Vec<u8> {
        &mut self.wbuf
    }

    /// Whether an idle connection can still take a request: the server has neither closed it
    /// nor sent anything unasked. A socket with nothing to read answers without a system call
    /// (tokio knows it is not readable).
    ///
    /// The probe runs outside tokio's cooperative budget: a task that has used its budget up
    /// would otherwise be told `Pending` whatever the socket holds, and a closed connection
    /// would pass for an open one.
    pub(super) fn is_open(&mut self) -> bool {
        if !self.rbuf.is_empty() {
            return false;
        }
        let mut byte = [0u8; 1];
        let probe = std::future::poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut byte);
            Poll::Ready(Pin::new(&mut self.io).poll_read(cx, &mut buf).is_pending())
        });
        let mut probe = std::pin::pin!(tokio::task::coop::unconstrained(probe));
        probe.as_mut().poll(&mut Context::from_waker(Waker::noop())) == Poll::Ready(true)
    }

    /// Ready for the next exchange: a large body's read size and buffer are not kept idle.
    fn reset(&mut self) {
        self.read_size = READ_SIZE;
        if self.rbuf.capacity() > 2 * READ_SIZE {
            self.rbuf = BytesMut::new();
        }
        if self.wbuf.capacity() > 2 * READ_SIZE {
            self.wbuf = Vec::new();
        }
    }

    /// Reads more bytes; `Ok(0)` at the end of the connection.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < self.read_size / 4 {
            self.rbuf.reserve(self.read_size);
        }
        let room = self.rbuf.capacity() - self.rbuf.len();
        let n = ready!(tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf))?;
        if n == room {
            self.read_size = (self.read_size * 2).min(MAX_READ_SIZE);
        }
        Poll::Ready(Ok(n))
    }
}

/// Whether `req` can be sent by [`Exchange`]: it has no body to stream and asks for no
/// upgrade or tunnel.
pub(super) fn can_send(req: &http::Request<Body>) -> bool {
    req.body().is_end_stream()
        && req.method() != Method::CONNECT
        && !req.headers().contains_key(header::UPGRADE)
        && !req.headers().contains_key(header::TRANSFER_ENCODING)
}

/// What an exchange needs to know of its request once it is written.
#[derive(Clone, Copy)]
pub(super) struct Sent {
    /// A `HEAD` request: the response has no body whatever its headers say.
    head: bool,
    /// The request allows the connection to be kept.
    keep_alive: bool,
}

/// Writes `req`'s head (origin-form target, `Host` set) into `out`, as hyper's client would:
/// the headers as they are, lower-case, nothing added for an empty body.
pub(super) fn encode(req: &http::Request<Body>, out: &mut Vec<u8>) -> Sent {
    out.clear();
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.uri().path_and_query().map_or("/", |pq| pq.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut connection = false;
    for (name, value) in req.headers() {
        connection |= name == header::CONNECTION;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    // The map is searched for `close` only if the loop saw a `Connection` header.
    Sent { head: req.method() == Method::HEAD, keep_alive: !(connection && connection_has(req.headers(), "close")) }
}

/// Why an exchange failed.
pub(super) struct Failed {
    pub(super) error: BoxError,
    /// Nothing of the request was written: it can go on another connection. Its head is here.
    pub(super) unsent: Option<(Vec<u8>, Sent)>,
}

/// One request and its response head on one connection.
pub(super) struct Exchange {
    conn: Option<Box<Conn>>,
    sent: Sent,
    written: usize,
}

impl Exchange {
    /// Sends the head already in `conn`'s write buffer ([`encode`]).
    pub(super) fn new(conn: Box<Conn>, sent: Sent) -> Self {
        Exchange { conn: Some(conn), sent, written: 0 }
    }

    /// Writes the request, then reads until the response head; the response's body reads
    /// on from the connection.
    pub(super) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        pool: &Arc<Inner>,
    ) -> Poll<Result<http::Response<Body>, Failed>> {
        let Some(conn) = self.conn.as_mut() else { return Poll::Ready(Err(failed("polled after completion"))) };
        while self.written < conn.wbuf.len() {
            match ready!(Pin::new(&mut conn.io).poll_write(cx, &conn.wbuf[self.written..])) {
                Ok(0) => return Poll::Ready(Err(self.fail(io::ErrorKind::WriteZero.into()))),
                Ok(n) => self.written += n,
                Err(e) => return Poll::Ready(Err(self.fail(e))),
            }
        }
        if let Err(e) = ready!(Pin::new(&mut conn.io).poll_flush(cx)) {
            return Poll::Ready(Err(self.fail(e)));
        }
        loop {
            match parse_head(&mut conn.rbuf, &mut conn.spans, self.sent) {
                Ok(Some((head, framing))) => {
                    let Some(conn) = self.conn.take() else { unreachable!("checked above") };
                    let reusable = self.sent.keep_alive && head.keep_alive;
                    let body = WireBody { conn: Some(conn), framing, reusable, pool: Arc::downgrade(pool) };
                    return Poll::Ready(Ok(head.res.map(|()| Body::wire(body))));
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(self.fail(e))),
            }
            if conn.rbuf.len() >= MAX_HEAD {
                return Poll::Ready(Err(self.fail(io::Error::other("response head too large"))));
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before the response");
                    return Poll::Ready(Err(self.fail(e)));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(self.fail(e))),
            }
        }
    }

    /// The connection is done for; the request goes back when none of it was written.
    fn fail(&mut self, error: io::Error) -> Failed {
        let conn = self.conn.take();
        let unsent = conn.filter(|_| self.written == 0).map(|c| (c.wbuf, self.sent));
        Failed { error: Box::new(error), unsent }
    }
}

fn failed(why: &str) -> Failed {
    Failed { error: why.into(), unsent: None }
}

/// A response head as read.
#[derive(Debug)]
struct Head {
    res: http::Response<()>,
    /// The response allows the connection to be kept.
    keep_alive: bool,
}

/// Where a header's name and value lie in the head.
type Span = (u32, u32, u32, u32);

/// Parses a final response head off the front of `buf` (skipping interim 1xx ones); `None`
/// while it is incomplete. The header values share the head's bytes: `spans` holds where
/// they are between parsing and cutting the head off the buffer.
fn parse_head(buf: &mut BytesMut, spans: &mut Vec<Span>, sent: Sent) -> io::Result<Option<(Head, Framing)>> {
    loop {
        if buf.is_empty() {
            return Ok(None);
        }
        spans.clear();
        let (len, code, version, reason) = {
            // Uninitialised: parsed again whenever more bytes arrive, a head must not pay for
            // clearing 3 KiB of headers each time.
            let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
            let mut res = httparse::Response::new(&mut []);
            let parsed =
                httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut res, buf, &mut headers);
            let len = match parsed {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(e) => return Err(invalid(format!("response head: {e}"))),
            };
            let base = buf.as_ptr() as usize;
            let at = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
            spans.extend(
                res.headers
                    .iter()
                    .map(|h| (at(h.name.as_bytes()), h.name.len() as u32, at(h.value), h.value.len() as u32)),
            );
            let code = res.code.unwrap_or(0);
            // A reason phrase of the upstream's own goes on to the client, as hyper's client
            // and server pass it.
            let canonical = StatusCode::from_u16(code).ok().and_then(|s| s.canonical_reason());
            let reason = res.reason.filter(|r| !r.is_empty() && Some(*r) != canonical).map(|r| r.as_bytes().to_vec());
            (len, code, res.version.unwrap_or(1), reason)
        };
        let status = StatusCode::from_u16(code).map_err(|_| invalid(format!("response status {code}")))?;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(invalid("101 Switching Protocols without an upgrade"));
            }
            buf.advance(len);
            continue;
        }
        let head = buf.split_to(len).freeze();
        let (headers, named) = header_map(&head, spans)?;
        let version = if version == 0 { Version::HTTP_10 } else { Version::HTTP_11 };
        let lists = |token| named.connection && connection_has(&headers, token);
        // Once `close` is said, `keep-alive` cannot take it back.
        let keep_alive = !lists("close")
            && (version == Version::HTTP_11 || lists("keep-alive"))
            // Both framings at once (RFC 9112 §6.3): the body is read as chunked, and the
            // connection is not trusted with another request.
            && !(named.transfer_encoding && named.content_length);
        let framing = framing(&headers, named, status, version, sent)?;
        let mut res = http::Response::new(());
        *res.status_mut() = status;
        *res.version_mut() = version;
        *res.headers_mut() = headers;
        if let Some(reason) = reason.and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok()) {
            res.extensions_mut().insert(reason);
        }
        return Ok(Some((Head { res, keep_alive }, framing)));
    }
}

/// Which of the headers that decide a response's framing and the connection's reuse it has,
/// noted while its header map is built: most responses have no `Connection` and no
/// `Transfer-Encoding`, and then the map is not searched for them.
#[derive(Debug, Default, Clone, Copy)]
struct Named {
    connection: bool,
    transfer_encoding: bool,
    content_length: bool,
}

/// The headers of a head, their values sharing its bytes.
fn header_map(head: &Bytes, spans: &[Span]) -> io::Result<(HeaderMap, Named)> {
    let mut map = HeaderMap::with_capacity(spans.len());
    let mut named = Named::default();
    for &(name_at, name_len, value_at, value_len) in spans {
        let name = &head[name_at as usize..(name_at + name_len) as usize];
        let name = HeaderName::from_bytes(name).map_err(|_| invalid("invalid response header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_at as usize..(value_at + value_len) as usize))
            .map_err(|_| invalid("invalid response header value"))?;
        named.connection |= name == header::CONNECTION;
        named.transfer_encoding |= name == header::TRANSFER_ENCODING;
        named.content_length |= name == header::CONTENT_LENGTH;
        map.append(name, value);
    }
    Ok((map, named))
}

/// How a response's body is delimited (RFC 9112 §6.3).
fn framing(headers: &HeaderMap, named: Named, status: StatusCode, version: Version, sent: Sent) -> io::Result<Framing> {
    if sent.head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Length(0));
    }
    if named.transfer_encoding {
        // RFC 9112 §6.1: HTTP/1.0 has no transfer codings; such framing cannot be trusted.
        if version == Version::HTTP_10 {
            return Err(invalid("HTTP/1.0 response with Transfer-Encoding"));
        }
        let chunked = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        return Ok(if chunked { Framing::Chunked(Chunk::Size) } else { Framing::Close });
    }
    if !named.content_length {
        return Ok(Framing::Close);
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.to_str().unwrap_or("x").split(',') {
            let part = part.trim();
            let n = (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u64>().ok())
                .flatten()
                .filter(|n| length.is_none_or(|l| l == *n))
                .ok_or_else(|| invalid("invalid Content-Length"))?;
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::Close, Framing::Length))
}

/// Where a response body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes to go.
    Length(u64),
    /// Chunked transfer coding.
    Chunked(Chunk),
    /// Until the end of the connection.
    Close,
    /// Read to its end (or failed).
    Done,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// This many bytes of a chunk's data to go.
    Data(u64),
    /// Before the line break that ends a chunk's data.
    DataEnd,
    /// After the last chunk: trailers, then an empty line.
    Trailers,
}

/// A response body read from its connection, which goes back to the pool once the body has
/// ended and is dropped when the body is abandoned early (unread bytes would be left on it).
pub(crate) struct WireBody {
    conn: Option<Box<Conn>>,
    framing: Framing,
    reusable: bool,
    pool: Weak<Inner>,
}

impl WireBody {
    /// The body has ended: the connection goes back when it can be used again.
    fn end(&mut self) {
        self.framing = Framing::Done;
        if let Some(mut conn) = self.conn.take()
            && self.reusable
            && conn.rbuf.is_empty()
            && let Some(pool) = self.pool.upgrade()
        {
            conn.reset();
            pool.checkin_wire(conn);
        }
    }

    fn fail(&mut self, error: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.framing = Framing::Done;
        self.conn = None;
        Poll::Ready(Some(Err(error.into())))
    }

    /// Up to `n` bytes of data, reading when none are buffered; `None` means the connection ended.
    fn poll_data(&mut self, cx: &mut Context<'_>, n: u64) -> Poll<io::Result<Option<Bytes>>> {
        let Some(conn) = self.conn.as_mut() else { return Poll::Ready(Err(io::Error::other("no connection"))) };
        if conn.rbuf.is_empty() && ready!(conn.poll_fill(cx))? == 0 {
            return Poll::Ready(Ok(None));
        }
        let take = usize::try_from(n).unwrap_or(usize::MAX).min(conn.rbuf.len());
        Poll::Ready(Ok(Some(conn.rbuf.split_to(take).freeze())))
    }
}

fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before the response body ended")
}

fn invalid(why: impl Into<BoxError>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

impl hyper::body::Body for WireBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match this.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(0) => {
                    this.end();
                    return Poll::Ready(None);
                }
                Framing::Length(n) => {
                    let data = match ready!(this.poll_data(cx, n)) {
                        Ok(Some(data)) => data,
                        Ok(None) => return this.fail(truncated()),
                        Err(e) => return this.fail(e),
                    };
                    let left = n - data.len() as u64;
                    this.framing = Framing::Length(left);
                    // hyper stops polling a body that says it has ended.
                    if left == 0 {
                        this.end();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Close => match ready!(this.poll_data(cx, u64::MAX)) {
                    Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(None) => {
                        this.reusable = false;
                        this.end();
                        return Poll::Ready(None);
                    }
                    Err(e) => return this.fail(e),
                },
                Framing::Chunked(Chunk::Data(n)) => {
                    let data = match ready!(this.poll_data(cx, n)) {
                        Ok(Some(data)) => data,
                        Ok(None) => return this.fail(truncated()),
                        Err(e) => return this.fail(e),
                    };
                    let left = n - data.len() as u64;
                    this.framing = Framing::Chunked(if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) });
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked(chunk) => {
                    let Some(conn) = this.conn.as_mut() else { return this.fail("no connection") };
                    match step(&mut conn.rbuf, chunk) {
                        Ok(Step::Next(next)) => this.framing = Framing::Chunked(next),
                        Ok(Step::End(trailers)) => {
                            this.end();
                            return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                        }
                        Ok(Step::More(limit)) => {
                            if conn.rbuf.len() >= limit {
                                return this.fail(invalid("chunk line or trailers too long"));
                            }
                            match ready!(conn.poll_fill(cx)) {
                                Ok(0) => return this.fail(truncated()),
                                Ok(_) => {}
                                Err(e) => return this.fail(e),
                            }
                        }
                        Err(e) => return this.fail(e),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for WireBody {
    fn drop(&mut self) {
        // hyper never polls a body that is empty from the start (a 204, a HEAD response), so
        // its connection goes back from here. Any other unfinished body takes its connection
        // along: what is left of it would be read as the next response.
        if self.framing == Framing::Length(0) {
            self.end();
        }
    }
}

/// What the chunked framing read off the buffer.
#[derive(Debug, PartialEq)]
enum Step {
    /// Moved on.
    Next(Chunk),
    /// The body ended, with these trailers.
    End(Option<HeaderMap>),
    /// More bytes are needed; an error if the buffer already holds this many.
    More(usize),
}

/// Reads a chunk-size line, a chunk's closing line break or the trailer section off `buf`.
fn step(buf: &mut BytesMut, chunk: Chunk) -> io::Result<Step> {
    match chunk {
        Chunk::Size => {
            let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else { return Ok(Step::More(MAX_CHUNK_LINE)) };
            let line = &buf[..eol];
            if eol > MAX_CHUNK_LINE || line.iter().any(|&b| b == b'\r' || b == b'\n') {
                return Err(invalid("invalid chunk size line"));
            }
            // The size, then maybe whitespace, then maybe `;extensions`, which are ignored.
            let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
            let mut rest = &line[digits..];
            while let [b' ' | b'\t', tail @ ..] = rest {
                rest = tail;
            }
            if digits == 0 || !(rest.is_empty() || rest[0] == b';') {
                return Err(invalid("invalid chunk size"));
            }
            let size = line[..digits].iter().try_fold(0u64, |n, &d| {
                let d = u64::from((d as char).to_digit(16).unwrap_or(0));
                n.checked_mul(16).map(|n| n + d)
            });
            let size = size.ok_or_else(|| invalid("chunk size too large"))?;
            buf.advance(eol + 2);
            Ok(Step::Next(if size == 0 { Chunk::Trailers } else { Chunk::Data(size) }))
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Ok(Step::More(2));
            }
            if &buf[..2] != b"\r\n" {
                return Err(invalid("chunk data not followed by a line break"));
            }
            buf.advance(2);
            Ok(Step::Next(Chunk::Size))
        }
        Chunk::Trailers => {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let (len, map) = match httparse::parse_headers(buf, &mut headers) {
                Ok(httparse::Status::Complete((len, _))) if len > MAX_TRAILERS => {
                    return Err(invalid("trailers too large"));
                }
                Ok(httparse::Status::Complete((len, headers))) => {
                    let mut map = HeaderMap::with_capacity(headers.len());
                    for h in headers {
                        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| invalid("invalid trailer"))?;
                        let value = HeaderValue::from_bytes(h.value).map_err(|_| invalid("invalid trailer"))?;
                        map.append(name, value);
                    }
                    (len, map)
                }
                Ok(httparse::Status::Partial) => return Ok(Step::More(MAX_TRAILERS)),
                Err(_) => return Err(invalid("invalid trailers")),
            };
            buf.advance(len);
            Ok(Step::End((!map.is_empty()).then_some(map)))
        }
        Chunk::Data(_) => Err(invalid("chunk data is read as data")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: Sent = Sent { head: false, keep_alive: true };

    fn parse(text: &str, sent: Sent) -> io::Result<Option<(Head, Framing)>> {
        parse_head(&mut BytesMut::from(text), &mut Vec::new(), sent)
    }

    #[test]
    fn response_heads_decide_the_framing_and_reuse() {
        let (head, framing) =
            parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello", GET).unwrap().unwrap();
        assert_eq!((head.res.status(), framing, head.keep_alive), (StatusCode::OK, Framing::Length(5), true));
        assert_eq!(head.res.headers()["x-a"], "b");
        let (_, framing) = parse("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", GET).unwrap().unwrap();
        assert_eq!(framing, Framing::Length(5));
        let (_, framing) =
            parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n", GET)
                .unwrap()
                .unwrap();
        assert_eq!(framing, Framing::Chunked(Chunk::Size));
        let (_, framing) = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", GET).unwrap().unwrap();
        assert_eq!(framing, Framing::Close);
        // Neither framing header: the body ends with the connection.
        let (head, framing) = parse("HTTP/1.1 200 OK\r\nX-A: b\r\n\r\n", GET).unwrap().unwrap();
        assert_eq!((framing, head.keep_alive), (Framing::Close, true));
        let (head, framing) = parse("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", GET).unwrap().unwrap();
        assert_eq!((framing, head.keep_alive), (Framing::Close, false));
        let (head, _) = parse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", GET).unwrap().unwrap();
        assert!(!head.keep_alive);
        let (head, _) =
            parse("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", GET).unwrap().unwrap();
        assert!(head.keep_alive);
        let (head, _) = parse("HTTP/1.0 200 OK\r\nConnection: close, keep-alive\r\nContent-Length: 0\r\n\r\n", GET)
            .unwrap()
            .unwrap();
        assert!(!head.keep_alive);
        // Both framings: read as chunked, but the connection is not kept.
        let (head, framing) =
            parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", GET).unwrap().unwrap();
        assert_eq!((framing, head.keep_alive), (Framing::Chunked(Chunk::Size), false));
        // The upstream's own reason phrase is kept; a standard one needs no extension.
        let (head, _) = parse("HTTP/1.1 200 Fine Thanks\r\nContent-Length: 0\r\n\r\n", GET).unwrap().unwrap();
        let reason = head.res.extensions().get::<hyper::ext::ReasonPhrase>().map(|r| r.as_bytes().to_vec());
        assert_eq!(reason.as_deref(), Some(&b"Fine Thanks"[..]));
        let (head, _) = parse("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", GET).unwrap().unwrap();
        assert!(head.res.extensions().get::<hyper::ext::ReasonPhrase>().is_none());
        // Bodiless responses are framed before their headers are looked at, as by hyper.
        let (_, framing) =
            parse("HTTP/1.0 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n", GET).unwrap().unwrap();
        assert_eq!(framing, Framing::Length(0));
        for (status, sent) in
            [("204 No Content", GET), ("304 Not Modified", GET), ("200 OK", Sent { head: true, ..GET })]
        {
            let (_, framing) =
                parse(&format!("HTTP/1.1 {status}\r\nContent-Length: 9\r\n\r\n"), sent).unwrap().unwrap();
            assert_eq!(framing, Framing::Length(0), "{status}");
        }
        // Interim responses are skipped.
        let (head, _) = parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", GET)
            .unwrap()
            .unwrap();
        assert_eq!(head.res.status(), StatusCode::CREATED);
        assert!(parse("HTTP/1.1 200 OK\r\nContent-Le", GET).unwrap().is_none());
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert!(parse(bad, GET).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn request_heads_are_written_as_given() {
        let req = http::Request::post("/a?b=1")
            .header(header::HOST, "web:80")
            .header("x-multi", "1")
            .header("x-multi", "2")
            .header(header::CONNECTION, "Close")
            .body(crate::http::full(""))
            .unwrap();
        let mut out = Vec::new();
        let sent = encode(&req, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a?b=1 HTTP/1.1\r\nhost: web:80\r\nx-multi: 1\r\nx-multi: 2\r\nconnection: Close\r\n\r\n"
        );
        assert!(!sent.keep_alive && !sent.head);
        assert!(can_send(&req));
        // Without a `Connection` header the connection is kept.
        let plain = http::Request::head("/").header(header::HOST, "web").body(crate::http::full("")).unwrap();
        let sent = encode(&plain, &mut Vec::new());
        assert!(sent.keep_alive && sent.head);
        let streaming =
            http::Request::post("/").body(Body::new(http_body_util::StreamBody::new(futures::stream::empty::<
                Result<Frame<Bytes>, std::convert::Infallible>,
            >())));
        assert!(!can_send(&streaming.unwrap()));
        let upgrade = http::Request::get("/").header(header::UPGRADE, "websocket").body(crate::http::full(""));
        assert!(!can_send(&upgrade.unwrap()));
    }

    fn chunks(text: &[u8]) -> io::Result<(Vec<Bytes>, Option<HeaderMap>, usize)> {
        let mut buf = BytesMut::from(text);
        let (mut data, mut chunk) = (Vec::new(), Chunk::Size);
        loop {
            match chunk {
                Chunk::Data(n) => {
                    let take = (n as usize).min(buf.len());
                    if take == 0 {
                        return Err(truncated());
                    }
                    data.push(buf.split_to(take).freeze());
                    chunk = if take as u64 == n { Chunk::DataEnd } else { Chunk::Data(n - take as u64) };
                }
                _ => match step(&mut buf, chunk)? {
                    Step::Next(next) => chunk = next,
                    Step::End(trailers) => return Ok((data, trailers, buf.len())),
                    Step::More(_) => return Err(truncated()),
                },
            }
        }
    }

    #[test]
    fn chunked_bodies_are_decoded_with_their_trailers() {
        let (data, trailers, left) = chunks(b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\n\r\n").unwrap();
        assert_eq!(data, [Bytes::from("hello"), Bytes::from("!")]);
        assert!(trailers.is_none());
        assert_eq!(left, 0);
        let (data, trailers, _) = chunks(b"A\r\n0123456789\r\n0\r\ngrpc-status: 0\r\nx: y\r\n\r\n").unwrap();
        assert_eq!(data, [Bytes::from("0123456789")]);
        let trailers = trailers.unwrap();
        assert_eq!(
            (&trailers["grpc-status"], &trailers["x"]),
            (&HeaderValue::from_static("0"), &HeaderValue::from_static("y"))
        );
        let (data, _, _) = chunks(b"0000000000000000000005 \t;a=b\r\nhello\r\n0\r\n\r\n").unwrap();
        assert_eq!(data, [Bytes::from("hello")]);
        for bad in [
            &b"x\r\n"[..],
            b"5\r\nhelloXX",
            b"-1\r\n",
            b"11111111111111111\r\n",
            b"5 6\r\nhello\r\n",
            b"5 junk\r\nhello\r\n",
            b"5;a\nb\r\nhello\r\n",
            b"5\x0b\r\nhello\r\n",
            b"0\r\nbad trailer\r\n\r\n",
        ] {
            assert!(chunks(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // Lines and trailer sections beyond their limits are refused, complete or not.
        let long_line = format!("5;{}\r\n", "x".repeat(MAX_CHUNK_LINE));
        assert!(step(&mut BytesMut::from(long_line.as_str()), Chunk::Size).is_err());
        let long_trailers = format!("x: {}\r\n\r\n", "y".repeat(MAX_TRAILERS));
        assert!(step(&mut BytesMut::from(long_trailers.as_str()), Chunk::Trailers).is_err());
        assert_eq!(step(&mut BytesMut::from("x: y\r\n"), Chunk::Trailers).unwrap(), Step::More(MAX_TRAILERS));
        // An incomplete size line waits for more.
        assert_eq!(step(&mut BytesMut::from("1f"), Chunk::Size).unwrap(), Step::More(MAX_CHUNK_LINE));
    }
}

//! A lean HTTP/1.1 keep-alive client and backend for the one-core throughput rounds.
//!
//! In those rounds the load generator and the backend share CPU 0 while the proxy under test has
//! CPU 1. Built on hyper, the two cost about as much per request as a proxy does, so they, not the
//! proxy, set the ceiling: in session 13 "direct" reached 63–69k req/s and both proxies' best rounds
//! came within 2k of it, below 100 % CPU. These two write canned bytes and parse only message
//! heads (httparse), which leaves the proxy as what saturates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the backend answers to every HTTP/1.1 request: what hyper's server sends for `ok`.
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ndate: Sat, 28 Nov 2026 09:00:00 GMT\r\n\r\nok";

/// Largest message head either side accepts; a connection sending a larger one is closed.
const BUF: usize = 8192;

/// Serves one HTTP/1.1 connection whose requests carry no body: answers each complete request
/// head with [`RESPONSE`], pipelined ones with one write. Returns when the peer closes, after
/// answering a request that asks to close (`Connection: close`, HTTP/1.0), or when it sends
/// something that is not such a request.
pub async fn serve_h1(mut stream: TcpStream) {
    let (mut buf, mut filled) = (vec![0u8; BUF], 0);
    let mut out = Vec::with_capacity(RESPONSE.len());
    loop {
        let Ok(n) = stream.read(&mut buf[filled..]).await else { return };
        if n == 0 {
            return;
        }
        filled += n;
        let mut used = 0;
        out.clear();
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf[used..filled]) {
                Ok(httparse::Status::Complete(len)) => {
                    let has_body = req.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("transfer-encoding")
                            || (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
                    });
                    if has_body {
                        return;
                    }
                    let close = req.version == Some(0)
                        || req.headers.iter().any(|h| {
                            h.name.eq_ignore_ascii_case("connection")
                                && h.value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
                        });
                    used += len;
                    out.extend_from_slice(RESPONSE);
                    if close {
                        // The last answer on this connection (RFC 9112 §9.6).
                        let _ = stream.write_all(&out).await;
                        return;
                    }
                }
                Ok(httparse::Status::Partial) => break,
                Err(_) => return,
            }
        }
        buf.copy_within(used..filled, 0);
        filled -= used;
        if filled == BUF || (!out.is_empty() && stream.write_all(&out).await.is_err()) {
            return;
        }
    }
}

/// Whether a new connection opens with the HTTP/2 preface (`PRI * HTTP/2.0`), looking at its
/// first four bytes without taking them; false if it closes first.
pub async fn opens_with_h2_preface(stream: &TcpStream) -> bool {
    let mut head = [0u8; 4];
    loop {
        match stream.peek(&mut head).await {
            Ok(n) if n >= head.len() => return &head == b"PRI ",
            Ok(0) | Err(_) => return false,
            // Part of the first segment: wait for the rest rather than spin on it.
            Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

/// One keep-alive connection of the closed loop.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    filled: usize,
}

impl Conn {
    async fn open(target: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(target).await?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: vec![0u8; BUF], filled: 0 })
    }

    /// Sends `request` and reads one response. A status other than 2xx or a malformed response
    /// is an error.
    async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<Outcome> {
        // A kept-alive connection the target closed in the meantime fails the write or the
        // read: the request was not answered, and goes again on a new connection.
        if self.stream.write_all(request).await.is_err() {
            return Ok(Outcome::Closed);
        }
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut res = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = res.parse(&self.buf[..self.filled])? {
                anyhow::ensure!(res.code.is_some_and(|c| (200..300).contains(&c)), "status {:?}", res.code);
                let header = |name: &str| res.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name));
                let body: usize = match header("content-length") {
                    Some(h) => std::str::from_utf8(h.value)?.trim().parse()?,
                    None => anyhow::bail!("a response without content-length"),
                };
                if self.filled >= head + body {
                    let close = res.version == Some(0)
                        || header("connection").is_some_and(|h| {
                            h.value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
                        });
                    self.buf.copy_within(head + body..self.filled, 0);
                    self.filled -= head + body;
                    return Ok(Outcome::Answered { keep_alive: !close });
                }
                anyhow::ensure!(head + body <= BUF, "a response of {} bytes", head + body);
            }
            anyhow::ensure!(self.filled < BUF, "a response head over {BUF} bytes");
            match self.stream.read(&mut self.buf[self.filled..]).await {
                Ok(0) | Err(_) => return Ok(Outcome::Closed),
                Ok(n) => self.filled += n,
            }
        }
    }
}

/// How one exchange ended, other than in an error.
enum Outcome {
    /// A response came; the connection may carry another request, or not.
    Answered { keep_alive: bool },
    /// The connection closed first: the request was not answered.
    Closed,
}

/// Closed loop: `connections` HTTP/1.1 keep-alive connections sending `GET /` back to back for
/// `duration`; returns how many requests were answered and over how long. A connection the
/// target closes is opened again; any other failure ends the run with an error.
pub async fn max_throughput(
    target: SocketAddr,
    duration: Duration,
    connections: usize,
) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let deadline = started + duration;
    let request: Arc<[u8]> = format!("GET / HTTP/1.1\r\nhost: {target}\r\n\r\n").into_bytes().into();
    let mut workers = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (mut conn, request) = (Conn::open(target).await?, request.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            // A connection closed before answering twice in a row is the target failing, not
            // a kept-alive connection it let go.
            let mut closed = 0;
            while Instant::now() < deadline {
                match conn.exchange(&request).await? {
                    Outcome::Answered { keep_alive } => {
                        n += 1;
                        closed = 0;
                        if !keep_alive {
                            conn = Conn::open(target).await?;
                        }
                    }
                    Outcome::Closed => {
                        closed += 1;
                        anyhow::ensure!(closed < 2, "{target} closed a new connection without answering");
                        conn = Conn::open(target).await?;
                    }
                }
            }
            anyhow::Ok(n)
        }));
    }
    let mut total = 0;
    for w in workers {
        total += w.await??;
    }
    Ok((total, started.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn backend() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve_h1(s));
            }
        });
        addr
    }

    #[tokio::test]
    async fn the_closed_loop_counts_answered_requests_against_the_backend() {
        let addr = backend().await;
        let (n, elapsed) = max_throughput(addr, Duration::from_millis(200), 4).await.unwrap();
        assert!(n > 100, "{n} requests");
        assert!(elapsed >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn pipelined_requests_get_one_answer_each_and_a_split_head_waits_for_its_end() {
        let addr = backend().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\nGET / HTTP/1.1\r\nhost: a\r\n\r\nGET / HT").await.unwrap();
        let mut got = vec![0u8; 2 * RESPONSE.len()];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [RESPONSE, RESPONSE].concat());
        s.write_all(b"TP/1.1\r\n\r\n").await.unwrap();
        let mut third = vec![0u8; RESPONSE.len()];
        s.read_exact(&mut third).await.unwrap();
        assert_eq!(third, RESPONSE);
    }

    #[tokio::test]
    async fn a_request_with_a_body_or_garbage_closes_the_connection() {
        let addr = backend().await;
        for bad in [&b"POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc"[..], b"\x16\x03\x01 not http\r\n\r\n"] {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(bad).await.unwrap();
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
        }
    }

    #[tokio::test]
    async fn a_response_that_closes_opens_a_new_connection_and_an_error_status_fails_the_run() {
        // A server answering one request per connection, then one answering 503.
        for (status, ok) in [("200 OK", true), ("503 Service Unavailable", false)] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let response = format!("HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
            let server = tokio::spawn(async move {
                let mut served = 0u64;
                while let Ok((mut s, _)) = listener.accept().await {
                    let mut buf = [0u8; 1024];
                    if s.read(&mut buf).await.unwrap_or(0) > 0 {
                        let _ = s.write_all(response.as_bytes()).await;
                        served += 1;
                    }
                }
                served
            });
            let run = max_throughput(addr, Duration::from_millis(100), 2).await;
            server.abort();
            match run {
                Ok((n, _)) => assert!(ok && n >= 2, "{n} requests"),
                Err(e) => assert!(!ok && e.to_string().contains("503"), "{e}"),
            }
        }
    }

    #[tokio::test]
    async fn requests_a_closing_connection_left_unanswered_are_not_counted() {
        // Answers three requests per connection with keep-alive, then reads a fourth and
        // closes without answering it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answered = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = answered.clone();
        let server = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    for _ in 0..3 {
                        if s.read(&mut buf).await.unwrap_or(0) == 0 || s.write_all(RESPONSE).await.is_err() {
                            return;
                        }
                        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    let _ = s.read(&mut buf).await;
                });
            }
        });
        let (n, _) = max_throughput(addr, Duration::from_millis(200), 2).await.unwrap();
        server.abort();
        assert!(n > 10, "{n} requests");
        assert_eq!(n, answered.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_target_that_closes_new_connections_unanswered_fails_the_run() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.read(&mut [0u8; 1024]).await;
            }
        });
        let err = max_throughput(addr, Duration::from_millis(200), 1).await.unwrap_err();
        server.abort();
        assert!(err.to_string().contains("without answering"), "{err}");
    }

    #[tokio::test]
    async fn the_backend_closes_after_a_request_that_asks_it_to() {
        let addr = backend().await;
        for request in [&b"GET / HTTP/1.1\r\nconnection: keep-alive, close\r\n\r\n"[..], b"GET / HTTP/1.0\r\n\r\n"] {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(request).await.unwrap();
            let mut all = Vec::new();
            s.read_to_end(&mut all).await.unwrap();
            assert_eq!(all, RESPONSE);
        }
    }
}

//! End-to-end: what `kapal proxy` says about the requests it serves — one JSON access log line
//! per request on stdout with `--access-log`, one DEBUG event per request inside its span on
//! stderr — and the HTTP/1.1 header count limit (100 by default).
//!
//! Each test runs the built binary in front of a small HTTP/1.1 backend, all on 127.0.0.1.

mod common;

use std::net::SocketAddr;

use common::proxy::{ProxyProcess, TIMEOUT, free_addrs};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running `kapal proxy` with two services: `app` in front of a backend, and `down` whose one
/// endpoint refuses connections.
struct Proxy {
    process: ProxyProcess,
    /// The listener of service `app`.
    app: SocketAddr,
    /// The listener of service `down`.
    down: SocketAddr,
}

impl Proxy {
    /// Starts the proxy with `extra` flags and `RUST_LOG` (unset: the default filter).
    async fn start(backend: SocketAddr, extra: &[&str], rust_log: Option<&str>) -> Proxy {
        let [app, down, refused] = free_addrs();
        let services = format!(
            "services:
  - name: app
    listen: '{app}'
    endpoints: [{{address: '{backend}'}}]
  - name: down
    listen: '{down}'
    endpoints: [{{address: '{refused}'}}]
"
        );
        let flags = [&["--drain-timeout", "1s"][..], extra].concat();
        Proxy { process: ProxyProcess::start(&services, &flags, rust_log).await, app, down }
    }

    /// Kills the proxy and returns everything it wrote: (stdout, stderr). Every line about a
    /// request is written before its response is sent, so nothing is lost by killing it.
    fn stop(&mut self) -> (String, String) {
        self.process.stop()
    }
}

/// An HTTP/1.1 backend answering every request with 200 `ok` and `x-filler-headers: N`, N the
/// number of `x-filler-*` headers the request arrived with.
async fn backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding the backend");
    let addr = listener.local_addr().expect("backend address");
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(serve_backend(conn));
        }
    });
    addr
}

/// Serves one keep-alive connection; the proxy sends no request bodies here.
async fn serve_backend(mut conn: TcpStream) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            let mut chunk = [0; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let fillers = head.lines().filter(|l| l.starts_with("x-filler-")).count();
        buf.drain(..end + 4);
        let response = format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-filler-headers: {fillers}\r\n\r\nok");
        if conn.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Sends `request` (which asks the server to close) on a new connection; returns the response.
async fn send(addr: SocketAddr, request: &str) -> String {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        s.write_all(request.as_bytes()).await.unwrap_or_else(|e| panic!("writing to {addr}: {e}"));
        let mut out = Vec::new();
        // A refusal may end in a reset after the response; what arrived before it counts.
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    tokio::time::timeout(TIMEOUT, exchange).await.unwrap_or_else(|_| panic!("no response from {addr} in {TIMEOUT:?}"))
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
}

/// A GET with `total` header fields: `Host`, `Connection` and `x-filler-*` ones.
fn get_with_headers(total: usize) -> String {
    let mut request = String::from("GET /many HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n");
    for i in 0..total - 2 {
        request.push_str(&format!("x-filler-{i}: {i}\r\n"));
    }
    request + "\r\n"
}

/// The status code of a response; 0 when there is no status line.
fn status(response: &str) -> u16 {
    response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

/// The per-request DEBUG events on `stderr` whose span is for a request to `path`:
/// `… request{… path=/x …}: kapal_mesh::http::observe: request status=200 duration_ms=…`.
fn request_events<'a>(stderr: &'a str, path: &str) -> Vec<&'a str> {
    let in_span = format!(" path={path} ");
    stderr.lines().filter(|l| l.contains(&in_span) && l.contains(": request status=")).collect()
}

/// The value of `name=` among the event's own fields (after the span and target).
fn event_field<'a>(event: &'a str, name: &str) -> Option<&'a str> {
    let (_, fields) = event.rsplit_once(": request ")?;
    fields.split_whitespace().find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
}

#[tokio::test]
async fn access_log_and_debug_log_record_each_request_once() {
    let mut proxy = Proxy::start(backend().await, &["--access-log"], Some("kapal_mesh=debug")).await;
    let ok = send(proxy.app, &get("/hello")).await;
    assert_eq!(status(&ok), 200, "{ok}");
    let failed = send(proxy.down, &get("/broken")).await;
    let failed_status = status(&failed);
    assert!(matches!(failed_status, 502 | 503), "a refused endpoint answered: {failed}");
    let (stdout, stderr) = proxy.stop();

    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("access log line is not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "one access log line per request:\n{stdout}");
    let entry = |path: &str| {
        let found = lines.iter().find(|l| l["path"] == path);
        found.unwrap_or_else(|| panic!("no access log line for {path}:\n{stdout}")).clone()
    };
    let hello = entry("/hello");
    for (field, want) in [
        ("method", json!("GET")),
        ("status", json!(200)),
        ("service", json!("app")),
        ("backend", json!("app")),
        ("direction", json!("outbound")),
        ("authority", json!("app.test")),
        ("error", json!(null)),
    ] {
        assert_eq!(hello[field], want, "{field} of {hello}");
    }
    let broken = entry("/broken");
    for (field, want) in [
        ("method", json!("GET")),
        ("status", json!(failed_status)),
        ("service", json!("down")),
        ("direction", json!("outbound")),
    ] {
        assert_eq!(broken[field], want, "{field} of {broken}");
    }
    assert!(broken["error"].as_str().is_some_and(|e| !e.is_empty()), "no error reason in {broken}");
    for line in [&hello, &broken] {
        assert!(line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "no duration in {line}");
    }

    for (path, service, code) in [("/hello", "app", 200), ("/broken", "down", failed_status)] {
        let events = request_events(&stderr, path);
        assert_eq!(events.len(), 1, "one request event for {path} on stderr:\n{stderr}");
        let event = events[0];
        assert!(event.contains(&format!(" service={service} ")), "the event is not in the request's span: {event}");
        assert_eq!(event_field(event, "status"), Some(code.to_string().as_str()), "{event}");
        assert!(event_field(event, "duration_ms").is_some_and(|d| d.parse::<f64>().is_ok()), "{event}");
    }
}

#[tokio::test]
async fn without_the_flags_the_proxy_logs_no_requests() {
    let mut proxy = Proxy::start(backend().await, &[], None).await;
    for path in ["/hello", "/again"] {
        let res = send(proxy.app, &get(path)).await;
        assert_eq!(status(&res), 200, "{res}");
    }
    let (stdout, stderr) = proxy.stop();
    assert!(stdout.is_empty(), "no access log without --access-log:\n{stdout}");
    // The capture works: the default filter shows the proxy starting, but no request.
    assert!(stderr.contains("proxy started"), "{stderr}");
    assert!(request_events(&stderr, "/hello").is_empty(), "request events are DEBUG:\n{stderr}");
}

#[tokio::test]
async fn more_request_headers_than_the_limit_are_refused() {
    let proxy = Proxy::start(backend().await, &[], None).await;
    for total in [99, 100] {
        let res = send(proxy.app, &get_with_headers(total)).await;
        assert_eq!(status(&res), 200, "{total} headers: {res}");
        let forwarded = format!("x-filler-headers: {}\r\n", total - 2);
        assert!(res.to_ascii_lowercase().contains(&forwarded), "not every header reached the backend: {res}");
    }
    let res = send(proxy.app, &get_with_headers(101)).await;
    let status_line = res.lines().next().unwrap_or_default();
    assert_eq!(status(&res), 431, "101 headers: {res}");
    assert!(status_line.contains("Header"), "the refusal does not name headers: {status_line}");
    // The refusal costs that connection only.
    let res = send(proxy.app, &get("/after")).await;
    assert_eq!(status(&res), 200, "{res}");
}

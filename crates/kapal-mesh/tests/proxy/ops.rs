//! Admin endpoints, config hot reload, protocol detection, limits and graceful drain.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use kapal_mesh::config::ProxyConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

#[tokio::test]
async fn admin_serves_metrics_health_and_config() {
    let b = ok_backend("b").await;
    let p = proxy(&format!("services: [{{name: web, listen: 127.0.0.1:0, endpoints: [{{address: '{}'}}]}}]\n", b.addr))
        .await;
    assert_eq!(get(&h1_client(), format!("{}/x", url(&p, "web").await)).await.status, StatusCode::OK);
    assert_eq!(admin(&p, "/live").await.status, StatusCode::OK);
    assert_eq!(admin(&p, "/ready").await.status, StatusCode::OK);
    let config = admin(&p, "/config").await;
    assert_eq!(ProxyConfig::from_json(&config.body).unwrap(), *p.config());
    let metrics = admin(&p, "/metrics").await.body;
    for want in [
        r#"kapal_proxy_requests_total{direction="outbound",service="web",route="default",backend="web",status_class="2xx",client_identity=""} 1"#,
        r#"kapal_proxy_request_duration_seconds_count{direction="outbound",service="web",route="default",backend="web"} 1"#,
        r#"kapal_proxy_tcp_connections_total{direction="outbound"} 1"#,
        r#"kapal_proxy_protocol_detections_total{direction="outbound",result="http"} 1"#,
    ] {
        assert!(metrics.contains(want), "missing {want} in\n{metrics}");
    }
    assert!(metrics.contains(r#"kapal_proxy_tcp_bytes_total{direction="outbound",result="read"}"#));
}

#[tokio::test]
async fn config_reload_under_load_fails_no_request_and_bad_configs_are_rejected() {
    let (a, b) = (ok_backend("a").await, ok_backend("b").await);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.yaml");
    let config = |backend: std::net::SocketAddr| {
        format!("{HEAD}services: [{{name: web, listen: '127.0.0.1:0', endpoints: [{{address: '{backend}'}}]}}]\n")
    };
    std::fs::write(&path, config(a.addr)).unwrap();
    let p = Arc::new(
        kapal_mesh::Proxy::start(ProxyConfig::from_yaml(&config(a.addr)).unwrap(), options(), None).await.unwrap(),
    );
    let watcher = tokio::spawn(p.clone().watch_config_file(path.clone(), Duration::from_millis(10)));
    let base = url(&p, "web").await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, base) = (stop.clone(), ok.clone(), failed.clone(), base.clone());
        load.push(tokio::spawn(async move {
            let client = h1_client();
            while !stop.load(Ordering::SeqCst) {
                match client.get(format!("{base}/").parse().unwrap()).await {
                    Ok(res) if res.status() == StatusCode::OK => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        }));
    }
    let wait_for = |addr: std::net::SocketAddr| {
        let p = p.clone();
        async move {
            for _ in 0..200 {
                if p.config().services[0].endpoints[0].address == addr {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("config with {addr} was not applied");
        }
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    std::fs::write(&path, config(b.addr)).unwrap();
    wait_for(b.addr).await;
    let b_before = b.hits();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(b.hits() > b_before, "traffic moved to the new backend");
    // Broken YAML, then a config that fails validation: both rejected, b keeps serving.
    std::fs::write(&path, "apiVersion: [").unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    std::fs::write(&path, format!("{HEAD}services: [{{name: web, endpoints: [{{address: '{}', weight: 1}}], routes: [{{backendRefs: [{{name: ghost}}]}}]}}]\n", a.addr)).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(p.config().services[0].endpoints[0].address, b.addr);
    std::fs::write(&path, config(a.addr)).unwrap();
    wait_for(a.addr).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.await.unwrap();
    }
    watcher.abort();
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    assert!(ok.load(Ordering::SeqCst) > 50);
    let metrics = admin(&p, "/metrics").await.body;
    assert!(metrics.contains(r#"kapal_proxy_config_reloads_total{direction="local",result="ok"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"kapal_proxy_config_reloads_total{direction="local",result="error"} 2"#), "{metrics}");
}

/// A connection's requests follow the config: the route a connection keeps while routing does
/// not depend on the request is dropped when a new config is applied.
#[tokio::test]
async fn a_kept_alive_connection_follows_each_reload() {
    let (a, b) = (ok_backend("a").await, ok_backend("b").await);
    let plain = |to: std::net::SocketAddr| {
        format!("{HEAD}services: [{{name: web, listen: '127.0.0.1:0', endpoints: [{{address: '{to}'}}]}}]\n")
    };
    // The rule adds a request header, so its route is decided per request.
    let filtered = format!(
        "{HEAD}services: [{{name: web, listen: '127.0.0.1:0', endpoints: [{{address: '{}'}}], routes: [{{backendRefs: \
         [{{name: other}}], filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-via, \
         value: rule}}]}}}}]}}]}}, {{name: other, endpoints: [{{address: '{}'}}]}}]\n",
        b.addr, a.addr
    );
    let p = kapal_mesh::Proxy::start(ProxyConfig::from_yaml(&plain(a.addr)).unwrap(), options(), None).await.unwrap();
    let stream = tokio::net::TcpStream::connect(p.outbound_addr("web").await.unwrap()).await.unwrap();
    let (mut conn, driver) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(driver);
    let mut ask = async |expected: &str, echo: Option<&str>| {
        conn.ready().await.unwrap();
        let req = http::Request::get("/").header("host", "web").body(http_body_util::Empty::<bytes::Bytes>::new());
        let res = conn.send_request(req.unwrap()).await.expect("the same connection serves every request");
        let header = |name: &str| res.headers().get(name).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(header("x-backend").as_deref(), Some(expected));
        assert_eq!(header("echo-x-via").as_deref(), echo);
    };
    ask("a", None).await;
    ask("a", None).await;
    p.reload(ProxyConfig::from_yaml(&plain(b.addr)).unwrap()).await.unwrap();
    ask("b", None).await;
    p.reload(ProxyConfig::from_yaml(&filtered).unwrap()).await.unwrap();
    ask("a", Some("rule")).await;
    ask("a", Some("rule")).await;
    p.reload(ProxyConfig::from_yaml(&plain(b.addr)).unwrap()).await.unwrap();
    ask("b", None).await;
}

#[tokio::test]
async fn reload_adds_and_removes_listeners() {
    let b = ok_backend("b").await;
    let p = proxy("services: []\n").await;
    assert!(p.outbound_addr("web").await.is_none());
    let cfg = format!("{HEAD}services: [{{name: web, listen: 127.0.0.1:0, endpoints: [{{address: '{}'}}]}}]\n", b.addr);
    p.reload(ProxyConfig::from_yaml(&cfg).unwrap()).await.unwrap();
    let addr = p.outbound_addr("web").await.expect("listener added");
    assert_eq!(get(&h1_client(), format!("http://{addr}/")).await.status, StatusCode::OK);
    p.reload(ProxyConfig::from_yaml(&format!("{HEAD}services: []\n")).unwrap()).await.unwrap();
    assert!(p.outbound_addr("web").await.is_none());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "removed listener still accepts");
}

#[tokio::test]
async fn server_speaks_first_protocols_do_not_stall() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(b"* OK mysql-ish greeting\r\n").await;
        }
    });
    // No protocol hint: the proxy has to detect, and the client says nothing first.
    let p = proxy(&format!("services: [{{name: db, listen: 127.0.0.1:0, endpoints: [{{address: '{app}'}}]}}]\n")).await;
    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(p.outbound_addr("db").await.unwrap()).await.unwrap();
    let mut greeting = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut greeting)).await.unwrap().unwrap();
    assert_eq!(&greeting, b"* OK");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(1), "{waited:?}");
    let metrics = admin(&p, "/metrics").await.body;
    assert!(
        metrics.contains(r#"kapal_proxy_protocol_detections_total{direction="outbound",result="timeout"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn oversized_and_slow_headers_are_refused() {
    let b = ok_backend("b").await;
    let yaml = format!(
        "{HEAD}services: [{{name: web, listen: 127.0.0.1:0, protocol: http1, endpoints: [{{address: '{}'}}]}}]\n",
        b.addr
    );
    let opts = kapal_mesh::ProxyOptions {
        header_read_timeout: Duration::from_millis(200),
        max_header_bytes: 8192,
        ..options()
    };
    let p = kapal_mesh::Proxy::start(ProxyConfig::from_yaml(&yaml).unwrap(), opts, None).await.unwrap();
    let addr = p.outbound_addr("web").await.unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let big = "a".repeat(20_000);
    let _ = s.write_all(format!("GET / HTTP/1.1\r\nHost: x\r\nx-big: {big}\r\n\r\n").as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    // Slowloris: headers never finish; the connection is closed after the read timeout.
    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(b.hits(), 0);
}

/// The header read timeout bounds the wait for a request head, not an answer: a slow response
/// and a body streamed with pauses longer than the timeout go through on a kept-alive HTTP/1.1
/// connection, which is closed once it has then waited for a head for the timeout. HTTP/2
/// connections are not closed for it.
#[tokio::test]
async fn the_header_read_timeout_spares_slow_answers_and_http2() {
    use futures::StreamExt;
    use http_body_util::{BodyExt, Empty, StreamBody};
    let backend = serve(|req: http::Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if req.uri().path() == "/quick" {
            return http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(b"ok")).boxed_unsync());
        }
        // Three chunks, 300 ms apart.
        let chunks = futures::stream::iter(0..3).then(|i| async move {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from(format!("{i}"))))
        });
        http::Response::new(StreamBody::new(chunks).boxed_unsync())
    })
    .await;
    let yaml = format!(
        "{HEAD}services: [{{name: web, listen: 127.0.0.1:0, protocol: http1, endpoints: [{{address: '{backend}'}}]}}]\n"
    );
    let opts = kapal_mesh::ProxyOptions { header_read_timeout: Duration::from_millis(200), ..options() };
    let p = kapal_mesh::Proxy::start(ProxyConfig::from_yaml(&yaml).unwrap(), opts, None).await.unwrap();
    let addr = p.outbound_addr("web").await.unwrap();
    let request =
        |path: &str| http::Request::get(path).header("host", "web").body(Empty::<bytes::Bytes>::new()).unwrap();

    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut h1, driver) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    let driver = tokio::spawn(driver);
    for path in ["/slow", "/stream"] {
        h1.ready().await.unwrap();
        let res = h1.send_request(request(path)).await.unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "012", "{path}");
    }
    // Now idle: closed after the timeout (at most one and a half).
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(2), driver).await.expect("idle connection closed").unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(190), "closed after {:?}", started.elapsed());

    // Slow headers after a first request on a kept-alive connection: closed as well.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /quick HTTP/1.1\r\nHost: web\r\n\r\n").await.unwrap();
    let mut seen = Vec::new();
    while !seen.ends_with(b"ok") {
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before the answer: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    s.write_all(b"GET /quick HTTP/1.1\r\nHo").await.unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await.expect("slow head cut off").unwrap();
    assert!(rest.is_empty() && started.elapsed() >= Duration::from_millis(190), "{:?}", started.elapsed());

    // HTTP/2, waiting longer than the timeout before its first request and between requests.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut h2, driver) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(driver);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let req = http::Request::get(format!("http://{addr}/")).body(Empty::<bytes::Bytes>::new()).unwrap();
        let res = h2.send_request(req).await.expect("the HTTP/2 connection is still open");
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "012");
    }
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let slow =
        backend("slow", Arc::new(|_, _| Reply { status: StatusCode::OK, delay: Duration::from_millis(200) })).await;
    let p =
        proxy(&format!("services: [{{name: web, listen: 127.0.0.1:0, endpoints: [{{address: '{}'}}]}}]\n", slow.addr))
            .await;
    let base = url(&p, "web").await;
    let h2_base = base.clone();
    let in_flight = tokio::spawn(async move { get(&h1_client(), format!("{base}/")).await });
    // An HTTP/2 stream in flight is drained as well.
    let h2_in_flight = tokio::spawn(async move { get(&h2_client(), format!("{h2_base}/")).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    p.shutdown(Duration::from_secs(5)).await;
    // The requests in flight completed; shutdown waited for them, not for the grace period.
    assert_eq!(in_flight.await.unwrap().status, StatusCode::OK);
    assert_eq!(h2_in_flight.await.unwrap().status, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(admin(&p, "/ready").await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(tokio::net::TcpStream::connect(p.outbound_addr("web").await.unwrap()).await.is_err());
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed() {
    let b = ok_backend("b").await;
    let yaml = format!(
        "{HEAD}services: [{{name: web, listen: 127.0.0.1:0, protocol: http1, endpoints: [{{address: '{}'}}]}}]\n",
        b.addr
    );
    let opts = kapal_mesh::ProxyOptions { max_connections: 2, ..options() };
    let p = kapal_mesh::Proxy::start(ProxyConfig::from_yaml(&yaml).unwrap(), opts, None).await.unwrap();
    let addr = p.outbound_addr("web").await.unwrap();
    let held =
        [tokio::net::TcpStream::connect(addr).await.unwrap(), tokio::net::TcpStream::connect(addr).await.unwrap()];
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), third.read_to_end(&mut out)).await.unwrap();
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    // Once a slot frees up, new connections are served again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(get(&h1_client(), format!("http://{addr}/")).await.status, StatusCode::OK);
}

/// Polls `/metrics` until `series` has the value `want`; fails with the last value seen.
async fn wait_for_series(p: &kapal_mesh::Proxy, series: &str, want: u64) {
    let value =
        |metrics: &str| metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse::<u64>().ok());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let seen = value(&admin(p, "/metrics").await.body);
        if seen == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{series} is {seen:?}, want {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn tcp_byte_counters_count_each_direction_once() {
    // Reads the client's whole stream, then answers with REPLY bytes and closes.
    const REPLY: usize = 70_001;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                s.read_to_end(&mut request).await.unwrap();
                s.write_all(&vec![b'r'; REPLY]).await.unwrap();
            });
        }
    });
    let p = proxy(&format!(
        "services:
  - {{name: raw, listen: 127.0.0.1:0, protocol: opaque, endpoints: [{{address: '{app}'}}]}}
  - {{name: sniffed, listen: 127.0.0.1:0, endpoints: [{{address: '{app}'}}]}}
"
    ))
    .await;
    let read = r#"kapal_proxy_tcp_bytes_total{direction="outbound",result="read"}"#;
    let write = r#"kapal_proxy_tcp_bytes_total{direction="outbound",result="write"}"#;
    let (mut sent, mut received) = (0, 0);
    // An opaque listener, and one that detects the protocol first: the bytes detection read are
    // replayed to the backend but counted once.
    for (service, n) in [("raw", 100_000), ("sniffed", 123_457)] {
        let mut s = tokio::net::TcpStream::connect(p.outbound_addr(service).await.unwrap()).await.unwrap();
        let request: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        s.write_all(&request).await.unwrap();
        s.shutdown().await.unwrap();
        let mut reply = Vec::new();
        within(&format!("reply through {service}"), s.read_to_end(&mut reply)).await.unwrap();
        assert_eq!(reply.len(), REPLY, "{service}");
        drop(s);
        (sent, received) = (sent + n as u64, received + REPLY as u64);
        wait_for_series(&p, read, sent).await;
        wait_for_series(&p, write, received).await;
    }
}

//! Routing, traffic split, errors and protocols.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

#[tokio::test]
async fn traffic_split_90_10_over_1000_requests() {
    let (a, b) = (ok_backend("a").await, ok_backend("b").await);
    let p = proxy(&format!(
        "services:
  - name: web
    listen: 127.0.0.1:0
    protocol: http1
    routes:
      - backendRefs: [{{name: web-a, weight: 90}}, {{name: web-b, weight: 10}}]
  - {{name: web-a, endpoints: [{{address: '{}'}}]}}
  - {{name: web-b, endpoints: [{{address: '{}'}}]}}
",
        a.addr, b.addr
    ))
    .await;
    let (client, base) = (h1_client(), url(&p, "web").await);
    let mut to_a = 0;
    for _ in 0..1000 {
        let res = get(&client, format!("{base}/")).await;
        assert_eq!(res.status, StatusCode::OK);
        if res.header("x-backend") == Some("a") {
            to_a += 1;
        }
    }
    assert!((870..=930).contains(&to_a), "{to_a} of 1000 requests went to the 90% backend");
    assert_eq!(a.hits() + b.hits(), 1000);
}

#[tokio::test]
async fn routes_match_filter_and_redirect() {
    let (api, web) = (ok_backend("api").await, ok_backend("web").await);
    let p = proxy(&format!(
        "services:
  - name: front
    listen: 127.0.0.1:0
    routes:
      - name: api
        matches: [{{path: {{value: /api}}, headers: [{{name: x-user, value: alice}}]}}]
        filters:
          - type: RequestHeaderModifier
            requestHeaderModifier: {{set: [{{name: x-added, value: 'yes'}}], remove: [x-secret]}}
          - type: ResponseHeaderModifier
            responseHeaderModifier: {{add: [{{name: x-route, value: api}}]}}
        backendRefs: [{{name: api}}]
      - name: old
        matches: [{{path: {{type: Exact, value: /old}}}}]
        filters: [{{type: RequestRedirect, requestRedirect: {{path: /new, statusCode: 301}}}}]
      - name: web
        matches: [{{path: {{value: /web}}}}]
        backendRefs: [{{name: web}}]
  - {{name: api, endpoints: [{{address: '{}'}}]}}
  - {{name: web, endpoints: [{{address: '{}'}}]}}
",
        api.addr, web.addr
    ))
    .await;
    let (client, base) = (h1_client(), url(&p, "front").await);
    let req = Request::get(format!("{base}/api/x"))
        .header("x-user", "alice")
        .header("x-secret", "s3cret")
        .body(Full::default())
        .unwrap();
    let res = send(&client, req).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header("x-backend"), Some("api"));
    assert_eq!(res.header("echo-x-added"), Some("yes"));
    assert_eq!(res.header("echo-x-secret"), None);
    assert_eq!(res.header("x-route"), Some("api"));

    // Without the header the api rule does not match, and nothing else does: 404.
    let res = get(&client, format!("{base}/api/x")).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert_eq!(res.header("x-kapal-error"), Some("no-route"));

    let res = get(&client, format!("{base}/old")).await;
    assert_eq!(res.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(res.header("location"), Some(format!("{base}/new").as_str()));

    let res = get(&client, format!("{base}/web/page")).await;
    assert_eq!(res.header("x-backend"), Some("web"));
    assert_eq!((api.hits(), web.hits()), (1, 1));
}

#[tokio::test]
async fn upstream_failures_become_502_503_504() {
    let slow = backend("slow", Arc::new(|_, _| Reply { status: StatusCode::OK, delay: Duration::from_secs(5) })).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let p = proxy(&format!(
        "services:
  - name: refused
    listen: 127.0.0.1:0
    endpoints: [{{address: '{closed}'}}]
  - name: empty
    listen: 127.0.0.1:0
  - name: slow
    listen: 127.0.0.1:0
    endpoints: [{{address: '{}'}}]
    routes: [{{timeouts: {{request: 100ms}}}}]
",
        slow.addr
    ))
    .await;
    let client = h1_client();
    let res = get(&client, format!("{}/", url(&p, "refused").await)).await;
    assert_eq!((res.status, res.header("x-kapal-error")), (StatusCode::BAD_GATEWAY, Some("connect-failed")));
    let res = get(&client, format!("{}/", url(&p, "empty").await)).await;
    assert_eq!((res.status, res.header("x-kapal-error")), (StatusCode::SERVICE_UNAVAILABLE, Some("no-endpoints")));
    let started = std::time::Instant::now();
    let res = get(&client, format!("{}/", url(&p, "slow").await)).await;
    assert_eq!((res.status, res.header("x-kapal-error")), (StatusCode::GATEWAY_TIMEOUT, Some("request-timeout")));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn malformed_http_gets_400_and_a_closed_connection() {
    let b = ok_backend("b").await;
    let p = proxy(&format!(
        "services: [{{name: web, listen: 127.0.0.1:0, protocol: http1, endpoints: [{{address: '{}'}}]}}]\n",
        b.addr
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(p.outbound_addr("web").await.unwrap()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    // A Host that is no authority is refused by the proxy, not passed on.
    let mut s = tokio::net::TcpStream::connect(p.outbound_addr("web").await.unwrap()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: bad host\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out).to_lowercase();
    assert!(text.starts_with("http/1.1 400") && text.contains("x-kapal-error: bad-request"), "{text}");
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn http2_clients_and_backends() {
    let b = ok_backend("h2").await;
    let p = proxy(&format!(
        "services:
  - {{name: h2, listen: 127.0.0.1:0, protocol: http2, endpoints: [{{address: '{addr}'}}]}}
  - {{name: detect, listen: 127.0.0.1:0, endpoints: [{{address: '{addr}'}}]}}
",
        addr = b.addr
    ))
    .await;
    // HTTP/1.1 client, HTTP/2 upstream.
    let res = get(&h1_client(), format!("{}/", url(&p, "h2").await)).await;
    assert_eq!((res.status, res.body.as_str()), (StatusCode::OK, "h2:0"));
    // HTTP/2 prior-knowledge client through a detecting listener, with a body.
    let req = Request::post(format!("{}/", url(&p, "detect").await)).body(Full::new(Bytes::from("hello"))).unwrap();
    let res = send(&h2_client(), req).await;
    assert_eq!((res.status, res.body.as_str()), (StatusCode::OK, "h2:5"));
}

#[tokio::test]
async fn the_authority_moves_between_host_and_the_uri_when_the_version_changes() {
    // Sent on as HTTP/2, the client's `Host` becomes `:authority` and is not also sent as a header
    // (nginx refuses a request with both as a "duplicate host header"); sent on as HTTP/1.1,
    // `:authority` becomes `Host` (hyper's HTTP/1.1 client would do that too). An absolute URI's
    // authority wins over the client's `Host` either way (RFC 9112 §3.2.2), and a `Host` a
    // route's filter sets wins over both.
    let echo = serve(|req: Request<hyper::body::Incoming>| async move {
        let host = req.headers().get(http::header::HOST).map(|h| h.to_str().unwrap().to_string());
        let seen = format!("{:?} {:?} {:?}", req.version(), req.uri().authority().map(|a| a.to_string()), host);
        http::Response::new(http_body_util::BodyExt::boxed_unsync(Full::new(Bytes::from(seen))))
    })
    .await;
    let p = proxy(&format!(
        "services:
  - {{name: to-h2, listen: 127.0.0.1:0, protocol: http2, endpoints: [{{address: '{echo}'}}]}}
  - {{name: to-h1, listen: 127.0.0.1:0, protocol: http1, endpoints: [{{address: '{echo}'}}]}}
  - name: set-host
    listen: 127.0.0.1:0
    protocol: http1
    endpoints: [{{address: '{echo}'}}]
    routes:
      - filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: Host, value: c.example}}]}}}}]
        backendRefs: [{{name: set-host}}]
"
    ))
    .await;
    let req = Request::get(format!("{}/", url(&p, "to-h2").await))
        .header(http::header::HOST, "web.default:80")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = send(&h1_client(), req).await;
    assert_eq!(res.body, r#"HTTP/2.0 Some("web.default:80") None"#);
    // An HTTP/2 client whose `:authority` is not the listener's address.
    let stream = tokio::net::TcpStream::connect(p.outbound_addr("to-h1").await.unwrap()).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://web.default:80/").body(Full::new(Bytes::new())).unwrap();
    let res = sender.send_request(req).await.unwrap();
    let body = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
    assert_eq!(body, r#"HTTP/1.1 None Some("web.default:80")"#);
    for (service, seen) in [
        ("to-h1", r#"HTTP/1.1 None Some("a.example")"#),
        ("to-h2", r#"HTTP/2.0 Some("a.example") None"#),
        ("set-host", r#"HTTP/1.1 None Some("c.example")"#),
    ] {
        let mut s = tokio::net::TcpStream::connect(p.outbound_addr(service).await.unwrap()).await.unwrap();
        s.write_all(b"GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 200") && text.ends_with(seen), "{service}: {text}");
    }
}

#[tokio::test]
async fn grpc_trailers_pass_through() {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let svc = hyper::service::service_fn(|_req: http::Request<hyper::body::Incoming>| async {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            trailers.insert("grpc-message", "fine".parse().unwrap());
            let frames = vec![
                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi"))),
                Ok(Frame::trailers(trailers)),
            ];
            let mut res = http::Response::new(StreamBody::new(futures::stream::iter(frames)));
            res.headers_mut().insert("content-type", "application/grpc".parse().unwrap());
            Ok::<_, std::convert::Infallible>(res)
        });
        let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
            .await;
    });
    let p = proxy(&format!(
        "services: [{{name: g, listen: 127.0.0.1:0, protocol: grpc, endpoints: [{{address: '{addr}'}}]}}]\n"
    ))
    .await;
    let req = Request::post(format!("{}/pkg.Svc/Method", url(&p, "g").await))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x00")))
        .unwrap();
    let res = h2_client().request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let collected = res.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "fine");
    assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x02hi");
}

#[tokio::test]
async fn grpc_bidi_streams_are_not_buffered() {
    let app = grpc_echo().await;
    let p = proxy(&format!(
        "services: [{{name: g, listen: 127.0.0.1:0, protocol: grpc, endpoints: [{{address: '{app}'}}]}}]\n"
    ))
    .await;
    grpc_bidi_echo(&url(&p, "g").await).await;
}

#[tokio::test]
async fn http1_upgrades_are_tunnelled() {
    let addr = serve(|mut req: http::Request<hyper::body::Incoming>| async move {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let mut io = hyper_util::rt::TokioIo::new(on.await.unwrap());
            let mut buf = [0u8; 4];
            io.read_exact(&mut buf).await.unwrap();
            io.write_all(&buf).await.unwrap();
        });
        let mut res = http::Response::new(http_body_util::BodyExt::boxed_unsync(Full::<Bytes>::default()));
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        res.headers_mut().insert("connection", "upgrade".parse().unwrap());
        res.headers_mut().insert("upgrade", "echo".parse().unwrap());
        res
    })
    .await;
    let p =
        proxy(&format!("services: [{{name: ws, listen: 127.0.0.1:0, endpoints: [{{address: '{addr}'}}]}}]\n")).await;
    let mut s = tokio::net::TcpStream::connect(p.outbound_addr("ws").await.unwrap()).await.unwrap();
    s.write_all(b"GET /chat HTTP/1.1\r\nHost: ws\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut echo)).await.unwrap().unwrap();
    assert_eq!(&echo, b"ping");
}

#[tokio::test]
async fn w3c_trace_context_is_propagated() {
    let b = ok_backend("b").await;
    let p = proxy(&format!("services: [{{name: web, listen: 127.0.0.1:0, endpoints: [{{address: '{}'}}]}}]\n", b.addr))
        .await;
    let base = url(&p, "web").await;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let req = Request::get(format!("{base}/")).header("traceparent", incoming).body(Full::default()).unwrap();
    let seen = send(&h1_client(), req).await.header("echo-traceparent").unwrap().to_string();
    // Same trace, a new parent span (this proxy hop), same flags.
    assert!(seen.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{seen}");
    assert!(!seen.contains("00f067aa0ba902b7") && seen.ends_with("-01"), "{seen}");
    // Without one, the proxy starts a trace.
    let started = get(&h1_client(), format!("{base}/")).await.header("echo-traceparent").unwrap().to_string();
    assert_eq!(started.len(), 55, "{started}");
    assert!(!started.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736"));
}

/// A gRPC backend failing every other call with a trailers-only UNAVAILABLE.
async fn flaky_grpc_backend() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            let svc = hyper::service::service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    let mut res = http::Response::new(Full::<Bytes>::default());
                    res.headers_mut().insert("content-type", "application/grpc".parse().unwrap());
                    let status = if n.is_multiple_of(2) { "14" } else { "0" };
                    res.headers_mut().insert("grpc-status", status.parse().unwrap());
                    Ok::<_, std::convert::Infallible>(res)
                }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
            );
        }
    });
    (addr, calls)
}

fn grpc_call(url: String) -> Request<Full<Bytes>> {
    Request::post(url)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::default())
        .unwrap()
}

#[tokio::test]
async fn grpc_unavailable_is_retried_and_proxy_errors_speak_grpc() {
    let (addr, calls) = flaky_grpc_backend().await;
    let p = proxy(&format!(
        "services:
  - name: g
    listen: 127.0.0.1:0
    protocol: grpc
    endpoints: [{{address: '{addr}'}}]
    routes: [{{retry: {{attempts: 2, codes: [], grpcCodes: [14]}}}}]
  - {{name: none, listen: 127.0.0.1:0, protocol: grpc}}
"
    ))
    .await;
    let client = h2_client();
    for _ in 0..10 {
        let res = send(&client, grpc_call(format!("{}/pkg.Svc/M", url(&p, "g").await))).await;
        assert_eq!(res.header("grpc-status"), Some("0"));
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 20);
    // A gRPC client gets a gRPC status, not an HTTP error page.
    let res = send(&client, grpc_call(format!("{}/pkg.Svc/M", url(&p, "none").await))).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header("grpc-status"), Some("14"));
    assert_eq!(res.header("x-kapal-error"), Some("no-endpoints"));
}

/// A backend counting the TCP connections it accepted.
async fn counting_backend() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let svc = hyper::service::service_fn(|_req: http::Request<hyper::body::Incoming>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn upstream_connections_are_pooled_across_client_connections() {
    let (addr, accepted) = counting_backend().await;
    let p = proxy(&format!(
        "services:
  - {{name: h1, listen: 127.0.0.1:0, protocol: http1, endpoints: [{{address: '{addr}'}}]}}
  - {{name: h2, listen: 127.0.0.1:0, protocol: http2, endpoints: [{{address: '{addr}'}}]}}
"
    ))
    .await;
    for service in ["h1", "h2"] {
        let base = url(&p, service).await;
        // A new client (and so a new downstream connection) for every request.
        for _ in 0..3 {
            let client = if service == "h2" { h2_client() } else { h1_client() };
            let answer = get(&client, format!("{base}/")).await;
            assert_eq!((answer.status, answer.body.as_str()), (StatusCode::OK, "ok"));
        }
    }
    // One HTTP/1.1 connection reused three times, one HTTP/2 connection for all streams.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// `len hash trailer` of a request body, as [`chunked_request_bodies_arrive_whole`] checks it.
fn body_digest(body: &[u8], trailer: Option<&str>) -> String {
    use std::hash::Hasher;
    // SipHash with fixed keys: the same in the backend and in the test.
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write(body);
    format!("{} {:016x} {trailer:?}", body.len(), hasher.finish())
}

#[tokio::test]
async fn chunked_request_bodies_arrive_whole() {
    use http_body_util::BodyExt;
    // Answers with what arrived: the body's length and hash, its `x-checksum` trailer, and
    // whether it came chunked (no Content-Length).
    let app = serve(|req: Request<hyper::body::Incoming>| async move {
        let framing = match req.headers().get(http::header::CONTENT_LENGTH) {
            Some(len) => format!("content-length {len:?}"),
            None => "streamed".to_string(),
        };
        let collected = req.into_body().collect().await.expect("request body");
        let trailer = collected.trailers().and_then(|t| t.get("x-checksum")).map(|v| v.to_str().unwrap().to_string());
        let seen = format!("{framing} {}", body_digest(&collected.to_bytes(), trailer.as_deref()));
        http::Response::new(Full::new(Bytes::from(seen)).boxed_unsync())
    })
    .await;
    let p = proxy(&format!(
        "services:
  - {{name: to-h1, listen: 127.0.0.1:0, protocol: http1, endpoints: [{{address: '{app}'}}]}}
  - {{name: to-h2, listen: 127.0.0.1:0, protocol: http2, endpoints: [{{address: '{app}'}}]}}
  - {{name: detect, listen: 127.0.0.1:0, endpoints: [{{address: '{app}'}}]}}
"
    ))
    .await;
    // 200 KiB of bytes that do not repeat with any short period, in five uneven chunks.
    let mut state = 0x2545_f491_u32;
    let body: Vec<u8> = (0..200 * 1024)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        })
        .collect();
    let sizes = [1, 65_536, 30_000, 100_000, 200 * 1024 - 195_537];
    assert_eq!(sizes.iter().sum::<usize>(), body.len());
    let want = format!("streamed {}", body_digest(&body, Some("abc123")));
    for service in ["to-h1", "to-h2", "detect"] {
        let mut s = tokio::net::TcpStream::connect(p.outbound_addr(service).await.unwrap()).await.unwrap();
        let head = "POST /upload HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\
                    Connection: close\r\n\r\n";
        s.write_all(head.as_bytes()).await.unwrap();
        let mut at = 0;
        for size in sizes {
            s.write_all(format!("{size:x}\r\n").as_bytes()).await.unwrap();
            s.write_all(&body[at..at + size]).await.unwrap();
            s.write_all(b"\r\n").await.unwrap();
            s.flush().await.unwrap();
            at += size;
            // Each chunk on its own, not one write the proxy might read at once.
            tokio::task::yield_now().await;
        }
        s.write_all(b"0\r\nx-checksum: abc123\r\n\r\n").await.unwrap();
        let mut out = Vec::new();
        within(&format!("response through {service}"), s.read_to_end(&mut out)).await.unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 200"), "{service}: {text}");
        assert!(text.ends_with(&want), "{service}: the backend saw {text:?}, want {want:?}");
    }
}

#[tokio::test]
async fn an_upstream_reset_becomes_502_upstream_reset() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Reads each request head, then resets the connection without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(AtomicUsize::new(0));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                seen.fetch_add(1, Ordering::SeqCst);
                socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
                drop(s);
            });
        }
    });
    let p = proxy(&format!(
        "services: [{{name: web, listen: 127.0.0.1:0, protocol: http1, endpoints: [{{address: '{addr}'}}]}}]\n"
    ))
    .await;
    let (client, base) = (h1_client(), url(&p, "web").await);
    // A request without a body and one with a body of known length take different client paths.
    let requests = [
        Request::get(format!("{base}/")).body(Full::default()).unwrap(),
        Request::post(format!("{base}/")).body(Full::new(Bytes::from("payload"))).unwrap(),
    ];
    for (i, req) in requests.into_iter().enumerate() {
        let res = send(&client, req).await;
        assert_eq!((res.status, res.header("x-kapal-error")), (StatusCode::BAD_GATEWAY, Some("upstream-reset")), "{i}");
        // No retry policy: the request reached the endpoint once.
        assert_eq!(heads.load(Ordering::SeqCst), i + 1);
    }
}

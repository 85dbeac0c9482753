//! End-to-end: `kapal proxy` drains on SIGTERM. It stops accepting connections and fails
//! readiness at once, lets the request in flight finish, and then exits with status 0.
//!
//! The test runs the built binary in front of a small HTTP/1.1 backend, all on 127.0.0.1.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::proxy::{ProxyProcess, TIMEOUT, free_addrs, ready};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// A running `kapal proxy` with one service, `app`.
struct Proxy {
    process: ProxyProcess,
    /// The listener of service `app`.
    app: SocketAddr,
    admin: SocketAddr,
}

impl Proxy {
    /// Starts the proxy (draining for up to `drain`).
    async fn start(backend: SocketAddr, drain: &str) -> Proxy {
        let [app] = free_addrs();
        let services =
            format!("services:\n  - name: app\n    listen: '{app}'\n    endpoints: [{{address: '{backend}'}}]\n");
        let process = ProxyProcess::start(&services, &["--drain-timeout", drain], None).await;
        let admin = process.admin;
        Proxy { process, app, admin }
    }
}

/// An HTTP/1.1 backend that says on `arrived` when a request's head has arrived, and answers it
/// (200 `done`) only once `release` turns true.
async fn gated_backend(arrived: mpsc::UnboundedSender<()>, release: watch::Receiver<bool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding the backend");
    let addr = listener.local_addr().expect("backend address");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (arrived, mut release) = (arrived.clone(), release.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut chunk = [0; 4096];
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = arrived.send(());
                if release.wait_for(|open| *open).await.is_ok() {
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ndone").await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn sigterm_drains_the_request_in_flight_and_exits_0() {
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let (release, gate) = watch::channel(false);
    let backend = gated_backend(arrived_tx, gate).await;
    let mut proxy = Proxy::start(backend, "20s").await;

    // A keep-alive request, so that how the proxy ends the connection shows.
    let mut client = TcpStream::connect(proxy.app).await.expect("connecting to the proxy");
    client.write_all(b"GET /slow HTTP/1.1\r\nHost: app.test\r\n\r\n").await.expect("sending the request");
    let in_flight = tokio::spawn(async move {
        let mut out = Vec::new();
        let _ = client.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    });
    tokio::time::timeout(TIMEOUT, arrived.recv()).await.expect("the request reached the backend");

    proxy.process.terminate();
    // Draining: readiness fails and the listener is closed at once, while the request waits.
    let deadline = Instant::now() + TIMEOUT;
    while ready(proxy.admin).await != Some(503) {
        proxy.process.assert_running("while a request was in flight");
        assert!(Instant::now() < deadline, "/ready did not fail after SIGTERM:\n{}", proxy.process.read("stderr"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Well within the drain timeout, so that a listener left open fails here.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(proxy.app).await.is_ok() {
        assert!(Instant::now() < deadline, "the proxy still accepts connections after SIGTERM");
        proxy.process.assert_running("while a request was in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.process.assert_running("while a request was in flight");
    assert!(!in_flight.is_finished(), "the request in flight was cut off");

    release.send(true).expect("releasing the backend");
    let response = tokio::time::timeout(TIMEOUT, in_flight).await.expect("response after the release").unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("\r\n\r\ndone"), "{response}");
    // The client is told not to reuse the connection, which the proxy then closes.
    assert!(response.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "{response}");
    let status = proxy.process.exited().await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", proxy.process.read("stderr"));
    let stderr = proxy.process.read("stderr");
    assert!(stderr.contains("drained all connections"), "exited before its connections drained:\n{stderr}");
}

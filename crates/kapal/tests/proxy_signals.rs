//! End-to-end: `kapal proxy` drains on SIGTERM. It stops accepting connections and fails
//! readiness at once, lets the request in flight finish, and then exits with status 0.
//!
//! The test runs the built binary in front of a small HTTP/1.1 backend, all on 127.0.0.1.

use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// For anything the proxy does: a debug build on a busy machine can be slow.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A running `kapal proxy` with one service, `app`. Killed and reaped on drop, so also when an
/// assertion fails.
struct Proxy {
    child: Child,
    dir: tempfile::TempDir,
    /// The listener of service `app`.
    app: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// Starts the proxy (draining for up to `drain`) and waits until it is ready.
    async fn start(backend: SocketAddr, drain: &str) -> Proxy {
        let [app, admin] = free_addrs();
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("proxy.yaml");
        std::fs::write(
            &config,
            format!(
                "apiVersion: kapal.dev/v1alpha1
kind: ProxyConfig
services:
  - name: app
    listen: '{app}'
    endpoints: [{{address: '{backend}'}}]
"
            ),
        )
        .expect("writing the proxy config");
        let file = |name: &str| std::fs::File::create(dir.path().join(name)).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_kapal"))
            .arg("proxy")
            .arg("--config")
            .arg(&config)
            .args(["--admin", &admin.to_string(), "--drain-timeout", drain])
            .env_remove("RUST_LOG")
            .env_remove("KAPAL_PROXY_CONTROL_PLANE")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(file("stdout"))
            .stderr(file("stderr"))
            .spawn()
            .expect("starting kapal proxy");
        let mut proxy = Proxy { child, dir, app, admin };
        let deadline = Instant::now() + TIMEOUT;
        while ready(admin).await != Some(200) {
            proxy.assert_running("before it was ready");
            assert!(Instant::now() < deadline, "kapal proxy not ready after {TIMEOUT:?}:\n{}", proxy.stderr());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        proxy
    }

    fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("running kill");
        assert!(status.success(), "kill -TERM {}: {status}", self.child.id());
    }

    fn assert_running(&mut self, when: &str) {
        if let Some(status) = self.child.try_wait().expect("checking on kapal proxy") {
            panic!("kapal proxy exited ({status}) {when}:\n{}", self.stderr());
        }
    }

    /// Waits up to [`TIMEOUT`] for the process to exit on its own.
    async fn exited(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("checking on kapal proxy") {
                return status;
            }
            assert!(Instant::now() < deadline, "kapal proxy still running {TIMEOUT:?} later:\n{}", self.stderr());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_else(|e| format!("(no stderr: {e})"))
    }
}

/// Loopback addresses that were free a moment ago (bound together, so all different).
fn free_addrs<const N: usize>() -> [SocketAddr; N] {
    let listeners: Vec<_> = (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("binding :0")).collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local address"))
}

/// The status of the admin server's `/ready`; `None` when it does not answer.
async fn ready(admin: SocketAddr) -> Option<u16> {
    let check = async {
        let mut s = TcpStream::connect(admin).await.ok()?;
        s.write_all(b"GET /ready HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").await.ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        out.split(' ').nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(5), check).await.ok().flatten()
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

    proxy.terminate();
    // Draining: readiness fails and the listener is closed at once, while the request waits.
    let deadline = Instant::now() + TIMEOUT;
    while ready(proxy.admin).await != Some(503) {
        proxy.assert_running("while a request was in flight");
        assert!(Instant::now() < deadline, "/ready did not fail after SIGTERM:\n{}", proxy.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Well within the drain timeout, so that a listener left open fails here.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(proxy.app).await.is_ok() {
        assert!(Instant::now() < deadline, "the proxy still accepts connections after SIGTERM");
        proxy.assert_running("while a request was in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.assert_running("while a request was in flight");
    assert!(!in_flight.is_finished(), "the request in flight was cut off");

    release.send(true).expect("releasing the backend");
    let response = tokio::time::timeout(TIMEOUT, in_flight).await.expect("response after the release").unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("\r\n\r\ndone"), "{response}");
    // The client is told not to reuse the connection, which the proxy then closes.
    assert!(response.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "{response}");
    let status = proxy.exited().await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", proxy.stderr());
    let stderr = proxy.stderr();
    assert!(stderr.contains("drained all connections"), "exited before its connections drained:\n{stderr}");
}

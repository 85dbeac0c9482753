//! Running the built binary as `kapal proxy` for end-to-end tests of the sidecar.

use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// For anything the proxy does: a debug build on a busy machine can be slow.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A running `kapal proxy`, its stdout and stderr in files. Killed and reaped on drop, so also
/// when an assertion fails.
pub struct ProxyProcess {
    child: Child,
    dir: tempfile::TempDir,
    pub admin: SocketAddr,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ProxyProcess {
    /// Starts `kapal proxy --config` with `services` (the config's YAML after its header) and
    /// `flags`, `RUST_LOG` set to `rust_log` (unset: the default filter), and waits until its
    /// admin server says it is ready.
    pub async fn start(services: &str, flags: &[&str], rust_log: Option<&str>) -> ProxyProcess {
        let [admin] = free_addrs();
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("proxy.yaml");
        std::fs::write(&config, format!("apiVersion: kapal.dev/v1alpha1\nkind: ProxyConfig\n{services}"))
            .expect("writing the proxy config");
        let file = |name: &str| std::fs::File::create(dir.path().join(name)).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kapal"));
        cmd.arg("proxy")
            .arg("--config")
            .arg(&config)
            .args(["--admin", &admin.to_string()])
            .args(flags)
            .env_remove("RUST_LOG")
            .env_remove("KAPAL_PROXY_CONTROL_PLANE")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(file("stdout"))
            .stderr(file("stderr"));
        if let Some(filter) = rust_log {
            cmd.env("RUST_LOG", filter);
        }
        let child = cmd.spawn().expect("starting kapal proxy");
        let mut proxy = ProxyProcess { child, dir, admin };
        let deadline = Instant::now() + TIMEOUT;
        while ready(admin).await != Some(200) {
            proxy.assert_running("before it was ready");
            assert!(Instant::now() < deadline, "kapal proxy not ready after {TIMEOUT:?}:\n{}", proxy.read("stderr"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        proxy
    }

    /// Kills the proxy and returns everything it wrote: (stdout, stderr).
    pub fn stop(&mut self) -> (String, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.read("stdout"), self.read("stderr"))
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("running kill");
        assert!(status.success(), "kill -TERM {}: {status}", self.child.id());
    }

    pub fn assert_running(&mut self, when: &str) {
        if let Some(status) = self.child.try_wait().expect("checking on kapal proxy") {
            panic!("kapal proxy exited ({status}) {when}:\n{}", self.read("stderr"));
        }
    }

    /// Waits up to [`TIMEOUT`] for the process to exit on its own.
    pub async fn exited(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("checking on kapal proxy") {
                return status;
            }
            assert!(Instant::now() < deadline, "kapal proxy still running {TIMEOUT:?} later:\n{}", self.read("stderr"));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the proxy wrote to `stdout` or `stderr` so far.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_else(|e| format!("(no {name}: {e})"))
    }
}

/// Loopback addresses that were free a moment ago (bound together, so all different).
pub fn free_addrs<const N: usize>() -> [SocketAddr; N] {
    let listeners: Vec<_> = (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("binding :0")).collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local address"))
}

/// The status of the admin server's `/ready`; `None` when it does not answer.
pub async fn ready(admin: SocketAddr) -> Option<u16> {
    let check = async {
        let mut s = TcpStream::connect(admin).await.ok()?;
        s.write_all(b"GET /ready HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").await.ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        out.split(' ').nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(5), check).await.ok().flatten()
}

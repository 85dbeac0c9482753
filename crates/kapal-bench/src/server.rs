//! Running the `kapal` binary for a scenario: a server on a fresh data dir and free loopback
//! port, and simulated-node agents joined to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::{Client, Config};

/// A running `kapal server`, killed on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    agents: Vec<Child>,
}

impl Drop for Server {
    fn drop(&mut self) {
        for agent in &mut self.agents {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(16443)
}

/// Starts `kapal server <extra>` on an empty data dir; returns it and the time to `/readyz` 200.
pub async fn start(kapal: &Path, extra: &[&str]) -> anyhow::Result<(Server, Duration)> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let kubeconfig = dir.path().join("kubeconfig.yaml");
    let t0 = Instant::now();
    let child = Command::new(kapal)
        .args(["server", "--bind-address", "127.0.0.1", "--https-listen-port", &port.to_string()])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--write-kubeconfig")
        .arg(&kubeconfig)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let server = Server { child, port, dir, kubeconfig, agents: Vec::new() };
    let mut cfg = Config::new(format!("https://127.0.0.1:{port}").parse()?);
    cfg.accept_invalid_certs = true;
    let anon = Client::try_from(cfg)?;
    loop {
        let req = http::Request::get("/readyz").body(Vec::new())?;
        if anon.request_text(req).await.is_ok() {
            break;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            anyhow::bail!("kapal server did not become ready in 30 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok((server, t0.elapsed()))
}

impl Server {
    /// An admin client.
    pub async fn client(&self) -> anyhow::Result<Client> {
        for _ in 0..500 {
            if let Ok(yaml) = std::fs::read_to_string(&self.kubeconfig) {
                let kc = kube::config::Kubeconfig::from_yaml(&yaml)?;
                let cfg = Config::from_custom_kubeconfig(kc, &Default::default()).await?;
                return Ok(Client::try_from(cfg)?);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        anyhow::bail!("no kubeconfig on port {}", self.port)
    }

    /// Starts `kapal agent --simulate nodes` with node names `<prefix>-<i>`.
    pub fn simulate(&mut self, kapal: &Path, prefix: &str, nodes: usize) -> anyhow::Result<()> {
        let token = std::fs::read_to_string(self.dir.path().join("data/token"))?;
        let child = Command::new(kapal)
            .args(["agent", "--server", &format!("https://127.0.0.1:{}", self.port), "--token", token.trim()])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("agent-{prefix}")))
            .args(["--node-name", prefix, "--simulate", &nodes.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.agents.push(child);
        Ok(())
    }

    /// Runs kubectl against this server.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .env("KUBECONFIG", &self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            anyhow::bail!("kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

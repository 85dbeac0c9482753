//! A local single-member etcd for baselines (Debian package `etcd-server`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kapal_store::Store;
use kapal_store::etcd::{EtcdConfig, EtcdStore};

/// An etcd to measure against: one this run started (stopped on drop), or a given endpoint.
pub struct Etcd {
    pub endpoint: String,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(23790)
}

impl Etcd {
    /// Uses `endpoint`, or starts `/usr/bin/etcd` on free loopback ports.
    pub async fn start_or_use(endpoint: Option<&str>) -> anyhow::Result<Etcd> {
        if let Some(e) = endpoint {
            return Ok(Etcd { endpoint: e.to_string(), child: None, _dir: None });
        }
        anyhow::ensure!(
            Path::new("/usr/bin/etcd").exists(),
            "etcd is not installed (apt-get install etcd-server) and no --etcd given"
        );
        let dir = tempfile::tempdir()?;
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let child = Command::new("/usr/bin/etcd")
            .arg("--data-dir")
            .arg(dir.path().join("etcd"))
            .args(["--name", "bench", "--listen-client-urls", &endpoint, "--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-cluster", &format!("bench=http://127.0.0.1:{peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let etcd = Etcd { endpoint, child: Some(child), _dir: Some(dir) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(store) = etcd.store("/probe").await
                && store.get("/registry/probe").await.is_ok()
            {
                return Ok(etcd);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("etcd at {} did not start", etcd.endpoint)
    }

    /// A store on this etcd whose keys live under `prefix`.
    pub async fn store(&self, prefix: &str) -> anyhow::Result<Arc<dyn Store>> {
        let mut config = EtcdConfig::new(vec![self.endpoint.clone()]);
        config.prefix = prefix.to_string();
        Ok(Arc::new(EtcdStore::connect(config).await.map_err(|e| anyhow::anyhow!("{e}"))?))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

//! End-to-end harness: runs the built `kapal` binary and drives it with real kubectl.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod proxy;

/// The kubectl versions the e2e tests run with, when installed.
pub fn kubectls() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for v in ["1.27", "1.33"] {
        let p = PathBuf::from(format!("/usr/lib/google-cloud-sdk/bin/kubectl.{v}"));
        if p.exists() {
            out.push(p);
        }
    }
    if out.is_empty() {
        out.push(PathBuf::from("kubectl"));
    }
    out
}

/// A running `kapal server` in a temporary data dir on a free loopback port.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub kubeconfig: PathBuf,
    child: Child,
    extra: Vec<String>,
}

fn spawn_server(dir: &Path, port: u16, kubeconfig: &Path, extra: &[String]) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("server.log")).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_kapal"))
        .args(["server", "--bind-address", "127.0.0.1", "--https-listen-port", &port.to_string()])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--write-kubeconfig")
        .arg(kubeconfig)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting kapal server")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(16443)
}

impl Cluster {
    pub fn start() -> Cluster {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let kubeconfig = dir.path().join("kubeconfig.yaml");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = spawn_server(dir.path(), port, &kubeconfig, &extra);
        let cluster = Cluster { dir, port, kubeconfig, child, extra };
        cluster.wait_ready();
        cluster
    }

    /// A second server joining `other`'s cluster with its token (as HA servers on one etcd do),
    /// with its own data dir and port. It fetches the cluster's certificates from the store.
    pub fn start_sharing(other: &Cluster, extra: &[&str]) -> Cluster {
        let token = std::fs::read_to_string(other.dir.path().join("data/token")).expect("the first server's token");
        let mut args = vec!["--token", token.trim()];
        args.extend_from_slice(extra);
        Cluster::start_with(&args)
    }

    /// Kills the server with SIGKILL and starts a new one on the same data dir and port.
    pub fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_server(self.dir.path(), self.port, &self.kubeconfig, &self.extra);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.kubeconfig.exists() {
                let out = self.kubectl(&kubectls()[0], &["get", "--raw", "/readyz"]);
                if out.status.success() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("kapal server did not become ready; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs kubectl with this cluster's kubeconfig and a private cache dir.
    pub fn kubectl(&self, kubectl: &Path, args: &[&str]) -> Output {
        self.kubectl_stdin(kubectl, args, None)
    }

    pub fn kubectl_stdin(&self, kubectl: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        let cache =
            self.dir.path().join(format!("cache-{}", kubectl.file_name().and_then(|f| f.to_str()).unwrap_or("k")));
        let mut cmd = Command::new(kubectl);
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .arg("--cache-dir")
            .arg(&cache)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("running kubectl");
        if let Some(input) = stdin {
            use std::io::Write;
            if let Some(mut s) = child.stdin.take() {
                let _ = s.write_all(input.as_bytes());
            }
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs kubectl and returns stdout, failing the test with stderr when it fails.
    pub fn ok(&self, kubectl: &Path, args: &[&str]) -> String {
        self.ok_stdin(kubectl, args, None)
    }

    pub fn ok_stdin(&self, kubectl: &Path, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_stdin(kubectl, args, stdin);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{} {:?} failed:\nstdout: {stdout}\nstderr: {stderr}", kubectl.display(), args);
        stdout
    }

    /// Runs kubectl expecting failure; returns stdout + stderr.
    pub fn fails(&self, kubectl: &Path, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_stdin(kubectl, args, stdin);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{} {:?} should have failed: {text}", kubectl.display(), args);
        text
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The cluster token (in the data dir unless given with --token).
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("data/token")).expect("the server's token").trim().to_string()
    }

    /// Starts `kapal agent --simulate nodes` with node names `<prefix>-<i>`, and waits until the
    /// nodes are registered.
    pub fn simulated_nodes(&self, prefix: &str, nodes: usize) -> Agent {
        let data = self.dir.path().join(format!("agent-{prefix}"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("agent-{prefix}.log")))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_kapal"))
            .args(["agent", "--server", &format!("https://127.0.0.1:{}", self.port), "--token", &self.token()])
            .arg("--data-dir")
            .arg(&data)
            .args(["--node-name", prefix, "--simulate", &nodes.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting kapal agent");
        let agent = Agent { child };
        let k = &kubectls()[0];
        let last = format!("{prefix}-{}", nodes - 1);
        let registered = eventually(30, || self.kubectl(k, &["get", "node", &last]).status.success());
        assert!(registered, "simulated nodes did not register; agent log:\n{}", self.agent_log(prefix));
        agent
    }

    pub fn agent_log(&self, prefix: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("agent-{prefix}.log"))).unwrap_or_default()
    }
}

/// A running `kapal agent`, killed on drop.
pub struct Agent {
    child: Child,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A local etcd cluster of one or more members on free loopback ports, stopped on drop.
pub struct Etcd {
    /// Client URLs, comma-separated, as `--datastore-endpoint` takes them.
    pub endpoint: String,
    members: Vec<Member>,
    dir: tempfile::TempDir,
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

impl Etcd {
    /// One member. `None` (with a SKIPPED line) when etcd is not installed.
    pub fn start() -> Option<Etcd> {
        Self::cluster(1)
    }

    /// `n` members forming one cluster.
    pub fn cluster(n: usize) -> Option<Etcd> {
        if !Path::new("/usr/bin/etcd").exists() {
            eprintln!(
                "SKIPPED: /usr/bin/etcd is not installed (Debian package etcd-server; scripts/test.sh installs it)"
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let members: Vec<Member> = (0..n)
            .map(|i| Member { name: format!("m{i}"), client: free_port(), peer: free_port(), child: None })
            .collect();
        let endpoint = members.iter().map(|m| format!("http://127.0.0.1:{}", m.client)).collect::<Vec<_>>().join(",");
        let mut etcd = Etcd { endpoint, members, dir };
        for i in 0..n {
            etcd.start_member(i);
        }
        for m in &etcd.members {
            assert!(
                eventually(20, || std::net::TcpStream::connect(("127.0.0.1", m.client)).is_ok()),
                "etcd did not start"
            );
        }
        Some(etcd)
    }

    fn initial_cluster(&self) -> String {
        self.members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer)).collect::<Vec<_>>().join(",")
    }

    /// Starts (or restarts, on its old data) member `i`.
    pub fn start_member(&mut self, i: usize) {
        let initial = self.initial_cluster();
        let data = self.dir.path().join(&self.members[i].name);
        let m = &mut self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let child = Command::new("/usr/bin/etcd")
            .arg("--data-dir")
            .arg(data)
            .args(["--name", &m.name, "--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting etcd");
        m.child = Some(child);
    }

    /// Stops member `i` with SIGKILL.
    pub fn stop_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop_member(i);
        }
    }
}

/// Polls `f` until it returns true or `secs` pass.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

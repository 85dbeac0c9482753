//! `kapal proxy` behind a real nftables redirect, the way a meshed pod runs it: two network
//! namespaces joined by a veth pair — a "pod" (the app on 127.0.0.1 and the proxy, running as
//! the proxy user 2102) and a "peer" outside it. Inside the pod, the nat `output` chain sends
//! the app's TCP to the outbound listener (the proxy's own connections are skipped by socket
//! owner, or they would loop back into it) and the nat `prerouting` chain sends arriving TCP to
//! the inbound listener. The proxy learns where each connection was going from `SO_ORIGINAL_DST`.
//!
//! Needs root, `ip`, `nft`, `setpriv`, `curl` and `python3` (the HTTP servers); skipped with a
//! SKIPPED line otherwise. Everything it creates lives in its two namespaces, deleted at the end.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The user the proxy runs as; the redirect rules leave its sockets alone.
const PROXY_UID: &str = "2102";

const RULES: &str = "table ip kapal_mesh {
  chain output {
    type nat hook output priority -100; policy accept;
    meta skuid 2102 return
    oifname \"lo\" return
    meta l4proto tcp redirect to :15001
  }
  chain prerouting {
    type nat hook prerouting priority -100; policy accept;
    iifname \"lo\" return
    meta l4proto tcp redirect to :15006
  }
}
";

/// Two namespaces and what runs in them; all of it removed on drop.
struct Pod {
    pod: String,
    peer: String,
    children: Vec<Child>,
}

impl Drop for Pod {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Deleting a namespace takes its end of the veth pair (and so the pair), its addresses
        // and its nftables tables with it.
        for ns in [&self.pod, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("running {args:?}: {e}"))
}

fn ok(args: &[&str]) {
    let out = run(args);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn missing_tools() -> Option<String> {
    if Command::new("id").arg("-u").output().map(|o| o.stdout).unwrap_or_default() != b"0\n" {
        return Some("not root".into());
    }
    for tool in ["ip", "nft", "setpriv", "curl", "python3"] {
        let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output();
        if !found.is_ok_and(|o| o.status.success()) {
            return Some(format!("no {tool}"));
        }
    }
    None
}

impl Pod {
    fn new() -> Pod {
        let id = std::process::id();
        let pod = Pod { pod: format!("kapal-mr{id}-pod"), peer: format!("kapal-mr{id}-peer"), children: Vec::new() };
        let (a, b) = (format!("kmr{id}a"), format!("kmr{id}b"));
        ok(&["ip", "netns", "add", &pod.pod]);
        ok(&["ip", "netns", "add", &pod.peer]);
        ok(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
        ok(&["ip", "link", "set", &a, "netns", &pod.pod]);
        ok(&["ip", "link", "set", &b, "netns", &pod.peer]);
        ok(&["ip", "-n", &pod.pod, "addr", "add", "10.250.0.2/24", "dev", &a]);
        ok(&["ip", "-n", &pod.peer, "addr", "add", "10.250.0.1/24", "dev", &b]);
        for (ns, link) in [(&pod.pod, &a), (&pod.peer, &b)] {
            ok(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            ok(&["ip", "-n", ns, "link", "set", link, "up"]);
        }
        pod
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec", ns];
        all.extend_from_slice(args);
        run(&all)
    }

    fn spawn(&mut self, ns: &str, args: &[&str], log: &Path) {
        let log = std::fs::File::create(log).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {args:?} in {ns}: {e}"));
        self.children.push(child);
    }

    /// A static HTTP server in `ns` answering `body` at `/`.
    fn http_server(&mut self, ns: &str, bind: &str, port: u16, body: &str, dir: &Path) {
        let root = dir.join(format!("{bind}-{port}"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("index.html"), body).unwrap();
        let (port, root_s) = (port.to_string(), root.display().to_string());
        let log = dir.join(format!("http-{bind}-{port}.log"));
        self.spawn(ns, &["python3", "-m", "http.server", "--bind", bind, &port, "--directory", &root_s], &log);
    }

    /// `curl` from `ns`: (status line and headers, body).
    fn curl(&self, ns: &str, url: &str) -> (String, String) {
        let out = self.exec(ns, &["curl", "-sS", "--max-time", "5", "-D", "-", url]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "curl {url} in {ns}: {}{text}", String::from_utf8_lossy(&out.stderr));
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (head.to_ascii_lowercase(), body.to_string())
    }

    fn eventually_answers(&self, ns: &str, url: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.exec(ns, &["curl", "-sf", "--max-time", "1", "-o", "/dev/null", url]).status.success() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

#[test]
fn the_proxy_serves_traffic_redirected_by_nftables_in_both_directions() {
    if let Some(why) = missing_tools() {
        eprintln!("SKIPPED: nftables redirect test ({why})");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The proxy runs as an unprivileged user: it must be able to read its config.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut p = Pod::new();
    let (pod, peer) = (p.pod.clone(), p.peer.clone());

    // Outside the pod: a service the mesh config knows and a server it does not.
    p.http_server(&peer, "10.250.0.1", 8080, "peer-service", dir.path());
    p.http_server(&peer, "10.250.0.1", 8081, "peer-unmeshed", dir.path());
    // The app listens on loopback only: from outside it is reachable through the proxy or not at all.
    p.http_server(&pod, "127.0.0.1", 9090, "app", dir.path());
    assert!(p.eventually_answers(&peer, "http://10.250.0.1:8080/"));
    assert!(p.eventually_answers(&pod, "http://127.0.0.1:9090/"));
    assert!(
        !p.exec(&peer, &["curl", "-sf", "--max-time", "2", "http://10.250.0.2:9090/"]).status.success(),
        "the app is reachable from outside before any redirect"
    );

    let config = dir.path().join("proxy.yaml");
    std::fs::write(
        &config,
        "apiVersion: kapal.dev/v1alpha1
kind: ProxyConfig
services:
  - name: peer
    addresses: ['10.250.0.1:8080']
    endpoints: [{address: '10.250.0.1:8080'}]
    routes:
      - filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-routed-by, value: kapal}]}}]
        backendRefs: [{name: peer}]
",
    )
    .unwrap();
    let exe = env!("CARGO_BIN_EXE_kapal");
    let (uid, cfg) = (PROXY_UID, config.display().to_string());
    p.spawn(
        &pod,
        &[
            "setpriv",
            "--reuid",
            uid,
            "--regid",
            uid,
            "--clear-groups",
            exe,
            "proxy",
            "--config",
            &cfg,
            "--outbound",
            "127.0.0.1:15001",
            "--inbound",
            "0.0.0.0:15006",
            "--admin",
            "127.0.0.1:4191",
        ],
        &dir.path().join("proxy.log"),
    );
    let proxy_log = || std::fs::read_to_string(dir.path().join("proxy.log")).unwrap_or_default();
    assert!(p.eventually_answers(&pod, "http://127.0.0.1:4191/ready"), "proxy not ready:\n{}", proxy_log());
    let mut nft =
        Command::new("ip").args(["netns", "exec", &pod, "nft", "-f", "-"]).stdin(Stdio::piped()).spawn().expect("nft");
    std::io::Write::write_all(&mut nft.stdin.take().unwrap(), RULES.as_bytes()).unwrap();
    assert!(nft.wait().unwrap().success(), "nft rejected the redirect rules");

    // Outbound: the app dials the service's address; the kernel hands the connection to the
    // proxy, which routes it by its original destination (the route's header shows it did) and
    // dials the endpoint itself without being redirected again.
    for _ in 0..3 {
        let (head, body) = p.curl(&pod, "http://10.250.0.1:8080/");
        assert_eq!(body, "peer-service", "{head}\nproxy log:\n{}", proxy_log());
        assert!(head.contains("x-routed-by: kapal"), "not routed by the proxy: {head}");
    }
    // An address the config does not name is passed through to where the app was going.
    let (head, body) = p.curl(&pod, "http://10.250.0.1:8081/");
    assert_eq!(body, "peer-unmeshed");
    assert!(!head.contains("x-routed-by"), "{head}");

    // Inbound: a client outside dials the pod's address; the proxy forwards to the app on
    // 127.0.0.1 at the port that was dialled.
    let (head, body) = p.curl(&peer, "http://10.250.0.2:9090/");
    assert_eq!(body, "app", "{head}\nproxy log:\n{}", proxy_log());

    let metrics =
        String::from_utf8_lossy(&p.exec(&pod, &["curl", "-sf", "http://127.0.0.1:4191/metrics"]).stdout).into_owned();
    let count = |prefix: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert_eq!(
        count("kapal_proxy_requests_total{direction=\"outbound\",service=\"peer\""),
        3.0,
        "outbound requests to the service:\n{metrics}"
    );
    assert_eq!(
        count("kapal_proxy_requests_total{direction=\"inbound\",service=\"inbound:9090\""),
        1.0,
        "inbound requests to port 9090:\n{metrics}"
    );
}

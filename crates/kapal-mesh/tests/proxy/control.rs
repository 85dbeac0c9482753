//! `--control-plane`: config streamed as newline-delimited JSON over a long-lived HTTP GET.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use kapal_mesh::Proxy;
use kapal_mesh::control::{ControlPlane, ControlPlaneOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc};

use crate::support::*;

/// What the fake control plane does on the open stream.
enum Cmd {
    /// Write these bytes as one chunk.
    Chunk(String),
    /// End the response and close the connection.
    Close,
}

/// A control plane on 127.0.0.1:0 that answers each GET with a chunked `200` and then writes
/// what the test tells it to, one connection at a time.
struct ControlServer {
    addr: SocketAddr,
    cmds: mpsc::UnboundedSender<Cmd>,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl ControlServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cmds, mut rx) = mpsc::unbounded_channel::<Cmd>();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        break;
                    }
                    head.push(byte[0]);
                }
                seen.lock().await.push(String::from_utf8_lossy(&head).into_owned());
                let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n";
                if stream.write_all(ok.as_bytes()).await.is_err() {
                    continue;
                }
                while let Some(cmd) = rx.recv().await {
                    match cmd {
                        Cmd::Chunk(data) => {
                            let chunk = format!("{:x}\r\n{data}\r\n", data.len());
                            let _ = stream.write_all(chunk.as_bytes()).await;
                        }
                        Cmd::Close => {
                            let _ = stream.write_all(b"0\r\n\r\n").await;
                            break;
                        }
                    }
                }
            }
        });
        ControlServer { addr, cmds, connections, requests }
    }

    fn send(&self, data: impl Into<String>) {
        self.cmds.send(Cmd::Chunk(data.into())).unwrap();
    }

    fn close(&self) {
        self.cmds.send(Cmd::Close).unwrap();
    }

    fn client(&self, metrics: Arc<kapal_mesh::metrics::Metrics>) -> ControlPlane {
        let opts = ControlPlaneOptions {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            max_document_bytes: 2048,
            ..ControlPlaneOptions::new(format!("http://{}/v1/proxy-config?pod=default/web-0", self.addr))
        };
        ControlPlane::new(opts, metrics).unwrap()
    }
}

/// One line of the stream: `web` with a single endpoint.
fn doc(backend: SocketAddr) -> String {
    format!(
        r#"{{"apiVersion":"kapal.dev/v1alpha1","kind":"ProxyConfig","services":[{{"name":"web","listen":"127.0.0.1:0","endpoints":[{{"address":"{backend}"}}]}}]}}"#
    ) + "\n"
}

fn metric(p: &Proxy, series: &str) -> u64 {
    let text = p.metrics().encode();
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0)
}

/// Requests `base` in a loop from 4 tasks until `stop`; counts answers that were not 200.
fn load(
    base: String,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|_| {
            let (base, stop, ok, failed) = (base.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let client = h1_client();
                while !stop.load(Ordering::SeqCst) {
                    match client.get(format!("{base}/").parse().unwrap()).await {
                        Ok(res) if res.status() == StatusCode::OK => ok.fetch_add(1, Ordering::SeqCst),
                        _ => failed.fetch_add(1, Ordering::SeqCst),
                    };
                }
            })
        })
        .collect()
}

#[tokio::test]
async fn streamed_configs_are_applied_and_a_bad_one_is_rejected_under_load() {
    let (a, b) = (ok_backend("a").await, ok_backend("b").await);
    let cp = ControlServer::start().await;
    let opts = options();
    let mut control = cp.client(opts.metrics.clone());
    // The first document arrives in two chunks, split mid-line.
    let first = doc(a.addr);
    let (head, tail) = first.split_at(first.len() / 2);
    cp.send(head);
    cp.send(tail);
    let config = control.next().await.unwrap();
    let p = Arc::new(Proxy::start(config, opts, None).await.unwrap());
    let follower = tokio::spawn(p.clone().follow_control_plane(control));
    let base = url(&p, "web").await;
    let (stop, ok, failed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let tasks = load(base, stop.clone(), ok.clone(), failed.clone());
    eventually("traffic to a", || a.hits() > 20).await;

    // Not JSON, then JSON that fails validation (a route to a service that does not exist).
    cp.send("{not json\n");
    cp.send(format!(
        r#"{{"apiVersion":"kapal.dev/v1alpha1","kind":"ProxyConfig","services":[{{"name":"web","listen":"127.0.0.1:0","endpoints":[{{"address":"{}"}}],"routes":[{{"backendRefs":[{{"name":"ghost"}}]}}]}}]}}"#,
        b.addr
    ) + "\n");
    // And a line over the size limit, in pieces: rejected as a whole, the stream goes on.
    cp.send("{".to_string() + &" ".repeat(1500));
    cp.send(" ".repeat(1500) + "}\n");
    let errors = r#"kapal_proxy_config_reloads_total{direction="control_plane",result="error"}"#;
    eventually("three rejected documents", || metric(&p, errors) == 3).await;
    let a_before = a.hits();
    eventually("more traffic to a", || a.hits() > a_before + 20).await;
    assert_eq!(b.hits(), 0, "the rejected config must not have been applied");
    assert_eq!(p.config().services[0].endpoints[0].address, a.addr);

    // A heartbeat (blank line), then config 2.
    cp.send("\n");
    cp.send(doc(b.addr));
    eventually("traffic to b", || b.hits() > 20).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    follower.abort();
    assert_eq!(failed.load(Ordering::SeqCst), 0, "no request may fail while configs change");
    assert!(ok.load(Ordering::SeqCst) > 60);
    assert_eq!(metric(&p, r#"kapal_proxy_config_reloads_total{direction="control_plane",result="ok"}"#), 1);
    assert_eq!(metric(&p, errors), 3);
    assert_eq!(cp.connections.load(Ordering::SeqCst), 1);
    let request = cp.requests.lock().await[0].to_ascii_lowercase();
    assert!(request.starts_with("get /v1/proxy-config?pod=default/web-0 http/1.1\r\n"), "{request}");
    assert!(request.contains("accept: application/x-ndjson"), "{request}");
    assert!(
        admin(&p, "/metrics").await.body.contains(r#"kapal_proxy_control_plane_streams_total{result="connected"} 1"#)
    );
}

#[tokio::test]
async fn a_dropped_stream_is_reconnected_and_the_config_keeps_serving_meanwhile() {
    let (a, b) = (ok_backend("a").await, ok_backend("b").await);
    let cp = ControlServer::start().await;
    let opts = options();
    let mut control = cp.client(opts.metrics.clone());
    cp.send(doc(a.addr));
    let p = Arc::new(Proxy::start(control.next().await.unwrap(), opts, None).await.unwrap());
    let follower = tokio::spawn(p.clone().follow_control_plane(control));
    let (client, base) = (h1_client(), url(&p, "web").await);
    cp.close();
    let disconnected = r#"kapal_proxy_control_plane_streams_total{result="disconnected"}"#;
    eventually("the disconnect", || metric(&p, disconnected) >= 1).await;
    // While the control plane is away the last config serves.
    for _ in 0..10 {
        assert_eq!(get(&client, format!("{base}/")).await.header("x-backend"), Some("a"));
    }
    eventually("a second connection", || cp.connections.load(Ordering::SeqCst) == 2).await;
    // The control plane resends the current config (not re-applied), then a new one.
    cp.send(doc(a.addr));
    cp.send(doc(b.addr));
    eventually("config 2", || p.config().services[0].endpoints[0].address == b.addr).await;
    assert_eq!(get(&client, format!("{base}/")).await.header("x-backend"), Some("b"));
    follower.abort();
    let unchanged = r#"kapal_proxy_config_reloads_total{direction="control_plane",result="unchanged"}"#;
    assert_eq!(metric(&p, unchanged), 1);
    assert_eq!(metric(&p, r#"kapal_proxy_config_reloads_total{direction="control_plane",result="ok"}"#), 1);
}

#[tokio::test(start_paused = true)]
async fn reconnects_back_off_exponentially_up_to_the_cap_and_reset_after_a_document() {
    // Every connection is accepted and dropped at once, except the fifth, which sends a document
    // and then closes; the sixth is dropped again.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let times = accepted.clone();
    let backend = SocketAddr::from(([127, 0, 0, 1], 9));
    tokio::spawn(async move {
        for n in 1.. {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            times.lock().await.push(tokio::time::Instant::now());
            if n == 5 {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let body = doc(backend);
                let res = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                let _ = stream.write_all(res.as_bytes()).await;
            }
        }
    });
    let opts = ControlPlaneOptions {
        initial_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(4),
        idle_timeout: None,
        ..ControlPlaneOptions::new(format!("http://{addr}/"))
    };
    let mut control = ControlPlane::new(opts, Arc::default()).unwrap();
    let config = control.next().await.unwrap();
    assert_eq!(config.services[0].endpoints[0].address, backend);
    // The document ended the stream: one more (failing) attempt after a reset back-off.
    let next = tokio::spawn(async move { control.next().await });
    for _ in 0..200 {
        if accepted.lock().await.len() >= 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    next.abort();
    let times = accepted.lock().await.clone();
    assert!(times.len() >= 7, "{} connections", times.len());
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // Delays are uniform in [d/2, d] for d = 1s, 2s, 4s, 4s (cap), then reset after the document.
    for (i, cap) in [1, 2, 4, 4, 1, 2].into_iter().enumerate() {
        let cap = Duration::from_secs(cap);
        assert!(
            gaps[i] >= cap / 2 && gaps[i] <= cap + Duration::from_millis(1),
            "gap {i} = {:?}, cap {cap:?}",
            gaps[i]
        );
    }
}

/// An HTTPS control plane on 127.0.0.1 with a certificate from `pki`, sending `body` on every
/// connection. With `clients`, it requires a client certificate from `pki` and records each
/// client's SPIFFE ID there.
async fn https_control_plane(
    pki: &Pki,
    body: String,
    clients: Option<Arc<std::sync::Mutex<Vec<String>>>>,
) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (cert, key) = pki.server_leaf();
    let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let builder = if clients.is_some() {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(pki.ca_pem().as_bytes()).unwrap()).unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_single_cert(chain, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let Ok(mut tls) = acceptor.accept(stream).await else { continue };
            if let Some(clients) = &clients {
                let peer = tls.get_ref().1.peer_certificates().and_then(|c| c.first().cloned());
                let id = peer.and_then(|c| kapal_mesh::tls::peer_identity(&c)).unwrap_or_default();
                clients.lock().unwrap().push(id);
            }
            let mut buf = [0u8; 1024];
            let _ = tls.read(&mut buf).await;
            let res = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            let _ = tls.write_all(res.as_bytes()).await;
            let _ = tls.shutdown().await;
        }
    });
    addr
}

#[tokio::test]
async fn an_https_control_plane_is_verified_against_the_given_ca() {
    let (pki, other) = (Pki::new(), Pki::new());
    let backend = SocketAddr::from(([127, 0, 0, 1], 9));
    let addr = https_control_plane(&pki, doc(backend), None).await;
    let dir = tempfile::tempdir().unwrap();
    let client = |ca_pem: String, name: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, ca_pem).unwrap();
        let opts = ControlPlaneOptions {
            ca: Some(path),
            initial_backoff: Duration::from_millis(20),
            ..ControlPlaneOptions::new(format!("https://{addr}/stream"))
        };
        let metrics = Arc::new(kapal_mesh::metrics::Metrics::default());
        (ControlPlane::new(opts, metrics.clone()).unwrap(), metrics)
    };
    let (mut trusted, _) = client(pki.ca_pem(), "ca.pem");
    let config = tokio::time::timeout(Duration::from_secs(5), trusted.next()).await.unwrap().unwrap();
    assert_eq!(config.services[0].endpoints[0].address, backend);
    // A server whose certificate another CA issued is never believed: no document, only retries.
    let (mut untrusted, metrics) = client(other.ca_pem(), "other.pem");
    assert!(tokio::time::timeout(Duration::from_millis(300), untrusted.next()).await.is_err());
    let text = metrics.encode();
    assert!(text.contains(r#"kapal_proxy_control_plane_streams_total{result="connect_error"}"#), "{text}");
    assert!(!text.contains(r#"result="connected""#), "{text}");
}

#[tokio::test]
async fn the_proxy_authenticates_to_an_https_control_plane_with_its_current_identity() {
    let pki = Pki::new();
    let backend = SocketAddr::from(([127, 0, 0, 1], 9));
    let clients = Arc::new(std::sync::Mutex::new(Vec::new()));
    let addr = https_control_plane(&pki, doc(backend), Some(clients.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pki.ca_pem()).unwrap();
    let client = |identity: Option<Arc<kapal_mesh::tls::MeshTls>>| {
        let opts = ControlPlaneOptions {
            ca: Some(ca.clone()),
            identity,
            initial_backoff: Duration::from_millis(20),
            ..ControlPlaneOptions::new(format!("https://{addr}/stream"))
        };
        let metrics = Arc::new(kapal_mesh::metrics::Metrics::default());
        (ControlPlane::new(opts, metrics.clone()).unwrap(), metrics)
    };

    let (tls, identity_dir) = pki.identity(&spiffe("web"));
    let (mut web, _) = client(Some(tls.clone()));
    let config = tokio::time::timeout(Duration::from_secs(5), web.next()).await.unwrap().unwrap();
    assert_eq!(config.services[0].endpoints[0].address, backend);
    assert_eq!(clients.lock().unwrap().as_slice(), [spiffe("web")]);

    // A rotated certificate is what the next connection presents (the stream above ended when
    // the server closed it, so the same client reconnects).
    pki.write(identity_dir.path(), &spiffe("web-v2"));
    tls.reload().unwrap();
    tokio::time::timeout(Duration::from_secs(5), web.next()).await.unwrap().unwrap();
    assert_eq!(clients.lock().unwrap().last().map(String::as_str), Some(spiffe("web-v2").as_str()));

    // Without an identity the control plane refuses the handshake: no document, only retries.
    let (mut anonymous, metrics) = client(None);
    assert!(tokio::time::timeout(Duration::from_millis(300), anonymous.next()).await.is_err());
    assert!(metrics.encode().contains(r#"kapal_proxy_control_plane_streams_total{result="connect_error"}"#));
    assert_eq!(clients.lock().unwrap().len(), 2, "an anonymous client was let in");
}

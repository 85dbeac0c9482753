//! Transparent listeners: the original destination (normally from SO_ORIGINAL_DST after an
//! nftables redirect) picks the service or the local port. The kernel part is replaced by a
//! fake that answers what the test says the client dialled.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::StatusCode;
use kapal_mesh::config::ProxyConfig;
use kapal_mesh::server::OriginalDst;
use kapal_mesh::{Proxy, ProxyOptions};

use crate::support::*;

#[derive(Debug)]
struct Dialled(Mutex<SocketAddr>);

impl OriginalDst for Dialled {
    fn original_dst(&self, _: &tokio::net::TcpStream) -> std::io::Result<SocketAddr> {
        Ok(*self.0.lock().unwrap())
    }
}

#[tokio::test]
async fn transparent_listeners_route_by_original_destination() {
    let (v1, v2, app, outside) =
        (ok_backend("v1").await, ok_backend("v2").await, ok_backend("app").await, ok_backend("outside").await);
    let vip: SocketAddr = "10.96.0.10:80".parse().unwrap();
    let dialled = Arc::new(Dialled(Mutex::new(vip)));
    let yaml = format!(
        "{HEAD}services:
  - name: api
    addresses: ['{vip}']
    routes:
      - matches: [{{path: {{value: /v2}}}}]
        backendRefs: [{{name: api-v2}}]
      - backendRefs: [{{name: api-v1}}]
  - {{name: api-v1, endpoints: [{{address: '{}'}}]}}
  - {{name: api-v2, endpoints: [{{address: '{}'}}]}}
",
        v1.addr, v2.addr
    );
    let opts = ProxyOptions {
        outbound: Some("127.0.0.1:0".parse().unwrap()),
        inbound: Some("127.0.0.1:0".parse().unwrap()),
        original_dst: dialled.clone(),
        ..options()
    };
    let p = Proxy::start(ProxyConfig::from_yaml(&yaml).unwrap(), opts, None).await.unwrap();
    let outbound = format!("http://{}", p.transparent_addr("outbound").await.unwrap());
    let inbound = format!("http://{}", p.transparent_addr("inbound").await.unwrap());

    // The app dialled the service's cluster address: the service's routes apply.
    assert_eq!(get(&h1_client(), format!("{outbound}/v2/x")).await.header("x-backend"), Some("v2"));
    assert_eq!(get(&h1_client(), format!("{outbound}/other")).await.header("x-backend"), Some("v1"));

    // An address outside the mesh config is passed through untouched.
    *dialled.0.lock().unwrap() = outside.addr;
    let res = get(&h1_client(), format!("{outbound}/")).await;
    assert_eq!((res.status, res.header("x-backend")), (StatusCode::OK, Some("outside")));

    // Inbound: forwarded to 127.0.0.1 at the original port, through the inbound stack.
    *dialled.0.lock().unwrap() = SocketAddr::new("10.0.0.7".parse().unwrap(), app.addr.port());
    let res = get(&h1_client(), format!("{inbound}/")).await;
    assert_eq!((res.status, res.header("x-backend")), (StatusCode::OK, Some("app")));
    assert!(res.headers.contains_key("echo-traceparent"), "went through the HTTP stack");

    let metrics = admin(&p, "/metrics").await.body;
    let want = format!(
        "kapal_proxy_requests_total{{direction=\"inbound\",service=\"inbound:{0}\",route=\"default\",backend=\"inbound:{0}\",status_class=\"2xx\",client_identity=\"\"}} 1",
        app.addr.port()
    );
    assert!(metrics.contains(&want), "{metrics}");
    assert_eq!((v1.hits(), v2.hits(), outside.hits(), app.hits()), (1, 1, 1, 1));
}

#[tokio::test]
async fn connections_that_were_not_redirected_are_refused() {
    let p = Proxy::start(
        ProxyConfig::from_yaml(&format!("{HEAD}services: []\n")).unwrap(),
        ProxyOptions { outbound: Some("127.0.0.1:0".parse().unwrap()), ..options() },
        None,
    )
    .await
    .unwrap();
    // The real SO_ORIGINAL_DST fails on a socket nothing redirected: the proxy closes it
    // instead of guessing (or connecting to itself).
    let addr = p.transparent_addr("outbound").await.unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), s.read_to_end(&mut out)).await.unwrap();
    assert!(out.is_empty());
}

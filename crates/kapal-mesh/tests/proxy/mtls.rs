//! Mutual TLS between two proxies, identity-based authorization, certificate rotation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// The server-side proxy: inbound (mTLS required) to `app`, only `web` may call.
async fn server_proxy(
    pki: &Pki,
    app: std::net::SocketAddr,
) -> (kapal_mesh::Proxy, std::net::SocketAddr, tempfile::TempDir) {
    let (tls, dir) = pki.identity(&spiffe("api"));
    let p = proxy_with_tls(
        &format!(
            "inbound:
  - {{listen: '127.0.0.1:0', forwardPort: {}, requireMtls: true}}
authorization:
  defaultAction: deny
  rules: [{{action: allow, identities: ['{}']}}]
",
            app.port(),
            spiffe("web")
        ),
        Some(tls),
    )
    .await;
    let addr = p.inbound_addr("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (p, addr, dir)
}

/// A client-side proxy with identity `sa` calling the server proxy, which it expects to be `peer`.
async fn client_proxy(
    pki: &Pki,
    sa: &str,
    server: std::net::SocketAddr,
    peer: &str,
    protocol: &str,
) -> (kapal_mesh::Proxy, tempfile::TempDir) {
    let (tls, dir) = pki.identity(&spiffe(sa));
    let p = proxy_with_tls(
        &format!(
            "services:
  - name: api
    listen: 127.0.0.1:0
    protocol: {protocol}
    endpoints: [{{address: '{server}', identity: '{}'}}]
",
            spiffe(peer)
        ),
        Some(tls),
    )
    .await;
    (p, dir)
}

#[tokio::test]
async fn mtls_between_proxies_with_identity_authorization() {
    let pki = Pki::new();
    let app = ok_backend("app").await;
    let (server, server_addr, _d1) = server_proxy(&pki, app.addr).await;

    // HTTP/1.1 and HTTP/2 from the allowed identity.
    let (web, _d2) = client_proxy(&pki, "web", server_addr, "api", "http1").await;
    let res = get(&h1_client(), format!("{}/hello", url(&web, "api").await)).await;
    assert_eq!((res.status, res.body.as_str()), (StatusCode::OK, "app:0"));
    let (web2, _d3) = client_proxy(&pki, "web", server_addr, "api", "http2").await;
    let res = get(&h2_client(), format!("{}/hello", url(&web2, "api").await)).await;
    assert_eq!((res.status, res.body.as_str()), (StatusCode::OK, "app:0"));

    // Another identity of the same mesh is denied by policy.
    let (intruder, _d4) = client_proxy(&pki, "intruder", server_addr, "api", "http1").await;
    let res = get(&h1_client(), format!("{}/hello", url(&intruder, "api").await)).await;
    assert_eq!((res.status, res.header("x-kapal-error")), (StatusCode::FORBIDDEN, Some("unauthorized")));

    // A client expecting a different server identity refuses to talk to it.
    let (confused, _d5) = client_proxy(&pki, "web", server_addr, "not-api", "http1").await;
    let res = get(&h1_client(), format!("{}/hello", url(&confused, "api").await)).await;
    assert_eq!((res.status, res.header("x-kapal-error")), (StatusCode::BAD_GATEWAY, Some("connect-failed")));

    // A certificate from another CA is rejected in the handshake.
    let rogue = Pki::new();
    let (outsider, _d6) = client_proxy(&rogue, "web", server_addr, "api", "http1").await;
    let res = get(&h1_client(), format!("{}/hello", url(&outsider, "api").await)).await;
    assert_eq!(res.status, StatusCode::BAD_GATEWAY);

    // Plaintext is refused because the listener requires mTLS.
    let mut s = tokio::net::TcpStream::connect(server_addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.unwrap();
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));

    assert_eq!(app.hits(), 2);
    let metrics = admin(&server, "/metrics").await.body;
    let allowed = format!(
        "kapal_proxy_requests_total{{direction=\"inbound\",service=\"inbound:{}\",route=\"default\",backend=\"inbound:{}\",status_class=\"2xx\",client_identity=\"{}\"}} 2",
        app.addr.port(),
        app.addr.port(),
        spiffe("web")
    );
    assert!(metrics.contains(&allowed), "{metrics}");
    assert!(metrics.contains(r#"kapal_proxy_tls_handshakes_total{direction="inbound",result="ok"} 4"#), "{metrics}");
}

#[tokio::test]
async fn grpc_between_mtls_proxies() {
    let pki = Pki::new();
    let app = grpc_echo().await;
    let (server, server_addr, _d1) = server_proxy(&pki, app).await;
    let (web, _d2) = client_proxy(&pki, "web", server_addr, "api", "grpc").await;
    let base = url(&web, "api").await;

    // A unary call: the answer and the trailers after it arrive whole.
    let call = h2_client().request(grpc_request(
        format!("{base}/kapal.test.Echo/Unary"),
        http_body_util::Full::new(grpc_message(b"web")),
    ));
    let res = within("unary call", call).await.expect("unary call through the proxies");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[http::header::CONTENT_TYPE], "application/grpc");
    let mut reply = GrpcReader::new(res.into_body());
    assert_eq!(within("unary answer", reply.message()).await.as_deref(), Some(&b"hello, web"[..]));
    assert_eq!(within("unary trailers", reply.message()).await, None);
    assert_eq!(reply.trailers()["grpc-status"], "0");
    assert_eq!(reply.trailers()["x-echo-count"], "1");

    // A call the server fails: HTTP 200, the gRPC status in the trailers.
    let call = h2_client()
        .request(grpc_request(format!("{base}/kapal.test.Echo/Fail"), http_body_util::Full::new(grpc_message(b"web"))));
    let res = within("failing call", call).await.expect("failing call through the proxies");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("grpc-status").is_none(), "{:?}", res.headers());
    let mut reply = GrpcReader::new(res.into_body());
    assert_eq!(within("failing call's trailers", reply.message()).await, None);
    assert_eq!(reply.trailers()["grpc-status"], "5");
    assert_eq!(reply.trailers()["grpc-message"], "no such greeting");

    // A bidirectional stream, message by message, through both proxies and the TLS between them.
    grpc_bidi_echo(&base).await;

    // The server-side proxy saw all three calls come from the client proxy's identity, on the one
    // mTLS connection they shared.
    let metrics = admin(&server, "/metrics").await.body;
    let port = app.port();
    let calls = format!(
        "kapal_proxy_requests_total{{direction=\"inbound\",service=\"inbound:{port}\",route=\"default\",backend=\"inbound:{port}\",status_class=\"2xx\",client_identity=\"{}\"}} 3",
        spiffe("web")
    );
    assert!(metrics.contains(&calls), "{metrics}");
    assert!(metrics.contains(r#"kapal_proxy_tls_handshakes_total{direction="inbound",result="ok"} 1"#), "{metrics}");
}

#[tokio::test]
async fn plaintext_clients_are_accepted_unless_required() {
    let pki = Pki::new();
    let app = ok_backend("app").await;
    let (tls, _dir) = pki.identity(&spiffe("api"));
    let p = proxy_with_tls(
        &format!(
            "inbound: [{{listen: '127.0.0.1:0', forwardPort: {}}}]
authorization:
  rules: [{{action: deny, paths: ['/admin*']}}]
",
            app.addr.port()
        ),
        Some(tls),
    )
    .await;
    let base = format!("http://{}", p.inbound_addr("127.0.0.1:0".parse().unwrap()).await.unwrap());
    assert_eq!(get(&h1_client(), format!("{base}/public")).await.status, StatusCode::OK);
    assert_eq!(get(&h2_client(), format!("{base}/public")).await.status, StatusCode::OK);
    assert_eq!(get(&h1_client(), format!("{base}/admin/x")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.hits(), 2);
}

#[tokio::test]
async fn opaque_tcp_is_carried_over_mtls() {
    let pki = Pki::new();
    // A server-speaks-first TCP service (like SMTP): greets, then echoes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                s.write_all(b"220 hello\r\n").await.unwrap();
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let (server, server_addr, _d1) = server_proxy(&pki, app_addr).await;
    let (client, _d2) = client_proxy(&pki, "web", server_addr, "api", "opaque").await;
    let started = std::time::Instant::now();
    let mut s = tokio::net::TcpStream::connect(client.outbound_addr("api").await.unwrap()).await.unwrap();
    let mut greeting = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut greeting)).await.unwrap().unwrap();
    assert_eq!(&greeting, b"220 hello\r\n");
    // The server proxy peeked for up to its detection timeout, not seconds.
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    s.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
    drop(s);
    let metrics = admin(&server, "/metrics").await.body;
    assert!(
        metrics.contains(r#"kapal_proxy_protocol_detections_total{direction="inbound",result="tls"} 1"#),
        "{metrics}"
    );

    // Authorization applies to opaque connections too: another identity gets nothing.
    let (intruder, _d3) = client_proxy(&pki, "intruder", server_addr, "api", "opaque").await;
    let mut s = tokio::net::TcpStream::connect(intruder.outbound_addr("api").await.unwrap()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await.unwrap();
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
}

#[tokio::test]
async fn certificate_rotation_under_load_drops_nothing() {
    let pki = Pki::new();
    let app = ok_backend("app").await;
    let dir = tempfile::tempdir().unwrap();
    let files = pki.write(dir.path(), &spiffe("api"));
    let server_tls = Arc::new(kapal_mesh::tls::MeshTls::load(files).unwrap());
    let server = proxy_with_tls(
        &format!("inbound: [{{listen: '127.0.0.1:0', forwardPort: {}, requireMtls: true}}]\n", app.addr.port()),
        Some(server_tls.clone()),
    )
    .await;
    let metrics = Arc::new(kapal_mesh::metrics::Metrics::default());
    let watcher = tokio::spawn(server_tls.clone().watch(Duration::from_millis(20), metrics.clone()));
    let server_addr = server.inbound_addr("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (client, _d) = client_proxy(&pki, "web", server_addr, "api", "http1").await;
    let base = url(&client, "api").await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, base) = (stop.clone(), ok.clone(), failed.clone(), base.clone());
        load.push(tokio::spawn(async move {
            let client = h1_client();
            while !stop.load(Ordering::SeqCst) {
                match client.get(format!("{base}/").parse().unwrap()).await {
                    Ok(res) if res.status() == StatusCode::OK => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        }));
    }
    let before = server_tls.server_config();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        // Modification times can have coarse granularity; make sure each write is seen.
        tokio::time::sleep(Duration::from_millis(20)).await;
        pki.write(dir.path(), &spiffe("api"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.await.unwrap();
    }
    watcher.abort();
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    assert!(ok.load(Ordering::SeqCst) > 50);
    assert!(!Arc::ptr_eq(&before, &server_tls.server_config()), "certificates were not reloaded");
    assert!(metrics.encode().contains(r#"kapal_proxy_certificate_reloads_total{direction="local",result="ok"}"#));
    // New connections handshake with the new certificate.
    let (fresh, _d2) = client_proxy(&pki, "web", server_addr, "api", "http1").await;
    assert_eq!(get(&h1_client(), format!("{}/", url(&fresh, "api").await)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn application_tls_from_unmeshed_clients_passes_through() {
    let pki = Pki::new();
    // The application terminates its own TLS (here: a TLS echo server with its own cert).
    let app_pki = Pki::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = listener.local_addr().unwrap();
    // The app's own server config: no client certificate needed, no mesh ALPN.
    let (cert, key) = app_pki.leaf("spiffe://example.org/app");
    let certs = rustls_pemfile_certs(&cert);
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let server_cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut tls = acceptor.accept(s).await.unwrap();
                let mut buf = [0u8; 4];
                tls.read_exact(&mut buf).await.unwrap();
                tls.write_all(&buf).await.unwrap();
                tls.flush().await.unwrap();
            });
        }
    });
    let (tls, _d1) = pki.identity(&spiffe("api"));
    let p =
        proxy_with_tls(&format!("inbound: [{{listen: '127.0.0.1:0', forwardPort: {}}}]\n", app_addr.port()), Some(tls))
            .await;
    let inbound = p.inbound_addr("127.0.0.1:0".parse().unwrap()).await.unwrap();

    // An ordinary TLS client trusting the app's CA, talking through the proxy's inbound port.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pemfile_certs(&app_pki.ca_pem())[0].clone()).unwrap();
    let client_cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyName(
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::new(rustls::crypto::ring::default_provider()),
            )
            .build()
            .unwrap(),
        )))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(inbound).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client_cfg))
        .connect(rustls::pki_types::ServerName::try_from("app.example.org").unwrap(), tcp)
        .await
        .expect("TLS handshake with the app through the proxy");
    tls.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(2), tls.read_exact(&mut echo)).await.unwrap().unwrap();
    assert_eq!(&echo, b"ping");
}

fn rustls_pemfile_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()).map(Result::unwrap).collect()
}

/// Checks the chain, ignores the name (the app's test cert only has a URI SAN).
#[derive(Debug)]
struct AcceptAnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyName {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext { .. }))
            | Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)) => {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

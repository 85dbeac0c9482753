//! Mutual TLS between two proxies, identity-based authorization, certificate rotation.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
    // The client proxy keeps its connections to the server proxy, so few handshakes happen in its
    // load: clients of the inbound port that each make a new mTLS connection per request load the
    // handshake itself, and say which server certificate each handshake saw.
    let original = rustls_pemfile_certs(&std::fs::read_to_string(dir.path().join("cert.pem")).unwrap()).remove(0);
    let (web_tls, _d3) = pki.identity(&spiffe("web"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let fresh_failures = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..2 {
        let (stop, web_tls, seen, fresh_failures) =
            (stop.clone(), web_tls.clone(), seen.clone(), fresh_failures.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let request = mesh_request(web_tls.client_config(false), server_addr, CLOSE_REQUEST);
                match within("a request on a new mTLS connection", request).await {
                    Ok((cert, answer)) if answer.starts_with(b"HTTP/1.1 200 ") => seen.lock().unwrap().push(cert),
                    Ok((_, answer)) => {
                        fresh_failures.lock().unwrap().push(String::from_utf8_lossy(&answer).into_owned())
                    }
                    Err(e) => fresh_failures.lock().unwrap().push(e.to_string()),
                }
            }
        }));
    }
    // Some handshakes with the first certificate before it is replaced.
    eventually("handshakes before the rotation", || seen.lock().unwrap().len() >= 5).await;
    let before = server_tls.server_config();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        // Modification times can have coarse granularity; make sure each write is seen.
        tokio::time::sleep(Duration::from_millis(20)).await;
        pki.write(dir.path(), &spiffe("api"));
    }
    let rotated = |seen: &Vec<rustls::pki_types::CertificateDer<'static>>| seen.iter().any(|c| *c != original);
    eventually("handshakes with a rotated certificate", || {
        let seen = seen.lock().unwrap();
        seen.len() >= 20 && rotated(&seen)
    })
    .await;
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
    // Every new connection was served, before and after a rotation.
    assert_eq!(*fresh_failures.lock().unwrap(), Vec::<String>::new());
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(seen.len() >= 20, "{} handshakes", seen.len());
    assert_eq!(seen[0], original);
    assert!(rotated(&seen));
    let distinct: std::collections::HashSet<_> = seen.iter().collect();
    assert!(distinct.len() >= 2, "{} server certificates", distinct.len());
    for cert in &distinct {
        assert_eq!(kapal_mesh::tls::peer_identity(cert), Some(spiffe("api")));
    }
    // The server proxy counted each of those handshakes, and no failed one.
    assert!(handshakes(&server, "ok").await >= seen.len() as u64);
    assert_eq!(handshakes(&server, "error").await, 0);
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
    let client_cfg = trusting_any_name(&app_pki.ca_pem());
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

/// A client config without a certificate of its own that trusts `ca_pem`, whatever name the
/// server's certificate carries.
fn trusting_any_name(ca_pem: &str) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pemfile_certs(ca_pem).remove(0)).unwrap();
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
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
        .with_no_client_auth()
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

#[tokio::test]
async fn websocket_is_tunnelled_between_mtls_proxies() {
    let pki = Pki::new();
    let app = websocket_echo().await;
    let (server, server_addr, _d1) = server_proxy(&pki, app).await;
    let (web, _d2) = client_proxy(&pki, "web", server_addr, "api", "http1").await;
    let mut s = tokio::net::TcpStream::connect(web.outbound_addr("api").await.unwrap()).await.unwrap();

    // The opening handshake of RFC 6455 §1.3, whose key has a known accept value.
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: api\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let head = within("the response head", read_head(&mut s)).await;
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut res = httparse::Response::new(&mut headers);
    assert!(res.parse(&head).unwrap().is_complete());
    let header = |name: &str| {
        let value = res.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
        value.map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let text = String::from_utf8_lossy(&head);
    assert_eq!(res.code, Some(101), "{text}");
    assert!(header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")), "{text}");
    let upgrade = |v: String| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    assert!(header("connection").is_some_and(upgrade), "{text}");
    assert_eq!(header("sec-websocket-accept").as_deref(), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{text}");

    // RFC 6455 §5.7's masked "Hello" and its unmasked answer.
    s.write_all(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]).await.unwrap();
    let mut echo = [0u8; 7];
    within("the echo of the first frame", s.read_exact(&mut echo)).await.unwrap();
    assert_eq!(echo, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);

    // A longer text frame: a 16-bit payload length each way.
    let text = "over mTLS ".repeat(20);
    s.write_all(&client_frame(0x81, [0xa1, 0x5c, 0x07, 0xe3], text.as_bytes())).await.unwrap();
    let mut echo = vec![0u8; 4 + text.len()];
    within("the echo of the second frame", s.read_exact(&mut echo)).await.unwrap();
    assert_eq!(echo, [&[0x81, 126, 0, 200][..], text.as_bytes()].concat());

    // Close (1000, normal closure): the server answers with a close and hangs up, and so does the
    // pair of proxies.
    s.write_all(&client_frame(0x88, [0x0f, 0xf0, 0x55, 0xaa], &1000u16.to_be_bytes())).await.unwrap();
    let mut rest = Vec::new();
    within("the close frame and the end of the tunnel", s.read_to_end(&mut rest)).await.unwrap();
    assert_eq!(rest, [0x88, 0x02, 0x03, 0xe8]);

    // The tunnel was the one mTLS connection from the client proxy, and the server proxy served
    // the handshake request as one from web.
    let metrics = admin(&server, "/metrics").await.body;
    assert!(metrics.contains(r#"kapal_proxy_tls_handshakes_total{direction="inbound",result="ok"} 1"#), "{metrics}");
    let upgraded = format!(
        "kapal_proxy_requests_total{{direction=\"inbound\",service=\"inbound:{port}\",route=\"default\",backend=\"inbound:{port}\",status_class=\"1xx\",client_identity=\"{}\"}} 1",
        spiffe("web"),
        port = app.port()
    );
    assert!(metrics.contains(&upgraded), "{metrics}");
}

/// A WebSocket echo server (RFC 6455) on 127.0.0.1:0. It completes the opening handshake (a GET
/// with `Connection: Upgrade`, `Upgrade: websocket`, a key and version 13; anything else gets
/// 400), then answers each client frame with the same frame, unmasked; after echoing a close
/// frame it hangs up.
async fn websocket_echo() -> std::net::SocketAddr {
    serve(|mut req: http::Request<hyper::body::Incoming>| async move {
        let has = |name: &str, token: &str| {
            let value = req.headers().get(name).and_then(|v| v.to_str().ok());
            value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        };
        let handshake = req.method() == http::Method::GET
            && has("connection", "upgrade")
            && has("upgrade", "websocket")
            && has("sec-websocket-version", "13");
        let key = req.headers().get("sec-websocket-key").cloned();
        let mut res = http::Response::new(http_body_util::BodyExt::boxed_unsync(http_body_util::Full::default()));
        let (true, Some(key)) = (handshake, key) else {
            *res.status_mut() = StatusCode::BAD_REQUEST;
            return res;
        };
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(io) = upgrade.await {
                echo_frames(hyper_util::rt::TokioIo::new(io)).await;
            }
        });
        let accept = websocket_accept(key.as_bytes());
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        res.headers_mut().insert("upgrade", "websocket".parse().unwrap());
        res.headers_mut().insert("connection", "Upgrade".parse().unwrap());
        res.headers_mut().insert("sec-websocket-accept", accept.parse().unwrap());
        res
    })
    .await
}

/// Echoes WebSocket frames until a close frame (echoed too) or the end of the stream. A frame the
/// client did not mask is a protocol error (RFC 6455 §5.1): close 1002 and hang up.
async fn echo_frames<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut io: S) {
    loop {
        let mut head = [0u8; 2];
        if io.read_exact(&mut head).await.is_err() {
            return;
        }
        if head[1] & 0x80 == 0 {
            let _ = io.write_all(&[0x88, 0x02, 0x03, 0xea]).await;
            return;
        }
        let len = match head[1] & 0x7f {
            126 => {
                let mut len = [0u8; 2];
                if io.read_exact(&mut len).await.is_err() {
                    return;
                }
                usize::from(u16::from_be_bytes(len))
            }
            127 => return,
            len => usize::from(len),
        };
        let mut mask = [0u8; 4];
        let mut payload = vec![0u8; len];
        if io.read_exact(&mut mask).await.is_err() || io.read_exact(&mut payload).await.is_err() {
            return;
        }
        payload.iter_mut().zip(mask.iter().cycle()).for_each(|(b, m)| *b ^= m);
        let mut frame = vec![head[0]];
        match u16::try_from(len) {
            Ok(short) if short < 126 => frame.push(u8::try_from(short).unwrap()),
            Ok(long) => frame.extend([&[126][..], &long.to_be_bytes()].concat()),
            Err(_) => return,
        }
        frame.extend(payload);
        if io.write_all(&frame).await.is_err() || head[0] & 0x0f == 0x8 {
            return;
        }
    }
}

/// A client frame (RFC 6455 §5.2): `first` is FIN and opcode, the payload masked with `mask`;
/// payloads shorter than 2^16 bytes.
fn client_frame(first: u8, mask: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![first];
    match u8::try_from(payload.len()) {
        Ok(len) if len < 126 => frame.push(0x80 | len),
        _ => frame.extend([&[0x80 | 126][..], &u16::try_from(payload.len()).unwrap().to_be_bytes()].concat()),
    }
    frame.extend(mask);
    frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}

/// Reads up to and including the blank line that ends a response head, byte by byte so that
/// nothing after it is consumed.
async fn read_head(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(s.read_u8().await.expect("a response head"));
    }
    head
}

/// The `Sec-WebSocket-Accept` value for `key` (RFC 6455 §4.2.2): base64 of the SHA-1 of the key
/// and the protocol's GUID.
fn websocket_accept(key: &[u8]) -> String {
    use base64::Engine as _;
    let input = [key, b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"].concat();
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

#[tokio::test]
async fn failed_client_authentication_is_counted() {
    let pki = Pki::new();
    let app = ok_backend("app").await;
    let (server, server_addr, _d1) = server_proxy(&pki, app.addr).await;

    // The allowed identity with its own certificate gets through: one good handshake.
    let (web, _d2) = pki.identity(&spiffe("web"));
    let (_, answer) =
        within("a request with web's certificate", mesh_request(web.client_config(false), server_addr, CLOSE_REQUEST))
            .await
            .expect("a request with web's certificate");
    assert!(answer.starts_with(b"HTTP/1.1 200 "), "{}", String::from_utf8_lossy(&answer));

    // A certificate for the same identity from another CA, by a client that trusts the server's.
    let rogue = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let files = rogue.write(dir.path(), &spiffe("web"));
    std::fs::write(dir.path().join("ca.pem"), pki.ca_pem()).unwrap();
    let outsider = kapal_mesh::tls::MeshTls::load(files).unwrap();
    let refused = within(
        "a request with a foreign certificate",
        mesh_request(outsider.client_config(false), server_addr, CLOSE_REQUEST),
    )
    .await;
    assert_refused_in_handshake(refused);

    // No certificate at all, though the client speaks the mesh's ALPN and trusts its CA.
    let mut anonymous = trusting_any_name(&pki.ca_pem());
    anonymous.alpn_protocols = vec![kapal_mesh::tls::ALPN_HTTP.to_vec()];
    let refused =
        within("a request without a certificate", mesh_request(Arc::new(anonymous), server_addr, CLOSE_REQUEST)).await;
    assert_refused_in_handshake(refused);

    // The server proxy counts a failed handshake for each (once its connection task has ended).
    for _ in 0..500 {
        if handshakes(&server, "error").await >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(handshakes(&server, "error").await, 2);
    assert_eq!(handshakes(&server, "ok").await, 1);
    assert_eq!(app.hits(), 1);
}

/// The server ended the handshake with an alert: no answer, not even an empty one.
fn assert_refused_in_handshake(r: std::io::Result<(rustls::pki_types::CertificateDer<'static>, Vec<u8>)>) {
    match r {
        Err(e) => {
            let alert = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
            assert!(matches!(alert, Some(rustls::Error::AlertReceived(_))), "{e:?}");
        }
        Ok((_, answer)) => panic!("answered: {:?}", String::from_utf8_lossy(&answer)),
    }
}

/// A request that asks the server to close the connection after its answer.
const CLOSE_REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

/// Sends `request` on a new mTLS connection to `addr` and reads until the server closes it:
/// the server's certificate and the whole answer.
async fn mesh_request(
    config: Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
    request: &[u8],
) -> std::io::Result<(rustls::pki_types::CertificateDer<'static>, Vec<u8>)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls =
        tokio_rustls::TlsConnector::from(config).connect(kapal_mesh::tls::placeholder_server_name(), tcp).await?;
    let certs = tls.get_ref().1.peer_certificates();
    let cert = certs.and_then(|c| c.first()).cloned().ok_or_else(|| std::io::Error::other("no server certificate"))?;
    tls.write_all(request).await?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await?;
    Ok((cert, answer))
}

/// The server proxy's count of inbound TLS handshakes with `result`, from its admin `/metrics`.
async fn handshakes(p: &kapal_mesh::Proxy, result: &str) -> u64 {
    let series = format!(r#"kapal_proxy_tls_handshakes_total{{direction="inbound",result="{result}"}} "#);
    let metrics = admin(p, "/metrics").await.body;
    metrics.lines().find_map(|l| l.strip_prefix(series.as_str())).map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test]
async fn a_failed_certificate_reload_is_retried_until_the_files_load() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let files = pki.write(dir.path(), &spiffe("api"));
    let tls = Arc::new(kapal_mesh::tls::MeshTls::load(files).unwrap());
    let metrics = Arc::new(kapal_mesh::metrics::Metrics::default());
    let watcher = tokio::spawn(tls.clone().watch(Duration::from_millis(20), metrics.clone()));
    let before = tls.server_config();
    let reloads = |result: &str| {
        let series = format!(r#"kapal_proxy_certificate_reloads_total{{direction="local",result="{result}"}} 1"#);
        metrics.encode().lines().any(|line| line == series)
    };
    // The watcher has read the files' times, and the clock has moved past them.
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A rotation caught half-written: the new certificate is there, its key not yet.
    let paths = ["ca.pem", "cert.pem", "key.pem"].map(|f| dir.path().join(f));
    std::fs::write(&paths[1], "not a certificate").unwrap();
    eventually("the failed reload", || reloads("error")).await;
    // The watcher retries at every poll, silently: still one failure told, the old certificate
    // still in use.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(reloads("error"), "a retry was counted as another failure");
    assert!(Arc::ptr_eq(&before, &tls.server_config()), "the previous certificate stays in use");
    // The rest lands within the same tick of the file system's clock: the files' times are
    // what the watcher last saw, and only the retry can notice the now whole set.
    let times = paths.clone().map(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    pki.write(dir.path(), &spiffe("api"));
    for (path, time) in paths.iter().zip(times) {
        std::fs::File::options().write(true).open(path).unwrap().set_modified(time).unwrap();
    }
    eventually("the retried reload", || reloads("ok")).await;
    assert!(!Arc::ptr_eq(&before, &tls.server_config()));
    assert!(reloads("error"));
    watcher.abort();
}

//! `--otlp-endpoint`: spans exported as OTLP/HTTP JSON to an in-test collector.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kapal_mesh::config::ProxyConfig;
use kapal_mesh::otlp::OtlpOptions;
use kapal_mesh::{Proxy, ProxyOptions};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::support::*;

/// One POST the collector received: path, content type, body.
type Post = (String, String, Value);

/// A collector on 127.0.0.1:0 that answers 200 to every POST and hands it to the test.
async fn collector() -> (SocketAddr, mpsc::UnboundedReceiver<Post>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let ctype = req
                            .headers()
                            .get(http::header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let _ = tx.send((path, ctype, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, rx)
}

async fn exporting_proxy(
    yaml: &str,
    collector: SocketAddr,
    name: &str,
    sa: &str,
    pki: &Pki,
) -> (Proxy, tempfile::TempDir) {
    let (tls, dir) = pki.identity(&spiffe(sa));
    let otlp = OtlpOptions {
        service_name: name.to_string(),
        interval: Duration::from_millis(20),
        ..OtlpOptions::new(format!("http://{collector}/"))
    };
    let opts = ProxyOptions { otlp: Some(otlp), ..options() };
    let config = ProxyConfig::from_yaml(&format!("{HEAD}{yaml}")).unwrap();
    (Proxy::start(config, opts, Some(tls)).await.unwrap(), dir)
}

/// The spans of `service.name` = `name` among the next posts, until one is found.
async fn next_span(rx: &mut mpsc::UnboundedReceiver<Post>, name: &str, spans: &mut Vec<(String, Value)>) -> Value {
    loop {
        if let Some(i) = spans.iter().position(|(n, _)| n == name) {
            return spans.remove(i).1;
        }
        let (path, ctype, body) =
            tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("an export").unwrap();
        assert_eq!(path, "/v1/traces");
        assert_eq!(ctype, "application/json");
        for rs in body["resourceSpans"].as_array().unwrap() {
            let attrs = rs["resource"]["attributes"].as_array().unwrap();
            let service =
                attrs.iter().find(|a| a["key"] == "service.name").unwrap()["value"]["stringValue"].as_str().unwrap();
            assert_eq!(rs["scopeSpans"][0]["scope"]["name"], "kapal-mesh");
            for span in rs["scopeSpans"][0]["spans"].as_array().unwrap() {
                spans.push((service.to_string(), span.clone()));
            }
        }
    }
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"].as_array().unwrap().iter().find(|a| a["key"] == key).map(|a| &a["value"])
}

fn unix_nanos(v: &Value) -> u128 {
    v.as_str().expect("times are strings").parse().expect("decimal nanoseconds")
}

#[tokio::test]
async fn each_hop_exports_a_span_in_the_callers_trace() {
    let pki = Pki::new();
    let app = ok_backend("app").await;
    let (collector, mut rx) = collector().await;
    let (api, _d1) = exporting_proxy(
        &format!("inbound: [{{listen: '127.0.0.1:0', forwardPort: {}, requireMtls: true}}]\n", app.addr.port()),
        collector,
        "api-proxy",
        "api",
        &pki,
    )
    .await;
    let api_addr = api.inbound_addr("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (web, _d2) = exporting_proxy(
        &format!(
            "services:
  - name: api
    listen: 127.0.0.1:0
    protocol: http1
    routes: [{{name: users, matches: [{{path: {{value: /users}}}}]}}]
    endpoints: [{{address: '{api_addr}', identity: '{}'}}]
  - {{name: empty, listen: 127.0.0.1:0}}
",
            spiffe("api")
        ),
        collector,
        "web-proxy",
        "web",
        &pki,
    )
    .await;

    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let req = Request::get(format!("{}/users/7", url(&web, "api").await))
        .header("traceparent", incoming)
        .body(Full::default())
        .unwrap();
    let res = send(&h1_client(), req).await;
    assert_eq!(res.status, StatusCode::OK);
    let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    // What the application saw: the trace, with the inbound proxy's span as parent.
    let seen = res.header("echo-traceparent").unwrap().to_string();
    let app_parent = seen.split('-').nth(2).unwrap();

    let mut pending = Vec::new();
    let client = next_span(&mut rx, "web-proxy", &mut pending).await;
    let server = next_span(&mut rx, "api-proxy", &mut pending).await;

    assert_eq!(client["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(client["parentSpanId"], "00f067aa0ba902b7");
    assert_eq!(client["kind"], 3);
    assert_eq!(client["name"], "GET api");
    assert_eq!(attr(&client, "http.request.method").unwrap()["stringValue"], "GET");
    assert_eq!(attr(&client, "http.route").unwrap()["stringValue"], "users");
    assert_eq!(attr(&client, "http.response.status_code").unwrap()["intValue"], "200");
    assert_eq!(attr(&client, "url.path").unwrap()["stringValue"], "/users/7");
    assert_eq!(attr(&client, "kapal.peer.identity").unwrap()["stringValue"], spiffe("api"));
    assert_eq!(attr(&client, "network.peer.port").unwrap()["intValue"], api_addr.port().to_string());
    assert!(client.get("status").is_none(), "a 200 is not an error");

    // The next hop continues the same trace as a child of the outbound span.
    assert_eq!(server["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(server["parentSpanId"], client["spanId"]);
    assert_eq!(server["spanId"], app_parent);
    assert_eq!(server["kind"], 2);
    assert_eq!(attr(&server, "kapal.peer.identity").unwrap()["stringValue"], spiffe("web"));
    assert_eq!(attr(&server, "kapal.direction").unwrap()["stringValue"], "inbound");

    for span in [&client, &server] {
        let (start, end) = (unix_nanos(&span["startTimeUnixNano"]), unix_nanos(&span["endTimeUnixNano"]));
        assert!(before <= start && start <= end && end <= after, "{before} {start} {end} {after}");
        assert_eq!(span["spanId"].as_str().unwrap().len(), 16);
    }
    // The outbound span covers the inbound one.
    assert!(unix_nanos(&client["startTimeUnixNano"]) <= unix_nanos(&server["startTimeUnixNano"]));
    assert!(unix_nanos(&client["endTimeUnixNano"]) >= unix_nanos(&server["endTimeUnixNano"]));

    // An unsampled request is not exported; a failing one is an error span in a new trace.
    let unsampled = Request::get(format!("{}/users/unsampled", url(&web, "api").await))
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
        .body(Full::default())
        .unwrap();
    assert_eq!(send(&h1_client(), unsampled).await.status, StatusCode::OK);
    let res = get(&h1_client(), format!("{}/x", url(&web, "empty").await)).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    let failed = next_span(&mut rx, "web-proxy", &mut pending).await;
    assert_eq!(attr(&failed, "url.path").unwrap()["stringValue"], "/x", "the unsampled request was exported");
    assert_eq!(attr(&failed, "http.response.status_code").unwrap()["intValue"], "503");
    assert_eq!(attr(&failed, "kapal.error").unwrap()["stringValue"], "no-endpoints");
    assert_eq!(failed["status"]["code"], 2);
    assert!(failed.get("parentSpanId").is_none());
    assert_ne!(failed["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    // Counted once the collector has answered.
    let exported = r#"kapal_proxy_otlp_spans_total{result="exported"} 2"#;
    for _ in 0..100 {
        if web.metrics().encode().contains(exported) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let metrics = web.metrics().encode();
    assert!(metrics.contains(exported), "{metrics}");
}

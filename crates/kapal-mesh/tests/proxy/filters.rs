//! HTTPRoute filters URLRewrite and RequestMirror against real backends.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::support::*;

/// A request as a backend saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query.
    target: String,
    /// `Host` header, or the URI authority (HTTP/2).
    host: String,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// A backend that records every request (once its body is read) and answers `status` after
/// `delay`.
async fn recorder(status: u16, delay: Duration) -> (SocketAddr, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Log = Arc::default();
    let seen = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                        let host = parts
                            .headers
                            .get(http::header::HOST)
                            .and_then(|h| h.to_str().ok())
                            .map(str::to_string)
                            .or_else(|| parts.uri.authority().map(|a| a.to_string()))
                            .unwrap_or_default();
                        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
                        seen.lock().unwrap().push(Seen { method: parts.method.to_string(), target, host, body });
                        tokio::time::sleep(delay).await;
                        let mut res = Response::new(Full::new(Bytes::from_static(b"recorded")));
                        *res.status_mut() = StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(res)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, log)
}

fn last(log: &Log) -> Seen {
    log.lock().unwrap().last().cloned().expect("the backend saw a request")
}

#[tokio::test]
async fn url_rewrite_replaces_the_prefix_or_the_full_path_and_the_host() {
    let (api, log) = recorder(200, Duration::ZERO).await;
    let p = proxy(&format!(
        "services:
  - name: front
    listen: 127.0.0.1:0
    routes:
      - name: prefix
        matches: [{{path: {{value: /api/v1/}}}}]
        filters:
          - type: URLRewrite
            urlRewrite: {{hostname: api.internal, path: {{type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}}
        backendRefs: [{{name: api}}]
      - name: strip
        matches: [{{path: {{value: /strip}}}}]
        filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /}}}}}}]
        backendRefs: [{{name: api}}]
      - name: full
        matches: [{{path: {{type: RegularExpression, value: '/old/.*'}}}}]
        filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplaceFullPath, replaceFullPath: /new}}}}}}]
        backendRefs: [{{name: api}}]
  - {{name: api, endpoints: [{{address: '{api}'}}]}}
"
    ))
    .await;
    let base = url(&p, "front").await;
    let authority = base.trim_start_matches("http://").to_string();
    let cases = [
        ("/api/v1/users?limit=5", "/v2/users?limit=5", "api.internal"),
        ("/api/v1", "/v2", "api.internal"),
        ("/api/v1/", "/v2/", "api.internal"),
        ("/strip/three", "/three", authority.as_str()),
        ("/strip", "/", authority.as_str()),
        ("/old/a/b?q=1", "/new?q=1", authority.as_str()),
    ];
    for client in [h1_client(), h2_client()] {
        for (path, target, host) in &cases {
            let res = get(&client, format!("{base}{path}")).await;
            assert_eq!(res.status, StatusCode::OK, "{path}");
            let seen = last(&log);
            assert_eq!((seen.target.as_str(), seen.host.as_str()), (*target, *host), "{path}");
        }
    }
    // `/api/v1x` is not under the prefix `/api/v1`: no route.
    assert_eq!(get(&h1_client(), format!("{base}/api/v1x")).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn request_mirror_sends_copies_that_never_affect_the_main_request() {
    let (main, main_log) = recorder(200, Duration::ZERO).await;
    // The mirror is slow and failing: neither may show in the main response.
    let (shadow, shadow_log) = recorder(500, Duration::from_secs(2)).await;
    let p = proxy(&format!(
        "services:
  - name: front
    listen: 127.0.0.1:0
    routes:
      - name: copy
        matches: [{{path: {{value: /copy}}}}]
        filters:
          - type: RequestHeaderModifier
            requestHeaderModifier: {{set: [{{name: x-from, value: front}}]}}
          - type: RequestMirror
            requestMirror: {{backendRef: {{name: shadow}}, maxBodyBytes: 16}}
        backendRefs: [{{name: main}}]
      - name: never
        matches: [{{path: {{value: /never}}}}]
        filters: [{{type: RequestMirror, requestMirror: {{backendRef: {{name: shadow}}, percent: 0}}}}]
        backendRefs: [{{name: main}}]
      - name: dead
        matches: [{{path: {{value: /dead}}}}]
        filters: [{{type: RequestMirror, requestMirror: {{backendRef: {{name: nowhere}}}}}}]
        backendRefs: [{{name: main}}]
  - {{name: main, endpoints: [{{address: '{main}'}}]}}
  - {{name: shadow, endpoints: [{{address: '{shadow}'}}]}}
  - {{name: nowhere, endpoints: [{{address: '127.0.0.1:1'}}], connectTimeout: 200ms}}
"
    ))
    .await;
    let (client, base) = (h1_client(), url(&p, "front").await);
    let post = |path: &str, body: &'static str| {
        Request::post(format!("{base}{path}")).body(Full::new(Bytes::from_static(body.as_bytes()))).unwrap()
    };

    let start = Instant::now();
    let res = send(&client, post("/copy/a?x=1", "small body")).await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(start.elapsed() < Duration::from_secs(1), "the main request waited for the mirror");
    assert_eq!(last(&main_log).body, "small body");
    wait_for(|| shadow_log.lock().unwrap().len() == 1).await;
    let copy = last(&shadow_log);
    assert_eq!((copy.method.as_str(), copy.target.as_str()), ("POST", "/copy/a?x=1"));
    assert_eq!(copy.body, "small body");

    // A body over maxBodyBytes goes to the main backend whole, and is not mirrored.
    let big = "0123456789abcdefghijklmnopqrstuvwxyz";
    assert_eq!(send(&client, post("/copy/big", big)).await.status, StatusCode::OK);
    assert_eq!(last(&main_log).body, big);
    for _ in 0..10 {
        assert_eq!(get(&client, format!("{base}/never")).await.status, StatusCode::OK);
    }
    // A mirror that cannot be reached changes nothing for the client either.
    assert_eq!(send(&client, post("/dead", "x")).await.status, StatusCode::OK);
    let metrics = p.metrics();
    let series = |route: &str, mirror: &str, result: &str| {
        format!(
            r#"kapal_proxy_mirrored_requests_total{{service="front",route="{route}",mirror="{mirror}",result="{result}"}} 1"#
        )
    };
    wait_for(|| metrics.encode().contains(&series("dead", "nowhere", "failed"))).await;
    wait_for(|| metrics.encode().contains(&series("copy", "shadow", "sent"))).await;
    let text = metrics.encode();
    assert!(text.contains(&series("copy", "shadow", "body_too_large")), "{text}");
    assert!(!text.contains(r#"mirrored_requests_total{service="front",route="never""#), "{text}");
    assert_eq!(shadow_log.lock().unwrap().len(), 1);
    assert_eq!(main_log.lock().unwrap().len(), 13);
}

async fn wait_for(mut done: impl FnMut() -> bool) {
    for _ in 0..600 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition not reached in 3s");
}

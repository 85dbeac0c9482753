//! Retries, outlier ejection and recovery, fault injection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;

use crate::support::*;

fn flaky() -> Handler {
    // Every other request fails.
    Arc::new(|_, n| if n % 2 == 0 { Reply::status(503) } else { Reply::ok() })
}

#[tokio::test]
async fn retries_hide_a_flaky_backend() {
    let with = backend("with", flaky()).await;
    let without = backend("without", flaky()).await;
    let posts = backend("posts", flaky()).await;
    let p = proxy(&format!(
        "services:
  - name: with
    listen: 127.0.0.1:0
    endpoints: [{{address: '{}'}}]
    routes: [{{retry: {{attempts: 2, codes: [503]}}}}]
  - name: without
    listen: 127.0.0.1:0
    endpoints: [{{address: '{}'}}]
  - name: posts
    listen: 127.0.0.1:0
    endpoints: [{{address: '{}'}}]
    routes: [{{retry: {{attempts: 2, codes: [503], nonIdempotent: true}}}}]
",
        with.addr, without.addr, posts.addr
    ))
    .await;
    let client = h1_client();
    let with_body = |method: http::Method, base: String| {
        Request::builder().method(method).uri(format!("{base}/")).body(Full::new(Bytes::from("payload"))).unwrap()
    };
    for i in 0..20 {
        // PUTs (idempotent) with a small body are replayed too.
        let res = send(&client, with_body(http::Method::PUT, url(&p, "with").await)).await;
        assert_eq!((res.status, res.body.as_str()), (StatusCode::OK, "with:7"), "request {i}");
    }
    assert_eq!(with.hits(), 40);
    // A POST the endpoint answered with 503 may have had its effect: it is not repeated.
    let mut failed = 0;
    for _ in 0..20 {
        if send(&client, with_body(http::Method::POST, url(&p, "with").await)).await.status
            == StatusCode::SERVICE_UNAVAILABLE
        {
            failed += 1;
        }
    }
    assert_eq!((failed, with.hits()), (10, 60));
    // Unless the policy says the route's POSTs are safe to repeat.
    for i in 0..20 {
        let res = send(&client, with_body(http::Method::POST, url(&p, "posts").await)).await;
        assert_eq!((res.status, res.body.as_str()), (StatusCode::OK, "posts:7"), "request {i}");
    }
    assert_eq!(posts.hits(), 40);
    let mut failed = 0;
    for _ in 0..20 {
        if get(&client, format!("{}/", url(&p, "without").await)).await.status == StatusCode::SERVICE_UNAVAILABLE {
            failed += 1;
        }
    }
    assert_eq!(failed, 10);
    let metrics = admin(&p, "/metrics").await.body;
    for service in ["with", "posts"] {
        let series = format!(r#"kapal_proxy_retries_total{{service="{service}",route="0",result="retried"}} 20"#);
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
}

#[tokio::test]
async fn the_retry_budget_stops_retry_storms() {
    let down = backend("down", Arc::new(|_, _| Reply::status(503))).await;
    let p = proxy(&format!(
        "services:
  - name: down
    listen: 127.0.0.1:0
    endpoints: [{{address: '{}'}}]
    routes: [{{retry: {{attempts: 3, codes: [503]}}}}]
    retryBudget: {{ratio: 0.1, minRetriesPerSecond: 1, ttl: 10s}}
",
        down.addr
    ))
    .await;
    let client = h1_client();
    for _ in 0..50 {
        assert_eq!(get(&client, format!("{}/", url(&p, "down").await)).await.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    // 50 requests; retries capped at 10 (reserve) + 10% of 50 = 15, not 150.
    assert_eq!(down.hits(), 50 + 15);
}

#[tokio::test]
async fn per_try_timeouts_are_retried_on_another_endpoint() {
    let slow = backend("slow", Arc::new(|_, _| Reply { status: StatusCode::OK, delay: Duration::from_secs(5) })).await;
    let fast = ok_backend("fast").await;
    let p = proxy(&format!(
        "services:
  - name: web
    listen: 127.0.0.1:0
    endpoints: [{{address: '{}'}}, {{address: '{}'}}]
    routes: [{{timeouts: {{request: 2s, backendRequest: 100ms}}, retry: {{attempts: 3}}}}]
",
        slow.addr, fast.addr
    ))
    .await;
    let client = h1_client();
    let started = Instant::now();
    for _ in 0..5 {
        let res = get(&client, format!("{}/", url(&p, "web").await)).await;
        assert_eq!((res.status, res.header("x-backend")), (StatusCode::OK, Some("fast")));
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn failing_endpoints_are_ejected_and_recover() {
    let healthy = Arc::new(AtomicBool::new(false));
    let h = healthy.clone();
    let bad =
        backend("bad", Arc::new(move |_, _| if h.load(Ordering::SeqCst) { Reply::ok() } else { Reply::status(500) }))
            .await;
    // The good endpoint is slower, so the latency-aware balancer prefers the bad one until it is
    // ejected: the classic fast-failing black hole that outlier detection exists for.
    let good =
        backend("good", Arc::new(|_, _| Reply { status: StatusCode::OK, delay: Duration::from_millis(2) })).await;
    let p = proxy(&format!(
        "services:
  - name: web
    listen: 127.0.0.1:0
    endpoints: [{{address: '{}'}}, {{address: '{}'}}]
    outlierDetection: {{consecutiveFailures: 2, baseEjectionTime: 600ms, maxEjectionTime: 1s}}
",
        bad.addr, good.addr
    ))
    .await;
    let client = h1_client();
    let base = url(&p, "web").await;
    let mut errors = 0;
    let started = Instant::now();
    for _ in 0..50 {
        if get(&client, format!("{base}/")).await.status != StatusCode::OK {
            errors += 1;
        }
    }
    // Two failures eject the bad endpoint; every later request goes to the good one.
    assert!(started.elapsed() < Duration::from_millis(600), "the loop outlasted the ejection");
    assert_eq!(errors, 2);
    assert_eq!(bad.hits(), 2);
    let metrics = admin(&p, "/metrics").await.body;
    assert!(
        metrics
            .contains(&format!("kapal_proxy_endpoint_ejections_total{{service=\"web\",endpoint=\"{}\"}} 1", bad.addr)),
        "{metrics}"
    );

    // Once it is healthy and the ejection has passed, it takes traffic again.
    healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(650)).await;
    for _ in 0..200 {
        assert_eq!(get(&client, format!("{base}/")).await.status, StatusCode::OK);
    }
    assert!(bad.hits() > 2 + 10, "recovered endpoint got {} requests", bad.hits() - 2);
}

#[tokio::test]
async fn fault_injection_aborts_and_delays_by_percentage() {
    let b = ok_backend("b").await;
    let p = proxy(&format!(
        "services:
  - name: abort
    listen: 127.0.0.1:0
    endpoints: [{{address: '{addr}'}}]
    routes: [{{fault: {{abort: {{httpStatus: 418, percentage: 30}}}}}}]
  - name: delay
    listen: 127.0.0.1:0
    endpoints: [{{address: '{addr}'}}]
    routes: [{{fault: {{delay: {{fixedDelay: 50ms, percentage: 100}}}}}}]
",
        addr = b.addr
    ))
    .await;
    let client = h1_client();
    let base = url(&p, "abort").await;
    let mut aborted = 0;
    for _ in 0..1000 {
        let res = get(&client, format!("{base}/")).await;
        if res.status.as_u16() == 418 {
            assert_eq!(res.header("x-kapal-error"), Some("fault-injected"));
            aborted += 1;
        }
    }
    // 30% ± 4.5 standard deviations.
    assert!((235..=365).contains(&aborted), "{aborted} of 1000 aborted");
    assert_eq!(b.hits(), 1000 - aborted);
    let started = Instant::now();
    assert_eq!(get(&client, format!("{}/", url(&p, "delay").await)).await.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(50));
}

#[tokio::test]
async fn fault_delay_applies_to_its_percentage_of_requests() {
    let b = ok_backend("b").await;
    let p = proxy(&format!(
        "services:
  - name: delay
    listen: 127.0.0.1:0
    endpoints: [{{address: '{}'}}]
    routes: [{{fault: {{delay: {{fixedDelay: 1s, percentage: 50}}}}}}]
",
        b.addr
    ))
    .await;
    let base = url(&p, "delay").await;
    // 40 clients, 5 requests each: about 2.5 s in all.
    let workers: Vec<_> = (0..40)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move {
                let client = h1_client();
                let mut delayed = 0;
                for _ in 0..5 {
                    let started = Instant::now();
                    assert_eq!(get(&client, format!("{base}/")).await.status, StatusCode::OK);
                    // A delayed request takes at least 1 s; one that is not, on loopback, a few
                    // milliseconds, and even on a machine busy with other tests far less than
                    // half a second.
                    if started.elapsed() >= Duration::from_millis(500) {
                        delayed += 1;
                    }
                }
                delayed
            })
        })
        .collect();
    let mut delayed = 0;
    for w in workers {
        delayed += w.await.unwrap();
    }
    // 50% of 200 ± 4.2 standard deviations (7.07).
    assert!((70..=130).contains(&delayed), "{delayed} of 200 requests delayed");
    // Delayed, not dropped: every request reached the backend.
    assert_eq!(b.hits(), 200);
}

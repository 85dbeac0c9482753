//! The API server scenario (issue: API server that real kubectl and client libraries drive).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

use crate::server::{self, Server};
use crate::stats::{Samples, rss_mib};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// ConfigMaps for the RSS and LIST/GET figures.
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// ConfigMaps created in the throughput figure.
    #[arg(long, default_value_t = 20_000)]
    creates: usize,
    /// Concurrent clients in the throughput figure.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Concurrent watchers in the fan-out figure.
    #[arg(long, default_value_t = 1_000)]
    watchers: usize,
    /// Cold starts to average.
    #[arg(long, default_value_t = 5)]
    starts: usize,
}

/// `kapal server` without controllers: these figures are the API server's alone.
async fn start(kapal: &Path) -> anyhow::Result<(Server, Duration)> {
    start_with(kapal, &[]).await
}

async fn start_with(kapal: &Path, extra: &[&str]) -> anyhow::Result<(Server, Duration)> {
    let mut args = vec!["--disable-controllers"];
    args.extend_from_slice(extra);
    server::start(kapal, &args).await
}

fn config_map(name: &str) -> ConfigMap {
    let payload = "x".repeat(1024);
    serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"payload": payload}}),
    )
    .unwrap_or_default()
}

/// Creates `n` ConfigMaps with `clients` concurrent clients; returns latencies and wall time.
async fn create_many(server: &Server, n: usize, clients: usize, prefix: &str) -> anyhow::Result<(Samples, Duration)> {
    let mut apis = Vec::new();
    for _ in 0..clients {
        apis.push(Api::<ConfigMap>::namespaced(server.client().await?, "default"));
    }
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (w, api) in apis.into_iter().enumerate() {
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut s = Samples::default();
            let mut i = w;
            while i < n {
                let t = Instant::now();
                api.create(&PostParams::default(), &config_map(&format!("{prefix}-{i}"))).await?;
                s.push(t.elapsed());
                i += clients;
            }
            Ok::<_, kube::Error>(s)
        }));
    }
    let mut all = Samples::default();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok((all, t0.elapsed()))
}

/// The store alone, same payloads and concurrency: the baseline the API's overhead sits on.
async fn store_baseline(n: usize, writers: usize) -> anyhow::Result<(Samples, Duration)> {
    let dir = tempfile::tempdir()?;
    let store =
        kapal_store::sqlite::SqliteStore::open(&dir.path().join("state.db")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let value = serde_json::to_vec(&config_map("x"))?;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            use kapal_store::Store;
            let mut s = Samples::default();
            let mut i = w;
            while i < n {
                let t = Instant::now();
                store.create(&format!("/registry/core/configmaps/default/b-{i}"), value.clone()).await?;
                s.push(t.elapsed());
                i += writers;
            }
            Ok::<_, kapal_store::StoreError>(s)
        }));
    }
    let mut all = Samples::default();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok((all, t0.elapsed()))
}

fn row(name: &str, value: String, target: &str) {
    println!("| {name} | {value} | {target} |");
    eprintln!("{}", json!({"figure": name, "value": value, "target": target}));
}

pub async fn run(kapal: &Path, args: Args) -> anyhow::Result<()> {
    println!("| figure | measured | target |\n|---|---|---|");

    let mut starts = Samples::default();
    let mut idle_rss = Vec::new();
    for _ in 0..args.starts {
        let (server, took) = start(kapal).await?;
        starts.push(took);
        tokio::time::sleep(Duration::from_secs(2)).await;
        idle_rss.push(rss_mib(server.child.id()));
    }
    row("cold start to /readyz 200 (median of runs)", format!("{:.0} ms", starts.pct_ms(50.0)), "≤ 300 ms");
    let rss = idle_rss.iter().copied().fold(f64::NAN, f64::max);
    row("idle RSS after start", format!("{rss:.1} MiB"), "≤ 40 MB");

    let (server, _) = start(kapal).await?;
    create_many(&server, args.objects, args.clients, "obj").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    row(
        &format!("RSS with {} ConfigMaps of 1 KiB", args.objects),
        format!("{:.1} MiB", rss_mib(server.child.id())),
        "≤ 120 MB",
    );
    let api = Api::<ConfigMap>::namespaced(server.client().await?, "default");
    let mut lists = Samples::default();
    for _ in 0..30 {
        let t = Instant::now();
        let l = api.list(&ListParams::default()).await?;
        lists.push(t.elapsed());
        anyhow::ensure!(l.items.len() >= args.objects, "list returned {} items", l.items.len());
    }
    row(
        &format!("LIST of {} objects, kube-rs typed client, p50 / p99", args.objects),
        format!("{:.1} / {:.1} ms", lists.pct_ms(50.0), lists.pct_ms(99.0)),
        "p99 ≤ 100 ms",
    );
    let raw_client = server.client().await?;
    let mut raw = Samples::default();
    for _ in 0..30 {
        let req = http::Request::get("/api/v1/namespaces/default/configmaps").body(Vec::new())?;
        let t = Instant::now();
        let body = raw_client.request_text(req).await?;
        raw.push(t.elapsed());
        anyhow::ensure!(body.len() > args.objects * 1024, "short list body");
    }
    row(
        &format!("LIST of {} objects, raw bytes (server + TLS + transfer), p50 / p99", args.objects),
        format!("{:.1} / {:.1} ms", raw.pct_ms(50.0), raw.pct_ms(99.0)),
        "p99 ≤ 100 ms",
    );
    let mut gets = Samples::default();
    for i in 0..2000 {
        let t = Instant::now();
        api.get(&format!("obj-{}", i % args.objects)).await?;
        gets.push(t.elapsed());
    }
    row("GET p50 / p99", format!("{:.2} / {:.2} ms", gets.pct_ms(50.0), gets.pct_ms(99.0)), "p99 ≤ 2 ms");
    drop(server);

    let (base, base_wall) = store_baseline(args.creates, args.clients).await?;
    let (server, _) = start(kapal).await?;
    let (lat, wall) = create_many(&server, args.creates, args.clients, "load").await?;
    row(
        &format!("{} clients creating {} ConfigMaps: creates/s", args.clients, args.creates),
        format!(
            "{:.0}/s (store alone: {:.0}/s)",
            args.creates as f64 / wall.as_secs_f64(),
            args.creates as f64 / base_wall.as_secs_f64()
        ),
        "≥ 3,000/s",
    );
    row(
        "create latency p50 / p99",
        format!(
            "{:.1} / {:.1} ms (store alone: {:.1} / {:.1} ms)",
            lat.pct_ms(50.0),
            lat.pct_ms(99.0),
            base.pct_ms(50.0),
            base.pct_ms(99.0)
        ),
        "p99 ≤ 50 ms",
    );
    drop(server);

    // The same load with the server on a local etcd member instead of the embedded store.
    let etcd = crate::etcd::Etcd::start_or_use(None).await?;
    let (server, _) = start_with(kapal, &["--datastore-endpoint", &etcd.endpoint]).await?;
    let (e_lat, e_wall) = create_many(&server, args.creates, args.clients, "load").await?;
    row(
        &format!("same load on etcd: creates/s (SQLite above: {:.0}/s)", args.creates as f64 / wall.as_secs_f64()),
        format!(
            "{:.0}/s, p50 / p99 {:.1} / {:.1} ms",
            args.creates as f64 / e_wall.as_secs_f64(),
            e_lat.pct_ms(50.0),
            e_lat.pct_ms(99.0)
        ),
        "SQLite faster",
    );
    drop(server);
    drop(etcd);

    let (server, _) = start(kapal).await?;
    let delays = watch_fanout(&server, args.watchers, 100).await?;
    // An event that reaches a watcher before the writer has its acknowledgment counts as 0.
    row(
        &format!("{} watchers: write ack → event p50 / p99", args.watchers),
        format!("{:.1} / {:.1} ms ({} deliveries)", delays.pct_ms(50.0), delays.pct_ms(99.0), delays.len()),
        "p99 ≤ 50 ms",
    );
    Ok(())
}

/// Opens `watchers` watches on one namespace, writes `writes` objects, and measures the delay
/// from each write's acknowledgment to its delivery on every watch.
async fn watch_fanout(server: &Server, watchers: usize, writes: usize) -> anyhow::Result<Samples> {
    let acks: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let delays: Arc<Mutex<Samples>> = Arc::default();
    // Watches share connections over HTTP/2, 100 per client.
    let mut clients = Vec::new();
    for _ in 0..watchers.div_ceil(100) {
        clients.push(server.client().await?);
    }
    let writer = Api::<ConfigMap>::namespaced(server.client().await?, "default");
    let rv = writer.list(&ListParams::default().limit(1)).await?.metadata.resource_version.unwrap_or_default();
    let mut tasks = Vec::new();
    for w in 0..watchers {
        let api = Api::<ConfigMap>::namespaced(clients[w / 100].clone(), "default");
        let (acks, delays, rv) = (acks.clone(), delays.clone(), rv.clone());
        tasks.push(tokio::spawn(async move {
            let mut stream = api.watch(&WatchParams::default().timeout(120), &rv).await?.boxed();
            let mut seen = 0;
            while seen < writes {
                let Some(ev) = stream.next().await else { break };
                if let WatchEvent::Added(cm) = ev? {
                    let now = Instant::now();
                    let name = cm.metadata.name.unwrap_or_default();
                    // The write may be acknowledged after the event arrives: count that as 0.
                    let ack = loop {
                        if let Some(t) = acks.lock().map(|a| a.get(&name).copied()).ok().flatten() {
                            break t;
                        }
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    };
                    let d = now.checked_duration_since(ack).unwrap_or_default();
                    if let Ok(mut s) = delays.lock() {
                        s.push(d);
                    }
                    seen += 1;
                }
            }
            Ok::<_, kube::Error>(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..writes {
        let name = format!("fan-{i}");
        writer.create(&PostParams::default(), &config_map(&name)).await?;
        if let Ok(mut a) = acks.lock() {
            a.insert(name, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in tasks {
        t.await??;
    }
    let out = delays.lock().map(|s| s.clone()).unwrap_or_default();
    Ok(out)
}

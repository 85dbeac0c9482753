//! The scheduler scenario (upstream scheduler_perf shapes): SchedulingBasic with 5,000 nodes,
//! 1,000 initial pods and 10,000 measured pods; then 500 nodes with required pod anti-affinity,
//! and 500 nodes with topology spread. Pods/s and per-pod latency from creation to bound, both
//! taken from watch events.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, Config};
use serde_json::{Value, json};

use crate::stats::Samples;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Nodes in the SchedulingBasic figure.
    #[arg(long, default_value_t = 5_000)]
    nodes: usize,
    /// Pods scheduled before measuring.
    #[arg(long, default_value_t = 1_000)]
    initial_pods: usize,
    /// Pods measured.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Concurrent pod creators.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Run the scheduler inside this process (against `kapal server --disable-controllers`)
    /// instead of the one `kapal server` runs under its Lease.
    #[arg(long)]
    scheduler_in_bench: bool,
    /// Skip the anti-affinity and topology spread figures.
    #[arg(long)]
    basic_only: bool,
}

struct Server {
    child: Child,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    scheduler: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.scheduler.take() {
            s.abort();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(kapal: &Path, in_bench: bool) -> anyhow::Result<(Server, Client)> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let kubeconfig = dir.path().join("kubeconfig.yaml");
    let mut cmd = Command::new(kapal);
    cmd.args(["server", "--bind-address", "127.0.0.1", "--https-listen-port", &port.to_string()])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--write-kubeconfig")
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if in_bench {
        cmd.arg("--disable-controllers");
    }
    let child = cmd.spawn()?;
    let mut server = Server { child, _dir: dir, kubeconfig, scheduler: None };
    let t0 = Instant::now();
    let client = loop {
        if let Ok(yaml) = std::fs::read_to_string(&server.kubeconfig)
            && let Ok(kc) = kube::config::Kubeconfig::from_yaml(&yaml)
        {
            let cfg = Config::from_custom_kubeconfig(kc, &Default::default()).await?;
            let client = Client::try_from(cfg)?;
            if client.apiserver_version().await.is_ok() {
                break client;
            }
        }
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(30), "kapal server did not start in 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if in_bench {
        let c = client.clone();
        server.scheduler = Some(tokio::spawn(async move {
            if let Err(e) = kapal_scheduler::run(c).await {
                eprintln!("scheduler stopped: {e}");
            }
        }));
    }
    Ok((server, client))
}

/// upstream scheduler_perf's node template: 4 cpu, 32 GiB, 110 pods.
fn node(name: &str, zone: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone}},
        "status": {
            "capacity": {"cpu": "4", "memory": "32Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ready"}],
        },
    })
}

async fn create_nodes(client: &Client, n: usize, zones: usize, clients: usize) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = format!("node-{i}");
                let body = node(&name, &format!("zone-{}", i % zones.max(1)));
                let obj: Node = serde_json::from_value(body.clone())?;
                let created = api.create(&PostParams::default(), &obj).await?;
                if created.status.as_ref().and_then(|s| s.allocatable.as_ref()).is_none() {
                    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": body["status"]})))
                        .await?;
                }
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(clients)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Pod shapes of the three figures.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Basic,
    AntiAffinity,
    Spread,
}

fn pod(name: &str, shape: Shape) -> Value {
    let mut spec = json!({"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
        "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}]});
    let labels = match shape {
        Shape::Basic => json!({"app": "basic"}),
        Shape::AntiAffinity => {
            spec["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"color": "green"}}, "topologyKey": "kubernetes.io/hostname"}]}});
            json!({"color": "green"})
        }
        Shape::Spread => {
            spec["topologySpreadConstraints"] = json!([{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "spread"}}}]);
            json!({"app": "spread"})
        }
    };
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec})
}

/// Creation and binding times of pods as a watcher sees them.
#[derive(Default)]
struct Timeline {
    created: HashMap<String, Instant>,
    bound: HashMap<String, Instant>,
    /// Bound pods per name prefix (`init`, `pod`).
    bound_per_prefix: HashMap<String, usize>,
}

fn watch_pods(client: &Client, timeline: Arc<Mutex<Timeline>>) -> tokio::task::JoinHandle<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    tokio::spawn(async move {
        let stream = watcher::watcher(api, watcher::Config::default().any_semantic());
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            let now = Instant::now();
            let (Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p))) = ev else { continue };
            let name = p.metadata.name.clone().unwrap_or_default();
            let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
            if let Ok(mut t) = timeline.lock() {
                t.created.entry(name.clone()).or_insert(now);
                if bound && !t.bound.contains_key(&name) {
                    let prefix = name.rsplit_once('-').map(|(p, _)| p.to_string()).unwrap_or_default();
                    *t.bound_per_prefix.entry(prefix).or_default() += 1;
                    t.bound.insert(name, now);
                }
            }
        }
    })
}

/// Creates `n` pods named `prefix-i` with `clients` concurrent creators and waits until all are bound.
async fn create_and_wait(
    client: &Client,
    timeline: &Arc<Mutex<Timeline>>,
    prefix: &str,
    n: usize,
    shape: Shape,
    clients: usize,
) -> anyhow::Result<()> {
    // The created pod in each response is not needed: the load generator skips decoding it, so
    // that its own work takes less of the cores the measured system runs on.
    let pods = kube::core::Request::new("/api/v1/namespaces/default/pods");
    futures::stream::iter(0..n)
        .map(|i| {
            let (client, pods) = (client.clone(), &pods);
            let prefix = prefix.to_string();
            async move {
                let body = serde_json::to_vec(&pod(&format!("{prefix}-{i}"), shape))?;
                client.request_text(pods.create(&PostParams::default(), body)?).await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(clients)
        .try_collect::<Vec<()>>()
        .await?;
    let t0 = Instant::now();
    let mut last = (0, Instant::now());
    loop {
        let done = timeline.lock().map(|t| t.bound_per_prefix.get(prefix).copied().unwrap_or(0)).unwrap_or(0);
        if done == n {
            return Ok(());
        }
        if done != last.0 {
            last = (done, Instant::now());
        }
        anyhow::ensure!(
            last.1.elapsed() < Duration::from_secs(60),
            "{prefix}: only {done}/{n} pods bound after {:.0} s, no progress for 60 s",
            t0.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Figure {
    pods_per_sec: f64,
    latency: Samples,
}

fn measure(timeline: &Timeline, prefix: &str, n: usize) -> Figure {
    let mut latency = Samples::default();
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    for i in 0..n {
        let name = format!("{prefix}-{i}");
        if let (Some(c), Some(b)) = (timeline.created.get(&name), timeline.bound.get(&name)) {
            latency.push(b.saturating_duration_since(*c));
            first = Some(first.map_or(*c, |f| f.min(*c)));
            last = Some(last.map_or(*b, |l| l.max(*b)));
        }
    }
    let wall = match (first, last) {
        (Some(f), Some(l)) => l.saturating_duration_since(f).as_secs_f64(),
        _ => f64::NAN,
    };
    Figure { pods_per_sec: latency.len() as f64 / wall, latency }
}

/// One figure's workload.
struct Workload {
    name: &'static str,
    nodes: usize,
    zones: usize,
    initial: usize,
    measured: usize,
    shape: Shape,
}

async fn scenario(kapal: &Path, args: &Args, w: Workload) -> anyhow::Result<()> {
    let Workload { name, nodes, zones, initial, measured, shape } = w;
    let (server, client) = start(kapal, args.scheduler_in_bench).await?;
    let t = Instant::now();
    create_nodes(&client, nodes, zones, args.clients).await?;
    eprintln!("{name}: {nodes} nodes created in {:.1} s", t.elapsed().as_secs_f64());
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let watch = watch_pods(&client, timeline.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    create_and_wait(&client, &timeline, "init", initial, shape, args.clients).await?;
    eprintln!("{name}: {initial} initial pods bound");
    create_and_wait(&client, &timeline, "pod", measured, shape, args.clients).await?;
    let fig = timeline.lock().map(|t| measure(&t, "pod", measured)).map_err(|_| anyhow::anyhow!("poisoned"))?;
    watch.abort();
    drop(server);
    let value = format!(
        "{:.0} pods/s; creation → bound p50 / p99 {:.0} / {:.0} ms",
        fig.pods_per_sec,
        fig.latency.pct_ms(50.0),
        fig.latency.pct_ms(99.0)
    );
    let target = match shape {
        Shape::Basic => "≥ 1,500 pods/s (upstream CI floor 270)",
        _ => "—",
    };
    let figure = format!("{name}: {nodes} nodes, {initial} initial + {measured} measured pods");
    println!("| {figure} | {value} | {target} |");
    eprintln!(
        "{}",
        json!({"figure": figure, "pods_per_sec": fig.pods_per_sec,
        "p50_ms": fig.latency.pct_ms(50.0), "p99_ms": fig.latency.pct_ms(99.0), "target": target})
    );
    Ok(())
}

pub async fn run(kapal: &Path, args: Args) -> anyhow::Result<()> {
    println!("| figure | measured | target |\n|---|---|---|");
    let basic = Workload {
        name: "SchedulingBasic",
        nodes: args.nodes,
        zones: 3,
        initial: args.initial_pods,
        measured: args.pods,
        shape: Shape::Basic,
    };
    scenario(kapal, &args, basic).await?;
    if args.basic_only {
        return Ok(());
    }
    let anti = Workload {
        name: "required pod anti-affinity",
        nodes: 500,
        zones: 3,
        initial: 100,
        measured: 400,
        shape: Shape::AntiAffinity,
    };
    scenario(kapal, &args, anti).await?;
    let spread = Workload {
        name: "topology spread (DoNotSchedule, 5 zones)",
        nodes: 500,
        zones: 5,
        initial: 1_000,
        measured: 2_000,
        shape: Shape::Spread,
    };
    scenario(kapal, &args, spread).await?;
    Ok(())
}

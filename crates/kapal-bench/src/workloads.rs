//! The controller scenario: a Deployment of 1,000 replicas on 100 simulated nodes, timed from
//! `kubectl apply` until `kubectl rollout status` returns; and the control plane's RSS with
//! 5,000 simulated nodes and 50,000 pods.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use crate::server::{self, Server};
use crate::stats::rss_mib;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Nodes for the rollout figure.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Replicas of the rolled-out Deployment.
    #[arg(long, default_value_t = 1_000)]
    replicas: usize,
    /// Rollouts to take the median of.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Nodes for the RSS figure (0 skips it).
    #[arg(long, default_value_t = 5_000)]
    scale_nodes: usize,
    /// Pods for the RSS figure.
    #[arg(long, default_value_t = 50_000)]
    scale_pods: usize,
}

fn row(name: &str, value: String, target: &str) {
    println!("| {name} | {value} | {target} |");
    eprintln!("{}", json!({"figure": name, "value": value, "target": target}));
}

fn deployment(name: &str, replicas: usize) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      containers:\n      - name: app\n        image: busybox\n        resources:\n          requests:\n            cpu: 10m\n            memory: 16Mi\n"
    )
}

async fn wait_nodes(server: &Server, nodes: usize) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(server.client().await?);
    let t0 = Instant::now();
    while api.list_metadata(&ListParams::default()).await?.items.len() < nodes {
        if t0.elapsed() > Duration::from_secs(300) {
            anyhow::bail!("{nodes} simulated nodes did not register in 300 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn rollout(server: &Server, name: &str, replicas: usize) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    server.kubectl(&["apply", "-f", "-"], Some(&deployment(name, replicas)))?;
    server.kubectl(&["rollout", "status", &format!("deployment/{name}"), "--timeout=300s"], None)?;
    Ok(t0.elapsed())
}

pub async fn run(kapal: &Path, args: Args) -> anyhow::Result<()> {
    println!("| figure | measured | target |\n|---|---|---|");
    let (mut server, _) = server::start(kapal, &[]).await?;
    server.simulate(kapal, "node", args.nodes)?;
    wait_nodes(&server, args.nodes).await?;
    // The same path with a single replica: the fixed cost of a rollout, as the baseline.
    let one = rollout(&server, "warmup", 1).await?;
    row("Deployment of 1 replica, apply → rollout status", format!("{:.2} s", one.as_secs_f64()), "baseline");
    let mut times = Vec::new();
    for run in 0..args.runs {
        let took = rollout(&server, &format!("big-{run}"), args.replicas).await?;
        times.push(took);
        server.kubectl(&["delete", "deployment", &format!("big-{run}"), "--wait=false"], None)?;
        eprintln!("run {run}: {:.2} s", took.as_secs_f64());
        // Let the garbage collector and the simulated kubelets remove the pods.
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    times.sort();
    let median = times[times.len() / 2];
    row(
        &format!(
            "Deployment of {} replicas on {} nodes, apply → rollout status (median of {})",
            args.replicas, args.nodes, args.runs
        ),
        format!("{:.2} s", median.as_secs_f64()),
        "≤ 5 s",
    );
    drop(server);

    if args.scale_nodes > 0 {
        scale(kapal, &args).await?;
    }
    Ok(())
}

/// Control-plane RSS with many nodes and pods: Deployments of 1,000 replicas until the pods
/// are there and available.
async fn scale(kapal: &Path, args: &Args) -> anyhow::Result<()> {
    let (mut server, _) = server::start(kapal, &[]).await?;
    let idle = rss_mib(server.child.id());
    server.simulate(kapal, "node", args.scale_nodes)?;
    wait_nodes(&server, args.scale_nodes).await?;
    let with_nodes = rss_mib(server.child.id());
    let client = server.client().await?;
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    let t0 = Instant::now();
    let count = args.scale_pods.div_ceil(1_000);
    for i in 0..count {
        let replicas = (args.scale_pods - i * 1_000).min(1_000);
        let yaml = deployment(&format!("scale-{i}"), replicas);
        let object: Deployment = serde_saphyr::from_str(&yaml)?;
        deployments.create(&PostParams::default(), &object).await?;
    }
    loop {
        let available: i64 = deployments
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter_map(|d| d.status.as_ref()?.available_replicas)
            .map(i64::from)
            .sum();
        if available as usize >= args.scale_pods {
            break;
        }
        if t0.elapsed() > Duration::from_secs(1_800) {
            anyhow::bail!("only {available} of {} pods available after 30 min", args.scale_pods);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let took = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let full = rss_mib(server.child.id());
    row("control-plane RSS, idle", format!("{idle:.0} MiB"), "baseline");
    row(&format!("control-plane RSS with {} nodes", args.scale_nodes), format!("{with_nodes:.0} MiB"), "—");
    row(
        &format!("control-plane RSS with {} nodes and {} pods", args.scale_nodes, args.scale_pods),
        format!("{full:.0} MiB"),
        "≤ 1.5 GB",
    );
    row(
        &format!("{} pods created, scheduled and available", args.scale_pods),
        format!("{:.0} s", took.as_secs_f64()),
        "—",
    );
    Ok(())
}

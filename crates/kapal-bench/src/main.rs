//! `kapal-bench`: whole-scenario benchmarks of the `kapal` binary.
//!
//! Each scenario starts its own `kapal server` on a fresh data dir, drives it through the
//! Kubernetes API with kube-rs (like any client), and prints one JSON object per figure plus a
//! Markdown table for docs/benchmarks.md. Baselines are measured in the same run.

mod api;
mod etcd;
mod loadgen;
mod proxy;
mod raw;
mod scheduler;
mod server;
mod stats;
mod store;
mod workloads;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The same allocator as `kapal`, for the parts (the scheduler) that can run in this process.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(name = "kapal-bench", about = "Kapal scenario benchmarks")]
struct Cli {
    /// The kapal binary to benchmark.
    #[arg(long, default_value = "target/release/kapal")]
    kapal: PathBuf,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// API server: cold start, RSS, create throughput, LIST/GET latency, watch fan-out.
    Api(api::Args),
    /// Store: SQLite vs etcd writes, watch fan-out, compaction under churn.
    Store(store::Args),
    /// Mesh proxy: added latency (open-loop), throughput and RSS, direct vs proxy vs mTLS pair.
    Proxy(proxy::Args),
    /// Scheduler: SchedulingBasic (5,000 nodes), anti-affinity, topology spread.
    Scheduler(scheduler::Args),
    /// Controllers: a 1,000-replica rollout on simulated nodes; RSS with 5,000 nodes and 50,000 pods.
    Workloads(workloads::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        match cli.scenario {
            Scenario::Api(args) => api::run(&cli.kapal, args).await,
            Scenario::Store(args) => store::run(args).await,
            Scenario::Proxy(args) => proxy::run(&cli.kapal, args).await,
            Scenario::Scheduler(args) => scheduler::run(&cli.kapal, args).await,
            Scenario::Workloads(args) => workloads::run(&cli.kapal, args).await,
        }
    })
}

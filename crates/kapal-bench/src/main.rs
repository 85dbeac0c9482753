//! `kapal-bench`: whole-scenario benchmarks of the `kapal` binary.
//!
//! Each scenario starts its own `kapal server` on a fresh data dir, drives it through the
//! Kubernetes API with kube-rs (like any client), and prints one JSON object per figure plus a
//! Markdown table for docs/benchmarks.md. Baselines are measured in the same run.

mod api;
mod etcd;
mod stats;
mod store;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        match cli.scenario {
            Scenario::Api(args) => api::run(&cli.kapal, args).await,
            Scenario::Store(args) => store::run(args).await,
        }
    })
}

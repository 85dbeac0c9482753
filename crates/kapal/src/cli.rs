//! Command-line interface. Flags follow k3s where one exists.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "kapal", version, about = "A Kubernetes-compatible orchestrator with a built-in service mesh")]
pub struct Cli {
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane: API server and controllers.
    Server(ServerArgs),
    /// Run a one-node cluster in one process.
    Up(ServerArgs),
    /// Run a node agent that joins a server.
    Agent(AgentArgs),
    /// Run the mesh sidecar proxy.
    Proxy(kapal_mesh::ProxyArgs),
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The API server to join, e.g. https://10.0.0.1:6443.
    #[arg(long, env = "KAPAL_URL")]
    pub server: String,
    /// The cluster token (the server's --token, or <server data-dir>/token).
    #[arg(long, env = "KAPAL_TOKEN")]
    pub token: String,
    /// Where the agent keeps its state [default: /var/lib/kapal/agent as root, else $HOME/.kapal/agent]
    #[arg(long, short = 'd')]
    pub data_dir: Option<PathBuf>,
    /// Node name (with --simulate: the prefix of the simulated nodes' names) [default: the hostname]
    #[arg(long)]
    pub node_name: Option<String>,
    /// Register this many simulated nodes whose pods only pretend to run (for tests and benchmarks).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub simulate: Option<u32>,
    /// CPU capacity of each simulated node.
    #[arg(long, default_value = "32", requires = "simulate")]
    pub simulate_cpu: String,
    /// Memory capacity of each simulated node.
    #[arg(long, default_value = "256Gi", requires = "simulate")]
    pub simulate_memory: String,
    /// Pod capacity of each simulated node.
    #[arg(long, default_value_t = 110, requires = "simulate")]
    pub simulate_pods: u32,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Where state, certificates and the kubeconfig live [default: /var/lib/kapal as root, else $HOME/.kapal]
    #[arg(long, short = 'd')]
    pub data_dir: Option<PathBuf>,
    /// HTTPS port of the API server.
    #[arg(long, default_value_t = 6443)]
    pub https_listen_port: u16,
    /// Address the API server listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// Address other nodes reach this server at [default: a host address]
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
    /// Where to write the admin kubeconfig [default: <data-dir>/kubeconfig.yaml]
    #[arg(long)]
    pub write_kubeconfig: Option<PathBuf>,
    /// Shared secret that nodes join with (also accepted as an API bearer token).
    #[arg(long, env = "KAPAL_TOKEN")]
    pub token: Option<String>,
    /// Network Services get cluster IPs from.
    #[arg(long, default_value = "10.43.0.0/16")]
    pub service_cidr: String,
    /// Extra names or addresses for the serving certificate (repeatable).
    #[arg(long)]
    pub tls_san: Vec<String>,
    /// Keep state in etcd (`etcd://h1:2379,h2:2379`, `https://…`) or at `sqlite://PATH`
    /// [default: embedded SQLite under the data dir]
    #[arg(long)]
    pub datastore_endpoint: Option<String>,
    /// CA certificate of an https etcd.
    #[arg(long)]
    pub datastore_cafile: Option<PathBuf>,
    /// Client certificate for an https etcd.
    #[arg(long)]
    pub datastore_certfile: Option<PathBuf>,
    /// Client key for an https etcd.
    #[arg(long)]
    pub datastore_keyfile: Option<PathBuf>,
    /// Key prefix in etcd, so several clusters can share one etcd [default: /registry]
    #[arg(long)]
    pub etcd_prefix: Option<String>,
    /// Store history kept by automatic compaction: at least this many revisions.
    #[arg(long, default_value_t = 10_000)]
    pub compaction_min_revisions: i64,
    /// Store history kept by automatic compaction: at least this many seconds.
    #[arg(long, default_value_t = 300)]
    pub compaction_min_age_seconds: u64,
    /// Seconds between automatic compactions.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub compaction_interval_seconds: u64,
    /// Do not run the controllers in this process.
    #[arg(long)]
    pub disable_controllers: bool,
    /// How often the node lifecycle controller checks nodes.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub node_monitor_period: std::time::Duration,
    /// How long a node may miss heartbeats before it is marked Unknown.
    #[arg(long, default_value = "50s", value_parser = parse_duration)]
    pub node_monitor_grace_period: std::time::Duration,
    /// The same for a node that never posted its status.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub node_startup_grace_period: std::time::Duration,
    /// Controllers to run: `*` for all, `name` to enable, `-name` to disable (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,
    /// Do not run the scheduler in this process.
    #[arg(long)]
    pub disable_scheduler: bool,
    /// Seconds a new pod tolerates a not-ready node (the `node.kubernetes.io/not-ready`
    /// NoExecute taint) before it is evicted, unless the pod sets its own toleration.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(i64).range(0..))]
    pub default_not_ready_toleration_seconds: i64,
    /// The same for an unreachable node (`node.kubernetes.io/unreachable`).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(i64).range(0..))]
    pub default_unreachable_toleration_seconds: i64,
    /// Nodes per second that may newly be tainted NoExecute (their pods evicted), per zone.
    #[arg(long, default_value_t = 0.1)]
    pub node_eviction_rate: f64,
}

/// A duration as Kubernetes flags write them: `300ms`, `40s`, `5m`, `1h`, `1m30s`.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let mut total = std::time::Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let value: f64 = number.parse().map_err(|_| format!("invalid duration {s:?}: expected e.g. 40s or 5m"))?;
        let seconds = match unit {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return Err(format!("invalid duration {s:?}: unit must be ms, s, m or h")),
        };
        total += std::time::Duration::from_secs_f64(seconds);
        rest = next;
    }
    Ok(total)
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn default_data_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/kapal");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".kapal"),
        None => PathBuf::from(".kapal"),
    }
}

pub fn init_logging(cli: &Cli) {
    // `RUST_LOG` picks the levels; release builds stop at DEBUG (TRACE is compiled out, see
    // Cargo.toml), so `trace` there shows what `debug` shows.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_runtime=warn,kube_client=warn"));
    // Colours only for a terminal: not into a file or a pipe that another program reads.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if cli.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Server(args) => serve(args, false).await,
        Command::Up(args) => serve(args, true).await,
        Command::Agent(args) => agent(args).await,
        Command::Proxy(args) => Ok(kapal_mesh::run(args).await?),
    }
}

async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.clone().unwrap_or_else(|| default_data_dir().join("agent"));
    let Some(nodes) = args.simulate else {
        anyhow::bail!("the container-running node agent is not built yet; run simulated nodes with --simulate N")
    };
    for (flag, value) in [("--simulate-cpu", &args.simulate_cpu), ("--simulate-memory", &args.simulate_memory)] {
        kapal_api::validation::quantity::parse(value).map_err(|e| anyhow::anyhow!("{flag} {value:?}: {e}"))?;
    }
    let client = kapal_node::connect::connect(&args.server, &args.token, &data_dir).await?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let sim = kapal_node::simulate::Simulation {
        nodes: nodes as usize,
        prefix: args.node_name.clone().unwrap_or_else(|| format!("{}-sim", host.trim())),
        cpu: args.simulate_cpu.clone(),
        memory: args.simulate_memory.clone(),
        pods: args.simulate_pods,
    };
    tokio::select! {
        result = kapal_node::simulate::run(client, sim) => result?,
        _ = wait_for_signal() => tracing::info!("shutting down"),
    }
    Ok(())
}

async fn serve(args: ServerArgs, up: bool) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let mut config = kapal_apiserver::Config::new(data_dir);
    config.port = args.https_listen_port;
    config.bind_address = args.bind_address;
    config.advertise_address = args.advertise_address;
    config.token = args.token.clone();
    config.write_kubeconfig = args.write_kubeconfig.clone();
    config.service_cidr = args.service_cidr.clone();
    config.tls_sans = args.tls_san.clone();
    config.datastore_endpoint = args.datastore_endpoint.clone();
    config.datastore_cafile = args.datastore_cafile.clone();
    config.datastore_certfile = args.datastore_certfile.clone();
    config.datastore_keyfile = args.datastore_keyfile.clone();
    config.etcd_prefix = args.etcd_prefix.clone();
    config.retention = kapal_store::Retention {
        min_revisions: args.compaction_min_revisions,
        min_age: std::time::Duration::from_secs(args.compaction_min_age_seconds),
        interval: std::time::Duration::from_secs(args.compaction_interval_seconds),
    };
    config.default_not_ready_toleration_seconds = args.default_not_ready_toleration_seconds;
    config.default_unreachable_toleration_seconds = args.default_unreachable_toleration_seconds;
    let running = kapal_apiserver::start(config).await?;
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "API server ready");
    if !args.disable_controllers {
        let client = loopback_client(&running).await?;
        // Stable across restarts, so a restarted server resumes leading at once.
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let identity = format!("{}_{}", host.trim(), running.addr.port());
        let settings = kapal_controllers::settings::Settings {
            node_monitor_period: args.node_monitor_period,
            node_monitor_grace_period: args.node_monitor_grace_period,
            node_startup_grace_period: args.node_startup_grace_period,
            node_eviction_rate: args.node_eviction_rate,
            controllers: args.controllers.clone(),
            ..Default::default()
        };
        tokio::spawn(run_controllers(client, identity, settings, !args.disable_scheduler));
    }
    if up {
        eprintln!(
            "Kapal is up in {} ms. Use it with:\n  export KUBECONFIG={}\n  kubectl get namespaces",
            started.elapsed().as_millis(),
            running.kubeconfig_path.display()
        );
    }
    wait_for_signal().await;
    running.shutdown();
    tracing::info!("shutting down");
    Ok(())
}

/// Runs the controllers and the scheduler, each while this server holds its Lease, so that several
/// servers on one store run one set of each.
async fn run_controllers(
    client: kube::Client,
    identity: String,
    settings: kapal_controllers::settings::Settings,
    scheduler: bool,
) {
    let controllers = lead(client.clone(), "kapal-controller-manager", identity.clone(), move |client| {
        kapal_controllers::run_with(client, settings.clone())
    });
    if scheduler {
        let scheduler = lead(client, "kapal-scheduler", identity, kapal_scheduler::run);
        tokio::join!(controllers, scheduler);
    } else {
        controllers.await;
    }
}

async fn lead<F, Fut>(client: kube::Client, lease: &str, identity: String, component: F)
where
    F: Fn(kube::Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    use kapal_controllers::leader::{LeaderElector, Timing};
    let leases = kube::Api::namespaced(client.clone(), "kube-system");
    let mut elector = LeaderElector::new(leases, lease, &identity, Timing::default());
    loop {
        let run = component(client.clone());
        elector
            .run(|| async move {
                if let Err(e) = run.await {
                    tracing::error!(error = %e, lease, "component stopped");
                }
            })
            .await;
        tracing::info!(lease, "not leading; campaigning again");
    }
}

/// Requests the in-process controllers and scheduler keep in flight at most. Beyond it they
/// queue, so a burst (ReplicaSets creating hundreds of pods each) reuses pooled connections
/// instead of opening a connection, with its TLS and HTTP buffers on both ends, per request.
/// Watches hold a slot only until their response starts.
const LOOPBACK_IN_FLIGHT: usize = 64;

/// A kube client for in-process controllers, talking to the server over loopback HTTPS.
async fn loopback_client(running: &kapal_apiserver::Running) -> anyhow::Result<kube::Client> {
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(&running.kubeconfig).context("reading the generated kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .context("building the loopback client configuration")?;
    let builder = kube::client::ClientBuilder::try_from(config).context("building the loopback client")?;
    Ok(builder.with_layer(&tower::limit::ConcurrencyLimitLayer::new(LOOPBACK_IN_FLIGHT)).build())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_like_kubernetes_flags() {
        assert_eq!(parse_duration("40s"), Ok(Duration::from_secs(40)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert!(parse_duration("5").unwrap_err().contains("unit"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("x1s").is_err());
    }
}

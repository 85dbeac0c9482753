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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_runtime=warn,kube_client=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
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
    }
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
    let running = kapal_apiserver::start(config).await?;
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "API server ready");
    if !args.disable_controllers {
        let client = loopback_client(&running).await?;
        // Stable across restarts, so a restarted server resumes leading at once.
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let identity = format!("{}_{}", host.trim(), running.addr.port());
        tokio::spawn(run_controllers(client, identity));
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

/// Runs the controllers while this server holds the controller-manager Lease, so that several
/// servers on one store run one set of controllers.
async fn run_controllers(client: kube::Client, identity: String) {
    use kapal_controllers::leader::{LeaderElector, Timing};
    let leases = kube::Api::namespaced(client.clone(), "kube-system");
    let mut elector = LeaderElector::new(leases, "kapal-controller-manager", &identity, Timing::default());
    loop {
        let client = client.clone();
        elector
            .run(|| async move {
                if let Err(e) = kapal_controllers::run(client).await {
                    tracing::error!(error = %e, "controllers stopped");
                }
            })
            .await;
        tracing::info!("controllers are not leading; campaigning again");
    }
}

/// A kube client for in-process controllers, talking to the server over loopback HTTPS.
async fn loopback_client(running: &kapal_apiserver::Running) -> anyhow::Result<kube::Client> {
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(&running.kubeconfig).context("reading the generated kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .context("building the loopback client configuration")?;
    kube::Client::try_from(config).context("building the loopback client")
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

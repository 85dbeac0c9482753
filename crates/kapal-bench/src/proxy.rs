//! The mesh proxy scenario (issue 5): added latency, throughput and memory of `kapal proxy`.
//!
//! One run measures, side by side: the backend directly; through one proxy (plaintext); and
//! through a client-side + server-side proxy pair with mutual TLS, as in a mesh. The proxies
//! run as child processes: the product, `kapal proxy` (`kapal-bench --kapal`, by default
//! target/release/kapal), or else this binary re-executed with the hidden `--serve` flag, which
//! calls `kapal_mesh::run`, the same entry point. They are pinned to CPU 1 with `taskset`
//! when it exists, so that their RSS is their own and their CPU is one core. For the
//! throughput rounds the scenario itself (load generator and backend) keeps to CPU 0, so that
//! a proxy has its core to itself: otherwise the generator's threads share it, and a proxy that
//! leaves the generator more room (HAProxy, idle a third of the time then) is measured by the
//! generator, not by what it can do on one core. Each throughput figure comes with the CPU the
//! proxy used.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

use crate::loadgen::{self, Proto};
use crate::raw;
use crate::stats::{Samples, cpu_seconds, rss_mib};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds per latency measurement.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Request rates (req/s) of the latency figures.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    rates: Vec<u32>,
    /// HTTP versions of the latency figures.
    #[arg(long, value_delimiter = ',', default_value = "h1,h2")]
    protos: Vec<Proto>,
    /// Only the latency figures (and idle RSS): skips the throughput rounds and the idle
    /// connections.
    #[arg(long, conflicts_with = "throughput_only")]
    latency_only: bool,
    /// HTTP/1.1 connections of the load generator.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Idle connections held open for the memory figure.
    #[arg(long, default_value_t = 10_000)]
    idle_connections: usize,
    /// The proxies' `--threads`, also given to `--proxy-exe` and `--compare-exe` (builds from
    /// before the flag refuse it). By default each sizes its runtime to the CPUs it may use:
    /// single-threaded when pinned to one, which this scenario does where `taskset` exists and
    /// the machine has two CPUs or more.
    #[arg(long)]
    proxy_threads: Option<std::num::NonZeroUsize>,
    /// Only the throughput figures (and idle RSS): skips the latency runs and the idle
    /// connections, for quick before/after comparisons.
    #[arg(long)]
    throughput_only: bool,
    /// Run this executable as the proxies instead: a `kapal` or a `kapal-bench` build (told apart
    /// by its file name), e.g. an older one to compare against.
    #[arg(long)]
    proxy_exe: Option<PathBuf>,
    /// Also run this executable (another `kapal` or `kapal-bench` build) as a plain proxy,
    /// measured as "kapal proxy (compare)" beside the others in every latency run and throughput round.
    #[arg(long)]
    compare_exe: Option<PathBuf>,
    /// Throughput rounds: each round measures every target for `duration`, in `slices` turns,
    /// and gives kapal's throughput as a share of HAProxy's; the run reports the median share.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Slices of each latency measurement and throughput round: the targets take turns slice by
    /// slice (each `duration / slices` long) and a target's figures are taken over all its
    /// slices, so that a burst of the neighbours' load lands on every target alike instead of on
    /// whichever was being measured.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    slices: u32,
    /// Internal: serve as a proxy with this config (the scenario runs itself as the proxy).
    #[arg(long, hide = true)]
    serve: Option<PathBuf>,
    /// Internal: identity directory of the served proxy.
    #[arg(long, hide = true)]
    identity_dir: Option<PathBuf>,
    /// Internal: admin address of the served proxy.
    #[arg(long, hide = true)]
    admin: Option<SocketAddr>,
}

struct ProxyProcess {
    child: Child,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// The executable the proxies run: `--proxy-exe`, else `kapal` when it exists, else this one.
fn proxy_exe(kapal: &Path, args: &Args) -> anyhow::Result<PathBuf> {
    Ok(match &args.proxy_exe {
        Some(exe) => exe.clone(),
        None if kapal.is_file() => kapal.to_path_buf(),
        None => std::env::current_exe()?,
    })
}

/// Whether `exe` is a `kapal-bench` build (proxy with `proxy --serve`) rather than `kapal`.
fn is_bench(exe: &Path) -> bool {
    exe.file_name().is_some_and(|n| n.to_string_lossy().starts_with("kapal-bench"))
}

async fn spawn_proxy_exe(
    exe: &Path,
    config: &Path,
    identity: Option<&Path>,
    threads: Option<std::num::NonZeroUsize>,
) -> anyhow::Result<ProxyProcess> {
    let admin = free_addr()?;
    let mut cmd = pinned(&exe.to_string_lossy());
    if is_bench(exe) {
        cmd.arg("proxy").arg("--serve").arg(config).arg("--admin").arg(admin.to_string());
        if let Some(n) = threads {
            cmd.arg("--proxy-threads").arg(n.to_string());
        }
    } else {
        // The product's command line, with the bench's limits: 10,000 idle connections and more.
        cmd.arg("proxy").arg("--config").arg(config).arg("--admin").arg(admin.to_string());
        cmd.args(["--drain-timeout", "1s", "--max-connections", "50000"]).env("RUST_LOG", "warn");
        if let Some(n) = threads {
            cmd.arg("--threads").arg(n.to_string());
        }
    }
    if let Some(dir) = identity {
        cmd.arg("--identity-dir").arg(dir);
    }
    let child = cmd.stdout(Stdio::null()).spawn()?;
    let proxy = ProxyProcess { child };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut s) = tokio::net::TcpStream::connect(admin).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(b"GET /ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            if out.starts_with("HTTP/1.1 200") {
                return Ok(proxy);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("proxy with {} did not become ready", config.display())
}

/// Whether the machine has two CPUs to split (decided once, before this process pins itself
/// to one, after which it would see only that one).
fn can_pin() -> bool {
    static CAN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CAN.get_or_init(|| {
        Path::new("/usr/bin/taskset").exists() && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
    })
}

/// Keeps every thread of this process (the load generator and the backend) on CPU 0, leaving
/// CPU 1 to the proxy under test.
fn pin_self_to_cpu0() -> anyhow::Result<()> {
    let status = Command::new("/usr/bin/taskset")
        .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "taskset -a -p -c 0 {} failed: {status}", std::process::id());
    Ok(())
}

fn pinned(program: &str) -> Command {
    if can_pin() {
        let mut c = Command::new("/usr/bin/taskset");
        c.args(["-c", "1", program]);
        c
    } else {
        Command::new(program)
    }
}

/// A reverse proxy to compare with (HAProxy, nginx).
struct Baseline {
    name: &'static str,
    /// Its HTTP/1.1 listener.
    h1: SocketAddr,
    /// Its HTTP/2 (prior knowledge, "h2c") listener, and what it speaks upstream.
    h2: (SocketAddr, &'static str),
    process: ProxyProcess,
}

/// HAProxy and nginx (Debian packages) as plain reverse proxies with one worker, when
/// installed, each with an HTTP/1.1 and an HTTP/2 listener. HAProxy speaks the client's
/// version upstream, as `kapal proxy` does; nginx can only proxy HTTP/1.x, so its HTTP/2
/// figures translate to HTTP/1.1 upstream. Each is ready once its ports accept connections.
async fn baselines(dir: &Path, app: SocketAddr) -> anyhow::Result<Vec<Baseline>> {
    let mut out = Vec::new();
    if Path::new("/usr/sbin/haproxy").exists() {
        let (addr, h2) = (free_addr()?, free_addr()?);
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  nbthread 1\n  maxconn 9000\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n  option http-keep-alive\nfrontend f\n  bind {addr}\n  default_backend b\nbackend b\n  server app {app}\nfrontend f2\n  bind {h2} proto h2\n  default_backend b2\nbackend b2\n  server app {app} proto h2\n"
            ),
        )?;
        let child =
            pinned("/usr/sbin/haproxy").arg("-f").arg(&cfg).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        out.push(Baseline { name: "HAProxy", h1: addr, h2: (h2, "HTTP/2"), process: ProxyProcess { child } });
    }
    if Path::new("/usr/sbin/nginx").exists() {
        let (addr, h2) = (free_addr()?, free_addr()?);
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(prefix.join("logs"))?;
        let cfg = prefix.join("nginx.conf");
        std::fs::write(
            &cfg,
            format!(
                "worker_processes 1;\ndaemon off;\nmaster_process off;\nerror_log stderr crit;\npid {pid};\nevents {{ worker_connections 9000; }}\nhttp {{\n  access_log off;\n  upstream app {{ server {app}; keepalive 64; }}\n  server {{\n    listen {addr};\n    listen {h2} http2;\n    keepalive_requests 1000000;\n    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n  }}\n}}\n",
                pid = prefix.join("nginx.pid").display()
            ),
        )?;
        let child = pinned("/usr/sbin/nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        out.push(Baseline { name: "nginx", h1: addr, h2: (h2, "HTTP/1.1"), process: ProxyProcess { child } });
    }
    for b in &out {
        for addr in [b.h1, b.h2.0] {
            let deadline = Instant::now() + Duration::from_secs(10);
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                anyhow::ensure!(Instant::now() < deadline, "{} did not start listening on {addr}", b.name);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    Ok(out)
}

/// A tiny HTTP/1.1 + HTTP/2 backend answering `ok`: HTTP/2 from hyper, HTTP/1.1 from canned
/// bytes ([`raw::serve_h1`]), which cost CPU 0 less per request in the throughput rounds.
async fn backend() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                if !raw::opens_with_h2_preface(&stream).await {
                    return raw::serve_h1(stream).await;
                }
                let svc = hyper::service::service_fn(|_req: http::Request<hyper::body::Incoming>| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Mesh CA plus identities for the client- and server-side proxies.
fn write_identities(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let mut dirs = Vec::new();
    for sa in ["client", "server"] {
        let key = rcgen::KeyPair::generate()?;
        let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new())?;
        leaf.subject_alt_names = vec![rcgen::SanType::URI(spiffe(sa).as_str().try_into()?)];
        let cert = leaf.signed_by(&key, &issuer)?;
        let d = dir.join(sa);
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join("ca.pem"), &ca_pem)?;
        std::fs::write(d.join("cert.pem"), cert.pem())?;
        std::fs::write(d.join("key.pem"), key.serialize_pem())?;
        dirs.push(d);
    }
    Ok((dirs[0].clone(), dirs[1].clone()))
}

fn spiffe(sa: &str) -> String {
    format!("spiffe://cluster.local/ns/bench/sa/{sa}")
}

const HEAD: &str = "apiVersion: kapal.dev/v1alpha1\nkind: ProxyConfig\n";

fn row(name: &str, value: String, target: &str) {
    println!("| {name} | {value} | {target} |");
    eprintln!("{}", json!({"scenario": "proxy", "figure": name, "value": value, "target": target}));
}

/// What one target's latency slices added up to.
#[derive(Default)]
struct Taken {
    samples: Samples,
    errors: usize,
    elapsed: Duration,
    /// CPU seconds of the target's processes.
    cpu: f64,
}

/// What one target's throughput slices in a round added up to.
#[derive(Default, Clone)]
struct Throughput {
    requests: u64,
    elapsed: Duration,
    /// CPU seconds of the target's processes.
    cpu: f64,
}

impl Throughput {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    fn per_cpu_second(&self) -> f64 {
        self.requests as f64 / self.cpu.max(f64::EPSILON)
    }
}

/// Times a fixed piece of CPU work (a pseudo-random walk over a 1 MiB table, about 7 ms on the
/// machine this was written on): how fast the shared machine lets this CPU run right now. Run
/// between slices, when nothing else of this process is working.
fn speed_probe() -> Duration {
    let table: Vec<u32> = (0..1u32 << 18).map(|i| i.wrapping_mul(2_654_435_761)).collect();
    let (mut x, mut sum) = (88_172_645_463_325_252u64, 0u64);
    let started = Instant::now();
    for _ in 0..3_000_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        sum = sum.wrapping_add(u64::from(table[(x as usize) & ((1 << 18) - 1)]));
    }
    std::hint::black_box(sum);
    started.elapsed()
}

fn ms_of(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// CPU seconds used so far by the processes `pids`.
fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().map(|&p| cpu_seconds(p)).sum()
}

fn ms(x: f64) -> String {
    format!("{x:.3} ms")
}

/// Child mode: be the proxy, on the runtime `kapal proxy` would build.
fn serve(args: &Args, config: PathBuf) -> anyhow::Result<()> {
    let proxy_args = kapal_mesh::ProxyArgs {
        config: Some(config),
        admin: args.admin.unwrap_or(([127, 0, 0, 1], 4191).into()),
        identity_dir: args.identity_dir.clone(),
        cert: None,
        key: None,
        ca: None,
        control_plane: None,
        control_plane_ca: None,
        otlp_endpoint: None,
        otlp_service_name: None,
        detect_timeout: kapal_mesh::config::Duration(Duration::from_millis(300)),
        drain_timeout: kapal_mesh::config::Duration(Duration::from_secs(1)),
        max_connections: 50_000,
        reload_interval: kapal_mesh::config::Duration(Duration::from_secs(1)),
        outbound: None,
        inbound: None,
        access_log: false,
        threads: args.proxy_threads,
    };
    Ok(proxy_args.runtime()?.block_on(kapal_mesh::run(proxy_args))?)
}

pub async fn run(kapal: &Path, args: Args) -> anyhow::Result<()> {
    if let Some(config) = args.serve.clone() {
        // The proxy gets a runtime of its own on its own thread; this one only waits.
        let proxy = std::thread::spawn(move || serve(&args, config));
        return tokio::task::spawn_blocking(move || proxy.join())
            .await?
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the proxy thread panicked")));
    }
    let pin = can_pin();
    let dir = tempfile::tempdir()?;
    let app = backend().await?;
    let (client_id, server_id) = write_identities(dir.path())?;
    let (plain, idle, mesh_out, mesh_in) = (free_addr()?, free_addr()?, free_addr()?, free_addr()?);
    let plain_cfg = dir.path().join("plain.yaml");
    std::fs::write(
        &plain_cfg,
        format!(
            "{HEAD}services:
  - {{name: app, listen: '{plain}', endpoints: [{{address: '{app}'}}]}}
  - {{name: idle, listen: '{idle}', protocol: http1, endpoints: [{{address: '{app}'}}]}}
"
        ),
    )?;
    let client_cfg = dir.path().join("client.yaml");
    std::fs::write(
        &client_cfg,
        format!(
            "{HEAD}services:\n  - {{name: app, listen: '{mesh_out}', endpoints: [{{address: '{mesh_in}', identity: '{}'}}]}}\n",
            spiffe("server")
        ),
    )?;
    let server_cfg = dir.path().join("server.yaml");
    std::fs::write(
        &server_cfg,
        format!("{HEAD}inbound: [{{listen: '{mesh_in}', forwardPort: {}, requireMtls: true}}]\n", app.port()),
    )?;
    let exe = proxy_exe(kapal, &args)?;
    let one = spawn_proxy_exe(&exe, &plain_cfg, None, args.proxy_threads).await?;
    let server = spawn_proxy_exe(&exe, &server_cfg, Some(&server_id), args.proxy_threads).await?;
    let client = spawn_proxy_exe(&exe, &client_cfg, Some(&client_id), args.proxy_threads).await?;

    println!("| figure | measured | target |\n|---|---|---|");
    row("proxy executable", exe.display().to_string(), "");
    row("proxy RSS idle", format!("{:.1} MiB", rss_mib(one.child.id())), "≤ 15 MB");
    let duration = Duration::from_secs(args.duration);
    let others = baselines(dir.path(), app).await?;
    let pair = vec![client.child.id(), server.child.id()];
    let mut targets = vec![
        ("direct", app, vec![]),
        ("kapal proxy", plain, vec![one.child.id()]),
        ("kapal mesh pair (mTLS)", mesh_out, pair),
    ];
    let compare = match &args.compare_exe {
        Some(exe) => {
            let addr = free_addr()?;
            let cfg = dir.path().join("compare.yaml");
            std::fs::write(
                &cfg,
                format!("{HEAD}services:\n  - {{name: app, listen: '{addr}', endpoints: [{{address: '{app}'}}]}}\n"),
            )?;
            let proxy = spawn_proxy_exe(exe, &cfg, None, args.proxy_threads).await?;
            targets.insert(2, ("kapal proxy (compare)", addr, vec![proxy.child.id()]));
            Some(proxy)
        }
        None => None,
    };
    let protos = if args.throughput_only { &[][..] } else { &args.protos[..] };
    for &proto in protos {
        for &rate in &args.rates {
            let mut baseline: Option<Samples> = None;
            let ours = targets.iter().map(|(name, addr, pids)| (name.to_string(), *addr, pids.clone()));
            let theirs = others.iter().map(|b| {
                let pids = vec![b.process.child.id()];
                match proto {
                    Proto::H1 => (b.name.to_string(), b.h1, pids),
                    Proto::H2 => (format!("{} ({} upstream)", b.name, b.h2.1), b.h2.0, pids),
                }
            });
            let targets: Vec<_> = ours.chain(theirs).collect();
            for (_, addr, _) in &targets {
                // Warm connection pools and the peak-EWMA estimates first.
                loadgen::open_loop(*addr, proto, rate, Duration::from_millis(500), args.connections).await?;
            }
            let slice = duration / args.slices;
            let mut taken: Vec<Taken> = targets.iter().map(|_| Taken::default()).collect();
            for round in 0..args.slices as usize {
                // Who goes first rotates, so that no target always follows the same one.
                for i in (0..targets.len()).map(|k| (k + round) % targets.len()) {
                    let ((_, addr, pids), taken) = (&targets[i], &mut taken[i]);
                    // A short unmeasured run first: the other targets' slices kept this one idle,
                    // long enough for a proxy to let its upstream connections go (HAProxy purges
                    // idle ones after 5 s).
                    loadgen::open_loop(*addr, proto, rate, Duration::from_millis(100), args.connections).await?;
                    let cpu_before = cpu_of(pids);
                    let started = Instant::now();
                    let run = loadgen::open_loop(*addr, proto, rate, slice, args.connections).await?;
                    taken.cpu += cpu_of(pids) - cpu_before;
                    taken.elapsed += started.elapsed();
                    taken.errors += run.errors;
                    taken.samples.extend(run.samples);
                }
            }
            for ((name, _, pids), taken) in targets.iter().zip(taken) {
                let requests = (taken.samples.len() + taken.errors).max(1) as f64;
                // The proxies' CPU time per request (user and system, read in 10 ms ticks at
                // each slice's start and end: at 1,000 req/s for the default 5 s, each slice's
                // reading may be off by up to 2 µs per request).
                let cpu_per_request = if pids.is_empty() {
                    String::new()
                } else {
                    format!(", proxy CPU {:.0} µs per request", 1e6 * taken.cpu / requests)
                };
                let s = &taken.samples;
                let label = format!("{proto:?} {rate} req/s {name}");
                row(
                    &format!("{label}: p50/p99/p99.9"),
                    format!(
                        "{} / {} / {} ({:.0} req/s, {} errors{cpu_per_request})",
                        ms(s.pct_ms(50.0)),
                        ms(s.pct_ms(99.0)),
                        ms(s.pct_ms(99.9)),
                        requests / taken.elapsed.as_secs_f64(),
                        taken.errors
                    ),
                    "",
                );
                match &baseline {
                    None => baseline = Some(taken.samples),
                    Some(b) => {
                        let added = |p| s.pct_ms(p) - b.pct_ms(p);
                        let target =
                            if name == "kapal proxy" && rate <= 1000 { "p50 ≤ 0.1 ms, p99 ≤ 0.5 ms" } else { "" };
                        row(
                            &format!("{label}: added p50/p99/p99.9"),
                            format!("{} / {} / {}", ms(added(50.0)), ms(added(99.0)), ms(added(99.9))),
                            target,
                        );
                    }
                }
            }
        }
    }
    targets.extend(others.iter().map(|b| (b.name, b.h1, vec![b.process.child.id()])));
    // Only now: the latency figures are taken with the generator free to use both CPUs, as
    // a sidecar's clients and servers are; one CPU of its own would add a cross-CPU wake-up to
    // every hop of every request, for every proxy alike.
    if pin {
        pin_self_to_cpu0()?;
    }
    let rounds = if args.latency_only { 0 } else { args.rounds.max(1) };
    let slice = duration / args.slices;
    // kapal proxy ÷ HAProxy in each round, in req/s.
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        // The targets take turns slice by slice, as in the latency runs: the neighbours' load on
        // a shared machine comes in bursts of a few seconds, which would otherwise land on
        // whichever target was being measured (both proxies had rounds 20 % slower than their
        // best, and a CPU-speed probe was slower in those rounds too).
        let mut taken = vec![Throughput::default(); targets.len()];
        let mut probes = Vec::with_capacity(args.slices as usize);
        for s in 0..args.slices as usize {
            probes.push(speed_probe());
            for i in (0..targets.len()).map(|k| (k + s + round) % targets.len()) {
                let ((_, addr, pids), taken) = (&targets[i], &mut taken[i]);
                let cpu_before = cpu_of(pids);
                let (requests, elapsed) = raw::max_throughput(*addr, slice, 64).await?;
                taken.cpu += cpu_of(pids) - cpu_before;
                taken.requests += requests;
                taken.elapsed += elapsed;
            }
        }
        for ((name, _, pids), t) in targets.iter().zip(&taken) {
            let name = if args.rounds > 1 { format!("{name}, round {round}") } else { name.to_string() };
            let value = if pids.is_empty() {
                format!("{:.0} req/s", t.rps())
            } else {
                // Requests per second of the proxy's own CPU time: what one saturated core serves.
                format!(
                    "{:.0} req/s at {:.0} % CPU ({:.0} req per CPU-second)",
                    t.rps(),
                    100.0 * t.cpu / t.elapsed.as_secs_f64(),
                    t.per_cpu_second()
                )
            };
            row(&format!("max throughput HTTP/1.1, 64 connections, {name}"), value, "");
        }
        probes.sort();
        row(
            &format!(
                "round {round}: CPU-speed probe{}, median of {}",
                if pin { " on CPU 0" } else { "" },
                probes.len()
            ),
            format!(
                "{:.2} ms (from {:.2} to {:.2})",
                ms_of(probes[probes.len() / 2]),
                ms_of(probes[0]),
                ms_of(probes[probes.len() - 1])
            ),
            "",
        );
        if let Some(h) = targets.iter().position(|(name, _, _)| *name == "HAProxy") {
            let of = |i: usize| {
                let (t, base) = (&taken[i], &taken[h]);
                format!(
                    "{:.0} % (per CPU-second {:.0} %)",
                    100.0 * t.rps() / base.rps(),
                    100.0 * t.per_cpu_second() / base.per_cpu_second()
                )
            };
            row(&format!("round {round}: kapal proxy / HAProxy"), of(1), "≥ 100 %");
            if compare.is_some() {
                row(&format!("round {round}: kapal proxy (compare) / HAProxy"), of(2), "");
            }
            ratios.push(100.0 * taken[1].rps() / taken[h].rps());
        }
    }
    if ratios.len() > 1 {
        // One round is one draw of the neighbours' load; the median of many is the comparison.
        ratios.sort_by(f64::total_cmp);
        let n = ratios.len();
        let median = if n % 2 == 1 { ratios[n / 2] } else { (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0 };
        let won = ratios.iter().filter(|&&r| r >= 100.0).count();
        row(
            &format!("kapal proxy / HAProxy over {n} rounds"),
            format!("median {median:.0} % (from {:.0} to {:.0} %; ≥ 100 % in {won} of {n})", ratios[0], ratios[n - 1]),
            "≥ 100 %",
        );
    }
    drop(compare);
    row("proxy RSS after load", format!("{:.1} MiB", rss_mib(one.child.id())), "");
    if args.throughput_only || args.latency_only {
        return Ok(());
    }
    let mut held = Vec::with_capacity(args.idle_connections);
    for _ in 0..args.idle_connections {
        match tokio::net::TcpStream::connect(idle).await {
            Ok(s) => held.push(s),
            Err(e) => {
                eprintln!("stopped opening idle connections at {}: {e}", held.len());
                break;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    row(
        &format!("proxy RSS with {} idle connections", held.len()),
        format!("{:.1} MiB", rss_mib(one.child.id())),
        "≤ 60 MB at 10,000",
    );
    drop(held);
    drop((client, server));
    Ok(())
}

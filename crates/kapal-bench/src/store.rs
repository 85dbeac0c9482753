//! The store scenario: the embedded SQLite store against a local etcd member, through the
//! same `Store` trait, with the same 1 KiB values.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kapal_store::Store;
use kapal_store::sqlite::{Retention, SqliteStore};

use crate::stats::{Samples, rss_mib};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Writes per concurrency level.
    #[arg(long, default_value_t = 20_000)]
    writes: usize,
    /// Watchers in the fan-out figure.
    #[arg(long, default_value_t = 1_000)]
    watchers: usize,
    /// Writes per second offered in the fan-out figure.
    #[arg(long, default_value_t = 5_000)]
    rate: usize,
    /// Writes in the compaction figure (the issue asks for 1,000,000).
    #[arg(long, default_value_t = 1_000_000)]
    churn: usize,
    /// An etcd endpoint to compare with (e.g. http://127.0.0.1:2379); started locally when absent.
    #[arg(long)]
    etcd: Option<String>,
}

fn value() -> Vec<u8> {
    vec![b'x'; 1024]
}

/// `n` creates by `writers` concurrent writers; returns per-write latencies and wall time.
pub async fn write_load(
    store: Arc<dyn Store>,
    n: usize,
    writers: usize,
    prefix: &str,
) -> anyhow::Result<(Samples, Duration)> {
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut s = Samples::default();
            let mut i = w;
            while i < n {
                let t = Instant::now();
                store.create(&format!("{prefix}{i}"), value()).await?;
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

/// Opens `watchers` watches on one prefix, writes at `rate`/s for `seconds` (open loop), and
/// measures the delay from each write's acknowledgment to its arrival at every watcher.
pub async fn fanout(store: Arc<dyn Store>, watchers: usize, rate: usize, seconds: u64) -> anyhow::Result<Samples> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let start = store.current_revision();
    let total = rate * seconds as usize;
    let t0 = Instant::now();
    // Acknowledgment times as nanoseconds since t0 (0 = not yet), readable without locks.
    let acks: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let mut stream = store.watch("/registry/fan/", start).await?;
        let acks = acks.clone();
        tasks.push(tokio::spawn(async move {
            let mut arrivals = Vec::with_capacity(total);
            while arrivals.len() < total {
                let Some(ev) = stream.next().await else { break };
                let ev = ev?;
                let at = t0.elapsed().as_nanos() as u64;
                let idx: usize = ev.kv.key.trim_start_matches("/registry/fan/").parse().unwrap_or(0);
                arrivals.push((idx, at));
            }
            // Delays are computed after the run so that measuring does not slow delivery; an
            // event that arrives before its writer saw the acknowledgment counts as 0.
            let mut s = Samples::default();
            for (idx, at) in arrivals {
                let ack = loop {
                    let a = acks[idx].load(Ordering::Acquire);
                    if a != 0 {
                        break a;
                    }
                    tokio::task::yield_now().await;
                };
                s.push(Duration::from_nanos(at.saturating_sub(ack)));
            }
            Ok::<_, kapal_store::StoreError>(s)
        }));
    }
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let mut writes = Vec::new();
    for i in 0..total {
        tokio::time::sleep_until((t0 + period * i as u32).into()).await;
        let store = store.clone();
        let acks = acks.clone();
        writes.push(tokio::spawn(async move {
            store.create(&format!("/registry/fan/{i}"), value()).await?;
            acks[i].store(t0.elapsed().as_nanos().max(1) as u64, Ordering::Release);
            Ok::<_, kapal_store::StoreError>(())
        }));
    }
    for w in writes {
        w.await??;
    }
    let mut all = Samples::default();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

fn row(name: &str, value: String, target: &str) {
    println!("| {name} | {value} | {target} |");
    eprintln!("{}", serde_json::json!({"figure": name, "value": value, "target": target}));
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    println!("| figure | measured | target |\n|---|---|---|");
    let etcd = crate::etcd::Etcd::start_or_use(args.etcd.as_deref()).await?;
    for writers in [1usize, 16, 256] {
        let dir = tempfile::tempdir()?;
        let sqlite: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("state.db")).map_err(|e| anyhow::anyhow!("{e}"))?);
        let n = if writers == 1 { args.writes / 10 } else { args.writes };
        let (s_lat, s_wall) = write_load(sqlite, n, writers, "/registry/bench/").await?;
        let e_store = etcd.store(&format!("/bench-{writers}")).await?;
        let (e_lat, e_wall) = write_load(e_store, n, writers, "/registry/bench/").await?;
        let (s_rate, e_rate) = (n as f64 / s_wall.as_secs_f64(), n as f64 / e_wall.as_secs_f64());
        row(
            &format!("{writers} writer(s), {n} creates of 1 KiB: writes/s"),
            format!("SQLite {s_rate:.0}/s vs etcd {e_rate:.0}/s ({:.1}×)", s_rate / e_rate),
            "SQLite ≥ 2× etcd",
        );
        row(
            &format!("{writers} writer(s): p99 latency"),
            format!("SQLite {:.2} ms vs etcd {:.2} ms", s_lat.pct_ms(99.0), e_lat.pct_ms(99.0)),
            "SQLite ≤ etcd",
        );
    }

    // Churn first, so that its RSS curve is not inflated by the fan-out's samples.
    churn(args.churn).await?;

    let dir = tempfile::tempdir()?;
    let sqlite: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("state.db")).map_err(|e| anyhow::anyhow!("{e}"))?);
    let delays = fanout(sqlite, args.watchers, args.rate, 4).await?;
    row(
        &format!("{} watchers, {} writes/s (SQLite): event delay p50 / p99", args.watchers, args.rate),
        format!("{:.2} / {:.2} ms ({} deliveries)", delays.pct_ms(50.0), delays.pct_ms(99.0), delays.len()),
        "p99 ≤ 20 ms",
    );

    drop(etcd);
    Ok(())
}

/// Rewrites a fixed set of keys `total` times with compaction on, reporting file size and RSS.
async fn churn(total: usize) -> anyhow::Result<()> {
    const KEYS: usize = 10_000;
    const WRITERS: usize = 32;
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(&dir.path().join("state.db")).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Short retention so that a bench run shows the steady state in seconds, not minutes.
    store.spawn_compactor(Retention {
        min_revisions: 10_000,
        min_age: Duration::from_secs(1),
        interval: Duration::from_millis(500),
    });
    let store = Arc::new(store);
    // Writer w owns keys w, w+32, …; each remembers its keys' revisions between batches.
    let mut owned: Vec<Vec<(usize, i64)>> =
        (0..WRITERS).map(|w| (w..KEYS).step_by(WRITERS).map(|k| (k, 0)).collect()).collect();
    let step = (total / 10).max(1);
    let mut curve = Vec::new();
    let mut done = 0;
    while done < total {
        let per_writer = step.min(total - done).div_ceil(WRITERS);
        let mut tasks = Vec::new();
        for mut keys in owned.drain(..) {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..per_writer {
                    let slot = n % keys.len();
                    let (k, rev) = keys[slot];
                    let key = format!("/registry/churn/{k}");
                    let kv = if rev == 0 {
                        store.create(&key, value()).await?
                    } else {
                        store.update(&key, value(), rev).await?
                    };
                    keys[slot].1 = kv.mod_revision;
                }
                Ok::<_, kapal_store::StoreError>(keys)
            }));
        }
        for t in tasks {
            owned.push(t.await??);
        }
        done += per_writer * WRITERS;
        tokio::time::sleep(Duration::from_millis(600)).await;
        let size =
            |name: &str| std::fs::metadata(dir.path().join(name)).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0;
        curve.push(format!(
            "{}k: db {:.0} + wal {:.0} MiB, RSS {:.0} MiB",
            done / 1000,
            size("state.db"),
            size("state.db-wal"),
            rss_mib(std::process::id())
        ));
    }
    row(
        &format!("{total} writes over {KEYS} keys, compaction on: db size and RSS"),
        curve.join("; "),
        "flat after warm-up",
    );
    Ok(())
}

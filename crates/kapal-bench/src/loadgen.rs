//! Open-loop, fixed-rate HTTP load generator (the wrk2 idea).
//!
//! Requests are *scheduled* at fixed intervals by a pacing OS thread (std sleep is precise to
//! tens of microseconds; tokio's timer wheel only to a millisecond) and every latency is
//! measured from the request's scheduled time, not from when a connection got round to sending
//! it. A stalled server therefore shows up as queueing latency for every request scheduled
//! during the stall instead of silently lowering the request rate (coordinated omission).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{Mutex, mpsc};

use crate::stats::Samples;

/// HTTP version of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    /// HTTP/1.1 keep-alive over `connections` connections.
    H1,
    /// HTTP/2 prior knowledge, all requests multiplexed on one connection.
    H2,
}

/// Result of a run.
pub struct Run {
    /// Latency of each successful request, from its scheduled start.
    pub samples: Samples,
    /// Failed requests (connection errors or non-2xx).
    pub errors: usize,
}

/// An HTTP/1.1 request as curl, wrk or a browser send it: the path (origin-form) and a `Host`.
fn request(target: SocketAddr) -> http::Request<Empty<Bytes>> {
    http::Request::get("/").header(http::header::HOST, target.to_string()).body(Empty::new()).unwrap_or_default()
}

/// An HTTP/2 request: the URI names scheme and authority (`:scheme`, `:authority`).
fn h2_request(target: SocketAddr) -> http::Request<Empty<Bytes>> {
    http::Request::get(format!("http://{target}/")).body(Empty::new()).unwrap_or_default()
}

/// Schedules `rate × duration` requests on a pacing thread; yields their scheduled instants.
fn pace(rate: u32, duration: Duration) -> mpsc::UnboundedReceiver<Instant> {
    let (tx, rx) = mpsc::unbounded_channel();
    let total = (f64::from(rate) * duration.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    std::thread::spawn(move || {
        let start = Instant::now() + Duration::from_millis(5);
        for k in 0..total {
            let at = start + interval.mul_f64(k as f64);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if tx.send(at).is_err() {
                return;
            }
        }
    });
    rx
}

/// Runs the open-loop load against `target`.
pub async fn open_loop(
    target: SocketAddr,
    proto: Proto,
    rate: u32,
    duration: Duration,
    connections: usize,
) -> anyhow::Result<Run> {
    let ticks = pace(rate, duration);
    let (samples, errors) = match proto {
        Proto::H1 => h1_workers(target, ticks, connections).await?,
        Proto::H2 => h2_streams(target, ticks).await?,
    };
    Ok(Run { samples, errors })
}

type H1 = http1::SendRequest<Empty<Bytes>>;

async fn h1_connect(target: SocketAddr) -> anyhow::Result<H1> {
    let stream = tokio::net::TcpStream::connect(target).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// A ready sender; reconnects when the server closed the connection (e.g. nginx after
/// `keepalive_requests`), as a real client's pool would.
async fn h1_ready(target: SocketAddr, sender: &mut H1) -> anyhow::Result<()> {
    if sender.ready().await.is_err() {
        *sender = h1_connect(target).await?;
        sender.ready().await?;
    }
    Ok(())
}

async fn h1_workers(
    target: SocketAddr,
    ticks: mpsc::UnboundedReceiver<Instant>,
    connections: usize,
) -> anyhow::Result<(Samples, usize)> {
    let ticks = Arc::new(Mutex::new(ticks));
    let mut workers = Vec::new();
    for _ in 0..connections {
        let mut sender = h1_connect(target).await?;
        let ticks = ticks.clone();
        workers.push(tokio::spawn(async move {
            let (mut samples, mut errors) = (Samples::default(), 0);
            loop {
                // A free connection takes the oldest scheduled request.
                let Some(at) = ticks.lock().await.recv().await else { break };
                if h1_ready(target, &mut sender).await.is_err() {
                    errors += 1;
                    continue;
                }
                match sender.send_request(request(target)).await {
                    Ok(res) if res.status().is_success() => match res.into_body().collect().await {
                        Ok(_) => samples.push(at.elapsed()),
                        Err(_) => errors += 1,
                    },
                    _ => errors += 1,
                }
            }
            (samples, errors)
        }));
    }
    let (mut all, mut errors) = (Samples::default(), 0);
    for w in workers {
        let (s, e) = w.await?;
        all.extend(s);
        errors += e;
    }
    Ok((all, errors))
}

async fn h2_streams(
    target: SocketAddr,
    mut ticks: mpsc::UnboundedReceiver<Instant>,
) -> anyhow::Result<(Samples, usize)> {
    let stream = tokio::net::TcpStream::connect(target).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    while let Some(at) = ticks.recv().await {
        let (mut sender, done) = (sender.clone(), done_tx.clone());
        tokio::spawn(async move {
            let ok = match sender.send_request(h2_request(target)).await {
                Ok(res) if res.status().is_success() => res.into_body().collect().await.is_ok(),
                _ => false,
            };
            let _ = done.send(ok.then(|| at.elapsed()));
        });
    }
    drop(done_tx);
    let (mut samples, mut errors) = (Samples::default(), 0);
    while let Some(r) = done_rx.recv().await {
        match r {
            Some(d) => samples.push(d),
            None => errors += 1,
        }
    }
    Ok((samples, errors))
}

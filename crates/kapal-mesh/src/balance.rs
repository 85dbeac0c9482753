//! Endpoint selection: power of two choices over peak-EWMA latency, with outlier ejection.
//!
//! The cost of an endpoint is its peak-EWMA round-trip estimate times (pending requests + 1),
//! divided by its weight. A slower sample replaces the estimate at once (peak); faster samples
//! pull it down with time constant `decay`. Consecutive failures eject an endpoint for a back-off
//! that doubles with each ejection up to a cap; after it, the endpoint is on probation: one
//! success restores it, one failure ejects it again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{LoadBalancer, OutlierDetection};

/// Latency and health bookkeeping for one endpoint.
#[derive(Debug)]
pub struct EndpointStats {
    pending: AtomicUsize,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    ewma_ns: f64,
    updated: Instant,
    consecutive_failures: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
}

/// What happened to a request, for the balancer's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with a non-5xx response.
    Success,
    /// 5xx, connect failure or reset.
    Failure,
}

/// The weight an EWMA keeps after `x` decay periods: `e^-x`. Samples arrive microseconds apart
/// under load, where `x` is around 1e-6; there the series' first terms are exact to the last
/// bit that matters (the error is below `x⁴/24`, 4e-14 at most) and cost a few
/// multiplications instead of a call to `exp`.
fn decay_weight(x: f64) -> f64 {
    if x < 1e-3 { 1.0 - x * (1.0 - x * (0.5 - x / 6.0)) } else { (-x).exp() }
}

/// What recording an outcome changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing notable.
    None,
    /// The endpoint was just ejected.
    Ejected,
    /// An ejected endpoint answered successfully and is back.
    Recovered,
}

impl EndpointStats {
    /// Fresh stats seeded with the default RTT.
    pub fn new(lb: &LoadBalancer) -> Self {
        EndpointStats {
            pending: AtomicUsize::new(0),
            inner: Mutex::new(Inner {
                ewma_ns: lb.default_rtt.0.as_nanos() as f64,
                updated: Instant::now(),
                consecutive_failures: 0,
                ejections: 0,
                ejected_until: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another request panicked mid-update; the numbers stay usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks a request as started; the guard ends it.
    pub fn start(&self) -> PendingGuard<'_> {
        self.begin();
        PendingGuard(self)
    }

    /// Marks a request as started, for an owner of the stats that ends it with [`end`](Self::end)
    /// (where a guard's borrow cannot live).
    pub(crate) fn begin(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends a request [`begin`](Self::begin) started.
    pub(crate) fn end(&self) {
        self.pending.fetch_sub(1, Ordering::Relaxed);
    }

    /// Requests currently in flight.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Current peak-EWMA estimate, decayed to now.
    pub fn latency_estimate(&self, lb: &LoadBalancer) -> Duration {
        let inner = self.lock();
        Duration::from_nanos(decayed(&inner, lb.decay.0, Instant::now()) as u64)
    }

    fn cost(&self, lb: &LoadBalancer, weight: u32, now: Instant) -> f64 {
        let ewma = decayed(&self.lock(), lb.decay.0, now);
        ewma * (self.pending() as f64 + 1.0) / f64::from(weight.max(1))
    }

    /// Records a latency sample.
    pub fn observe_rtt(&self, lb: &LoadBalancer, rtt: Duration) {
        self.observe_rtt_at(lb, rtt, Instant::now());
    }

    /// Records a latency sample taken at `now` (a caller that has just read the clock).
    pub fn observe_rtt_at(&self, lb: &LoadBalancer, rtt: Duration, now: Instant) {
        let mut inner = self.lock();
        // Through `as_secs_f64`: `as_nanos` is a u128, whose conversion to f64 is a call of its own.
        let sample = rtt.as_secs_f64() * 1e9;
        inner.ewma_ns = if sample > inner.ewma_ns {
            sample
        } else {
            let elapsed = now.saturating_duration_since(inner.updated).as_secs_f64();
            let w = decay_weight(elapsed / lb.decay.0.as_secs_f64());
            inner.ewma_ns * w + sample * (1.0 - w)
        };
        inner.updated = now;
    }

    /// True when the endpoint is not ejected at `now`.
    pub fn available(&self, now: Instant) -> bool {
        self.lock().ejected_until.is_none_or(|until| now >= until)
    }

    /// Records an outcome for outlier detection (no-op without a policy).
    pub fn record(&self, od: Option<&OutlierDetection>, outcome: Outcome) -> Transition {
        let Some(od) = od else { return Transition::None };
        let now = Instant::now();
        let mut inner = self.lock();
        match outcome {
            Outcome::Success => {
                inner.consecutive_failures = 0;
                if inner.ejected_until.take().is_some() {
                    inner.ejections = 0;
                    return Transition::Recovered;
                }
                Transition::None
            }
            Outcome::Failure => {
                inner.consecutive_failures += 1;
                let on_probation = inner.ejected_until.is_some_and(|until| now >= until);
                if on_probation || inner.consecutive_failures >= od.consecutive_failures {
                    inner.ejections = inner.ejections.saturating_add(1);
                    let factor = 1u32 << (inner.ejections - 1).min(16);
                    let penalty = od.base_ejection_time.0.saturating_mul(factor).min(od.max_ejection_time.0);
                    inner.ejected_until = Some(now + penalty);
                    inner.consecutive_failures = 0;
                    return Transition::Ejected;
                }
                Transition::None
            }
        }
    }
}

fn decayed(inner: &Inner, decay: Duration, now: Instant) -> f64 {
    // Without new samples the estimate relaxes towards zero, so an endpoint that was slow once
    // is tried again eventually.
    let elapsed = now.saturating_duration_since(inner.updated).as_secs_f64();
    inner.ewma_ns * (-elapsed / decay.as_secs_f64()).exp()
}

/// Decrements the pending count when dropped.
#[derive(Debug)]
pub struct PendingGuard<'a>(&'a EndpointStats);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// Something the balancer can choose: its stats and weight.
pub trait Candidate {
    /// Latency/health stats.
    fn stats(&self) -> &EndpointStats;
    /// Relative weight; 0 is never chosen.
    fn weight(&self) -> u32;
}

/// Power of two choices: two random available endpoints (weighted), the cheaper one wins.
/// `rand01` yields uniform numbers in `[0, 1)`. `None` when no endpoint is available.
pub fn p2c<'a, C: Candidate>(endpoints: &'a [C], lb: &LoadBalancer, rand01: impl FnMut() -> f64) -> Option<&'a C> {
    p2c_at(endpoints, lb, Instant::now(), rand01)
}

/// [`p2c`] at `now` (a caller that has just read the clock).
pub fn p2c_at<'a, C: Candidate>(
    endpoints: &'a [C],
    lb: &LoadBalancer,
    now: Instant,
    mut rand01: impl FnMut() -> f64,
) -> Option<&'a C> {
    // One endpoint (an inbound app, a single-replica service): nothing to choose between.
    if let [only] = endpoints {
        return (only.weight() > 0 && only.stats().available(now)).then_some(only);
    }
    let ready: Vec<&C> = endpoints.iter().filter(|e| e.weight() > 0 && e.stats().available(now)).collect();
    match ready.len() {
        0 => None,
        1 => Some(ready[0]),
        _ => {
            let total: u64 = ready.iter().map(|e| u64::from(e.weight())).sum();
            let mut pick = |skip: Option<usize>| {
                let total = total - skip.map_or(0, |i| u64::from(ready[i].weight()));
                let mut target = (rand01() * total as f64) as u64;
                let mut last = 0;
                for (i, e) in ready.iter().enumerate() {
                    if Some(i) == skip {
                        continue;
                    }
                    last = i;
                    if target < u64::from(e.weight()) {
                        return i;
                    }
                    target -= u64::from(e.weight());
                }
                last
            };
            let a = pick(None);
            let b = pick(Some(a));
            let (ca, cb) =
                (ready[a].stats().cost(lb, ready[a].weight(), now), ready[b].stats().cost(lb, ready[b].weight(), now));
            Some(if cb < ca { ready[b] } else { ready[a] })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Duration as CfgDuration;

    #[test]
    fn decay_weights_follow_the_exponential() {
        for x in [0.0, 1e-9, 1e-6, 1e-4, 9.99e-4, 1e-3, 0.5, 3.0] {
            assert!((decay_weight(x) - (-x).exp()).abs() < 1e-13, "{x}");
        }
    }

    struct Ep(EndpointStats, u32);
    impl Candidate for Ep {
        fn stats(&self) -> &EndpointStats {
            &self.0
        }
        fn weight(&self) -> u32 {
            self.1
        }
    }

    fn lb() -> LoadBalancer {
        LoadBalancer::default()
    }

    fn od() -> OutlierDetection {
        OutlierDetection {
            consecutive_failures: 3,
            base_ejection_time: CfgDuration(Duration::from_secs(1)),
            max_ejection_time: CfgDuration(Duration::from_secs(3)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn peak_ewma_jumps_up_and_decays_down() {
        let s = EndpointStats::new(&lb());
        assert_eq!(s.latency_estimate(&lb()), Duration::from_millis(30));
        s.observe_rtt(&lb(), Duration::from_millis(100));
        assert_eq!(s.latency_estimate(&lb()), Duration::from_millis(100));
        // A fast sample right away barely moves the estimate...
        s.observe_rtt(&lb(), Duration::from_millis(1));
        assert!(s.latency_estimate(&lb()) > Duration::from_millis(99));
        // ...but after a decay period, fast samples dominate.
        tokio::time::advance(Duration::from_secs(10)).await;
        s.observe_rtt(&lb(), Duration::from_millis(1));
        let est = s.latency_estimate(&lb());
        assert!(est < Duration::from_millis(40) && est > Duration::from_millis(1), "{est:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn p2c_prefers_the_faster_endpoint() {
        let eps = vec![Ep(EndpointStats::new(&lb()), 1), Ep(EndpointStats::new(&lb()), 1)];
        eps[0].0.observe_rtt(&lb(), Duration::from_millis(200));
        eps[1].0.observe_rtt(&lb(), Duration::from_millis(5));
        let mut seed = 0.0;
        for _ in 0..50 {
            seed = (seed + 0.37) % 1.0;
            let mut r = seed;
            let chosen = p2c(&eps, &lb(), || {
                r = (r + 0.61) % 1.0;
                r
            })
            .unwrap();
            assert!(std::ptr::eq(chosen, &eps[1]));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn p2c_accounts_for_pending_requests() {
        let eps = vec![Ep(EndpointStats::new(&lb()), 1), Ep(EndpointStats::new(&lb()), 1)];
        let _busy: Vec<_> = (0..5).map(|_| eps[0].0.start()).collect();
        let mut r = 0.0;
        let chosen = p2c(&eps, &lb(), || {
            r += 0.5;
            r % 1.0
        })
        .unwrap();
        assert!(std::ptr::eq(chosen, &eps[1]));
        drop(_busy);
        assert_eq!(eps[0].0.pending(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_with_doubling_backoff_and_recover() {
        let od = od();
        let s = EndpointStats::new(&lb());
        assert_eq!(s.record(Some(&od), Outcome::Failure), Transition::None);
        assert_eq!(s.record(Some(&od), Outcome::Failure), Transition::None);
        assert_eq!(s.record(Some(&od), Outcome::Failure), Transition::Ejected);
        assert!(!s.available(Instant::now()));
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(s.available(Instant::now()));
        // Probation: one failure ejects again, for twice as long.
        assert_eq!(s.record(Some(&od), Outcome::Failure), Transition::Ejected);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(!s.available(Instant::now()));
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(s.available(Instant::now()));
        assert_eq!(s.record(Some(&od), Outcome::Success), Transition::Recovered);
        // Back to needing three failures.
        assert_eq!(s.record(Some(&od), Outcome::Failure), Transition::None);
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_time_is_capped() {
        let od = od();
        let s = EndpointStats::new(&lb());
        for _ in 0..3 {
            s.record(Some(&od), Outcome::Failure);
        }
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(3)).await;
            assert!(s.available(Instant::now()));
            assert_eq!(s.record(Some(&od), Outcome::Failure), Transition::Ejected);
        }
        tokio::time::advance(Duration::from_millis(3001)).await;
        assert!(s.available(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn p2c_skips_ejected_and_zero_weight_endpoints() {
        let od = od();
        let eps =
            vec![Ep(EndpointStats::new(&lb()), 1), Ep(EndpointStats::new(&lb()), 0), Ep(EndpointStats::new(&lb()), 1)];
        for _ in 0..3 {
            eps[0].0.record(Some(&od), Outcome::Failure);
        }
        for i in 0..20 {
            let chosen = p2c(&eps, &lb(), || i as f64 / 20.0).unwrap();
            assert!(std::ptr::eq(chosen, &eps[2]));
        }
        for _ in 0..3 {
            eps[2].0.record(Some(&od), Outcome::Failure);
        }
        assert!(p2c(&eps, &lb(), || 0.5).is_none());
    }
}

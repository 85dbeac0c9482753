//! Retry budget: retries may add at most `ratio` × requests seen in the last `ttl`, plus a floor
//! of `minRetriesPerSecond` × `ttl`, so retries cannot multiply the load on a failing service.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RetryBudget;

const SLOTS: usize = 10;

/// A sliding-window retry budget.
#[derive(Debug)]
pub struct Budget {
    ratio: f64,
    reserve: f64,
    slot_len: Duration,
    inner: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    /// (slot start, requests, retries), oldest first.
    slots: [(Instant, u64, u64); SLOTS],
    head: usize,
}

impl Budget {
    /// A budget from config.
    pub fn new(cfg: &RetryBudget) -> Self {
        let now = Instant::now();
        Budget {
            ratio: cfg.ratio,
            reserve: f64::from(cfg.min_retries_per_second) * cfg.ttl.0.as_secs_f64(),
            slot_len: cfg.ttl.0 / SLOTS as u32,
            inner: Mutex::new(Window { slots: [(now, 0, 0); SLOTS], head: 0 }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut (Instant, u64, u64), (u64, u64)) -> T) -> T {
        let now = Instant::now();
        let mut w = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let w = &mut *w;
        self.advance(w, now);
        let horizon = self.slot_len * SLOTS as u32;
        let totals = w
            .slots
            .iter()
            .filter(|s| now.saturating_duration_since(s.0) < horizon)
            .fold((0, 0), |(r, t), s| (r + s.1, t + s.2));
        let head = w.head;
        f(&mut w.slots[head], totals)
    }

    fn advance(&self, w: &mut Window, now: Instant) {
        if now.saturating_duration_since(w.slots[w.head].0) >= self.slot_len {
            w.head = (w.head + 1) % SLOTS;
            w.slots[w.head] = (now, 0, 0);
        }
    }

    /// Counts an original request (every request: no totals needed).
    pub fn deposit(&self, now: Instant) {
        let mut w = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.advance(&mut w, now);
        let head = w.head;
        w.slots[head].1 += 1;
    }

    /// Takes one retry from the budget; false when the budget is spent.
    pub fn try_withdraw(&self) -> bool {
        self.with(|slot, (requests, retries)| {
            let allowed = self.reserve + self.ratio * requests as f64;
            if (retries as f64) < allowed {
                slot.2 += 1;
                true
            } else {
                false
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Duration as CfgDuration;

    fn budget(ratio: f64, min: u32) -> Budget {
        Budget::new(&RetryBudget { ratio, min_retries_per_second: min, ttl: CfgDuration(Duration::from_secs(10)) })
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_limited_to_the_ratio() {
        let b = budget(0.2, 0);
        for _ in 0..100 {
            b.deposit(Instant::now());
        }
        let granted = (0..100).filter(|_| b.try_withdraw()).count();
        assert_eq!(granted, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn the_reserve_allows_retries_without_traffic() {
        let b = budget(0.0, 1);
        let granted = (0..100).filter(|_| b.try_withdraw()).count();
        assert_eq!(granted, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_slides() {
        let b = budget(0.5, 0);
        for _ in 0..10 {
            b.deposit(Instant::now());
        }
        assert_eq!((0..10).filter(|_| b.try_withdraw()).count(), 5);
        // After the window has passed, old requests and retries no longer count.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!b.try_withdraw());
        for _ in 0..4 {
            b.deposit(Instant::now());
        }
        assert_eq!((0..10).filter(|_| b.try_withdraw()).count(), 2);
    }
}

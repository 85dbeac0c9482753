//! Latency samples and their percentiles.

use std::time::Duration;

/// Collected latencies.
#[derive(Debug, Default, Clone)]
pub struct Samples(pub Vec<Duration>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    /// The p-th percentile (0..=100) in milliseconds.
    pub fn pct_ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut v = self.0.clone();
        v.sort();
        let idx = ((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize;
        v[idx.min(v.len() - 1)].as_secs_f64() * 1000.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Resident set size of a process in MiB, from /proc.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// CPU time a process has used so far (user + system, all threads), from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; fields after its closing parenthesis are plain.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        // Linux reports them in USER_HZ, which is 100 on every architecture it runs on.
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let s = Samples((1..=100).map(Duration::from_millis).collect());
        assert_eq!(s.pct_ms(50.0).round(), 51.0);
        assert_eq!(s.pct_ms(99.0).round(), 99.0);
        assert!(Samples::default().pct_ms(50.0).is_nan());
    }

    #[test]
    fn cpu_seconds_grow_as_a_process_works() {
        let me = std::process::id();
        let before = cpu_seconds(me);
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = cpu_seconds(me);
        assert!(before.is_finite() && after > before, "{before} → {after}");
        assert!(cpu_seconds(u32::MAX).is_nan());
    }
}

//! The JSON text forms of `metav1.Time`, `metav1.MicroTime` and `metav1.Duration`.

/// `0001-01-01T00:00:00Z`, Go's zero `time.Time`, which Kubernetes writes as JSON `null`.
pub(super) const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;
/// `0000-01-01T00:00:00Z` and `9999-12-31T23:59:59Z`: what Go's RFC 3339 marshalling accepts.
const MIN_SECONDS: i64 = -62_167_219_200;
const MAX_SECONDS: i64 = 253_402_300_799;

/// `2024-01-02T03:04:05Z` (`metav1.Time` has whole seconds in JSON).
pub(super) fn rfc3339(seconds: i64) -> Result<String, String> {
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&seconds) {
        return Err(format!("timestamp {seconds} is outside the years 0 to 9999"));
    }
    jiff::Timestamp::from_second(seconds).map(|t| t.to_string()).map_err(|e| e.to_string())
}

/// `2024-01-02T03:04:05.123456Z` (`metav1.MicroTime`). `nanos` may be any value, as in Go's
/// `time.Unix`, and is normalised into the seconds.
pub(super) fn rfc3339_micro(seconds: i64, nanos: i64) -> Result<String, String> {
    let seconds = seconds
        .checked_add(nanos.div_euclid(1_000_000_000))
        .ok_or_else(|| format!("timestamp {seconds} is outside the years 0 to 9999"))?;
    let whole = rfc3339(seconds)?;
    let micros = nanos.rem_euclid(1_000_000_000) / 1000;
    Ok(format!("{}.{micros:06}Z", whole.trim_end_matches('Z')))
}

/// Go's `time.Duration.String()`: `1h0m0s`, `1m30s`, `1.5s`, `300ms`, `1µs`, `0s`.
pub(super) fn go_duration(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let mut u = nanos.unsigned_abs();
    if u == 0 {
        return "0s".to_string();
    }
    if u < 1_000_000_000 {
        let (digits, unit) = match u {
            0..1_000 => (0, "ns"),
            1_000..1_000_000 => (3, "µs"),
            _ => (6, "ms"),
        };
        let frac = fraction(u, digits);
        u /= 10u64.pow(digits);
        return format!("{sign}{u}{frac}{unit}");
    }
    let frac = fraction(u, 9);
    u /= 1_000_000_000;
    let mut out = format!("{}{frac}s", u % 60);
    u /= 60;
    if u > 0 {
        out = format!("{}m{out}", u % 60);
        u /= 60;
        if u > 0 {
            out = format!("{u}h{out}");
        }
    }
    format!("{sign}{out}")
}

/// The last `digits` decimal digits of `v` as `.123`, without trailing zeros; empty when zero.
fn fraction(v: u64, digits: u32) -> String {
    if digits == 0 {
        return String::new();
    }
    let frac = v % 10u64.pow(digits);
    if frac == 0 {
        return String::new();
    }
    let text = format!("{frac:0width$}", width = digits as usize);
    format!(".{}", text.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_like_kubernetes() {
        assert_eq!(rfc3339(1_704_164_645).unwrap(), "2024-01-02T03:04:05Z");
        assert_eq!(rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(GO_ZERO_TIME_SECONDS + 86_400).unwrap(), "0001-01-02T00:00:00Z");
        assert!(rfc3339(MAX_SECONDS + 1).is_err());
        assert!(rfc3339(i64::MIN).is_err());
        assert_eq!(rfc3339_micro(1_704_164_645, 123_456_789).unwrap(), "2024-01-02T03:04:05.123456Z");
        assert_eq!(rfc3339_micro(1_704_164_645, 0).unwrap(), "2024-01-02T03:04:05.000000Z");
        assert_eq!(rfc3339_micro(1_704_164_645, -1_000).unwrap(), "2024-01-02T03:04:04.999999Z");
        assert!(rfc3339_micro(i64::MAX, i64::MAX).is_err());
    }

    #[test]
    fn formats_durations_like_go() {
        let cases = [
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1µs"),
            (2_200_000, "2.2ms"),
            (1_500_000_000, "1.5s"),
            (60_000_000_000, "1m0s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_000_000_000, "1h2m3s"),
            (-1_500_000_000, "-1.5s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ];
        for (nanos, text) in cases {
            assert_eq!(go_duration(nanos), text, "{nanos}");
        }
    }
}

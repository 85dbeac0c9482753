//! Ages and durations: apimachinery's `HumanDuration` and the timestamp helpers around it.

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

/// Formats a duration the way `kubectl get` shows ages (`45s`, `3m12s`, `3d4h`, `2y3d`).
///
/// This is apimachinery's `duration.HumanDuration`: two units while the larger one is small,
/// one unit after that, whole numbers truncated toward zero, a year of 365 days. Up to one
/// second into the future reads `0s` (clock skew); further is `<invalid>`.
pub fn human_duration(d: SignedDuration) -> String {
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return two_units(minutes, "m", seconds % 60, "s");
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        return two_units(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return two_units(days, "d", hours % 24, "h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return two_units(years, "y", days % 365, "d");
    }
    format!("{years}y")
}

/// `3h15m`, or just `3h` when the smaller part is zero.
fn two_units(big: i64, big_unit: &str, small: i64, small_unit: &str) -> String {
    if small == 0 { format!("{big}{big_unit}") } else { format!("{big}{big_unit}{small}{small_unit}") }
}

/// Go's zero `time.Time`, which `metav1.Time` treats as "unset".
fn go_zero_time() -> Timestamp {
    Timestamp::from_second(-62_135_596_800).unwrap_or(Timestamp::MIN)
}

/// A `metav1.Time`/`MicroTime` field: `None` when absent, null, empty, unparsable or Go's zero
/// time.
pub(super) fn parse_time(v: &Value) -> Option<Timestamp> {
    let t = v.as_str()?.parse::<Timestamp>().ok()?;
    (t != go_zero_time()).then_some(t)
}

/// `translateTimestampSince`: the age of a timestamp, `<unknown>` when it is unset.
pub(super) fn since(v: &Value, now: Timestamp) -> String {
    match parse_time(v) {
        Some(t) => human_duration(now.duration_since(t)),
        None => "<unknown>".to_string(),
    }
}

/// The AGE cell of an object.
pub(super) fn age(obj: &Value, now: Timestamp) -> Value {
    Value::from(since(&obj["metadata"]["creationTimestamp"], now))
}

/// The default convertor's `Created At` cell: RFC 3339 in UTC, whole seconds.
pub(super) fn created_at(v: &Value) -> String {
    match parse_time(v) {
        Some(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => "0001-01-01T00:00:00Z".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: i64) -> String {
        human_duration(SignedDuration::from_secs(s))
    }

    #[test]
    fn human_duration_matches_apimachinery_table() {
        let cases: &[(i64, &str)] = &[
            (-3, "<invalid>"),
            (-2, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (45, "45s"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (599, "9m59s"),
            (600, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 15 * 60 + 30, "3h15m"),
            (7 * 3600 + 59 * 60, "7h59m"),
            (8 * 3600, "8h"),
            (47 * 3600 + 3599, "47h"),
            (48 * 3600, "2d"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (7 * 86400 + 23 * 3600, "7d23h"),
            (8 * 86400, "8d"),
            (364 * 86400, "364d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (733 * 86400, "2y3d"),
            (2 * 365 * 86400 + 45 * 86400, "2y45d"),
            (8 * 365 * 86400, "8y"),
            (9 * 365 * 86400 + 100 * 86400, "9y"),
        ];
        for (s, want) in cases {
            assert_eq!(secs(*s), *want, "{s} seconds");
        }
    }

    #[test]
    fn sub_second_parts_truncate_toward_zero() {
        assert_eq!(human_duration(SignedDuration::from_millis(-1999)), "0s");
        assert_eq!(human_duration(SignedDuration::from_millis(-2000)), "<invalid>");
        assert_eq!(human_duration(SignedDuration::from_millis(119_999)), "119s");
    }

    #[test]
    fn unset_and_zero_times_are_unknown() {
        let now: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        for v in
            [Value::Null, Value::from(""), Value::from("garbage"), Value::from("0001-01-01T00:00:00Z"), Value::from(5)]
        {
            assert_eq!(since(&v, now), "<unknown>", "{v}");
        }
        assert_eq!(since(&Value::from("2024-12-31T23:55:00Z"), now), "5m");
        assert_eq!(since(&Value::from("2024-12-31T23:55:00.123456Z"), now), "4m59s");
        assert_eq!(since(&Value::from("2025-01-01T00:00:30+00:00"), now), "<invalid>");
    }

    #[test]
    fn created_at_is_utc_rfc3339() {
        assert_eq!(created_at(&Value::from("2025-04-23T12:15:30+02:00")), "2025-04-23T10:15:30Z");
        assert_eq!(created_at(&Value::from("2025-04-23T10:15:30.5Z")), "2025-04-23T10:15:30Z");
        assert_eq!(created_at(&Value::Null), "0001-01-01T00:00:00Z");
    }
}

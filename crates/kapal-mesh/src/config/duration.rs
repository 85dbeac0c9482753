//! Gateway API durations (GEP-2257): 1–4 groups of `<1–5 digits><h|m|s|ms>`, e.g. `1h30m`, `500ms`.

use std::fmt;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written in GEP-2257 form; `0s` means "disabled" wherever the field allows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration(pub StdDuration);

impl Duration {
    /// Parses `1h30m`, `500ms`, `10s`; rejects fractions, negatives, `us`/`ns` and empty strings.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid duration {s:?}: expected 1-4 groups like 500ms, 10s, 1h30m");
        let mut total = StdDuration::ZERO;
        let mut rest = s;
        let mut groups = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 5 {
                return Err(bad());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let (unit, len) = if rest.starts_with("ms") {
                (StdDuration::from_millis(n), 2)
            } else if rest.starts_with('h') {
                (StdDuration::from_secs(n * 3600), 1)
            } else if rest.starts_with('m') {
                (StdDuration::from_secs(n * 60), 1)
            } else if rest.starts_with('s') {
                (StdDuration::from_secs(n), 1)
            } else {
                return Err(bad());
            };
            rest = &rest[len..];
            total += unit;
            groups += 1;
        }
        if groups == 0 || groups > 4 {
            return Err(bad());
        }
        Ok(Duration(total))
    }

    /// `None` for `0s` (disabled), the duration otherwise.
    pub fn enabled(self) -> Option<StdDuration> {
        (!self.0.is_zero()).then_some(self.0)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) { write!(f, "{ms}ms") } else { write!(f, "{}s", ms / 1000) }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gep_2257_forms() {
        assert_eq!(Duration::parse("500ms").unwrap().0, StdDuration::from_millis(500));
        assert_eq!(Duration::parse("1h30m").unwrap().0, StdDuration::from_secs(5400));
        assert_eq!(Duration::parse("1m5s10ms").unwrap().0, StdDuration::from_millis(65_010));
        assert_eq!(Duration::parse("0s").unwrap().enabled(), None);
    }

    #[test]
    fn rejects_invalid_forms() {
        for bad in ["", "5", "1.5s", "-1s", "10us", "123456s", "1h1h1h1h1h", "s", "5 s"] {
            assert!(Duration::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn displays_round_trip() {
        for s in ["500ms", "10s", "5400s"] {
            let d = Duration::parse(s).unwrap();
            assert_eq!(Duration::parse(&d.to_string()).unwrap(), d);
        }
    }
}

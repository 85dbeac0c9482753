//! CronJob schedules, checked as `cron.ParseStandard` (robfig/cron v3) checks them, with its
//! error strings: five fields, named months and weekdays, ranges, steps, and descriptors
//! such as `@hourly` and `@every 5m`.

/// The bounds of one field and its names (lowercase), as robfig/cron defines them.
struct Bounds {
    min: u64,
    max: u64,
    names: &'static [(&'static str, u64)],
}

const MINUTES: Bounds = Bounds { min: 0, max: 59, names: &[] };
const HOURS: Bounds = Bounds { min: 0, max: 23, names: &[] };
const DOM: Bounds = Bounds { min: 1, max: 31, names: &[] };
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &[("sun", 0), ("mon", 1), ("tue", 2), ("wed", 3), ("thu", 4), ("fri", 5), ("sat", 6)],
};

/// `strconv.Atoi`'s error text.
fn atoi(s: &str) -> Result<i64, String> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!("strconv.Atoi: parsing {}: invalid syntax", super::report::go_quote(s)));
    }
    s.parse::<i64>().map_err(|_| format!("strconv.Atoi: parsing {}: value out of range", super::report::go_quote(s)))
}

fn must_parse_int(expr: &str) -> Result<u64, String> {
    let n = atoi(expr).map_err(|e| format!("failed to parse int from {expr}: {e}"))?;
    if n < 0 {
        return Err(format!("negative number ({n}) not allowed: {expr}"));
    }
    Ok(n as u64)
}

fn parse_int_or_name(expr: &str, b: &Bounds) -> Result<u64, String> {
    let lower = expr.to_lowercase();
    if let Some(&(_, v)) = b.names.iter().find(|(n, _)| *n == lower) {
        return Ok(v);
    }
    must_parse_int(expr)
}

fn get_range(expr: &str, b: &Bounds) -> Result<(), String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_and_high.len() == 1;
    let (start, mut end) = if low_and_high[0] == "*" || low_and_high[0] == "?" {
        (b.min, b.max)
    } else {
        let start = parse_int_or_name(low_and_high[0], b)?;
        let end = match low_and_high.len() {
            1 => start,
            2 => parse_int_or_name(low_and_high[1], b)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
        (start, end)
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = must_parse_int(range_and_step[1])?;
            if single {
                end = b.max;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < b.min {
        return Err(format!("beginning of range ({start}) below minimum ({}): {expr}", b.min));
    }
    if end > b.max {
        return Err(format!("end of range ({end}) above maximum ({}): {expr}", b.max));
    }
    if start > end {
        return Err(format!("beginning of range ({start}) beyond end of range ({end}): {expr}"));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    Ok(())
}

fn get_field(field: &str, b: &Bounds) -> Result<(), String> {
    field.split(',').filter(|r| !r.is_empty()).try_for_each(|r| get_range(r, b))
}

/// Go's `time.ParseDuration` (`300ms`, `1.5h`, `2h45m`): the duration, or Go's error text.
/// Negative durations come back as their magnitude with `negative` set.
pub fn go_duration(s: &str) -> Result<GoDuration, String> {
    let quoted = super::report::go_quote(s);
    let invalid = || format!("time: invalid duration {quoted}");
    let negative = s.starts_with('-');
    let mut rest = s.strip_prefix(['+', '-']).unwrap_or(s);
    if rest == "0" {
        return Ok(GoDuration { nanos: 0, negative });
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut nanos = 0f64;
    while !rest.is_empty() {
        let num_len = rest.bytes().take_while(|c| c.is_ascii_digit() || *c == b'.').count();
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(invalid());
        }
        rest = &rest[num_len..];
        let unit_len = rest.bytes().take_while(|c| !c.is_ascii_digit() && *c != b'.').count();
        let unit = &rest[..unit_len];
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {quoted}"));
        }
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(format!("time: unknown unit {} in duration {quoted}", super::report::go_quote(unit))),
        };
        nanos += num.parse::<f64>().map_err(|_| invalid())? * scale;
        rest = &rest[unit_len..];
    }
    if nanos > i64::MAX as f64 {
        return Err(invalid());
    }
    Ok(GoDuration { nanos: nanos as u64, negative })
}

/// A duration as Go's `time.ParseDuration` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration {
    /// The magnitude in nanoseconds.
    pub nanos: u64,
    /// Written with a leading `-`.
    pub negative: bool,
}

fn parse_go_duration(s: &str) -> Result<(), String> {
    go_duration(s).map(drop)
}

/// Checks a time zone name against the zone database when one is available.
fn check_location(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "UTC" || name == "Local" {
        return Ok(());
    }
    let db = jiff::tz::db();
    if db.is_definitively_empty() || db.get(name).is_ok() { Ok(()) } else { Err(format!("unknown time zone {name}")) }
}

/// Parses a standard five-field cron schedule; the error is robfig/cron's text.
pub fn parse_standard(spec: &str) -> Result<(), String> {
    if spec.is_empty() {
        return Err("empty spec string".to_string());
    }
    let mut spec = spec;
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        let eq = spec.find('=').unwrap_or(0);
        let Some(space) = spec.find(' ') else {
            return Err(format!("provided bad location {}: unknown time zone", &spec[eq + 1..]));
        };
        let location = &spec[eq + 1..space];
        check_location(location).map_err(|e| format!("provided bad location {location}: {e}"))?;
        spec = spec[space..].trim();
    }
    if spec.starts_with('@') {
        return match spec {
            "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight" | "@hourly" => Ok(()),
            _ => match spec.strip_prefix("@every ") {
                Some(d) => parse_go_duration(d).map_err(|e| format!("failed to parse duration {spec}: {e}")),
                None => Err(format!("unrecognized descriptor: {spec}")),
            },
        };
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!("expected exactly 5 fields, found {}: [{}]", fields.len(), fields.join(" ")));
    }
    for (field, bounds) in fields.iter().zip([&MINUTES, &HOURS, &DOM, &MONTHS, &DOW]) {
        get_field(field, bounds)?;
    }
    Ok(())
}

/// Whether `name` could be a time zone name (`validateTimeZone`), and if the zone database is
/// available, whether it names one. The error is upstream's detail.
pub fn check_time_zone(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("timeZone must be nil or non-empty string".to_string());
    }
    for part in name.split('/') {
        let ok = part != "."
            && part != ".."
            && !part.starts_with('-')
            && (1..=14).contains(&part.len())
            && part.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b'+'));
        if !ok {
            return Err(format!("unknown time zone {name}"));
        }
    }
    if name.eq_ignore_ascii_case("Local") {
        return Err("timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones".to_string());
    }
    check_location(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_standard_schedules() {
        for s in [
            "* * * * *",
            "*/5 * * * *",
            "0 3 * * 1-5",
            "0 0 1 jan,jul *",
            "0 0 * * SUN",
            "@hourly",
            "@every 1h30m",
            "15,45 9-17/2 * * ?",
        ] {
            assert_eq!(parse_standard(s), Ok(()), "{s}");
        }
    }

    #[test]
    fn errors_read_like_robfig_cron() {
        assert_eq!(parse_standard("61 * * * *").unwrap_err(), "end of range (61) above maximum (59): 61");
        assert_eq!(parse_standard("* * * *").unwrap_err(), "expected exactly 5 fields, found 4: [* * * *]");
        assert_eq!(
            parse_standard("x * * * *").unwrap_err(),
            "failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax"
        );
        assert_eq!(parse_standard("0 0 0 * *").unwrap_err(), "beginning of range (0) below minimum (1): 0");
        assert_eq!(parse_standard("5-1 * * * *").unwrap_err(), "beginning of range (5) beyond end of range (1): 5-1");
        assert_eq!(parse_standard("*/0 * * * *").unwrap_err(), "step of range should be a positive number: */0");
        assert_eq!(parse_standard("@often").unwrap_err(), "unrecognized descriptor: @often");
        assert_eq!(
            parse_standard("@every 5d").unwrap_err(),
            "failed to parse duration @every 5d: time: unknown unit \"d\" in duration \"5d\""
        );
        assert_eq!(parse_standard("").unwrap_err(), "empty spec string");
        assert_eq!(parse_standard("0 0 * * 7").unwrap_err(), "end of range (7) above maximum (6): 7");
    }

    #[test]
    fn time_zones() {
        assert!(check_time_zone("Europe/Paris").is_ok());
        assert_eq!(check_time_zone("").unwrap_err(), "timeZone must be nil or non-empty string");
        assert_eq!(check_time_zone("../etc").unwrap_err(), "unknown time zone ../etc");
        assert!(check_time_zone("local").unwrap_err().starts_with("timeZone must be an explicit time zone"));
    }
}

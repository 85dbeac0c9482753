//! Standard five-field cron schedules (`minute hour day-of-month month day-of-week`), the
//! `@hourly`-style descriptors, `@every <duration>`, and the times they fire in a time zone — the
//! dialect of the parser upstream uses (robfig/cron `ParseStandard`).

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, ToSpan};

/// A schedule that cannot be parsed, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schedule {schedule:?}: {reason}")]
pub struct ParseError {
    /// The schedule as written.
    pub schedule: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A parsed schedule: the allowed values of each field as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Day-of-month or day-of-week was `*`/`?`: days then match when both fields match,
    /// otherwise when either does (the cron convention).
    any_day_field_star: bool,
    /// `@every <duration>`: fires this many whole seconds (at least one) after the second it is
    /// asked about, whatever the fields (robfig/cron's `ConstantDelaySchedule`).
    every: Option<i64>,
}

struct Field {
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Field = Field { min: 0, max: 59, names: &[] };
const HOUR: Field = Field { min: 0, max: 23, names: &[] };
const DAY: Field = Field { min: 1, max: 31, names: &[] };
const MONTH: Field = Field {
    min: 1,
    max: 12,
    names: &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
};
const WEEKDAY: Field = Field { min: 0, max: 6, names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"] };

impl Schedule {
    /// Parses a schedule.
    pub fn parse(text: &str) -> Result<Schedule, ParseError> {
        let fail = |reason: String| ParseError { schedule: text.to_string(), reason };
        if let Some(duration) = text.trim().strip_prefix("@every ") {
            let d = kapal_api::validation::go_duration(duration.trim())
                .map_err(|e| fail(format!("failed to parse duration {}: {e}", text.trim())))?;
            let seconds =
                if d.negative { 1 } else { i64::try_from(d.nanos / 1_000_000_000).unwrap_or(i64::MAX).max(1) };
            let none = Schedule {
                minutes: 0,
                hours: 0,
                days: 0,
                months: 0,
                weekdays: 0,
                any_day_field_star: false,
                every: None,
            };
            return Ok(Schedule { every: Some(seconds), ..none });
        }
        let expanded = match text.trim().to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
            "@monthly" => "0 0 1 * *".to_string(),
            "@weekly" => "0 0 * * 0".to_string(),
            "@daily" | "@midnight" => "0 0 * * *".to_string(),
            "@hourly" => "0 * * * *".to_string(),
            other if other.starts_with('@') => return Err(fail(format!("unrecognized descriptor {other}"))),
            _ => text.trim().to_string(),
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(fail(format!("expected exactly 5 fields, found {}", fields.len())));
        }
        let (minutes, _) = parse_field(fields[0], &MINUTE).map_err(fail)?;
        let (hours, _) = parse_field(fields[1], &HOUR).map_err(fail)?;
        let (days, day_star) = parse_field(fields[2], &DAY).map_err(fail)?;
        let (months, _) = parse_field(fields[3], &MONTH).map_err(fail)?;
        let (mut weekdays, weekday_star) = parse_field(&fields[4].replace('7', "0"), &WEEKDAY).map_err(fail)?;
        weekdays &= 0x7f;
        Ok(Schedule {
            minutes,
            hours,
            days,
            months,
            weekdays,
            any_day_field_star: day_star || weekday_star,
            every: None,
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        let day = bit(self.days, date.day() as u32);
        let weekday = bit(self.weekdays, date.weekday().to_sunday_zero_offset() as u32);
        if self.any_day_field_star { day && weekday } else { day || weekday }
    }

    /// The first time strictly after `after` at which the schedule fires in `tz`, searching at
    /// most five years ahead. Local times skipped by a DST change never fire; repeated ones fire
    /// once, at their first occurrence.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        if let Some(seconds) = self.every {
            return Timestamp::from_second(after.as_second().checked_add(seconds)?).ok();
        }
        let local = tz.to_datetime(after);
        let mut t = local.with().second(0).subsec_nanosecond(0).build().ok()?.checked_add(1.minute()).ok()?;
        let limit = local.year() + 5;
        while t.year() <= limit {
            if !bit(self.months, t.month() as u32) {
                t = first_of_next_month(t)?;
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t.date().tomorrow().ok()?.to_datetime(Time::midnight());
                continue;
            }
            if !bit(self.hours, t.hour() as u32) {
                t = t.with().minute(0).build().ok()?.checked_add(1.hour()).ok()?;
                continue;
            }
            if !bit(self.minutes, t.minute() as u32) {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            match tz.to_ambiguous_timestamp(t).offset() {
                AmbiguousOffset::Unambiguous { offset } | AmbiguousOffset::Fold { before: offset, .. } => {
                    if let Ok(ts) = offset.to_timestamp(t)
                        && ts > after
                    {
                        return Some(ts);
                    }
                }
                AmbiguousOffset::Gap { .. } => {}
            }
            t = t.checked_add(1.minute()).ok()?;
        }
        None
    }
}

fn first_of_next_month(t: DateTime) -> Option<DateTime> {
    let first = t.date().first_of_month().checked_add(1.month()).ok()?;
    Some(first.to_datetime(Time::midnight()))
}

fn bit(set: u64, n: u32) -> bool {
    n < 64 && set & (1 << n) != 0
}

/// Parses one field into a bit set; also says whether it was a bare `*` or `?`.
fn parse_field(text: &str, field: &Field) -> Result<(u64, bool), String> {
    let mut set = 0u64;
    let mut star = false;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s.parse::<u32>().map_err(|_| format!("bad step in {part:?}"))?)),
            None => (part, None),
        };
        if step == Some(0) {
            return Err(format!("step of zero in {part:?}"));
        }
        let (first, last) = if range == "*" || range == "?" {
            star = step.unwrap_or(1) == 1;
            (field.min, field.max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, field)?, value(b, field)?)
        } else {
            let v = value(range, field)?;
            // `a/n` means from a to the end, every n.
            (v, if step.is_some() { field.max } else { v })
        };
        if first > last {
            return Err(format!("range {range:?} goes backwards"));
        }
        let step = step.unwrap_or(1);
        set |= (first..=last).step_by(step as usize).fold(0u64, |acc, v| acc | (1 << v));
    }
    Ok((set, star))
}

fn value(text: &str, field: &Field) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    let named = field.names.iter().position(|n| *n == lower).and_then(|i| u32::try_from(i).ok()).map(|i| i + field.min);
    let v = match named {
        Some(v) => v,
        None => text.parse::<u32>().map_err(|_| format!("{text:?} is not a number"))?,
    };
    if v < field.min || v > field.max {
        return Err(format!("{v} is outside {}-{}", field.min, field.max));
    }
    Ok(v)
}

/// The schedule times between a start point and `now`: the most recent one, how many there
/// were, and the next one after `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missed {
    /// The most recent schedule time at or before `now`, if any was missed.
    pub most_recent: Option<Timestamp>,
    /// How many schedule times fell in (start, now] (an estimate beyond a thousand).
    pub count: u64,
    /// The first schedule time after `now`.
    pub next: Option<Timestamp>,
}

/// The schedule times after `since` up to `now` (upstream `mostRecentScheduleTime`): only the
/// most recent is ever started, the count feeds `TooManyMissedTimes`.
pub fn missed(schedule: &Schedule, tz: &TimeZone, since: Timestamp, now: Timestamp) -> Missed {
    let Some(first) = schedule.next_after(since, tz) else { return Missed { most_recent: None, count: 0, next: None } };
    if first > now {
        return Missed { most_recent: None, count: 0, next: Some(first) };
    }
    let mut most_recent = first;
    let mut count = 1u64;
    let mut t = first;
    loop {
        let Some(next) = schedule.next_after(t, tz) else {
            return Missed { most_recent: Some(most_recent), count, next: None };
        };
        if next > now {
            return Missed { most_recent: Some(most_recent), count, next: Some(next) };
        }
        most_recent = next;
        count += 1;
        t = next;
        if count == 1000 {
            // Too many to walk: estimate the count from the spacing and search near `now`.
            let spacing = (next.as_second() - first.as_second()).max(60) as u64 / 999;
            let gap = (now.as_second() - next.as_second()).max(0) as u64;
            count += gap / spacing.max(1);
            let back = jiff::SignedDuration::from_secs(3 * spacing.max(60) as i64);
            t = now.checked_sub(back).unwrap_or(now).max(next);
            if let Some(near) = last_at_or_before(schedule, tz, t, now) {
                most_recent = near;
                t = near;
            }
        }
    }
}

fn last_at_or_before(schedule: &Schedule, tz: &TimeZone, from: Timestamp, now: Timestamp) -> Option<Timestamp> {
    let mut last = None;
    let mut t = from;
    while let Some(next) = schedule.next_after(t, tz) {
        if next > now {
            break;
        }
        last = Some(next);
        t = next;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(schedule: &str, after: &str) -> String {
        Schedule::parse(schedule).unwrap().next_after(at(after), &TimeZone::UTC).unwrap().to_string()
    }

    #[test]
    fn fields_ranges_steps_lists_and_names() {
        assert_eq!(next("* * * * *", "2026-03-01T10:00:30Z"), "2026-03-01T10:01:00Z");
        assert_eq!(next("*/15 * * * *", "2026-03-01T10:01:00Z"), "2026-03-01T10:15:00Z");
        assert_eq!(next("5,35 9-17 * * *", "2026-03-01T17:40:00Z"), "2026-03-02T09:05:00Z");
        assert_eq!(next("0 12 * JAN-mar MON", "2026-03-01T00:00:00Z"), "2026-03-02T12:00:00Z");
        assert_eq!(next("30 4/6 * * *", "2026-03-01T05:00:00Z"), "2026-03-01T10:30:00Z");
        assert_eq!(next("0 0 * * 7", "2026-03-02T00:00:00Z"), "2026-03-08T00:00:00Z");
    }

    #[test]
    fn descriptors() {
        assert_eq!(next("@hourly", "2026-03-01T10:00:00Z"), "2026-03-01T11:00:00Z");
        assert_eq!(next("@daily", "2026-03-01T10:00:00Z"), "2026-03-02T00:00:00Z");
        assert_eq!(next("@weekly", "2026-03-01T10:00:00Z"), "2026-03-08T00:00:00Z");
        assert_eq!(next("@monthly", "2026-03-01T10:00:00Z"), "2026-04-01T00:00:00Z");
        assert_eq!(next("@yearly", "2026-03-01T10:00:00Z"), "2027-01-01T00:00:00Z");
    }

    #[test]
    fn every_counts_whole_seconds_from_the_second_it_is_asked_about() {
        assert_eq!(next("@every 5m", "2026-03-01T10:00:30.700Z"), "2026-03-01T10:05:30Z");
        assert_eq!(next("@every 1h30m", "2026-03-01T10:00:00Z"), "2026-03-01T11:30:00Z");
        // Fractions of a second are dropped; less than a second is a second.
        assert_eq!(next("@every 2.5s", "2026-03-01T10:00:00Z"), "2026-03-01T10:00:02Z");
        assert_eq!(next("@every 100ms", "2026-03-01T10:00:00Z"), "2026-03-01T10:00:01Z");
        let err = Schedule::parse("@every 1x").unwrap_err();
        assert!(err.reason.contains(r#"unknown unit "x""#), "{err}");
    }

    #[test]
    fn day_of_month_and_day_of_week_combine_with_or_unless_one_is_a_star() {
        // The 13th or any Friday.
        assert_eq!(next("0 0 13 * 5", "2026-03-01T00:00:00Z"), "2026-03-06T00:00:00Z");
        assert_eq!(next("0 0 13 * *", "2026-03-01T00:00:00Z"), "2026-03-13T00:00:00Z");
        // A stepped star is not a star.
        assert_eq!(next("0 0 */10 * 1", "2026-03-01T00:00:00Z"), "2026-03-02T00:00:00Z");
    }

    #[test]
    fn bad_schedules_are_rejected_with_a_reason() {
        for bad in [
            "* * * *",
            "60 * * * *",
            "* * * * mon-sun-x",
            "*/0 * * * *",
            "5-1 * * * *",
            "@every",
            "@every 5",
            "@every 1x",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad} parsed");
        }
        // A valid-looking schedule that never fires.
        assert_eq!(Schedule::parse("0 0 31 2 *").unwrap().next_after(at("2026-01-01T00:00:00Z"), &TimeZone::UTC), None);
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        let tz = TimeZone::get("America/New_York").unwrap();
        let s = Schedule::parse("0 9 * * *").unwrap();
        // 09:00 in New York is 14:00 UTC in winter and 13:00 UTC in summer.
        assert_eq!(s.next_after(at("2026-03-01T00:00:00Z"), &tz).unwrap().to_string(), "2026-03-01T14:00:00Z");
        assert_eq!(s.next_after(at("2026-07-01T00:00:00Z"), &tz).unwrap().to_string(), "2026-07-01T13:00:00Z");
        // 02:30 does not exist on 2026-03-08 in New York: that day is skipped.
        let gap = Schedule::parse("30 2 * * *").unwrap();
        assert_eq!(gap.next_after(at("2026-03-07T08:00:00Z"), &tz).unwrap().to_string(), "2026-03-09T06:30:00Z");
    }

    #[test]
    fn only_the_most_recent_missed_time_is_reported() {
        let s = Schedule::parse("*/10 * * * *").unwrap();
        let m = missed(&s, &TimeZone::UTC, at("2026-03-01T10:00:00Z"), at("2026-03-01T10:35:00Z"));
        assert_eq!(m.most_recent, Some(at("2026-03-01T10:30:00Z")));
        assert_eq!(m.count, 3);
        assert_eq!(m.next, Some(at("2026-03-01T10:40:00Z")));
        let none = missed(&s, &TimeZone::UTC, at("2026-03-01T10:30:00Z"), at("2026-03-01T10:35:00Z"));
        assert_eq!((none.most_recent, none.count), (None, 0));
    }

    #[test]
    fn very_many_missed_times_are_counted_and_the_latest_found() {
        let s = Schedule::parse("* * * * *").unwrap();
        let m = missed(&s, &TimeZone::UTC, at("2026-01-01T00:00:00Z"), at("2026-01-10T12:34:56Z"));
        assert_eq!(m.most_recent, Some(at("2026-01-10T12:34:00Z")));
        assert!(m.count > 13_000, "{}", m.count);
        assert_eq!(m.next, Some(at("2026-01-10T12:35:00Z")));
    }
}

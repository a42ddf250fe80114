//! Backup schedules exactly as a Kubernetes CronJob accepts them.
//!
//! Kubernetes parses `spec.schedule` with robfig/cron's `ParseStandard`, so this module follows it:
//!
//! - five whitespace-separated fields: minute (0-59), hour (0-23), day of month (1-31), month
//!   (1-12 or JAN-DEC), day of week (0-6 or SUN-SAT, 0 = Sunday); each field is a comma list of
//!   `*`, `?`, `N`, `N-M`, optionally followed by `/STEP` (`N/STEP` means `N-max/STEP`);
//! - the descriptors `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`,
//!   `@hourly`;
//! - `@every <Go duration>` (e.g. `@every 6h30m`). ParseStandard accepts it, so we do too, but only
//!   for intervals of at least one minute: CronJob names its Jobs by the scheduled minute, so a
//!   shorter interval cannot run more often anyway;
//! - no `TZ=`/`CRON_TZ=` prefix (Kubernetes rejects it in favour of `spec.timeZone`, which the
//!   Database API does not expose), and no seconds field.
//!
//! Day matching follows cron (and robfig): when both day-of-month and day-of-week are restricted,
//! a day matches if *either* matches. The `cron` crate requires both and numbers Sunday as 1, so
//! next run times are computed here instead.

use jiff::civil::{Date, DateTime, Time};
use jiff::{Timestamp, ToSpan};

/// Why a schedule is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(pub String);

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// A calendar schedule (five fields or a descriptor).
    Calendar(Box<Calendar>),
    /// `@every <duration>`, in whole seconds.
    Every(u64),
}

/// The five cron fields as bitsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    dom_star: bool,
    dow_star: bool,
}

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DOM: FieldSpec = FieldSpec {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DOW: FieldSpec = FieldSpec {
    name: "day of week",
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

const FIVE_FIELDS_HELP: &str =
    "use five fields \"minute hour day-of-month month day-of-week\" (e.g. \"0 2 * * *\") or one of @yearly, @monthly, @weekly, @daily, @hourly";

fn err(msg: impl Into<String>) -> ScheduleError {
    ScheduleError(msg.into())
}

/// Parses a schedule the way a Kubernetes CronJob does.
pub fn parse(schedule: &str) -> Result<Schedule, ScheduleError> {
    if schedule.contains("TZ") {
        return Err(err(
            "time zones (TZ= or CRON_TZ=) are not allowed in the schedule; schedules run in the cluster's time zone (usually UTC)",
        ));
    }
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    if fields.is_empty() {
        return Err(err(format!("the schedule is empty; {FIVE_FIELDS_HELP}")));
    }
    if let Some(descriptor) = fields[0].strip_prefix('@') {
        return parse_descriptor(descriptor, &fields[1..]);
    }
    match fields.len() {
        5 => {}
        6 => {
            return Err(err(format!(
                "six fields (a seconds field) are not supported: Kubernetes CronJobs take five fields; drop the leading seconds field, e.g. \"{}\"",
                fields[1..].join(" ")
            )))
        }
        n => {
            return Err(err(format!(
                "expected five fields but found {n}; {FIVE_FIELDS_HELP}"
            )))
        }
    }
    let (minutes, _) = parse_field(fields[0], &MINUTE)?;
    let (hours, _) = parse_field(fields[1], &HOUR)?;
    let (days_of_month, dom_star) = parse_field(fields[2], &DOM)?;
    let (months, _) = parse_field(fields[3], &MONTH)?;
    let (days_of_week, dow_star) = parse_field(fields[4], &DOW)?;
    Ok(Schedule::Calendar(Box::new(Calendar {
        minutes,
        hours,
        days_of_month,
        months,
        days_of_week,
        dom_star,
        dow_star,
    })))
}

fn parse_descriptor(descriptor: &str, rest: &[&str]) -> Result<Schedule, ScheduleError> {
    let cal = |expr: &str| match parse(expr) {
        Ok(s) => Ok(s),
        Err(e) => Err(e),
    };
    if descriptor == "every" {
        let [duration] = rest else {
            return Err(err("@every takes one duration, e.g. \"@every 6h\""));
        };
        let seconds = parse_go_duration(duration)?;
        if seconds < 60 {
            return Err(err(format!(
                "@every {duration} is shorter than one minute; CronJobs start at most one Job per minute, use at least @every 1m"
            )));
        }
        return Ok(Schedule::Every(seconds));
    }
    if !rest.is_empty() {
        return Err(err(format!("@{descriptor} takes no further fields")));
    }
    match descriptor {
        "yearly" | "annually" => cal("0 0 1 1 *"),
        "monthly" => cal("0 0 1 * *"),
        "weekly" => cal("0 0 * * 0"),
        "daily" | "midnight" => cal("0 0 * * *"),
        "hourly" => cal("0 * * * *"),
        other => Err(err(format!(
            "unknown descriptor @{other}; Kubernetes accepts @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly and @every <duration>"
        ))),
    }
}

/// Parses a Go `time.ParseDuration` string into whole seconds (rounded down).
fn parse_go_duration(s: &str) -> Result<u64, ScheduleError> {
    let bad = || {
        err(format!(
            "{s:?} is not a duration; use a number with a unit (h, m, s), e.g. 6h or 1h30m"
        ))
    };
    let body = s.strip_prefix('+').unwrap_or(s);
    if body.starts_with('-') {
        return Err(err(format!("@every needs a positive duration, not {s:?}")));
    }
    if body.is_empty() {
        return Err(bad());
    }
    let mut nanos: f64 = 0.0;
    let mut rest = body;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number = &rest[..num_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(bad());
        }
        let value: f64 = number.parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        nanos += value * scale;
        rest = &rest[unit_len..];
    }
    if !nanos.is_finite() || nanos > 9.2e18 {
        return Err(err(format!("{s:?} is too long a duration")));
    }
    Ok((nanos / 1e9) as u64)
}

fn parse_field(field: &str, spec: &FieldSpec) -> Result<(u64, bool), ScheduleError> {
    let mut bits = 0u64;
    let mut star = false;
    for part in field.split(',') {
        let (b, s) = parse_range(part, spec).map_err(|reason| {
            err(format!(
                "{} field {field:?}: {reason}; {FIVE_FIELDS_HELP}",
                spec.name
            ))
        })?;
        bits |= b;
        star |= s;
    }
    Ok((bits, star))
}

fn parse_value(s: &str, spec: &FieldSpec) -> Result<u32, String> {
    if let Some(i) = spec.names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(spec.min + i as u32);
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(if spec.names.is_empty() {
            format!("{s:?} is not a number")
        } else {
            format!(
                "{s:?} is not a number or a name ({})",
                spec.names.join(", ")
            )
        });
    }
    s.parse::<u32>().map_err(|_| format!("{s:?} is too large"))
}

fn parse_range(part: &str, spec: &FieldSpec) -> Result<(u64, bool), String> {
    let (range, step) = match part.split_once('/') {
        Some((r, s)) => {
            if s.contains('/') {
                return Err(format!("{part:?} has more than one step"));
            }
            // robfig parses the step with strconv.Atoi (any non-negative int64) and walks the
            // range in 64-bit unsigned steps, so a step beyond the range just selects the start
            // ("59/4294967295" is minute 59). Mirror that: u64, at most i64::MAX, no wrapping.
            let step: u64 = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                s.parse()
                    .ok()
                    .filter(|n| *n <= i64::MAX as u64)
                    .ok_or_else(|| format!("step {s:?} is too large"))?
            } else {
                return Err(format!("step {s:?} is not a number"));
            };
            if step == 0 {
                return Err("a step must be a positive number".into());
            }
            (r, Some(step))
        }
        None => (part, None),
    };
    let (start, end, mut star) = if range == "*" || range == "?" {
        (spec.min, spec.max, true)
    } else if let Some((a, b)) = range.split_once('-') {
        (parse_value(a, spec)?, parse_value(b, spec)?, false)
    } else {
        let v = parse_value(range, spec)?;
        // robfig: "N/step" means "N-max/step".
        (v, if step.is_some() { spec.max } else { v }, false)
    };
    if start < spec.min || end > spec.max {
        let culprit = if start < spec.min { start } else { end };
        return Err(format!("{culprit} is outside {}-{}", spec.min, spec.max));
    }
    if start > end {
        return Err(format!("range {range:?} starts after it ends"));
    }
    let step = step.unwrap_or(1);
    if step > 1 {
        star = false;
    }
    let mut bits = 0u64;
    let mut v = u64::from(start);
    while v <= u64::from(end) {
        bits |= 1 << v;
        match v.checked_add(step) {
            Some(next) => v = next,
            None => break,
        }
    }
    Ok((bits, star))
}

impl Calendar {
    fn day_matches(&self, d: Date) -> bool {
        let dom = self.days_of_month & (1 << d.day()) != 0;
        let dow = self.days_of_week & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// Up to `count` run times strictly after `after` (UTC), searching five years ahead like
    /// robfig does; schedules that never fire (`0 0 30 2 *`) give none.
    fn next_runs(&self, after: Timestamp, count: usize) -> Vec<Timestamp> {
        let mut out = Vec::new();
        let start = after.to_zoned(jiff::tz::TimeZone::UTC).datetime();
        let mut day = start.date();
        for _ in 0..(5 * 366) {
            if self.months & (1 << day.month()) != 0 && self.day_matches(day) {
                for hour in 0..24i8 {
                    if self.hours & (1 << hour) == 0 {
                        continue;
                    }
                    for minute in 0..60i8 {
                        if self.minutes & (1 << minute) == 0 {
                            continue;
                        }
                        let at = DateTime::from_parts(day, Time::constant(hour, minute, 0, 0));
                        if at <= start {
                            continue;
                        }
                        if let Ok(ts) = at.to_zoned(jiff::tz::TimeZone::UTC) {
                            out.push(ts.timestamp());
                        }
                        if out.len() == count {
                            return out;
                        }
                    }
                }
            }
            match day.tomorrow() {
                Ok(d) => day = d,
                Err(_) => break,
            }
        }
        out
    }
}

impl Schedule {
    /// The next `count` run times after `now`, in UTC. For `@every` they are counted from `now`
    /// (a CronJob counts from its creation).
    pub fn next_runs(&self, now: Timestamp, count: usize) -> Vec<Timestamp> {
        match self {
            Schedule::Calendar(c) => c.next_runs(now, count),
            Schedule::Every(secs) => (1..=count as i64)
                .filter_map(|i| {
                    now.checked_add((*secs as i64).saturating_mul(i).seconds())
                        .ok()
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn schedules_kubernetes_accepts_are_accepted() {
        for s in [
            "0 2 * * *",
            "*/15 * * * *",
            "0 0 * * 0",
            "0 0 * * 6",
            "0 3 * * mon-fri",
            "0 3 * * MON,WED,FRI",
            "30 4 1,15 * *",
            "0 0 1 jan *",
            "0 0 1 JAN-DEC/3 *",
            "5/10 * * * *",
            "0 22 * * 1-5",
            "0  2  *  *  *",
            "? ? ? ? ?",
            "0 0 31 * *",
            "@yearly",
            "@annually",
            "@monthly",
            "@weekly",
            "@daily",
            "@midnight",
            "@hourly",
            "@every 1h",
            "@every 1h30m",
            "@every 1.5h",
            "@every 90s",
        ] {
            assert!(parse(s).is_ok(), "{s:?}: {:?}", parse(s));
        }
    }

    #[test]
    fn schedules_kubernetes_rejects_are_denied_with_a_reason() {
        let cases = [
            ("0 0 2 * * *", "six fields"),
            ("* * * *", "expected five fields but found 4"),
            ("* * * * * * *", "found 7"),
            ("", "empty"),
            ("60 * * * *", "60 is outside 0-59"),
            ("* 24 * * *", "24 is outside 0-23"),
            ("* * 0 * *", "0 is outside 1-31"),
            ("* * * 13 *", "13 is outside 1-12"),
            ("* * * * 7", "7 is outside 0-6"),
            ("5-1 * * * *", "starts after it ends"),
            ("*/0 * * * *", "positive"),
            ("*/x * * * *", "not a number"),
            ("a * * * *", "not a number"),
            ("* * * * funday", "not a number or a name"),
            ("@reboot", "unknown descriptor"),
            ("@Daily", "unknown descriptor"),
            ("@daily 5", "takes no further fields"),
            ("@every", "one duration"),
            ("@every 30s", "shorter than one minute"),
            ("@every 5", "not a duration"),
            ("@every -1h", "positive"),
            ("CRON_TZ=UTC 0 2 * * *", "time zones"),
            ("TZ=Europe/Berlin 0 2 * * *", "time zones"),
            ("1,,2 * * * *", "not a number"),
            ("1/2/3 * * * *", "more than one step"),
        ];
        for (s, fragment) in cases {
            let e = parse(s).expect_err(s).0;
            assert!(e.contains(fragment), "{s:?}: {e}");
        }
    }

    #[test]
    fn next_runs_follow_the_schedule_in_utc() {
        let now = ts("2026-11-29T10:00:00Z"); // a Sunday
        let cases: &[(&str, [&str; 3])] = &[
            (
                "0 2 * * *",
                [
                    "2026-11-30T02:00:00Z",
                    "2026-12-01T02:00:00Z",
                    "2026-12-02T02:00:00Z",
                ],
            ),
            (
                "*/20 * * * *",
                [
                    "2026-11-29T10:20:00Z",
                    "2026-11-29T10:40:00Z",
                    "2026-11-29T11:00:00Z",
                ],
            ),
            (
                "@weekly",
                [
                    "2026-12-06T00:00:00Z",
                    "2026-12-13T00:00:00Z",
                    "2026-12-20T00:00:00Z",
                ],
            ),
            (
                "@yearly",
                [
                    "2027-01-01T00:00:00Z",
                    "2028-01-01T00:00:00Z",
                    "2029-01-01T00:00:00Z",
                ],
            ),
            // both day fields restricted: either matches (1st of month OR a Monday)
            (
                "0 0 1 * mon",
                [
                    "2026-11-30T00:00:00Z",
                    "2026-12-01T00:00:00Z",
                    "2026-12-07T00:00:00Z",
                ],
            ),
            (
                "@every 6h",
                [
                    "2026-11-29T16:00:00Z",
                    "2026-11-29T22:00:00Z",
                    "2026-11-30T04:00:00Z",
                ],
            ),
        ];
        for (s, want) in cases {
            let got: Vec<String> = parse(s)
                .unwrap()
                .next_runs(now, 3)
                .iter()
                .map(|t| t.to_string())
                .collect();
            assert_eq!(got, want.to_vec(), "{s}");
        }
    }

    #[test]
    fn steps_beyond_the_range_select_only_the_start_as_robfig_does_and_never_wrap() {
        let now = ts("2026-11-29T10:00:00Z");
        let cases: &[(&str, Result<[&str; 2], &str>)] = &[
            // u32::MAX: 59 + step would wrap a u32 back to 58.
            (
                "59/4294967295 * * * *",
                Ok(["2026-11-29T10:59:00Z", "2026-11-29T11:59:00Z"]),
            ),
            (
                "*/4294967296 23/4294967295 * * *",
                Ok(["2026-11-29T23:00:00Z", "2026-11-30T23:00:00Z"]),
            ),
            // i64::MAX, the largest step Go's strconv.Atoi gives robfig.
            (
                "59/9223372036854775807 * * * *",
                Ok(["2026-11-29T10:59:00Z", "2026-11-29T11:59:00Z"]),
            ),
            ("59/9223372036854775808 * * * *", Err("too large")),
            ("59/18446744073709551616 * * * *", Err("too large")),
        ];
        for (s, want) in cases {
            match (parse(s), want) {
                (Ok(schedule), Ok(want)) => {
                    let got: Vec<String> = schedule
                        .next_runs(now, 2)
                        .iter()
                        .map(|t| t.to_string())
                        .collect();
                    assert_eq!(got, want.to_vec(), "{s}");
                }
                (Err(e), Err(fragment)) => assert!(e.0.contains(fragment), "{s}: {}", e.0),
                (got, want) => panic!("{s}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_schedule_that_never_fires_has_no_next_runs() {
        assert!(parse("0 0 30 2 *")
            .unwrap()
            .next_runs(ts("2026-01-01T00:00:00Z"), 3)
            .is_empty());
    }
}

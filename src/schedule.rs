//! Pure time math for polling: when a source fires next (`every` or `cron`), the jitter added to
//! each fire, and the failure backoff. No tokio, no clock: every function takes `now`.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// When a source is polled.
#[derive(Clone)]
pub enum Schedule {
    /// Fixed rate: one poll per interval, aligned to the first poll.
    Every(Duration),
    /// A cron expression, evaluated in UTC.
    Cron {
        /// The expression as written.
        expr: String,
        /// The parsed pattern.
        cron: Box<Cron>,
    },
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Schedule::Every(a), Schedule::Every(b)) => a == b,
            (Schedule::Cron { expr: a, .. }, Schedule::Cron { expr: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Every(d) => write!(f, "every {}", humantime::format_duration(*d)),
            Schedule::Cron { expr, .. } => write!(f, "cron {expr:?}"),
        }
    }
}

/// Parses a 5-field crontab line or a 6-field line with seconds first. A year field, `@reboot`
/// is rejected; `@hourly`-style nicknames are accepted. Day-of-month and day-of-week are OR-ed, as in
/// Vixie cron; Sunday is 0 (or 7).
pub fn parse_cron(expr: &str) -> Result<Schedule, String> {
    let fields = expr.split_whitespace().count();
    if !(fields == 5 || fields == 6 || expr.trim_start().starts_with('@')) {
        return Err(format!(
            "has {fields} fields, expected 5 (minute hour day month weekday) or 6 (with seconds first)"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map(|cron| Schedule::Cron {
            expr: expr.to_owned(),
            cron: Box::new(cron),
        })
        .map_err(|e| e.to_string())
}

/// Largest start-up phase offset of an `every` source.
pub const MAX_PHASE: Duration = Duration::from_secs(30);

impl Schedule {
    /// The first fire at or after `now` for the source named `name`. `every` sources start at a
    /// stable per-name offset within min(interval, 30 s), as Prometheus spreads its scrapes, so
    /// that many sources with one interval do not all fire in the same instant after a restart.
    pub fn first(&self, name: &str, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Schedule::Every(interval) => later(now, phase(name, *interval)),
            Schedule::Cron { cron, .. } => next_cron(cron, now),
        }
    }

    /// The fire that follows `previous`, skipping fires that are already in the past at `now`
    /// (a poll that overran its interval does not cause a burst of catch-up polls).
    pub fn next_after(&self, previous: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Schedule::Every(interval) => {
                let mut next = later(previous, *interval);
                if next <= now {
                    let behind = (now - previous).num_milliseconds().max(0) as u128;
                    let steps = behind / interval.as_millis().max(1) + 1;
                    let total = interval.as_nanos().saturating_mul(steps);
                    let secs = u64::try_from(total / 1_000_000_000).unwrap_or(u64::MAX);
                    let nanos = (total % 1_000_000_000) as u32;
                    next = later(previous, Duration::new(secs, nanos));
                }
                next
            }
            Schedule::Cron { cron, .. } => next_cron(cron, previous.max(now)),
        }
    }

    /// The nominal interval: `every`, or the gap between the next two cron fires after `now`.
    pub fn interval(&self, now: DateTime<Utc>) -> Duration {
        match self {
            Schedule::Every(interval) => *interval,
            Schedule::Cron { cron, .. } => {
                let a = next_cron(cron, now);
                let b = next_cron(cron, a);
                (b - a).to_std().unwrap_or(Duration::from_secs(60))
            }
        }
    }
}

fn next_cron(cron: &Cron, after: DateTime<Utc>) -> DateTime<Utc> {
    // A valid pattern always has a next occurrence within croner's search horizon; if it does
    // not (e.g. 30 February), fall back to a day later so the loop keeps running.
    cron.find_next_occurrence(&after, false)
        .unwrap_or(after + chrono::Duration::days(1))
}

/// `t + d`, saturating at the end of time instead of panicking: every duration added to a
/// schedule (an interval, a jitter, a backoff, an upstream's `X-Poll-Interval`) goes through
/// here.
pub fn later(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The stable start-up offset of source `name`: a hash of the name, modulo
/// min(`interval`, [`MAX_PHASE`]).
pub fn phase(name: &str, interval: Duration) -> Duration {
    let span = interval.min(MAX_PHASE).as_millis().max(1) as u64;
    let digest = blake3::hash(name.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest.as_bytes()[..8]);
    Duration::from_millis(u64::from_le_bytes(head) % span)
}

/// The random delay added to a fire: `unit` (uniform in [0, 1)) × `fraction` × `interval`.
pub fn jitter(interval: Duration, fraction: f64, unit: f64) -> Duration {
    interval.mul_f64((fraction * unit).clamp(0.0, 1.0))
}

/// How long to wait after `failures` consecutive failed polls: the interval doubled per failure,
/// capped at 8 × the interval.
pub fn failure_backoff(interval: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.min(3);
    interval.saturating_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn huge_durations_saturate_instead_of_panicking() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(later(now, Duration::MAX), DateTime::<Utc>::MAX_UTC);
        let s = Schedule::Every(Duration::from_secs(u64::MAX / 4));
        assert!(s.next_after(now, now) > now);
        let s = Schedule::Every(Duration::from_millis(100));
        let long_ago = Utc.with_ymd_and_hms(1000, 1, 1, 0, 0, 0).unwrap();
        assert!(s.next_after(long_ago, now) > now);
    }

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, h, m, s).unwrap() // a Monday
    }

    #[test]
    fn five_field_monday_fires_on_monday_not_sunday() {
        let cron = parse_cron("0 9 * * 1").unwrap();
        let sunday = Utc.with_ymd_and_hms(2026, 11, 22, 8, 0, 0).unwrap();
        let next = cron.first("s", sunday);
        assert_eq!(next, at(9, 0, 0));
    }

    #[test]
    fn six_field_has_seconds_and_year_is_rejected() {
        let cron = parse_cron("*/10 * * * * *").unwrap();
        assert_eq!(cron.first("s", at(10, 0, 1)), at(10, 0, 10));
        assert!(parse_cron("0 0 9 * * 1 2027").is_err());
        assert!(parse_cron("0 9 * *").is_err());
        assert!(parse_cron("61 * * * *").is_err());
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // The 1st of the month OR a Monday: from Sunday 22 Nov, Monday 23 Nov comes first.
        let cron = parse_cron("0 0 1 * 1").unwrap();
        let sunday = Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap();
        assert_eq!(cron.first("s", sunday), at(0, 0, 0));
    }

    #[test]
    fn every_is_fixed_rate_and_skips_missed_fires() {
        let every = Schedule::Every(Duration::from_secs(60));
        assert_eq!(every.next_after(at(10, 0, 0), at(10, 0, 5)), at(10, 1, 0));
        assert_eq!(every.next_after(at(10, 0, 0), at(10, 3, 30)), at(10, 4, 0));
    }

    #[test]
    fn phase_is_stable_and_bounded() {
        let hour = Duration::from_secs(3600);
        assert_eq!(phase("a", hour), phase("a", hour));
        assert!(phase("a", hour) < MAX_PHASE);
        assert!(phase("b", Duration::from_millis(100)) < Duration::from_millis(100));
        let spread: std::collections::HashSet<_> = (0..100)
            .map(|i| phase(&format!("s{i}"), Duration::from_secs(1)))
            .collect();
        assert!(spread.len() > 50, "phases spread over the interval");
    }

    #[test]
    fn backoff_doubles_up_to_eight_times() {
        let i = Duration::from_secs(10);
        assert_eq!(failure_backoff(i, 1), Duration::from_secs(20));
        assert_eq!(failure_backoff(i, 2), Duration::from_secs(40));
        assert_eq!(failure_backoff(i, 9), Duration::from_secs(80));
        assert_eq!(jitter(i, 0.1, 0.5), Duration::from_millis(500));
    }
}

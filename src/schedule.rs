//! Pure time math for polling: when a source fires next (`every` or `cron`), the jitter added to
//! each fire, and the failure backoff. No tokio, no clock: every function takes `now`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The grid every source's timer fires on. Sources due within one step wake the runtime once,
/// together, instead of one thread wake-up each: at 1,000 sources a second that wake-up is
/// most of a 304's cost. The step is fitted to the scheduled poll rate so that a wake-up
/// gathers about [`Grid::BATCH`] polls: 1 ms (the timer's own resolution, no added delay) at
/// 10,000 polls a second, 8 ms at 1,000, never more than [`Grid::MAX`]. A fire is never early
/// and at most one step late.
#[derive(Debug)]
pub struct Grid {
    step_ms: AtomicU64,
}

impl Default for Grid {
    fn default() -> Self {
        Grid {
            step_ms: AtomicU64::new(1),
        }
    }
}

impl Grid {
    /// The coarsest step.
    pub const MAX: Duration = Duration::from_millis(10);
    /// Polls a wake-up aims to gather.
    pub const BATCH: f64 = 8.0;

    /// Fits the step to `polls_per_second`, the scheduled rate of every running source.
    pub fn fit(&self, polls_per_second: f64) {
        let max = Grid::MAX.as_millis() as f64;
        let ms = match polls_per_second > 0.0 {
            true => (Grid::BATCH * 1000.0 / polls_per_second).clamp(1.0, max),
            false => max,
        };
        self.step_ms.store(ms.floor() as u64, Ordering::Relaxed);
    }

    /// The current step.
    pub fn step(&self) -> Duration {
        Duration::from_millis(self.step_ms.load(Ordering::Relaxed))
    }

    /// `t` on the grid (see [`on_grid`]).
    pub fn on(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        on_grid(t, self.step())
    }
}

/// `t` rounded up to the next multiple of `step` since the epoch (unchanged when already on it,
/// or beyond 2262, where nanoseconds overflow).
pub fn on_grid(t: DateTime<Utc>, step: Duration) -> DateTime<Utc> {
    let step = (step.as_nanos() as i64).max(1);
    let Some(ns) = t.timestamp_nanos_opt() else {
        return t;
    };
    let down = ns.div_euclid(step) * step;
    match ns == down {
        true => t,
        false => down
            .checked_add(step)
            .map_or(t, DateTime::from_timestamp_nanos),
    }
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
    fn fires_round_up_onto_a_shared_grid() {
        let at = |ms: i64, ns: u32| {
            DateTime::from_timestamp_millis(ms).unwrap() + chrono::Duration::nanoseconds(ns.into())
        };
        let step = Duration::from_millis(10);
        let base = 1_767_225_600_000; // 2026-01-01, on the grid
        assert_eq!(on_grid(at(base, 0), step), at(base, 0));
        assert_eq!(on_grid(at(base + 1, 0), step), at(base + 10, 0));
        assert_eq!(on_grid(at(base + 9, 999_999), step), at(base + 10, 0));
        assert_eq!(on_grid(at(base + 10, 1), step), at(base + 20, 0));
        assert_eq!(on_grid(at(base - 3, 0), step), at(base, 0));
        for ms in 0..1_000 {
            let t = at(base + ms, 123_456);
            let g = on_grid(t, step);
            assert!(
                g >= t && g - t <= chrono::Duration::milliseconds(10),
                "{t} -> {g}"
            );
        }
        let end = DateTime::<Utc>::MAX_UTC;
        assert_eq!(on_grid(end, step), end);
    }

    #[test]
    fn the_grid_gathers_about_eight_polls_per_wake_up() {
        let grid = Grid::default();
        assert_eq!(grid.step(), Duration::from_millis(1));
        grid.fit(10_000.0);
        assert_eq!(
            grid.step(),
            Duration::from_millis(1),
            "10,000/s: no added delay"
        );
        grid.fit(1_000.0);
        assert_eq!(grid.step(), Duration::from_millis(8));
        grid.fit(3.0);
        assert_eq!(grid.step(), Grid::MAX);
        grid.fit(0.0);
        assert_eq!(grid.step(), Grid::MAX);
    }

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

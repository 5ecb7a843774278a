//! Small inline SVG charts of the last 24 hours, drawn on the server (no JavaScript, nothing
//! fetched): one bar per hour, each series a single `<path>` so a chart stays a few hundred
//! bytes, and a `<title>` with the figures as the chart's text alternative.

use std::fmt::Write;

use super::html::esc;
use crate::status::hours::{DestHour, HOURS, SourceHour};
use crate::status::outcome;

const BAR: u32 = 5;
const WIDTH: u32 = BAR * HOURS as u32;
const HEIGHT: u32 = 24;

const GREY: &str = "#8c959f";
const BLUE: &str = "#0969da";
const RED: &str = "#b3261e";
const GREEN: &str = "#1a7f37";
const ORANGE: &str = "#bc4c00";

/// Stacked bars: `series` (colour, value per hour), bottom first, scaled to the tallest hour.
fn bars(series: &[(&str, [u64; HOURS])]) -> String {
    let max = (0..HOURS)
        .map(|h| series.iter().map(|(_, v)| v[h]).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut base = [0u64; HOURS];
    let mut out = String::new();
    for (colour, values) in series {
        let mut d = String::new();
        for h in 0..HOURS {
            if values[h] == 0 {
                continue;
            }
            let top = scale(base[h] + values[h], max);
            let bottom = scale(base[h], max);
            let _ = write!(
                d,
                "M{},{}h{}v{}h-{}z",
                h as u32 * BAR,
                top,
                BAR - 1,
                bottom - top,
                BAR - 1
            );
            base[h] += values[h];
        }
        if !d.is_empty() {
            let _ = write!(out, "<path fill=\"{colour}\" d=\"{d}\"/>");
        }
    }
    out
}

/// The y of `value` on a chart whose top is `max` (0 at the top, `HEIGHT` at the bottom).
fn scale(value: u64, max: u64) -> u64 {
    u64::from(HEIGHT) - (value * u64::from(HEIGHT)).div_ceil(max)
}

/// A step line: one level per hour (`None`: nothing that hour), values 0..=1 of the height;
/// consecutive hours join, and a lone hour still shows as a tick.
fn line(colour: &str, points: &[Option<f64>; HOURS]) -> String {
    let mut d = String::new();
    let mut pen = false;
    for (h, p) in points.iter().enumerate() {
        match p {
            Some(v) => {
                let x = h as u32 * BAR;
                let y = (f64::from(HEIGHT) - 1.0) * (1.0 - v.clamp(0.0, 1.0)) + 0.5;
                let _ = match pen {
                    true => write!(d, "V{y:.1}h{BAR}"),
                    false => write!(d, "M{x},{y:.1}h{BAR}"),
                };
                pen = true;
            }
            None => pen = false,
        }
    }
    match d.is_empty() {
        true => String::new(),
        false => {
            format!("<path fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" d=\"{d}\"/>")
        }
    }
}

fn svg(label: &str, body: &str) -> String {
    format!(
        "<svg class=\"chart\" role=\"img\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\"><title>{}</title><rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#f6f8fa\"/>{body}</svg>",
        esc(label)
    )
}

/// A source's polls per hour: failed (red), changed (blue), unchanged or 304 (grey).
pub(super) fn source_polls(name: &str, hours: &[SourceHour; HOURS]) -> String {
    let at = |o: &str| outcome::ALL.iter().position(|x| *x == o).unwrap_or(0);
    let series = |pick: &[&str]| {
        let idx: Vec<usize> = pick.iter().map(|o| at(o)).collect();
        let mut v = [0u64; HOURS];
        for (h, b) in hours.iter().enumerate() {
            v[h] = idx.iter().map(|i| u64::from(b.polls[*i])).sum();
        }
        v
    };
    let failed = series(&[outcome::FAILED, outcome::HELD]);
    let changed = series(&[outcome::CHANGED]);
    let quiet = series(&[outcome::UNCHANGED, outcome::NOT_MODIFIED]);
    let events: u64 = hours.iter().map(|b| u64::from(b.events)).sum();
    let total: u64 = [failed, changed, quiet].iter().flatten().sum();
    let label = format!(
        "{name}, last 24 hours by hour: {total} polls, {} changed, {} failed, {events} events",
        changed.iter().sum::<u64>(),
        failed.iter().sum::<u64>(),
    );
    svg(
        &label,
        &bars(&[(RED, failed), (BLUE, changed), (GREY, quiet)]),
    )
}

/// A destination's attempts per hour: failed (red) under succeeded (green).
pub(super) fn destination_attempts(name: &str, hours: &[DestHour; HOURS]) -> String {
    let mut ok = [0u64; HOURS];
    let mut failed = [0u64; HOURS];
    for (h, b) in hours.iter().enumerate() {
        ok[h] = u64::from(b.ok);
        failed[h] = u64::from(b.failed);
    }
    let (o, f) = (ok.iter().sum::<u64>(), failed.iter().sum::<u64>());
    let label = format!("{name}, attempts per hour over 24 hours: {o} succeeded, {f} failed");
    svg(&label, &bars(&[(RED, failed), (GREEN, ok)]))
}

/// A destination's latency per hour, p50 (blue) and p99 (orange), on a log scale from 1 ms to
/// 10 s.
pub(super) fn destination_latency(name: &str, hours: &[DestHour; HOURS]) -> String {
    let log = |ms: u64| ((ms.max(1) as f64).log10() / 4.0).min(1.0);
    let mut p50 = [None; HOURS];
    let mut p99 = [None; HOURS];
    for (h, b) in hours.iter().enumerate() {
        p50[h] = b.latency_quantile(0.5).map(log);
        p99[h] = b.latency_quantile(0.99).map(log);
    }
    let worst = hours.iter().filter_map(|b| b.latency_quantile(0.99)).max();
    let label = format!(
        "{name}, attempt latency per hour over 24 hours (log scale, 1 ms to 10 s): p99 at most {}",
        worst.map_or("—".to_owned(), super::time::millis)
    );
    svg(
        &label,
        &format!("{}{}", line(BLUE, &p50), line(ORANGE, &p99)),
    )
}

/// A destination's largest backlog per hour.
pub(super) fn destination_backlog(name: &str, hours: &[DestHour; HOURS]) -> String {
    let max = hours.iter().map(|b| b.backlog).max().unwrap_or(0);
    let mut points = [None; HOURS];
    for (h, b) in hours.iter().enumerate() {
        points[h] = Some(f64::from(b.backlog) / f64::from(max.max(1)));
    }
    let label = format!("{name}, largest backlog per hour over 24 hours: at most {max} pending");
    svg(&label, &line(ORANGE, &points))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_small_and_say_their_figures() {
        let mut hours = [SourceHour::default(); HOURS];
        hours[23].polls = [1, 40, 19, 20, 0];
        hours[22].events = 3;
        let svg = source_polls("api", &hours);
        assert!(svg.contains("<title>api, last 24 hours by hour: 80 polls, 1 changed, 20 failed, 3 events</title>"), "{svg}");
        assert!(svg.len() < 600, "{} bytes", svg.len());
        assert_eq!(svg.matches("<path").count(), 3);
        let empty = source_polls("quiet", &[SourceHour::default(); HOURS]);
        assert!(!empty.contains("<path"), "{empty}");
        let mut d = [DestHour::default(); HOURS];
        d[0].attempt(true, 30);
        d[0].attempt(false, 3_000);
        assert!(destination_attempts("d", &d).contains("1 succeeded, 1 failed"));
        assert!(destination_latency("d", &d).contains("p99 at most 10 s"));
    }
}

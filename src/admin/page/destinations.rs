//! The status page's destinations: backlog now, success rate and attempt latency p50/p99 over
//! the last 24 hours with their charts (attempts, latency, backlog per hour), the last error.

use std::fmt::Write;

use super::AdminState;
use super::chart;
use super::html::esc;
use super::time::{millis, time_el};
use crate::delivery::DestStats;
use crate::status::hours::{DestHour, LATENCY_BINS_MS, quantile};

/// The day's attempts summed: succeeded, failed, and the latency bins.
fn day(hours: &[DestHour]) -> (u64, u64, [u32; LATENCY_BINS_MS.len() + 1]) {
    let mut bins = [0u32; LATENCY_BINS_MS.len() + 1];
    let (mut ok, mut failed) = (0u64, 0u64);
    for h in hours {
        ok += u64::from(h.ok);
        failed += u64::from(h.failed);
        for (b, n) in bins.iter_mut().zip(h.latency) {
            *b = b.saturating_add(n);
        }
    }
    (ok, failed, bins)
}

/// The destinations section.
pub(super) fn section(s: &AdminState, out: &mut String, stats: &[DestStats], now: i64) {
    let hours = s.registry.destination_hours(now);
    let errors = s.registry.destination_errors();
    out.push_str("<h2 id=\"destinations\">Destinations</h2><div class=\"wrap\"><table><caption class=\"muted\">Backlog now; success rate and attempt latency over the last 24 hours, and per hour: attempts (green succeeded, red failed), latency p50 (blue) and p99 (orange), largest backlog</caption><thead><tr><th scope=\"col\">Destination</th><th scope=\"col\">Pending</th><th scope=\"col\">Oldest pending</th><th scope=\"col\">Success (24 h)</th><th scope=\"col\">Latency p50 / p99 (24 h)</th><th scope=\"col\">Per hour</th><th scope=\"col\">Last error</th></tr></thead><tbody>");
    for d in stats {
        let name = &d.destination;
        let h = hours.get(name).copied().unwrap_or_default();
        let (ok, failed, bins) = day(&h);
        let rate = match ok + failed {
            0 => "—".to_owned(),
            n => format!("{:.1}% of {n}", 100.0 * ok as f64 / n as f64),
        };
        let latency = match (quantile(&bins, 0.5), quantile(&bins, 0.99)) {
            (Some(a), Some(b)) => format!("≤ {} / ≤ {}", millis(a), millis(b)),
            _ => "—".to_owned(),
        };
        let charts = format!(
            "{} {} {}",
            chart::destination_attempts(name, &h),
            chart::destination_latency(name, &h),
            chart::destination_backlog(name, &h)
        );
        let error = errors.get(name).map_or("—".to_owned(), |(e, at)| {
            format!(
                "<span class=\"bad\">{}</span> <span class=\"muted\">{}</span>",
                esc(e),
                time_el(Some(*at), now)
            )
        });
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{rate}</td><td>{latency}</td><td class=\"charts\">{charts}</td><td>{error}</td></tr>",
            esc(name),
            d.pending,
            d.oldest_pending_age_seconds
                .map_or("—".to_owned(), |a| format!("{a:.0} s")),
        );
    }
    out.push_str("</tbody></table></div>");
}

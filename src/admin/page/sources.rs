//! The status page's sources: state, last and next poll as relative times, items, the last 24
//! hours (events, share of 304s and of failures, a chart), the last error and a resume button.
//! Sources that need attention (paused, held, failing) come first; a page shows at most
//! [`PAGE_SIZE`] of them, so 1,000 sources stay a light page.

use std::fmt::Write;

use super::chart;
use super::html::{esc, opt};
use super::time::time_el;
use super::{AdminState, button};
use crate::status::hours::SourceHour;
use crate::status::{SourceStatus, outcome};

/// Sources per page.
pub(super) const PAGE_SIZE: usize = 100;

/// A source's last 24 hours, summed.
struct Day {
    polls: u64,
    not_modified: u64,
    failed: u64,
    events: u64,
}

fn day(hours: &[SourceHour]) -> Day {
    let at = |o: &str| outcome::ALL.iter().position(|x| *x == o).unwrap_or(0);
    let sum = |i: usize| hours.iter().map(|h| u64::from(h.polls[i])).sum::<u64>();
    Day {
        polls: hours
            .iter()
            .map(|h| h.polls.iter().map(|n| u64::from(*n)).sum::<u64>())
            .sum(),
        not_modified: sum(at(outcome::NOT_MODIFIED)),
        failed: sum(at(outcome::FAILED)),
        events: hours.iter().map(|h| u64::from(h.events)).sum(),
    }
}

fn share(part: u64, of: u64) -> String {
    match of {
        0 => "—".to_owned(),
        _ => format!("{:.0}%", 100.0 * part as f64 / of as f64),
    }
}

/// Needs attention first (paused or held, then failing), then by name.
fn order(list: &mut [SourceStatus]) {
    list.sort_by_key(|s| {
        let rank = match (&s.paused, s.consecutive_failures) {
            (Some(_), _) => 0,
            (None, n) if n > 0 => 1,
            _ => 2,
        };
        (rank, s.name.clone())
    });
}

fn state(src: &SourceStatus, writable: Option<&str>) -> (String, String) {
    match &src.paused {
        Some(reason) => (
            format!("<span class=\"warn\">paused</span>: {}", esc(reason)),
            button(
                &format!("/ui/sources/{}/resume", src.name),
                &format!("Resume {}", src.name),
                writable,
            ),
        ),
        None if src.consecutive_failures > 0 => (
            format!(
                "<span class=\"bad\">failing</span> ({} in a row)",
                src.consecutive_failures
            ),
            String::new(),
        ),
        None => (
            format!(
                "<span class=\"ok\">ok</span> <span class=\"muted\">{}</span>",
                opt(&src.last_outcome)
            ),
            String::new(),
        ),
    }
}

/// The sources section, page `page` (from 1).
pub(super) fn section(
    s: &AdminState,
    out: &mut String,
    writable: Option<&str>,
    now: i64,
    page: usize,
    link: &dyn Fn(usize) -> String,
) {
    let mut list = s.registry.sources();
    order(&mut list);
    let pages = list.len().div_ceil(PAGE_SIZE).max(1);
    let page = page.clamp(1, pages);
    let since = s.registry.counting_since().timestamp_millis();
    let counted = match now - since < 24 * 3_600_000 {
        true => format!(
            "the 24 h figures count since this daemon started, {}",
            time_el(Some(since), now)
        ),
        false => "24 h figures: the last 24 hours".to_owned(),
    };
    let _ = write!(
        out,
        "<h2 id=\"sources\">Sources</h2><div class=\"wrap\"><table><caption class=\"muted\">Every configured source, those that need attention first; {counted}</caption><thead><tr><th scope=\"col\">Source</th><th scope=\"col\">State</th><th scope=\"col\">Last poll</th><th scope=\"col\">Next poll</th><th scope=\"col\">Items</th><th scope=\"col\">Events (24 h)</th><th scope=\"col\">304s (24 h)</th><th scope=\"col\">Failed (24 h)</th><th scope=\"col\">Polls per hour</th><th scope=\"col\">Last error</th><th scope=\"col\">Action</th></tr></thead><tbody>",
    );
    for src in list.iter().skip((page - 1) * PAGE_SIZE).take(PAGE_SIZE) {
        let hours = src.hours.last_day(now);
        let d = day(&hours);
        let (state, action) = state(src, writable);
        let ms = |t: &Option<crate::status::Stamp>| t.map(|t| t.0.timestamp_millis());
        let error = match &src.last_error {
            Some(e) => format!(
                "<span class=\"bad\">{}</span> <span class=\"muted\">{}</span>",
                esc(e),
                time_el(ms(&src.last_error_at), now)
            ),
            None => "—".to_owned(),
        };
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{}</th><td>{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{error}</td><td>{action}</td></tr>",
            esc(&src.name),
            time_el(ms(&src.last_poll), now),
            time_el(ms(&src.next_poll), now),
            src.items,
            d.events,
            share(d.not_modified, d.polls),
            share(d.failed, d.polls),
            chart::source_polls(&src.name, &hours),
        );
    }
    out.push_str("</tbody></table></div>");
    if pages > 1 {
        let _ = write!(
            out,
            "<nav aria-label=\"Source pages\" class=\"pages\">Sources {}–{} of {}:",
            (page - 1) * PAGE_SIZE + 1,
            (page * PAGE_SIZE).min(list.len()),
            list.len()
        );
        for p in 1..=pages {
            match p == page {
                true => {
                    let _ = write!(out, " <strong aria-current=\"page\">{p}</strong>");
                }
                false => {
                    let _ = write!(out, " <a href=\"{}\">{p}</a>", esc(&link(p)));
                }
            }
        }
        out.push_str("</nav>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_day_sums_hours_and_shares_read_as_percentages() {
        let mut h = [SourceHour::default(); 2];
        h[0].polls = [1, 2, 6, 1, 0];
        h[1].polls = [0, 0, 0, 0, 0];
        h[1].events = 4;
        let d = day(&h);
        assert_eq!((d.polls, d.not_modified, d.failed, d.events), (10, 6, 1, 4));
        assert_eq!(share(d.not_modified, d.polls), "60%");
        assert_eq!(share(0, 0), "—");
    }
}

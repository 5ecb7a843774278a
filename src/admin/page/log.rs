//! The status page's delivery log (filterable, newest first) and dead letters, each with a
//! resend button.

use std::fmt::Write;

use super::html::{esc, opt, select};
use super::time::time_el;
use super::{AdminState, button, resend_action, status_class};
use crate::admin::events::EventsQuery;
use crate::store::{DeliveryStatus, HistoryRecord, OutboxRow};

pub(super) fn log_section(
    s: &AdminState,
    out: &mut String,
    q: &EventsQuery,
    records: &[HistoryRecord],
    writable: Option<&str>,
    now: i64,
) {
    let sources: Vec<String> = s.registry.sources().into_iter().map(|x| x.name).collect();
    let dests: Vec<String> = s
        .destinations
        .read()
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default();
    let statuses: Vec<String> = ["delivered", "pending", "dead", "filtered"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    out.push_str("<h2 id=\"log\">Delivery log</h2><form method=\"get\" action=\"/\">");
    out.push_str(&select("source", "Source", &q.source, &sources));
    out.push_str(&select(
        "destination",
        "Destination",
        &q.destination,
        &dests,
    ));
    out.push_str(&select("status", "Status", &q.status, &statuses));
    out.push_str("<button type=\"submit\">Filter</button></form>");
    out.push_str("<div class=\"wrap\"><table><caption class=\"muted\">Newest first; open an event for its attempts, headers and body</caption><thead><tr><th scope=\"col\">Detected</th><th scope=\"col\">Event</th><th scope=\"col\">Source</th><th scope=\"col\">Destination</th><th scope=\"col\">Status</th><th scope=\"col\">Attempts</th><th scope=\"col\">Last answer</th><th scope=\"col\">Action</th></tr></thead><tbody>");
    for r in records {
        let last = r
            .attempts
            .last()
            .map_or("—".to_owned(), |a| match a.status {
                Some(code) => format!("HTTP {code} in {} ms", a.duration_ms),
                None => esc(a.error.as_deref().unwrap_or("")),
            });
        let action = match r.status {
            DeliveryStatus::Delivered | DeliveryStatus::Dead => {
                button(&resend_action(r), "Resend", writable)
            }
            _ => String::new(),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td><a href=\"/events/{}\">{}</a> <span class=\"muted\">{}</span></td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{last}</td><td>{action}</td></tr>",
            time_el(Some(r.created_ms), now),
            esc(&r.event_id),
            esc(&r.event_id),
            esc(&r.event_type),
            esc(&r.source),
            esc(&r.destination),
            status_class(r.status),
            r.status.as_str(),
            r.attempts.len(),
        );
    }
    if records.is_empty() {
        out.push_str("<tr><td colspan=\"8\" class=\"muted\">No deliveries recorded (yet, or for this filter).</td></tr>");
    }
    out.push_str("</tbody></table></div>");
}

pub(super) fn dead_section(dead: &[OutboxRow], out: &mut String, writable: Option<&str>) {
    let _ = write!(
        out,
        "<h2 id=\"dead\">Dead letters ({})</h2><div class=\"wrap\"><table><caption class=\"muted\">Deliveries that gave up; resend puts them back in the outbox</caption><thead><tr><th scope=\"col\">Id</th><th scope=\"col\">Event</th><th scope=\"col\">Destination</th><th scope=\"col\">Source</th><th scope=\"col\">Attempts</th><th scope=\"col\">Reason</th><th scope=\"col\">Action</th></tr></thead><tbody>",
        dead.len()
    );
    for row in dead.iter().rev().take(200) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td><a href=\"/events/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td class=\"bad\">{}</td><td>{}</td></tr>",
            row.seq,
            esc(&row.event_id),
            esc(&row.event_id),
            esc(&row.destination),
            esc(&row.source),
            row.attempts,
            opt(&row.dead_reason),
            button(
                &format!("/ui/dead/{}/retry", row.seq),
                &format!("Resend dead letter {}", row.seq),
                writable
            ),
        );
    }
    if dead.is_empty() {
        out.push_str("<tr><td colspan=\"7\" class=\"muted\">None.</td></tr>");
    }
    out.push_str("</tbody></table></div>");
}

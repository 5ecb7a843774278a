//! The status page's view of one event: what changed (each JSON Patch operation of an
//! `item.updated` as a row, the old value in `<del>`, the new in `<ins>`; the unified diff of a
//! `document.changed`), then every delivery with its attempts, headers and body as sent.

use std::fmt::Write;

use serde_json::Value;

use super::html::{esc, layout};
use super::time::time_el;
use super::{AdminState, button, resend_action, status_class};
use crate::admin::events::sent_headers;
use crate::store::{DeliveryStatus, EventDelivery};

/// The event as pollhook built it (the envelope of §3), from the first delivery that was sent
/// it unshaped by a `body` program.
fn envelope(id: &str, deliveries: &[EventDelivery]) -> Option<Value> {
    deliveries.iter().find_map(|d| {
        let v: Value = serde_json::from_slice(d.body.as_deref()?).ok()?;
        (v["id"] == id && v["type"].is_string() && v.get("data").is_some()).then_some(v)
    })
}

fn value_text(v: Option<&Value>) -> String {
    v.map_or(String::new(), |v| esc(&v.to_string()))
}

/// The rows of an update's patch: from its `changes`, else computed from `previous` and
/// `data`; `None` when the event carries neither.
fn patch_rows(e: &Value) -> Option<String> {
    let previous = e.get("previous").filter(|p| !p.is_null());
    let ops = match (e.get("changes"), previous) {
        (Some(Value::Array(ops)), _) => ops.clone(),
        (_, Some(before)) => {
            match serde_json::to_value(crate::event::changes(before, &e["data"])) {
                Ok(Value::Array(ops)) => ops,
                _ => return None,
            }
        }
        _ => return None,
    };
    let mut out = String::new();
    for op in &ops {
        let path = op["path"].as_str().unwrap_or("");
        let old = previous.and_then(|p| p.pointer(path));
        let (before, after) = match op["op"].as_str().unwrap_or("") {
            "add" => (String::new(), value_text(op.get("value"))),
            "remove" => (value_text(old), String::new()),
            _ => (value_text(old), value_text(op.get("value"))),
        };
        let before = match (before.is_empty(), previous.is_some()) {
            (false, _) => format!("<del>{before}</del>"),
            (true, false) if op["op"] != "add" => {
                "<span class=\"muted\">not kept</span>".to_owned()
            }
            (true, _) => String::new(),
        };
        let after = match after.is_empty() {
            true => String::new(),
            false => format!("<ins>{after}</ins>"),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td><code>{}</code></td><td>{before}</td><td>{after}</td></tr>",
            esc(op["op"].as_str().unwrap_or("")),
            esc(path)
        );
    }
    Some(out)
}

/// The change view, when the event says what changed.
fn change_view(e: &Value) -> String {
    match e["type"].as_str() {
        Some("item.updated") => match patch_rows(e) {
            Some(rows) => format!(
                "<section><h2>What changed</h2><div class=\"wrap\"><table><caption class=\"muted\">The update as a JSON Patch (RFC 6902): each operation, the value before and after</caption><thead><tr><th scope=\"col\">Operation</th><th scope=\"col\">Path</th><th scope=\"col\">Before</th><th scope=\"col\">After</th></tr></thead><tbody>{rows}</tbody></table></div></section>"
            ),
            None => "<p class=\"muted\">This event carries neither <code>previous</code> nor <code>changes</code>: set <code>include: { changes: true }</code> on its source to see what changed.</p>".to_owned(),
        },
        Some("document.changed") => match e["data"]["diff"].as_str() {
            Some(diff) => {
                let mut out = "<section><h2>What changed</h2><pre class=\"diff\">".to_owned();
                for line in diff.lines() {
                    let _ = match line.chars().next() {
                        Some('-') if !line.starts_with("---") => writeln!(out, "<del>{}</del>", esc(line)),
                        Some('+') if !line.starts_with("+++") => writeln!(out, "<ins>{}</ins>", esc(line)),
                        _ => writeln!(out, "{}", esc(line)),
                    };
                }
                out.push_str("</pre></section>");
                out
            }
            None => String::new(),
        },
        _ => String::new(),
    }
}

/// One delivery: its status, attempts, headers and body.
fn delivery(s: &AdminState, d: &EventDelivery, out: &mut String, writable: Option<&str>, now: i64) {
    let r = &d.record;
    let _ = write!(
        out,
        "<section><h2>To {} — <span class=\"{}\">{}</span></h2><p>{} from <strong>{}</strong>, key <code>{}</code>, revision {}, delivery {}{}{}</p>",
        esc(&r.destination),
        status_class(r.status),
        r.status.as_str(),
        esc(&r.event_type),
        esc(&r.source),
        esc(&r.key),
        r.revision,
        r.seq,
        r.resend_of
            .map_or(String::new(), |o| format!(" (resend of {o})")),
        r.reason.as_deref().map_or(String::new(), |why| format!(
            "<br><span class=\"bad\">{}</span>",
            esc(why)
        )),
    );
    if matches!(r.status, DeliveryStatus::Delivered | DeliveryStatus::Dead) {
        out.push_str(&button(
            &resend_action(r),
            &format!("Resend to {}", r.destination),
            writable,
        ));
    }
    out.push_str("<h3>Attempts</h3><div class=\"wrap\"><table><thead><tr><th scope=\"col\">#</th><th scope=\"col\">At</th><th scope=\"col\">Duration</th><th scope=\"col\">Result</th><th scope=\"col\">Response (first 1 KiB)</th></tr></thead><tbody>");
    for a in &r.attempts {
        let result = match a.status {
            Some(code @ 200..=299) => format!("<span class=\"ok\">HTTP {code}</span>"),
            Some(code) => format!("<span class=\"bad\">HTTP {code}</span>"),
            None => format!(
                "<span class=\"bad\">{}</span>",
                esc(a.error.as_deref().unwrap_or(""))
            ),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{} ms</td><td>{result}</td><td><code>{}</code></td></tr>",
            a.n,
            time_el(Some(a.at_ms), now),
            a.duration_ms,
            esc(a.response.as_deref().unwrap_or("")),
        );
    }
    if r.attempts.is_empty() {
        out.push_str("<tr><td colspan=\"5\" class=\"muted\">No attempt yet.</td></tr>");
    }
    out.push_str("</tbody></table></div><h3>Headers as sent</h3><p class=\"muted\">Signatures and configured header values are omitted.</p><pre>");
    for (name, value) in sent_headers(s, d).unwrap_or_default() {
        let _ = writeln!(out, "{}: {}", esc(&name), esc(&value));
    }
    out.push_str("</pre><h3>Body</h3>");
    match d.body.as_deref() {
        None => out.push_str("<p class=\"muted\">Not stored.</p>"),
        Some(b) => match serde_json::from_slice::<Value>(b)
            .and_then(|v| serde_json::to_string_pretty(&v))
        {
            Ok(pretty) => {
                let _ = write!(
                    out,
                    "<p class=\"muted\">Formatted for reading; {} bytes were sent, compact.</p><pre>{}</pre>",
                    b.len(),
                    esc(&pretty)
                );
            }
            Err(_) => {
                let _ = write!(out, "<pre>{}</pre>", esc(&String::from_utf8_lossy(b)));
            }
        },
    }
    out.push_str("</section>");
}

/// The whole page of event `id`.
pub(super) fn page(
    s: &AdminState,
    id: &str,
    deliveries: &[EventDelivery],
    writable: Option<&str>,
    now: i64,
) -> String {
    let mut out = format!(
        "<p><a href=\"/\">← status page</a></p><h1>Event <code>{}</code></h1>",
        esc(id)
    );
    if deliveries.is_empty() {
        out.push_str("<p>Not in the delivery log (unknown, or pruned).</p>");
    }
    if let Some(e) = envelope(id, deliveries) {
        out.push_str(&change_view(&e));
    }
    for d in deliveries {
        delivery(s, d, &mut out, writable, now);
    }
    layout(&format!("pollhook event {id}"), &out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_update_shows_each_operation_with_before_and_after() {
        let e = json!({"type": "item.updated", "id": "evt_1", "data": {"state": "closed", "n": 2},
            "previous": {"state": "open", "n": 2, "gone": true}});
        let view = change_view(&e);
        assert!(view.contains("<code>/state</code></td><td><del>&quot;open&quot;</del></td><td><ins>&quot;closed&quot;</ins>"), "{view}");
        assert!(
            view.contains("<code>/gone</code></td><td><del>true</del></td><td></td>"),
            "{view}"
        );
        let only = json!({"type": "item.updated", "id": "evt_1", "data": {"state": "closed"},
            "changes": [{"op": "replace", "path": "/state", "value": "closed"}]});
        let view = change_view(&only);
        assert!(
            view.contains("not kept") && view.contains("<ins>&quot;closed&quot;</ins>"),
            "{view}"
        );
        let none = json!({"type": "item.updated", "id": "evt_1", "data": {}});
        assert!(change_view(&none).contains("include: { changes: true }"));
        let doc = json!({"type": "document.changed", "data": {"diff": "@@ -1 +1 @@\n-old line\n+new line"}});
        let view = change_view(&doc);
        assert!(
            view.contains("<del>-old line</del>") && view.contains("<ins>+new line</ins>"),
            "{view}"
        );
    }
}

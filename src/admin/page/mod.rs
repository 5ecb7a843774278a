//! The status page (design §6a): `GET /` for people. Server-rendered HTML from plain functions
//! (no template engine: a page this size is clearer as code, and every interpolated value goes
//! through [`esc`]); one embedded stylesheet, no JavaScript, nothing fetched from elsewhere.
//!
//! Access (`session.rs`): with `admin.token` set, the page asks for the token once
//! (`POST /login`, rate-limited per client address) and keeps an `HttpOnly; SameSite=Strict`
//! session cookie that expires (`admin.session`, default 12 h) and ends with `POST /logout`.
//! Without a token the page is readable, and its buttons work only when the listener is
//! loopback. Every button is a POST that must carry the page's form token (an HMAC bound to the
//! session, which a cross-site page cannot read); the admin gate (`admin/auth.rs`) has already
//! refused cross-site requests and foreign `Host`s.

use std::fmt::Write;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

mod html;
mod session;

pub use session::{COOKIE, Login, Logout, Sessions, login, logout};

use super::AdminState;
use super::events::{EventsQuery, at, sent_headers};
use crate::delivery::{DestStats, DispatchCmd, now_ms};
use crate::poller::Control;
use crate::store::{DeliveryStatus, HistoryQuery, HistoryRecord, OutboxRow};
use html::{esc, layout, login_page, opt, refuse, select};
use session::{can_read, can_write, check_post, csrf_value, login_value, signed_in};

/// A button that POSTs to `action` with the page's form token; none on a read-only page
/// (`writable` is the form token when the buttons work).
fn button(action: &str, label: &str, writable: Option<&str>) -> String {
    let Some(csrf) = writable else {
        return String::new();
    };
    format!(
        "<form class=\"inline\" method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">{}</button></form>",
        esc(action),
        esc(csrf),
        esc(label)
    )
}

/// Where the page's resend button of one delivery posts.
fn resend_action(r: &HistoryRecord) -> String {
    let destination: String =
        url::form_urlencoded::byte_serialize(r.destination.as_bytes()).collect();
    format!("/ui/events/{}/resend?destination={destination}", r.event_id)
}

/// Success rate and attempt latency of one destination over the records given.
struct DestHour {
    attempts: usize,
    ok: usize,
    durations: Vec<u64>,
    last_error: Option<String>,
}

fn hour_stats(
    records: &[HistoryRecord],
    since_ms: i64,
) -> std::collections::BTreeMap<String, DestHour> {
    let mut out = std::collections::BTreeMap::new();
    // Newest first: the first failure seen is the latest.
    for r in records {
        let e = out.entry(r.destination.clone()).or_insert(DestHour {
            attempts: 0,
            ok: 0,
            durations: Vec::new(),
            last_error: None,
        });
        for a in r.attempts.iter().rev().filter(|a| a.at_ms >= since_ms) {
            e.attempts += 1;
            e.durations.push(a.duration_ms);
            match a.status {
                Some(200..=299) => e.ok += 1,
                Some(code) if e.last_error.is_none() => e.last_error = Some(format!("HTTP {code}")),
                None if e.last_error.is_none() => e.last_error = a.error.clone(),
                _ => {}
            }
        }
    }
    out
}

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied()
}

fn status_class(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Delivered => "ok",
        DeliveryStatus::Dead => "bad",
        DeliveryStatus::Pending => "warn",
        DeliveryStatus::Filtered => "muted",
    }
}

fn sources_section(s: &AdminState, out: &mut String, writable: Option<&str>) {
    out.push_str("<h2 id=\"sources\">Sources</h2><div class=\"wrap\"><table><caption class=\"muted\">Every configured source and its last poll</caption><thead><tr><th scope=\"col\">Source</th><th scope=\"col\">State</th><th scope=\"col\">Last poll</th><th scope=\"col\">Next poll</th><th scope=\"col\">Items</th><th scope=\"col\">Events</th><th scope=\"col\">Last error</th><th scope=\"col\">Action</th></tr></thead><tbody>");
    for src in s.registry.sources() {
        let (state, action) = match &src.paused {
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
        };
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{}</th><td>{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
            esc(&src.name),
            opt(&src.last_poll),
            opt(&src.next_poll),
            src.items,
            src.events,
            match &src.last_error {
                Some(e) => format!(
                    "<span class=\"bad\">{}</span> <span class=\"muted\">{}</span>",
                    esc(e),
                    opt(&src.last_error_at)
                ),
                None => "—".to_owned(),
            },
        );
    }
    out.push_str("</tbody></table></div>");
}

fn destinations_section(
    out: &mut String,
    stats: &[DestStats],
    hour: &std::collections::BTreeMap<String, DestHour>,
) {
    out.push_str("<h2 id=\"destinations\">Destinations</h2><div class=\"wrap\"><table><caption class=\"muted\">Backlog now; success rate and attempt latency over the last hour</caption><thead><tr><th scope=\"col\">Destination</th><th scope=\"col\">Pending</th><th scope=\"col\">Oldest pending</th><th scope=\"col\">Success (1 h)</th><th scope=\"col\">Latency p50 / p99</th><th scope=\"col\">Last error</th></tr></thead><tbody>");
    for d in stats {
        let h = hour.get(&d.destination);
        let rate = h.filter(|h| h.attempts > 0).map_or("—".to_owned(), |h| {
            format!(
                "{:.1}% of {}",
                100.0 * h.ok as f64 / h.attempts as f64,
                h.attempts
            )
        });
        let latency = h
            .map(|h| {
                let mut v = h.durations.clone();
                v.sort_unstable();
                match (percentile(&v, 0.5), percentile(&v, 0.99)) {
                    (Some(a), Some(b)) => format!("{a} ms / {b} ms"),
                    _ => "—".to_owned(),
                }
            })
            .unwrap_or_else(|| "—".to_owned());
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{rate}</td><td>{latency}</td><td>{}</td></tr>",
            esc(&d.destination),
            d.pending,
            d.oldest_pending_age_seconds
                .map_or("—".to_owned(), |a| format!("{a:.0} s")),
            h.and_then(|h| h.last_error.as_deref())
                .map_or("—".to_owned(), |e| format!(
                    "<span class=\"bad\">{}</span>",
                    esc(e)
                )),
        );
    }
    out.push_str("</tbody></table></div>");
}

fn log_section(
    s: &AdminState,
    out: &mut String,
    q: &EventsQuery,
    records: &[HistoryRecord],
    writable: Option<&str>,
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
            at(r.created_ms).map_or(String::new(), |t| esc(&t)),
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

fn dead_section(dead: &[OutboxRow], out: &mut String, writable: Option<&str>) {
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

/// `GET /`.
pub async fn index(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Response {
    if !can_read(&s, &headers) {
        return Html(login_page(None, &login_value(&s))).into_response();
    }
    let csrf = can_write(&s, &headers).then(|| csrf_value(&s, &headers));
    let writable = csrf.as_deref();
    let now = now_ms();
    let stats = {
        let (tx, rx) = tokio::sync::oneshot::channel();
        match s.dispatch.send(DispatchCmd::Stats(tx)) {
            Ok(()) => rx.await.unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    };
    let hour_ago = now - 3_600_000;
    let hour_query = HistoryQuery {
        since_ms: Some(hour_ago),
        limit: 20_000,
        ..HistoryQuery::default()
    };
    let recent = s
        .store
        .read(move |b| b.history(&hour_query))
        .await
        .unwrap_or_default();
    let hour = hour_stats(&recent, hour_ago);
    let query = q.to_store(now).unwrap_or(HistoryQuery {
        limit: 100,
        ..HistoryQuery::default()
    });
    let records = s
        .store
        .read(move |b| b.history(&query))
        .await
        .unwrap_or_default();
    let dead = s.store.read(|b| b.dead_headers()).await.unwrap_or_default();
    let mut out = String::new();
    let _ = write!(
        out,
        "<header><h1>pollhook</h1><p class=\"muted\">Status at {} · <a href=\"/\">refresh</a>{}</p><nav aria-label=\"Sections\"><a href=\"#sources\">Sources</a><a href=\"#destinations\">Destinations</a><a href=\"#log\">Delivery log</a><a href=\"#dead\">Dead letters</a></nav></header><main>",
        at(now).map_or(String::new(), |t| esc(&t)),
        match (writable, signed_in(&s, &headers)) {
            (Some(csrf), true) => format!(
                " · <form class=\"inline\" method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Sign out</button></form>",
                esc(csrf)
            ),
            (Some(_), false) => String::new(),
            (None, _) => " · read-only".to_owned(),
        },
    );
    sources_section(&s, &mut out, writable);
    destinations_section(&mut out, &stats, &hour);
    log_section(&s, &mut out, &q, &records, writable);
    dead_section(&dead, &mut out, writable);
    out.push_str("</main>");
    Html(layout("pollhook status", &out)).into_response()
}

/// `GET /events/{id}`: one event's deliveries, attempts, headers and body.
pub async fn event(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !can_read(&s, &headers) {
        return Html(login_page(None, &login_value(&s))).into_response();
    }
    let csrf = can_write(&s, &headers).then(|| csrf_value(&s, &headers));
    let writable = csrf.as_deref();
    let key = id.clone();
    let deliveries = s
        .store
        .read(move |b| b.event(&key))
        .await
        .unwrap_or_default();
    let mut out = format!(
        "<p><a href=\"/\">← status page</a></p><h1>Event <code>{}</code></h1>",
        esc(&id)
    );
    if deliveries.is_empty() {
        out.push_str("<p>Not in the delivery log (unknown, or pruned).</p>");
    }
    for d in &deliveries {
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
                at(a.at_ms).map_or(String::new(), |t| esc(&t)),
                a.duration_ms,
                esc(a.response.as_deref().unwrap_or("")),
            );
        }
        if r.attempts.is_empty() {
            out.push_str("<tr><td colspan=\"5\" class=\"muted\">No attempt yet.</td></tr>");
        }
        out.push_str("</tbody></table></div><h3>Headers as sent</h3><p class=\"muted\">Signatures and configured header values are omitted.</p><pre>");
        for (name, value) in sent_headers(&s, d).unwrap_or_default() {
            let _ = writeln!(out, "{}: {}", esc(&name), esc(&value));
        }
        out.push_str("</pre><h3>Body</h3><pre>");
        out.push_str(&d.body.as_ref().map_or("(not stored)".to_owned(), |b| {
            esc(&String::from_utf8_lossy(b))
        }));
        out.push_str("</pre></section>");
    }
    Html(layout(&format!("pollhook event {id}"), &out)).into_response()
}

/// Form of the page's buttons.
#[derive(Debug, Deserialize)]
pub struct Action {
    #[serde(default)]
    csrf: String,
}

/// `POST /ui/sources/{name}/resume`.
pub async fn resume(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<Action>,
) -> Response {
    if let Err(r) = check_post(&s, &headers, &form.csrf) {
        return *r;
    }
    let sender = s.controls.read().ok().and_then(|c| c.get(&name).cloned());
    if let Some(sender) = sender {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if sender.send(Control::Resume(false, tx)).is_ok() {
            let _ = rx.await;
        }
    }
    Redirect::to("/#sources").into_response()
}

/// `POST /ui/events/{id}/resend`.
pub async fn resend(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<super::events::ResendQuery>,
    Form(form): Form<Action>,
) -> Response {
    if let Err(r) = check_post(&s, &headers, &form.csrf) {
        return *r;
    }
    let destination = q.destination.filter(|d| !d.is_empty());
    if let Err(e) = s.store.resend(&id, destination, now_ms()).await {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }
    let _ = s.dispatch.send(DispatchCmd::DeadChanged);
    Redirect::to(&format!("/events/{id}")).into_response()
}

/// `POST /ui/dead/{seq}/retry`.
pub async fn retry_dead(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(seq): Path<u64>,
    Form(form): Form<Action>,
) -> Response {
    if let Err(r) = check_post(&s, &headers, &form.csrf) {
        return *r;
    }
    if let Err(e) = s.store.revive(Some(vec![seq]), now_ms()).await {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }
    let _ = s.dispatch.send(DispatchCmd::DeadChanged);
    Redirect::to("/#dead").into_response()
}

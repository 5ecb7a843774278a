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

mod chart;
mod destinations;
mod event;
mod html;
mod log;
mod session;
mod sources;
mod time;

pub use session::{COOKIE, Login, Logout, Sessions, login, logout};

use super::AdminState;
use super::events::EventsQuery;
use crate::delivery::{DispatchCmd, now_ms};
use crate::poller::Control;
use crate::store::{DeliveryStatus, HistoryQuery, HistoryRecord};
use html::{esc, layout_with, login_page, refuse};
use session::{can_read, can_write, check_post, csrf_value, login_value, signed_in};
use time::time_el;

/// A button that POSTs to `action` with the page's form token; none on a read-only page
/// (`writable` is the form token when the buttons work).
pub(super) fn button(action: &str, label: &str, writable: Option<&str>) -> String {
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
pub(super) fn resend_action(r: &HistoryRecord) -> String {
    let destination: String =
        url::form_urlencoded::byte_serialize(r.destination.as_bytes()).collect();
    format!("/ui/events/{}/resend?destination={destination}", r.event_id)
}

pub(super) fn status_class(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Delivered => "ok",
        DeliveryStatus::Dead => "bad",
        DeliveryStatus::Pending => "warn",
        DeliveryStatus::Filtered => "muted",
    }
}

/// Query of `GET /` besides the delivery log's filters ([`EventsQuery`], read from the same
/// query string): the page of sources, auto-refresh.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    /// The delivery log's filters (read by their own extractor).
    #[serde(skip)]
    pub events: EventsQuery,
    /// Which page of sources (from 1).
    pub page: Option<usize>,
    /// Reload the page every this many seconds (5 to 3600); absent or 0: never.
    pub refresh: Option<u64>,
}

impl PageQuery {
    /// The page's own URL with one setting changed.
    fn link(&self, page: Option<usize>, refresh: Option<u64>) -> String {
        let e = &self.events;
        let pairs = [
            ("source", e.source.clone()),
            ("destination", e.destination.clone()),
            ("status", e.status.clone()),
            ("page", page.filter(|p| *p > 1).map(|p| p.to_string())),
            ("refresh", refresh.filter(|r| *r > 0).map(|r| r.to_string())),
        ];
        let mut url = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                url.append_pair(k, &v);
            }
        }
        match url.finish() {
            q if q.is_empty() => "/".to_owned(),
            q => format!("/?{q}"),
        }
    }
}

/// Default seconds between reloads when auto-refresh is switched on.
const REFRESH_SECS: u64 = 30;

/// `GET /`.
pub async fn index(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Query(events): Query<EventsQuery>,
    Query(mut q): Query<PageQuery>,
) -> Response {
    q.events = events;
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
    let query = q.events.to_store(now).unwrap_or(HistoryQuery {
        limit: 100,
        ..HistoryQuery::default()
    });
    let records = s
        .store
        .read(move |b| b.history(&query))
        .await
        .unwrap_or_default();
    let dead = s.store.read(|b| b.dead_headers()).await.unwrap_or_default();
    let refresh = q.refresh.filter(|r| *r > 0).map(|r| r.clamp(5, 3600));
    let toggle = match refresh {
        Some(r) => format!(
            "reloads every {r} s · <a href=\"{}\">stop reloading</a>",
            esc(&q.link(q.page, None))
        ),
        None => format!(
            "<a href=\"{}\">reload every {REFRESH_SECS} s</a>",
            esc(&q.link(q.page, Some(REFRESH_SECS)))
        ),
    };
    let sign_out = match (writable, signed_in(&s, &headers)) {
        (Some(csrf), true) => format!(
            "<form class=\"inline right\" method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Sign out</button></form>",
            esc(csrf)
        ),
        (Some(_), false) => String::new(),
        (None, _) => "<p class=\"muted right\">read-only</p>".to_owned(),
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<header>{sign_out}<h1>pollhook</h1><p class=\"muted\">Status {} · <a href=\"{}\">refresh</a> · {toggle}</p><nav aria-label=\"Sections\"><a href=\"#sources\">Sources</a><a href=\"#destinations\">Destinations</a><a href=\"#log\">Delivery log</a><a href=\"#dead\">Dead letters</a></nav></header><main>",
        time_el(Some(now), now),
        esc(&q.link(q.page, refresh)),
    );
    let link = |p: usize| q.link(Some(p), refresh);
    sources::section(&s, &mut out, writable, now, q.page.unwrap_or(1), &link);
    destinations::section(&s, &mut out, &stats, now);
    log::log_section(&s, &mut out, &q.events, &records, writable, now);
    log::dead_section(&dead, &mut out, writable);
    out.push_str("</main>");
    let head = refresh.map_or(String::new(), |r| {
        format!("<meta http-equiv=\"refresh\" content=\"{r}\">")
    });
    Html(layout_with("pollhook status", &head, &out)).into_response()
}

/// `GET /events/{id}`: one event's change view, deliveries, attempts, headers and body.
pub async fn event(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !can_read(&s, &headers) {
        return Html(login_page(None, &login_value(&s))).into_response();
    }
    let csrf = can_write(&s, &headers).then(|| csrf_value(&s, &headers));
    let key = id.clone();
    let deliveries = s
        .store
        .read(move |b| b.event(&key))
        .await
        .unwrap_or_default();
    Html(event::page(&s, &id, &deliveries, csrf.as_deref(), now_ms())).into_response()
}

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

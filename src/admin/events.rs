//! The delivery log API (design §6a): `GET /v1/events`, `GET /v1/events/{id}`,
//! `POST /v1/events/{id}/resend`, `POST /v1/replay`. The status page reads through the same
//! functions.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminState;
use crate::delivery::{DispatchCmd, now_ms};
use crate::status::rfc3339;
use crate::store::{
    DeliveryStatus, EventDelivery, HistoryQuery, HistoryRecord, OutboxRow, StoreError, Superseded,
};

/// Most records one page of `GET /v1/events` returns.
pub const MAX_LIMIT: usize = 1000;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn internal(e: StoreError) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// RFC 3339 of a unix-ms time.
pub fn at(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(rfc3339)
}

/// A `since` value: a duration back from now (`90s`, `2h`, `7d`), an RFC 3339 time, or unix ms.
pub fn parse_since(text: &str, now_ms: i64) -> Option<i64> {
    let text = text.trim();
    if let Ok(d) = humantime::parse_duration(text) {
        return Some(now_ms.saturating_sub(d.as_millis().try_into().unwrap_or(i64::MAX)));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    text.parse::<i64>().ok()
}

/// A `status` value.
pub fn parse_status(text: &str) -> Option<DeliveryStatus> {
    match text {
        "delivered" => Some(DeliveryStatus::Delivered),
        "pending" => Some(DeliveryStatus::Pending),
        "dead" => Some(DeliveryStatus::Dead),
        "filtered" => Some(DeliveryStatus::Filtered),
        _ => None,
    }
}

/// Query of `GET /v1/events` (and of the page's log).
#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    /// Only this source.
    pub source: Option<String>,
    /// Only this destination.
    pub destination: Option<String>,
    /// delivered | pending | dead | filtered.
    pub status: Option<String>,
    /// A duration back from now, an RFC 3339 time or unix ms.
    pub since: Option<String>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<u64>,
}

impl EventsQuery {
    /// The store query, or what is wrong with the parameters.
    pub fn to_store(&self, now_ms: i64) -> Result<HistoryQuery, String> {
        let empty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let status = match empty(&self.status) {
            Some(s) => Some(parse_status(&s).ok_or_else(|| {
                format!("status {s:?} is not one of delivered, pending, dead, filtered")
            })?),
            None => None,
        };
        let since_ms = match empty(&self.since) {
            Some(s) => Some(parse_since(&s, now_ms).ok_or_else(|| {
                format!("since {s:?} is neither a duration (2h), an RFC 3339 time nor unix ms")
            })?),
            None => None,
        };
        Ok(HistoryQuery {
            source: empty(&self.source),
            destination: empty(&self.destination),
            status,
            since_ms,
            before_seq: self.cursor,
            limit: self.limit.unwrap_or(100).clamp(1, MAX_LIMIT),
        })
    }
}

/// One log record as the API shows it.
pub fn record_json(r: &HistoryRecord) -> Value {
    let last = r.attempts.last();
    json!({
        "seq": r.seq,
        "id": r.event_id,
        "type": r.event_type,
        "source": r.source,
        "destination": r.destination,
        "key": r.key,
        "revision": r.revision,
        "status": r.status.as_str(),
        "reason": r.reason,
        "created_at": at(r.created_ms),
        "updated_at": at(r.updated_ms),
        "attempts": r.attempts.len(),
        "failed_attempts": r.attempts.iter().filter(|a| !matches!(a.status, Some(200..=299))).count(),
        "last_status": last.and_then(|a| a.status),
        "last_error": last.and_then(|a| a.error.clone()),
        "resend_of": r.resend_of,
    })
}

/// `GET /v1/events`.
pub async fn list(State(s): State<AdminState>, Query(q): Query<EventsQuery>) -> Response {
    let query = match q.to_store(now_ms()) {
        Ok(query) => query,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let q = query.clone();
    match s.store.read(move |b| b.history(&q)).await {
        Ok(records) => {
            let next = (records.len() == query.limit)
                .then(|| records.last().map(|r| r.seq))
                .flatten();
            Json(json!({
                "events": records.iter().map(record_json).collect::<Vec<_>>(),
                "next_cursor": next,
            }))
            .into_response()
        }
        Err(e) => internal(e),
    }
}

/// The headers a delivery is sent with, signatures left out and configured header values
/// (which often carry credentials) omitted; `None` when its destination is no longer configured.
pub fn sent_headers(s: &AdminState, d: &EventDelivery) -> Option<Vec<(String, String)>> {
    let dests = s.destinations.read().ok()?;
    let dest = dests.get(&d.record.destination)?;
    let r = &d.record;
    let row = r.to_row(r.seq, r.created_ms, std::sync::Arc::from(&[][..]));
    let ts = r.attempts.last().map_or(r.created_ms, |a| a.at_ms) / 1000;
    Some(
        crate::delivery::send::unsigned_headers(dest, &row, ts)
            .into_iter()
            .map(|(n, v)| {
                let value = match v.is_sensitive() {
                    true => "(omitted)".to_owned(),
                    false => String::from_utf8_lossy(v.as_bytes()).into_owned(),
                };
                (n.as_str().to_owned(), value)
            })
            .collect(),
    )
}

/// `GET /v1/events/{id}`.
pub async fn show(State(s): State<AdminState>, Path(id): Path<String>) -> Response {
    let key = id.clone();
    let deliveries = match s.store.read(move |b| b.event(&key)).await {
        Ok(d) => d,
        Err(e) => return internal(e),
    };
    if deliveries.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            format!("no event {id:?} in the delivery log (it may have been pruned)"),
        );
    }
    let list: Vec<Value> = deliveries
        .iter()
        .map(|d| {
            let mut v = record_json(&d.record);
            v["attempts"] = json!(
                d.record
                    .attempts
                    .iter()
                    .map(|a| json!({
                        "n": a.n,
                        "at": at(a.at_ms),
                        "duration_ms": a.duration_ms,
                        "status": a.status,
                        "error": a.error,
                        "response": a.response,
                    }))
                    .collect::<Vec<_>>()
            );
            v["body"] = json!(
                d.body
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
            );
            v["headers"] = json!(sent_headers(&s, d).map(|h| {
                h.into_iter()
                    .map(|(n, v)| json!({"name": n, "value": v}))
                    .collect::<Vec<_>>()
            }));
            v
        })
        .collect();
    Json(json!({ "id": id, "deliveries": list })).into_response()
}

fn queued(s: &AdminState, rows: &[OutboxRow], superseded: &[Superseded]) -> Response {
    let _ = s.dispatch.send(DispatchCmd::DeadChanged);
    Json(json!({
        "queued": rows.iter().map(|r| json!({"seq": r.seq, "id": r.event_id, "destination": r.destination})).collect::<Vec<_>>(),
        "superseded": superseded,
    }))
    .into_response()
}

/// Query of a resend: `?destination=NAME` limits it to one destination.
#[derive(Debug, Default, Deserialize)]
pub struct ResendQuery {
    /// Only this destination.
    pub destination: Option<String>,
}

/// `POST /v1/events/{id}/resend`.
pub async fn resend(
    State(s): State<AdminState>,
    Path(id): Path<String>,
    Query(q): Query<ResendQuery>,
) -> Response {
    let destination = q.destination.filter(|d| !d.is_empty());
    match s.store.resend(&id, destination, now_ms()).await {
        Ok((rows, superseded)) if rows.is_empty() && superseded.is_empty() => error(
            StatusCode::NOT_FOUND,
            format!("nothing to resend for {id:?}: unknown, pruned, still pending, or filtered"),
        ),
        Ok((rows, superseded)) => queued(&s, &rows, &superseded),
        Err(e) => internal(e),
    }
}

/// Body of `POST /v1/replay`.
#[derive(Debug, Deserialize)]
pub struct ReplayRequest {
    /// Source name.
    pub source: String,
    /// A duration back from now, an RFC 3339 time or unix ms.
    pub since: String,
    /// Only this destination.
    pub destination: Option<String>,
}

/// `POST /v1/replay`.
pub async fn replay(State(s): State<AdminState>, Json(r): Json<ReplayRequest>) -> Response {
    let now = now_ms();
    let Some(since_ms) = parse_since(&r.since, now) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "since {:?} is neither a duration (2h), an RFC 3339 time nor unix ms",
                r.since
            ),
        );
    };
    match s
        .store
        .replay(&r.source, since_ms, r.destination, now)
        .await
    {
        Ok((rows, superseded)) => queued(&s, &rows, &superseded),
        Err(e) => internal(e),
    }
}

//! Admin API handlers. Every body is JSON; errors are `{"error": "..."}` with a fitting status.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::AdminState;
use crate::delivery::{DestStats, DispatchCmd, now_ms};
use crate::poller::Control;
use crate::status::rfc3339;
use crate::store::OutboxRow;
use crate::telemetry as m;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// `GET /readyz`: 200 once the state is open, the config loaded and the scheduler running, and
/// while no supervised task keeps dying. Why not, and the problems of a rejected reload, are
/// shown only to callers that may see `/v1` (they quote the config).
pub async fn readyz(State(s): State<AdminState>, headers: axum::http::HeaderMap) -> Response {
    let failing = s.registry.failing_tasks();
    let ready = s.registry.is_ready() && failing.is_empty() && s.store.healthy();
    let body = match super::authorized(&s, &headers) {
        true => Json(json!({
            "ready": ready,
            "failing_tasks": failing,
            "reload_errors": s.registry.reload_errors(),
        })),
        false => Json(json!({ "ready": ready })),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

/// `GET /metrics`: renders what is recorded. Gauges are kept by their owners (the dispatcher
/// refreshes the outbox ones on a timer), so a scrape reads no store and waits on no task.
pub async fn metrics(State(s): State<AdminState>) -> Response {
    let mut text = m::handle().render();
    m::render_counters(&mut text, &s.registry.counters());
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

/// `GET /v1/sources`.
pub async fn sources(State(s): State<AdminState>) -> Json<Value> {
    Json(json!({ "sources": s.registry.sources() }))
}

/// `GET /v1/sources/{name}`.
pub async fn source(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    match s.registry.source(&name) {
        Some(status) => Json(status).into_response(),
        None => elsewhere(&s, name, "no source named").await,
    }
}

/// The answer for a source this instance does not run: on a shared store, 409 naming the
/// instance that does (design §8); otherwise 404.
async fn elsewhere(s: &AdminState, name: String, missing: &str) -> Response {
    let lookup = name.clone();
    let holder = match s.store.backend().lease() {
        Some(_) => s
            .store
            .read(move |b| b.holder(&lookup))
            .await
            .ok()
            .flatten(),
        None => None,
    };
    match holder {
        Some(instance) => (
            StatusCode::CONFLICT,
            Json(json!({
                "error": format!("source {name:?} runs on instance {instance:?}; ask that instance (see /v1/cluster)"),
                "instance": instance,
            })),
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, format!("{missing} {name:?}")),
    }
}

/// Query of a source action: `?discard=true` with `resume` drops changes the flood guard held.
#[derive(Debug, serde::Deserialize)]
pub struct ActionQuery {
    discard: Option<bool>,
}

/// `POST /v1/sources/{name}/poll|pause|resume`.
pub async fn source_action(
    State(s): State<AdminState>,
    Path((name, action)): Path<(String, String)>,
    Query(query): Query<ActionQuery>,
) -> Response {
    let discard = query.discard.unwrap_or(false);
    let sender = s.controls.read().ok().and_then(|c| c.get(&name).cloned());
    let Some(sender) = sender else {
        return elsewhere(&s, name, "no running source named").await;
    };
    let sent = match action.as_str() {
        "poll" => {
            let (tx, rx) = oneshot::channel();
            if let Err(refused) = sender.send(Control::PollNow(tx)) {
                return error(StatusCode::SERVICE_UNAVAILABLE, refused.to_string());
            }
            rx.await.map(Ok)
        }
        "pause" | "resume" => {
            let (tx, rx) = oneshot::channel();
            let cmd = if action == "pause" {
                Control::Pause("paused by operator".into(), tx)
            } else {
                Control::Resume(discard, tx)
            };
            if let Err(refused) = sender.send(cmd) {
                return error(StatusCode::SERVICE_UNAVAILABLE, refused.to_string());
            }
            rx.await.map(|r| r.map(|()| action.clone()))
        }
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!("unknown action {other:?}; use poll, pause or resume"),
            );
        }
    };
    match sent {
        Ok(Ok(result)) => Json(json!({ "source": name, "result": result })).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the source stopped before answering",
        ),
    }
}

async fn dispatcher_stats(s: &AdminState) -> Vec<DestStats> {
    let (tx, rx) = oneshot::channel();
    if s.dispatch.send(DispatchCmd::Stats(tx)).is_err() {
        return Vec::new();
    }
    rx.await.unwrap_or_default()
}

/// `GET /v1/outbox`: depth and oldest pending age, in total and per destination.
pub async fn outbox(State(s): State<AdminState>) -> Json<Value> {
    let stats = dispatcher_stats(&s).await;
    let depth: usize = stats.iter().map(|d| d.pending).sum();
    let oldest = stats
        .iter()
        .filter_map(|d| d.oldest_pending_age_seconds)
        .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
    let filtered = s.registry.filtered();
    let destinations: Vec<Value> = stats
        .iter()
        .map(|d| {
            let mut v = json!(d);
            v["filtered"] = json!(filtered.get(&d.destination).copied().unwrap_or(0));
            v
        })
        .collect();
    Json(json!({
        "depth": depth,
        "oldest_pending_age_seconds": oldest,
        "filtered": filtered.values().sum::<u64>(),
        "destinations": destinations,
    }))
}

fn dead_json(row: &OutboxRow) -> Value {
    json!({
        "id": row.seq,
        "event_id": row.event_id,
        "destination": row.destination,
        "source": row.source,
        "key": row.key,
        "revision": row.revision,
        "attempts": row.attempts,
        "reason": row.dead_reason,
        "last_error": row.last_error,
        "detected_at": chrono::DateTime::from_timestamp_millis(row.created_ms).map(rfc3339),
        "dead_at": row.dead_ms.and_then(chrono::DateTime::from_timestamp_millis).map(rfc3339),
    })
}

/// `GET /v1/cluster`: this instance, the store, and the instances sharing it with their leases
/// and last heartbeat (design §8). On redb, one instance holding everything.
pub async fn cluster(State(s): State<AdminState>) -> Response {
    let backend = s.store.backend();
    let (name, lease) = (backend.instance().to_owned(), backend.lease());
    let Some(lease) = lease else {
        let sources = s.registry.sources().len();
        return Json(json!({
            "instance": name,
            "store": "redb",
            "instances": [{ "name": name, "alive": true, "leases": sources, "claims": 0 }],
        }))
        .into_response();
    };
    match s.store.read(|b| b.instances()).await {
        Ok(list) => {
            let instances: Vec<Value> = list
                .iter()
                .map(|i| {
                    json!({
                        "name": i.name,
                        "alive": i.alive,
                        "leases": i.leases,
                        "claims": i.claims,
                        "started_at": chrono::DateTime::from_timestamp_millis(i.started_ms).map(rfc3339),
                        "heartbeat_at": chrono::DateTime::from_timestamp_millis(i.heartbeat_ms).map(rfc3339),
                    })
                })
                .collect();
            Json(json!({
                "instance": name,
                "store": "postgres",
                "lease_seconds": lease.as_secs_f64(),
                "instances": instances,
            }))
            .into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /v1/dead`.
pub async fn dead(State(s): State<AdminState>) -> Response {
    match s.store.read(|b| b.dead_headers()).await {
        Ok(rows) => {
            Json(json!({ "dead": rows.iter().map(dead_json).collect::<Vec<_>>() })).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn revive(s: &AdminState, seqs: Option<Vec<u64>>) -> Response {
    match s.store.revive(seqs, now_ms()).await {
        Ok((rows, superseded)) => {
            // The writer hands revived rows to the dispatcher; the dead-letter gauge recounts.
            let _ = s.dispatch.send(DispatchCmd::DeadChanged);
            let ids: Vec<u64> = rows.iter().map(|r| r.seq).collect();
            Json(json!({ "retried": ids, "superseded": superseded })).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `POST /v1/dead/{id}/retry`.
pub async fn retry_one(State(s): State<AdminState>, Path(id): Path<u64>) -> Response {
    let exists = s
        .store
        .read(|b| b.dead_headers())
        .await
        .map(|rows| rows.iter().any(|r| r.seq == id))
        .unwrap_or(false);
    if !exists {
        return error(
            StatusCode::NOT_FOUND,
            format!("no dead letter with id {id}"),
        );
    }
    revive(&s, Some(vec![id])).await
}

/// `POST /v1/dead/retry`.
pub async fn retry_all(State(s): State<AdminState>) -> Response {
    revive(&s, None).await
}

/// `DELETE /v1/dead`.
pub async fn purge_dead(State(s): State<AdminState>) -> Response {
    match s.store.purge_dead(None).await {
        Ok(n) => {
            let _ = s.dispatch.send(DispatchCmd::DeadChanged);
            Json(json!({ "purged": n })).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `POST /v1/reload`: validates and applies the config file; 422 with every problem when it is
/// rejected (the old config keeps running).
pub async fn reload(State(s): State<AdminState>) -> Response {
    let (tx, rx) = oneshot::channel();
    if s.reload.send(tx).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping");
    }
    match rx.await {
        Ok(Ok(())) => Json(json!({ "reloaded": true })).into_response(),
        Ok(Err(problems)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "reloaded": false, "errors": problems })),
        )
            .into_response(),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon stopped before answering",
        ),
    }
}

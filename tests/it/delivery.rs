//! Delivery: headers and signatures on the wire, retries with a stable id, Retry-After,
//! dead letters, redirects, retry times persisted on the row.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pollhook::delivery::signing::{verify_github, verify_standard};
use serde_json::json;

use crate::helpers::script::{Scripted, r};
use crate::helpers::upstream::Upstream;
use crate::helpers::{Daemon, SECRET, header, receiver, simple_yaml, stored_rows};

const T: Duration = Duration::from_secs(10);

/// Starts an upstream with one item and a daemon that emits it on the first poll.
async fn emit_one(rx_uri: &str, dest_extra: &str) -> (Upstream, Daemon) {
    let up = Upstream::start(&json!([{"id":7,"title":"hello"}]).to_string()).await;
    let yaml = simple_yaml(&up.url, rx_uri, "    on_first_poll: emit\n")
        .replace("    retry: [200ms, 200ms, 200ms]\n", dest_extra);
    (up, Daemon::start(&yaml))
}

/// Every header of design §3 is present, and the signature verifies with the Standard
/// Webhooks scheme and, with `signature: both`, GitHub's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_standard_webhooks_and_github_headers() {
    let rx = Scripted::start(vec![], r(204)).await;
    let (_up, d) = emit_one(
        &rx.uri(),
        "    signature: both\n    headers: { X-Env: test }\n",
    )
    .await;
    rx.wait_hits(1, T).await;
    let hit = &rx.hits()[0];
    let req = &hit.request;
    let id = header(req, "webhook-id");
    let ts: i64 = header(req, "webhook-timestamp")
        .parse()
        .expect("numeric timestamp");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(id.starts_with("evt_") && id.len() == 30, "id {id}");
    assert_eq!(header(req, "idempotency-key"), id);
    assert!((now - ts).abs() < 30);
    assert_eq!(header(req, "content-type"), "application/json");
    assert!(header(req, "user-agent").starts_with("pollhook/"));
    assert_eq!(header(req, "x-env"), "test");
    assert!(verify_standard(
        SECRET,
        &id,
        ts,
        &hit.raw,
        &header(req, "webhook-signature")
    ));
    assert!(verify_github(
        SECRET,
        &hit.raw,
        &header(req, "x-hub-signature-256")
    ));
    assert_eq!(hit.body["id"], id);
    assert_eq!(hit.body["source"], "things");
    assert_eq!(hit.body["data"], json!({"id":7,"title":"hello"}));
    d.stop().await;
}

/// With two secrets during rotation, each one's signature is present and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rotated_secret_signs() {
    let old = "whsec_b2xkLXNlY3JldC1mb3ItdGVzdHM=";
    let rx = Scripted::start(vec![], r(204)).await;
    let yaml_dest = "    retry: [200ms]\n".to_owned();
    let up = Upstream::start(&json!([{"id":1}]).to_string()).await;
    let yaml = simple_yaml(&up.url, &rx.uri(), "    on_first_poll: emit\n")
        .replace("    retry: [200ms, 200ms, 200ms]\n", &yaml_dest)
        .replace(
            "secret: ${SECRET}",
            &format!("secret: [\"${{SECRET}}\", \"{old}\"]"),
        );
    let d = Daemon::start(&yaml);
    rx.wait_hits(1, T).await;
    let hit = &rx.hits()[0];
    let sig = header(&hit.request, "webhook-signature");
    let ts: i64 = header(&hit.request, "webhook-timestamp").parse().unwrap();
    assert_eq!(sig.split(' ').count(), 2);
    assert!(verify_standard(SECRET, &hit.id, ts, &hit.raw, &sig));
    assert!(verify_standard(old, &hit.id, ts, &hit.raw, &sig));
    d.stop().await;
}

/// 5xx, 408 and 429 are retried with the same webhook-id and the same body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_keep_the_same_id_and_body() {
    let rx = Scripted::start(vec![r(500), r(408), r(429), r(503)], r(204)).await;
    let (_up, d) = emit_one(
        &rx.uri(),
        "    retry: [100ms, 100ms, 100ms, 100ms, 100ms]\n",
    )
    .await;
    rx.wait_hits(5, T).await;
    let hits = rx.hits();
    assert_eq!(hits.len(), 5);
    assert!(
        hits.iter()
            .all(|h| h.id == hits[0].id && h.raw == hits[0].raw)
    );
    assert_eq!(hits[4].status, 204);
    let dir = d.stop().await;
    let (pending, dead) = stored_rows(dir.path());
    assert!(
        pending.is_empty() && dead.is_empty(),
        "delivered rows are removed"
    );
}

/// Retry-After is honoured within [step, 2 × step].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_429_after_retry_after() {
    let rx = Scripted::start(vec![r(429).header("retry-after", "2")], r(204)).await;
    let (_up, d) = emit_one(&rx.uri(), "    retry: [1s]\n").await;
    rx.wait_hits(2, T).await;
    let hits = rx.hits();
    let gap = hits[1].at - hits[0].at;
    assert!(
        gap >= Duration::from_millis(1900),
        "retried after {gap:?}, Retry-After said 2 s"
    );
    assert!(gap < Duration::from_millis(3500), "retried after {gap:?}");
    d.stop().await;
}

/// A 4xx other than 408/429 dead-letters at once, with the reason kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_dead_letter_at_once() {
    for status in [400u16, 410] {
        let rx = Scripted::start(vec![], r(status)).await;
        let (up, d) = emit_one(&rx.uri(), "    retry: [100ms, 100ms]\n").await;
        rx.wait_hits(1, T).await;
        up.wait_polls(3).await;
        assert_eq!(rx.hits().len(), 1, "HTTP {status} must not be retried");
        let dir = d.stop().await;
        let (pending, dead) = stored_rows(dir.path());
        assert!(pending.is_empty());
        assert_eq!(dead.len(), 1);
        assert!(
            dead[0]
                .dead_reason
                .as_deref()
                .unwrap_or("")
                .contains(&status.to_string()),
            "{:?}",
            dead[0].dead_reason
        );
    }
}

/// A 3xx is an answer, not a hop: the redirect target never sees the event, which dead-letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_never_followed() {
    let target = receiver(204).await;
    let rx = Scripted::start(
        vec![],
        r(307).header("location", &format!("{}/elsewhere", target.uri())),
    )
    .await;
    let (_up, d) = emit_one(&rx.uri(), "    retry: [100ms]\n").await;
    rx.wait_hits(1, T).await;
    let dir = d.stop().await;
    assert!(
        target
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty(),
        "redirect was followed"
    );
    let (_, dead) = stored_rows(dir.path());
    assert_eq!(dead.len(), 1);
}

/// Retries that run out dead-letter with the last error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_dead_letter() {
    let rx = Scripted::start(vec![], r(502)).await;
    let (_up, d) = emit_one(&rx.uri(), "    retry: [100ms, 100ms]\n").await;
    rx.wait_hits(3, T).await;
    let dir = d.stop().await;
    assert_eq!(rx.hits().len(), 3);
    let (pending, dead) = stored_rows(dir.path());
    assert!(pending.is_empty());
    let reason = dead[0].dead_reason.clone().unwrap_or_default();
    assert!(
        reason.contains("3 attempts") && reason.contains("502"),
        "{reason}"
    );
}

/// The next attempt time is stored on the outbox row, so a restart keeps the schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_time_is_stored_on_the_row() {
    let rx = Scripted::start(vec![], r(503)).await;
    let (_up, d) = emit_one(&rx.uri(), "    retry: [1h]\n").await;
    rx.wait_hits(1, T).await;
    let dir = d.stop().await;
    let (pending, _) = stored_rows(dir.path());
    assert_eq!(pending.len(), 1);
    let row = &pending[0];
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(row.attempts, 1);
    assert_eq!(row.last_error.as_deref(), Some("HTTP 503"));
    assert!(
        row.due_ms > now + 3_500_000,
        "due {} is not ~1 h ahead of {now}",
        row.due_ms
    );
}

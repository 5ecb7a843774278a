//! Recovery paths that must keep invariants 1 and 4: committed rows reach the dispatcher
//! whatever happens to the caller, a dead-letter retry never sends an older revision after a
//! newer one, and a held paginated source still has its changes to send when resumed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::helpers::script::{Scripted, r};
use crate::helpers::upstream::{Reply, Upstream};
use crate::helpers::{Daemon, admin, events, receiver, serve, simple_yaml, wait_until};
use pollhook::diff::ItemState;
use pollhook::extract::ContentHash;
use pollhook::store::{ItemWrite, NewEvent, PollCommit, SourceMeta};

const T: Duration = Duration::from_secs(10);

/// Event bodies a scripted receiver got, in arrival order.
fn bodies(rx: &Scripted) -> Vec<serde_json::Value> {
    rx.hits().iter().map(|h| h.body.clone()).collect()
}

fn commit(key: &str) -> PollCommit {
    PollCommit {
        source: "s".into(),
        meta: SourceMeta::default(),
        items: vec![ItemWrite {
            key: key.into(),
            state: ItemState {
                revision: 1,
                hash: ContentHash([1; 32]),
                version: None,
                deleted: false,
            },
            data: None,
        }],
        events: vec![NewEvent {
            id: format!("evt_{key}"),
            kind: "item.created",
            key: key.into(),
            revision: 1,
            body: Arc::from(&b"{}"[..]),
            deliveries: vec![pollhook::store::Delivery::envelope("d")],
        }],
        now_ms: 0,
        fence: 0,
    }
}

/// A poll whose commit future is dropped (a reload stopping its task) still has its rows handed
/// to the dispatcher by the writer once they are durable.
#[tokio::test]
async fn committed_rows_reach_the_dispatcher_when_the_caller_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let store = pollhook::store::open(&dir.path().join("s.redb"), Some(tx)).unwrap();
    let dropped = store.commit_poll(commit("a"));
    // Poll it once so the op is queued, then drop it, as a cancelled task would.
    let _ = tokio::time::timeout(Duration::from_millis(0), dropped).await;
    let rows = tokio::time::timeout(T, rx.recv())
        .await
        .expect("rows handed over within 10 s")
        .expect("sink open");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event_id, "evt_a");
    store.flush().await;
    assert_eq!(store.snapshot().await.unwrap().len(), 1);
    store.close().await;
}

/// `dead retry` of revision 1 after revision 2 of the same item was delivered leaves it dead as
/// superseded: the receiver never sees an older state after a newer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_retry_of_a_superseded_revision_is_refused() {
    let up = Upstream::start(&json!([{"id": 1, "v": 1}]).to_string()).await;
    let rx = Scripted::start(vec![r(400)], r(204)).await;
    let d = Daemon::start(&simple_yaml(
        &up.url,
        &rx.uri(),
        "    on_first_poll: emit\n",
    ));
    let dead_url = format!("{}/v1/dead", d.admin);
    wait_until(T, "revision 1 dead-lettered", || async {
        admin("GET", &dead_url, None).await.1["dead"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
    })
    .await;
    up.set(Reply::Json(json!([{"id": 1, "v": 2}]).to_string()));
    wait_until(T, "revision 2 delivered", || async {
        bodies(&rx).iter().any(|b| b["revision"] == 2)
    })
    .await;
    let (status, body) = admin("POST", &format!("{}/v1/dead/retry", d.admin), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["retried"], json!([]), "{body}");
    assert_eq!(body["superseded"][0]["revision"], 1, "{body}");
    assert_eq!(body["superseded"][0]["current"], 2, "{body}");
    // The dead letter stays inspectable.
    let (_, dead) = admin("GET", &dead_url, None).await;
    assert_eq!(dead["dead"].as_array().map(Vec::len), Some(1));
    tokio::time::sleep(Duration::from_millis(500)).await; // nothing may arrive: an absence
    let revs: Vec<_> = bodies(&rx).iter().map(|b| b["revision"].clone()).collect();
    assert_eq!(revs, vec![json!(1), json!(2)], "delivery order {revs:?}");
    d.stop().await;
}

/// An upstream with per-content ETags that honours If-None-Match.
#[derive(Clone, Default)]
struct Tagged {
    body: Arc<std::sync::Mutex<String>>,
    full: Arc<AtomicUsize>,
}

async fn tagged(State(t): State<Tagged>, headers: HeaderMap) -> Response {
    let body = t.body.lock().unwrap().clone();
    let etag = format!("\"{}\"", blake3::hash(body.as_bytes()).to_hex());
    if headers
        .get("if-none-match")
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return (StatusCode::NOT_MODIFIED, [("etag", etag)]).into_response();
    }
    t.full.fetch_add(1, Ordering::SeqCst);
    (
        [("etag", etag), ("content-type", "application/json".into())],
        body,
    )
        .into_response()
}

/// A paginated source held by the flood guard keeps its old page validators, so resuming it
/// fetches the pages again and sends the held changes (they used to be answered 304).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_paginated_source_resumes_with_its_changes() {
    let t = Tagged::default();
    *t.body.lock().unwrap() = json!([{"id": 1}]).to_string();
    let up = serve(
        Router::new()
            .route("/things", get(tagged))
            .with_state(t.clone()),
    )
    .await;
    let rx = receiver(204).await;
    let d = Daemon::start(&simple_yaml(
        &up,
        &rx.uri(),
        "    max_changes: 2\n    paginate: { link: next }\n",
    ));
    let url = format!("{}/v1/sources/things", d.admin);
    wait_until(T, "baseline and a 304", || async {
        admin("GET", &url, None).await.1["last_outcome"] == "not_modified"
    })
    .await;
    *t.body.lock().unwrap() = json!([{"id":1},{"id":2},{"id":3},{"id":4},{"id":5}]).to_string();
    wait_until(T, "held", || async {
        admin("GET", &url, None).await.1["paused"]
            .as_str()
            .is_some_and(|p| p.contains("max_changes"))
    })
    .await;
    let (status, _) = admin("POST", &format!("{url}/resume"), None).await;
    assert_eq!(status, 200);
    wait_until(T, "held changes sent after resume", || async {
        events(&rx).await.len() == 4
    })
    .await;
    d.stop().await;
}

/// The reconcile finds committed rows the dispatcher never got (here: a store without a sink),
/// queues them, and finds nothing more the second time.
#[tokio::test]
async fn reconcile_queues_stranded_rows_once() {
    use pollhook::delivery::{DispatchCmd, Dispatcher, settle_loop};
    let dir = tempfile::tempdir().unwrap();
    let store = pollhook::store::open(&dir.path().join("s.redb"), None).unwrap();
    store.commit_poll(commit("a")).await.unwrap();
    store.commit_poll(commit("b")).await.unwrap();
    let config = crate::helpers::config_in(
        dir.path(),
        "destinations:\n  d:\n    url: http://127.0.0.1:9/hook\n    secret: ${SECRET}\n    retry: [1h]\nsources:\n  s:\n    url: http://127.0.0.1:9/x\n    every: 1h\n    key: /id\n    to: [d]\n",
    );
    let dests: Vec<_> = config.destinations.values().cloned().collect();
    let (settle_tx, settle_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(settle_loop(store.clone(), settle_rx));
    let parts = pollhook::delivery::Parts {
        store: store.clone(),
        client: pollhook::http::destination_client().unwrap(),
        settle_tx,
        jq_exe: crate::helpers::binary(),
        registry: Default::default(),
    };
    let dispatcher = Dispatcher::new(&dests, parts);
    let (_rows_tx, mut rows_rx) = tokio::sync::mpsc::unbounded_channel();
    let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        dispatcher
            .run(&mut rows_rx, &mut cmd_rx, token, Duration::from_secs(1))
            .await
    });
    let reconcile = || async {
        let (tx, rx) = tokio::sync::oneshot::channel();
        cmd_tx.send(DispatchCmd::Reconcile(tx)).unwrap();
        tokio::time::timeout(T, rx).await.unwrap().unwrap()
    };
    assert_eq!(reconcile().await, 2, "both stranded rows found");
    assert_eq!(reconcile().await, 0, "and queued: nothing left to fix");
    let (tx, rx) = tokio::sync::oneshot::channel();
    cmd_tx.send(DispatchCmd::Stats(tx)).unwrap();
    assert_eq!(rx.await.unwrap()[0].pending, 2);
    stop.cancel();
    task.await.unwrap();
}

/// A state stored under the legacy (Debug-text) settings fingerprint by an older release is
/// recognised: upgrading does not re-baseline, so a change made meanwhile is still sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_settings_fingerprint_does_not_rebaseline() {
    let up = Upstream::start(&json!([{"id": 1, "v": 1}]).to_string()).await;
    let rx = receiver(204).await;
    let yaml = simple_yaml(&up.url, &rx.uri(), "");
    let d = Daemon::start(&yaml);
    up.wait_polls(2).await;
    let dir = d.stop().await;
    {
        let config = crate::helpers::config_in(dir.path(), &yaml);
        let legacy =
            pollhook::poller::process::legacy_settings_fingerprint(&config.sources["things"]);
        let backend = crate::helpers::open_store(dir.path());
        let store = pollhook::store::Store::start(std::sync::Arc::from(backend), None);
        let mut meta = store.backend().load_source("things").unwrap().meta;
        assert!(meta.initialized);
        meta.fingerprint = Some(legacy);
        store.set_meta("things", meta).await.unwrap();
        store.close().await;
    }
    up.set(Reply::Json(json!([{"id": 1, "v": 2}]).to_string()));
    let d = Daemon::start_in(dir, &yaml);
    wait_until(
        T,
        "the change sent, not swallowed by a re-baseline",
        || async {
            events(&rx)
                .await
                .iter()
                .any(|e| e["type"] == "item.updated")
        },
    )
    .await;
    d.stop().await;
}

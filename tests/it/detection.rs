//! Change detection end to end: upstream → daemon → receiver.

use std::time::Duration;

use serde_json::json;

use crate::helpers::upstream::{Reply, Upstream};
use crate::helpers::{Daemon, events, posts, receiver, simple_yaml, wait_until};

const T: Duration = Duration::from_secs(10);

fn body(items: serde_json::Value) -> Reply {
    Reply::Json(items.to_string())
}

/// One changed item upstream produces exactly one item.updated event, and unchanged polls none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_change_produces_exactly_one_event() {
    let up = Upstream::start(&json!([{"id":1,"s":"open"},{"id":2,"s":"open"}]).to_string()).await;
    let rx = receiver(204).await;
    let d = Daemon::start(&simple_yaml(&up.url, &rx.uri(), ""));
    up.wait_polls(3).await;
    assert!(posts(&rx).await.is_empty(), "baseline emits nothing");
    up.set(body(json!([{"id":1,"s":"closed"},{"id":2,"s":"open"}])));
    wait_until(T, "one event", || async { !posts(&rx).await.is_empty() }).await;
    up.wait_polls(5).await;
    let evs = events(&rx).await;
    assert_eq!(evs.len(), 1, "exactly one event: {evs:?}");
    assert_eq!(evs[0]["type"], "item.updated");
    assert_eq!(evs[0]["key"], "1");
    assert_eq!(evs[0]["revision"], 2);
    assert_eq!(evs[0]["data"], json!({"id":1,"s":"closed"}));
    d.stop().await;
}

/// A change only in an ignored field produces no event; a real change afterwards does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_field_changes_emit_nothing() {
    let up = Upstream::start(&json!([{"id":1,"s":"open","seen":1}]).to_string()).await;
    let rx = receiver(204).await;
    let d = Daemon::start(&simple_yaml(&up.url, &rx.uri(), "    ignore: [/seen]\n"));
    up.wait_polls(2).await;
    up.set(body(json!([{"id":1,"s":"open","seen":2}])));
    up.wait_polls(4).await;
    assert!(
        posts(&rx).await.is_empty(),
        "ignored field change emitted an event"
    );
    up.set(body(json!([{"id":1,"s":"done","seen":3}])));
    wait_until(T, "real change delivered", || async {
        posts(&rx).await.len() == 1
    })
    .await;
    d.stop().await;
}

/// Created, deleted and re-created items get their own events with growing revisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_deleted_and_recreated_items() {
    let up = Upstream::start(&json!([{"id":"a"}]).to_string()).await;
    let rx = receiver(204).await;
    let d = Daemon::start(&simple_yaml(&up.url, &rx.uri(), ""));
    up.wait_polls(2).await;
    up.set(body(json!([{"id":"a"},{"id":"b"}])));
    wait_until(T, "created", || async { posts(&rx).await.len() == 1 }).await;
    up.set(body(json!([{"id":"a"}])));
    wait_until(T, "deleted", || async { posts(&rx).await.len() == 2 }).await;
    up.set(body(json!([{"id":"a"},{"id":"b"}])));
    wait_until(T, "re-created", || async { posts(&rx).await.len() == 3 }).await;
    let evs = events(&rx).await;
    let seen: Vec<(String, u64)> = evs
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["revision"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("item.created".into(), 1),
            ("item.deleted".into(), 2),
            ("item.created".into(), 3)
        ]
    );
    assert_eq!(
        evs[1]["data"],
        json!({"id":"b"}),
        "deleted carries the last known item"
    );
    assert_ne!(
        evs[0]["id"], evs[2]["id"],
        "a re-created item gets a new event id"
    );
    d.stop().await;
}

/// After a restart a source holds only hashes of its items in memory: an item deleted upstream
/// meanwhile is still named, carries its last stored data and the next revision, and the items
/// left are not re-sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_after_a_restart_is_named_from_the_store() {
    let up = Upstream::start(&json!([{"id":"a"},{"id":"b","n":1}]).to_string()).await;
    let rx = receiver(204).await;
    let yaml = simple_yaml(&up.url, &rx.uri(), "");
    let d = Daemon::start(&yaml);
    up.wait_polls(2).await;
    let dir = d.stop().await;
    up.set(body(json!([{"id":"a"}])));
    let d = Daemon::start_in(dir, &yaml);
    wait_until(T, "deleted", || async { posts(&rx).await.len() == 1 }).await;
    up.wait_polls(2).await;
    let evs = events(&rx).await;
    assert_eq!(evs.len(), 1, "only the deletion: {evs:?}");
    assert_eq!(evs[0]["type"], "item.deleted");
    assert_eq!(evs[0]["key"], "b");
    assert_eq!(evs[0]["revision"], 2);
    assert_eq!(evs[0]["data"], json!({"id":"b","n":1}));
    d.stop().await;
}

/// `on_first_poll: emit` sends every item as created; `include` adds previous and a JSON Patch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_poll_emit_and_payload_includes() {
    let up = Upstream::start(&json!([{"id":1,"s":"open"}]).to_string()).await;
    let rx = receiver(204).await;
    let extra = "    on_first_poll: emit\n    include: { previous: true, changes: true }\n";
    let d = Daemon::start(&simple_yaml(&up.url, &rx.uri(), extra));
    wait_until(T, "created on first poll", || async {
        posts(&rx).await.len() == 1
    })
    .await;
    up.set(body(json!([{"id":1,"s":"closed"}])));
    wait_until(T, "update", || async { posts(&rx).await.len() == 2 }).await;
    let evs = events(&rx).await;
    assert_eq!(evs[0]["type"], "item.created");
    assert!(evs[0].get("previous").is_none());
    assert_eq!(evs[1]["previous"], json!({"id":1,"s":"open"}));
    assert_eq!(
        evs[1]["changes"],
        json!([{"op":"replace","path":"/s","value":"closed"}])
    );
    d.stop().await;
}

/// Document mode: the whole body is one item; any change is one document.changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_mode_emits_document_changed() {
    let up = Upstream::start(&json!({"price": 10, "ts": 1}).to_string()).await;
    let rx = receiver(204).await;
    let yaml = simple_yaml(&up.url, &rx.uri(), "")
        .replace("    key: /id\n", "    mode: document\n    ignore: [/ts]\n");
    let d = Daemon::start(&yaml);
    up.wait_polls(2).await;
    up.set(body(json!({"price": 10, "ts": 2})));
    up.wait_polls(3).await;
    up.set(body(json!({"price": 12, "ts": 3})));
    wait_until(T, "document change", || async {
        !posts(&rx).await.is_empty()
    })
    .await;
    up.wait_polls(3).await;
    let evs = events(&rx).await;
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["type"], "document.changed");
    assert_eq!(evs[0]["key"], "");
    assert_eq!(evs[0]["data"]["price"], 12);
    d.stop().await;
}

/// The `emit` filter drops unwanted change kinds but still records them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_filter_limits_event_types() {
    let up = Upstream::start(&json!([{"id":1}]).to_string()).await;
    let rx = receiver(204).await;
    let d = Daemon::start(&simple_yaml(&up.url, &rx.uri(), "    emit: [deleted]\n"));
    up.wait_polls(2).await;
    up.set(body(json!([{"id":1,"x":1},{"id":2}])));
    up.wait_polls(3).await;
    up.set(body(json!([{"id":2}])));
    wait_until(T, "deletion", || async { posts(&rx).await.len() == 1 }).await;
    let evs = events(&rx).await;
    assert_eq!(evs[0]["type"], "item.deleted");
    assert_eq!(
        evs[0]["revision"], 3,
        "the silent update still advanced the revision"
    );
    d.stop().await;
}

/// An item whose bytes return to an earlier version is still a change (the raw-bytes index
/// only ever stands for the stored content).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverting_to_earlier_bytes_is_a_change() {
    let v1 = json!([{"id":1,"s":"open"},{"id":2}]);
    let v2 = json!([{"id":1,"s":"closed"},{"id":2}]);
    let up = Upstream::start(&v1.to_string()).await;
    let rx = receiver(204).await;
    let d = Daemon::start(&simple_yaml(&up.url, &rx.uri(), ""));
    up.wait_polls(2).await;
    up.set(body(v2));
    wait_until(T, "first change", || async { posts(&rx).await.len() == 1 }).await;
    up.set(body(v1));
    wait_until(T, "revert", || async { posts(&rx).await.len() == 2 }).await;
    let evs = events(&rx).await;
    assert_eq!(evs[1]["data"]["s"], "open");
    assert_eq!(evs[1]["revision"], 3);
    d.stop().await;
}

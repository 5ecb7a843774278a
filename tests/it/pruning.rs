//! Retention: tombstones older than `tombstone_ttl` and the state of sources removed from the
//! config for longer than that are pruned; a key re-created after its tombstone was pruned still
//! gets a revision (and so an event id) it never had.

use std::time::Duration;

use serde_json::json;

use crate::helpers::upstream::{Reply, Upstream};
use crate::helpers::{Daemon, admin, events, open_store, receiver, simple_yaml, wait_until};

const T: Duration = Duration::from_secs(15);

fn with_ttl(yaml: &str) -> String {
    format!("tombstone_ttl: 1s\n{yaml}")
}

async fn pruned(d: &Daemon, what: &str) {
    let url = format!("{}/metrics", d.admin);
    // On a shared store every metric also carries `instance`.
    let label = format!("what=\"{what}\"");
    wait_until(T, &format!("{what} pruned"), || async {
        let (_, text) = admin("GET", &url, None).await;
        text.as_str().is_some_and(|t| {
            t.lines()
                .any(|l| l.starts_with("pollhook_pruned_total{") && l.contains(&label))
        })
    })
    .await;
}

/// A tombstone past the TTL is deleted and its revision becomes the source's floor: after a
/// restart the re-created key starts above it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tombstones_are_pruned_above_a_floor() {
    let up = Upstream::start(&json!([{"id": 1}, {"id": 2}]).to_string()).await;
    let rx = receiver(204).await;
    let yaml = with_ttl(&simple_yaml(&up.url, &rx.uri(), ""));
    let d = Daemon::start(&yaml);
    up.wait_polls(2).await;
    up.set(Reply::Json(json!([{"id": 1}]).to_string()));
    wait_until(T, "deletion sent", || async {
        events(&rx)
            .await
            .iter()
            .any(|e| e["type"] == "item.deleted")
    })
    .await;
    pruned(&d, "tombstone").await;
    let dir = d.stop().await;
    {
        let backend = open_store(dir.path());
        let snap = backend.load_source("things").unwrap();
        assert!(!snap.items.contains_key("2"), "tombstone kept");
        assert_eq!(snap.revision_floor, 2);
    }
    up.set(Reply::Json(json!([{"id": 1}, {"id": 2}]).to_string()));
    let d = Daemon::start_in(dir, &yaml);
    wait_until(T, "re-creation sent", || async {
        events(&rx)
            .await
            .iter()
            .any(|e| e["type"] == "item.created")
    })
    .await;
    let created = events(&rx)
        .await
        .into_iter()
        .find(|e| e["type"] == "item.created")
        .unwrap();
    assert_eq!(created["revision"], 3, "{created}");
    d.stop().await;
}

/// A source removed from the config keeps its state for the TTL, then loses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_sources_are_pruned_after_the_ttl() {
    let up = Upstream::start(&json!([{"id": 1}]).to_string()).await;
    let rx = receiver(204).await;
    let base = simple_yaml(&up.url, &rx.uri(), "");
    let two = format!(
        "{base}  gone:\n    url: {}/things\n    every: 100ms\n    key: /id\n    to: [agent]\n",
        up.url
    );
    let d = Daemon::start(&with_ttl(&two));
    up.wait_polls(4).await;
    d.write_config(&with_ttl(&base));
    let (status, body) = admin("POST", &format!("{}/v1/reload", d.admin), None).await;
    assert_eq!(status, 200, "{body}");
    pruned(&d, "source").await;
    let dir = d.stop().await;
    let backend = open_store(dir.path());
    assert!(!backend.load_source("gone").unwrap().meta.initialized);
    assert!(backend.load_source("things").unwrap().meta.initialized);
}

//! The flood guard: a poll with more events than `max_changes`, or deleting more than half of a
//! source's items, pauses the source with the reason; resume emits the changes, `--discard`
//! records them without events.

use std::time::Duration;

use serde_json::json;

use crate::helpers::upstream::{Reply, Upstream};
use crate::helpers::{Daemon, admin, events, posts, receiver, simple_yaml, wait_until};

const T: Duration = Duration::from_secs(10);

async fn held(d: &Daemon, needle: &str) {
    let url = format!("{}/v1/sources/things", d.admin);
    wait_until(T, needle, || async {
        admin("GET", &url, None).await.1["paused"]
            .as_str()
            .unwrap_or("")
            .contains(needle)
    })
    .await;
}

/// More events than max_changes: held, visible, nothing sent; resume sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_changes_are_held_until_resume() {
    let up = Upstream::start(&json!([{"id":1}]).to_string()).await;
    let rx = receiver(204).await;
    let d = Daemon::start(&simple_yaml(&up.url, &rx.uri(), "    max_changes: 2\n"));
    up.wait_polls(2).await;
    up.set(Reply::Json(
        json!([{"id":1},{"id":2},{"id":3},{"id":4},{"id":5}]).to_string(),
    ));
    held(&d, "4 changes exceed max_changes (2)").await;
    let (_, s) = admin("GET", &format!("{}/v1/sources/things", d.admin), None).await;
    assert_eq!(s["last_outcome"], "held");
    assert!(posts(&rx).await.is_empty(), "held changes were sent");
    assert_eq!(
        admin(
            "POST",
            &format!("{}/v1/sources/things/resume", d.admin),
            None
        )
        .await
        .0,
        200
    );
    wait_until(T, "held changes emitted", || async {
        events(&rx).await.len() == 4
    })
    .await;
    let (_, s) = admin("GET", &format!("{}/v1/sources/things", d.admin), None).await;
    assert!(s["paused"].is_null());
    up.set(Reply::Json(
        json!([{"id":1},{"id":2},{"id":3},{"id":4},{"id":5},{"id":6},{"id":7},{"id":8}])
            .to_string(),
    ));
    held(&d, "3 changes exceed").await; // the pass was used once; the guard is back
    d.stop().await;
}

/// Deleting more than half of the items is held; resume --discard re-baselines without events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mass_deletion_is_held_and_discard_rebaselines() {
    let up = Upstream::start(&json!([{"id":1},{"id":2},{"id":3},{"id":4}]).to_string()).await;
    let rx = receiver(204).await;
    let d = Daemon::start(&simple_yaml(&up.url, &rx.uri(), ""));
    up.wait_polls(2).await;
    up.set(Reply::Json(json!([{"id":1}]).to_string()));
    held(&d, "3 of 4 items would be deleted").await;
    let (status, _) = admin(
        "POST",
        &format!("{}/v1/sources/things/resume?discard=true", d.admin),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let url = format!("{}/v1/sources/things", d.admin);
    wait_until(T, "re-baselined", || async {
        admin("GET", &url, None).await.1["items"] == 1
    })
    .await;
    assert!(posts(&rx).await.is_empty(), "discarded changes were sent");
    up.set(Reply::Json(json!([{"id":1,"x":1}]).to_string()));
    wait_until(T, "the next real change", || async {
        events(&rx).await.len() == 1
    })
    .await;
    assert_eq!(events(&rx).await[0]["type"], "item.updated");
    d.stop().await;
}

//! Live reload through `POST /v1/reload` (SIGHUP runs the same code; `ops.rs` sends a real one):
//! new sources start, removed ones stop with their state kept, changed schedules and
//! destinations apply, and an invalid file leaves the old config running.

use std::time::Duration;

use serde_json::json;

use crate::helpers::script::{Scripted, r};
use crate::helpers::upstream::{Reply, Upstream};
use crate::helpers::{Daemon, admin, posts, receiver, simple_yaml, wait_until};

const T: Duration = Duration::from_secs(10);

fn second_source(url: &str, every: &str) -> String {
    format!(
        "  other:\n    url: {url}/things\n    every: {every}\n    jitter: 0%\n    key: /id\n    to: [agent]\n"
    )
}

/// A valid reload starts a new source, changes a schedule, and stops a removed source whose
/// state is kept (it does not re-emit when it comes back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_changes_and_removes_sources() {
    let up = Upstream::start(&json!([{"id":1}]).to_string()).await;
    let up2 = Upstream::start(&json!([{"id":"a"}]).to_string()).await;
    let rx = receiver(204).await;
    let base = simple_yaml(&up.url, &rx.uri(), "");
    let d = Daemon::start(&base.replace("every: 100ms", "every: 1h"));
    let reload = format!("{}/v1/reload", d.admin);
    wait_until(T, "admin up", || async {
        admin("GET", &format!("{}/readyz", d.admin), None).await.0 == 200
    })
    .await;
    d.write_config(&format!("{base}{}", second_source(&up2.url, "100ms")));
    let (status, body) = admin("POST", &reload, None).await;
    assert_eq!(status, 200, "{body}");
    up.wait_polls(3).await; // the 1h schedule became 100ms
    up2.wait_polls(2).await; // the new source runs
    d.write_config(&base);
    assert_eq!(admin("POST", &reload, None).await.0, 200);
    assert_eq!(
        admin("GET", &format!("{}/v1/sources/other", d.admin), None)
            .await
            .0,
        404
    );
    let stopped = up2.hits();
    up.wait_polls(3).await;
    assert!(up2.hits() <= stopped + 1, "a removed source kept polling");
    d.write_config(&format!("{base}{}", second_source(&up2.url, "100ms")));
    assert_eq!(admin("POST", &reload, None).await.0, 200);
    up2.wait_polls(3).await;
    assert!(
        posts(&rx).await.is_empty(),
        "a returning source re-emitted its baseline"
    );
    d.stop().await;
}

/// An invalid file is rejected with every problem; the old config keeps running and `/readyz`
/// shows why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_reload_keeps_the_old_config() {
    let up = Upstream::start(&json!([{"id":1}]).to_string()).await;
    let rx = receiver(204).await;
    let base = simple_yaml(&up.url, &rx.uri(), "");
    let d = Daemon::start(&base);
    up.wait_polls(1).await;
    d.write_config(
        &base
            .replace("every: 100ms", "every: soon")
            .replace("to: [agent]", "to: [nobody]"),
    );
    let (status, body) = admin("POST", &format!("{}/v1/reload", d.admin), None).await;
    assert_eq!(status, 422);
    let errors = body["errors"].to_string();
    assert!(
        errors.contains("sources.things.every") && errors.contains("sources.things.to"),
        "{body}"
    );
    let (ready, readyz) = admin("GET", &format!("{}/readyz", d.admin), None).await;
    assert_eq!(ready, 200);
    assert!(
        readyz["reload_errors"]
            .to_string()
            .contains("sources.things.every"),
        "{readyz}"
    );
    up.wait_polls(3).await; // still polling on the old config
    d.write_config(&base);
    assert_eq!(
        admin("POST", &format!("{}/v1/reload", d.admin), None)
            .await
            .0,
        200
    );
    assert_eq!(
        admin("GET", &format!("{}/readyz", d.admin), None).await.1["reload_errors"],
        json!([])
    );
    d.stop().await;
}

/// A changed destination applies to events not yet sent; pending rows are never dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_destination_applies_to_pending_events() {
    let up = Upstream::start(&json!([{"id":1}]).to_string()).await;
    let old = Scripted::start(vec![], r(503)).await;
    let new = Scripted::start(vec![], r(204)).await;
    let extra = "    on_first_poll: emit\n";
    let yaml = simple_yaml(&up.url, &old.uri(), extra).replace(
        "retry: [200ms, 200ms, 200ms]",
        "retry: [300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms]",
    );
    let d = Daemon::start(&yaml);
    old.wait_hits(1, T).await;
    d.write_config(&yaml.replace(&old.uri(), &new.uri()));
    assert_eq!(
        admin("POST", &format!("{}/v1/reload", d.admin), None)
            .await
            .0,
        200
    );
    new.wait_hits(1, T).await;
    assert_eq!(
        new.hits()[0].id,
        old.hits()[0].id,
        "the same pending event went to the new URL"
    );
    up.set(Reply::Json(json!([{"id":1,"x":2}]).to_string()));
    new.wait_hits(2, T).await;
    d.stop().await;
}

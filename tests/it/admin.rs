//! The admin API of a running daemon: token, sources, pause/resume/poll, outbox, dead letters,
//! metrics.

use std::time::Duration;

use serde_json::json;

use crate::helpers::script::{Scripted, r};
use crate::helpers::upstream::{Reply, Upstream};
use crate::helpers::{Daemon, admin, receiver, simple_yaml, wait_until};

const T: Duration = Duration::from_secs(10);

/// `/v1` needs the bearer token when one is set; health and metrics do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_routes_require_the_token_when_set() {
    let up = Upstream::start("[]").await;
    let rx = receiver(204).await;
    let yaml = simple_yaml(&up.url, &rx.uri(), "").replace(
        "admin:\n  listen: off\n",
        "admin:\n  listen: off\n  token: s3cr3t-token\n",
    );
    let d = Daemon::start(&yaml);
    wait_until(T, "ready", || async {
        admin("GET", &format!("{}/readyz", d.admin), None).await.0 == 200
    })
    .await;
    assert_eq!(
        admin("GET", &format!("{}/healthz", d.admin), None).await.0,
        200
    );
    assert_eq!(
        admin("GET", &format!("{}/metrics", d.admin), None).await.0,
        200
    );
    for path in ["/v1/sources", "/v1/outbox", "/v1/dead"] {
        let url = format!("{}{path}", d.admin);
        assert_eq!(
            admin("GET", &url, None).await.0,
            401,
            "{path} without token"
        );
        assert_eq!(
            admin("GET", &url, Some("wrong")).await.0,
            401,
            "{path} with a wrong token"
        );
        assert_eq!(
            admin("GET", &url, Some("s3cr3t-token")).await.0,
            200,
            "{path} with the token"
        );
    }
    let (_, body) = admin(
        "GET",
        &format!("{}/v1/sources", d.admin),
        Some("s3cr3t-token"),
    )
    .await;
    assert!(
        !body.to_string().contains("s3cr3t"),
        "the token leaked into the API"
    );
    d.stop().await;
}

/// `/v1/sources` shows each source's last poll, outcome and error; unknown names are 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_show_last_poll_and_error() {
    let up = Upstream::start("[]").await;
    up.set(Reply::Status(500));
    let rx = receiver(204).await;
    let d = Daemon::start(&simple_yaml(&up.url, &rx.uri(), ""));
    let url = format!("{}/v1/sources/things", d.admin);
    wait_until(T, "a failed poll reported", || async {
        admin("GET", &url, None).await.1["consecutive_failures"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    })
    .await;
    let (_, s) = admin("GET", &url, None).await;
    assert_eq!(s["last_outcome"], "failed");
    assert!(
        s["last_error"].as_str().unwrap().contains("HTTP 500"),
        "{s}"
    );
    assert!(s["next_poll"].is_string() && s["last_poll"].is_string());
    up.set(Reply::Json(json!([{"id":1}]).to_string()));
    wait_until(T, "recovered", || async {
        admin("GET", &url, None).await.1["consecutive_failures"] == 0
    })
    .await;
    assert_eq!(admin("GET", &url, None).await.1["items"], 1);
    assert_eq!(
        admin("GET", &format!("{}/v1/sources/nope", d.admin), None)
            .await
            .0,
        404
    );
    let (_, all) = admin("GET", &format!("{}/v1/sources", d.admin), None).await;
    assert_eq!(all["sources"][0]["name"], "things");
    d.stop().await;
}

/// Pause stops scheduled polls (and survives a restart); poll runs one anyway; resume restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_poll_and_resume() {
    let up = Upstream::start(&json!([{"id":1}]).to_string()).await;
    let rx = receiver(204).await;
    let yaml = simple_yaml(&up.url, &rx.uri(), "");
    let d = Daemon::start(&yaml);
    up.wait_polls(2).await;
    let (status, body) = admin(
        "POST",
        &format!("{}/v1/sources/things/pause", d.admin),
        None,
    )
    .await;
    assert_eq!((status, body["result"].as_str()), (200, Some("pause")));
    let dir = d.stop().await;
    let d = Daemon::start_in(dir, &yaml);
    let url = format!("{}/v1/sources/things", d.admin);
    wait_until(T, "status after restart", || async {
        admin("GET", &url, None).await.0 == 200
    })
    .await;
    assert_eq!(
        admin("GET", &url, None).await.1["paused"],
        "paused by operator",
        "pause survives a restart"
    );
    let before = up.hits();
    // Ten intervals with no poll: the absence of requests is what is measured here.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(up.hits(), before, "a paused source was polled");
    let (status, body) = admin("POST", &format!("{}/v1/sources/things/poll", d.admin), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"], "unchanged");
    assert_eq!(
        up.hits(),
        before + 1,
        "poll runs exactly one poll, even when paused"
    );
    admin(
        "POST",
        &format!("{}/v1/sources/things/resume", d.admin),
        None,
    )
    .await;
    up.wait_polls(2).await;
    assert_eq!(
        admin("POST", &format!("{}/v1/sources/things/jump", d.admin), None)
            .await
            .0,
        404
    );
    d.stop().await;
}

/// Dead letters can be listed, re-sent (same event id) one by one or all, and purged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_list_retry_and_purge() {
    let up = Upstream::start(&json!([{"id":1},{"id":2}]).to_string()).await;
    let rx = Scripted::start(vec![r(400), r(400)], r(204)).await;
    let d = Daemon::start(&simple_yaml(
        &up.url,
        &rx.uri(),
        "    on_first_poll: emit\n",
    ));
    let dead_url = format!("{}/v1/dead", d.admin);
    wait_until(T, "two dead letters", || async {
        admin("GET", &dead_url, None).await.1["dead"]
            .as_array()
            .map_or(0, Vec::len)
            == 2
    })
    .await;
    let (_, dead) = admin("GET", &dead_url, None).await;
    let first = &dead["dead"][0];
    assert!(first["reason"].as_str().unwrap().contains("400"), "{first}");
    let id = first["id"].as_u64().unwrap();
    let (status, _) = admin("POST", &format!("{dead_url}/{id}/retry"), None).await;
    assert_eq!(status, 200);
    rx.wait_hits(3, T).await;
    let hits = rx.hits();
    assert_eq!(hits[2].status, 204);
    assert_eq!(
        hits[2].id,
        first["event_id"].as_str().unwrap(),
        "a re-sent dead letter keeps its event id"
    );
    assert_eq!(
        admin("POST", &format!("{dead_url}/999999/retry"), None)
            .await
            .0,
        404
    );
    let (_, purged) = admin("DELETE", &dead_url, None).await;
    assert_eq!(purged["purged"], 1);
    assert_eq!(admin("GET", &dead_url, None).await.1["dead"], json!([]));
    d.stop().await;
}

/// `/v1/outbox` reports pending rows and the oldest age per destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_reports_depth_per_destination() {
    let up = Upstream::start(&json!([{"id":1},{"id":2}]).to_string()).await;
    let rx = receiver(503).await;
    let yaml = simple_yaml(&up.url, &rx.uri(), "    on_first_poll: emit\n")
        .replace("retry: [200ms, 200ms, 200ms]", "retry: [1h]");
    let d = Daemon::start(&yaml);
    let url = format!("{}/v1/outbox", d.admin);
    wait_until(T, "two pending rows", || async {
        admin("GET", &url, None).await.1["depth"] == 2
    })
    .await;
    let (_, outbox) = admin("GET", &url, None).await;
    assert_eq!(outbox["destinations"][0]["destination"], "agent");
    assert_eq!(outbox["destinations"][0]["pending"], 2);
    assert!(outbox["oldest_pending_age_seconds"].as_f64().unwrap() >= 0.0);
    d.stop().await;
}

/// `pollhook_changes_total` counts the changes sent as events: a silent baseline's items are
/// recorded, not reported, so they are not counted (a restart with new settings would otherwise
/// show every item of every source as a burst of changes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_baseline_counts_no_changes() {
    let up = Upstream::start(&json!([{"id":1},{"id":2},{"id":3}]).to_string()).await;
    let rx = Scripted::start(vec![], r(204)).await;
    let d = Daemon::start(&simple_yaml(&up.url, &rx.uri(), ""));
    up.wait_polls(2).await;
    up.set(Reply::Json(
        json!([{"id":1},{"id":2},{"id":3},{"id":4}]).to_string(),
    ));
    rx.wait_hits(1, T).await;
    let url = format!("{}/metrics", d.admin);
    let created = "pollhook_changes_total{source=\"things\",type=\"created\"}";
    let metrics = || async {
        admin("GET", &url, None)
            .await
            .1
            .as_str()
            .unwrap()
            .to_owned()
    };
    // The event can reach the receiver before the poll that sent it has counted it.
    wait_until(T, "the change counted", || async {
        metrics().await.contains(created)
    })
    .await;
    up.wait_polls(up.hits() + 2).await;
    let text = metrics().await;
    let line = text.lines().find(|l| l.starts_with(created));
    assert_eq!(line, Some(format!("{created} 1").as_str()), "in:\n{text}");
    d.stop().await;
}

/// `/metrics` is Prometheus text with polls, changes, deliveries, outbox, schedule lag and build
/// info, and no URL in any label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_polls_changes_and_deliveries() {
    let up = Upstream::start(&json!([{"id":1}]).to_string()).await;
    let rx = Scripted::start(vec![], r(204)).await;
    let d = Daemon::start(&simple_yaml(
        &up.url,
        &rx.uri(),
        "    on_first_poll: emit\n",
    ));
    rx.wait_hits(1, T).await;
    up.wait_polls(2).await;
    let url = format!("{}/metrics", d.admin);
    wait_until(T, "delivery counted", || async {
        admin("GET", &url, None)
            .await
            .1
            .as_str()
            .unwrap_or("")
            .contains("outcome=\"delivered\"")
    })
    .await;
    let (_, text) = admin("GET", &url, None).await;
    let text = text.as_str().unwrap().to_owned();
    for needle in [
        "pollhook_build_info{version=",
        "pollhook_polls_total{source=\"things\",outcome=\"changed\"}",
        "pollhook_polls_total{source=\"things\",outcome=\"unchanged\"}",
        "pollhook_changes_total{source=\"things\",type=\"created\"}",
        "pollhook_deliveries_total{destination=\"agent\",outcome=\"delivered\"}",
        "pollhook_delivery_latency_seconds_bucket{destination=\"agent\"",
        "pollhook_poll_duration_seconds_bucket{le=",
        "pollhook_schedule_lag_seconds_bucket{le=",
        "pollhook_outbox_depth{destination=\"agent\"}",
        "pollhook_dead_letters{destination=\"agent\"}",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    let port = up.url.rsplit(':').next().unwrap();
    assert!(
        !text.contains("127.0.0.1") && !text.contains(port),
        "a URL leaked into metrics"
    );
    assert!(!text.contains("evt_"), "an event id leaked into metrics");
    d.stop().await;
}

/// `dead_letter_max_age` purges older dead letters (housekeeping runs at start, then hourly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_dead_letters_are_purged() {
    let up = Upstream::start(&json!([{"id":1}]).to_string()).await;
    let rx = receiver(400).await;
    let yaml = simple_yaml(&up.url, &rx.uri(), "    on_first_poll: emit\n");
    let d = Daemon::start(&yaml);
    let dead = format!("{}/v1/dead", d.admin);
    wait_until(T, "a dead letter", || async {
        admin("GET", &dead, None).await.1["dead"]
            .as_array()
            .map_or(0, Vec::len)
            == 1
    })
    .await;
    let dir = d.stop().await;
    let d = Daemon::start_in(
        dir,
        &yaml.replace(
            "state: ./state.redb",
            "state: ./state.redb\ndead_letter_max_age: 1ms",
        ),
    );
    let dead = format!("{}/v1/dead", d.admin);
    wait_until(T, "expired dead letter purged", || async {
        admin("GET", &dead, None).await.1["dead"] == json!([])
    })
    .await;
    d.stop().await;
}

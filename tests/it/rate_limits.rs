//! Rate limits: a source's own budget, a host budget shared by its sources, and the upstream's
//! signals pausing every source of the host. The windows below measure the absence of requests,
//! which is the behaviour under test.

use std::time::Duration;

use serde_json::json;

use crate::helpers::upstream::{Reply, Upstream};
use crate::helpers::{Daemon, admin, receiver, serve, simple_yaml, wait_until};

fn extra_source(name: &str, url: &str) -> String {
    format!(
        "  {name}:\n    url: {url}/things\n    every: 100ms\n    jitter: 0%\n    key: /id\n    to: [agent]\n"
    )
}

/// `rate: 2/1s` holds a 100 ms source to its budget (a burst of 2, then one every 500 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_rate_caps_requests() {
    let up = Upstream::start(&json!([{"id":1}]).to_string()).await;
    let rx = receiver(204).await;
    let d = Daemon::start(&simple_yaml(&up.url, &rx.uri(), "    rate: 2/1s\n"));
    up.wait_polls(1).await;
    let start = up.hits();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = up.hits() - start;
    assert!(
        (2..=6).contains(&sent),
        "{sent} requests in 2 s under a 2/1s budget"
    );
    d.stop().await;
}

/// A host's budget is shared by every source on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_budget_is_shared_by_its_sources() {
    let up = Upstream::start(&json!([{"id":1}]).to_string()).await;
    let rx = receiver(204).await;
    let host = up.url.trim_start_matches("http://").to_owned();
    let yaml = format!(
        "hosts:\n  \"{host}\":\n    rate: 3/1s\n    concurrency: 1\n{}{}{}",
        simple_yaml(&up.url, &rx.uri(), ""),
        extra_source("b", &up.url),
        extra_source("c", &up.url)
    );
    let d = Daemon::start(&yaml);
    up.wait_polls(1).await;
    let start = up.hits();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = up.hits() - start;
    assert!(
        (3..=9).contains(&sent),
        "{sent} requests in 2 s from 3 sources under a shared 3/1s budget"
    );
    d.stop().await;
}

/// Retry-After on a 429 pauses every source of the host, then polling resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_pauses_every_source_of_the_host() {
    let up = Upstream::start("[]").await;
    up.set(Reply::StatusWith(
        429,
        vec![("retry-after", "2".to_owned())],
    ));
    let rx = receiver(204).await;
    let d = Daemon::start(&format!(
        "{}{}",
        simple_yaml(&up.url, &rx.uri(), ""),
        extra_source("b", &up.url)
    ));
    up.wait_polls(1).await;
    up.set(Reply::Json(json!([{"id":1}]).to_string()));
    let blocked = up.hits();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        up.hits(),
        blocked,
        "a source sent a request while its host was blocked"
    );
    up.wait_polls(4).await;
    d.stop().await;
}

/// A 403 without any rate-limit header blocks the host for at least a minute, counted in metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsignalled_refusal_blocks_the_host() {
    let up = Upstream::start("[]").await;
    up.set(Reply::StatusWith(403, vec![]));
    let rx = receiver(204).await;
    let d = Daemon::start(&simple_yaml(&up.url, &rx.uri(), ""));
    up.wait_polls(1).await;
    let blocked = up.hits();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        up.hits(),
        blocked,
        "polled again within a minute of an unexplained 403"
    );
    let url = format!("{}/metrics", d.admin);
    wait_until(
        Duration::from_secs(5),
        "rate-limit wait counted",
        || async {
            admin("GET", &url, None)
                .await
                .1
                .as_str()
                .unwrap_or("")
                .contains("pollhook_upstream_rate_limit_waits_total{host=\"127.0.0.1\"}")
        },
    )
    .await;
    d.stop().await;
}

/// GitHub's `X-Poll-Interval` raises the source's interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_poll_interval_raises_the_interval() {
    let up = Upstream::start("[]").await;
    up.set(Reply::StatusWith(
        200,
        vec![("x-poll-interval", "60".to_owned())],
    ));
    let rx = receiver(204).await;
    let d = Daemon::start(&simple_yaml(&up.url, &rx.uri(), ""));
    up.wait_polls(1).await;
    let after_first = up.hits();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        up.hits(),
        after_first,
        "polled again before the 60 s the upstream asked for"
    );
    let (status, body) = admin("POST", &format!("{}/v1/sources/things/poll", d.admin), None).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("unchanged")),
        "an operator poll still runs"
    );
    d.stop().await;
}

/// `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset`, and the IETF `RateLimit` header, block the
/// host until the reset even on a 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remaining_zero_blocks_until_reset() {
    for headers in [
        vec![
            ("x-ratelimit-remaining", "0".to_owned()),
            (
                "x-ratelimit-reset",
                (chrono::Utc::now().timestamp() + 3).to_string(),
            ),
        ],
        vec![("ratelimit", "\"default\";r=0;t=3".to_owned())],
    ] {
        let up = Upstream::start("[]").await;
        up.set(Reply::StatusWith(200, headers));
        let rx = receiver(204).await;
        let d = Daemon::start(&simple_yaml(&up.url, &rx.uri(), ""));
        up.wait_polls(1).await;
        up.set(Reply::Json("[]".into()));
        let blocked = up.hits();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            up.hits(),
            blocked,
            "polled while the upstream's budget was exhausted"
        );
        up.wait_polls(2).await;
        d.stop().await;
    }
}

/// With no `hosts:` entry a host still gets at most 64 requests in flight: once 80 sources are
/// baselined, their upstream holds every request open; 64 arrive, the other sources wait for a
/// slot (no new connection), and every source is polled again once the upstream answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfigured_host_gets_64_requests_in_flight() {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    #[derive(Clone)]
    struct Held {
        /// Sources polled since the last reset.
        polled: Arc<Mutex<HashSet<String>>>,
        open: Arc<tokio::sync::watch::Sender<bool>>,
    }
    let held = Held {
        polled: Arc::default(),
        open: Arc::new(tokio::sync::watch::Sender::new(true)),
    };
    let app = axum::Router::new()
        .route(
            "/s/{n}",
            axum::routing::get(
                |axum::extract::State(h): axum::extract::State<Held>,
                 axum::extract::Path(n): axum::extract::Path<String>| async move {
                    h.polled.lock().unwrap().insert(n);
                    let mut open = h.open.subscribe();
                    let _ = open.wait_for(|o| *o).await;
                    axum::Json(json!([{"id": 1}]))
                },
            ),
        )
        .with_state(held.clone());
    let up = serve(app).await;
    let rx = receiver(204).await;
    let sources = (0..80).fold(String::new(), |acc, n| {
        acc + &format!(
            "  s{n}:\n    url: {up}/s/{n}\n    every: 1s\n    jitter: 0%\n    key: /id\n    to: [agent]\n"
        )
    });
    let yaml = simple_yaml(&up, &rx.uri(), &sources).replace("/things", "/s/things");
    let d = Daemon::start(&yaml);
    let polled = || held.polled.lock().unwrap().len();
    wait_until(
        Duration::from_secs(20),
        "every source baselined",
        || async { polled() == 81 },
    )
    .await;
    held.open.send_replace(false);
    held.polled.lock().unwrap().clear();
    wait_until(Duration::from_secs(10), "64 requests in flight", || async {
        polled() >= 64
    })
    .await;
    // Every source is due again within a second; none gets past the bound while it is full.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(polled(), 64, "sources with a request in flight to one host");
    held.open.send_replace(true);
    wait_until(Duration::from_secs(10), "every source polled", || async {
        polled() == 81
    })
    .await;
    d.stop().await;
}

//! Conditional requests: validators are stored with the state (surviving restarts), sent on the
//! next poll, and a 304 parses nothing, emits nothing and counts as not_modified.

use std::time::Duration;

use serde_json::json;
use wiremock::matchers::{header, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{Daemon, admin, events, receiver, simple_yaml, wait_until};

const T: Duration = Duration::from_secs(10);

/// An upstream that answers 304 to `If-None-Match: "v1"` and 200 with ETag "v1" otherwise.
async fn etag_upstream() -> MockServer {
    let up = MockServer::start().await;
    Mock::given(method("GET"))
        .and(header("if-none-match", "\"v1\""))
        .respond_with(ResponseTemplate::new(304))
        .with_priority(1)
        .mount(&up)
        .await;
    let ok = ResponseTemplate::new(200)
        .insert_header("etag", "\"v1\"")
        .set_body_json(json!([{"id":1}]));
    Mock::given(method("GET"))
        .respond_with(ok)
        .with_priority(2)
        .mount(&up)
        .await;
    up
}

async fn conditional_gets(up: &MockServer, name: &str) -> usize {
    let all = up.received_requests().await.unwrap_or_default();
    all.iter().filter(|r| r.headers.contains_key(name)).count()
}

/// The ETag is sent back; a 304 changes nothing and shows as not_modified; the validator is
/// stored with the state, so a restarted daemon sends it on its first poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_is_sent_and_304_changes_nothing() {
    let up = etag_upstream().await;
    let rx = receiver(204).await;
    let yaml = simple_yaml(&up.uri(), &rx.uri(), "    on_first_poll: emit\n");
    let d = Daemon::start(&yaml);
    wait_until(T, "conditional polls", || async {
        conditional_gets(&up, "if-none-match").await >= 3
    })
    .await;
    let (_, s) = admin("GET", &format!("{}/v1/sources/things", d.admin), None).await;
    assert_eq!(s["last_outcome"], "not_modified", "{s}");
    let (_, metrics) = admin("GET", &format!("{}/metrics", d.admin), None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("outcome=\"not_modified\"")
    );
    assert_eq!(events(&rx).await.len(), 1, "only the first poll's event");
    let dir = d.stop().await;
    let before = up.received_requests().await.unwrap_or_default().len();
    let d = Daemon::start_in(dir, &yaml);
    wait_until(T, "first poll after restart", || async {
        up.received_requests().await.unwrap_or_default().len() > before
    })
    .await;
    let first = &up.received_requests().await.unwrap_or_default()[before];
    assert_eq!(
        first
            .headers
            .get("if-none-match")
            .map(|v| v.to_str().unwrap()),
        Some("\"v1\""),
        "validator survived the restart"
    );
    d.stop().await;
}

/// Last-Modified comes back as If-Modified-Since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_modified_is_sent_back() {
    let up = MockServer::start().await;
    let date = "Sun, 22 Nov 2026 13:00:00 GMT";
    Mock::given(method("GET"))
        .and(header("if-modified-since", date))
        .respond_with(ResponseTemplate::new(304))
        .with_priority(1)
        .mount(&up)
        .await;
    let ok = ResponseTemplate::new(200)
        .insert_header("last-modified", date)
        .set_body_json(json!([{"id":1}]));
    Mock::given(method("GET"))
        .respond_with(ok)
        .with_priority(2)
        .mount(&up)
        .await;
    let rx = receiver(204).await;
    let d = Daemon::start(&simple_yaml(&up.uri(), &rx.uri(), ""));
    wait_until(T, "If-Modified-Since polls", || async {
        conditional_gets(&up, "if-modified-since").await >= 2
    })
    .await;
    d.stop().await;
}

/// `conditional: false` never sends validators.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_false_sends_no_validators() {
    let up = etag_upstream().await;
    let rx = receiver(204).await;
    let d = Daemon::start(&simple_yaml(
        &up.uri(),
        &rx.uri(),
        "    conditional: false\n",
    ));
    wait_until(T, "three polls", || async {
        up.received_requests().await.unwrap_or_default().len() >= 3
    })
    .await;
    assert_eq!(conditional_gets(&up, "if-none-match").await, 0);
    d.stop().await;
}

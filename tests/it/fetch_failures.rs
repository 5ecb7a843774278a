//! A failed poll changes nothing: no events, stored state untouched, the next good poll diffs
//! against the state from before the failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::upstream::{Reply, Upstream};
use crate::helpers::{Daemon, events, gets, posts, receiver, simple_yaml, wait_until};

const T: Duration = Duration::from_secs(10);

/// Serves `bad` for a few polls between a baseline and a one-item change, and checks that only
/// that one change is emitted.
async fn failure_changes_nothing(bad: Reply, extra: &str) {
    let up = Upstream::start(&json!([{"id":1,"s":"a"},{"id":2,"s":"a"}]).to_string()).await;
    let rx = receiver(204).await;
    let d = Daemon::start(&simple_yaml(&up.url, &rx.uri(), extra));
    up.wait_polls(2).await;
    up.set(bad);
    up.wait_polls(3).await;
    assert!(posts(&rx).await.is_empty(), "a failed poll emitted events");
    up.set(Reply::Json(
        json!([{"id":1,"s":"b"},{"id":2,"s":"a"}]).to_string(),
    ));
    wait_until(T, "the real change", || async {
        !posts(&rx).await.is_empty()
    })
    .await;
    up.wait_polls(2).await;
    let evs = events(&rx).await;
    assert_eq!(evs.len(), 1, "only the real change is emitted: {evs:?}");
    assert_eq!(
        (
            evs[0]["type"].as_str(),
            evs[0]["key"].as_str(),
            evs[0]["revision"].as_u64()
        ),
        (Some("item.updated"), Some("1"), Some(2))
    );
    d.stop().await;
}

/// A 5xx answer fails the poll only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_changes_nothing() {
    failure_changes_nothing(Reply::Status(503), "").await;
}

/// A 404 answer fails the poll only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_error_changes_nothing() {
    failure_changes_nothing(Reply::Status(404), "").await;
}

/// A body that is not JSON fails the poll only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_changes_nothing() {
    failure_changes_nothing(Reply::Json("{\"truncated\": [".into()), "").await;
}

/// An item without its key fails the poll; it is never read as a deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_key_changes_nothing() {
    failure_changes_nothing(
        Reply::Json(json!([{"id":1,"s":"a"},{"name":"x"}]).to_string()),
        "",
    )
    .await;
}

/// Two items with one key fail the poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_key_changes_nothing() {
    failure_changes_nothing(Reply::Json(json!([{"id":1},{"id":1}]).to_string()), "").await;
}

/// A body whose items pointer no longer finds an array (schema drift) fails the poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_drift_changes_nothing() {
    failure_changes_nothing(Reply::Json(json!({"error":"moved"}).to_string()), "").await;
}

/// A body over max_body fails the poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_changes_nothing() {
    let big = json!([{"id":1,"s":"b","pad":"x".repeat(4096)},{"id":2,"s":"a"}]).to_string();
    failure_changes_nothing(Reply::Json(big), "    max_body: 1KiB\n").await;
}

/// A hanging upstream times out; the poll fails and nothing is emitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_fails_the_poll() {
    let up = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([{"id":1}]))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&up)
        .await;
    let rx = receiver(204).await;
    let d = Daemon::start(&simple_yaml(
        &up.uri(),
        &rx.uri(),
        "    timeout: 200ms\n    on_first_poll: emit\n",
    ));
    wait_until(T, "two timed-out polls", || async { gets(&up).await >= 2 }).await;
    assert!(posts(&rx).await.is_empty());
    d.stop().await;
}

/// max_body is enforced while streaming: an endless chunked body is cut off early, and the
/// source keeps polling instead of hanging or buffering it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_body_is_enforced_while_streaming() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let max_sent = Arc::new(AtomicUsize::new(0));
    let (c, m) = (conns.clone(), max_sent.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let m = m.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n").await;
                let chunk = format!("{:x}\r\n{}\r\n", 65536, "[".repeat(65536));
                let mut sent = 0usize;
                // Bounded: at most 256 MiB, far above what a capped client reads.
                while sent < 256 << 20 {
                    if sock.write_all(chunk.as_bytes()).await.is_err() {
                        break;
                    }
                    sent += 65536;
                    m.fetch_max(sent, Ordering::SeqCst);
                }
            });
        }
    });
    let rx = receiver(204).await;
    let d = Daemon::start(&simple_yaml(
        &format!("http://{addr}"),
        &rx.uri(),
        "    max_body: 1MiB\n    timeout: 60s\n",
    ));
    wait_until(T, "second poll after the capped one", || async {
        conns.load(Ordering::SeqCst) >= 2
    })
    .await;
    let sent = max_sent.load(Ordering::SeqCst);
    assert!(
        sent < 32 << 20,
        "client kept reading past max_body: {sent} bytes"
    );
    assert!(posts(&rx).await.is_empty());
    d.stop().await;
}

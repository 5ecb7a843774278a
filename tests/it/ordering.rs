//! Per-item order (invariant 4) and isolation between destinations (invariant 5).

use std::time::Duration;

use serde_json::json;

use crate::helpers::Daemon;
use crate::helpers::script::{Scripted, r};
use crate::helpers::upstream::{Reply, Upstream};

const T: Duration = Duration::from_secs(15);

/// Rev 3 of an item is not attempted while rev 2 to the same destination is still failing,
/// while another item's events flow freely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_of_one_item_are_delivered_in_order() {
    let up = Upstream::start(&json!([{"id":"x","s":1},{"id":"y","s":1}]).to_string()).await;
    // The first three attempts fail, whatever they carry.
    let rx = Scripted::start(vec![r(500), r(500), r(500)], r(204)).await;
    let yaml = crate::helpers::simple_yaml(&up.url, &rx.uri(), "").replace(
        "retry: [200ms, 200ms, 200ms]",
        "retry: [300ms, 300ms, 300ms, 300ms, 300ms]",
    );
    let d = Daemon::start(&yaml);
    up.wait_polls(2).await;
    up.set(Reply::Json(
        json!([{"id":"x","s":2},{"id":"y","s":1}]).to_string(),
    ));
    rx.wait_hits(1, T).await;
    up.set(Reply::Json(
        json!([{"id":"x","s":3},{"id":"y","s":2}]).to_string(),
    ));
    up.wait_polls(2).await;
    up.set(Reply::Json(
        json!([{"id":"x","s":4},{"id":"y","s":2}]).to_string(),
    ));
    crate::helpers::wait_until(T, "all revisions delivered", || async {
        let ok: Vec<_> = rx.hits().into_iter().filter(|h| h.status == 204).collect();
        ok.iter().filter(|h| h.body["key"] == "x").count() == 3
            && ok.iter().any(|h| h.body["key"] == "y")
    })
    .await;
    let hits = rx.hits();
    let x: Vec<(u64, u16)> = hits
        .iter()
        .filter(|h| h.body["key"] == "x")
        .map(|h| (h.body["revision"].as_u64().unwrap(), h.status))
        .collect();
    for (i, (rev, _)) in x.iter().enumerate() {
        let earlier_done = x[..i].iter().any(|(r, s)| *r == rev - 1 && *s == 204);
        assert!(
            *rev == 2 || earlier_done,
            "rev {rev} attempted before rev {} was delivered: {x:?}",
            rev - 1
        );
    }
    let delivered: Vec<u64> = x
        .iter()
        .filter(|(_, s)| *s == 204)
        .map(|(r, _)| *r)
        .collect();
    assert_eq!(delivered, vec![2, 3, 4]);
    d.stop().await;
}

/// A destination that hangs does not delay another destination of the same source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_destination_does_not_delay_another() {
    let up = Upstream::start(&json!([{"id":1}]).to_string()).await;
    let slow = Scripted::start(vec![], r(204).delay(Duration::from_secs(30))).await;
    let fast = Scripted::start(vec![], r(204)).await;
    let yaml = format!(
        "state: ./state.redb
destinations:
  slow:
    url: {slow}/hook
    secret: ${{SECRET}}
    timeout: 2s
    concurrency: 1
  fast:
    url: {fast}/hook
    secret: ${{SECRET}}
sources:
  things:
    url: {up}/things
    every: 100ms
    jitter: 0%
    key: /id
    to: [slow, fast]
",
        slow = slow.uri(),
        fast = fast.uri(),
        up = up.url
    );
    let d = Daemon::start(&yaml);
    up.wait_polls(2).await;
    for n in 2..=6 {
        up.set(Reply::Json(json!([{"id":1,"n":n}]).to_string()));
        fast.wait_hits(n - 1, Duration::from_secs(3)).await;
    }
    assert_eq!(
        fast.hits().len(),
        5,
        "the fast destination got every change promptly"
    );
    assert!(
        slow.hits().len() <= 2,
        "the slow destination holds one item chain, in order"
    );
    d.stop().await;
}

//! Pagination: link, cursor and page styles merge every page into one snapshot; an incomplete,
//! looping or off-host run fails the poll and never produces deletions.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{Daemon, admin, events, receiver, simple_yaml, wait_until};

const T: Duration = Duration::from_secs(10);

fn page(body: Value, link: Option<String>) -> ResponseTemplate {
    let r = ResponseTemplate::new(200).set_body_json(body);
    match link {
        Some(l) => r.insert_header("link", l.as_str()),
        None => r,
    }
}

async fn mount(up: &MockServer, param: Option<(&str, &str)>, reply: ResponseTemplate) {
    let m = Mock::given(method("GET"));
    match param {
        Some((k, v)) => {
            m.and(query_param(k, v))
                .respond_with(reply)
                .with_priority(1)
                .mount(up)
                .await
        }
        None => {
            m.and(query_param_is_missing("page"))
                .respond_with(reply)
                .with_priority(2)
                .mount(up)
                .await
        }
    }
}

async fn keys(rx: &MockServer) -> Vec<String> {
    let mut k: Vec<String> = events(rx)
        .await
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["type"].as_str().unwrap(),
                e["key"].as_str().unwrap()
            )
        })
        .collect();
    k.sort();
    k
}

/// `Link: rel="next"` (unquoted and multi-valued too) is followed until it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_pages_are_merged() {
    let up = MockServer::start().await;
    mount(
        &up,
        None,
        page(
            json!([{"id":1},{"id":2}]),
            Some(format!("<{}/things?page=2>; rel=\"next last\"", up.uri())),
        ),
    )
    .await;
    mount(
        &up,
        Some(("page", "2")),
        page(json!([{"id":3}]), Some("</things?page=3>; rel=next".into())),
    )
    .await;
    mount(&up, Some(("page", "3")), page(json!([{"id":4}]), None)).await;
    let rx = receiver(204).await;
    let d = Daemon::start(&simple_yaml(
        &up.uri(),
        &rx.uri(),
        "    on_first_poll: emit\n    paginate: { link: next }\n",
    ));
    wait_until(T, "four items", || async { events(&rx).await.len() == 4 }).await;
    assert_eq!(
        keys(&rx).await,
        [
            "item.created:1",
            "item.created:2",
            "item.created:3",
            "item.created:4"
        ]
    );
    d.stop().await;
}

/// A cursor read from the body is sent back as a query parameter until it is null.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_pages_are_merged() {
    let up = MockServer::start().await;
    let first =
        ResponseTemplate::new(200).set_body_json(json!({"data":[{"id":"a"}],"meta":{"next":"c2"}}));
    Mock::given(method("GET"))
        .and(query_param_is_missing("after"))
        .respond_with(first)
        .mount(&up)
        .await;
    let second =
        ResponseTemplate::new(200).set_body_json(json!({"data":[{"id":"b"}],"meta":{"next":null}}));
    Mock::given(method("GET"))
        .and(query_param("after", "c2"))
        .respond_with(second)
        .mount(&up)
        .await;
    let rx = receiver(204).await;
    let extra = "    on_first_poll: emit\n    items: /data\n    paginate: { cursor: { param: after, from: /meta/next } }\n";
    let d = Daemon::start(&simple_yaml(&up.uri(), &rx.uri(), extra));
    wait_until(T, "two items", || async { events(&rx).await.len() == 2 }).await;
    assert_eq!(keys(&rx).await, ["item.created:a", "item.created:b"]);
    d.stop().await;
}

/// Page numbers count up from `start` until an empty page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbered_pages_stop_at_an_empty_page() {
    let up = MockServer::start().await;
    mount(&up, Some(("page", "1")), page(json!([{"id":1}]), None)).await;
    mount(&up, Some(("page", "2")), page(json!([{"id":2}]), None)).await;
    mount(&up, Some(("page", "3")), page(json!([]), None)).await;
    let rx = receiver(204).await;
    let d = Daemon::start(&simple_yaml(
        &up.uri(),
        &rx.uri(),
        "    on_first_poll: emit\n    paginate: { page: { param: page, start: 1 } }\n",
    ));
    wait_until(T, "two items", || async { events(&rx).await.len() == 2 }).await;
    d.stop().await;
}

/// Waits for the source to report a failed poll whose error contains `needle`.
async fn wait_for_error(d: &Daemon, needle: &str) {
    let url = format!("{}/v1/sources/things", d.admin);
    wait_until(T, needle, || async {
        admin("GET", &url, None).await.1["last_error"]
            .as_str()
            .unwrap_or("")
            .contains(needle)
    })
    .await;
}

/// A page failing mid-run fails the poll: the items of the missing page are not deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_run_deletes_nothing() {
    let up = MockServer::start().await;
    mount(
        &up,
        None,
        page(
            json!([{"id":1}]),
            Some(format!("<{}/things?page=2>; rel=next", up.uri())),
        ),
    )
    .await;
    let second = Mock::given(method("GET"))
        .and(query_param("page", "2"))
        .respond_with(page(json!([{"id":2}]), None))
        .with_priority(1)
        .up_to_n_times(1);
    second.mount(&up).await;
    Mock::given(method("GET"))
        .and(query_param("page", "2"))
        .respond_with(ResponseTemplate::new(500))
        .with_priority(3)
        .mount(&up)
        .await;
    let rx = receiver(204).await;
    let d = Daemon::start(&simple_yaml(
        &up.uri(),
        &rx.uri(),
        "    paginate: { link: next }\n",
    ));
    wait_for_error(&d, "HTTP 500").await;
    wait_for_error(&d, "HTTP 500").await;
    assert!(
        events(&rx).await.is_empty(),
        "a partial run produced events: {:?}",
        events(&rx).await
    );
    d.stop().await;
}

/// A next link that repeats a page, points to another host, or exceeds max_pages fails the poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looping_foreign_and_endless_runs_fail() {
    for (second_link, extra, needle) in [
        ("</things?page=2>; rel=next", "", "repeats a page"),
        (
            "<http://127.0.0.2:9/things?page=3>; rel=next",
            "",
            "another host",
        ),
        (
            "</things?page=3>; rel=next",
            "    max_pages: 2\n",
            "more than max_pages (2)",
        ),
    ] {
        let up = MockServer::start().await;
        mount(
            &up,
            None,
            page(json!([{"id":1}]), Some("</things?page=2>; rel=next".into())),
        )
        .await;
        mount(
            &up,
            Some(("page", "2")),
            page(json!([{"id":2}]), Some(second_link.into())),
        )
        .await;
        mount(&up, Some(("page", "3")), page(json!([{"id":3}]), None)).await;
        let rx = receiver(204).await;
        let d = Daemon::start(&simple_yaml(
            &up.uri(),
            &rx.uri(),
            &format!("    on_first_poll: emit\n    paginate: {{ link: next }}\n{extra}"),
        ));
        wait_for_error(&d, needle).await;
        assert!(
            events(&rx).await.is_empty(),
            "{needle}: a failed run emitted events"
        );
        d.stop().await;
    }
}

/// Each page is sent its own validators; a run of all-304 pages is not_modified, and a 304 page
/// is reused from the last run while a changed page is fetched anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_use_their_own_validators() {
    use wiremock::matchers::header;
    let up = MockServer::start().await;
    let second = format!("<{}/things?page=2>; rel=next", up.uri());
    Mock::given(method("GET"))
        .and(query_param_is_missing("page"))
        .and(header("if-none-match", "\"p1\""))
        .respond_with(ResponseTemplate::new(304))
        .with_priority(1)
        .mount(&up)
        .await;
    mount(
        &up,
        None,
        page(json!([{"id":1}]), Some(second)).insert_header("etag", "\"p1\""),
    )
    .await;
    Mock::given(method("GET"))
        .and(query_param("page", "2"))
        .and(header("if-none-match", "\"p2\""))
        .respond_with(ResponseTemplate::new(304))
        .with_priority(1)
        .up_to_n_times(3)
        .mount(&up)
        .await;
    Mock::given(method("GET"))
        .and(query_param("page", "2"))
        .respond_with(page(json!([{"id":2,"v":1}]), None).insert_header("etag", "\"p2\""))
        .with_priority(2)
        .up_to_n_times(1)
        .mount(&up)
        .await;
    Mock::given(method("GET"))
        .and(query_param("page", "2"))
        .respond_with(page(json!([{"id":2,"v":2}]), None).insert_header("etag", "\"p2b\""))
        .with_priority(3)
        .mount(&up)
        .await;
    let rx = receiver(204).await;
    let d = Daemon::start(&simple_yaml(
        &up.uri(),
        &rx.uri(),
        "    paginate: { link: next }\n",
    ));
    let url = format!("{}/v1/sources/things", d.admin);
    wait_until(T, "a not_modified run", || async {
        admin("GET", &url, None).await.1["last_outcome"] == "not_modified"
    })
    .await;
    wait_until(T, "page 2 changed", || async {
        events(&rx).await.len() == 1
    })
    .await;
    let evs = events(&rx).await;
    assert_eq!(
        (evs[0]["type"].as_str(), evs[0]["key"].as_str()),
        (Some("item.updated"), Some("2")),
        "page 1 came from the cache, page 2 anew: {evs:?}"
    );
    d.stop().await;
}

/// The bytes one run receives are bounded by `max_run_body` (design §9): a run over it fails
/// with a clear error and changes nothing, though each page fits `max_body`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_over_max_run_body_fails_and_changes_nothing() {
    let up = MockServer::start().await;
    let filler = "x".repeat(700);
    mount(
        &up,
        None,
        page(
            json!([{"id": 1, "f": filler}]),
            Some(format!("<{}/things?page=2>; rel=next", up.uri())),
        ),
    )
    .await;
    mount(
        &up,
        Some(("page", "2")),
        page(json!([{"id": 2, "f": filler}]), None),
    )
    .await;
    let rx = receiver(204).await;
    let d = Daemon::start(&simple_yaml(
        &up.uri(),
        &rx.uri(),
        "    paginate: { link: next }\n    on_first_poll: emit\n    max_body: 1KiB\n    max_run_body: 1000B\n",
    ));
    let url = format!("{}/v1/sources/things", d.admin);
    wait_until(T, "the run failed", || async {
        admin("GET", &url, None).await.1["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("max_run_body"))
    })
    .await;
    let (_, status) = admin("GET", &url, None).await;
    assert_eq!(status["items"], 0, "{status}");
    assert!(events(&rx).await.is_empty());
    d.stop().await;
}

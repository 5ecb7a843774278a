//! Hostile upstreams: each on a loopback address of its own (so on a host of its own), beside a
//! healthy source, in one real daemon. Nothing an upstream sends may panic a task, stop the
//! healthy source's schedule or deliveries, or leak a credential to another host.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};

use crate::helpers::upstream::{Reply, Upstream};
use crate::helpers::{
    KillOnDrop, SECRET, admin, binary, events, free_port, receiver, terminate, wait_until,
};

/// Serves `app` on `ip`:0; returns its base URL.
async fn serve_on(ip: &str, app: Router) -> String {
    let listener = tokio::net::TcpListener::bind(format!("{ip}:0"))
        .await
        .expect("bind a loopback address");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    url
}

/// Headers of every request a host received.
type Seen = Arc<Mutex<Vec<HeaderMap>>>;

async fn record(State(seen): State<Seen>, headers: HeaderMap) -> Response {
    seen.lock().unwrap().push(headers);
    ([("content-type", "application/json")], "[]").into_response()
}

fn with_headers(status: u16, headers: &[(&'static str, &str)], body: &'static str) -> Response {
    let mut resp = (StatusCode::from_u16(status).unwrap(), body).into_response();
    for (k, v) in headers {
        resp.headers_mut().insert(*k, v.parse().unwrap());
    }
    resp
}

/// A body that never ends: 64 KiB chunks, as fast as the reader takes them.
fn endless() -> Response {
    let chunk = bytes::Bytes::from(vec![b' '; 64 * 1024]);
    let stream = futures_util::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
    Response::new(Body::from_stream(stream))
}

/// A body that trickles one byte a second (slow-loris).
fn trickle() -> Response {
    let stream = futures_util::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Some((Ok::<_, std::io::Error>(bytes::Bytes::from_static(b" ")), ()))
    });
    Response::new(Body::from_stream(stream))
}

/// One hostile behaviour on a host of its own.
async fn hostile(n: u8, behaviour: &'static str, elsewhere: String) -> String {
    let ip = format!("127.0.0.{n}");
    let app = Router::new().route(
        "/things",
        any(move || {
            let elsewhere = elsewhere.clone();
            async move {
                match behaviour {
                    "retry-after" => {
                        with_headers(429, &[("retry-after", "99999999999999999999")], "")
                    }
                    "reset" => with_headers(
                        403,
                        &[
                            ("x-ratelimit-remaining", "0"),
                            ("x-ratelimit-reset", "18446744073709551615"),
                        ],
                        "",
                    ),
                    "ietf" => with_headers(
                        429,
                        &[("ratelimit", "\"d\";r=0;t=99999999999999999999999")],
                        "",
                    ),
                    "poll-interval" => with_headers(
                        200,
                        &[
                            ("x-poll-interval", "99999999999999"),
                            ("content-type", "application/json"),
                        ],
                        "[{\"id\":1}]",
                    ),
                    "garbage" => with_headers(200, &[], "\u{0}\u{1}not json{{{"),
                    "huge" => endless(),
                    "slow" => trickle(),
                    "loop" => with_headers(302, &[("location", "/things?again")], ""),
                    "elsewhere" => with_headers(302, &[("location", elsewhere.as_str())], ""),
                    "deep" => {
                        let depth = 100_000;
                        let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
                        ([("content-type", "application/json")], body).into_response()
                    }
                    "bigint" => with_headers(
                        200,
                        &[("content-type", "application/json")],
                        "[{\"id\":123456789012345678901234567890},{\"id\":123456789012345678901234567891}]",
                    ),
                    "dupkey" => with_headers(
                        200,
                        &[("content-type", "application/json")],
                        "[{\"id\":1,\"state\":\"open\",\"state\":\"closed\"}]",
                    ),
                    other => panic!("unknown behaviour {other}"),
                }
            }
        }),
    );
    serve_on(&ip, app).await
}

const HOSTILE: [&str; 12] = [
    "retry-after",
    "reset",
    "ietf",
    "poll-interval",
    "garbage",
    "huge",
    "slow",
    "loop",
    "elsewhere",
    "deep",
    "bigint",
    "dupkey",
];

/// Hostile sources that must poll successfully all the same.
const SUCCEEDS: [&str; 2] = ["poll-interval", "bigint"];

/// Huge waits, garbage, a 100 MB body, a slow-loris body, a redirect loop, a redirect to another
/// host, 100,000-deep nesting, 30-digit ids and duplicate object keys, each from a host of its own: no panic, each hostile source
/// shows its error, no credential reaches the other host, and the healthy source keeps ≥ 90 % of
/// its schedule and delivers its changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_upstreams_fail_alone() {
    pollhook::http::install_crypto();
    let seen: Seen = Arc::default();
    let thief = serve_on(
        "127.0.0.99",
        Router::new()
            .route("/steal", any(record))
            .with_state(seen.clone()),
    )
    .await;
    let mut sources = String::new();
    for (i, behaviour) in HOSTILE.iter().enumerate() {
        let url = hostile(10 + i as u8, behaviour, format!("{thief}/steal")).await;
        sources.push_str(&format!(
            "  {behaviour}:
    url: {url}/things
    every: 200ms
    jitter: 0%
    timeout: 1s
    max_body: 1MiB
    key: /id
    headers: {{ X-Api-Key: k3y-for-the-upstream-only }}
    auth: {{ bearer: b34rer-for-the-upstream-only }}
    to: [agent]
"
        ));
    }
    let healthy = Upstream::start(&json!([{"id": 1, "v": 0}]).to_string()).await;
    let rx = receiver(204).await;
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.yaml");
    std::fs::write(
        &path,
        format!(
            "state: ./state.redb
admin:
  listen: 127.0.0.1:{port}
destinations:
  agent:
    url: {}/hook
    secret: ${{SECRET}}
    retry: [200ms]
sources:
  healthy:
    url: {}/things
    every: 200ms
    jitter: 0%
    key: /id
    to: [agent]
{sources}",
            rx.uri(),
            healthy.url
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let child = Command::new(binary())
        .args(["run", "-c"])
        .arg(&path)
        .env("SECRET", SECRET)
        .env("NO_COLOR", "1")
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let api = format!("http://127.0.0.1:{port}");
    wait_until(Duration::from_secs(15), "daemon ready", || async {
        reqwest::get(format!("{api}/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    healthy.wait_polls(1).await;
    let start = healthy.hits();
    for v in 1..=5 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        healthy.set(Reply::Json(json!([{"id": 1, "v": v}]).to_string()));
    }
    let polls = healthy.hits() - start;
    wait_until(
        Duration::from_secs(10),
        "healthy changes delivered",
        || async { events(&rx).await.iter().any(|e| e["data"]["v"] == 5) },
    )
    .await;
    let (_, body) = admin("GET", &format!("{api}/v1/sources"), None).await;
    let (status, ready) = admin("GET", &format!("{api}/readyz"), None).await;
    terminate(&mut child.0);
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!stderr.contains("panicked"), "a task panicked:\n{stderr}");
    assert_eq!(status, 200, "not ready: {ready}");
    // 4 s at 200 ms is 20 polls; ≥ 90 % of the schedule.
    assert!(
        polls >= 18,
        "the healthy source polled {polls} times in 4 s"
    );
    let by_name = |name: &str| -> Value {
        body["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no status for {name}: {body}"))
    };
    for name in HOSTILE.iter().filter(|n| !SUCCEEDS.contains(n)) {
        let s = by_name(name);
        assert!(
            s["last_error"].is_string(),
            "{name} shows no error: {s}\nstderr:\n{stderr}"
        );
    }
    for name in SUCCEEDS {
        assert!(by_name(name)["last_error"].is_null(), "{}", by_name(name));
    }
    assert_eq!(by_name("bigint")["items"], 2, "30-digit ids are two items");
    assert!(
        by_name("dupkey")["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("\"state\" twice")),
        "{}",
        by_name("dupkey")
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "the redirect target was contacted"
    );
    for secret in ["k3y-for-the-upstream-only", "b34rer-for-the-upstream-only"] {
        assert!(!stderr.contains(secret), "a credential was logged");
    }
}

/// With `follow_redirects: any`, a cross-origin hop is followed without the configured headers,
/// the auth or a `Referer`; with the default it is refused and nothing reaches the other host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_redirects_carry_no_credentials() {
    let seen: Seen = Arc::default();
    let other = serve_on(
        "127.0.0.98",
        Router::new()
            .route("/steal", any(record))
            .with_state(seen.clone()),
    )
    .await;
    let up = hostile(97, "elsewhere", format!("{other}/steal")).await;
    let rx = receiver(204).await;
    let yaml = |policy: &str| {
        format!(
            "state: ./state.redb
admin:
  listen: off
destinations:
  agent:
    url: {}/hook
    secret: ${{SECRET}}
sources:
  things:
    url: {up}/things?token=in-the-query
    every: 100ms
    jitter: 0%
    key: /id
    headers: {{ X-Api-Key: k3y }}
    auth: {{ bearer: b34rer }}
    {policy}
    to: [agent]
",
            rx.uri()
        )
    };
    let d = crate::helpers::Daemon::start(&yaml(""));
    tokio::time::sleep(Duration::from_millis(600)).await;
    d.stop().await;
    assert!(
        seen.lock().unwrap().is_empty(),
        "same-origin policy followed a hop"
    );

    let d = crate::helpers::Daemon::start(&yaml("follow_redirects: any"));
    wait_until(Duration::from_secs(10), "redirect followed", || async {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    d.stop().await;
    for h in seen.lock().unwrap().iter() {
        for name in ["x-api-key", "authorization", "referer", "if-none-match"] {
            assert!(h.get(name).is_none(), "{name} crossed origins: {h:?}");
        }
    }
}

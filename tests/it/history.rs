//! The delivery log (design §6a): every attempt with status, duration and the receiver's answer,
//! the body and headers as sent, resend and replay with the same id and body, the CLI over it,
//! alerts as webhooks (one per episode), and the page's forgery defences.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::script::{Scripted, r};
use crate::helpers::upstream::{Reply, Upstream};
use crate::helpers::{Daemon, SECRET, admin, admin_body, binary, simple_yaml, wait_until};

const T: Duration = Duration::from_secs(15);

async fn get(d: &Daemon, path: &str) -> (u16, Value) {
    admin("GET", &format!("{}{path}", d.admin), None).await
}

/// A failed attempt keeps the receiver's status and answer; the detail shows the body and
/// headers as sent without signatures; resend and replay send the same id and body again; the
/// log filters by status and source; the CLI reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_keeps_attempts_and_resend_replay_send_the_same_bytes() {
    let up = Upstream::start(&json!([{"id": 1, "v": "a"}]).to_string()).await;
    let rx = Scripted::start(vec![r(500).body("receiver exploded: db down")], r(204)).await;
    let d = Daemon::start(&simple_yaml(
        &up.url,
        &rx.uri(),
        "    on_first_poll: emit\n",
    ));
    rx.wait_hits(2, T).await;
    let first = rx.hits()[0].clone();
    wait_until(T, "delivered in the log", || async {
        get(&d, "/v1/events?status=delivered").await.1["events"]
            .as_array()
            .is_some_and(|e| e.len() == 1)
    })
    .await;
    let (_, list) = get(&d, "/v1/events").await;
    let e = &list["events"][0];
    assert_eq!(e["id"], json!(first.id));
    assert_eq!(e["attempts"], 2);
    assert_eq!(e["source"], "things");
    assert_eq!(e["destination"], "agent");

    let (status, detail) = get(&d, &format!("/v1/events/{}", first.id)).await;
    assert_eq!(status, 200, "{detail}");
    let delivery = &detail["deliveries"][0];
    let attempts = delivery["attempts"].as_array().expect("attempts");
    assert_eq!(attempts[0]["status"], 500);
    assert_eq!(attempts[0]["response"], "receiver exploded: db down");
    assert_eq!(attempts[1]["status"], 204);
    assert!(attempts[0]["duration_ms"].is_u64());
    assert_eq!(
        delivery["body"].as_str().unwrap().as_bytes(),
        first.raw.as_slice()
    );
    let names: Vec<&str> = delivery["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["name"].as_str())
        .collect();
    assert!(names.contains(&"webhook-id"), "{names:?}");
    assert!(
        !names.contains(&"webhook-signature"),
        "signatures are omitted: {names:?}"
    );
    assert!(!detail.to_string().contains(SECRET));

    // Resend: the same id and bytes again.
    let (status, answer) = admin(
        "POST",
        &format!("{}/v1/events/{}/resend", d.admin, first.id),
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    rx.wait_hits(3, T).await;
    let again = rx.hits()[2].clone();
    assert_eq!(again.id, first.id);
    assert_eq!(again.raw, first.raw);

    // Replay what the source emitted in the last hour: the original delivery only, not the resend.
    let replay = json!({"source": "things", "since": "1h"});
    let url = format!("{}/v1/replay", d.admin);
    let (status, answer) = admin_body("POST", &url, None, Some(&replay)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["queued"].as_array().unwrap().len(), 1, "{answer}");
    rx.wait_hits(4, T).await;
    assert_eq!(rx.hits()[3].raw, first.raw);

    // Filters and bad parameters.
    wait_until(T, "three delivered records", || async {
        get(&d, "/v1/events?status=delivered&source=things").await.1["events"]
            .as_array()
            .is_some_and(|e| e.len() == 3)
    })
    .await;
    let (_, none) = get(&d, "/v1/events?source=nope").await;
    assert_eq!(none["events"], json!([]));
    assert_eq!(get(&d, "/v1/events?status=bogus").await.0, 400);
    assert_eq!(get(&d, "/v1/events/evt_unknown").await.0, 404);
    let (_, page) = get(&d, "/v1/events?limit=1").await;
    assert!(page["next_cursor"].is_u64(), "{page}");

    // The CLI over the same API.
    let port = d.admin.rsplit(':').next().unwrap();
    let cfg = d.dir.path().join("cli.yaml");
    std::fs::write(
        &cfg,
        simple_yaml(&up.url, &rx.uri(), "")
            .replace("listen: off", &format!("listen: 127.0.0.1:{port}")),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(binary())
            .args(args)
            .arg("-c")
            .arg(&cfg)
            .env("SECRET", SECRET)
            .output()
            .expect("run pollhook");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let table = cli(&["events", "--since", "1h"]);
    assert!(
        table.contains(&first.id) && table.contains("delivered"),
        "{table}"
    );
    let failed = cli(&["events", "--failed", "--json"]);
    let failed: Value = serde_json::from_str(&failed).unwrap();
    assert_eq!(failed["events"].as_array().unwrap().len(), 1, "{failed}");
    let shown = cli(&["events", "show", &first.id]);
    assert!(
        shown.contains("HTTP 500") && shown.contains("db down"),
        "{shown}"
    );
    let resent = cli(&["events", "resend", &first.id, "--destination", "agent"]);
    assert!(resent.contains("queued 1"), "{resent}");
    rx.wait_hits(5, T).await;
    let replayed = cli(&["replay", "--source", "things", "--since", "2h"]);
    assert!(replayed.contains("queued 1"), "{replayed}");
    rx.wait_hits(6, T).await;
    assert!(
        rx.hits()
            .iter()
            .all(|h| h.id == first.id && h.raw == first.raw)
    );
    d.stop().await;
}

/// `history.keep: 0s` turns the log off: nothing is recorded, deliveries are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_can_be_turned_off() {
    let up = Upstream::start(&json!([{"id": 1}]).to_string()).await;
    let rx = Scripted::start(vec![], r(204)).await;
    let yaml = format!(
        "history: {{ keep: 0s }}\n{}",
        simple_yaml(&up.url, &rx.uri(), "    on_first_poll: emit\n")
    );
    let d = Daemon::start(&yaml);
    rx.wait_hits(1, T).await;
    let (_, list) = get(&d, "/v1/events").await;
    assert_eq!(list["events"], json!([]));
    d.stop().await;
}

fn kinds(hits: &[crate::helpers::script::Hit]) -> Vec<String> {
    hits.iter()
        .map(|h| h.body["type"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Each alert type fires once per episode and recovers: a failing source, a failing
/// destination, a dead event, a held source. Alerts are signed events like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_fire_once_per_episode_and_recover() {
    let up = Upstream::start("[]").await;
    up.set(Reply::Status(500));
    let ops = Scripted::start(vec![], r(204)).await;
    // The agent fails twice (retryable), then refuses (400: dead), then accepts.
    let agent = Scripted::start(vec![r(500), r(500), r(400)], r(204)).await;
    let yaml = format!(
        "alerts: {{ to: [ops], after: 2 }}
state: ./state.redb
admin:
  listen: off
destinations:
  ops:
    url: {ops}/alerts
    secret: ${{SECRET}}
  agent:
    url: {agent}/hook
    secret: ${{SECRET}}
    retry: [100ms, 100ms, 100ms]
sources:
  things:
    url: {up}/things
    every: 100ms
    jitter: 0%
    key: /id
    on_first_poll: emit
    max_changes: 3
    to: [agent]
",
        ops = ops.uri(),
        agent = agent.uri(),
        up = up.url
    );
    let d = Daemon::start(&yaml);
    wait_until(T, "source.failing alert", || async {
        kinds(&ops.hits()).contains(&"pollhook.source.failing".to_owned())
    })
    .await;
    up.set(Reply::Json(json!([{"id": 1}]).to_string()));
    wait_until(T, "recovered, destination failing, event dead", || async {
        let k = kinds(&ops.hits());
        [
            "pollhook.source.recovered",
            "pollhook.destination.failing",
            "pollhook.event.dead",
        ]
        .iter()
        .all(|want| k.contains(&want.to_string()))
    })
    .await;
    // A new change is delivered: the destination recovers.
    up.set(Reply::Json(json!([{"id": 1}, {"id": 2}]).to_string()));
    wait_until(T, "destination recovered", || async {
        kinds(&ops.hits()).contains(&"pollhook.destination.recovered".to_owned())
    })
    .await;
    // Too many changes at once: held.
    up.set(Reply::Json(
        json!([{"id": 1}, {"id": 2}, {"id": 3}, {"id": 4}, {"id": 5}, {"id": 6}, {"id": 7}])
            .to_string(),
    ));
    wait_until(T, "source held alert", || async {
        kinds(&ops.hits()).contains(&"pollhook.source.held".to_owned())
    })
    .await;
    let hits = ops.hits();
    let k = kinds(&hits);
    for once in [
        "pollhook.source.failing",
        "pollhook.source.recovered",
        "pollhook.destination.failing",
        "pollhook.destination.recovered",
        "pollhook.event.dead",
        "pollhook.source.held",
    ] {
        assert_eq!(
            k.iter().filter(|x| *x == once).count(),
            1,
            "{once} once per episode: {k:?}"
        );
    }
    let failing = hits
        .iter()
        .find(|h| h.body["type"] == "pollhook.source.failing")
        .unwrap();
    assert_eq!(failing.body["source"], "pollhook");
    assert_eq!(failing.body["data"]["source"], "things");
    assert!(
        failing.body["data"]["error"]
            .as_str()
            .unwrap()
            .contains("500")
    );
    assert!(
        !crate::helpers::header(&failing.request, "webhook-signature").is_empty(),
        "alerts are signed"
    );
    d.stop().await;
}

/// The page: a cross-site POST is refused even with the right form token; without a token
/// configured a loopback page is writable; `/` shows sources and the log.
/// A jq program that fails dead-letters its event with `pollhook.event.dead`, like a refused
/// delivery does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_program_raises_the_dead_event_alert() {
    let up = Upstream::start(&json!([{"id": 1}]).to_string()).await;
    let ops = Scripted::start(vec![], r(204)).await;
    let agent = Scripted::start(vec![], r(204)).await;
    let yaml = format!(
        "alerts: {{ to: [ops] }}
state: ./state.redb
admin:
  listen: off
destinations:
  ops:
    url: {ops}/alerts
    secret: ${{SECRET}}
  agent:
    url: {agent}/hook
    secret: ${{SECRET}}
    body: 'error(\"no\")'
sources:
  things:
    url: {up}/things
    every: 100ms
    key: /id
    on_first_poll: emit
    to: [agent]
",
        ops = ops.uri(),
        agent = agent.uri(),
        up = up.url
    );
    let d = Daemon::start(&yaml);
    wait_until(T, "event.dead alert", || async {
        kinds(&ops.hits()).contains(&"pollhook.event.dead".to_owned())
    })
    .await;
    d.stop().await;
    let hits = ops.hits();
    let dead = hits
        .iter()
        .find(|h| h.body["type"] == "pollhook.event.dead")
        .unwrap();
    assert_eq!(dead.body["data"]["destination"], "agent");
    assert!(
        dead.body["data"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("the body program failed")),
        "{}",
        dead.body
    );
    assert!(agent.hits().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_refuses_cross_site_posts() {
    let up = Upstream::start(&json!([{"id": 1}]).to_string()).await;
    let rx = Scripted::start(vec![], r(204)).await;
    let d = Daemon::start(&simple_yaml(
        &up.url,
        &rx.uri(),
        "    on_first_poll: emit\n",
    ));
    rx.wait_hits(1, T).await;
    pollhook::http::install_crypto();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = client
        .get(format!("{}/", d.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<th scope=\"row\">things</th>"), "{page}");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a form token on a writable page")
        .to_owned();
    let url = format!("{}/ui/events/{}/resend", d.admin, rx.hits()[0].id);
    let post = |origin: Option<&str>, token: &str| {
        let mut req = client
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("csrf={token}"));
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    assert_eq!(
        post(Some("http://evil.example"), &csrf)
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(post(None, "forged").await.unwrap().status(), 403);
    let host = d.admin.trim_start_matches("http://");
    let ok = post(Some(&format!("http://{host}")), &csrf).await.unwrap();
    assert_eq!(ok.status(), 303);
    rx.wait_hits(2, T).await;
    d.stop().await;
}

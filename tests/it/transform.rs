//! Per-destination jq programs (design §3a): `body` shapes what a receiver gets, `filter`
//! drops events per destination; a program that fails, yields nothing or several values, never
//! ends or overflows the stack dead-letters that event only, and the others keep flowing.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::script::{Scripted, r};
use crate::helpers::upstream::Upstream;
use crate::helpers::{Daemon, SECRET, admin, events, receiver, wait_until};

const T: Duration = Duration::from_secs(20);

fn tasks() -> String {
    json!([
        {"id": 1, "task_id": "t1", "description": "mine", "assigned_agent_id": "my_agent_id_123"},
        {"id": 2, "task_id": "t2", "description": "theirs", "assigned_agent_id": "someone_else"},
        {"id": 3, "task_id": "t3", "description": "also mine", "assigned_agent_id": "my_agent_id_123"}
    ])
    .to_string()
}

fn yaml(up: &str, dests: &str, to: &str) -> String {
    format!(
        "state: ./state.redb
destinations:
{dests}sources:
  tasks:
    url: {up}/things
    every: 100ms
    jitter: 0%
    key: /id
    on_first_poll: emit
    to: [{to}]
"
    )
}

/// A bare-body receiver gets only its own tasks, as `.data`, byte-identical on every retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_and_filter_shape_what_a_receiver_gets() {
    let up = Upstream::start(&tasks()).await;
    let rx = Scripted::start(vec![r(503)], r(204)).await;
    let dests = format!(
        "  agent:
    url: {}/webhook/new_task
    secret: ${{SECRET}}
    retry: [100ms, 100ms]
    filter: '.type == \"item.created\" and .data.assigned_agent_id == \"my_agent_id_123\"'
    body: .data
",
        rx.uri()
    );
    let d = Daemon::start(&yaml(&up.url, &dests, "agent"));
    wait_until(T, "two tasks delivered", || async {
        rx.hits().iter().filter(|h| h.status == 204).count() == 2
    })
    .await;
    let (_, outbox) = admin("GET", &format!("{}/v1/outbox", d.admin), None).await;
    d.stop().await;
    let hits = rx.hits();
    let mut bodies: Vec<Value> = hits
        .iter()
        .filter(|h| h.status == 204)
        .map(|h| h.body.clone())
        .collect();
    bodies.sort_by_key(|b| b["id"].as_i64());
    assert_eq!(
        bodies,
        vec![
            json!({"id": 1, "task_id": "t1", "description": "mine", "assigned_agent_id": "my_agent_id_123"}),
            json!({"id": 3, "task_id": "t3", "description": "also mine", "assigned_agent_id": "my_agent_id_123"}),
        ]
    );
    // The refused first attempt and its retry carried the same bytes.
    let first = &hits[0];
    let retry = hits
        .iter()
        .skip(1)
        .find(|h| h.id == first.id)
        .expect("the 503 was retried");
    assert_eq!(first.raw, retry.raw);
    assert_eq!(outbox["filtered"], 1, "{outbox}");
}

/// Run-time errors, no output, several outputs, a non-terminating program and a stack overflow
/// each dead-letter their delivery with the reason; a healthy destination gets every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_programs_dead_letter_only_their_events() {
    let up = Upstream::start(&tasks()).await;
    let ok = receiver(204).await;
    let bad = receiver(204).await;
    let programs = [
        ("boom", "error(\"boom: \" + .data.task_id)", "boom: t"),
        ("nothing", "empty", "produced no value"),
        ("several", ".data, .data", "produced several values"),
        ("forever", "def f: f; f", "ran longer than"),
        ("overflow", "def f: 1 + f; f", "crashed"),
        ("leak", "error($secret)", "<redacted>"),
    ];
    let mut dests = format!(
        "  ok:\n    url: {}/hook\n    secret: ${{SECRET}}\n    body: .data\n",
        ok.uri()
    );
    for (name, program, _) in programs {
        dests.push_str(&format!(
            "  {name}:\n    url: {}/hook\n    secret: ${{SECRET}}\n    body: '{program}'\n",
            bad.uri()
        ));
    }
    let to: Vec<&str> = std::iter::once("ok")
        .chain(programs.iter().map(|p| p.0))
        .collect();
    let d = Daemon::start(&yaml(&up.url, &dests, &to.join(", ")));
    let dead_url = format!("{}/v1/dead", d.admin);
    wait_until(T, "every failing delivery dead-lettered", || async {
        admin("GET", &dead_url, None).await.1["dead"]
            .as_array()
            .is_some_and(|a| a.len() == 3 * programs.len())
    })
    .await;
    wait_until(T, "the healthy destination got every event", || async {
        events(&ok).await.len() == 3
    })
    .await;
    let (_, dead) = admin("GET", &dead_url, None).await;
    d.stop().await;
    assert!(
        crate::helpers::posts(&bad).await.is_empty(),
        "a failed render was sent"
    );
    for (name, _, needle) in programs {
        let reasons: Vec<&str> = dead["dead"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["destination"] == name)
            .map(|r| r["reason"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(reasons.len(), 3, "{name}: {reasons:?}");
        assert!(
            reasons.iter().all(|r| r.contains(needle)),
            "{name}: {reasons:?} lack {needle:?}"
        );
    }
    assert!(
        !dead.to_string().contains(SECRET),
        "the secret leaked: {dead}"
    );
}

/// `$secret` is the destination's first secret (the tutorial receiver that checks a `secret`
/// field in the body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_is_available_to_body_programs() {
    let up =
        Upstream::start(&json!([{"id": 1, "customer_id": "c1", "email": "a@b"}]).to_string()).await;
    let rx = receiver(204).await;
    let dests = format!(
        "  crm:\n    url: {}/hook\n    secret: ${{SECRET}}\n    body: '{{customer_id: .data.customer_id, email: .data.email, secret: $secret}}'\n",
        rx.uri()
    );
    let d = Daemon::start(&yaml(&up.url, &dests, "crm"));
    wait_until(T, "delivered", || async { events(&rx).await.len() == 1 }).await;
    d.stop().await;
    assert_eq!(
        events(&rx).await[0],
        json!({"customer_id": "c1", "email": "a@b", "secret": SECRET})
    );
}

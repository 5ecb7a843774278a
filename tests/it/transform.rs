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
    // The filter runs when its event is first due, beside the other deliveries: the dropped
    // event is recorded as filtered in the delivery log (shared by every instance).
    let filtered = format!("{}/v1/events?status=filtered", d.admin);
    wait_until(T, "the other task recorded as filtered", || async {
        admin("GET", &filtered, None).await.1["events"]
            .as_array()
            .is_some_and(|e| e.len() == 1 && e[0]["key"] == "2")
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
    // This instance's count (with several instances on PostgreSQL another may have filtered it).
    if crate::helpers::pg::instances() == 1 {
        assert_eq!(outbox["filtered"], 1, "{outbox}");
    }
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
        (
            "overflow",
            "def f: 1 + f; f",
            "overflowed its evaluator's stack",
        ),
        ("leak", "error($secret)", "<redacted>"),
        ("big", "[range(100000)]", "max_body"),
    ];
    let mut dests = format!(
        "  ok:\n    url: {}/hook\n    secret: ${{SECRET}}\n    body: .data\n",
        ok.uri()
    );
    for (name, program, _) in programs {
        dests.push_str(&format!(
            "  {name}:\n    url: {}/hook\n    secret: ${{SECRET}}\n    body: '{program}'\n    max_body: 64KiB\n",
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

/// A runaway and an exploding program delay only their own destinations (design §9): a plain
/// destination of the same source and another source's destination get every event within
/// 2 s while `loop` spends a second per stuck event and `huge` hits its memory limit on every
/// one; the event that loops is dead-lettered, the rest of `loop`'s events are delivered; the
/// jq workers never hold more memory than their limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_program_delays_only_its_own_destination() {
    let _heavy = crate::helpers::HEAVY.lock().await;
    let items: Vec<Value> = (1..=40).map(|i| json!({"id": i, "n": i})).collect();
    let up = Upstream::start(&Value::Array(items).to_string()).await;
    let other_up = Upstream::start(&json!([{"id": "x"}]).to_string()).await;
    let (plain, looping, huge, other) = (
        receiver(204).await,
        receiver(204).await,
        receiver(204).await,
        receiver(204).await,
    );
    let yaml = format!(
        "state: ./state.redb
destinations:
  plain:
    url: {}/hook
    secret: ${{SECRET}}
  loop:
    url: {}/hook
    secret: ${{SECRET}}
    body: 'if .key == \"3\" then (def f: f; f) else .data end'
  huge:
    url: {}/hook
    secret: ${{SECRET}}
    body: '[range(100000000)] | length'
    jq_memory: 64MiB
  other:
    url: {}/hook
    secret: ${{SECRET}}
sources:
  tasks:
    url: {}/things
    every: 100ms
    jitter: 0%
    key: /id
    on_first_poll: emit
    to: [plain, loop, huge]
  elsewhere:
    url: {}/things
    every: 100ms
    jitter: 0%
    key: /id
    on_first_poll: emit
    to: [other]
",
        plain.uri(),
        looping.uri(),
        huge.uri(),
        other.uri(),
        up.url,
        other_up.url
    );
    let started = std::time::Instant::now();
    let d = Daemon::start(&yaml);
    let peak = WorkerPeak::watch();
    wait_until(
        Duration::from_secs(2),
        "plain and the other source delivered",
        || async { events(&plain).await.len() == 40 && events(&other).await.len() == 1 },
    )
    .await;
    let fast = started.elapsed();
    let dead_url = format!("{}/v1/dead", d.admin);
    wait_until(
        3 * T,
        "loop's stuck event and all of huge's dead-lettered",
        || async {
            admin("GET", &dead_url, None).await.1["dead"]
                .as_array()
                .is_some_and(|a| a.len() == 41)
        },
    )
    .await;
    wait_until(T, "loop's other events delivered", || async {
        events(&looping).await.len() == 39
    })
    .await;
    let (_, dead) = admin("GET", &dead_url, None).await;
    let (_, metrics) = admin("GET", &format!("{}/metrics", d.admin), None).await;
    let metrics = metrics.as_str().unwrap_or("").to_owned();
    d.stop().await;
    let (workers, max_rss) = peak.stop();
    eprintln!(
        "plain and the other source: {fast:?}; jq workers seen {workers}, peak RSS {max_rss} KiB"
    );
    let reasons = |name: &str| -> Vec<String> {
        dead["dead"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["destination"] == name)
            .map(|r| r["reason"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let stuck = reasons("loop");
    assert_eq!(stuck.len(), 1, "{stuck:?}");
    assert!(
        stuck[0].contains("time limit (1 s, jq_timeout)"),
        "{stuck:?}"
    );
    let exploded = reasons("huge");
    assert_eq!(exploded.len(), 40);
    assert!(
        exploded
            .iter()
            .all(|r| r.contains("memory limit (64 MiB, jq_memory)")),
        "{exploded:?}"
    );
    assert!(events(&huge).await.is_empty());
    assert!(
        workers > 0,
        "no jq worker was seen running under its memory limit"
    );
    assert!(
        max_rss < 512 * 1024,
        "a jq worker held {max_rss} KiB, over the largest limit"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pollhook_jq_limits_total{")
                && l.contains("destination=\"huge\",limit=\"memory\"}")),
        "{metrics}"
    );
}

/// Watches this process's jq worker children, recording how many ran under an address-space
/// limit and the largest resident size any had.
struct WorkerPeak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(usize, u64)>,
}

impl WorkerPeak {
    fn watch() -> WorkerPeak {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let me = std::process::id().to_string();
            let (mut limited, mut max) = (std::collections::HashSet::new(), 0u64);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                for (pid, rss, has_limit) in jq_children(&me) {
                    if has_limit {
                        limited.insert(pid);
                    }
                    max = max.max(rss);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (limited.len(), max)
        });
        WorkerPeak { stop, thread }
    }

    fn stop(self) -> (usize, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("watcher")
    }
}

/// (pid, VmRSS KiB, whether it runs under an address-space limit yet) of every `jq-worker`
/// child of process `parent` (a worker sets its limit first thing after it starts).
fn jq_children(parent: &str) -> Vec<(String, u64, bool)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        let Ok(status) = std::fs::read_to_string(path.join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().trim_end_matches(" kB").trim().to_owned())
        };
        let cmdline = std::fs::read(path.join("cmdline")).unwrap_or_default();
        if field("PPid:").as_deref() != Some(parent)
            || !cmdline.windows(9).any(|w| w == b"jq-worker")
        {
            continue;
        }
        let limits = std::fs::read_to_string(path.join("limits")).unwrap_or_default();
        let limited = limits
            .lines()
            .any(|l| l.starts_with("Max address space") && !l.contains("unlimited"));
        let rss = field("VmRSS:").and_then(|v| v.parse().ok()).unwrap_or(0);
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            rss,
            limited,
        ));
    }
    out
}

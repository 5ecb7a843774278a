//! The example receivers of `examples/receivers/` — three Flask routes as tutorials write them
//! and a GitHub App on `@octokit/webhooks` — run as real processes, unchanged, driven by the
//! real daemon with the destinations of `examples/receivers/bridge.yaml`. Outside CI, a machine
//! without Flask or the npm packages skips these tests loudly.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{any, get};
use serde_json::{Value, json};

use crate::helpers::{Daemon, KillOnDrop, free_port, serve, wait_until};

const T: Duration = Duration::from_secs(30);
const SECRET: &str = "a tutorial's shared secret";

fn examples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/receivers")
}

/// Whether Flask and the npm packages are installed; in CI a missing one fails the test.
fn receivers_available() -> bool {
    let flask = Command::new("python3")
        .args(["-c", "import flask"])
        .status()
        .is_ok_and(|s| s.success());
    let node = examples().join("node_modules/@octokit/webhooks").exists();
    if flask && node {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "receivers missing in CI (flask {flask}, @octokit/webhooks {node}); .ci/run installs them"
    );
    eprintln!(
        "SKIPPED: example receivers need Flask (pip install flask) and npm ci in examples/receivers"
    );
    false
}

/// Starts a receiver process and waits until it accepts connections.
async fn start(program: &str, script: &str, port: u16, log: &std::path::Path) -> KillOnDrop {
    let child = Command::new(program)
        .arg(script)
        .arg(port.to_string())
        .arg(log)
        .current_dir(examples())
        .env("WEBHOOK_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {script}: {e}"));
    let guard = KillOnDrop(child);
    wait_until(T, &format!("{script} listening"), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    guard
}

/// A proxy that forwards every request to `target` but, for the first `lose` requests,
/// answers 502 after the receiver has processed it: the acknowledgement is lost.
#[derive(Clone)]
struct LossyProxy {
    target: String,
    lose: usize,
    seen: Arc<AtomicUsize>,
}

async fn forward(
    State(p): State<LossyProxy>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let n = p.seen.fetch_add(1, Ordering::SeqCst);
    let mut req = reqwest::Client::new().post(format!("{}{}", p.target, uri.path()));
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    let status = match req.body(body).send().await {
        Ok(r) => StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
        Err(_) => StatusCode::BAD_GATEWAY,
    };
    if n < p.lose {
        StatusCode::BAD_GATEWAY
    } else {
        status
    }
}

fn lines(log: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Every case of design §3a with its receiver untouched: the bare-body route gets only its own
/// tasks, the X-Signature-256 route accepts every delivery, the X-Event-ID route processes each
/// change exactly once although its first acknowledgements are lost, and the GitHub App
/// dispatches `issues.opened` with GitHub's headers and payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_receivers_run_unchanged() {
    pollhook::http::install_crypto();
    if !receivers_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (flask_port, node_port) = (free_port(), free_port());
    let flask_log = dir.path().join("flask.jsonl");
    let node_log = dir.path().join("node.jsonl");
    let _flask = start("python3", "task_listener.py", flask_port, &flask_log).await;
    let _node = start("node", "github_app.mjs", node_port, &node_log).await;
    let proxy = LossyProxy {
        target: format!("http://127.0.0.1:{flask_port}"),
        lose: 2,
        seen: Arc::default(),
    };
    let proxied = serve(
        Router::new()
            .fallback(any(forward))
            .with_state(proxy.clone()),
    )
    .await;
    let upstream = serve(
        Router::new()
            .route(
                "/tasks",
                get(|| async {
                    axum::Json(json!([
                        {"task_id": "t1", "description": "mine", "assigned_agent_id": "my_agent_id_123"},
                        {"task_id": "t2", "description": "theirs", "assigned_agent_id": "someone_else"},
                        {"task_id": "t3", "description": "also mine", "assigned_agent_id": "my_agent_id_123"}
                    ]))
                }),
            )
            .route(
                "/customers",
                get(|| async {
                    axum::Json(json!([
                        {"customer_id": "c1", "email": "one@example.com"},
                        {"customer_id": "c2", "email": "two@example.com"}
                    ]))
                }),
            )
            .route(
                "/issues",
                get(|| async {
                    axum::Json(json!([{"number": 7, "title": "Crash on start", "state": "open"}]))
                }),
            ),
    )
    .await;
    // The shipped example config, pointed at this test's ports, polling fast.
    let yaml = std::fs::read_to_string(examples().join("bridge.yaml"))
        .unwrap()
        .replace(
            "http://127.0.0.1:5001/webhook/customer",
            &format!("{proxied}/webhook/customer"),
        )
        .replace("127.0.0.1:5001", &format!("127.0.0.1:{flask_port}"))
        .replace("127.0.0.1:5002", &format!("127.0.0.1:{node_port}"))
        .replace("http://127.0.0.1:9000", &upstream)
        .replace("${TASK_SECRET}", &format!("\"{SECRET}\""))
        .replace("./receivers.redb", "./state.redb")
        .replace("every: 30s", "every: 100ms\n    on_first_poll: emit")
        .replace("every: 60s", "every: 100ms\n    on_first_poll: emit")
        .replace(
            "    headers: { X-Event-ID: \"{id}\" }",
            "    headers: { X-Event-ID: \"{id}\" }\n    retry: [100ms, 100ms, 100ms]",
        );
    let d = Daemon::start(&yaml);
    wait_until(T, "every receiver processed its events", || async {
        let flask = lines(&flask_log);
        let count = |k: &str| flask.iter().filter(|l| l["kind"] == k).count();
        count("task") == 2
            && count("secure_task") == 3
            && count("customer") == 2
            && proxy.seen.load(Ordering::SeqCst) >= 4
            && lines(&node_log).len() == 1
    })
    .await;
    // Nothing more may arrive (every delivery is acknowledged by now): an absence.
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.stop().await;
    let flask = lines(&flask_log);
    let mut tasks: Vec<&str> = flask
        .iter()
        .filter(|l| l["kind"] == "task")
        .map(|l| l["task_id"].as_str().unwrap())
        .collect();
    tasks.sort();
    assert_eq!(
        tasks,
        ["t1", "t3"],
        "the bare-body route got another agent's task"
    );
    let mut customers: HashMap<&str, usize> = HashMap::new();
    for l in flask.iter().filter(|l| l["kind"] == "customer") {
        *customers
            .entry(l["customer_id"].as_str().unwrap())
            .or_default() += 1;
    }
    assert_eq!(
        customers,
        HashMap::from([("c1", 1), ("c2", 1)]),
        "each customer change processed exactly once ({} requests through the lossy proxy)",
        proxy.seen.load(Ordering::SeqCst)
    );
    let github = &lines(&node_log)[0];
    assert_eq!(github["event"], "issues.opened", "{github}");
    assert_eq!(github["issue"], 7);
    assert_eq!(github["repository"], "octo/example");
    assert!(
        github["delivery"].as_str().unwrap().starts_with("evt_"),
        "{github}"
    );
}

//! The operator CLI against the real daemon: status, sources, dead letters, SIGHUP reload, a
//! clear failure when no daemon runs, and no secret anywhere in what an operator sees.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::upstream::Upstream;
use crate::helpers::{SECRET, binary, free_port, receiver, terminate, wait_until};

const TOKEN: &str = "admin-token-do-not-print";
const BEARER: &str = "upstream-bearer-do-not-print";

fn config(port: u16, up: &str, rx: &str, extra_source: &str) -> String {
    format!(
        "state: ./state.redb
admin:
  listen: 127.0.0.1:{port}
  token: {TOKEN}
destinations:
  agent:
    url: {rx}/hook
    secret: ${{SECRET}}
sources:
  things:
    url: {up}/things
    every: 200ms
    key: /id
    auth: {{ bearer: {BEARER} }}
    to: [agent]
{extra_source}"
    )
}

/// Runs a CLI command; returns (exit code, stdout + stderr).
fn cli(args: &[&str], cfg: &std::path::Path) -> (i32, String) {
    let out = Command::new(binary())
        .args(args)
        .arg("-c")
        .arg(cfg)
        .env("SECRET", SECRET)
        .output()
        .expect("run pollhook");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// status, sources pause, dead list, SIGHUP reload and a stopped daemon, through the real CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_operates_a_running_daemon_without_leaking_secrets() {
    let up = Upstream::start(&json!([{"id":1}]).to_string()).await;
    let rx = receiver(204).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bridge.yaml");
    let port = free_port();
    std::fs::write(&cfg, config(port, &up.url, &rx.uri(), "")).unwrap();
    let (code, out) = cli(&["status"], &cfg);
    assert_eq!(code, 1, "status without a daemon must fail: {out}");
    assert!(out.contains("cannot reach the pollhook daemon"), "{out}");

    let mut child = Command::new(binary())
        .args(["run", "--log-level", "debug", "-c"])
        .arg(&cfg)
        .env("SECRET", SECRET)
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = Arc::new(Mutex::new(String::new()));
    let sink = logs.clone();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let cfg2 = cfg.clone();
    wait_until(Duration::from_secs(15), "daemon answers", || {
        let cfg = cfg2.clone();
        async move {
            tokio::task::spawn_blocking(move || cli(&["status"], &cfg).0 == 0)
                .await
                .unwrap()
        }
    })
    .await;
    let mut seen = String::new();
    let (code, out) = cli(&["status"], &cfg);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("SOURCE") && out.contains("things") && out.contains("agent"),
        "{out}"
    );
    seen += &out;
    let (code, out) = cli(&["sources", "pause", "things"], &cfg);
    assert_eq!((code, out.trim()), (0, "things: pause"));
    let (_, out) = cli(&["status", "--json"], &cfg);
    let status: Value = serde_json::from_str(&out).expect("status --json is JSON");
    assert_eq!(status["sources"][0]["paused"], "paused by operator");
    seen += &out;
    let (code, out) = cli(&["dead", "list", "--json"], &cfg);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["dead"],
        json!([])
    );

    let extra = format!(
        "  more:\n    url: {}/things\n    every: 200ms\n    key: /id\n    to: [agent]\n",
        up.url
    );
    std::fs::write(&cfg, config(port, &up.url, &rx.uri(), &extra)).unwrap();
    let _ = Command::new("kill")
        .arg("-HUP")
        .arg(child.id().to_string())
        .status();
    let cfg3 = cfg.clone();
    wait_until(
        Duration::from_secs(10),
        "SIGHUP reload adds a source",
        || {
            let cfg = cfg3.clone();
            async move {
                let out = tokio::task::spawn_blocking(move || cli(&["status", "--json"], &cfg).1)
                    .await
                    .unwrap();
                serde_json::from_str::<Value>(&out)
                    .map(|v| v["sources"].as_array().map_or(0, Vec::len) == 2)
                    .unwrap_or(false)
            }
        },
    )
    .await;
    let (_, metrics) =
        crate::helpers::admin("GET", &format!("http://127.0.0.1:{port}/metrics"), None).await;
    seen += metrics.as_str().unwrap_or("");
    let (_, sources) = crate::helpers::admin(
        "GET",
        &format!("http://127.0.0.1:{port}/v1/sources"),
        Some(TOKEN),
    )
    .await;
    seen += &sources.to_string();
    assert!(terminate(&mut child).success());
    seen += &logs.lock().unwrap();
    assert!(seen.contains("pollhook running"), "logs were captured");
    for secret in [SECRET, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", BEARER, TOKEN] {
        assert!(
            !seen.contains(secret),
            "{secret} leaked into logs, CLI output or the admin API"
        );
    }
}

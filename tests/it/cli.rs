//! The real binary: sign/verify, preview, demo, failure logging and SIGTERM drain.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::script::{Scripted, r};
use crate::helpers::upstream::{Reply, Upstream};
use crate::helpers::{KillOnDrop, SECRET, binary, simple_yaml, terminate};

fn run_with_stdin(args: &[&str], stdin: &[u8]) -> (i32, String) {
    let mut child = Command::new(binary())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn header_value(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_default()
        .to_owned()
}

/// `sign` prints headers that `verify` accepts; a changed body is rejected with exit 1.
#[test]
fn sign_then_verify_round_trip() {
    let body = br#"{"type":"item.created"}"#;
    let (code, out) = run_with_stdin(
        &[
            "sign",
            "--secret",
            SECRET,
            "--id",
            "evt_abc",
            "--timestamp",
            "1700000000",
            "--signature",
            "both",
        ],
        body,
    );
    assert_eq!(code, 0, "{out}");
    let sig = header_value(&out, "webhook-signature");
    let hub = header_value(&out, "x-hub-signature-256");
    assert!(
        sig.starts_with("v1,") && hub.starts_with("sha256="),
        "{out}"
    );
    let verify = |sig: &str, body: &[u8]| {
        run_with_stdin(
            &[
                "verify",
                "--secret",
                SECRET,
                "--id",
                "evt_abc",
                "--timestamp",
                "1700000000",
                "--signature",
                sig,
            ],
            body,
        )
        .0
    };
    assert_eq!(verify(&sig, body), 0);
    assert_eq!(verify(&hub, body), 0);
    assert_eq!(verify(&sig, b"{}"), 1);
    assert_eq!(verify(&hub, b"{}"), 1);
}

/// `preview` fetches once and prints key, version and hash per item, touching no state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_prints_extracted_items() {
    let up = Upstream::start(&json!([{"id":1,"u":"a"},{"id":2,"u":"b"}]).to_string()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.yaml");
    std::fs::write(
        &path,
        simple_yaml(&up.url, "http://127.0.0.1:9", "    version: /u\n"),
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["preview", "things", "-c"])
        .arg(&path)
        .env("SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["key"], "1");
    assert_eq!(lines[1]["version"], "b");
    assert_eq!(lines[0]["hash"].as_str().unwrap().len(), 64);
    assert!(
        !dir.path().join("state.redb").exists(),
        "preview must not create state"
    );
}

/// `demo` needs nothing but loopback: events arrive and every signature verifies.
#[test]
fn demo_delivers_verified_events() {
    let out = Command::new(binary())
        .args(["demo", "--for", "4s", "--change-every", "400ms"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verified = stdout
        .lines()
        .filter(|l| l.starts_with("✓ verified"))
        .count();
    assert!(
        verified >= 7,
        "expected the 5 initial items and some changes, got:\n{stdout}"
    );
    assert!(stdout.contains("item.updated"), "{stdout}");
    assert!(!stdout.contains("INVALID"), "{stdout}");
}

/// A failing poll is logged with the source name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_failures_are_logged_with_the_source() {
    let up = Upstream::start("[]").await;
    up.set(Reply::Status(502));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.yaml");
    std::fs::write(&path, simple_yaml(&up.url, "http://127.0.0.1:9", "")).unwrap();
    let mut child = Command::new(binary())
        .args(["run", "-c"])
        .arg(&path)
        .env("SECRET", SECRET)
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    let mut child = KillOnDrop(child);
    let found = wait_for_line(lines, Duration::from_secs(10), |l| {
        l.contains("poll failed") && l.contains("things") && l.contains("502")
    })
    .await;
    assert!(
        found.is_ok(),
        "no poll failure logged; stderr was:\n{}",
        found.unwrap_err().join("\n")
    );
    terminate(&mut child.0);
}

/// Streams a child's stderr lines from a reader thread.
fn stderr_lines(child: &mut std::process::Child) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line matching `want`; on timeout returns every line seen.
async fn wait_for_line(
    mut lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    limit: Duration,
    want: impl Fn(&str) -> bool,
) -> Result<String, Vec<String>> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, lines.recv()).await {
            Ok(Some(line)) if want(&line) => return Ok(line),
            Ok(Some(line)) => seen.push(line),
            Ok(None) | Err(_) => return Err(seen),
        }
    }
}

/// SIGTERM with a delivery in flight: exit within 10 s, the event stays pending, and the next
/// run delivers it with the same id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_restart_delivers_pending() {
    let up = Upstream::start(&json!([{"id":1}]).to_string()).await;
    let rx = Scripted::start(vec![r(204).delay(Duration::from_secs(60))], r(204)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.yaml");
    let yaml = simple_yaml(&up.url, &rx.uri(), "    on_first_poll: emit\n").replace(
        "    retry: [200ms, 200ms, 200ms]\n",
        "    timeout: 60s\n    retry: [100ms]\n",
    );
    std::fs::write(&path, yaml).unwrap();
    let start = || {
        Command::new(binary())
            .args(["run", "-c"])
            .arg(&path)
            .env("SECRET", SECRET)
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = start();
    rx.wait_hits(1, Duration::from_secs(10)).await;
    let t0 = Instant::now();
    let status = tokio::task::spawn_blocking(move || terminate(&mut child))
        .await
        .unwrap();
    let took = t0.elapsed();
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
    assert!(took < Duration::from_secs(10), "took {took:?} to stop");
    let mut child = start();
    rx.wait_hits(2, Duration::from_secs(10)).await;
    let hits = rx.hits();
    assert_eq!(hits[0].id, hits[1].id);
    assert_eq!(hits[0].raw, hits[1].raw);
    terminate(&mut child);
}

/// `sign --destination` prints the request that destination would get: its headers (with
/// placeholders rendered and a valid signature) and the body its program renders; `preview
/// --destination` prints the body of each current item, and says which the filter drops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_and_preview_render_a_destination() {
    let up =
        Upstream::start(&json!([{"id": 1, "mine": true}, {"id": 2, "mine": false}]).to_string())
            .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.yaml");
    std::fs::write(
        &path,
        format!(
            "destinations:
  app:
    url: http://127.0.0.1:9/hook
    secret: plain-secret
    signature: github
    headers: {{ X-Event-ID: \"{{id}}\" }}
    filter: .data.mine
    body: '{{task: .data.id}}'
sources:
  things:
    url: {}/things
    every: 1h
    key: /id
    to: [app]
",
            up.url
        ),
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["sign", "--destination", "app", "--id", "evt_x", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The sample event's data has no `mine`: the filter drops it.
    assert!(text.contains("filter drops this event"), "{text}");
    let event = dir.path().join("event.json");
    std::fs::write(&event, json!({"type": "item.created", "id": "evt_y", "source": "things", "key": "5", "revision": 1, "data": {"id": 5, "mine": true}}).to_string()).unwrap();
    let out = Command::new(binary())
        .args(["sign", "--destination", "app", "--event"])
        .arg(&event)
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.starts_with("POST http://127.0.0.1:9/hook\n"), "{text}");
    assert_eq!(header_value(&text, "x-event-id"), "evt_y", "{text}");
    let body = text.rsplit("\n\n").next().unwrap().trim_end();
    assert_eq!(body, r#"{"task":5}"#, "{text}");
    let sig = header_value(&text, "x-hub-signature-256");
    assert!(
        pollhook::delivery::signing::verify_github("plain-secret", body.as_bytes(), &sig),
        "{text}"
    );
    let out = Command::new(binary())
        .args(["preview", "things", "--destination", "app", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [r#"{"task":1}"#, "# key 2: filtered"],
        "{text}"
    );
}

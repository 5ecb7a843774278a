//! Signature presets and custom schemes, verified with the providers' own libraries (Python
//! `standardwebhooks`, `stripe`, `slack_sdk`; npm `@octokit/webhooks-methods`), not with our
//! code; and per-event header placeholders. The verifiers run as subprocesses
//! (`tests/verifiers/`); outside CI, a machine without them skips these tests loudly.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use serde_json::{Value, json};

use crate::helpers::upstream::Upstream;
use crate::helpers::{Daemon, SECRET, serve, wait_until};

const T: Duration = Duration::from_secs(15);
/// A second, rotated-out Standard Webhooks secret.
const OLD: &str = "whsec_dGhlIG9sZCBzZWNyZXQgb2Ygcm90YXRpb24=";
const PLAIN: &str = "It's a Secret to Everybody";

/// A received request: destination path, headers, raw body.
type Received = Arc<Mutex<Vec<(String, HashMap<String, String>, Vec<u8>)>>>;

async fn record(
    State(seen): State<Received>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    seen.lock().unwrap().push((name, headers, body.to_vec()));
    StatusCode::NO_CONTENT
}

fn tools_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/verifiers")
}

/// Whether the verifier libraries are installed; in CI a missing one fails the test.
fn verifiers_available() -> bool {
    let python = Command::new("python3")
        .args(["-c", "import standardwebhooks, stripe, slack_sdk"])
        .status()
        .is_ok_and(|s| s.success());
    let node = tools_dir()
        .join("node_modules/@octokit/webhooks-methods")
        .exists();
    if python && node {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "verifier libraries missing in CI (python {python}, node {node}); .ci/run installs them"
    );
    eprintln!(
        "SKIPPED: provider verifier libraries are not installed (pip install standardwebhooks stripe slack_sdk; npm ci in tests/verifiers)"
    );
    false
}

/// Runs a verifier over JSON lines; returns its verdict per line.
fn run_verifier(program: &str, script: &str, lines: &[Value]) -> Vec<String> {
    let mut child = Command::new(program)
        .arg(script)
        .current_dir(tools_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    for line in lines {
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn destination(name: &str, rx: &str, secret: &str, signature: &str) -> String {
    format!("  {name}:\n    url: {rx}/{name}\n    secret: {secret}\n    signature: {signature}\n")
}

/// Every preset (and a custom hex scheme) is accepted by the provider's own verifier, with
/// every secret during rotation where the header holds several; `none` sends no signature;
/// the Standard Webhooks headers are always sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presets_pass_the_providers_own_verifiers() {
    if !verifiers_available() {
        return;
    }
    let seen: Received = Arc::default();
    let rx = serve(
        Router::new()
            .route("/{name}", post(record))
            .with_state(seen.clone()),
    )
    .await;
    let up =
        Upstream::start(&json!([{"id": 1, "title": "ünïcode ✓"}, {"id": 2}]).to_string()).await;
    let rotated = format!("[\"{SECRET}\", \"{OLD}\"]");
    let dests = [
        destination("standard", &rx, &rotated, "standard"),
        destination("github", &rx, &format!("\"{PLAIN}\""), "github"),
        destination("stripe", &rx, &rotated, "stripe"),
        destination("slack", &rx, &format!("\"{PLAIN}\""), "slack"),
        destination("shopify", &rx, &format!("\"{PLAIN}\""), "shopify"),
        destination("both", &rx, SECRET, "both"),
        destination(
            "custom",
            &rx,
            &format!("\"{PLAIN}\""),
            "{ header: X-Signature-256, value: \"{signature}\", signs: \"{body}\", encoding: hex, key: utf8 }",
        ),
        format!("  none:\n    url: {rx}/none\n    signature: none\n"),
    ]
    .concat();
    let names = [
        "standard", "github", "stripe", "slack", "shopify", "both", "custom", "none",
    ];
    let yaml = format!(
        "state: ./state.redb
destinations:
{dests}sources:
  things:
    url: {}/things
    every: 100ms
    jitter: 0%
    key: /id
    on_first_poll: emit
    to: [{}]
",
        up.url,
        names.join(", ")
    );
    let d = Daemon::start(&yaml);
    wait_until(T, "two events at every destination", || async {
        let seen = seen.lock().unwrap();
        names
            .iter()
            .all(|n| seen.iter().filter(|(name, _, _)| name == n).count() >= 2)
    })
    .await;
    d.stop().await;
    let seen = seen.lock().unwrap().clone();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut py = Vec::new();
    let mut js = Vec::new();
    for (name, headers, body) in &seen {
        for h in ["webhook-id", "webhook-timestamp", "idempotency-key"] {
            assert!(headers.contains_key(h), "{name} lacks {h}: {headers:?}");
        }
        let line = |scheme: &str, secret: &str| json!({"scheme": scheme, "secret": secret, "headers": headers, "body": b64(body)});
        match name.as_str() {
            "standard" | "stripe" => {
                py.push(line(name, SECRET));
                py.push(line(name, OLD));
            }
            "both" => {
                py.push(line("standard", SECRET));
                js.push(line("github", SECRET));
            }
            "github" => js.push(line("github", PLAIN)),
            "custom" => py.push(line("x-signature-256", PLAIN)),
            "slack" | "shopify" => py.push(line(name, PLAIN)),
            "none" => {
                let signed: Vec<&String> = headers
                    .keys()
                    .filter(|k| k.contains("signature") || k.contains("hmac"))
                    .collect();
                assert!(signed.is_empty(), "none sent {signed:?}");
            }
            other => panic!("unexpected destination {other}"),
        }
    }
    let verdicts = run_verifier("python3", "verify.py", &py);
    assert_eq!(verdicts.len(), py.len());
    for (v, l) in verdicts.iter().zip(&py) {
        assert_eq!(v, "ok", "{} with its secret: {v}", l["scheme"]);
    }
    let verdicts = run_verifier("node", "verify.mjs", &js);
    assert_eq!(verdicts.len(), js.len());
    for v in &verdicts {
        assert_eq!(v, "ok", "@octokit/webhooks-methods: {v}");
    }
}

/// Header values render per-event placeholders; `{{` and `}}` stay literal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_placeholders_render_per_event() {
    let seen: Received = Arc::default();
    let rx = serve(
        Router::new()
            .route("/{name}", post(record))
            .with_state(seen.clone()),
    )
    .await;
    let up = Upstream::start(&json!([{"id": 7}]).to_string()).await;
    let yaml = format!(
        "state: ./state.redb
destinations:
  agent:
    url: {rx}/agent
    secret: ${{SECRET}}
    headers:
      X-Event-ID: \"{{id}}\"
      X-What: \"{{type}} {{source}}/{{key}}@{{revision}} {{{{literal}}}}\"
      X-At: \"{{timestamp}}\"
sources:
  things:
    url: {}/things
    every: 100ms
    key: /id
    on_first_poll: emit
    to: [agent]
",
        up.url
    );
    let d = Daemon::start(&yaml);
    wait_until(T, "an event", || async { !seen.lock().unwrap().is_empty() }).await;
    d.stop().await;
    let (_, h, _) = seen.lock().unwrap()[0].clone();
    assert_eq!(h["x-event-id"], h["webhook-id"]);
    assert_eq!(h["x-what"], "item.created things/7@1 {literal}");
    assert_eq!(h["x-at"], h["webhook-timestamp"]);
}

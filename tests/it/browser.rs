//! The status page in a real browser: headless Chromium driven over WebDriver (Debian's
//! `chromium` and `chromium-driver`, installed by `.ci/run`), spoken to directly with reqwest.
//! Logs in with the token, sees a failing source's error, opens a delivery's detail, resends a
//! dead letter and sees it delivered, resumes a held source, signs out. Screenshots go to
//! `target/screenshots/`. Outside CI a machine without chromedriver skips loudly; in CI
//! (`CI=true`) it fails.

use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::helpers::script::{Scripted, r};
use crate::helpers::upstream::{Reply, Upstream};
use crate::helpers::{Daemon, KillOnDrop, free_port, wait_until};

/// Bound on each wait. Generous: on 2 shared cores a full `cargo test` once kept a 20 s wait
/// for the page from being met (the test passes alone in ~2 s).
const T: Duration = Duration::from_secs(60);
const TOKEN: &str = "page-token-1234";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn found(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A WebDriver session.
struct Browser {
    http: reqwest::Client,
    base: String,
}

impl Browser {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let v = self.send(method, path, body).await;
        assert!(v["error"].is_null(), "webdriver {path}: {v}");
        v
    }

    /// A WebDriver command's `value`, an error included.
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(T);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("chromedriver answers");
        let text = resp.text().await.expect("chromedriver body");
        let v: Value = serde_json::from_str(&text).expect("chromedriver JSON");
        v["value"].clone()
    }

    /// Runs `js` in the page with `args`; its return value.
    async fn script(&self, js: &str, args: Value) -> Value {
        let body = json!({ "script": js, "args": args });
        self.send(reqwest::Method::POST, "/execute/sync", Some(body))
            .await
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn find(&self, xpath: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "xpath", "value": xpath})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("element {xpath}: {v}"))
            .to_owned()
    }

    async fn click(&self, xpath: &str) {
        let e = self.find(xpath).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_into(&self, xpath: &str, text: &str) {
        let e = self.find(xpath).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// The page's text, read in one script call: no element reference that a navigation (a
    /// form's redirect landing) could make stale between finding the body and reading it.
    async fn text(&self) -> String {
        let script =
            json!({"script": "return document.body ? document.body.innerText : '';", "args": []});
        for _ in 0..10 {
            let v = self
                .send(reqwest::Method::POST, "/execute/sync", Some(script.clone()))
                .await;
            // A script racing a navigation can fail once; the next page answers.
            if v["error"].is_string() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            return v.as_str().unwrap_or("").to_owned();
        }
        panic!("the page's text could not be read");
    }

    async fn screenshot(&self, name: &str) {
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("base64"))
            .expect("png");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }

    /// Reloads `url` until its text contains `needle`; on timeout the panic shows the page
    /// (and `target/screenshots/timeout.png` what it looked like).
    async fn wait_for(&self, url: &str, needle: &str) {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            self.go(url).await;
            let text = self.text().await;
            if text.contains(needle) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                self.screenshot("timeout").await;
                panic!("timed out after {T:?} waiting for {needle:?} at {url}; the page:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_a_real_browser() {
    if !found("chromedriver") || !(found("chromium") || found("chromium-browser")) {
        assert!(
            std::env::var("CI").is_err(),
            "chromium and chromedriver are missing in CI; .ci/run installs them"
        );
        eprintln!("SKIPPED status_page_in_a_real_browser: install chromium and chromium-driver");
        return;
    }
    // A browser starting on a loaded machine is slow: not alongside the other heavy tests.
    let _heavy = crate::helpers::HEAVY.lock().await;
    let up = Upstream::start(&json!([{"id": 1, "title": "first"}]).to_string()).await;
    let broken = Upstream::start("[]").await;
    broken.set(Reply::Status(503));
    let flood = Upstream::start("[]").await;
    // An upstream that answers 304 to its own ETag: after the first poll, every poll is a 304.
    let etagged = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::header("if-none-match", "\"v1\""))
        .respond_with(wiremock::ResponseTemplate::new(304))
        .with_priority(1)
        .mount(&etagged)
        .await;
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .respond_with(
            wiremock::ResponseTemplate::new(200)
                .insert_header("etag", "\"v1\"")
                .set_body_json(json!([{"id": 1}])),
        )
        .with_priority(2)
        .mount(&etagged)
        .await;
    // The first delivery is refused (400: dead letter), then the agent accepts.
    let agent = Scripted::start(vec![r(400).body("no such task")], r(204)).await;
    let yaml = format!(
        "state: ./state.redb
admin:
  listen: off
  token: {TOKEN}
destinations:
  agent:
    url: {agent}/hook
    secret: ${{SECRET}}
sources:
  things:
    url: {up}/things
    every: 200ms
    key: /id
    on_first_poll: emit
    include: {{ previous: true, changes: true }}
    to: [agent]
  etagged:
    url: {etagged}/things
    every: 200ms
    key: /id
    to: [agent]
  broken:
    url: {broken}/things
    every: 200ms
    key: /id
    to: [agent]
  flood:
    url: {flood}/things
    every: 200ms
    key: /id
    max_changes: 2
    to: [agent]
",
        agent = agent.uri(),
        up = up.url,
        broken = broken.url,
        flood = flood.url,
        etagged = etagged.uri(),
    );
    let d = Daemon::start(&yaml);
    agent.wait_hits(1, T).await;
    let dead_id = agent.hits()[0].id.clone();
    flood.wait_polls(1).await;
    flood.set(Reply::Json(
        json!([{"id": 1}, {"id": 2}, {"id": 3}, {"id": 4}]).to_string(),
    ));

    let port = free_port();
    let _driver = KillOnDrop(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    pollhook::http::install_crypto();
    let http = reqwest::Client::new();
    let driver = format!("http://127.0.0.1:{port}");
    wait_until(T, "chromedriver ready", || async {
        http.get(format!("{driver}/status"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let binary = if found("chromium") {
        "/usr/bin/chromium"
    } else {
        "/usr/bin/chromium-browser"
    };
    let session = Browser {
        http: http.clone(),
        base: driver.clone(),
    }
    .call(
        reqwest::Method::POST,
        "/session",
        Some(json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1100,1500"],
            },
        }}})),
    )
    .await;
    let id = session["sessionId"].as_str().expect("session").to_owned();
    let b = Browser {
        http,
        base: format!("{driver}/session/{id}"),
    };
    let home = format!("{}/", d.admin);

    // The token is asked for once, then kept in a cookie.
    b.go(&home).await;
    assert!(b.text().await.contains("admin token"));
    b.screenshot("login").await;
    b.type_into("//input[@id='token']", TOKEN).await;
    b.click("//button[@type='submit']").await;
    // The click starts the form's POST; navigating before it lands would cancel it (and with it
    // the cookie), so wait on the page the POST's redirect brings.
    wait_until(T, "the status page after signing in", || async {
        !b.text().await.contains("admin token")
    })
    .await;
    b.wait_for(&home, "HTTP 503").await;
    let page = b.text().await;
    assert!(
        page.contains("broken") && page.contains("failing"),
        "{page}"
    );
    b.wait_for(&home, "max_changes").await;
    b.screenshot("status").await;

    // A delivery's detail: its attempt, the receiver's answer, the body as sent.
    b.go(&format!("{}/events/{dead_id}", d.admin)).await;
    let detail = b.text().await;
    assert!(
        detail.contains("HTTP 400") && detail.contains("no such task"),
        "{detail}"
    );
    assert!(detail.contains("\"title\": \"first\""), "{detail}");
    b.screenshot("event").await;

    // Resend the dead letter from the page and see it delivered.
    b.go(&home).await;
    b.click("//button[starts-with(text(),'Resend dead letter')]")
        .await;
    agent.wait_hits(2, T).await;
    assert_eq!(agent.hits()[1].id, dead_id);
    b.wait_for(&format!("{}/events/{dead_id}", d.admin), "HTTP 204")
        .await;

    // Resume the held source: it polls again and its changes go out.
    b.go(&home).await;
    b.click("//button[text()='Resume flood']").await;
    agent.wait_hits(6, T).await;
    b.wait_for(&home, "delivered").await;
    b.screenshot("after").await;

    // The 24 h figures, relative times and a chart per source and destination.
    wait_until(T, "the etagged source has polled a few times", || async {
        crate::helpers::gets(&etagged).await >= 4
    })
    .await;
    b.go(&home).await;
    let row = |name: &str| {
        let args = json!([name]);
        let b = &b;
        async move {
            let v = b
                .script("const r = [...document.querySelectorAll('#sources ~ .wrap tbody tr')].find(r => r.querySelector('th').textContent === arguments[0]); return r ? [...r.querySelectorAll('td')].map(c => c.textContent) : null;", args)
                .await;
            v.as_array()
                .map(|cells| {
                    cells
                        .iter()
                        .map(|c| c.as_str().unwrap_or("").to_owned())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        }
    };
    // Columns: state, last poll, next poll, items, events, 304s, failed, chart, last error, action.
    let etag_row = row("etagged").await;
    let share: u32 = etag_row[5].trim_end_matches('%').parse().unwrap_or(0);
    assert!(share >= 50 && etag_row[6] == "0%", "etagged: {etag_row:?}");
    let broken_row = row("broken").await;
    assert_eq!(
        (broken_row[5].as_str(), broken_row[6].as_str()),
        ("0%", "100%"),
        "{broken_row:?}"
    );
    let things_row = row("things").await;
    assert_eq!(things_row[4], "1", "one event so far: {things_row:?}");
    assert!(
        things_row[1].ends_with(" ago") || things_row[1] == "now",
        "{things_row:?}"
    );
    assert!(
        things_row[2].starts_with("in ")
            || things_row[2].ends_with(" ago")
            || things_row[2] == "now",
        "{things_row:?}"
    );
    let charts = b
        .script(
            "return [...document.querySelectorAll('svg.chart')].map(s => s.querySelector('title').textContent);",
            json!([]),
        )
        .await;
    let charts: Vec<String> = charts
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| t.as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        charts.len(),
        4 + 3,
        "a chart per source, three for the destination: {charts:?}"
    );
    assert!(
        charts
            .iter()
            .any(|t| t.starts_with("broken, last 24 hours") && t.contains(" failed")),
        "{charts:?}"
    );
    b.screenshot("status-24h").await;
    audit(&b, "the status page").await;

    // An update's change view: the old value struck out, the new one inserted.
    up.set(Reply::Json(
        json!([{"id": 1, "title": "second"}]).to_string(),
    ));
    wait_until(T, "the update delivered", || async {
        agent
            .hits()
            .iter()
            .any(|h| h.body["type"] == "item.updated")
    })
    .await;
    let update = agent
        .hits()
        .into_iter()
        .find(|h| h.body["type"] == "item.updated")
        .expect("update")
        .id;
    b.go(&format!("{}/events/{update}", d.admin)).await;
    let marks = b
        .script(
            "return [document.querySelector('del')?.textContent, document.querySelector('ins')?.textContent];",
            json!([]),
        )
        .await;
    assert_eq!(marks, json!(["\"first\"", "\"second\""]), "the change view");
    b.screenshot("change").await;
    audit(&b, "the event page").await;

    // Sign out: the session ends, and the page asks for the token again.
    b.go(&home).await;
    b.click("//button[text()='Sign out']").await;
    wait_until(T, "the sign-in page after signing out", || async {
        b.text().await.contains("admin token")
    })
    .await;
    b.go(&home).await;
    assert!(
        b.text().await.contains("admin token"),
        "the session outlived sign-out"
    );
    b.call(reqwest::Method::DELETE, "", None).await;
    d.stop().await;
}

/// Runs axe-core (tests/verifiers' npm package) on the current page: no serious or critical
/// accessibility violation. Without the package it says so, and fails in CI.
async fn audit(b: &Browser, what: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/verifiers/node_modules/axe-core/axe.min.js");
    let Ok(axe) = std::fs::read_to_string(&path) else {
        assert!(
            std::env::var("CI").is_err(),
            "axe-core is missing in CI; .ci/run installs it"
        );
        eprintln!("SKIPPED the accessibility audit: npm ci in tests/verifiers");
        return;
    };
    b.script(&format!("{axe}\nreturn true;"), json!([])).await;
    let found = b
        .send(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({"script": "const done = arguments[arguments.length - 1]; axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical').map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' + v.nodes.map(n => n.target.join(' ')).slice(0, 3).join(', ')))).catch(e => done(['axe failed: ' + e]));", "args": []})),
        )
        .await;
    assert_eq!(found, json!([]), "accessibility violations on {what}");
}

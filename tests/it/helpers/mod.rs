//! Shared test helpers: bounded waits, an in-process daemon on a temp dir, a recording receiver,
//! a scriptable upstream, and the real binary.

#![allow(dead_code)]

pub mod fleet;
pub mod pg;
pub mod script;
pub mod upstream;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pollhook::config::{self, Config};
use pollhook::store::{Backend, OutboxRow, RedbBackend};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// A Standard Webhooks secret used by every test.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Held by the tests that load the machine most (several daemons, a browser, the suite again on
/// PostgreSQL), so that they run one at a time and their timing checks hold on two cores.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits until `cond` holds, checking every 20 ms, failing the test after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Parses config text with `${SECRET}` available, anchored in `dir`.
pub fn config_in(dir: &Path, yaml: &str) -> Config {
    let env = |name: &str| (name == "SECRET").then(|| SECRET.to_owned());
    config::load_str(yaml, &dir.join("bridge.yaml"), &env)
        .unwrap_or_else(|e| panic!("test config invalid: {e}"))
}

/// A daemon running in this process, its admin API on a free loopback port.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT` of its admin API.
    pub admin: String,
    token: CancellationToken,
    handle: Option<JoinHandle<Result<(), pollhook::daemon::DaemonError>>>,
    /// More instances on the same PostgreSQL database (`POLLHOOK_TEST_INSTANCES`).
    others: Vec<JoinHandle<Result<(), pollhook::daemon::DaemonError>>>,
}

impl Daemon {
    /// Starts a daemon with `yaml` in a fresh temp dir.
    pub fn start(yaml: &str) -> Daemon {
        Daemon::start_in(tempfile::tempdir().expect("temp dir"), yaml)
    }

    /// Starts a daemon with `yaml` in `dir` (keeps state across restarts).
    pub fn start_in(dir: tempfile::TempDir, yaml: &str) -> Daemon {
        let token = CancellationToken::new();
        let (handle, admin) = Self::instance(dir.path(), yaml, 0, &token);
        let others = (1..pg::instances())
            .map(|k| Self::instance(dir.path(), yaml, k, &token).0)
            .collect();
        Daemon {
            dir,
            admin,
            token,
            handle: Some(handle),
            others,
        }
    }

    /// Starts instance `k` (0: the one whose admin API the tests call) in `dir`.
    fn instance(
        dir: &Path,
        yaml: &str,
        k: usize,
        token: &CancellationToken,
    ) -> (
        JoinHandle<Result<(), pollhook::daemon::DaemonError>>,
        String,
    ) {
        let yaml = &for_instance(dir, yaml, k);
        let path = dir.join(config_name(k));
        std::fs::write(&path, yaml).expect("write config");
        let config = config_in(dir, yaml);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind admin");
        let admin = format!("http://{}", listener.local_addr().expect("addr"));
        let env: pollhook::daemon::EnvLookup =
            std::sync::Arc::new(|name: &str| (name == "SECRET").then(|| SECRET.to_owned()));
        let options = pollhook::daemon::Options {
            config_path: Some(path),
            env: Some(env),
            admin_listener: Some(listener),
            jq_worker: Some(binary()),
        };
        let handle = tokio::spawn(pollhook::daemon::run(config, options, token.clone()));
        (handle, admin)
    }

    /// Rewrites its config file (for reload tests).
    pub fn write_config(&self, yaml: &str) {
        for k in 0..pg::instances() {
            let text = for_instance(self.dir.path(), yaml, k);
            std::fs::write(self.dir.path().join(config_name(k)), text).expect("write config");
        }
    }

    /// Stops it (drain included) and returns its temp dir for inspection or a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.token.cancel();
        let handle = self.handle.take().expect("running");
        for handle in std::iter::once(handle).chain(self.others.drain(..)) {
            tokio::time::timeout(Duration::from_secs(15), handle)
                .await
                .expect("daemon stops within 15 s")
                .expect("daemon task joins")
                .expect("daemon exits cleanly");
        }
        let tmp = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.dir, tmp)
    }
}

/// `yaml` for the store this run tests: as written (redb), or with its `state:` replaced by
/// the dir's PostgreSQL database (`POLLHOOK_TEST_STORE=postgres`).
pub fn for_store(dir: &Path, yaml: &str) -> String {
    for_instance(dir, yaml, 0)
}

/// [`for_store`] for instance `k` of several on one database.
fn for_instance(dir: &Path, yaml: &str, k: usize) -> String {
    match (pg::enabled(), k) {
        (true, 0) => pg::rewrite(yaml, dir, "3s", "test"),
        (true, k) => pg::rewrite(yaml, dir, "3s", &format!("test-{k}")),
        (false, _) => yaml.to_owned(),
    }
}

/// The config file of instance `k`.
fn config_name(k: usize) -> String {
    match k {
        0 => "bridge.yaml".into(),
        k => format!("bridge-{k}.yaml"),
    }
}

/// The store a stopped daemon in `dir` used, opened for inspection.
pub fn open_store(dir: &Path) -> Box<dyn Backend> {
    if pg::enabled() {
        let url = pg::database_for(dir);
        let config = pollhook::config::Postgres {
            url: pollhook::config::Secret::new(url),
            pool: 2,
            lease: Duration::from_secs(3),
        };
        return Box::new(
            pollhook::store::PgBackend::open(&config, "inspect").expect("open PostgreSQL"),
        );
    }
    Box::new(RedbBackend::open(&dir.join("state.redb")).expect("open state"))
}

/// Pending outbox rows and dead letters of a stopped daemon's state file.
pub fn stored_rows(dir: &Path) -> (Vec<OutboxRow>, Vec<OutboxRow>) {
    let backend = open_store(dir);
    (
        backend.pending().expect("pending"),
        backend.dead().expect("dead"),
    )
}

/// A wiremock receiver that answers every POST with `status`.
pub async fn receiver(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(status))
        .mount(&server)
        .await;
    server
}

/// POSTs a server received, as parsed JSON bodies.
pub async fn events(server: &MockServer) -> Vec<Value> {
    posts(server)
        .await
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("event body is JSON"))
        .collect()
}

/// POST requests a server received.
pub async fn posts(server: &MockServer) -> Vec<Request> {
    let all = server.received_requests().await.unwrap_or_default();
    all.into_iter()
        .filter(|r| r.method.as_str() == "POST")
        .collect()
}

/// GET requests a server received.
pub async fn gets(server: &MockServer) -> usize {
    let all = server.received_requests().await.unwrap_or_default();
    all.iter().filter(|r| r.method.as_str() == "GET").count()
}

/// A header of a request as a string.
pub fn header(r: &Request, name: &str) -> String {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Starts the real binary as `pollhook run -c config` with `${SECRET}` set, logging errors only.
pub fn run_binary(config: &Path) -> std::process::Child {
    std::process::Command::new(binary())
        .args(["run", "-c"])
        .arg(config)
        .env("SECRET", SECRET)
        .env("POLLHOOK_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start pollhook")
}

/// The real `pollhook` binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pollhook"))
}

/// A source+destination config polling `upstream` every 100 ms, with extra source lines.
pub fn simple_yaml(upstream: &str, receiver: &str, extra_source: &str) -> String {
    format!(
        "state: ./state.redb
admin:
  listen: off
destinations:
  agent:
    url: {receiver}/hook
    secret: ${{SECRET}}
    retry: [200ms, 200ms, 200ms]
sources:
  things:
    url: {upstream}/things
    every: 100ms
    jitter: 0%
    key: /id
    to: [agent]
{extra_source}"
    )
}

/// Kills the child (SIGKILL) when dropped, so a failing test leaves no daemon behind.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends SIGTERM to a child through kill(1) and waits for it.
pub fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    child.wait().expect("reap child")
}

/// A port that was free a moment ago on 127.0.0.1 (for configs read by the real binary).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Calls a daemon's admin API; returns (status, JSON body or the text as a JSON string).
pub async fn admin(method: &str, url: &str, token: Option<&str>) -> (u16, Value) {
    admin_body(method, url, token, None).await
}

/// [`admin`] with a JSON request body.
pub async fn admin_body(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    pollhook::http::install_crypto();
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client.request(method, url).timeout(Duration::from_secs(30));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let resp = req.send().await.expect("admin API answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Serves `app` on a free loopback port; returns its base URL.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    url
}

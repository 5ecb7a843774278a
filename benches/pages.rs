//! Paginated-run memory bench (design §9, "Upstream bodies"): the real `pollhook` binary polls
//! one source of PAGES_COUNT pages × about PAGES_MIB MiB (RFC 8288 `Link: rel="next"`, items of
//! ~1 KiB). It reports the daemon's peak RSS after the first run (a baseline: every item parsed
//! and stored), after a run in which every item changed, and after a run in which one page
//! changed; and how long each run took.
//!
//! `cargo bench --bench pages` (env: PAGES_COUNT=50, PAGES_MIB=1). Loopback only; stops by
//! itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use support::{env_number, serve, spawn_daemon, status_kib, stop};

mod support;

/// Items per page of about `mib` MiB (each item ~1 KiB).
fn items_per_page(mib: usize) -> usize {
    mib * 1000
}

struct Upstream {
    pages: usize,
    per_page: usize,
    base: std::sync::OnceLock<String>,
    /// Revision of every item.
    all: AtomicU64,
    /// Revision of page 1's items (bumped alone in the third run).
    first: AtomicU64,
    /// When page 1 was last requested (a run's start).
    started: std::sync::Mutex<Option<Instant>>,
}

#[derive(serde::Deserialize)]
struct PageQuery {
    page: Option<usize>,
}

async fn page(State(u): State<Arc<Upstream>>, Query(q): Query<PageQuery>) -> impl IntoResponse {
    let n = q.page.unwrap_or(1);
    if n == 1 {
        *u.started.lock().expect("lock") = Some(Instant::now());
    }
    let rev = match n {
        1 => u.first.load(Ordering::Relaxed),
        _ => u.all.load(Ordering::Relaxed),
    };
    let pad = "p".repeat(960);
    let mut body = String::with_capacity(u.per_page * 1024 + 2);
    body.push('[');
    for i in 0..u.per_page {
        if i > 0 {
            body.push(',');
        }
        let id = n * u.per_page + i;
        body.push_str(&format!(r#"{{"id":{id},"rev":{rev},"pad":"{pad}"}}"#));
    }
    body.push(']');
    let next = match n < u.pages {
        true => format!(
            "<{}/things?page={}>; rel=\"next\"",
            u.base.get().map_or("", String::as_str),
            n + 1
        ),
        false => String::new(),
    };
    let mut headers = vec![(header::CONTENT_TYPE, "application/json".to_owned())];
    if !next.is_empty() {
        headers.push((header::LINK, next));
    }
    (
        axum::http::HeaderMap::from_iter(
            headers
                .into_iter()
                .map(|(k, v)| (k, v.parse().expect("header value"))),
        ),
        body,
    )
}

/// The source's status from the admin API.
async fn status(client: &reqwest::Client, admin: &str) -> serde_json::Value {
    match client
        .get(format!("{admin}/v1/sources/things"))
        .send()
        .await
    {
        Ok(r) => serde_json::from_slice(&r.bytes().await.unwrap_or_default()).unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

/// Waits (at most 10 minutes) until the source has made `polls` polls, the last of them
/// successful; returns how long the run took from its first page request.
async fn wait_polls(client: &reqwest::Client, admin: &str, up: &Upstream, polls: u64) -> Duration {
    let start = Instant::now();
    loop {
        let s = status(client, admin).await;
        if s["polls"].as_u64().unwrap_or(0) >= polls {
            assert!(s["last_error"].is_null(), "the run failed: {s}");
            let began = up.started.lock().expect("lock").unwrap_or(start);
            return began.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "the run did not finish: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main]
async fn main() {
    if support::invoked_as_test() {
        return;
    }
    let pages = env_number("PAGES_COUNT", 50);
    let mib = env_number("PAGES_MIB", 1);
    let up = Arc::new(Upstream {
        pages,
        per_page: items_per_page(mib),
        base: Default::default(),
        all: AtomicU64::new(1),
        first: AtomicU64::new(1),
        started: Default::default(),
    });
    let base = serve(
        Router::new()
            .route("/things", get(page))
            .with_state(up.clone()),
    )
    .await;
    let _ = up.base.set(base.clone());
    let receiver = serve(Router::new().route("/hook", axum::routing::post(|| async { "" }))).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let admin_addr = listener.local_addr().expect("addr");
    drop(listener);
    let config = dir.path().join("bridge.yaml");
    std::fs::write(
        &config,
        format!(
            "state: {}/state.redb
admin:
  listen: {admin_addr}
destinations:
  agent:
    url: {receiver}/hook
    signature: none
sources:
  things:
    url: {base}/things
    every: 1h
    key: /id
    version: /rev
    paginate: {{ link: next }}
    max_pages: {pages}
    max_body: {}MiB
    max_changes: 100000000
    to: [agent]
",
            dir.path().display(),
            mib + 1
        ),
    )
    .expect("write config");
    let child = spawn_daemon(&config, "warn");
    let pid = child.id();
    let admin = format!("http://{admin_addr}");
    pollhook::http::install_crypto();
    let client = reqwest::Client::new();
    println!("{pages} pages x {mib} MiB ({} items each)", up.per_page);
    let first = wait_polls(&client, &admin, &up, 1).await;
    let peak = |what: &str, took: Duration, s: serde_json::Value| {
        println!(
            "{what}: {:.1} s ({} polls, last {}, {} events), peak RSS {:.1} MiB, RSS now {:.1} MiB",
            took.as_secs_f64(),
            s["polls"],
            s["last_outcome"],
            s["events"],
            status_kib(pid, "VmHWM:") as f64 / 1024.0,
            status_kib(pid, "VmRSS:") as f64 / 1024.0
        )
    };
    peak("first run (baseline)", first, status(&client, &admin).await);
    up.all.store(2, Ordering::Relaxed);
    up.first.store(2, Ordering::Relaxed);
    let poll = |client: reqwest::Client, admin: String| async move {
        let _ = client
            .post(format!("{admin}/v1/sources/things/poll"))
            .send()
            .await;
    };
    poll(client.clone(), admin.clone()).await;
    let every = wait_polls(&client, &admin, &up, 2).await;
    peak("every item changed", every, status(&client, &admin).await);
    up.first.store(3, Ordering::Relaxed);
    poll(client.clone(), admin.clone()).await;
    let one = wait_polls(&client, &admin, &up, 3).await;
    peak("one page changed", one, status(&client, &admin).await);
    stop(child);
}

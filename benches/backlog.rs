//! Backlog bench: memory while a receiver is down, and recovery when it returns. The real
//! `pollhook` binary polls 20 local sources (50 items each) every 100 ms; every item changes on
//! every poll until BACKLOG_EVENTS events are committed, while the receiver answers 503. It
//! prints the daemon's RSS when idle and with the whole backlog pending, then brings the
//! receiver back after BACKLOG_OUTAGE_SECS (counted from the first event) and reports how long
//! until every event was delivered, and whether any was lost or dead-lettered.
//!
//! `cargo bench --bench backlog` (env: BACKLOG_EVENTS=100000, BACKLOG_OUTAGE_SECS=0 = as soon as
//! the backlog is complete; 600 for a ten-minute outage). Loopback only; stops by itself.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::json;
use support::serve;

mod support;

const SOURCES: usize = 20;
const ITEMS: usize = 50;

struct Shared {
    /// Change rounds left for each source.
    rounds: Vec<AtomicU64>,
    /// Each source's current revision (changes while rounds are left).
    revs: Vec<AtomicU64>,
    down: AtomicBool,
    delivered: Mutex<HashSet<String>>,
    first_event: Mutex<Option<Instant>>,
}

async fn serve_source(
    State(s): State<Arc<Shared>>,
    Path(n): Path<usize>,
) -> axum::Json<serde_json::Value> {
    let left = &s.rounds[n];
    let rev = match left.load(Ordering::Relaxed) {
        0 => s.revs[n].load(Ordering::Relaxed),
        r => {
            left.store(r - 1, Ordering::Relaxed);
            s.revs[n].fetch_add(1, Ordering::Relaxed) + 1
        }
    };
    let items: Vec<_> = (0..ITEMS)
        .map(|i| json!({"id": i, "source": n, "rev": rev, "title": "an item whose revision changes on every poll until the backlog is built"}))
        .collect();
    axum::Json(json!(items))
}

async fn receive(State(s): State<Arc<Shared>>, headers: HeaderMap) -> StatusCode {
    s.first_event
        .lock()
        .unwrap()
        .get_or_insert_with(Instant::now);
    if s.down.load(Ordering::Relaxed) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    s.delivered.lock().unwrap().insert(id);
    StatusCode::NO_CONTENT
}

fn main() {
    if support::invoked_as_test() {
        return;
    }
    let events = support::env_number("BACKLOG_EVENTS", 100_000);
    let outage = std::env::var("BACKLOG_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0u64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(events, Duration::from_secs(outage)));
}

async fn pending(admin: &str) -> u64 {
    let Ok(resp) = reqwest::get(format!("{admin}/v1/outbox")).await else {
        return 0;
    };
    let text = resp.text().await.unwrap_or_default();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    body["depth"].as_u64().unwrap_or(0)
}

async fn run(events: usize, outage: Duration) {
    pollhook::http::install_crypto();
    let rounds = events.div_ceil(SOURCES * ITEMS) as u64;
    let shared = Arc::new(Shared {
        rounds: (0..SOURCES).map(|_| AtomicU64::new(0)).collect(),
        revs: (0..SOURCES).map(|_| AtomicU64::new(0)).collect(),
        down: AtomicBool::new(true),
        delivered: Mutex::default(),
        first_event: Mutex::default(),
    });
    let up = serve(
        Router::new()
            .route("/s/{n}", get(serve_source))
            .with_state(shared.clone()),
    )
    .await;
    let rx = serve(
        Router::new()
            .route("/hook", post(receive))
            .with_state(shared.clone()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = format!("http://127.0.0.1:{port}");
    // Retries every 5 s at first, then every minute, for well over ten minutes.
    let mut yaml = format!(
        "state: ./state.redb\nadmin:\n  listen: 127.0.0.1:{port}\ndestinations:\n  sink:\n    url: {rx}/hook\n    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n    concurrency: 64\n    retry: [5s, 5s, 5s, 10s, 30s, 60s, 60s, 60s, 60s, 60s, 60s, 60s, 60s, 60s, 60s, 60s, 60s, 60s, 60s, 60s]\nsources:\n"
    );
    for s in 0..SOURCES {
        yaml.push_str(&format!("  s{s}:\n    url: {up}/s/{s}\n    every: 100ms\n    jitter: 0%\n    key: /id\n    to: [sink]\n"));
    }
    let cfg = dir.path().join("bridge.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    // Every failed attempt is a WARN line; only errors (dead letters) are worth showing here.
    let child = support::spawn_daemon(&cfg, "error");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60) + outage * 2;
    // Baseline: every source polled a few times, nothing to send.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = support::status_kib(pid, "VmRSS:");
    println!(
        "backlog: {SOURCES} sources x {ITEMS} items every 100 ms; receiver down; target {events} events"
    );
    println!("idle RSS: {:.1} MiB", idle as f64 / 1024.0);
    for r in &shared.rounds {
        r.store(rounds, Ordering::Relaxed);
    }
    let total = rounds as usize * SOURCES * ITEMS;
    let built = loop {
        let depth = pending(&admin).await;
        if depth as usize >= total || Instant::now() > deadline {
            break depth;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    tokio::time::sleep(Duration::from_secs(6)).await; // a retry round over the whole backlog
    let full = support::status_kib(pid, "VmRSS:");
    println!(
        "{built} events pending: RSS {:.1} MiB (+{:.1} MiB over idle; {:.0} bytes per pending event)",
        full as f64 / 1024.0,
        (full as f64 - idle as f64) / 1024.0,
        (full as f64 - idle as f64) * 1024.0 / built.max(1) as f64
    );
    let first = shared
        .first_event
        .lock()
        .unwrap()
        .unwrap_or_else(Instant::now);
    while first.elapsed() < outage && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!(
        "receiver back after {:.0} s down",
        first.elapsed().as_secs_f64()
    );
    shared.down.store(false, Ordering::Relaxed);
    let back = Instant::now();
    loop {
        let got = shared.delivered.lock().unwrap().len();
        if got >= total || Instant::now() > deadline + Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = shared.delivered.lock().unwrap().len();
    let dead = match reqwest::get(format!("{admin}/v1/dead")).await {
        Ok(r) => {
            let text = r.text().await.unwrap_or_default();
            serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default()["dead"]
                .as_array()
                .map_or(0, Vec::len)
        }
        Err(_) => 0,
    };
    println!(
        "delivered {got} of {total} distinct events ({:.1}%) {:.1} s after the receiver came back; dead-lettered {dead}; peak RSS {:.1} MiB",
        got as f64 * 100.0 / total as f64,
        back.elapsed().as_secs_f64(),
        support::status_kib(pid, "VmHWM:") as f64 / 1024.0
    );
    support::stop(child);
}

//! Soak bench for storage growth: the real `pollhook` binary polls 20 local sources every
//! 100 ms, every item of every source changes on every poll, and a local receiver accepts every
//! event; it prints the redb file size as deliveries pass 10k, 25k, 50k, 100k and 150k.
//! Delivered outbox rows are deleted and redb reuses freed pages, so the file should level off
//! instead of growing with the number of events.
//!
//! `cargo bench --bench soak` (env: SOAK_EVENTS=150000). Loopback only; stops by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use serde_json::json;
use support::serve;

mod support;

const SOURCES: usize = 20;
const ITEMS: usize = 50;

#[derive(Default)]
struct Counters {
    served: AtomicU64,
    delivered: AtomicUsize,
}

async fn serve_source(
    State(c): State<Arc<Counters>>,
    Path(n): Path<usize>,
) -> axum::Json<serde_json::Value> {
    let rev = c.served.fetch_add(1, Ordering::Relaxed);
    let items: Vec<_> = (0..ITEMS).map(|i| json!({"id": i, "source": n, "rev": rev, "title": "an item whose revision changes on every poll"})).collect();
    axum::Json(json!(items))
}

async fn receive(State(c): State<Arc<Counters>>) -> axum::http::StatusCode {
    c.delivered.fetch_add(1, Ordering::Relaxed);
    axum::http::StatusCode::NO_CONTENT
}

fn main() {
    if support::invoked_as_test() {
        return;
    }
    let target = support::env_number("SOAK_EVENTS", 150_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(target));
}

async fn run(target: usize) {
    let c = Arc::new(Counters::default());
    let up = serve(
        Router::new()
            .route("/s/{n}", get(serve_source))
            .with_state(c.clone()),
    )
    .await;
    let rx = serve(
        Router::new()
            .route("/hook", post(receive))
            .with_state(c.clone()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = format!(
        "state: ./state.redb\nadmin:\n  listen: off\ndestinations:\n  sink:\n    url: {rx}/hook\n    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n    concurrency: 64\nsources:\n"
    );
    for s in 0..SOURCES {
        yaml.push_str(&format!("  s{s}:\n    url: {up}/s/{s}\n    every: 100ms\n    jitter: 0%\n    key: /id\n    on_first_poll: emit\n    to: [sink]\n"));
    }
    let cfg = dir.path().join("bridge.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let state = dir.path().join("state.redb");
    let child = support::spawn_daemon(&cfg, "warn");
    let size = || std::fs::metadata(&state).map(|m| m.len()).unwrap_or(0);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
    println!("soak: {SOURCES} sources x {ITEMS} items, every item changes on every 100 ms poll");
    let mut marks = std::collections::BTreeSet::from([10_000, 25_000, 50_000, 100_000, target])
        .into_iter()
        .filter(|m| *m <= target)
        .peekable();
    while let Some(&mark) = marks.peek() {
        if Instant::now() > deadline {
            println!("stopped at the 300 s limit");
            break;
        }
        if c.delivered.load(Ordering::Relaxed) >= mark {
            println!(
                "delivered {:>7} events after {:>5.1}s: state file {:.2} MiB",
                c.delivered.load(Ordering::Relaxed),
                started.elapsed().as_secs_f64(),
                size() as f64 / 1048576.0
            );
            marks.next();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    support::stop(child);
    println!(
        "after stop: state file {:.2} MiB",
        size() as f64 / 1048576.0
    );
}

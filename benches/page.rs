//! Status page bench (design §6a): the real `pollhook` binary with PAGE_SOURCES sources (1,000)
//! polled every second from a local upstream and one local receiver, a delivery log of a few
//! thousand events; then `GET /` PAGE_GETS times (20). It prints the median, min and max time
//! of a whole request on loopback (the server's rendering plus one local round trip) and the
//! page's size, for the first page and for page 2.
//!
//! `cargo bench --bench page` (env: PAGE_SOURCES, PAGE_GETS). Loopback only; stops by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use serde_json::json;
use support::{env_number, serve, spawn_daemon, stop};

mod support;

/// The upstream: source `n` serves 10 items; a source changes every `n % 50` seconds or so.
async fn items(
    State(tick): State<Arc<AtomicU64>>,
    Path(n): Path<usize>,
) -> axum::Json<serde_json::Value> {
    let rev = tick.load(Ordering::Relaxed) / (1 + n as u64 % 50);
    axum::Json(json!(
        (0..10)
            .map(|i| json!({"id": i, "rev": rev, "title": "an item"}))
            .collect::<Vec<_>>()
    ))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn measure(client: &reqwest::Client, url: &str, gets: usize) -> (Vec<f64>, usize) {
    let mut times = Vec::with_capacity(gets);
    let mut size = 0;
    for _ in 0..gets {
        let t = Instant::now();
        let body = client
            .get(url)
            .send()
            .await
            .expect("GET /")
            .bytes()
            .await
            .expect("body");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        size = body.len();
    }
    (times, size)
}

#[tokio::main]
async fn main() {
    if support::invoked_as_test() {
        return;
    }
    let sources = env_number("PAGE_SOURCES", 1000);
    let gets = env_number("PAGE_GETS", 20);
    let tick = Arc::new(AtomicU64::new(0));
    let up = serve(
        Router::new()
            .route("/s/{n}", get(items))
            .with_state(tick.clone()),
    )
    .await;
    let rx = serve(Router::new().route("/hook", post(|| async { "" }))).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let admin = listener.local_addr().expect("addr");
    drop(listener);
    let mut yaml = format!(
        "state: {}/state.redb\nadmin:\n  listen: {admin}\ndestinations:\n  sink:\n    url: {rx}/hook\n    signature: none\nsources:\n",
        dir.path().display()
    );
    for s in 0..sources {
        yaml.push_str(&format!(
            "  s{s}:\n    url: {up}/s/{s}\n    every: 1s\n    key: /id\n    to: [sink]\n"
        ));
    }
    let config = dir.path().join("bridge.yaml");
    std::fs::write(&config, yaml).expect("config");
    let child = spawn_daemon(&config, "warn");
    pollhook::http::install_crypto();
    let client = reqwest::Client::new();
    // Let every source poll a while and some change, so the counters and the log have content.
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        tick.fetch_add(1, Ordering::Relaxed);
    }
    let home = format!("http://{admin}/");
    let (mut first, size) = measure(&client, &home, gets).await;
    let (mut second, size2) = measure(&client, &format!("{home}?page=2"), gets).await;
    println!("status page, {sources} sources, {gets} GETs each");
    for (what, times, size) in [("page 1", &mut first, size), ("page 2", &mut second, size2)] {
        let (min, max) = (
            times.iter().copied().fold(f64::MAX, f64::min),
            times.iter().copied().fold(0.0, f64::max),
        );
        println!(
            "{what}: median {:.1} ms (min {min:.1}, max {max:.1}), {:.0} KB",
            median(times),
            size as f64 / 1000.0
        );
    }
    stop(child);
}

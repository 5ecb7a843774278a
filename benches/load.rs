//! End-to-end load bench: a fast local upstream serving 1,000 sources, a local receiver, and the
//! real `pollhook` binary polling each source every second, with 1% of sources changing per
//! second; then a burst of 10,000 changes at once. Everything on 127.0.0.1; bounded in time.
//!
//! `cargo bench --bench load` (env: LOAD_SOURCES=1000, LOAD_SECONDS=30, LOAD_CONDITIONAL=0 to
//! turn conditional requests off; the upstream always sends ETags and honours If-None-Match;
//! LOAD_HISTORY=0 turns the delivery log off, to measure its cost; LOAD_JQ=1 gives the
//! destination a `body` jq program that keeps the event and adds a field).
//! Prints polls/s achieved vs scheduled, schedule lag p50/p99, detection-to-delivery and
//! change-to-delivery latency p50/p99, deliveries/s, daemon CPU seconds per 1,000 polls, peak
//! RSS, and the burst delivery rate.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use support::{now_ms, pct, serve, usage};

mod support;

const ITEMS: usize = 10;
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

struct Upstream {
    bodies: Vec<RwLock<(Bytes, String)>>,
    revs: Vec<Mutex<[(u64, i64); ITEMS]>>,
    arrivals: Vec<Mutex<Vec<Instant>>>,
    hits: AtomicUsize,
    not_modified: AtomicUsize,
}

#[derive(Default)]
struct Receiver {
    count: AtomicUsize,
    detect_ms: Mutex<Vec<i64>>,
    change_ms: Mutex<Vec<i64>>,
    last_at: AtomicU64,
}

/// Renders a source's body; `revs[i]` is item i's (revision, changed-at ms).
fn render(source: usize, revs: &[(u64, i64); ITEMS]) -> Bytes {
    let items: Vec<Value> = (0..ITEMS)
        .map(|i| json!({"id": i, "source": source, "rev": revs[i].0, "changed_at_ms": revs[i].1, "title": format!("item {i} of source {source}"), "state": "open"}))
        .collect();
    Bytes::from(serde_json::to_vec(&items).unwrap())
}

impl Upstream {
    fn new(n: usize) -> Upstream {
        Upstream {
            bodies: (0..n)
                .map(|s| RwLock::new(tagged(render(s, &[(0, 0); ITEMS]))))
                .collect(),
            revs: (0..n).map(|_| Mutex::new([(0, 0); ITEMS])).collect(),
            arrivals: (0..n).map(|_| Mutex::new(Vec::with_capacity(64))).collect(),
            hits: AtomicUsize::new(0),
            not_modified: AtomicUsize::new(0),
        }
    }

    /// Changes `items` items of source `s`.
    fn change(&self, s: usize, items: usize) {
        let mut revs = self.revs[s].lock().unwrap();
        let now = now_ms();
        for rev in revs.iter_mut().take(items) {
            *rev = (rev.0 + 1, now);
        }
        *self.bodies[s].write().unwrap() = tagged(render(s, &revs));
    }
}

/// A body with its ETag (a hash of the bytes).
fn tagged(body: Bytes) -> (Bytes, String) {
    let tag = format!("\"{:x}\"", xxhash_rust::xxh3::xxh3_64(&body));
    (body, tag)
}

async fn serve_source(
    State(up): State<Arc<Upstream>>,
    Path(n): Path<usize>,
    headers: HeaderMap,
) -> Response {
    up.hits.fetch_add(1, Ordering::Relaxed);
    up.arrivals[n].lock().unwrap().push(Instant::now());
    let (body, tag) = up.bodies[n].read().unwrap().clone();
    if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some(tag.as_str()) {
        up.not_modified.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::NOT_MODIFIED, [("etag", tag)]).into_response();
    }
    (
        [
            ("content-type", "application/json".to_owned()),
            ("etag", tag),
        ],
        body,
    )
        .into_response()
}

async fn receive(State(rx): State<Arc<Receiver>>, body: Bytes) -> axum::http::StatusCode {
    let now = now_ms();
    if let Ok(e) = serde_json::from_slice::<Value>(&body) {
        if let Some(ms) = support::detection_ms(&e, now) {
            rx.detect_ms.lock().unwrap().push(ms);
        }
        if let Some(changed) = e["data"]["changed_at_ms"].as_i64().filter(|c| *c > 0) {
            rx.change_ms.lock().unwrap().push(now - changed);
        }
    }
    rx.count.fetch_add(1, Ordering::Relaxed);
    rx.last_at.store(now as u64, Ordering::Relaxed);
    axum::http::StatusCode::NO_CONTENT
}

fn config(sources: usize, up: &str, rx: &str, conditional: bool, history: bool) -> String {
    let keep = if history { "7d" } else { "0s" };
    let jq = match std::env::var("LOAD_JQ").as_deref() {
        Ok("1") => "    body: '. + {shaped: true}'\n",
        _ => "",
    };
    let mut y = format!(
        "history: {{ keep: {keep} }}\nstate: ./state.redb\nadmin:\n  listen: off\ndestinations:\n  sink:\n    url: {rx}/hook\n    secret: {SECRET}\n    concurrency: 64\n    retry: [1s, 1s, 1s]\n{jq}sources:\n"
    );
    for s in 0..sources {
        y.push_str(&format!("  s{s}:\n    url: {up}/s/{s}\n    every: 1s\n    jitter: 0%\n    key: /id\n    conditional: {conditional}\n    to: [sink]\n"));
    }
    y
}

/// Schedule lag per poll: arrival minus (the source's best-case phase + n seconds).
fn lags(up: &Upstream, from: Instant) -> Vec<i64> {
    let mut out = Vec::new();
    for arrivals in &up.arrivals {
        let a = arrivals.lock().unwrap();
        let Some(first) = a.first().copied() else {
            continue;
        };
        let offset = |t: Instant, n: usize| (t - first).as_secs_f64() * 1000.0 - n as f64 * 1000.0;
        let best = a
            .iter()
            .enumerate()
            .map(|(n, t)| offset(*t, n))
            .fold(f64::MAX, f64::min);
        out.extend(
            a.iter()
                .enumerate()
                .filter(|(_, t)| **t >= from)
                .map(|(n, t)| (offset(*t, n) - best).round() as i64),
        );
    }
    out
}

fn main() {
    if support::invoked_as_test() {
        return;
    }
    let sources = support::env_number("LOAD_SOURCES", 1000);
    let seconds = support::env_number("LOAD_SECONDS", 30) as u64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(sources, seconds));
}

async fn run(sources: usize, seconds: u64) {
    let up = Arc::new(Upstream::new(sources));
    let rx = Arc::new(Receiver::default());
    let up_url = serve(
        Router::new()
            .route("/s/{n}", get(serve_source))
            .with_state(up.clone()),
    )
    .await;
    let rx_url = serve(
        Router::new()
            .route("/hook", post(receive))
            .with_state(rx.clone()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bridge.yaml");
    let conditional = std::env::var("LOAD_CONDITIONAL").as_deref() != Ok("0");
    let history = std::env::var("LOAD_HISTORY").as_deref() != Ok("0");
    std::fs::write(
        &cfg,
        config(sources, &up_url, &rx_url, conditional, history),
    )
    .unwrap();
    let child = support::spawn_daemon(&cfg, "warn");
    let pid = child.id();

    // Warm-up: every source baselined (first poll within its phase, at most 1 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    while up.arrivals.iter().any(|a| a.lock().unwrap().len() < 2) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "load: {sources} sources every 1s, {ITEMS} items each, 1% of sources changing per second, {seconds}s window"
    );

    // Steady window.
    let (cpu0, _) = usage(pid);
    let hits0 = up.hits.load(Ordering::Relaxed);
    let not_modified0 = up.not_modified.load(Ordering::Relaxed);
    let delivered0 = rx.count.load(Ordering::Relaxed);
    rx.detect_ms.lock().unwrap().clear();
    rx.change_ms.lock().unwrap().clear();
    let t0 = Instant::now();
    let per_second = (sources / 100).max(1); // 1% of sources per second, spread over 10 ticks
    let mut tick = 0usize;
    while t0.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for k in 0..per_second.div_ceil(10) {
            up.change((tick * 7919 + k * 104_729) % sources, 1);
        }
        tick += 1;
    }
    let window = t0.elapsed().as_secs_f64();
    let (cpu1, rss) = usage(pid);
    let polls = up.hits.load(Ordering::Relaxed) - hits0;
    let not_modified = up.not_modified.load(Ordering::Relaxed) - not_modified0;
    tokio::time::sleep(Duration::from_millis(1500)).await; // let the last changes arrive
    let delivered = rx.count.load(Ordering::Relaxed) - delivered0;
    let mut lag = lags(&up, t0);
    let mut detect = rx.detect_ms.lock().unwrap().clone();
    let mut change = rx.change_ms.lock().unwrap().clone();
    println!(
        "polls/s achieved {:.0} vs scheduled {sources}",
        polls as f64 / window
    );
    let share = 100.0 * not_modified as f64 / polls.max(1) as f64;
    println!(
        "conditional requests {}: {share:.1}% of polls answered 304",
        if conditional { "on" } else { "off" }
    );
    println!(
        "schedule lag ms p50 {} p99 {}",
        pct(&mut lag, 0.5),
        pct(&mut lag, 0.99)
    );
    println!(
        "detection-to-delivery ms p50 {} p99 {} ({} events)",
        pct(&mut detect, 0.5),
        pct(&mut detect, 0.99),
        detect.len()
    );
    println!(
        "change-to-delivery ms (includes waiting for the next poll) p50 {} p99 {}",
        pct(&mut change, 0.5),
        pct(&mut change, 0.99)
    );
    println!("deliveries/s {:.1}", delivered as f64 / window);
    println!(
        "daemon CPU s per 1000 polls {:.3} ({:.2} cores)",
        (cpu1 - cpu0) / (polls as f64 / 1000.0),
        (cpu1 - cpu0) / window
    );
    println!("daemon peak RSS MiB {rss:.1}");

    // Burst: every item of every source changes at once.
    let before = rx.count.load(Ordering::Relaxed);
    let total = sources * ITEMS;
    let tb = Instant::now();
    for s in 0..sources {
        up.change(s, ITEMS);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut first = None;
    while rx.count.load(Ordering::Relaxed) - before < total && Instant::now() < deadline {
        if first.is_none() && rx.count.load(Ordering::Relaxed) > before {
            first = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let got = rx.count.load(Ordering::Relaxed) - before;
    let all = tb.elapsed().as_secs_f64();
    let flowing = first.map_or(all, |f| f.elapsed().as_secs_f64());
    println!(
        "burst: {got}/{total} events in {all:.2}s from the change ({:.0}/s, includes up to 1 s until each source's next poll); {:.0} events/s from first to last delivery",
        got as f64 / all,
        got as f64 / flowing
    );
    let (_, rss) = usage(pid);
    println!("daemon peak RSS after burst MiB {rss:.1}");
    support::stop(child);
}

//! Scale bench: 10,000 sources × 100 items (≈ 17 KB of JSON each) polled every second by the real
//! `pollhook` binary, with the upstream in **another process** (this binary re-executed with
//! `SCALE_ROLE=upstream`) so the daemon's own CPU is what is reported. Everything on loopback;
//! bounded in time.
//!
//! `cargo bench --bench scale` (env: SCALE_SOURCES=10000, SCALE_ITEMS=100, SCALE_SECONDS=60;
//! SCALE_NOTES=random gives every item 60 hex digits of noise, JSON that compresses poorly).
//!
//! Phases: first run from an empty state (baseline of every source), a steady window where the
//! upstream answers `If-None-Match` (≈ 99 % 304s), a window where it ignores it (200s whose items
//! are unchanged), then a restart. 1 % of sources change one item per second throughout.
//! Prints polls/s achieved vs scheduled, schedule lag p50/p99, daemon CPU µs per poll in each
//! window, detection→delivery p50/p99, peak RSS of the first run and after the restart, the state
//! file's size against the JSON it describes, restart-to-ready time and the time until every
//! source has polled once after the restart.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use support::{now_ms, pct, serve, usage};

mod support;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn main() {
    if support::invoked_as_test() {
        return;
    }
    let sources = support::env_number("SCALE_SOURCES", 10_000);
    let items = support::env_number("SCALE_ITEMS", 100);
    if std::env::var("SCALE_ROLE").as_deref() == Ok("upstream") {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(upstream::run(sources, items));
        return;
    }
    let seconds = support::env_number("SCALE_SECONDS", 60) as u64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(sources, items, seconds));
}

/// The upstream process: serves every source with an ETag, changes 1 % of sources per second,
/// records when each source was polled; controlled over `/ctl/...`.
mod upstream {
    use super::*;

    pub struct Upstream {
        items: usize,
        bodies: Vec<RwLock<(Bytes, String)>>,
        revs: Vec<Mutex<Vec<(u64, i64)>>>,
        arrivals: Vec<Mutex<Vec<i64>>>,
        hits: AtomicUsize,
        not_modified: AtomicUsize,
        honour_etags: AtomicBool,
    }

    /// About 170 bytes per item.
    fn render(source: usize, revs: &[(u64, i64)]) -> Bytes {
        let items: Vec<Value> = revs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                json!({"id": i, "source": source, "rev": r.0, "changed_at_ms": r.1,
                "title": format!("item {i} of source {source}"), "state": "open",
                "note": note(source, i, r.0)})
            })
            .collect();
        Bytes::from(serde_json::to_vec(&items).unwrap())
    }

    /// 60 characters: a fixed phrase, or with `SCALE_NOTES=random` 60 hex digits derived from the
    /// item and its revision (JSON that LZ4 cannot shrink much, for the state file's worst case).
    fn note(source: usize, item: usize, rev: u64) -> String {
        if std::env::var("SCALE_NOTES").as_deref() != Ok("random") {
            return "lorem ipsum dolor sit amet consectetur adipiscing elit sed do".into();
        }
        let seed = format!("{source}/{item}/{rev}");
        let h = blake3::hash(seed.as_bytes()).to_hex();
        h.as_str()[..60].to_owned()
    }

    fn tagged(body: Bytes) -> (Bytes, String) {
        let tag = format!("\"{:x}\"", xxhash_rust::xxh3::xxh3_64(&body));
        (body, tag)
    }

    impl Upstream {
        fn change(&self, s: usize, item: usize) {
            let mut revs = self.revs[s].lock().unwrap();
            let r = &mut revs[item % self.items];
            *r = (r.0 + 1, now_ms());
            *self.bodies[s].write().unwrap() = tagged(render(s, &revs));
        }
    }

    async fn serve_source(
        State(up): State<Arc<Upstream>>,
        Path(n): Path<usize>,
        headers: HeaderMap,
    ) -> Response {
        let Some(body) = up.bodies.get(n) else {
            return StatusCode::NOT_FOUND.into_response();
        };
        up.hits.fetch_add(1, Ordering::Relaxed);
        up.arrivals[n].lock().unwrap().push(now_ms());
        let (body, tag) = body.read().unwrap().clone();
        let matches =
            headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some(tag.as_str());
        if matches && up.honour_etags.load(Ordering::Relaxed) {
            up.not_modified.fetch_add(1, Ordering::Relaxed);
            return (StatusCode::NOT_MODIFIED, [("etag", tag)]).into_response();
        }
        let headers = [
            ("content-type", "application/json".to_owned()),
            ("etag", tag),
        ];
        (headers, body).into_response()
    }

    async fn set_etags(State(up): State<Arc<Upstream>>, Path(on): Path<bool>) -> StatusCode {
        up.honour_etags.store(on, Ordering::Relaxed);
        StatusCode::NO_CONTENT
    }

    #[derive(serde::Deserialize)]
    struct Since {
        from: i64,
    }

    /// Counters, schedule lag of the polls since `from` (arrival minus the source's best-case
    /// phase + n seconds) and when each source was first polled at or after `from`.
    async fn stats(State(up): State<Arc<Upstream>>, Query(q): Query<Since>) -> axum::Json<Value> {
        let mut lags = Vec::new();
        let (mut polled, mut last_first) = (0usize, 0i64);
        let bytes: usize = up.bodies.iter().map(|b| b.read().unwrap().0.len()).sum();
        for arrivals in &up.arrivals {
            let a = arrivals.lock().unwrap();
            if let Some(first) = a.iter().find(|t| **t >= q.from) {
                polled += 1;
                last_first = last_first.max(first - q.from);
            }
            // Lag is measured within the current run of the daemon: from the first poll at or
            // after `from`.
            let run: Vec<i64> = a.iter().copied().filter(|t| *t >= q.from).collect();
            let Some(first) = run.first().copied() else {
                continue;
            };
            let offset = |t: i64, n: usize| (t - first) - n as i64 * 1000;
            let best = run.iter().enumerate().map(|(n, t)| offset(*t, n)).min();
            let best = best.unwrap_or(0);
            lags.extend(run.iter().enumerate().map(|(n, t)| offset(*t, n) - best));
        }
        axum::Json(json!({
            "hits": up.hits.load(Ordering::Relaxed),
            "not_modified": up.not_modified.load(Ordering::Relaxed),
            "lag_p50": support::pct(&mut lags.clone(), 0.5),
            "lag_p99": support::pct(&mut lags, 0.99),
            "polled": polled,
            "all_polled_ms": last_first,
            "json_bytes": bytes,
        }))
    }

    pub async fn run(sources: usize, items: usize) {
        let up = Arc::new(Upstream {
            items,
            bodies: (0..sources)
                .map(|s| RwLock::new(tagged(render(s, &vec![(0, 0); items]))))
                .collect(),
            revs: (0..sources)
                .map(|_| Mutex::new(vec![(0, 0); items]))
                .collect(),
            arrivals: (0..sources)
                .map(|_| Mutex::new(Vec::with_capacity(256)))
                .collect(),
            hits: AtomicUsize::new(0),
            not_modified: AtomicUsize::new(0),
            honour_etags: AtomicBool::new(true),
        });
        let app = Router::new()
            .route("/s/{n}", get(serve_source))
            .route("/ctl/etags/{on}", post(set_etags))
            .route("/ctl/stats", get(stats))
            .with_state(up.clone());
        println!("{}", serve(app).await);
        // The process ends when the bench's end of its stdin closes (the bench ended, however).
        std::thread::spawn(|| {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            std::process::exit(0);
        });
        // 1 % of sources change one item per second, spread over ten ticks.
        let per_tick = (sources / 100).max(1).div_ceil(10);
        let mut tick = 0usize;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            for k in 0..per_tick {
                up.change((tick * 7919 + k * 104_729) % sources, tick + k);
            }
            tick += 1;
        }
    }
}

#[derive(Default)]
struct Receiver {
    count: AtomicUsize,
    detect_ms: Mutex<Vec<i64>>,
}

async fn receive(State(rx): State<Arc<Receiver>>, body: Bytes) -> StatusCode {
    let now = now_ms();
    if let Ok(e) = serde_json::from_slice::<Value>(&body)
        && let Some(ms) = support::detection_ms(&e, now)
    {
        rx.detect_ms.lock().unwrap().push(ms);
    }
    rx.count.fetch_add(1, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

fn config(sources: usize, up: &str, rx: &str, admin: &str) -> String {
    let mut y = format!(
        "state: ./state.redb\nadmin:\n  listen: {admin}\ndestinations:\n  sink:\n    url: {rx}/hook\n    secret: {SECRET}\n    concurrency: 64\n    retry: [1s, 1s, 1s]\nsources:\n"
    );
    for s in 0..sources {
        y.push_str(&format!(
            "  s{s}:\n    url: {up}/s/{s}\n    every: 1s\n    jitter: 0%\n    key: /id\n    to: [sink]\n"
        ));
    }
    y
}

struct Bench {
    http: reqwest::Client,
    up: String,
    admin: String,
}

impl Bench {
    async fn stats(&self, from: i64) -> Value {
        let url = format!("{}/ctl/stats?from={from}", self.up);
        let r = self.http.get(url).send().await.expect("upstream stats");
        let bytes = r.bytes().await.expect("stats body");
        serde_json::from_slice(&bytes).expect("stats json")
    }

    async fn etags(&self, on: bool) {
        let url = format!("{}/ctl/etags/{on}", self.up);
        self.http.post(url).send().await.expect("upstream control");
    }

    /// Waits (≤ 60 s) for `/readyz`; returns how long it took.
    async fn ready(&self, since: Instant) -> Duration {
        let deadline = since + Duration::from_secs(60);
        loop {
            let r = self.http.get(format!("{}/readyz", self.admin)).send().await;
            if r.is_ok_and(|r| r.status().is_success()) {
                return since.elapsed();
            }
            assert!(Instant::now() < deadline, "daemon not ready within 60 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits (≤ 120 s) until every source has been polled at or after `from`; returns the time
    /// from `from` to the last source's first poll.
    async fn all_polled(&self, sources: usize, from: i64) -> i64 {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let s = self.stats(from).await;
            if s["polled"].as_u64() == Some(sources as u64) {
                return s["all_polled_ms"].as_i64().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "not every source polled: {s}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A steady window: polls/s, lag and daemon CPU per poll.
    async fn window(&self, label: &str, pid: u32, sources: usize, seconds: u64) {
        let (cpu0, _) = usage(pid);
        let from = now_ms();
        let s0 = self.stats(0).await;
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let (cpu1, _) = usage(pid);
        let window = t0.elapsed().as_secs_f64();
        let s1 = self.stats(from).await;
        let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0) as f64;
        let polls = n(&s1, "hits") - n(&s0, "hits");
        let nm = n(&s1, "not_modified") - n(&s0, "not_modified");
        println!(
            "{label}: polls/s achieved {:.0} vs scheduled {sources}; {:.1}% answered 304; schedule lag ms p50 {} p99 {}; daemon CPU µs per poll {:.1} ({:.2} cores)",
            polls / window,
            100.0 * nm / polls.max(1.0),
            s1["lag_p50"],
            s1["lag_p99"],
            (cpu1 - cpu0) * 1e6 / polls.max(1.0),
            (cpu1 - cpu0) / window,
        );
    }
}

/// The daemon, stopped with SIGTERM when dropped (also when the bench panics).
struct Daemon(Option<Child>);

impl Daemon {
    fn start(cfg: &std::path::Path) -> Daemon {
        Daemon(Some(support::spawn_daemon(cfg, "warn")))
    }

    fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.0.take() {
            support::stop(child);
        }
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn spawn_upstream(sources: usize, items: usize) -> (Child, String) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .env("SCALE_ROLE", "upstream")
        .env("SCALE_SOURCES", sources.to_string())
        .env("SCALE_ITEMS", items.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start upstream process");
    let mut line = String::new();
    let out = child.stdout.take().expect("stdout");
    BufReader::new(out).read_line(&mut line).expect("url");
    (child, line.trim().to_owned())
}

async fn run(sources: usize, items: usize, seconds: u64) {
    pollhook::http::install_crypto();
    let (mut upstream, up) = spawn_upstream(sources, items);
    let rx = Arc::new(Receiver::default());
    let app = Router::new().route("/hook", post(receive));
    let rx_url = serve(app.with_state(rx.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bridge.yaml");
    let admin = format!("127.0.0.1:{}", free_port());
    std::fs::write(&cfg, config(sources, &up, &rx_url, &admin)).unwrap();
    let bench = Bench {
        http: reqwest::Client::new(),
        up,
        admin: format!("http://{admin}"),
    };
    println!(
        "scale: {sources} sources × {items} items every 1 s, 1% of sources changing per second; upstream in process {}",
        upstream.id()
    );

    // First run: every source baselined from an empty state.
    let started = Instant::now();
    let from = now_ms();
    let child = Daemon::start(&cfg);
    let ready = bench.ready(started).await;
    let first = bench.all_polled(sources, from).await;
    println!(
        "first run: ready in {} ms, every source polled once {first} ms after start",
        ready.as_millis()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = child.pid();
    bench.etags(true).await;
    bench.window("304 window", pid, sources, seconds).await;
    bench.etags(false).await;
    bench
        .window("200-unchanged window", pid, sources, seconds.div_ceil(2))
        .await;
    bench.etags(true).await;
    let (_, rss) = usage(pid);
    let mut detect = std::mem::take(&mut *rx.detect_ms.lock().unwrap());
    println!(
        "detection-to-delivery ms p50 {} p99 {} ({} events)",
        pct(&mut detect, 0.5),
        pct(&mut detect, 0.99),
        detect.len()
    );
    println!("first run: daemon peak RSS MiB {rss:.1}");
    drop(child);
    let state = std::fs::metadata(dir.path().join("state.redb")).map_or(0, |m| m.len());
    let json = bench.stats(0).await["json_bytes"].as_u64().unwrap_or(0);
    println!(
        "state file MiB {:.1} for {:.1} MiB of JSON ({:.2}×)",
        state as f64 / 1048576.0,
        json as f64 / 1048576.0,
        state as f64 / json.max(1) as f64
    );

    // Restart on the stored state.
    let started = Instant::now();
    let from = now_ms();
    let child = Daemon::start(&cfg);
    let ready = bench.ready(started).await;
    let all = bench.all_polled(sources, from).await;
    println!(
        "restart: ready in {} ms; every source polled once {all} ms after start",
        ready.as_millis()
    );
    bench
        .window(
            "after restart (304s)",
            child.pid(),
            sources,
            seconds.div_ceil(4),
        )
        .await;
    let (_, rss) = usage(child.pid());
    println!("after restart: daemon peak RSS MiB {rss:.1}");
    drop(child);
    drop(upstream.stdin.take());
    let _ = upstream.wait();
}

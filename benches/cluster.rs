//! Several instances on PostgreSQL (design §8), measured with the release binary against a real
//! PostgreSQL server on loopback (started like the tests', from Debian's binaries):
//! polls/s and CPU per poll for redb and for 1, 2 and 3 instances on PostgreSQL, a burst of
//! changes (events delivered per second), and the failover time after `kill -9`.
//!
//! `cargo bench --bench cluster` (CLUSTER_SOURCES=1000, CLUSTER_SECONDS=10 by default). Every
//! source serves 10 items and is polled every second; a burst changes every item of every
//! source (10 × sources events, detected within a second, then committed and delivered).

#[path = "../tests/it/helpers/pg.rs"]
#[allow(dead_code)]
mod pg;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::json;

use support::{env_number, invoked_as_test, now_ms, serve, spawn_daemon, stop, usage};

struct World {
    polls: AtomicU64,
    deliveries: AtomicU64,
    /// Item version per source.
    version: Vec<AtomicU64>,
    /// Last poll per source, unix ms.
    last_poll: Vec<AtomicI64>,
}

async fn list(State(w): State<Arc<World>>, Path(i): Path<usize>) -> axum::Json<serde_json::Value> {
    w.polls.fetch_add(1, Ordering::Relaxed);
    let Some(v) = w.version.get(i) else {
        return axum::Json(json!([]));
    };
    w.last_poll[i].store(now_ms(), Ordering::Relaxed);
    let v = v.load(Ordering::Relaxed);
    let items: Vec<_> = (0..10)
        .map(|k| json!({"id": k, "title": format!("item {k} of source {i}"), "v": v}))
        .collect();
    axum::Json(json!(items))
}

async fn hook(State(w): State<Arc<World>>) -> StatusCode {
    w.deliveries.fetch_add(1, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

fn config(store: &str, base: &str, n: usize) -> String {
    let mut out = format!(
        "{store}admin:\n  listen: off\ndestinations:\n  agent:\n    url: {base}/hook\n    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\nsources:\n"
    );
    for i in 0..n {
        out.push_str(&format!(
            "  s{i}:\n    url: {base}/s/{i}\n    every: 1s\n    jitter: 0%\n    key: /id\n    to: [agent]\n"
        ));
    }
    out
}

/// CPU seconds of the PostgreSQL server: the postmaster and its children.
fn postgres_cpu(postmaster: u32) -> f64 {
    let mut total = usage(postmaster).0;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(postmaster) {
                total += usage(pid).0;
            }
        }
    }
    total
}

async fn leases(db: &str) -> i64 {
    let Ok((client, conn)) = tokio_postgres::connect(db, tokio_postgres::NoTls).await else {
        return 0;
    };
    tokio::spawn(conn);
    client
        .query_one(
            "SELECT count(*) FROM pollhook_leases WHERE expires > now()",
            &[],
        )
        .await
        .map_or(0, |r| r.get(0))
}

async fn held_by(db: &str, instance: &str) -> Vec<usize> {
    let Ok((client, conn)) = tokio_postgres::connect(db, tokio_postgres::NoTls).await else {
        return Vec::new();
    };
    tokio::spawn(conn);
    client
        .query(
            "SELECT source FROM pollhook_leases WHERE instance = $1 AND expires > now()",
            &[&instance],
        )
        .await
        .map(|rows| {
            rows.iter()
                .filter_map(|r| {
                    r.get::<_, String>(0)
                        .strip_prefix('s')
                        .and_then(|n| n.parse().ok())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Daemons that die with the bench, even when it panics.
struct Fleet(Vec<std::process::Child>);

impl Drop for Fleet {
    fn drop(&mut self) {
        for mut c in self.0.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn wait(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// One phase: `instances` daemons on `store`; returns (polls/s, daemon µs/poll, pg µs/poll,
/// events/s in a burst).
async fn phase(
    w: &Arc<World>,
    dir: &std::path::Path,
    base: &str,
    n: usize,
    seconds: u64,
    store: Option<(&str, u32)>,
    instances: usize,
) -> (f64, f64, f64, f64, Fleet) {
    let mut children = Fleet(Vec::new());
    for k in 0..instances {
        let head = match store {
            Some((db, _)) => format!("store:\n  postgres: {db}\n  lease: 3s\ninstance: i{k}\n"),
            None => format!("state: {}\n", dir.join("bench.redb").display()),
        };
        let path = dir.join(format!("i{k}.yaml"));
        std::fs::write(&path, config(&head, base, n)).unwrap();
        children.0.push(spawn_daemon(&path, "warn"));
    }
    if let Some((db, _)) = store {
        wait("leases", Duration::from_secs(120), async || {
            leases(db).await == n as i64
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = |c: &[std::process::Child]| c.iter().map(|c| usage(c.id()).0).sum::<f64>();
    let pg_cpu = || store.map_or(0.0, |(_, pid)| postgres_cpu(pid));
    let (p0, c0, g0, t0) = (
        w.polls.load(Ordering::Relaxed),
        cpu(&children.0),
        pg_cpu(),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let polls = (w.polls.load(Ordering::Relaxed) - p0) as f64;
    let secs = t0.elapsed().as_secs_f64();
    let (cpu_us, pg_us) = (
        (cpu(&children.0) - c0) * 1e6 / polls,
        (pg_cpu() - g0) * 1e6 / polls,
    );
    // Burst: every item of every source changes at once.
    let d0 = w.deliveries.load(Ordering::Relaxed);
    for v in &w.version {
        v.fetch_add(1, Ordering::Relaxed);
    }
    let took = wait("burst delivered", Duration::from_secs(120), async || {
        w.deliveries.load(Ordering::Relaxed) - d0 >= 10 * n as u64
    })
    .await;
    (
        polls / secs,
        cpu_us,
        pg_us,
        (10 * n) as f64 / took.as_secs_f64(),
        children,
    )
}

#[tokio::main]
async fn main() {
    if invoked_as_test() {
        return;
    }
    let n = env_number("CLUSTER_SOURCES", 1000);
    let seconds = env_number("CLUSTER_SECONDS", 10) as u64;
    let Some(server) = pg::server() else {
        eprintln!("PostgreSQL is not installed (apt install postgresql); nothing to measure");
        return;
    };
    let w = Arc::new(World {
        polls: AtomicU64::new(0),
        deliveries: AtomicU64::new(0),
        version: (0..n).map(|_| AtomicU64::new(1)).collect(),
        last_poll: (0..n).map(|_| AtomicI64::new(0)).collect(),
    });
    let app = Router::new()
        .route("/s/{i}", get(list))
        .route("/hook", post(hook))
        .with_state(w.clone());
    let base = serve(app).await;
    let dir = tempfile::tempdir().unwrap();
    println!(
        "cluster bench: {n} sources × 10 items, every 1 s, {seconds} s windows; 2 cores shared by everything"
    );
    println!(
        "{:<22} {:>9} {:>14} {:>14} {:>12}",
        "store", "polls/s", "daemon µs/poll", "postgres µs/poll", "burst ev/s"
    );
    let (p, c, _, e, mut children) = phase(&w, dir.path(), &base, n, seconds, None, 1).await;
    println!(
        "{:<22} {p:>9.0} {c:>14.1} {:>14} {e:>12.0}",
        "redb, 1 instance", "-"
    );
    std::mem::take(&mut children.0).into_iter().for_each(stop);
    for k in 1..=3 {
        let db = server.database();
        let (p, c, g, e, children) = phase(
            &w,
            dir.path(),
            &base,
            n,
            seconds,
            Some((&db, server.pid)),
            k,
        )
        .await;
        println!(
            "{:<22} {p:>9.0} {c:>14.1} {g:>14.1} {e:>12.0}",
            format!("postgres, {k} instance(s)")
        );
        let mut children = children;
        if k < 3 {
            std::mem::take(&mut children.0).into_iter().for_each(stop);
            continue;
        }
        // Failover: kill -9 one of the three; time until every source it held is polled again.
        let victims = held_by(&db, "i0").await;
        let mut dead = children.0.remove(0);
        let killed = now_ms();
        let _ = dead.kill();
        let _ = dead.wait();
        let took = wait("failover", Duration::from_secs(60), async || {
            victims
                .iter()
                .all(|i| w.last_poll[*i].load(Ordering::Relaxed) > killed)
        })
        .await;
        println!(
            "failover after kill -9 (lease 3 s, interval 1 s): all {} of its sources polled again after {:.2} s",
            victims.len(),
            took.as_secs_f64()
        );
        std::mem::take(&mut children.0).into_iter().for_each(stop);
    }
}

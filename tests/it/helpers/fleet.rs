//! A fleet of pollhook instances on one PostgreSQL database, for the several-instances tests
//! (`cluster.rs`, `migration.rs`): a scripted upstream (`/s/{n}`, one item per source) and
//! receivers in one server, configs, processes, lease queries and delivery checks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{HEAVY, KillOnDrop, SECRET, binary, pg, serve, wait_until};

#[derive(Default)]
pub struct World {
    /// Item version per source (one item, id 1, per source).
    pub version: HashMap<usize, u64>,
    /// Every (source, version) ever served.
    pub served: HashSet<(usize, u64)>,
    /// When each source was polled.
    pub polls: HashMap<usize, Vec<Instant>>,
    /// Deliveries: (webhook-id, body, accepted).
    pub deliveries: Vec<(String, Vec<u8>, bool)>,
    /// Fail every fifth answer.
    pub flaky: bool,
    pub answers: u64,
}

pub type Shared = Arc<Mutex<World>>;

pub async fn list(State(w): State<Shared>, UrlPath(id): UrlPath<usize>) -> axum::Json<Value> {
    let mut w = w.lock().unwrap();
    w.polls.entry(id).or_default().push(Instant::now());
    let v = *w.version.entry(id).or_insert(1);
    w.served.insert((id, v));
    axum::Json(json!([{ "id": 1, "v": v }]))
}

pub async fn receive(State(w): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut w = w.lock().unwrap();
    w.answers += 1;
    let ok = !(w.flaky && w.answers.is_multiple_of(5));
    record(&mut w, "", &headers, body, ok)
}

/// Refuses until [`ACCEPT`] is set.
pub async fn refusing(State(w): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let ok = ACCEPT.load(std::sync::atomic::Ordering::SeqCst);
    record(&mut w.lock().unwrap(), "refusing/", &headers, body, ok)
}

/// Always refuses.
pub async fn gone(State(w): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    record(&mut w.lock().unwrap(), "gone/", &headers, body, false)
}

pub fn record(
    w: &mut World,
    prefix: &str,
    headers: &HeaderMap,
    body: Bytes,
    ok: bool,
) -> StatusCode {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    w.deliveries
        .push((format!("{prefix}{id}"), body.to_vec(), ok));
    if ok {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

/// The upstream (`/s/{n}`) and the receiver (`/hook`), one server.
pub async fn world() -> (Shared, String) {
    let w: Shared = Arc::default();
    let app = Router::new()
        .route("/s/{id}", get(list))
        .route("/hook", post(receive))
        .route("/refusing", post(refusing))
        .route("/gone", post(gone))
        .with_state(w.clone());
    (w.clone(), serve(app).await)
}

/// A config for `n` sources polled every `every` on the database `db`.
pub fn yaml(db: &str, instance: &str, base: &str, n: usize, every: &str, lease: &str) -> String {
    let mut out = format!(
        "store:\n  postgres: {db}\n  lease: {lease}\ninstance: {instance}\nadmin:\n  listen: off\n\
         destinations:\n  agent:\n    url: {base}/hook\n    secret: ${{SECRET}}\n    \
         retry: [100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms]\nsources:\n"
    );
    for i in 0..n {
        out.push_str(&format!(
            "  s{i}:\n    url: {base}/s/{i}\n    every: {every}\n    jitter: 0%\n    key: /id\n    to: [agent]\n"
        ));
    }
    out
}

/// Starts `pollhook run` as instance `name`.
pub fn spawn(dir: &std::path::Path, name: &str, yaml: &str) -> KillOnDrop {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).expect("write config");
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
    let child: Child = Command::new(binary())
        .args(["run", "-c"])
        .arg(&path)
        .env("SECRET", SECRET)
        .env("POLLHOOK_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start pollhook");
    KillOnDrop(child)
}

/// Starts one instance per name, each with the config `config(name)` gives.
pub fn fleet(
    dir: &std::path::Path,
    names: &[&str],
    config: impl Fn(&str) -> String,
) -> Vec<KillOnDrop> {
    names.iter().map(|n| spawn(dir, n, &config(n))).collect()
}

/// Runs `sql` on database `url` (no rows while the schema does not exist yet).
pub async fn query(url: &str, sql: &str) -> Vec<tokio_postgres::Row> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(conn);
    client.query(sql, &[]).await.unwrap_or_default()
}

/// Live leases per instance.
pub async fn leases(url: &str) -> BTreeMap<String, usize> {
    query(
        url,
        "SELECT instance, count(*) FROM pollhook_leases WHERE expires > now() GROUP BY instance",
    )
    .await
    .iter()
    .map(|r| (r.get(0), r.get::<_, i64>(1) as usize))
    .collect()
}

/// Waits until `n` sources are leased, spread over `instances` instances.
pub async fn spread(db: &str, instances: usize, n: usize) {
    let what = format!("{n} sources leased over {instances} instances");
    wait_until(T, &what, || async {
        let l = leases(db).await;
        l.len() == instances && l.values().sum::<usize>() == n
    })
    .await;
}

/// Live leases of one instance: the sources it holds.
pub async fn held_by(url: &str, instance: &str) -> Vec<usize> {
    query(
        url,
        &format!(
            "SELECT source FROM pollhook_leases WHERE instance = '{instance}' AND expires > now()"
        ),
    )
    .await
    .iter()
    .filter_map(|r| {
        r.get::<_, String>(0)
            .strip_prefix('s')
            .and_then(|n| n.parse().ok())
    })
    .collect()
}

pub fn signal(child: &KillOnDrop, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &child.0.id().to_string()])
        .status();
}

/// Polls of each source in [from, to), as gaps between consecutive polls.
pub fn gaps(w: &World, from: Instant, to: Instant) -> Vec<(usize, Duration)> {
    let mut out = Vec::new();
    for (id, times) in &w.polls {
        let window: Vec<&Instant> = times.iter().filter(|t| **t >= from && **t < to).collect();
        for pair in window.windows(2) {
            out.push((*id, pair[1].duration_since(*pair[0])));
        }
    }
    out
}

/// Delivery invariants: one body per event id; one event id per (source, revision); every
/// delivered item version was served; each source's last version was delivered; with
/// `ordered`, every source's attempts arrive in revision order (invariant 4 across instances:
/// a revision is not attempted while a lower one is pending, whichever instance holds it).
pub fn check_deliveries(w: &World, sources: usize, ordered: bool) {
    if ordered {
        let mut last: HashMap<String, u64> = HashMap::new();
        for (id, body, _) in &w.deliveries {
            let e: Value = serde_json::from_slice(body).expect("JSON event");
            let source = e["source"].as_str().unwrap_or("").to_owned();
            let revision = e["revision"].as_u64().unwrap_or(0);
            let before = last.insert(source.clone(), revision).unwrap_or(0);
            assert!(
                revision >= before,
                "{source}: revision {revision} ({id}) attempted after revision {before}"
            );
        }
    }
    let mut bodies: HashMap<&str, &[u8]> = HashMap::new();
    let mut ids: HashMap<(String, u64), String> = HashMap::new();
    let mut delivered: HashMap<usize, u64> = HashMap::new();
    for (id, body, ok) in &w.deliveries {
        if let Some(prev) = bodies.insert(id, body) {
            assert_eq!(
                prev,
                &body[..],
                "event {id} was sent with two different bodies"
            );
        }
        let e: Value = serde_json::from_slice(body).expect("JSON event");
        let source = e["source"].as_str().unwrap_or("").to_owned();
        let revision = e["revision"].as_u64().unwrap_or(0);
        if let Some(other) = ids.insert((source.clone(), revision), id.clone()) {
            assert_eq!(
                other, *id,
                "two events for {source} revision {revision}: a stale commit"
            );
        }
        let n: usize = source.trim_start_matches('s').parse().expect("source name");
        let v = e["data"]["v"].as_u64().expect("item version");
        assert!(
            w.served.contains(&(n, v)),
            "phantom: {source} v{v} was never served"
        );
        if *ok {
            let best = delivered.entry(n).or_default();
            *best = (*best).max(v);
        }
    }
    for n in 0..sources {
        let want = w.version.get(&n).copied().unwrap_or(1);
        assert_eq!(
            delivered.get(&n).copied(),
            Some(want),
            "s{n}: last version not delivered"
        );
    }
}

pub fn all_delivered(w: &World, sources: usize) -> bool {
    let mut delivered: HashMap<usize, u64> = HashMap::new();
    for (_, body, ok) in &w.deliveries {
        if !ok {
            continue;
        }
        let e: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let n = e["source"]
            .as_str()
            .and_then(|s| s.trim_start_matches('s').parse().ok());
        if let (Some(n), Some(v)) = (n, e["data"]["v"].as_u64()) {
            let best = delivered.entry(n).or_default();
            *best = (*best).max(v);
        }
    }
    (0..sources)
        .all(|n| delivered.get(&n).copied() == Some(w.version.get(&n).copied().unwrap_or(1)))
}

/// Bumps a few sources' item versions every 100 ms until the returned flag is cleared.
pub fn churn(w: &Shared, sources: usize) -> Arc<std::sync::atomic::AtomicBool> {
    let on = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (w, flag) = (w.clone(), on.clone());
    tokio::spawn(async move {
        let mut tick = 0usize;
        while flag.load(std::sync::atomic::Ordering::SeqCst) {
            {
                let mut w = w.lock().unwrap();
                let n = (tick * 7) % sources;
                *w.version.entry(n).or_insert(1) += 1;
            }
            tick += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    on
}

pub const T: Duration = Duration::from_secs(60);

/// What every test here starts with: its turn, a fresh database, a temp dir, the world.
pub struct Setup {
    pub _serial: tokio::sync::MutexGuard<'static, ()>,
    pub db: String,
    pub dir: tempfile::TempDir,
    pub w: Shared,
    pub base: String,
}

/// [`Setup`], or `None` (after a loud skip message) without PostgreSQL outside CI.
pub async fn setup(test: &str) -> Option<Setup> {
    let server = pg::require(test)?;
    // One heavy test at a time: each runs several daemons, and their timing is checked.
    let _serial = HEAVY.lock().await;
    let (w, base) = world().await;
    Some(Setup {
        _serial,
        db: server.database(),
        dir: tempfile::tempdir().unwrap(),
        w,
        base,
    })
}

/// Accepts deliveries at `/refusing` once set.
pub static ACCEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Starts `pollhook run -c config`, logging errors only.
pub fn run(config: &std::path::Path) -> KillOnDrop {
    KillOnDrop(super::run_binary(config))
}

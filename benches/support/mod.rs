//! Shared by the load and soak benches: a loopback server and the `cargo test` guard.

use axum::Router;

/// Serves `app` on a free loopback port; returns its base URL.
pub async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    url
}

/// `cargo test --benches` runs bench binaries with `--test` or `--list`: nothing to measure then.
pub fn invoked_as_test() -> bool {
    std::env::args().any(|a| a == "--test" || a == "--list")
}

/// A positive number from the environment, or `default`.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

/// Starts the real `pollhook run -c config`, logging at `level` and above on stderr.
/// `BENCH_WRAP` (for example `heaptrack -o /tmp/ph`) runs the daemon under a profiler; the
/// figures read from `/proc` are then the wrapper's. `BENCH_WRAP_SKIP=N` starts the first N
/// daemons unwrapped (e.g. 1 for the scale bench's restart only: a profiled first run at 10,000
/// sources is too slow to finish).
pub fn spawn_daemon(config: &std::path::Path, level: &str) -> std::process::Child {
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let bin = env!("CARGO_BIN_EXE_pollhook");
    let nth = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let wrap = match nth < env_number("BENCH_WRAP_SKIP", 0) {
        true => String::new(),
        false => std::env::var("BENCH_WRAP").unwrap_or_default(),
    };
    let mut words = wrap.split_whitespace();
    let mut cmd = match words.next() {
        Some(first) => {
            let mut c = std::process::Command::new(first);
            c.args(words).arg(bin);
            c
        }
        None => std::process::Command::new(bin),
    };
    cmd.args(["run", "-c"])
        .arg(config)
        .env("POLLHOOK_LOG", level)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start pollhook")
}

/// Stops a daemon with SIGTERM and waits for it.
pub fn stop(mut child: std::process::Child) {
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

/// (user + system CPU seconds, peak RSS in MiB) of a process, from `/proc`.
#[allow(dead_code)] // not every bench reports CPU
pub fn usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    let ticks = field(11).unwrap_or(0.0) + field(12).unwrap_or(0.0);
    // Linux reports CPU times in USER_HZ, 100 on every architecture Rust targets.
    (ticks / 100.0, status_kib(pid, "VmHWM:") as f64 / 1024.0)
}

/// A `/proc/PID/status` field in KiB (`VmRSS:`, `VmHWM:`), 0 when unreadable.
#[allow(dead_code)] // not every bench reads memory
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The `p` quantile (0–1) of `v` (sorted in place); -1 when empty.
#[allow(dead_code)] // not every bench reports latencies
pub fn pct(v: &mut [i64], p: f64) -> i64 {
    if v.is_empty() {
        return -1;
    }
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Unix time in milliseconds.
#[allow(dead_code)] // not every bench times deliveries
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Milliseconds from an event's detection (its envelope `timestamp`) to `now`.
#[allow(dead_code)] // not every bench times deliveries
pub fn detection_ms(event: &serde_json::Value, now: i64) -> Option<i64> {
    let ts = event["timestamp"].as_str()?;
    let at = chrono::DateTime::parse_from_rfc3339(ts).ok()?;
    Some(now - at.timestamp_millis())
}

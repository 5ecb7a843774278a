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
pub fn spawn_daemon(config: &std::path::Path, level: &str) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_pollhook"))
        .args(["run", "-c"])
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

//! Signals → one cancellation token. The daemon derives a child token per task from it; SIGINT
//! or SIGTERM cancels the root, which stops new polls and starts the delivery drain.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long in-flight deliveries may finish after a stop signal; rows still in flight after
/// that stay pending in the store. Below systemd's default stop timeout and the 10 s promise.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(8);

/// A token cancelled on the first SIGINT or SIGTERM.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        cancel.cancel();
        tracing::info!("stop signal received; draining");
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops pollhook");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

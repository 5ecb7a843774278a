//! Supervision of long-running tasks (each source, the dispatcher): a task that panics is logged
//! at ERROR, counted in `pollhook_task_restarts_total{task}` and started again after a backoff;
//! one that keeps dying is reported on `/readyz` with the reason, so an operator or an
//! orchestrator sees it. One bad source never stops the others, so `panic = "abort"` is not an
//! option.
//!
//! Design notes: the task's future is polled inside `catch_unwind` on the same tokio task, so
//! whatever it borrows (its command channel) survives the panic and is handed to the next run.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::status::Registry;
use crate::telemetry::{self as m, panic_message};

/// First restart delay; doubles per consecutive panic.
pub const RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// Longest restart delay.
pub const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(60);
/// Consecutive panics after which the task is reported failing on `/readyz`.
pub const FAILING_AFTER: u32 = 3;
/// A run that lasts this long clears the panic count and the failing report.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// Runs the futures `run` makes, one after another, until one returns normally or `shutdown` is
/// cancelled; a panicking run is restarted with backoff. `task` names it in logs, the metric
/// label (`kind`) and `/readyz`.
pub async fn supervised<F, Fut>(
    kind: &'static str,
    task: &str,
    registry: &Registry,
    shutdown: &CancellationToken,
    mut run: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut panics = 0u32;
    loop {
        let mut fut = std::pin::pin!(AssertUnwindSafe(run()).catch_unwind());
        let result = tokio::select! {
            r = &mut fut => r,
            _ = tokio::time::sleep(HEALTHY_AFTER) => {
                if panics > 0 {
                    panics = 0;
                    registry.set_task_failing(task, None);
                }
                fut.await
            }
        };
        let Err(payload) = result else {
            registry.set_task_failing(task, None);
            return;
        };
        panics += 1;
        let message = panic_message(payload.as_ref());
        metrics::counter!(m::TASK_RESTARTS, "task" => kind).increment(1);
        let backoff = RESTART_BACKOFF
            .saturating_mul(1 << (panics - 1).min(6))
            .min(MAX_RESTART_BACKOFF);
        tracing::error!(task = %task, panics, error = %message, restart_in_s = backoff.as_secs(), "task panicked; restarting it");
        if panics >= FAILING_AFTER {
            registry.set_task_failing(
                task,
                Some(format!(
                    "{task} panicked {panics} times in a row: {message}"
                )),
            );
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A task that panics is restarted, reported failing after repeated panics, and cleared
    /// once a run ends normally.
    #[tokio::test(start_paused = true)]
    async fn panicking_task_is_restarted_and_reported() {
        let registry = Registry::default();
        let runs = AtomicU32::new(0);
        let shutdown = CancellationToken::new();
        supervised("test", "source t", &registry, &shutdown, || {
            let n = runs.fetch_add(1, Ordering::SeqCst);
            let registry = &registry;
            async move {
                if n == FAILING_AFTER {
                    assert!(
                        registry.failing_tasks()[0].contains("panicked 3 times"),
                        "{:?}",
                        registry.failing_tasks()
                    );
                    return;
                }
                panic!("boom {n}");
            }
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), FAILING_AFTER + 1);
        assert!(registry.failing_tasks().is_empty());
    }

    /// Shutdown during the restart backoff ends supervision.
    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_restarts() {
        let registry = Registry::default();
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let runs = AtomicU32::new(0);
        supervised("test", "t", &registry, &shutdown, || {
            runs.fetch_add(1, Ordering::SeqCst);
            async { panic!("always") }
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}

//! Housekeeping of the running daemon: retention (dead letters, tombstones, removed sources,
//! the delivery log) and the dispatcher's reconcile with the store.

use std::time::Duration;

use super::{Daemon, DispatchCmd, HISTORY_PRUNE_BUDGET, HOUSEKEEPING_EVERY};
use crate::config::Config;
use crate::delivery::now_ms;

/// Unix ms `age` before `now_ms` (saturating: a huge age is the beginning of time).
pub(super) fn ago(now_ms: i64, age: Duration) -> i64 {
    now_ms.saturating_sub(age.as_millis().try_into().unwrap_or(i64::MAX))
}

/// Housekeeping runs hourly, or at a quarter of the shortest retention (at least every second),
/// so nothing outlives its retention by much.
pub(super) fn housekeeping_every(config: &Config) -> Duration {
    let shortest = config
        .dead_letter_max_age
        .map_or(config.tombstone_ttl, |d| d.min(config.tombstone_ttl));
    (shortest / 4).clamp(Duration::from_secs(1), HOUSEKEEPING_EVERY)
}

impl Daemon {
    /// One small step of delivery-log pruning (`history.keep`, `history.max_records`): a
    /// bounded number of records per transaction, so the writer never stalls on it.
    pub(super) async fn prune_history(&self) {
        let h = self.config.history;
        if !h.enabled() {
            return;
        }
        let cut = ago(now_ms(), h.keep);
        if let Err(e) = self
            .store
            .prune_history(cut, h.max_records, HISTORY_PRUNE_BUDGET)
            .await
        {
            tracing::warn!(error = %e, "cannot prune the delivery log; will try again");
        }
    }

    /// Asks the dispatcher to compare its queue with the store's outbox; stranded rows are
    /// logged and queued by the dispatcher (and counted in `pollhook_outbox_stranded_total`).
    pub(super) fn reconcile(&self) {
        // On a shared store other instances' rows are theirs; the claimer finds stranded ones.
        if self.store.backend().lease().is_some() {
            return;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.dispatch.send(DispatchCmd::Reconcile(tx)).is_ok() {
            tokio::spawn(async move {
                if let Ok(n) = rx.await
                    && n > 0
                {
                    tracing::error!(
                        stranded = n,
                        "reconcile found committed outbox rows the dispatcher never had; they are queued now (a bug: please report it)"
                    );
                }
            });
        }
    }

    /// Prunes tombstones older than `tombstone_ttl`, one source per transaction, and the state
    /// of sources missing from the config for longer than that.
    async fn prune(&self) {
        let now = now_ms();
        let cut = ago(now, self.config.tombstone_ttl);
        let mut pruned = 0;
        for name in self.config.sources.keys() {
            match self.store.prune_tombstones(name, cut, now).await {
                Ok(n) => pruned += n,
                Err(e) => tracing::warn!(source = %name, error = %e, "cannot prune tombstones"),
            }
        }
        if pruned > 0 {
            tracing::info!(pruned, "expired tombstones pruned");
            metrics::counter!(crate::telemetry::PRUNED, "what" => "tombstone")
                .increment(pruned as u64);
        }
        match self.store.drop_removed(cut).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(
                    sources = n,
                    "state of sources removed from the config pruned"
                );
                metrics::counter!(crate::telemetry::PRUNED, "what" => "source").increment(n as u64);
            }
            Err(e) => tracing::warn!(error = %e, "cannot prune removed sources"),
        }
    }

    /// Purges dead letters older than `dead_letter_max_age`.
    pub(super) async fn housekeeping(&self) {
        self.prune().await;
        let Some(max_age) = self.config.dead_letter_max_age else {
            return;
        };
        let cut = ago(now_ms(), max_age);
        match self.store.purge_dead(Some(cut)).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(purged = n, "expired dead letters purged");
                let _ = self.dispatch.send(DispatchCmd::DeadChanged);
            }
            Err(e) => tracing::warn!(error = %e, "cannot purge expired dead letters"),
        }
    }
}

//! The dispatcher's two store-facing helpers: the settle writer, which records attempt
//! outcomes in order and in groups, and (on a shared store) the claimer, which hands the
//! dispatcher due rows that no live instance is delivering.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::store::{OutboxRow, RowSink, Settle, Store, StoreError};

/// Rows claimed at once by the claimer on a shared store.
const CLAIM_BATCH: usize = 1_000;
/// How often the claimer looks for rows no live instance holds.
pub const CLAIM_EVERY: Duration = Duration::from_millis(500);

/// On a shared store (design §8): claims due outbox rows no live instance is delivering
/// (those of a dead instance, or ones that waited for an earlier revision held elsewhere) and
/// hands them to the dispatcher, until `stop`.
pub async fn claimer(store: Store, rows: RowSink, stop: CancellationToken) {
    let mut tick = tokio::time::interval(CLAIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.read(|b| b.claim(CLAIM_BATCH, false)).await {
            Ok(claimed) if claimed.is_empty() => {}
            Ok(claimed) => {
                tracing::debug!(rows = claimed.len(), "outbox rows claimed");
                if rows.send(claimed).is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot claim outbox rows; will try again"),
        }
    }
}

/// A message to the settle writer.
#[derive(Debug)]
pub enum SettleMsg {
    /// One attempt's outcome.
    Outcome(Settle),
    /// Commit everything queued before this, then answer with the store's pending rows.
    Snapshot(oneshot::Sender<Result<Vec<OutboxRow>, StoreError>>),
}

/// Writes settlements in order, folding whatever is queued into one store call; a snapshot
/// request is answered after everything queued before it is committed.
pub async fn settle_loop(store: Store, mut rx: mpsc::UnboundedReceiver<SettleMsg>) {
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::new();
        let mut snapshot = None;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                SettleMsg::Outcome(s) => batch.push(s),
                SettleMsg::Snapshot(reply) => {
                    snapshot = Some(reply);
                    break;
                }
            }
            next = rx.try_recv().ok();
        }
        if !batch.is_empty()
            && let Err(e) = store.settle(batch).await
        {
            tracing::error!(error = %e, "cannot record delivery outcomes; affected events will be sent again after a restart");
        }
        if let Some(reply) = snapshot {
            let _ = reply.send(store.snapshot().await);
        }
    }
}

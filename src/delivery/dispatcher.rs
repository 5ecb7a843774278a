//! The dispatcher: holds every pending outbox row in memory, sends those that are due under each
//! destination's concurrency limit, and records each outcome in the store.
//!
//! Design notes:
//! - Per-item order (invariant 4): rows are chained by (destination, source, item key) in `seq`
//!   order, and only a chain's head is ever eligible, so rev 4 of an item is not attempted while
//!   rev 3 to the same destination is pending. Chains never wait on each other.
//! - Isolation (invariant 5): each destination has its own ready heap and in-flight count; a
//!   hanging destination fills only its own slots. Sends run in their own tasks; the loop itself
//!   never awaits the network.
//! - Retry times live on the row (`due_ms`, persisted by the settle writer), not in a sleeping
//!   task, so a restart resumes the same schedule.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::retry::{Decision, Outcome, decide, describe};
use super::send::attempt;
use super::signing::Signer;
use crate::config::Destination;
use crate::store::{OutboxRow, Settle, Store};
use crate::telemetry as m;

/// Sends freshly committed rows to the dispatcher.
pub type RowSender = mpsc::UnboundedSender<Vec<OutboxRow>>;
/// The dispatcher's end of [`RowSender`].
pub type RowReceiver = mpsc::UnboundedReceiver<Vec<OutboxRow>>;

struct DestState {
    dest: Arc<Destination>,
    signer: Arc<Signer>,
    ready: BinaryHeap<Reverse<(i64, u64)>>,
    inflight: usize,
    /// False once the destination left the config: its rows stay pending, unsent.
    enabled: bool,
}

impl DestState {
    fn new(dest: &Arc<Destination>) -> DestState {
        DestState {
            dest: dest.clone(),
            signer: Arc::new(Signer::new(dest)),
            ready: BinaryHeap::new(),
            inflight: 0,
            enabled: true,
        }
    }
}

/// A command to the running dispatcher.
#[derive(Debug)]
pub enum DispatchCmd {
    /// Report per-destination outbox statistics.
    Stats(oneshot::Sender<Vec<DestStats>>),
    /// Apply a reloaded set of destinations; `rows` are the stored pending rows of destinations
    /// the dispatcher has not known before.
    Destinations {
        /// The new destinations.
        dests: Vec<Arc<Destination>>,
        /// Pending rows for newly known destinations.
        rows: Vec<OutboxRow>,
    },
}

/// Outbox statistics of one destination.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DestStats {
    /// Destination name.
    pub destination: String,
    /// Whether it is in the current config.
    pub configured: bool,
    /// Pending rows (in flight included).
    pub pending: usize,
    /// Requests in flight.
    pub in_flight: usize,
    /// Age of the oldest pending row, seconds.
    pub oldest_pending_age_seconds: Option<f64>,
}

/// The dispatcher's state; see the module notes.
pub struct Dispatcher {
    rows: HashMap<u64, OutboxRow>,
    chains: HashMap<(String, String, String), VecDeque<u64>>,
    dests: HashMap<String, DestState>,
    client: reqwest::Client,
    settle_tx: mpsc::UnboundedSender<Settle>,
    done_tx: mpsc::UnboundedSender<(u64, Outcome)>,
    done_rx: mpsc::UnboundedReceiver<(u64, Outcome)>,
    tasks: JoinSet<()>,
}

fn chain_key(row: &OutboxRow) -> (String, String, String) {
    (row.destination.clone(), row.source.clone(), row.key.clone())
}

/// Current unix time in ms.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Dispatcher {
    /// A dispatcher for `destinations`, settling outcomes through `settle_tx`.
    pub fn new(
        destinations: &[Arc<Destination>],
        client: reqwest::Client,
        settle_tx: mpsc::UnboundedSender<Settle>,
    ) -> Self {
        let dests = destinations
            .iter()
            .map(|d| (d.name.clone(), DestState::new(d)))
            .collect();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Dispatcher {
            rows: HashMap::new(),
            chains: HashMap::new(),
            dests,
            client,
            settle_tx,
            done_tx,
            done_rx,
            tasks: JoinSet::new(),
        }
    }

    /// Queues a committed row.
    pub fn add(&mut self, row: OutboxRow) {
        let Some(d) = self.dests.get_mut(&row.destination) else {
            tracing::warn!(destination = %row.destination, event = %row.event_id, "outbox row for a destination that is no longer configured; kept in the store, not sent");
            return;
        };
        let chain = self.chains.entry(chain_key(&row)).or_default();
        chain.push_back(row.seq);
        if chain.len() == 1 {
            d.ready.push(Reverse((row.due_ms, row.seq)));
        }
        self.rows.insert(row.seq, row);
    }

    fn inflight(&self) -> usize {
        self.dests.values().map(|d| d.inflight).sum()
    }

    /// Per-destination statistics.
    pub fn stats(&self, now: i64) -> Vec<DestStats> {
        let mut out: Vec<DestStats> = self
            .dests
            .iter()
            .map(|(name, d)| DestStats {
                destination: name.clone(),
                configured: d.enabled,
                pending: 0,
                in_flight: d.inflight,
                oldest_pending_age_seconds: None,
            })
            .collect();
        out.sort_by(|a, b| a.destination.cmp(&b.destination));
        for row in self.rows.values() {
            if let Ok(i) = out.binary_search_by(|s| s.destination.as_str().cmp(&row.destination)) {
                let age = (now - row.created_ms).max(0) as f64 / 1000.0;
                out[i].pending += 1;
                out[i].oldest_pending_age_seconds = Some(
                    out[i]
                        .oldest_pending_age_seconds
                        .map_or(age, |a: f64| a.max(age)),
                );
            }
        }
        out
    }

    fn command(&mut self, cmd: DispatchCmd) {
        match cmd {
            DispatchCmd::Stats(reply) => {
                let _ = reply.send(self.stats(now_ms()));
            }
            DispatchCmd::Destinations { dests, rows } => {
                for d in self.dests.values_mut() {
                    d.enabled = false;
                }
                for dest in &dests {
                    match self.dests.get_mut(&dest.name) {
                        Some(state) => {
                            state.signer = Arc::new(Signer::new(dest));
                            state.dest = dest.clone();
                            state.enabled = true;
                        }
                        None => {
                            self.dests.insert(dest.name.clone(), DestState::new(dest));
                        }
                    }
                }
                rows.into_iter().for_each(|r| self.add(r));
            }
        }
    }

    /// Starts every due head row that fits its destination's concurrency; returns when the next
    /// row becomes due.
    fn dispatch_due(&mut self, now: i64) -> Option<i64> {
        let mut next: Option<i64> = None;
        for d in self.dests.values_mut().filter(|d| d.enabled) {
            while d.inflight < d.dest.concurrency {
                let Some(Reverse((due, seq))) = d.ready.peek().copied() else {
                    break;
                };
                if due > now {
                    next = Some(next.map_or(due, |n| n.min(due)));
                    break;
                }
                d.ready.pop();
                let Some(row) = self.rows.get(&seq) else {
                    continue;
                };
                d.inflight += 1;
                let (client, dest, signer, row, done) = (
                    self.client.clone(),
                    d.dest.clone(),
                    d.signer.clone(),
                    row.clone(),
                    self.done_tx.clone(),
                );
                self.tasks.spawn(async move {
                    let outcome = attempt(&client, &dest, &signer, &row).await;
                    let _ = done.send((row.seq, outcome));
                });
            }
        }
        next
    }

    /// Applies the outcome of one attempt.
    fn complete(&mut self, seq: u64, outcome: Outcome, now: i64) {
        let Some(row) = self.rows.get_mut(&seq) else {
            return;
        };
        let Some(d) = self.dests.get_mut(&row.destination) else {
            return;
        };
        d.inflight -= 1;
        let attempts = row.attempts + 1;
        match decide(attempts, &outcome, &d.dest.retry, now) {
            Decision::Done => {
                tracing::debug!(destination = %row.destination, event = %row.event_id, attempts, "delivered");
                let latency = (now - row.created_ms).max(0) as f64 / 1000.0;
                metrics::histogram!(m::DELIVERY_LATENCY, "destination" => row.destination.clone())
                    .record(latency);
                metrics::counter!(m::DELIVERIES, "destination" => row.destination.clone(), "outcome" => "delivered").increment(1);
                let _ = self.settle_tx.send(Settle::Delivered { seq });
                self.finish(seq);
            }
            Decision::RetryAt(due) => {
                metrics::counter!(m::DELIVERIES, "destination" => row.destination.clone(), "outcome" => "retry").increment(1);
                let error = describe(&outcome);
                tracing::warn!(destination = %row.destination, event = %row.event_id, attempts, error = %error, retry_in_ms = due - now, "delivery failed; will retry");
                row.attempts = attempts;
                row.due_ms = due;
                row.last_error = Some(error.clone());
                d.ready.push(Reverse((due, seq)));
                let _ = self.settle_tx.send(Settle::Retry {
                    seq,
                    attempts,
                    due_ms: due,
                    error,
                });
            }
            Decision::Dead(reason) => {
                metrics::counter!(m::DELIVERIES, "destination" => row.destination.clone(), "outcome" => "dead").increment(1);
                tracing::error!(destination = %row.destination, event = %row.event_id, attempts, reason = %reason, "delivery dead-lettered; inspect and re-send it");
                let _ = self.settle_tx.send(Settle::Dead {
                    seq,
                    attempts,
                    reason,
                    now_ms: now,
                });
                self.finish(seq);
            }
        }
    }

    /// Removes a settled head row and makes the next row of its chain eligible.
    fn finish(&mut self, seq: u64) {
        let Some(row) = self.rows.remove(&seq) else {
            return;
        };
        let key = chain_key(&row);
        let Some(chain) = self.chains.get_mut(&key) else {
            return;
        };
        chain.pop_front();
        match chain.front().and_then(|next| self.rows.get(next)) {
            Some(next) => {
                if let Some(d) = self.dests.get_mut(&row.destination) {
                    d.ready.push(Reverse((next.due_ms, next.seq)));
                }
            }
            None => {
                self.chains.remove(&key);
            }
        }
    }

    /// Runs until `shutdown`, then lets in-flight attempts finish for at most `drain`; rows
    /// still in flight after that stay pending in the store.
    pub async fn run(
        mut self,
        mut incoming: RowReceiver,
        mut commands: mpsc::UnboundedReceiver<DispatchCmd>,
        shutdown: CancellationToken,
        drain: Duration,
    ) {
        loop {
            let next = self.dispatch_due(now_ms());
            let sleep = next
                .map(|due| Instant::now() + Duration::from_millis((due - now_ms()).max(0) as u64));
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some((seq, outcome)) = self.done_rx.recv() => {
                    self.complete(seq, outcome, now_ms());
                    while let Ok((seq, outcome)) = self.done_rx.try_recv() {
                        self.complete(seq, outcome, now_ms());
                    }
                }
                Some(rows) = incoming.recv() => rows.into_iter().for_each(|r| self.add(r)),
                Some(cmd) = commands.recv() => self.command(cmd),
                _ = sleep_until(sleep) => {}
            }
            while self.tasks.try_join_next().is_some() {}
        }
        self.drain(drain).await;
    }

    async fn drain(&mut self, drain: Duration) {
        let deadline = Instant::now() + drain;
        while self.inflight() > 0 {
            tokio::select! {
                Some((seq, outcome)) = self.done_rx.recv() => self.complete(seq, outcome, now_ms()),
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(inflight = self.inflight(), "drain deadline reached; unfinished deliveries stay pending");
                    break;
                }
            }
        }
        self.tasks.abort_all();
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes settlements in order, folding whatever is queued into one store call.
pub async fn settle_loop(store: Store, mut rx: mpsc::UnboundedReceiver<Settle>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(s) = rx.try_recv() {
            batch.push(s);
        }
        if let Err(e) = store.settle(batch).await {
            tracing::error!(error = %e, "cannot record delivery outcomes; affected events will be sent again after a restart");
        }
    }
}

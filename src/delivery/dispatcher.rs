//! The dispatcher: keeps a small header of every pending outbox row in memory (`queue.rs`),
//! sends those that are due under each destination's concurrency limit, reading each row's body
//! from the store only when it is sent, and records each outcome in the store.
//!
//! Design notes:
//! - Per-item order and de-duplication live in [`Queue`]; see its notes.
//! - Isolation (invariant 5): each destination has its own ready heap and in-flight count; a
//!   hanging destination fills only its own slots. Sends run in their own tasks; the loop itself
//!   never awaits the network.
//! - Bounded memory: at most `concurrency` bodies per destination are in memory at once (the
//!   ones being sent); a backlog costs tens of bytes a row.
//! - Transforms (design §9): a row whose destination has `filter`/`body` programs is rendered
//!   by its send task when it is first due, on that destination's own jq worker, and the result
//!   is stored before the first attempt (`task.rs`). A runaway program holds only that
//!   destination's slots, each for at most its `jq_timeout`; a program that fails dead-letters
//!   its event with the reason, and a filtered event is recorded as such.
//! - Retry times live on the row (`due_ms`, persisted by the settle writer), not in a sleeping
//!   task, so a restart resumes the same schedule.
//! - Reconcile: on request, the settle writer commits every outcome queued so far and the store
//!   answers with its pending rows after every earlier write; rows the store holds that the
//!   dispatcher has never seen (and has not just finished) are stranded: they are queued and
//!   counted. The writer hands committed rows over itself, so this should always find none.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::queue::{Pending, Queue};
use super::retry::{Decision, decide, describe};
use super::settle::SettleMsg;
use super::signing::Signer;
use super::task::{Sending, Sent, Unsent, work};
use crate::config::Destination;
use crate::jq::JqPool;
use crate::status::Registry;
use crate::store::{Attempt, OutboxRow, Settle, Store, StoreError};
use crate::telemetry as m;

/// Where the store's writer hands committed rows.
pub type RowSender = crate::store::RowSink;
/// The dispatcher's end of [`RowSender`].
pub type RowReceiver = mpsc::UnboundedReceiver<Vec<OutboxRow>>;

/// Rows claimed at once when a dispatcher starts on a shared store.
const CLAIM_ON_START: usize = 100_000;
/// How often the outbox gauges are refreshed.
const GAUGES_EVERY: Duration = Duration::from_secs(5);
/// How long a row whose store read failed waits before it is tried again.
const UNREADABLE_RETRY_MS: i64 = 1000;

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
    /// Compare the store's outbox with the queue; the reply is how many stranded rows were
    /// found (and queued).
    Reconcile(oneshot::Sender<usize>),
    /// Dead letters changed outside the dispatcher (revive, purge): recount them.
    DeadChanged,
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

/// A configured destination's sending state, by queue index.
struct Sender {
    dest: Arc<Destination>,
    signer: Arc<Signer>,
    /// Its own jq worker, when it has programs.
    jq: Option<Arc<JqPool>>,
}

/// What a send task reports.
struct Done {
    seq: u64,
    result: Result<Sent, Unsent>,
}

/// What a dispatcher works with besides its destinations.
pub struct Parts {
    /// The store rows are read from.
    pub store: Store,
    /// The destinations' HTTP client.
    pub client: reqwest::Client,
    /// Where outcomes are recorded (the settle writer).
    pub settle_tx: mpsc::UnboundedSender<SettleMsg>,
    /// The pollhook binary that runs jq programs (`pollhook jq-worker`).
    pub jq_exe: PathBuf,
    /// Where filtered events are counted.
    pub registry: Arc<Registry>,
}

/// A row on its way to the dead letters.
struct Dead {
    event: String,
    source: String,
    attempts: u32,
    reason: String,
    attempt: Option<Attempt>,
}

/// A reconcile in progress.
struct Reconciling {
    snapshot: oneshot::Receiver<Result<Vec<OutboxRow>, StoreError>>,
    finished: HashSet<u64>,
    reply: oneshot::Sender<usize>,
}

/// The dispatcher's state; see the module notes.
pub struct Dispatcher {
    /// Where attempt outcomes are reported for alerts.
    pub signals: crate::telemetry::Signals,
    queue: Queue,
    /// By queue index; `None` once the destination left the config (its rows stay pending).
    senders: Vec<Option<Sender>>,
    inflight: Vec<usize>,
    dead: Vec<u64>,
    store: Store,
    client: reqwest::Client,
    settle_tx: mpsc::UnboundedSender<SettleMsg>,
    jq_exe: PathBuf,
    registry: Arc<Registry>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    tasks: JoinSet<()>,
    reconciling: Option<Reconciling>,
}

/// Current unix time in ms.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Dispatcher {
    /// A dispatcher for `destinations`, reading bodies from the store and settling outcomes
    /// through the settle writer of `parts`.
    pub fn new(destinations: &[Arc<Destination>], parts: Parts) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let mut d = Dispatcher {
            queue: Queue::default(),
            senders: Vec::new(),
            inflight: Vec::new(),
            dead: Vec::new(),
            store: parts.store,
            client: parts.client,
            settle_tx: parts.settle_tx,
            jq_exe: parts.jq_exe,
            registry: parts.registry,
            done_tx,
            done_rx,
            tasks: JoinSet::new(),
            reconciling: None,
            signals: crate::telemetry::Signals::default(),
        };
        d.set_destinations(destinations);
        d.count_dead();
        d
    }

    /// Loads every pending row of the store (headers only); on a shared store, the rows this
    /// instance holds and those it can claim now (the claimer feeds it the rest).
    pub fn load_pending(&mut self) -> Result<usize, StoreError> {
        let backend = self.store.backend();
        let rows = match backend.lease() {
            Some(_) => backend.claim(CLAIM_ON_START, true)?,
            None => backend.pending_headers()?,
        };
        let n = rows.len();
        rows.iter().for_each(|r| self.add(r));
        Ok(n)
    }

    fn set_destinations(&mut self, dests: &[Arc<Destination>]) {
        self.senders.iter_mut().for_each(|s| *s = None);
        for dest in dests {
            let i = self.slot(&dest.name);
            // A fresh worker per reload: its limits or programs may have changed.
            let jq = dest
                .programmed()
                .then(|| Arc::new(JqPool::new(self.jq_exe.clone(), dest.jq, &dest.name)));
            self.senders[i] = Some(Sender {
                dest: dest.clone(),
                signer: Arc::new(Signer::new(dest)),
                jq,
            });
        }
    }

    /// The queue index of destination `name`, with its per-destination slots in place.
    fn slot(&mut self, name: &str) -> usize {
        let i = self.queue.dest(name);
        let n = self.queue.dests.len();
        self.senders.resize_with(n, || None);
        self.inflight.resize(n, 0);
        self.dead.resize(n, 0);
        i
    }

    /// Recounts dead letters per destination (start, and after operator changes).
    fn count_dead(&mut self) {
        match self.store.backend().dead_headers() {
            Ok(rows) => {
                self.dead.iter_mut().for_each(|n| *n = 0);
                for r in rows {
                    let i = self.slot(&r.destination);
                    self.dead[i] += 1;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot count dead letters"),
        }
    }

    /// Queues a committed row (once, whatever path it comes by); a row committed dead (its jq
    /// program failed) is only counted.
    pub fn add(&mut self, row: &OutboxRow) {
        if row.dead_reason.is_some() {
            let i = self.slot(&row.destination);
            self.dead[i] += 1;
            return;
        }
        let configured = self
            .queue
            .dest_index(&row.destination)
            .and_then(|i| self.senders.get(i))
            .is_some_and(Option::is_some);
        if !configured {
            tracing::warn!(destination = %row.destination, event = %row.event_id, "outbox row for a destination that is not configured; kept in the store, not sent");
            return;
        }
        self.queue.add(row);
    }

    /// Per-destination statistics.
    pub fn stats(&self, now: i64) -> Vec<DestStats> {
        let oldest = self.queue.oldest();
        let mut out: Vec<DestStats> = self
            .queue
            .dests
            .iter()
            .enumerate()
            .map(|(i, d)| DestStats {
                destination: d.name.clone(),
                configured: self.senders[i].is_some(),
                pending: d.pending,
                in_flight: self.inflight[i],
                oldest_pending_age_seconds: oldest[i].map(|c| (now - c).max(0) as f64 / 1000.0),
            })
            .collect();
        out.sort_by(|a, b| a.destination.cmp(&b.destination));
        out
    }

    /// Sets the outbox gauges; runs on a timer, so scraping `/metrics` costs the dispatcher
    /// nothing.
    fn gauges(&self, now: i64) {
        for s in self.stats(now) {
            self.registry.note_backlog(&s.destination, now, s.pending);
            let name = s.destination;
            metrics::gauge!(m::OUTBOX_DEPTH, "destination" => name.clone()).set(s.pending as f64);
            metrics::gauge!(m::OUTBOX_OLDEST_AGE, "destination" => name.clone())
                .set(s.oldest_pending_age_seconds.unwrap_or(0.0));
            let dead = self.queue.dest_index(&name).map_or(0, |j| self.dead[j]);
            metrics::gauge!(m::DEAD_LETTERS, "destination" => name).set(dead as f64);
        }
    }

    fn command(&mut self, cmd: DispatchCmd) {
        match cmd {
            DispatchCmd::Stats(reply) => {
                let _ = reply.send(self.stats(now_ms()));
            }
            DispatchCmd::Destinations { dests, rows } => {
                self.set_destinations(&dests);
                rows.iter().for_each(|r| self.add(r));
            }
            DispatchCmd::Reconcile(reply) => self.start_reconcile(reply),
            DispatchCmd::DeadChanged => self.count_dead(),
        }
    }

    fn start_reconcile(&mut self, reply: oneshot::Sender<usize>) {
        let (tx, snapshot) = oneshot::channel();
        if self.settle_tx.send(SettleMsg::Snapshot(tx)).is_err() {
            let _ = reply.send(0);
            return;
        }
        self.reconciling = Some(Reconciling {
            snapshot,
            finished: HashSet::new(),
            reply,
        });
    }

    /// Queues the store's pending rows that the dispatcher never saw; returns how many.
    fn finish_reconcile(&mut self, r: Reconciling, stored: Vec<OutboxRow>) {
        let mut stranded = 0;
        for row in &stored {
            let known = self.queue.contains(row.seq) || r.finished.contains(&row.seq);
            let sendable = self
                .queue
                .dest_index(&row.destination)
                .is_some_and(|i| self.senders[i].is_some());
            if !known && sendable {
                tracing::warn!(destination = %row.destination, event = %row.event_id, "stranded outbox row found by reconcile; queued");
                self.queue.add(row);
                stranded += 1;
            }
        }
        metrics::counter!(m::OUTBOX_STRANDED).increment(stranded as u64);
        let _ = r.reply.send(stranded);
    }

    /// Starts every due head row that fits its destination's concurrency; returns when the next
    /// row becomes due.
    fn dispatch_due(&mut self, now: i64) -> Option<i64> {
        let mut next: Option<i64> = None;
        for i in 0..self.senders.len() {
            let Some(sender) = &self.senders[i] else {
                continue;
            };
            let sending = Sending {
                store: self.store.clone(),
                client: self.client.clone(),
                dest: sender.dest.clone(),
                signer: sender.signer.clone(),
                jq: sender.jq.clone(),
            };
            while self.inflight[i] < sending.dest.concurrency {
                let seq = match self.queue.pop_due(i, now) {
                    Ok(seq) => seq,
                    Err(due) => {
                        next = match (next, due) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                        break;
                    }
                };
                self.inflight[i] += 1;
                let (sending, done) = (sending.clone(), self.done_tx.clone());
                self.tasks.spawn(async move {
                    let result = work(sending, seq).await;
                    let _ = done.send(Done { seq, result });
                });
            }
        }
        next
    }

    /// Applies the result of one send task.
    fn complete(&mut self, done: Done, now: i64) {
        let Some(p) = self.queue.get(done.seq).copied() else {
            return;
        };
        self.inflight[p.dest] -= 1;
        let (event, source, outcome, mut record) = match done.result {
            Ok(r) => r,
            Err(unsent) => return self.unsent(done.seq, p, unsent, now),
        };
        let Some(sender) = self.senders.get(p.dest).and_then(Option::as_ref) else {
            // The destination left the config while this attempt ran: the row stays pending,
            // unsent until the destination returns.
            self.queue.retry(done.seq, p.attempts, now);
            return;
        };
        let name = sender.dest.name.clone();
        let attempts = p.attempts + 1;
        record.n = attempts;
        let ok = matches!(
            outcome,
            super::retry::Outcome::Status {
                code: 200..=299,
                ..
            }
        );
        let error = (!ok).then(|| describe(&outcome));
        self.registry
            .count_attempt(&name, now, record.duration_ms, error);
        let attempt = Some(record);
        let seq = done.seq;
        let decision = decide(attempts, &outcome, &sender.dest.retry, now);
        self.signals.send(m::Signal::DestinationAttempt {
            destination: name.clone(),
            error: (decision != Decision::Done).then(|| describe(&outcome)),
        });
        match decision {
            Decision::Done => {
                tracing::debug!(destination = %name, event = %event, attempts, "delivered");
                let latency = (now - p.created_ms).max(0) as f64 / 1000.0;
                metrics::histogram!(m::DELIVERY_LATENCY, "destination" => name.clone())
                    .record(latency);
                metrics::counter!(m::DELIVERIES, "destination" => name, "outcome" => "delivered")
                    .increment(1);
                let _ = self
                    .settle_tx
                    .send(SettleMsg::Outcome(Settle::Delivered { seq, attempt }));
                self.finished(seq);
            }
            Decision::RetryAt(due) => {
                metrics::counter!(m::DELIVERIES, "destination" => name.clone(), "outcome" => "retry").increment(1);
                let error = describe(&outcome);
                tracing::warn!(destination = %name, event = %event, attempts, error = %error, retry_in_ms = due - now, "delivery failed; will retry");
                self.queue.retry(seq, attempts, due);
                let _ = self.settle_tx.send(SettleMsg::Outcome(Settle::Retry {
                    seq,
                    attempts,
                    due_ms: due,
                    error,
                    attempt,
                }));
            }
            Decision::Dead(reason) => {
                tracing::error!(destination = %name, event = %event, attempts, reason = %reason, "delivery dead-lettered; inspect and re-send it");
                let dead = Dead {
                    event,
                    source,
                    attempts,
                    reason,
                    attempt,
                };
                self.bury(seq, p.dest, dead, now);
            }
        }
    }

    /// Applies the result of a task that made no attempt.
    fn unsent(&mut self, seq: u64, p: Pending, unsent: Unsent, now: i64) {
        match unsent {
            Unsent::Gone => self.finished(seq),
            Unsent::Unreadable(e) => {
                tracing::warn!(error = %e, "cannot read or update an outbox row; trying again shortly");
                self.queue.retry(seq, p.attempts, now + UNREADABLE_RETRY_MS);
            }
            Unsent::Filtered => {
                let name = self.queue.dests[p.dest].name.clone();
                metrics::counter!(m::DELIVERIES, "destination" => name.clone(), "outcome" => "filtered").increment(1);
                self.registry.count_filtered(&name);
                let _ = self
                    .settle_tx
                    .send(SettleMsg::Outcome(Settle::Filtered { seq }));
                self.finished(seq);
            }
            Unsent::Failed {
                event,
                source,
                reason,
            } => {
                // jq messages may quote the event's data: the reason goes to the dead letter.
                let name = &self.queue.dests[p.dest].name;
                tracing::warn!(destination = %name, event = %event, "a jq program failed; the delivery is dead-lettered (see pollhook dead list)");
                let dead = Dead {
                    event,
                    source,
                    attempts: p.attempts,
                    reason,
                    attempt: None,
                };
                self.bury(seq, p.dest, dead, now);
            }
        }
    }

    /// Moves a row to the dead letters: counted, alerted, recorded.
    fn bury(&mut self, seq: u64, dest: usize, d: Dead, now: i64) {
        let name = self.queue.dests[dest].name.clone();
        metrics::counter!(m::DELIVERIES, "destination" => name.clone(), "outcome" => "dead")
            .increment(1);
        self.signals.send(m::Signal::EventDead {
            source: d.source,
            event_id: d.event,
            destination: name,
            reason: d.reason.clone(),
        });
        let _ = self.settle_tx.send(SettleMsg::Outcome(Settle::Dead {
            seq,
            attempts: d.attempts,
            reason: d.reason,
            now_ms: now,
            attempt: d.attempt,
        }));
        self.dead[dest] += 1;
        self.finished(seq);
    }

    fn finished(&mut self, seq: u64) {
        self.queue.finish(seq);
        if let Some(r) = &mut self.reconciling {
            r.finished.insert(seq);
        }
    }

    fn inflight_total(&self) -> usize {
        self.inflight.iter().sum()
    }

    /// Runs until `shutdown`, then lets in-flight attempts finish for at most `drain`; rows
    /// still in flight after that stay pending in the store.
    pub async fn run(
        mut self,
        incoming: &mut RowReceiver,
        commands: &mut mpsc::UnboundedReceiver<DispatchCmd>,
        shutdown: CancellationToken,
        drain: Duration,
    ) {
        let mut gauges = tokio::time::interval(GAUGES_EVERY);
        loop {
            let next = self.dispatch_due(now_ms());
            let sleep = next
                .map(|due| Instant::now() + Duration::from_millis((due - now_ms()).max(0) as u64));
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(done) = self.done_rx.recv() => {
                    self.complete(done, now_ms());
                    while let Ok(done) = self.done_rx.try_recv() {
                        self.complete(done, now_ms());
                    }
                }
                Some(rows) = incoming.recv() => rows.iter().for_each(|r| self.add(r)),
                Some(cmd) = commands.recv() => self.command(cmd),
                stored = snapshot(&mut self.reconciling) => {
                    // Rows the writer handed over before answering are already in `incoming`.
                    while let Ok(rows) = incoming.try_recv() {
                        rows.iter().for_each(|r| self.add(r));
                    }
                    if let Some(r) = self.reconciling.take() {
                        match stored {
                            Ok(rows) => self.finish_reconcile(r, rows),
                            Err(e) => tracing::warn!(error = %e, "reconcile could not read the outbox"),
                        }
                    }
                }
                _ = gauges.tick() => self.gauges(now_ms()),
                _ = sleep_until(sleep) => {}
            }
            while self.tasks.try_join_next().is_some() {}
        }
        self.drain(drain).await;
    }

    async fn drain(&mut self, drain: Duration) {
        let deadline = Instant::now() + drain;
        while self.inflight_total() > 0 {
            tokio::select! {
                Some(done) = self.done_rx.recv() => self.complete(done, now_ms()),
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(inflight = self.inflight_total(), "drain deadline reached; unfinished deliveries stay pending");
                    break;
                }
            }
        }
        // Wait for the aborted sends to be dropped: they hold store handles, and the state
        // file must be closed when the daemon returns.
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn snapshot(r: &mut Option<Reconciling>) -> Result<Vec<OutboxRow>, StoreError> {
    match r {
        Some(r) => (&mut r.snapshot)
            .await
            .unwrap_or(Err(StoreError::WriterGone)),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

//! Durable state: per-source item state, the outbox, dead letters.
//!
//! The rest of pollhook sees only [`Store`] and the plain types below; [`Backend`] is the narrow
//! interface a storage engine implements (redb here, in `redb.rs`; a PostgreSQL one later, design
//! §8). Writes go through one writer thread (`writer.rs`) that applies every queued operation in
//! one transaction and one fsync (group commit) and answers each caller once it is durable.
//!
//! Design notes:
//! - A poll's new item state, source metadata and outbox rows are one [`WriteOp::Poll`], so they
//!   commit together (invariant 1): there is no state in which a change is recorded but its
//!   events are not, or the reverse.
//! - Callers learn a row's `seq` only after the commit is durable, so nothing can be sent early.
//! - No transaction is ever held across an `.await`: reads run on the caller's thread in short
//!   read transactions, writes on the writer thread.

mod codec;
mod dump;
mod history;
mod pg;
mod prune;
mod redb;
mod replay;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::diff::ItemState;

pub use self::dump::Dump;

/// The version of the `pollhook state export` format.
pub fn dump_format() -> u32 {
    dump::FORMAT
}
pub use self::pg::PgBackend;
pub use self::redb::RedbBackend;
pub use writer::Store;

/// `rows` without their bodies (the dispatcher reads a body from the store when it sends).
pub fn headers_only(rows: Vec<OutboxRow>) -> Vec<OutboxRow> {
    let empty: Arc<[u8]> = Arc::from(&[][..]);
    rows.into_iter()
        .map(|r| OutboxRow {
            body: empty.clone(),
            ..r
        })
        .collect()
}

/// Storage failures. The message says what failed; the operator's action is in the log line.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine failed (I/O, corruption, lock held by another process).
    #[error("state store failed: {0}")]
    Backend(String),
    /// A stored row could not be decoded.
    #[error("state store holds an undecodable {what} row: {detail}")]
    Corrupt {
        /// Which table.
        what: &'static str,
        /// Decoder message.
        detail: String,
    },
    /// The state file was written by a newer pollhook.
    #[error(
        "state file schema version {found} is newer than this pollhook supports ({supported}); upgrade pollhook"
    )]
    SchemaTooNew {
        /// Version in the file.
        found: u64,
        /// Version this build writes.
        supported: u64,
    },
    /// The writer thread is gone (daemon shutting down).
    #[error("state writer has stopped")]
    WriterGone,
    /// A poll commit was rejected: this instance no longer holds the source's lease (it was
    /// paused or cut off past the lease period and another instance took the source over).
    #[error(
        "source {0}: the lease was lost to another instance; this instance's poll is discarded"
    )]
    Fenced(String),
}

/// Per-source metadata stored beside its items.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceMeta {
    /// Whether a first successful poll has been recorded.
    pub initialized: bool,
    /// Fingerprint of the extraction settings (items, key, version, ignore, mode) the stored
    /// state was computed with; when they change, the next poll re-baselines.
    pub fingerprint: Option<String>,
    /// Why the source is paused (operator or flood guard); `None` when it runs.
    #[serde(default)]
    pub paused: Option<String>,
    /// Whether the pause was the flood guard's (resume then lets one poll through it).
    #[serde(default)]
    pub held: bool,
    /// Set by resuming a held source: the next poll passes the flood guard once, emitting its
    /// changes (`Emit`) or recording them silently (`Discard`).
    #[serde(default)]
    pub pass_guard: Option<GuardPass>,
    /// The upstream's `ETag` for the stored state.
    #[serde(default)]
    pub etag: Option<String>,
    /// The upstream's `Last-Modified` for the stored state.
    #[serde(default)]
    pub last_modified: Option<String>,
}

/// How a held source's next poll passes the flood guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuardPass {
    /// Emit the changes.
    Emit,
    /// Record them without events (re-baseline).
    Discard,
}

/// Everything loaded for one source at start.
#[derive(Debug, Clone, Default)]
pub struct SourceSnapshot {
    /// Metadata.
    pub meta: SourceMeta,
    /// Item states by key (tombstones included).
    pub items: HashMap<String, ItemState>,
    /// The highest revision among this source's pruned tombstones (0 when none was pruned):
    /// new items start above it.
    pub revision_floor: u64,
    /// The store's fencing token for this state (the lease epoch on a shared store, 0
    /// otherwise): commits made from it carry it back in [`PollCommit::fence`].
    pub fence: u64,
    /// When the source's previous holder would have polled it next, unix ms (a shared store's
    /// clean handover): the first poll here waits until then.
    pub resume_ms: Option<i64>,
}

/// One event produced by a poll, to be queued for each of its destinations.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Event id.
    pub id: String,
    /// Event type (`item.created`, ...).
    pub kind: &'static str,
    /// Item key.
    pub key: String,
    /// Item revision.
    pub revision: u64,
    /// The event envelope (design §3), the body of every delivery that has no `body` program.
    pub body: Arc<[u8]>,
    /// One per destination the event goes to (filtered destinations have none).
    pub deliveries: Vec<Delivery>,
    /// Destinations whose `filter` dropped the event (recorded in the delivery log only).
    pub filtered: Vec<String>,
}

/// The rendering of one event for one destination, decided before the commit so that every
/// retry sends the same bytes.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Destination name.
    pub destination: String,
    /// The body its `body` program rendered (`None`: the envelope).
    pub body: Option<Arc<[u8]>>,
    /// Why it goes straight to the dead letters (a jq program failed), if it does.
    pub dead: Option<String>,
}

impl Delivery {
    /// A delivery of the event envelope itself to `destination` (no `body` program result yet).
    pub fn envelope(destination: &str) -> Delivery {
        Delivery {
            destination: destination.to_owned(),
            body: None,
            dead: None,
        }
    }
}

/// An item state row plus the item's data, as written by a poll.
#[derive(Debug, Clone)]
pub struct ItemWrite {
    /// Item key.
    pub key: String,
    /// New state.
    pub state: ItemState,
    /// The item's JSON, when it changed (kept for `deleted` payloads and `previous`).
    pub data: Option<Vec<u8>>,
}

/// The atomic result of one poll.
#[derive(Debug, Clone)]
pub struct PollCommit {
    /// Source name.
    pub source: String,
    /// New metadata.
    pub meta: SourceMeta,
    /// Item rows to write.
    pub items: Vec<ItemWrite>,
    /// Events to queue.
    pub events: Vec<NewEvent>,
    /// Detection time, unix ms (the rows' creation and first due time).
    pub now_ms: i64,
    /// The [`SourceSnapshot::fence`] the poller's state was loaded with: a shared store
    /// rejects the commit when its lease has moved on since (design §8).
    pub fence: u64,
}

impl PollCommit {
    /// A fresh outbox row (due now) of `event` for `destination`, numbered `seq`.
    pub fn row(&self, event: &NewEvent, destination: &str, body: Arc<[u8]>, seq: u64) -> OutboxRow {
        OutboxRow {
            seq,
            destination: destination.to_owned(),
            source: self.source.clone(),
            key: event.key.clone(),
            revision: event.revision,
            event_id: event.id.clone(),
            event_type: event.kind.to_owned(),
            attempts: 0,
            due_ms: self.now_ms,
            created_ms: self.now_ms,
            last_error: None,
            dead_reason: None,
            dead_ms: None,
            body,
        }
    }
}

/// A queued delivery of one event to one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRow {
    /// Monotonic row number; also the order of creation.
    pub seq: u64,
    /// Destination name.
    pub destination: String,
    /// Source name.
    pub source: String,
    /// Item key.
    pub key: String,
    /// Item revision.
    pub revision: u64,
    /// Event id.
    pub event_id: String,
    /// Event type (`item.created`, ...); empty in rows written before it was stored.
    #[serde(default, rename = "type")]
    pub event_type: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due, unix ms.
    pub due_ms: i64,
    /// When the event was detected, unix ms.
    pub created_ms: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Why the row was dead-lettered (dead letters only).
    pub dead_reason: Option<String>,
    /// When the row was dead-lettered, unix ms (dead letters only).
    #[serde(default)]
    pub dead_ms: Option<i64>,
    /// Payload bytes.
    #[serde(skip)]
    pub body: Arc<[u8]>,
}

/// One delivery attempt as the delivery log keeps it (design §6a).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// Attempt number, from 1.
    pub n: u32,
    /// When it started, unix ms.
    pub at_ms: i64,
    /// How long it took, ms.
    pub duration_ms: u64,
    /// The receiver's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed without an answer (`timeout`, `connection failed: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The first 1 KiB of the receiver's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// In the outbox.
    Pending,
    /// A 2xx was received.
    Delivered,
    /// In the dead letters.
    Dead,
    /// A `filter` program dropped it; never sent.
    Filtered,
}

impl DeliveryStatus {
    /// The name used in the API and on the page.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
            DeliveryStatus::Filtered => "filtered",
        }
    }
}

/// One delivery (an event to one destination) in the delivery log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRecord {
    /// The outbox seq of the delivery (the log's key and cursor).
    pub seq: u64,
    /// Event id.
    pub event_id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Destination name.
    pub destination: String,
    /// Source name.
    pub source: String,
    /// Item key.
    pub key: String,
    /// Item revision.
    pub revision: u64,
    /// When the event was detected (or the resend asked for), unix ms.
    pub created_ms: i64,
    /// When the status last changed, unix ms.
    pub updated_ms: i64,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Why it is dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The delivery this one re-sends, if it is a resend or replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resend_of: Option<u64>,
    /// Attempts, oldest first (the last [`MAX_ATTEMPTS_KEPT`] of them).
    #[serde(default)]
    pub attempts: Vec<Attempt>,
}

impl HistoryRecord {
    /// Records an outcome: the attempt (the last [`MAX_ATTEMPTS_KEPT`] are kept), the new
    /// status and why it is dead.
    pub fn settle(
        &mut self,
        status: DeliveryStatus,
        attempt: Option<Attempt>,
        reason: Option<String>,
    ) {
        if let Some(a) = attempt {
            self.updated_ms = self.updated_ms.max(a.at_ms + a.duration_ms as i64);
            self.attempts.push(a);
            if self.attempts.len() > MAX_ATTEMPTS_KEPT {
                self.attempts.remove(0);
            }
        }
        self.status = status;
        self.reason = reason;
    }

    /// The first record of a delivery: `row` as created, with its status, why it is dead and
    /// the delivery it re-sends.
    pub fn created(
        row: &OutboxRow,
        status: DeliveryStatus,
        reason: Option<String>,
        resend_of: Option<u64>,
    ) -> HistoryRecord {
        HistoryRecord {
            seq: row.seq,
            event_id: row.event_id.clone(),
            event_type: row.event_type.clone(),
            destination: row.destination.clone(),
            source: row.source.clone(),
            key: row.key.clone(),
            revision: row.revision,
            created_ms: row.created_ms,
            updated_ms: row.created_ms,
            status,
            reason,
            resend_of,
            attempts: Vec::new(),
        }
    }

    /// A fresh outbox row for this delivery (no attempts yet), due and created at `at_ms`.
    pub fn to_row(&self, seq: u64, at_ms: i64, body: Arc<[u8]>) -> OutboxRow {
        OutboxRow {
            seq,
            destination: self.destination.clone(),
            source: self.source.clone(),
            key: self.key.clone(),
            revision: self.revision,
            event_id: self.event_id.clone(),
            event_type: self.event_type.clone(),
            attempts: 0,
            due_ms: at_ms,
            created_ms: at_ms,
            last_error: None,
            dead_reason: None,
            dead_ms: None,
            body,
        }
    }
}

/// Attempts kept per delivery record.
pub const MAX_ATTEMPTS_KEPT: usize = 50;

/// A query of the delivery log, newest first.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Only this source.
    pub source: Option<String>,
    /// Only this destination.
    pub destination: Option<String>,
    /// Only this status.
    pub status: Option<DeliveryStatus>,
    /// Only deliveries created at or after this time, unix ms.
    pub since_ms: Option<i64>,
    /// Only deliveries with a seq below this (the cursor of the previous page).
    pub before_seq: Option<u64>,
    /// At most this many.
    pub limit: usize,
}

/// One delivery of an event with the body it was (or will be) sent with, when still stored.
#[derive(Debug, Clone)]
pub struct EventDelivery {
    /// The log record.
    pub record: HistoryRecord,
    /// The body, if the store still has it.
    pub body: Option<Arc<[u8]>>,
}

/// What to do with an outbox row after an attempt.
#[derive(Debug, Clone)]
pub enum Settle {
    /// Delivered: remove it.
    Delivered {
        /// Row.
        seq: u64,
        /// The attempt, for the delivery log.
        attempt: Option<Attempt>,
    },
    /// Failed, try again later.
    Retry {
        /// Row.
        seq: u64,
        /// Attempts made.
        attempts: u32,
        /// Next attempt, unix ms.
        due_ms: i64,
        /// Why it failed.
        error: String,
        /// The attempt, for the delivery log.
        attempt: Option<Attempt>,
    },
    /// Give up: move it to the dead letters.
    Dead {
        /// Row.
        seq: u64,
        /// Attempts made.
        attempts: u32,
        /// Why.
        reason: String,
        /// Now, unix ms.
        now_ms: i64,
        /// The attempt, for the delivery log.
        attempt: Option<Attempt>,
    },
}

/// One operation for the writer; a batch of them commits in one transaction.
#[derive(Debug)]
pub enum WriteOp {
    /// A poll's state and events.
    Poll(PollCommit),
    /// Outcomes of delivery attempts.
    Settle(Vec<Settle>),
    /// Replaces a source's metadata (pause / resume).
    Meta {
        /// Source name.
        source: String,
        /// New metadata.
        meta: SourceMeta,
    },
    /// Moves dead letters back to the outbox, due now with a fresh attempt count; `None`
    /// revives every dead letter.
    Revive {
        /// Dead letter seqs.
        seqs: Option<Vec<u64>>,
        /// Now, unix ms.
        now_ms: i64,
    },
    /// Deletes dead letters dead-lettered before `before_ms` (all when `None`).
    PurgeDead {
        /// Cut-off, unix ms.
        before_ms: Option<i64>,
    },
    /// Deletes `source`'s tombstones written before `before_ms` (and their data), raising its
    /// revision floor; stamps tombstones of unknown age with `now_ms`.
    PruneTombstones {
        /// Source name.
        source: String,
        /// Cut-off, unix ms.
        before_ms: i64,
        /// Now, unix ms.
        now_ms: i64,
    },
    /// Records which stored sources are missing from the config (since `now_ms`) and which
    /// came back.
    MarkRemoved {
        /// The sources in the config.
        present: Vec<String>,
        /// Now, unix ms.
        now_ms: i64,
    },
    /// Deletes the whole state of sources missing from the config since before `before_ms`.
    DropRemoved {
        /// Cut-off, unix ms.
        before_ms: i64,
    },
    /// Queues events that belong to no source's state (pollhook's own alerts): only their
    /// outbox rows and log records are written.
    Emit(PollCommit),
    /// Sends an event again, with the same id and body: a delivered one as a new outbox row,
    /// a dead one revived; to one destination or all.
    Resend {
        /// Event id.
        event_id: String,
        /// Only this destination.
        destination: Option<String>,
        /// Now, unix ms.
        now_ms: i64,
    },
    /// Sends again, in their original order, the events a source emitted since a time.
    Replay {
        /// Source name.
        source: String,
        /// From, unix ms.
        since_ms: i64,
        /// Only this destination.
        destination: Option<String>,
        /// Now, unix ms.
        now_ms: i64,
    },
    /// Deletes delivery-log records older than `before_ms` or beyond `max_records`, looking at
    /// no more than `budget` records (pruning runs in small steps between other commits).
    PruneHistory {
        /// Cut-off, unix ms.
        before_ms: i64,
        /// Most records kept.
        max_records: u64,
        /// Records examined at most.
        budget: usize,
    },
}

/// A dead letter that was not revived because its item has a newer revision (per-item order:
/// the receiver has, or will get, a newer state of that item).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Superseded {
    /// Dead letter seq.
    pub seq: u64,
    /// Its revision.
    pub revision: u64,
    /// The item's current revision.
    pub current: u64,
}

/// Where the writer hands every committed outbox row (the dispatcher), whatever becomes of the
/// caller that asked for the commit.
pub type RowSink = tokio::sync::mpsc::UnboundedSender<Vec<OutboxRow>>;

/// What a [`WriteOp`] produced.
#[derive(Debug)]
pub enum WriteResult {
    /// The outbox rows a poll created.
    Rows(Vec<OutboxRow>),
    /// Dead letters moved back to the outbox, and those left dead as superseded.
    Revived {
        /// Revived rows.
        rows: Vec<OutboxRow>,
        /// Left dead.
        superseded: Vec<Superseded>,
    },
    /// Settlements or metadata applied.
    Settled,
    /// Rows deleted.
    Count(usize),
    /// A poll commit rejected by the fencing check (shared stores): nothing of it was written.
    Fenced(String),
}

/// What a heartbeat found (design §8).
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    /// The sources to run here, with their lease epochs.
    pub held: Vec<(String, u64)>,
    /// Sources that belong here but are still held by another live instance (it hands them
    /// over at its next heartbeat): the caller should beat again soon.
    pub waiting: usize,
    /// Live instances sharing the store (this one included).
    pub live: usize,
}

/// One instance sharing a store, as `/v1/cluster` lists it (design §8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceInfo {
    /// Instance name.
    pub name: String,
    /// When it started, unix ms.
    pub started_ms: i64,
    /// Its last heartbeat, unix ms (database clock).
    pub heartbeat_ms: i64,
    /// Whether its heartbeat is within the lease period.
    pub alive: bool,
    /// Source leases it holds.
    pub leases: usize,
    /// Outbox rows it has claimed.
    pub claims: usize,
}

/// The storage engine interface (design §8). Implementations are blocking; [`Store`] calls
/// `apply` from its writer thread and the reads from short-lived blocking contexts.
pub trait Backend: Send + Sync + 'static {
    /// Applies every op in one durable transaction, returning one result per op in order.
    fn apply(&self, ops: &mut [WriteOp]) -> Result<Vec<WriteResult>, StoreError>;
    /// Loads a source's metadata and item states.
    fn load_source(&self, source: &str) -> Result<SourceSnapshot, StoreError>;
    /// The stored data of the given items (missing keys are absent from the map).
    fn item_data(
        &self,
        source: &str,
        keys: &[&str],
    ) -> Result<HashMap<String, Vec<u8>>, StoreError>;
    /// Every pending outbox row, in `seq` order.
    fn pending(&self) -> Result<Vec<OutboxRow>, StoreError>;
    /// Every pending outbox row without its body, in `seq` order (what the dispatcher keeps).
    fn pending_headers(&self) -> Result<Vec<OutboxRow>, StoreError>;
    /// One pending outbox row with its body, if it is still pending.
    fn outbox_row(&self, seq: u64) -> Result<Option<OutboxRow>, StoreError>;
    /// Every dead letter, in `seq` order.
    fn dead(&self) -> Result<Vec<OutboxRow>, StoreError>;
    /// Every dead letter without its body, in `seq` order (listing and counting).
    fn dead_headers(&self) -> Result<Vec<OutboxRow>, StoreError>;
    /// Turns the delivery log on or off (design §6a; `history.keep: 0s`).
    fn set_history(&self, on: bool);
    /// The delivery log, newest first.
    fn history(&self, query: &HistoryQuery) -> Result<Vec<HistoryRecord>, StoreError>;
    /// Every delivery of one event, in seq order, with its body when still stored.
    fn event(&self, event_id: &str) -> Result<Vec<EventDelivery>, StoreError>;
    /// Writes the whole store to `sink`, one [`Dump`] line at a time (`pollhook state export`).
    fn export(
        &self,
        sink: &mut dyn FnMut(Dump) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
    /// Loads a dump into this empty store in one transaction (`pollhook state import`).
    fn import(&self, lines: &[Dump]) -> Result<usize, StoreError>;

    // Sharing (design §8). An engine one process owns alone keeps the defaults: it holds every
    // source, and its dispatcher already knows every outbox row.

    /// The lease period when several instances share this engine; `None` when one process
    /// owns it.
    fn lease(&self) -> Option<Duration> {
        None
    }
    /// This instance's name in leases and claims.
    fn instance(&self) -> &str {
        "local"
    }
    /// Records this instance as alive, renews its leases and claims, gives up sources that
    /// belong to another live instance and takes those that belong to it; returns the sources
    /// of `sources` it should run now, each with its fencing epoch (a new epoch means the
    /// source changed hands meanwhile: its state must be reloaded). Sources it holds that now
    /// belong to another instance are left out but still held: the caller stops their tasks,
    /// then hands them over with [`Backend::release`].
    fn heartbeat(&self, sources: &[String]) -> Result<Heartbeat, StoreError> {
        Ok(Heartbeat {
            held: sources.iter().map(|s| (s.clone(), 0)).collect(),
            waiting: 0,
            live: 1,
        })
    }
    /// Gives up leases whose tasks have stopped, recording when each source's next poll was
    /// due (unix ms), so that the next holder polls then: a handover neither doubles nor skips
    /// a poll.
    fn release(&self, _handover: &[(String, Option<i64>)]) -> Result<(), StoreError> {
        Ok(())
    }
    /// Claims up to `limit` due outbox rows that no live instance is delivering, each the
    /// lowest pending revision of its item for its destination (headers only); with `mine`,
    /// also the rows this instance holds already (a restarted dispatcher).
    fn claim(&self, _limit: usize, _mine: bool) -> Result<Vec<OutboxRow>, StoreError> {
        Ok(Vec::new())
    }
    /// The instances sharing this engine.
    fn instances(&self) -> Result<Vec<InstanceInfo>, StoreError> {
        Ok(Vec::new())
    }
    /// The instance holding `source`'s lease now, if another one may (shared engines).
    fn holder(&self, _source: &str) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
    /// Gives up this instance's leases and claims (a clean stop), so others take over at once.
    fn step_down(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Opens the default engine (redb) at `path` and starts its writer, which hands committed
/// outbox rows to `sink`.
pub fn open(path: &Path, sink: Option<RowSink>) -> Result<Store, StoreError> {
    let backend = RedbBackend::open(path)?;
    Ok(Store::start(Arc::new(backend), sink))
}

/// Opens the engine `config` names (PostgreSQL under `store:`, else the redb file) and starts
/// its writer.
pub fn open_config(
    config: &crate::config::Config,
    sink: Option<RowSink>,
) -> Result<Store, StoreError> {
    Ok(Store::start(open_backend(config)?, sink))
}

/// Opens the engine `config` names, without a writer (offline tools: `pollhook state`).
pub fn open_backend(config: &crate::config::Config) -> Result<Arc<dyn Backend>, StoreError> {
    Ok(match &config.postgres {
        Some(pg) => Arc::new(PgBackend::open(pg, &config.instance)?),
        None => Arc::new(RedbBackend::open(&config.state)?),
    })
}

//! Durable state: per-source item state, the outbox, dead letters.
//!
//! The rest of pollhook sees only [`Store`] and the plain types below (the delivery log's in
//! `log.rs`); [`Backend`] (`backend.rs`) is the narrow interface a storage engine implements:
//! redb in `redb.rs`, PostgreSQL in `pg/` (design §8). Writes go through one writer thread (`writer.rs`) that applies every queued operation in
//! one transaction and one fsync (group commit) and answers each caller once it is durable.
//!
//! Design notes:
//! - A poll's new item state, source metadata and outbox rows are one [`WriteOp::Poll`], so they
//!   commit together (invariant 1): there is no state in which a change is recorded but its
//!   events are not, or the reverse.
//! - Callers learn a row's `seq` only after the commit is durable, so nothing can be sent early.
//! - No transaction is ever held across an `.await`: reads run on the caller's thread in short
//!   read transactions, writes on the writer thread.

mod backend;
mod chunks;
mod codec;
mod dump;
mod history;
mod log;
mod pg;
mod prune;
mod redb;
mod replay;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::diff::ItemState;

pub use self::backend::{
    Backend, Heartbeat, InstanceInfo, RowSink, Settle, Superseded, WriteOp, WriteResult,
};
pub use self::dump::Dump;
pub use self::log::{
    Attempt, DeliveryStatus, EventDelivery, HistoryQuery, HistoryRecord, MAX_ATTEMPTS_KEPT,
};
pub use self::pg::PgBackend;
pub use self::redb::RedbBackend;
pub use writer::Store;

/// The version of the `pollhook state export` format.
pub fn dump_format() -> u32 {
    dump::FORMAT
}

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
    /// One per destination the event goes to.
    pub deliveries: Vec<Delivery>,
}

/// One event's delivery to one destination, as committed.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Destination name.
    pub destination: String,
    /// Whether the destination's `filter`/`body` programs still have to run: they run when the
    /// row is first due (design §9, "Transforms"), and their result replaces the body durably
    /// before anything is sent ([`Settle::Rendered`]).
    pub render: bool,
}

impl Delivery {
    /// A delivery of the event envelope itself to `destination`.
    pub fn envelope(destination: &str) -> Delivery {
        Delivery {
            destination: destination.to_owned(),
            render: false,
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
    /// Marks the deliveries to destinations with jq programs (`programmed`) for rendering.
    pub fn defer_renders(&mut self, programmed: impl Fn(&str) -> bool) {
        for e in &mut self.events {
            for d in &mut e.deliveries {
                d.render = programmed(&d.destination);
            }
        }
    }

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
            render: false,
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
    /// Whether `body` is still the event envelope that the destination's jq programs must
    /// render before it is sent (see [`Delivery::render`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub render: bool,
    /// Payload bytes.
    #[serde(skip)]
    pub body: Arc<[u8]>,
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
        None => Arc::new(RedbBackend::open_sized(
            &config.state,
            self::redb::cache_bytes(config.sources.len()),
        )?),
    })
}

//! The storage engine interface (design §8) and the operations the writer hands it.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use super::{
    Attempt, Dump, EventDelivery, HistoryQuery, HistoryRecord, OutboxRow, PollCommit, SourceMeta,
    SourceSnapshot, StoreError,
};

/// What to do with an outbox row after an attempt (or after its jq programs ran).
#[derive(Debug, Clone)]
pub enum Settle {
    /// Its programs ran: the body to send from now on (`None`: the envelope as stored), no
    /// longer to be rendered.
    Rendered {
        /// Row.
        seq: u64,
        /// The rendered body.
        body: Option<std::sync::Arc<[u8]>>,
    },
    /// Its destination's `filter` dropped it: remove it, recorded as filtered.
    Filtered {
        /// Row.
        seq: u64,
    },
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

/// The storage engine interface (design §8). Implementations are blocking; [`Store`](super::Store) calls
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

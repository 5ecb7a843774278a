//! The redb implementation of [`Backend`]: every table, key encoding and the schema version.
//!
//! Tables: `meta` (schema version, next outbox seq), `sources` (per-source metadata),
//! `item_chunks` and `item_layout` (items, packed per source: `chunks.rs`), `outbox` and `dead`
//! keyed by seq; the delivery log's tables are in `history.rs`, resend and replay in
//! `replay.rs`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::chunks::{self, ITEM_CHUNKS, ITEM_LAYOUT};
use super::codec::{decode_header, decode_row, encode_row};
use super::history::{self, EVENT_SEQS, HISTORY, HISTORY_BODY};
use super::prune;
use super::{
    Backend, DeliveryStatus, EventDelivery, HistoryQuery, HistoryRecord, OutboxRow, PollCommit,
    Settle, SourceMeta, SourceSnapshot, StoreError, Superseded, WriteOp, WriteResult,
};

/// Schema version this build writes. Bump it with a migration in [`RedbBackend::open`].
/// 1: one `items` and one `item_data` row per item; 2: items packed in chunks (`chunks.rs`).
pub const SCHEMA_VERSION: u64 = 2;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(super) const SOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("sources");
/// Per source: the highest revision among its pruned tombstones.
pub(super) const FLOORS: TableDefinition<&str, u64> = TableDefinition::new("floors");
/// Per stored source missing from the config: since when, unix ms.
pub(super) const REMOVED: TableDefinition<&str, i64> = TableDefinition::new("removed");
pub(super) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
pub(super) const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead");

/// redb's page cache for a config of `sources` sources: 4 MiB plus 512 bytes per source, at
/// most 16 MiB. redb's default (1 GiB) lets RSS grow with the outbox while a receiver is down;
/// pages beyond the cache are re-read from the OS page cache, which costs microseconds. The
/// pages worth keeping (the B-trees' upper levels, the chunks of the sources that change) grow
/// with the number of sources: side by side, a fixed 4 MiB cost 6–10 µs per poll at 10,000
/// sources (more re-reads, lag p99 up to 40 ms) and nothing measurable at 1,000, where it saves
/// ~4 MiB of a ~40 MiB process (docs/performance.md). 10,000 sources get ~8.9 MiB.
pub fn cache_bytes(sources: usize) -> usize {
    const BASE: usize = 4 << 20;
    const PER_SOURCE: usize = 512;
    const MAX: usize = 16 << 20;
    sources
        .saturating_mul(PER_SOURCE)
        .saturating_add(BASE)
        .min(MAX)
}

const KEY_SCHEMA: &str = "schema_version";
const KEY_NEXT_SEQ: &str = "next_seq";

/// The `meta` table (schema version, next seq), for the dump.
pub(super) fn meta_table() -> TableDefinition<'static, &'static str, u64> {
    META
}

/// The `meta` key of the next outbox seq.
pub(super) fn next_seq_key() -> &'static str {
    KEY_NEXT_SEQ
}

pub(super) fn be<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Backend(e.into().to_string())
}

/// redb-backed storage.
pub struct RedbBackend {
    db: Database,
    /// Whether the delivery log is kept.
    history: AtomicBool,
}

impl RedbBackend {
    /// Opens (or creates) the state file with the cache for no sources (tools and tests).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_sized(path, cache_bytes(0))
    }

    /// Opens (or creates) the state file, creating tables and checking the schema version;
    /// `cache` is redb's page cache in bytes (`cache_bytes` sizes it for a config).
    pub fn open_sized(path: &Path, cache: usize) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Backend(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let db = redb::Builder::new()
            .set_cache_size(cache)
            .create(path)
            .map_err(|e| {
                StoreError::Backend(format!(
                    "cannot open {}: {}",
                    path.display(),
                    redb::Error::from(e)
                ))
            })?;
        let txn = db.begin_write().map_err(be)?;
        {
            let mut meta = txn.open_table(META).map_err(be)?;
            let found = meta.get(KEY_SCHEMA).map_err(be)?.map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::SchemaTooNew {
                        found: v,
                        supported: SCHEMA_VERSION,
                    });
                }
                Some(SCHEMA_VERSION) => {}
                Some(_) => {
                    let moved = chunks::migrate_v1(&txn)?;
                    tracing::info!(items = moved, "state file migrated to schema version 2");
                    meta.insert(KEY_SCHEMA, SCHEMA_VERSION).map_err(be)?;
                }
                None => {
                    meta.insert(KEY_SCHEMA, SCHEMA_VERSION).map_err(be)?;
                }
            }
            txn.open_table(SOURCES).map_err(be)?;
            txn.open_table(ITEM_CHUNKS).map_err(be)?;
            txn.open_table(ITEM_LAYOUT).map_err(be)?;
            txn.open_table(FLOORS).map_err(be)?;
            txn.open_table(REMOVED).map_err(be)?;
            txn.open_table(OUTBOX).map_err(be)?;
            txn.open_table(DEAD).map_err(be)?;
            txn.open_table(HISTORY).map_err(be)?;
            txn.open_table(HISTORY_BODY).map_err(be)?;
            txn.open_table(EVENT_SEQS).map_err(be)?;
        }
        txn.commit().map_err(be)?;
        Ok(RedbBackend {
            db,
            history: AtomicBool::new(true),
        })
    }

    pub(super) fn db(&self) -> &Database {
        &self.db
    }

    pub(super) fn logging(&self) -> bool {
        self.history.load(Ordering::Relaxed)
    }

    fn apply_poll(
        &self,
        txn: &WriteTransaction,
        c: &PollCommit,
        next_seq: &mut u64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let meta = serde_json::to_vec(&c.meta).map_err(|e| StoreError::Backend(e.to_string()))?;
        txn.open_table(SOURCES)
            .map_err(be)?
            .insert(c.source.as_str(), meta.as_slice())
            .map_err(be)?;
        chunks::write(txn, &c.source, &c.items, c.now_ms)?;
        self.insert_events(txn, c, next_seq)
    }

    /// The outbox rows (and log records) of a commit's events.
    fn insert_events(
        &self,
        txn: &WriteTransaction,
        c: &PollCommit,
        next_seq: &mut u64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let mut outbox = txn.open_table(OUTBOX).map_err(be)?;
        let mut rows = Vec::new();
        for event in &c.events {
            for delivery in &event.deliveries {
                let mut row = new_row(
                    c,
                    event,
                    &delivery.destination,
                    event.body.clone(),
                    next_seq,
                );
                row.render = delivery.render;
                outbox
                    .insert(row.seq, encode_row(&row).as_slice())
                    .map_err(be)?;
                if self.logging() {
                    history::created(txn, &row, None)?;
                }
                rows.push(row);
            }
        }
        Ok(rows)
    }

    fn apply_settle(&self, txn: &WriteTransaction, list: &[Settle]) -> Result<(), StoreError> {
        let mut outbox = txn.open_table(OUTBOX).map_err(be)?;
        let mut dead = txn.open_table(DEAD).map_err(be)?;
        let log = self.logging();
        for s in list {
            match s {
                Settle::Rendered { seq, body } => {
                    let Some(mut row) = read_row(&outbox, *seq)? else {
                        continue;
                    };
                    row.render = false;
                    if let Some(body) = body {
                        row.body = body.clone();
                    }
                    outbox
                        .insert(*seq, encode_row(&row).as_slice())
                        .map_err(be)?;
                }
                Settle::Filtered { seq } => {
                    if outbox.remove(*seq).map_err(be)?.is_some() && log {
                        history::settled(txn, *seq, DeliveryStatus::Filtered, None, None, None)?;
                    }
                }
                Settle::Delivered { seq, attempt } => {
                    let removed = outbox.remove(*seq).map_err(be)?;
                    if log && let Some(bytes) = removed {
                        let row = decode_row(bytes.value())?;
                        drop(bytes);
                        history::settled(
                            txn,
                            *seq,
                            DeliveryStatus::Delivered,
                            attempt.as_ref(),
                            None,
                            Some(&row.body),
                        )?;
                    }
                }
                Settle::Retry {
                    seq,
                    attempts,
                    due_ms,
                    error,
                    attempt,
                } => {
                    let Some(mut row) = read_row(&outbox, *seq)? else {
                        continue;
                    };
                    row.attempts = *attempts;
                    row.due_ms = *due_ms;
                    row.last_error = Some(error.clone());
                    outbox
                        .insert(*seq, encode_row(&row).as_slice())
                        .map_err(be)?;
                    if log {
                        history::settled(
                            txn,
                            *seq,
                            DeliveryStatus::Pending,
                            attempt.as_ref(),
                            None,
                            None,
                        )?;
                    }
                }
                Settle::Dead {
                    seq,
                    attempts,
                    reason,
                    now_ms,
                    attempt,
                } => {
                    let Some(mut row) = read_row(&outbox, *seq)? else {
                        continue;
                    };
                    row.attempts = *attempts;
                    row.dead_reason = Some(reason.clone());
                    row.dead_ms = Some(*now_ms);
                    outbox.remove(*seq).map_err(be)?;
                    dead.insert(*seq, encode_row(&row).as_slice()).map_err(be)?;
                    if log {
                        history::settled(
                            txn,
                            *seq,
                            DeliveryStatus::Dead,
                            attempt.as_ref(),
                            Some(reason),
                            None,
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl RedbBackend {
    /// Moves dead letters back to the outbox, due now with a fresh attempt count, unless the
    /// item has a newer revision: reviving it would send an older state after a newer one
    /// (invariant 4), so it stays dead and is reported as superseded.
    pub(super) fn revive(
        &self,
        txn: &WriteTransaction,
        seqs: Option<&[u64]>,
        now_ms: i64,
    ) -> Result<WriteResult, StoreError> {
        let mut dead = txn.open_table(DEAD).map_err(be)?;
        let mut outbox = txn.open_table(OUTBOX).map_err(be)?;
        let mut superseded = Vec::new();
        let wanted: Vec<u64> = match seqs {
            Some(list) => list.to_vec(),
            None => read_rows(&dead, decode_header)?
                .into_iter()
                .map(|r| r.seq)
                .collect(),
        };
        let mut rows = Vec::new();
        for seq in wanted {
            let Some(mut row) = read_row(&dead, seq)? else {
                continue;
            };
            let current =
                chunks::state_of(txn, &row.source, &row.key)?.map_or(row.revision, |s| s.revision);
            if current > row.revision {
                superseded.push(Superseded {
                    seq,
                    revision: row.revision,
                    current,
                });
                continue;
            }
            dead.remove(seq).map_err(be)?;
            row.attempts = 0;
            row.due_ms = now_ms;
            row.dead_reason = None;
            row.dead_ms = None;
            outbox
                .insert(seq, encode_row(&row).as_slice())
                .map_err(be)?;
            if self.logging() {
                history::settled(txn, seq, DeliveryStatus::Pending, None, None, None)?;
            }
            rows.push(row);
        }
        Ok(WriteResult::Revived { rows, superseded })
    }

    fn purge(txn: &WriteTransaction, before_ms: Option<i64>) -> Result<usize, StoreError> {
        let mut dead = txn.open_table(DEAD).map_err(be)?;
        let doomed: Vec<u64> = read_rows(&dead, decode_header)?
            .into_iter()
            .filter(|r| before_ms.is_none_or(|cut| r.dead_ms.unwrap_or(0) < cut))
            .map(|r| r.seq)
            .collect();
        for seq in &doomed {
            dead.remove(*seq).map_err(be)?;
        }
        Ok(doomed.len())
    }
}

/// A fresh outbox row (next seq, due now) of `event` for `destination`.
fn new_row(
    c: &PollCommit,
    event: &super::NewEvent,
    destination: &str,
    body: Arc<[u8]>,
    next_seq: &mut u64,
) -> OutboxRow {
    let row = c.row(event, destination, body, *next_seq);
    *next_seq += 1;
    row
}

pub(super) fn read_row(
    table: &impl ReadableTable<u64, &'static [u8]>,
    seq: u64,
) -> Result<Option<OutboxRow>, StoreError> {
    match table.get(seq).map_err(be)? {
        Some(v) => decode_row(v.value()).map(Some),
        None => Ok(None),
    }
}

/// Every row of an outbox-shaped table, decoded whole ([`decode_row`]) or without its body
/// ([`decode_header`]).
fn read_rows(
    table: &impl ReadableTable<u64, &'static [u8]>,
    decode: fn(&[u8]) -> Result<OutboxRow, StoreError>,
) -> Result<Vec<OutboxRow>, StoreError> {
    let mut out = Vec::new();
    for entry in table.iter().map_err(be)? {
        let (_, v) = entry.map_err(be)?;
        out.push(decode(v.value())?);
    }
    Ok(out)
}

impl Backend for RedbBackend {
    fn apply(&self, ops: &mut [WriteOp]) -> Result<Vec<WriteResult>, StoreError> {
        let txn = self.db.begin_write().map_err(be)?;
        let mut results = Vec::with_capacity(ops.len());
        {
            let mut meta = txn.open_table(META).map_err(be)?;
            let mut next_seq = meta.get(KEY_NEXT_SEQ).map_err(be)?.map_or(1, |v| v.value());
            for op in ops.iter() {
                results.push(match op {
                    WriteOp::Poll(c) => {
                        WriteResult::Rows(self.apply_poll(&txn, c, &mut next_seq)?)
                    }
                    WriteOp::Emit(c) => {
                        WriteResult::Rows(self.insert_events(&txn, c, &mut next_seq)?)
                    }
                    WriteOp::Settle(list) => {
                        self.apply_settle(&txn, list)?;
                        WriteResult::Settled
                    }
                    WriteOp::Resend {
                        event_id,
                        destination,
                        now_ms,
                    } => {
                        let seqs = Self::resend_targets(&txn, event_id, destination.as_deref())?;
                        self.send_again(&txn, &seqs, &mut next_seq, *now_ms)?
                    }
                    WriteOp::Replay {
                        source,
                        since_ms,
                        destination,
                        now_ms,
                    } => {
                        let seqs =
                            Self::replay_targets(&txn, source, *since_ms, destination.as_deref())?;
                        self.send_again(&txn, &seqs, &mut next_seq, *now_ms)?
                    }
                    WriteOp::PruneHistory {
                        before_ms,
                        max_records,
                        budget,
                    } => {
                        WriteResult::Count(history::prune(&txn, *before_ms, *max_records, *budget)?)
                    }
                    WriteOp::Meta { source, meta } => {
                        let bytes = serde_json::to_vec(meta)
                            .map_err(|e| StoreError::Backend(e.to_string()))?;
                        txn.open_table(SOURCES)
                            .map_err(be)?
                            .insert(source.as_str(), bytes.as_slice())
                            .map_err(be)?;
                        WriteResult::Settled
                    }
                    WriteOp::Revive { seqs, now_ms } => {
                        self.revive(&txn, seqs.as_deref(), *now_ms)?
                    }
                    WriteOp::PurgeDead { before_ms } => {
                        WriteResult::Count(Self::purge(&txn, *before_ms)?)
                    }
                    WriteOp::PruneTombstones {
                        source,
                        before_ms,
                        now_ms,
                    } => WriteResult::Count(prune::tombstones(&txn, source, *before_ms, *now_ms)?),
                    WriteOp::MarkRemoved { present, now_ms } => {
                        prune::mark_removed(&txn, present, *now_ms)?;
                        WriteResult::Settled
                    }
                    WriteOp::DropRemoved { before_ms } => {
                        WriteResult::Count(prune::drop_removed(&txn, *before_ms)?)
                    }
                });
            }
            meta.insert(KEY_NEXT_SEQ, next_seq).map_err(be)?;
        }
        txn.commit().map_err(be)?;
        Ok(results)
    }

    fn load_source(&self, source: &str) -> Result<SourceSnapshot, StoreError> {
        let txn = self.db.begin_read().map_err(be)?;
        let meta = match txn
            .open_table(SOURCES)
            .map_err(be)?
            .get(source)
            .map_err(be)?
        {
            Some(v) => serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt {
                what: "source",
                detail: e.to_string(),
            })?,
            None => SourceMeta::default(),
        };
        let items = chunks::states(&txn.open_table(ITEM_CHUNKS).map_err(be)?, source)?;
        let revision_floor = txn
            .open_table(FLOORS)
            .map_err(be)?
            .get(source)
            .map_err(be)?
            .map_or(0, |v| v.value());
        Ok(SourceSnapshot {
            meta,
            items,
            revision_floor,
            fence: 0,
            resume_ms: None,
        })
    }

    fn item_data(
        &self,
        source: &str,
        keys: &[&str],
    ) -> Result<HashMap<String, Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(be)?;
        let (bits, _) = chunks::layout_in(&txn.open_table(ITEM_LAYOUT).map_err(be)?, source)?;
        chunks::data(
            &txn.open_table(ITEM_CHUNKS).map_err(be)?,
            bits,
            source,
            keys,
        )
    }

    fn pending(&self) -> Result<Vec<OutboxRow>, StoreError> {
        let txn = self.db.begin_read().map_err(be)?;
        read_rows(&txn.open_table(OUTBOX).map_err(be)?, decode_row)
    }

    fn pending_headers(&self) -> Result<Vec<OutboxRow>, StoreError> {
        let txn = self.db.begin_read().map_err(be)?;
        read_rows(&txn.open_table(OUTBOX).map_err(be)?, decode_header)
    }

    fn dead_headers(&self) -> Result<Vec<OutboxRow>, StoreError> {
        let txn = self.db.begin_read().map_err(be)?;
        read_rows(&txn.open_table(DEAD).map_err(be)?, decode_header)
    }

    fn outbox_row(&self, seq: u64) -> Result<Option<OutboxRow>, StoreError> {
        let txn = self.db.begin_read().map_err(be)?;
        read_row(&txn.open_table(OUTBOX).map_err(be)?, seq)
    }

    fn dead(&self) -> Result<Vec<OutboxRow>, StoreError> {
        let txn = self.db.begin_read().map_err(be)?;
        read_rows(&txn.open_table(DEAD).map_err(be)?, decode_row)
    }

    fn set_history(&self, on: bool) {
        self.history.store(on, Ordering::Relaxed);
    }

    fn history(&self, query: &HistoryQuery) -> Result<Vec<HistoryRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(be)?;
        history::query(&txn.open_table(HISTORY).map_err(be)?, query)
    }

    fn export(
        &self,
        sink: &mut dyn FnMut(super::Dump) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.export_all(sink)
    }

    fn import(&self, lines: &[super::Dump]) -> Result<usize, StoreError> {
        self.import_all(lines)
    }

    fn event(&self, event_id: &str) -> Result<Vec<EventDelivery>, StoreError> {
        let txn = self.db.begin_read().map_err(be)?;
        let seqs = history::seqs_of(&txn.open_table(EVENT_SEQS).map_err(be)?, event_id)?;
        let records = txn.open_table(HISTORY).map_err(be)?;
        let bodies = txn.open_table(HISTORY_BODY).map_err(be)?;
        let outbox = txn.open_table(OUTBOX).map_err(be)?;
        let dead = txn.open_table(DEAD).map_err(be)?;
        let mut out = Vec::new();
        for seq in seqs {
            let Some(v) = records.get(seq).map_err(be)? else {
                continue;
            };
            let record = history::decode(v.value())?;
            let body = match record.status {
                DeliveryStatus::Delivered => history::delivered_body(&bodies, seq)?,
                DeliveryStatus::Pending => read_row(&outbox, seq)?.map(|r| r.body),
                DeliveryStatus::Dead => read_row(&dead, seq)?.map(|r| r.body),
                DeliveryStatus::Filtered => None,
            };
            out.push(EventDelivery { record, body });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    /// The page cache follows the number of sources between its floor and its cap.
    #[test]
    fn the_cache_grows_with_the_sources_up_to_a_cap() {
        let mib = |n: usize| super::cache_bytes(n) as f64 / f64::from(1 << 20);
        assert_eq!(mib(0), 4.0);
        assert!((4.4..4.6).contains(&mib(1_000)), "{}", mib(1_000));
        assert!((8.5..9.0).contains(&mib(10_000)), "{}", mib(10_000));
        assert_eq!(mib(1_000_000), 16.0);
        assert_eq!(mib(usize::MAX), 16.0);
    }
}

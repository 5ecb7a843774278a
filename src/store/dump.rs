//! `pollhook state export | import` (design §8, "Moving up"): a store's whole content as JSON
//! lines, the same format for every engine, so a redb deployment moves to PostgreSQL (or back)
//! without re-baselining or re-sending. This file holds the format and the redb side; the
//! PostgreSQL side is `pg/dump.rs`.
//!
//! Lines: a header, then sources (metadata, revision floor, removal mark), items (state in the
//! engine-neutral `codec::encode_item` bytes, data), pending rows, dead letters, delivery-log
//! records, and the next seq. Bytes are base64; an import goes into an empty store in one
//! transaction (all or nothing).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use super::chunks::{self, Entry, ITEM_CHUNKS};
use super::codec::{decode_row, encode_row};
use super::history::{EVENT_SEQS, HISTORY, HISTORY_BODY};
use super::redb::{
    DEAD, FLOORS, OUTBOX, REMOVED, RedbBackend, SOURCES, be, meta_table, next_seq_key,
};
use super::{HistoryRecord, OutboxRow, SourceMeta, StoreError};

/// Version of the dump format.
pub const FORMAT: u32 = 1;

/// One line of a dump.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Dump {
    /// First line.
    Header {
        /// [`FORMAT`].
        format: u32,
        /// The engine it came from.
        store: String,
    },
    /// A source's metadata.
    Source {
        /// Name.
        name: String,
        /// Metadata (`None`: only a floor or a removal mark is stored).
        meta: Option<SourceMeta>,
        /// Highest pruned tombstone revision.
        floor: u64,
        /// Missing from the config since, unix ms.
        removed_ms: Option<i64>,
    },
    /// An item's state and data.
    Item {
        /// Source name.
        source: String,
        /// Item key.
        key: String,
        /// `codec::encode_item` bytes, base64.
        state: String,
        /// The item's JSON, base64.
        data: Option<String>,
    },
    /// A pending delivery.
    Outbox {
        /// The row (without its body).
        row: OutboxRow,
        /// Body, base64.
        body: String,
    },
    /// A dead letter.
    Dead {
        /// The row (without its body).
        row: OutboxRow,
        /// Body, base64.
        body: String,
    },
    /// A delivery-log record.
    History {
        /// The record.
        record: HistoryRecord,
        /// The delivered body, base64.
        body: Option<String>,
    },
    /// The next outbox seq.
    NextSeq {
        /// Value.
        value: u64,
    },
}

/// Base64 of `bytes`.
pub fn enc(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Inverse of [`enc`].
pub fn dec(text: &str) -> Result<Vec<u8>, StoreError> {
    B64.decode(text).map_err(|e| StoreError::Corrupt {
        what: "dump",
        detail: format!("bad base64: {e}"),
    })
}

/// A row's body as stored in a dump line.
pub fn with_body(mut row: OutboxRow, body: &str) -> Result<OutboxRow, StoreError> {
    row.body = Arc::from(dec(body)?);
    Ok(row)
}

fn corrupt(detail: String) -> StoreError {
    StoreError::Corrupt {
        what: "source",
        detail,
    }
}

impl RedbBackend {
    /// Writes every stored row to `sink` (see the module notes).
    pub fn export_all(
        &self,
        sink: &mut dyn FnMut(Dump) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let txn = self.db().begin_read().map_err(be)?;
        sink(Dump::Header {
            format: FORMAT,
            store: "redb".into(),
        })?;
        let mut sources: BTreeMap<String, (Option<SourceMeta>, u64, Option<i64>)> = BTreeMap::new();
        for entry in txn.open_table(SOURCES).map_err(be)?.iter().map_err(be)? {
            let (k, v) = entry.map_err(be)?;
            let meta = serde_json::from_slice(v.value()).map_err(|e| corrupt(e.to_string()))?;
            sources.entry(k.value().to_owned()).or_default().0 = Some(meta);
        }
        for entry in txn.open_table(FLOORS).map_err(be)?.iter().map_err(be)? {
            let (k, v) = entry.map_err(be)?;
            sources.entry(k.value().to_owned()).or_default().1 = v.value();
        }
        for entry in txn.open_table(REMOVED).map_err(be)?.iter().map_err(be)? {
            let (k, v) = entry.map_err(be)?;
            sources.entry(k.value().to_owned()).or_default().2 = Some(v.value());
        }
        for (name, (meta, floor, removed_ms)) in sources {
            sink(Dump::Source {
                name,
                meta,
                floor,
                removed_ms,
            })?;
        }
        chunks::for_each(
            &txn.open_table(ITEM_CHUNKS).map_err(be)?,
            &mut |source, e| {
                sink(Dump::Item {
                    source: source.to_owned(),
                    key: e.key,
                    state: enc(&e.state),
                    data: e.data.as_deref().map(enc),
                })
            },
        )?;
        for (table, dead) in [(OUTBOX, false), (DEAD, true)] {
            for entry in txn.open_table(table).map_err(be)?.iter().map_err(be)? {
                let (_, v) = entry.map_err(be)?;
                let row = decode_row(v.value())?;
                let body = enc(&row.body);
                sink(match dead {
                    false => Dump::Outbox { row, body },
                    true => Dump::Dead { row, body },
                })?;
            }
        }
        let bodies = txn.open_table(HISTORY_BODY).map_err(be)?;
        for entry in txn.open_table(HISTORY).map_err(be)?.iter().map_err(be)? {
            let (k, v) = entry.map_err(be)?;
            let record = super::history::decode(v.value())?;
            let body = bodies.get(k.value()).map_err(be)?.map(|b| enc(b.value()));
            sink(Dump::History { record, body })?;
        }
        let next = txn
            .open_table(meta_table())
            .map_err(be)?
            .get(next_seq_key())
            .map_err(be)?
            .map_or(1, |v| v.value());
        sink(Dump::NextSeq { value: next })
    }

    /// Loads a dump into this (empty) state file in one transaction; returns the lines applied.
    pub fn import_all(&self, lines: &[Dump]) -> Result<usize, StoreError> {
        let txn = self.db().begin_write().map_err(be)?;
        {
            let not_empty = !txn
                .open_table(SOURCES)
                .map_err(be)?
                .is_empty()
                .map_err(be)?
                || !txn.open_table(OUTBOX).map_err(be)?.is_empty().map_err(be)?;
            if not_empty {
                return Err(StoreError::Backend(
                    "the target state already holds sources or deliveries; import into an empty store".into(),
                ));
            }
            let mut sources = txn.open_table(SOURCES).map_err(be)?;
            let mut floors = txn.open_table(FLOORS).map_err(be)?;
            let mut removed = txn.open_table(REMOVED).map_err(be)?;
            let mut items: BTreeMap<&str, Vec<Entry>> = BTreeMap::new();
            let mut outbox = txn.open_table(OUTBOX).map_err(be)?;
            let mut dead = txn.open_table(DEAD).map_err(be)?;
            let mut history = txn.open_table(HISTORY).map_err(be)?;
            let mut history_body = txn.open_table(HISTORY_BODY).map_err(be)?;
            let mut event_seqs = txn.open_table(EVENT_SEQS).map_err(be)?;
            let mut next_seq = 1u64;
            for line in lines {
                match line {
                    Dump::Header { .. } => {}
                    Dump::Source {
                        name,
                        meta,
                        floor,
                        removed_ms,
                    } => {
                        if let Some(meta) = meta {
                            let bytes = serde_json::to_vec(meta)
                                .map_err(|e| StoreError::Backend(e.to_string()))?;
                            sources
                                .insert(name.as_str(), bytes.as_slice())
                                .map_err(be)?;
                        }
                        if *floor > 0 {
                            floors.insert(name.as_str(), *floor).map_err(be)?;
                        }
                        if let Some(ms) = removed_ms {
                            removed.insert(name.as_str(), *ms).map_err(be)?;
                        }
                    }
                    Dump::Item {
                        source,
                        key,
                        state,
                        data: bytes,
                    } => {
                        items.entry(source).or_default().push(Entry {
                            key: key.clone(),
                            state: dec(state)?,
                            data: bytes.as_deref().map(dec).transpose()?,
                        });
                    }
                    Dump::Outbox { row, body } | Dump::Dead { row, body } => {
                        let row = with_body(row.clone(), body)?;
                        let table = match line {
                            Dump::Dead { .. } => &mut dead,
                            _ => &mut outbox,
                        };
                        table
                            .insert(row.seq, encode_row(&row).as_slice())
                            .map_err(be)?;
                        next_seq = next_seq.max(row.seq + 1);
                    }
                    Dump::History { record, body } => {
                        let bytes = serde_json::to_vec(record)
                            .map_err(|e| StoreError::Backend(e.to_string()))?;
                        history.insert(record.seq, bytes.as_slice()).map_err(be)?;
                        if let Some(b) = body {
                            history_body
                                .insert(record.seq, dec(b)?.as_slice())
                                .map_err(be)?;
                        }
                        event_seqs
                            .insert((record.event_id.as_str(), record.seq), ())
                            .map_err(be)?;
                        next_seq = next_seq.max(record.seq + 1);
                    }
                    Dump::NextSeq { value } => next_seq = next_seq.max(*value),
                }
            }
            for (source, all) in items {
                chunks::replace(&txn, source, all)?;
            }
            txn.open_table(meta_table())
                .map_err(be)?
                .insert(next_seq_key(), next_seq)
                .map_err(be)?;
        }
        txn.commit().map_err(be)?;
        Ok(lines.len())
    }
}

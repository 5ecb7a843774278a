//! The delivery log in redb (design §6a): one record per delivery keyed by its outbox seq, the
//! body of delivered ones, and an index from event id to seqs. Every function here runs inside
//! the writer's transaction, so a record changes in the same group commit as the outcome it
//! describes (no extra fsync per attempt).

use std::sync::Arc;

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::redb::be;
use super::{Attempt, DeliveryStatus, HistoryQuery, HistoryRecord, OutboxRow, StoreError};

/// Delivery records by seq.
pub(super) const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
/// Bodies of delivered deliveries by seq (pending ones are in the outbox, dead ones in dead).
pub(super) const HISTORY_BODY: TableDefinition<u64, &[u8]> = TableDefinition::new("history_body");
/// (event id, seq) of every recorded delivery.
pub(super) const EVENT_SEQS: TableDefinition<(&str, u64), ()> = TableDefinition::new("event_seqs");

pub(super) fn decode(bytes: &[u8]) -> Result<HistoryRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what: "history",
        detail: e.to_string(),
    })
}

fn put(txn: &WriteTransaction, r: &HistoryRecord) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(r).map_err(|e| StoreError::Backend(e.to_string()))?;
    txn.open_table(HISTORY)
        .map_err(be)?
        .insert(r.seq, bytes.as_slice())
        .map_err(be)?;
    Ok(())
}

fn get(txn: &WriteTransaction, seq: u64) -> Result<Option<HistoryRecord>, StoreError> {
    let table = txn.open_table(HISTORY).map_err(be)?;
    let found = table.get(seq).map_err(be)?;
    found.map(|v| decode(v.value())).transpose()
}

/// Records a new delivery (pending, or dead from the start when its jq program failed).
pub(super) fn created(
    txn: &WriteTransaction,
    row: &OutboxRow,
    resend_of: Option<u64>,
) -> Result<(), StoreError> {
    let status = match row.dead_reason {
        Some(_) => DeliveryStatus::Dead,
        None => DeliveryStatus::Pending,
    };
    record(txn, row, status, row.dead_reason.clone(), resend_of)
}

fn record(
    txn: &WriteTransaction,
    row: &OutboxRow,
    status: DeliveryStatus,
    reason: Option<String>,
    resend_of: Option<u64>,
) -> Result<(), StoreError> {
    put(txn, &HistoryRecord::created(row, status, reason, resend_of))?;
    txn.open_table(EVENT_SEQS)
        .map_err(be)?
        .insert((row.event_id.as_str(), row.seq), ())
        .map_err(be)?;
    Ok(())
}

/// Adds an attempt and the new status to a delivery's record; a delivered one keeps its body.
/// A record pruned meanwhile (or written before the log existed) is left alone.
pub(super) fn settled(
    txn: &WriteTransaction,
    seq: u64,
    status: DeliveryStatus,
    attempt: Option<&Attempt>,
    reason: Option<&str>,
    body: Option<&[u8]>,
) -> Result<(), StoreError> {
    let Some(mut r) = get(txn, seq)? else {
        return Ok(());
    };
    r.settle(status, attempt.cloned(), reason.map(str::to_owned));
    put(txn, &r)?;
    if let Some(body) = body {
        txn.open_table(HISTORY_BODY)
            .map_err(be)?
            .insert(seq, body)
            .map_err(be)?;
    }
    Ok(())
}

/// The body a delivered delivery was sent with.
pub(super) fn delivered_body(
    table: &impl ReadableTable<u64, &'static [u8]>,
    seq: u64,
) -> Result<Option<Arc<[u8]>>, StoreError> {
    Ok(table.get(seq).map_err(be)?.map(|v| Arc::from(v.value())))
}

/// The log, newest first, filtered.
pub(super) fn query(
    table: &impl ReadableTable<u64, &'static [u8]>,
    q: &HistoryQuery,
) -> Result<Vec<HistoryRecord>, StoreError> {
    let mut out = Vec::new();
    let range = table
        .range(..q.before_seq.unwrap_or(u64::MAX))
        .map_err(be)?;
    for entry in range.rev() {
        let (_, v) = entry.map_err(be)?;
        let r = decode(v.value())?;
        if q.since_ms.is_some_and(|since| r.created_ms < since) {
            // Seqs grow with time (apart from resends, which are newer still): nothing older
            // can match.
            break;
        }
        let wanted = q.source.as_ref().is_none_or(|s| *s == r.source)
            && q.destination.as_ref().is_none_or(|d| *d == r.destination)
            && q.status.is_none_or(|s| s == r.status);
        if wanted {
            out.push(r);
            if out.len() >= q.limit {
                break;
            }
        }
    }
    Ok(out)
}

/// The seqs recorded for an event.
pub(super) fn seqs_of(
    table: &impl ReadableTable<(&'static str, u64), ()>,
    event_id: &str,
) -> Result<Vec<u64>, StoreError> {
    let mut out = Vec::new();
    for entry in table
        .range((event_id, 0)..=(event_id, u64::MAX))
        .map_err(be)?
    {
        let (k, _) = entry.map_err(be)?;
        out.push(k.value().1);
    }
    Ok(out)
}

/// A delivered delivery's stored row, rebuilt from its record and kept body, to be sent again.
pub(super) fn resendable(
    txn: &WriteTransaction,
    seq: u64,
) -> Result<Option<(HistoryRecord, Vec<u8>)>, StoreError> {
    let Some(r) = get(txn, seq)? else {
        return Ok(None);
    };
    let body = txn
        .open_table(HISTORY_BODY)
        .map_err(be)?
        .get(seq)
        .map_err(be)?
        .map(|v| v.value().to_vec());
    Ok(body.map(|b| (r, b)))
}

/// Deletes records older than `before_ms`, or the oldest beyond `max_records`, examining at most
/// `budget` records from the oldest. Pending and dead deliveries keep their records (they are
/// still in the outbox or the dead letters). Returns how many were deleted.
pub(super) fn prune(
    txn: &WriteTransaction,
    before_ms: i64,
    max_records: u64,
    budget: usize,
) -> Result<usize, StoreError> {
    let mut table = txn.open_table(HISTORY).map_err(be)?;
    let mut excess = table.len().map_err(be)?.saturating_sub(max_records);
    let mut doomed = Vec::new();
    for entry in table.iter().map_err(be)?.take(budget) {
        let (k, v) = entry.map_err(be)?;
        let r = decode(v.value())?;
        let old = r.created_ms < before_ms;
        if !old && excess == 0 {
            break;
        }
        if matches!(r.status, DeliveryStatus::Pending | DeliveryStatus::Dead) {
            continue;
        }
        excess = excess.saturating_sub(1);
        doomed.push((k.value(), r.event_id));
    }
    let mut bodies = txn.open_table(HISTORY_BODY).map_err(be)?;
    let mut index = txn.open_table(EVENT_SEQS).map_err(be)?;
    for (seq, event) in &doomed {
        table.remove(*seq).map_err(be)?;
        bodies.remove(*seq).map_err(be)?;
        index.remove((event.as_str(), *seq)).map_err(be)?;
    }
    Ok(doomed.len())
}

//! The delivery log on PostgreSQL (design §6a): one row per delivery with its record as JSON,
//! the columns the log is filtered on, and the body of delivered ones. Every function runs in
//! the writer's transaction, like the outcome it records.

use tokio_postgres::Transaction;

use super::write::json_err;
use super::{pg_err, seq_i};
use crate::store::{Attempt, DeliveryStatus, HistoryRecord, OutboxRow, StoreError};

/// A stored record.
pub(super) fn record_of(bytes: &[u8]) -> Result<HistoryRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what: "history",
        detail: e.to_string(),
    })
}

/// A new log record: the delivery's row, its status, why it is dead, what it re-sends.
pub(super) type Created<'a> = (&'a OutboxRow, DeliveryStatus, Option<String>, Option<u64>);

/// Records a new delivery (pending, or dead from the start).
pub(super) async fn created(
    txn: &Transaction<'_>,
    row: &OutboxRow,
    resend_of: Option<u64>,
) -> Result<(), StoreError> {
    let status = match row.dead_reason {
        Some(_) => DeliveryStatus::Dead,
        None => DeliveryStatus::Pending,
    };
    record_many(txn, &[(row, status, row.dead_reason.clone(), resend_of)]).await
}

/// Records new deliveries in one statement.
pub(super) async fn record_many(
    txn: &Transaction<'_>,
    list: &[Created<'_>],
) -> Result<(), StoreError> {
    if list.is_empty() {
        return Ok(());
    }
    let mut cols = (
        Vec::with_capacity(list.len()),
        Vec::with_capacity(list.len()),
        Vec::with_capacity(list.len()),
        Vec::with_capacity(list.len()),
        Vec::with_capacity(list.len()),
        Vec::with_capacity(list.len()),
        Vec::with_capacity(list.len()),
        Vec::with_capacity(list.len()),
    );
    for (row, status, reason, resend_of) in list {
        let r = HistoryRecord::created(row, *status, reason.clone(), *resend_of);
        cols.0.push(seq_i(r.seq));
        cols.1.push(row.event_id.as_str());
        cols.2.push(row.source.as_str());
        cols.3.push(row.destination.as_str());
        cols.4.push(status.as_str());
        cols.5.push(row.created_ms);
        cols.6.push(resend_of.map(seq_i));
        cols.7.push(serde_json::to_vec(&r).map_err(json_err)?);
    }
    txn.execute(
        "INSERT INTO pollhook_history (seq, event_id, source, destination, status, created_ms, resend_of, record)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::bigint[], $7::bigint[], $8::bytea[])",
        &[&cols.0, &cols.1, &cols.2, &cols.3, &cols.4, &cols.5, &cols.6, &cols.7],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

/// Adds an attempt and the new status to a delivery's record; a delivered one keeps its body.
pub(super) async fn settled(
    txn: &Transaction<'_>,
    seq: u64,
    status: DeliveryStatus,
    attempt: Option<&Attempt>,
    reason: Option<&str>,
    body: Option<&[u8]>,
) -> Result<(), StoreError> {
    let Some(found) = txn
        .query_opt(
            "SELECT record FROM pollhook_history WHERE seq = $1 FOR UPDATE",
            &[&seq_i(seq)],
        )
        .await
        .map_err(pg_err)?
    else {
        return Ok(());
    };
    let mut r = record_of(found.get(0))?;
    r.settle(status, attempt.cloned(), reason.map(str::to_owned));
    txn.execute(
        "UPDATE pollhook_history SET status = $2, record = $3, body = coalesce($4, body) WHERE seq = $1",
        &[&seq_i(seq), &status.as_str(), &serde_json::to_vec(&r).map_err(json_err)?, &body],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

/// An outcome for the log: seq, new status, the attempt, why dead, the delivered body.
pub(super) type Settled = (
    u64,
    DeliveryStatus,
    Option<Attempt>,
    Option<String>,
    Option<Vec<u8>>,
);

/// [`settled`] for many deliveries (distinct seqs) in two statements.
pub(super) async fn settled_many(
    txn: &Transaction<'_>,
    list: Vec<Settled>,
) -> Result<(), StoreError> {
    if list.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = list.iter().map(|s| seq_i(s.0)).collect();
    let found = txn
        .query(
            "SELECT seq, record FROM pollhook_history WHERE seq = ANY($1) FOR UPDATE",
            &[&seqs],
        )
        .await
        .map_err(pg_err)?;
    let mut records: std::collections::HashMap<i64, HistoryRecord> =
        std::collections::HashMap::new();
    for r in &found {
        records.insert(r.get(0), record_of(r.get(1))?);
    }
    let (mut ids, mut statuses, mut bytes, mut bodies) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (seq, status, attempt, reason, body) in list {
        // A record pruned meanwhile (or written before the log existed) is left alone.
        let Some(mut r) = records.remove(&seq_i(seq)) else {
            continue;
        };
        r.settle(status, attempt, reason);
        ids.push(seq_i(seq));
        statuses.push(status.as_str());
        bytes.push(serde_json::to_vec(&r).map_err(json_err)?);
        bodies.push(body);
    }
    txn.execute(
        "UPDATE pollhook_history h SET status = t.st, record = t.rec, body = coalesce(t.body, h.body)
         FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::bytea[]) AS t(seq, st, rec, body)
         WHERE h.seq = t.seq",
        &[&ids, &statuses, &bytes, &bodies],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

/// Deletes log records older than `before_ms` or beyond `max_records`, looking at no more than
/// `budget` of the oldest; pending and dead deliveries keep theirs.
pub(super) async fn prune_history(
    txn: &Transaction<'_>,
    before_ms: i64,
    max_records: u64,
    budget: usize,
) -> Result<usize, StoreError> {
    let total: i64 = txn
        .query_one("SELECT count(*) FROM pollhook_history", &[])
        .await
        .map_err(pg_err)?
        .get(0);
    let mut excess = (total as u64).saturating_sub(max_records);
    let rows = txn
        .query(
            "SELECT seq, created_ms, status FROM pollhook_history ORDER BY seq LIMIT $1",
            &[&(budget as i64)],
        )
        .await
        .map_err(pg_err)?;
    let mut doomed: Vec<i64> = Vec::new();
    for r in &rows {
        let (seq, created_ms, status): (i64, i64, String) = (r.get(0), r.get(1), r.get(2));
        let old = created_ms < before_ms;
        if !old && excess == 0 {
            break;
        }
        if status == "pending" || status == "dead" {
            continue;
        }
        excess = excess.saturating_sub(1);
        doomed.push(seq);
    }
    if !doomed.is_empty() {
        txn.execute(
            "DELETE FROM pollhook_history WHERE seq = ANY($1)",
            &[&doomed],
        )
        .await
        .map_err(pg_err)?;
    }
    Ok(doomed.len())
}

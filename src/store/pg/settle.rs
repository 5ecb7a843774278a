//! Delivery outcomes on PostgreSQL: rows delivered, retried later or dead-lettered, and their
//! delivery-log records, in a few statements per batch whatever its size.

use std::collections::HashSet;

use tokio_postgres::Transaction;

use super::history::{Settled, settled_many};
use super::write::{from_header, header, insert_dead_rows};
use super::{PgBackend, pg_err, seq_i, seq_u};
use crate::store::{DeliveryStatus, Settle, StoreError};

/// The row an outcome is for.
fn seq_of(s: &Settle) -> u64 {
    match s {
        Settle::Rendered { seq, .. }
        | Settle::Filtered { seq }
        | Settle::Delivered { seq, .. }
        | Settle::Retry { seq, .. }
        | Settle::Dead { seq, .. } => *seq,
    }
}

impl PgBackend {
    /// Applies delivery outcomes in a few statements per run of distinct rows: a batch naming
    /// one row twice (two attempts of it settled together) is split where the row repeats, so
    /// its outcomes apply in order.
    pub(super) async fn settle_all(
        &self,
        txn: &Transaction<'_>,
        list: &[Settle],
    ) -> Result<(), StoreError> {
        let mut start = 0;
        let mut seen = HashSet::new();
        for (i, s) in list.iter().enumerate() {
            if !seen.insert(seq_of(s)) {
                self.settle_distinct(txn, &list[start..i]).await?;
                seen = HashSet::from([seq_of(s)]);
                start = i;
            }
        }
        self.settle_distinct(txn, &list[start..]).await
    }

    /// [`Self::settle_all`] for outcomes of distinct rows.
    async fn settle_distinct(
        &self,
        txn: &Transaction<'_>,
        list: &[Settle],
    ) -> Result<(), StoreError> {
        let of_kind = |kind: fn(&Settle) -> bool| -> Vec<i64> {
            list.iter()
                .filter(|s| kind(s))
                .map(|s| seq_i(seq_of(s)))
                .collect()
        };
        let mut log: Vec<Settled> = Vec::new();
        rendered(txn, list).await?;
        let filtered: Vec<i64> = of_kind(|s| matches!(s, Settle::Filtered { .. }));
        if !filtered.is_empty() {
            let gone = txn
                .query(
                    "DELETE FROM pollhook_outbox WHERE seq = ANY($1) RETURNING seq",
                    &[&filtered],
                )
                .await
                .map_err(pg_err)?;
            for r in gone {
                log.push((seq_u(r.get(0)), DeliveryStatus::Filtered, None, None, None));
            }
        }
        let delivered: Vec<i64> = of_kind(|s| matches!(s, Settle::Delivered { .. }));
        let by_seq: std::collections::HashMap<u64, &Settle> =
            list.iter().map(|s| (seq_of(s), s)).collect();
        if !delivered.is_empty() {
            let gone = txn
                .query(
                    "DELETE FROM pollhook_outbox WHERE seq = ANY($1) RETURNING seq, body",
                    &[&delivered],
                )
                .await
                .map_err(pg_err)?;
            for r in gone {
                let seq = seq_u(r.get(0));
                if let Some(Settle::Delivered { attempt, .. }) = by_seq.get(&seq) {
                    log.push((
                        seq,
                        DeliveryStatus::Delivered,
                        attempt.clone(),
                        None,
                        Some(r.get(1)),
                    ));
                }
            }
        }
        let retried: Vec<i64> = of_kind(|s| matches!(s, Settle::Retry { .. }));
        if !retried.is_empty() {
            let found = txn
                .query(
                    "SELECT seq, header FROM pollhook_outbox WHERE seq = ANY($1) FOR UPDATE",
                    &[&retried],
                )
                .await
                .map_err(pg_err)?;
            let (mut seqs, mut headers, mut dues) = (Vec::new(), Vec::new(), Vec::new());
            for r in found {
                let seq = seq_u(r.get(0));
                let Some(Settle::Retry {
                    attempts,
                    due_ms,
                    error,
                    attempt,
                    ..
                }) = by_seq.get(&seq)
                else {
                    continue;
                };
                let mut row = from_header(r.get(1), None)?;
                row.attempts = *attempts;
                row.due_ms = *due_ms;
                row.last_error = Some(error.clone());
                seqs.push(seq_i(seq));
                headers.push(header(&row)?);
                dues.push(*due_ms);
                log.push((seq, DeliveryStatus::Pending, attempt.clone(), None, None));
            }
            txn.execute(
                "UPDATE pollhook_outbox o SET header = t.h, due_ms = t.d
                 FROM unnest($1::bigint[], $2::bytea[], $3::bigint[]) AS t(seq, h, d)
                 WHERE o.seq = t.seq",
                &[&seqs, &headers, &dues],
            )
            .await
            .map_err(pg_err)?;
        }
        let dead: Vec<i64> = of_kind(|s| matches!(s, Settle::Dead { .. }));
        if !dead.is_empty() {
            let gone = txn
                .query(
                    "DELETE FROM pollhook_outbox WHERE seq = ANY($1) RETURNING seq, header, body",
                    &[&dead],
                )
                .await
                .map_err(pg_err)?;
            let mut rows = Vec::with_capacity(gone.len());
            for r in gone {
                let seq = seq_u(r.get(0));
                let Some(Settle::Dead {
                    attempts,
                    reason,
                    now_ms,
                    attempt,
                    ..
                }) = by_seq.get(&seq)
                else {
                    continue;
                };
                let mut row = from_header(r.get(1), Some(r.get(2)))?;
                row.attempts = *attempts;
                row.dead_reason = Some(reason.clone());
                row.dead_ms = Some(*now_ms);
                rows.push(row);
                log.push((
                    seq,
                    DeliveryStatus::Dead,
                    attempt.clone(),
                    Some(reason.clone()),
                    None,
                ));
            }
            insert_dead_rows(txn, &rows).await?;
        }
        if self.logging() {
            settled_many(txn, log).await?;
        }
        Ok(())
    }
}

/// Stores the bodies that rows' jq programs rendered, and that they need no rendering again.
async fn rendered(txn: &Transaction<'_>, list: &[Settle]) -> Result<(), StoreError> {
    let bodies: std::collections::HashMap<i64, Option<&[u8]>> = list
        .iter()
        .filter_map(|s| match s {
            Settle::Rendered { seq, body } => Some((seq_i(*seq), body.as_deref())),
            _ => None,
        })
        .collect();
    if bodies.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = bodies.keys().copied().collect();
    let found = txn
        .query(
            "SELECT seq, header, body FROM pollhook_outbox WHERE seq = ANY($1) FOR UPDATE",
            &[&seqs],
        )
        .await
        .map_err(pg_err)?;
    let (mut seqs, mut headers, mut payloads) = (Vec::new(), Vec::new(), Vec::new());
    for r in found {
        let seq: i64 = r.get(0);
        let mut row = from_header(r.get(1), None)?;
        row.render = false;
        let stored: &[u8] = r.get(2);
        let body = bodies.get(&seq).copied().flatten().unwrap_or(stored);
        seqs.push(seq);
        headers.push(header(&row)?);
        payloads.push(body.to_vec());
    }
    txn.execute(
        "UPDATE pollhook_outbox o SET header = t.h, body = t.b
         FROM unnest($1::bigint[], $2::bytea[], $3::bytea[]) AS t(seq, h, b)
         WHERE o.seq = t.seq",
        &[&seqs, &headers, &payloads],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

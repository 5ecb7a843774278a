//! Revive, resend and replay on PostgreSQL (design §6a): dead letters back to the outbox
//! unless superseded, delivered deliveries sent again as new rows with their kept body.

use std::sync::Arc;

use tokio_postgres::Transaction;

use super::history::{created, record_of, settled};
use super::write::from_header;
use super::{PgBackend, pg_err, seq_i};
use crate::store::codec::decode_item;
use crate::store::{DeliveryStatus, StoreError, Superseded, WriteResult};

impl PgBackend {
    /// Moves dead letters back to the outbox unless superseded (see `RedbBackend::revive`).
    pub(super) async fn revive(
        &self,
        txn: &Transaction<'_>,
        seqs: &[u64],
        now_ms: i64,
    ) -> Result<WriteResult, StoreError> {
        let mut rows = Vec::new();
        let mut superseded = Vec::new();
        for &seq in seqs {
            let Some(r) = txn
                .query_opt(
                    "SELECT header, body FROM pollhook_dead WHERE seq = $1 FOR UPDATE",
                    &[&seq_i(seq)],
                )
                .await
                .map_err(pg_err)?
            else {
                continue;
            };
            let mut row = from_header(r.get(0), Some(r.get(1)))?;
            let current = match txn
                .query_opt(
                    "SELECT state FROM pollhook_items WHERE source = $1 AND key = $2",
                    &[&row.source, &row.key],
                )
                .await
                .map_err(pg_err)?
            {
                Some(r) => decode_item(r.get(0))?.revision,
                None => row.revision,
            };
            if current > row.revision {
                superseded.push(Superseded {
                    seq,
                    revision: row.revision,
                    current,
                });
                continue;
            }
            txn.execute("DELETE FROM pollhook_dead WHERE seq = $1", &[&seq_i(seq)])
                .await
                .map_err(pg_err)?;
            row.attempts = 0;
            row.due_ms = now_ms;
            row.dead_reason = None;
            row.dead_ms = None;
            let mine = self.insert_outbox(txn, &row).await?;
            if self.logging() {
                settled(txn, seq, DeliveryStatus::Pending, None, None, None).await?;
            }
            // A revived row some other instance must send first stays for the claims.
            if mine {
                rows.push(row);
            }
        }
        Ok(WriteResult::Revived { rows, superseded })
    }

    /// Sends deliveries again in order: delivered ones as new rows with their kept body, dead
    /// ones revived; pending and filtered ones are skipped.
    pub(super) async fn send_again(
        &self,
        txn: &Transaction<'_>,
        seqs: &[u64],
        now_ms: i64,
    ) -> Result<WriteResult, StoreError> {
        let mut rows = Vec::new();
        let mut superseded = Vec::new();
        for &seq in seqs {
            let dead = txn
                .query_opt("SELECT 1 FROM pollhook_dead WHERE seq = $1", &[&seq_i(seq)])
                .await
                .map_err(pg_err)?
                .is_some();
            if dead {
                if let WriteResult::Revived {
                    rows: r,
                    superseded: s,
                } = self.revive(txn, &[seq], now_ms).await?
                {
                    rows.extend(r);
                    superseded.extend(s);
                }
                continue;
            }
            let Some(found) = txn
                .query_opt(
                    "SELECT record, body FROM pollhook_history WHERE seq = $1 AND body IS NOT NULL",
                    &[&seq_i(seq)],
                )
                .await
                .map_err(pg_err)?
            else {
                continue;
            };
            let record = record_of(found.get(0))?;
            let body: Vec<u8> = found.get(1);
            let new_seq = Self::seqs(txn, 1).await?.pop().unwrap_or_default();
            let row = record.to_row(new_seq, now_ms, Arc::from(body));
            let mine = self.insert_outbox(txn, &row).await?;
            if self.logging() {
                created(txn, &row, Some(record.seq)).await?;
            }
            if mine {
                rows.push(row);
            }
        }
        Ok(WriteResult::Revived { rows, superseded })
    }
}

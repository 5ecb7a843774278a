//! Writes on PostgreSQL: every [`WriteOp`] of a writer batch in one transaction, as on redb,
//! with the fencing check for poll commits and claims for the rows this instance will send.

use std::collections::HashSet;
use std::sync::Arc;

use tokio_postgres::Transaction;

use super::history::{Created, prune_history, record_many};
use super::{PgBackend, Rows, pg_err, seq_i, seq_u};
use crate::store::codec::encode_item;
use crate::store::{DeliveryStatus, OutboxRow, PollCommit, StoreError, WriteOp, WriteResult};

pub(super) fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// An outbox row's header (everything but the body) as stored.
pub(super) fn header(row: &OutboxRow) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(row).map_err(json_err)
}

/// Inverse of [`header`], with the body.
pub(super) fn from_header(bytes: &[u8], body: Option<Vec<u8>>) -> Result<OutboxRow, StoreError> {
    let mut row: OutboxRow = serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what: "outbox",
        detail: e.to_string(),
    })?;
    if let Some(body) = body {
        row.body = Arc::from(body);
    }
    Ok(row)
}

impl PgBackend {
    /// Applies a writer batch in one transaction; a fenced poll commit writes nothing and
    /// answers [`WriteResult::Fenced`], the rest of the batch commits.
    ///
    /// The fencing check runs last, just before the commit, so lease rows are locked only for
    /// the commit itself (a long batch must not hold up the heartbeats that renew them). When
    /// it finds a poll fenced, the transaction is rolled back and the batch applied again
    /// without that poll (rare: only after this instance lost a lease).
    pub(super) async fn apply_ops(&self, ops: &[WriteOp]) -> Result<Vec<WriteResult>, StoreError> {
        let mut client = self.client().await?;
        let mut fenced: HashSet<usize> = HashSet::new();
        loop {
            let txn = client.transaction().await.map_err(pg_err)?;
            let mut results = Vec::with_capacity(ops.len());
            for (i, op) in ops.iter().enumerate() {
                results.push(self.apply_op(&txn, op, fenced.contains(&i)).await?);
            }
            let now_fenced = self.fences(&txn, ops).await?;
            if now_fenced.is_subset(&fenced) {
                txn.commit().await.map_err(pg_err)?;
                return Ok(results);
            }
            txn.rollback().await.map_err(pg_err)?;
            fenced.extend(now_fenced);
        }
    }

    /// The poll commits of `ops` whose source lease this instance no longer holds with the
    /// epoch the poll's state was loaded under. The lease rows are locked (`FOR SHARE`) until
    /// the commit, so no other instance can take a source between this check and the commit.
    async fn fences(
        &self,
        txn: &Transaction<'_>,
        ops: &[WriteOp],
    ) -> Result<HashSet<usize>, StoreError> {
        let polls: Vec<(usize, &PollCommit)> = ops
            .iter()
            .enumerate()
            .filter_map(|(i, op)| match op {
                WriteOp::Poll(c) => Some((i, c)),
                _ => None,
            })
            .collect();
        if polls.is_empty() {
            return Ok(HashSet::new());
        }
        let names: Vec<&str> = polls.iter().map(|(_, c)| c.source.as_str()).collect();
        let rows = txn
            .query(
                "SELECT source, epoch FROM pollhook_leases
                 WHERE instance = $1 AND expires > now() AND source = ANY($2)
                 ORDER BY source FOR SHARE",
                &[&self.instance, &names],
            )
            .await
            .map_err(pg_err)?;
        let held: std::collections::HashMap<String, i64> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(polls
            .into_iter()
            .filter(|(_, c)| held.get(&c.source).copied() != Some(c.fence as i64))
            .map(|(i, _)| i)
            .collect())
    }

    async fn apply_op(
        &self,
        txn: &Transaction<'_>,
        op: &WriteOp,
        fenced: bool,
    ) -> Result<WriteResult, StoreError> {
        Ok(match op {
            WriteOp::Poll(c) => {
                if fenced {
                    tracing::warn!(source = %c.source, instance = %self.instance, "poll commit rejected: the source's lease is held by another instance now");
                    return Ok(WriteResult::Fenced(c.source.clone()));
                }
                self.put_meta(txn, &c.source, &c.meta).await?;
                self.put_items(txn, c).await?;
                WriteResult::Rows(self.insert_events(txn, c).await?)
            }
            WriteOp::Emit(c) => WriteResult::Rows(self.insert_events(txn, c).await?),
            WriteOp::Settle(list) => {
                self.settle_all(txn, list).await?;
                WriteResult::Settled
            }
            WriteOp::Meta { source, meta } => {
                self.put_meta(txn, source, meta).await?;
                WriteResult::Settled
            }
            WriteOp::Revive { seqs, now_ms } => {
                let wanted: Vec<u64> = match seqs {
                    Some(list) => list.clone(),
                    None => txn
                        .query("SELECT seq FROM pollhook_dead ORDER BY seq", &[])
                        .await
                        .map_err(pg_err)?
                        .iter()
                        .map(|r| seq_u(r.get(0)))
                        .collect(),
                };
                self.revive(txn, &wanted, *now_ms).await?
            }
            WriteOp::PurgeDead { before_ms } => {
                let n = txn
                    .execute(
                        "DELETE FROM pollhook_dead WHERE $1::bigint IS NULL OR dead_ms < $1",
                        &[before_ms],
                    )
                    .await
                    .map_err(pg_err)?;
                WriteResult::Count(n as usize)
            }
            WriteOp::PruneTombstones {
                source,
                before_ms,
                now_ms,
            } => WriteResult::Count(
                self.prune_tombstones(txn, source, *before_ms, *now_ms)
                    .await?,
            ),
            WriteOp::MarkRemoved { present, now_ms } => {
                txn.execute(
                    "UPDATE pollhook_sources SET removed_ms = NULL
                     WHERE name = ANY($1) AND removed_ms IS NOT NULL",
                    &[present],
                )
                .await
                .map_err(pg_err)?;
                txn.execute(
                    "UPDATE pollhook_sources SET removed_ms = $2
                     WHERE NOT (name = ANY($1)) AND removed_ms IS NULL",
                    &[present, now_ms],
                )
                .await
                .map_err(pg_err)?;
                WriteResult::Settled
            }
            WriteOp::DropRemoved { before_ms } => {
                txn.execute(
                    "DELETE FROM pollhook_items WHERE source IN
                     (SELECT name FROM pollhook_sources WHERE removed_ms < $1)",
                    &[before_ms],
                )
                .await
                .map_err(pg_err)?;
                let n = txn
                    .execute(
                        "DELETE FROM pollhook_sources WHERE removed_ms < $1",
                        &[before_ms],
                    )
                    .await
                    .map_err(pg_err)?;
                WriteResult::Count(n as usize)
            }
            WriteOp::Resend {
                event_id,
                destination,
                now_ms,
            } => {
                let rows = txn
                    .query(
                        "SELECT DISTINCT ON (destination) seq FROM pollhook_history
                         WHERE event_id = $1 AND ($2::text IS NULL OR destination = $2)
                         ORDER BY destination, seq DESC",
                        &[event_id, destination],
                    )
                    .await
                    .map_err(pg_err)?;
                let seqs: Vec<u64> = rows.iter().map(|r| seq_u(r.get(0))).collect();
                self.send_again(txn, &seqs, *now_ms).await?
            }
            WriteOp::Replay {
                source,
                since_ms,
                destination,
                now_ms,
            } => {
                let rows = txn
                    .query(
                        "SELECT seq FROM pollhook_history
                         WHERE source = $1 AND created_ms >= $2 AND resend_of IS NULL
                           AND ($3::text IS NULL OR destination = $3)
                         ORDER BY seq",
                        &[source, since_ms, destination],
                    )
                    .await
                    .map_err(pg_err)?;
                let seqs: Vec<u64> = rows.iter().map(|r| seq_u(r.get(0))).collect();
                self.send_again(txn, &seqs, *now_ms).await?
            }
            WriteOp::PruneHistory {
                before_ms,
                max_records,
                budget,
            } => WriteResult::Count(prune_history(txn, *before_ms, *max_records, *budget).await?),
        })
    }

    async fn put_meta(
        &self,
        txn: &Transaction<'_>,
        source: &str,
        meta: &crate::store::SourceMeta,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(meta).map_err(json_err)?;
        txn.execute(
            "INSERT INTO pollhook_sources (name, meta) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET meta = EXCLUDED.meta",
            &[&source, &bytes],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    /// Upserts a poll's item rows in one statement; an item whose data is unchanged keeps its
    /// stored data.
    async fn put_items(&self, txn: &Transaction<'_>, c: &PollCommit) -> Result<(), StoreError> {
        if c.items.is_empty() {
            return Ok(());
        }
        // One row per key (ON CONFLICT may not touch a row twice): the last write wins.
        let mut seen = HashSet::new();
        let (mut keys, mut states, mut data) = (Vec::new(), Vec::new(), Vec::new());
        for w in c.items.iter().rev() {
            if seen.insert(w.key.as_str()) {
                keys.push(w.key.as_str());
                states.push(encode_item(&w.state, Some(c.now_ms)));
                data.push(w.data.as_deref());
            }
        }
        txn.execute(
            "INSERT INTO pollhook_items (source, key, state, data)
             SELECT $1, k, s, d FROM unnest($2::text[], $3::bytea[], $4::bytea[]) AS t(k, s, d)
             ON CONFLICT (source, key) DO UPDATE
             SET state = EXCLUDED.state, data = coalesce(EXCLUDED.data, pollhook_items.data)",
            &[&c.source, &keys, &states, &data],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    /// `n` fresh seqs, in order.
    pub(super) async fn seqs(txn: &Transaction<'_>, n: usize) -> Result<Vec<u64>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let rows = txn
            .query(
                "SELECT nextval('pollhook_seq') FROM generate_series(1, $1::int)",
                &[&(n as i32)],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(|r| seq_u(r.get(0))).collect())
    }

    /// The outbox rows (and log records) of a commit's events, a few statements whatever their
    /// number; returns the rows this instance claimed (the ones its dispatcher sends).
    async fn insert_events(
        &self,
        txn: &Transaction<'_>,
        c: &PollCommit,
    ) -> Result<Rows, StoreError> {
        let n: usize = c.events.iter().map(|e| e.deliveries.len()).sum();
        let mut seqs = Self::seqs(txn, n).await?.into_iter();
        let mut pending = Vec::with_capacity(n);
        for event in &c.events {
            for delivery in &event.deliveries {
                let seq = seqs.next().unwrap_or_default();
                let mut row = c.row(event, &delivery.destination, event.body.clone(), seq);
                row.render = delivery.render;
                pending.push(row);
            }
        }
        let claimed = self.insert_outbox_rows(txn, &pending).await?;
        if self.logging() {
            let records: Vec<Created> = pending
                .iter()
                .map(|r| (r, DeliveryStatus::Pending, None, None))
                .collect();
            record_many(txn, &records).await?;
        }
        Ok(pending
            .into_iter()
            .filter(|r| claimed.contains(&r.seq))
            .collect())
    }

    /// Inserts pending rows in one statement, each claimed by this instance unless an earlier
    /// row of the same item for the same destination is pending and not this instance's
    /// (per-item order, invariant 4: that row must be delivered first, by whoever holds it).
    /// Returns the seqs claimed.
    pub(super) async fn insert_outbox_rows(
        &self,
        txn: &Transaction<'_>,
        rows: &[OutboxRow],
    ) -> Result<HashSet<u64>, StoreError> {
        if rows.is_empty() {
            return Ok(HashSet::new());
        }
        let seq: Vec<i64> = rows.iter().map(|r| seq_i(r.seq)).collect();
        let dest: Vec<&str> = rows.iter().map(|r| r.destination.as_str()).collect();
        let source: Vec<&str> = rows.iter().map(|r| r.source.as_str()).collect();
        let key: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        let revision: Vec<i64> = rows.iter().map(|r| seq_i(r.revision)).collect();
        let due: Vec<i64> = rows.iter().map(|r| r.due_ms).collect();
        let headers = rows.iter().map(header).collect::<Result<Vec<_>, _>>()?;
        let bodies: Vec<&[u8]> = rows.iter().map(|r| &r.body[..]).collect();
        let found = txn
            .query(
                "INSERT INTO pollhook_outbox
                   (seq, destination, source, key, revision, due_ms, header, body, claimed_by)
                 SELECT t.seq, t.d, t.s, t.k, t.r, t.due, t.h, t.b, c.me
                 FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                             $6::bigint[], $7::bytea[], $8::bytea[]) AS t(seq, d, s, k, r, due, h, b)
                 CROSS JOIN LATERAL (SELECT CASE WHEN EXISTS (
                         SELECT 1 FROM pollhook_outbox p
                         WHERE p.destination = t.d AND p.source = t.s AND p.key = t.k
                           AND p.claimed_by IS DISTINCT FROM $9
                       ) THEN NULL ELSE $9::text END AS me) c
                 RETURNING seq, claimed_by IS NOT NULL",
                &[
                    &seq,
                    &dest,
                    &source,
                    &key,
                    &revision,
                    &due,
                    &headers,
                    &bodies,
                    &self.instance,
                ],
            )
            .await
            .map_err(pg_err)?;
        Ok(found
            .iter()
            .filter(|r| r.get::<_, bool>(1))
            .map(|r| seq_u(r.get(0)))
            .collect())
    }

    /// [`Self::insert_outbox_rows`] for one row; whether it was claimed.
    pub(super) async fn insert_outbox(
        &self,
        txn: &Transaction<'_>,
        row: &OutboxRow,
    ) -> Result<bool, StoreError> {
        let claimed = self
            .insert_outbox_rows(txn, std::slice::from_ref(row))
            .await?;
        Ok(claimed.contains(&row.seq))
    }
}

pub(super) async fn insert_dead(txn: &Transaction<'_>, row: &OutboxRow) -> Result<(), StoreError> {
    insert_dead_rows(txn, std::slice::from_ref(row)).await
}

/// Inserts (or replaces) dead letters in one statement.
pub(super) async fn insert_dead_rows(
    txn: &Transaction<'_>,
    rows: &[OutboxRow],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let seq: Vec<i64> = rows.iter().map(|r| seq_i(r.seq)).collect();
    let dead_ms: Vec<i64> = rows.iter().map(|r| r.dead_ms.unwrap_or_default()).collect();
    let headers = rows.iter().map(header).collect::<Result<Vec<_>, _>>()?;
    let bodies: Vec<&[u8]> = rows.iter().map(|r| &r.body[..]).collect();
    txn.execute(
        "INSERT INTO pollhook_dead (seq, dead_ms, header, body)
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bytea[])
         ON CONFLICT (seq) DO UPDATE SET dead_ms = EXCLUDED.dead_ms, header = EXCLUDED.header, body = EXCLUDED.body",
        &[&seq, &dead_ms, &headers, &bodies],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

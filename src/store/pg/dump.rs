//! `pollhook state export | import` on PostgreSQL (format in `store/dump.rs`): an export is one
//! consistent snapshot (a repeatable-read transaction) taken while instances run; an import
//! fills an empty database in one transaction. Imported rows are unclaimed: whichever instance
//! starts first claims them.

use super::write::{from_header, header};
use super::{PgBackend, pg_err, seq_i, seq_u};
use crate::store::dump::{FORMAT, dec, enc, with_body};
use crate::store::{Dump, StoreError};

impl PgBackend {
    pub(super) async fn export_all(
        &self,
        sink: &mut (dyn FnMut(Dump) -> Result<(), StoreError> + Send),
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let txn = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_err)?;
        sink(Dump::Header {
            format: FORMAT,
            store: "postgres".into(),
        })?;
        let rows = txn
            .query(
                "SELECT name, meta, floor, removed_ms FROM pollhook_sources ORDER BY name",
                &[],
            )
            .await
            .map_err(pg_err)?;
        for r in &rows {
            let meta: Option<Vec<u8>> = r.get(1);
            let meta = meta
                .map(|m| serde_json::from_slice(&m))
                .transpose()
                .map_err(|e| StoreError::Corrupt {
                    what: "source",
                    detail: e.to_string(),
                })?;
            sink(Dump::Source {
                name: r.get(0),
                meta,
                floor: seq_u(r.get(2)),
                removed_ms: r.get(3),
            })?;
        }
        let rows = txn
            .query(
                "SELECT source, key, state, data FROM pollhook_items ORDER BY source, key",
                &[],
            )
            .await
            .map_err(pg_err)?;
        for r in &rows {
            let data: Option<Vec<u8>> = r.get(3);
            sink(Dump::Item {
                source: r.get(0),
                key: r.get(1),
                state: enc(r.get(2)),
                data: data.map(|d| enc(&d)),
            })?;
        }
        for (table, dead) in [("pollhook_outbox", false), ("pollhook_dead", true)] {
            let sql = format!("SELECT header, body FROM {table} ORDER BY seq");
            for r in &txn.query(&sql, &[]).await.map_err(pg_err)? {
                let row = from_header(r.get(0), None)?;
                let body = enc(r.get(1));
                sink(match dead {
                    false => Dump::Outbox { row, body },
                    true => Dump::Dead { row, body },
                })?;
            }
        }
        let rows = txn
            .query(
                "SELECT record, body FROM pollhook_history ORDER BY seq",
                &[],
            )
            .await
            .map_err(pg_err)?;
        for r in &rows {
            let record = super::history::record_of(r.get(0))?;
            let body: Option<Vec<u8>> = r.get(1);
            sink(Dump::History {
                record,
                body: body.map(|b| enc(&b)),
            })?;
        }
        let r = txn
            .query_one("SELECT last_value, is_called FROM pollhook_seq", &[])
            .await
            .map_err(pg_err)?;
        let (last, called): (i64, bool) = (r.get(0), r.get(1));
        let next = if called { last + 1 } else { last };
        txn.commit().await.map_err(pg_err)?;
        sink(Dump::NextSeq { value: seq_u(next) })
    }

    pub(super) async fn import_all(&self, lines: &[Dump]) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg_err)?;
        let busy: bool = txn
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pollhook_sources) OR EXISTS (SELECT 1 FROM pollhook_outbox)",
                &[],
            )
            .await
            .map_err(pg_err)?
            .get(0);
        if busy {
            return Err(StoreError::Backend(
                "the target database already holds sources or deliveries; import into an empty one"
                    .into(),
            ));
        }
        let mut next = 1u64;
        for line in lines {
            match line {
                Dump::Header { .. } => {}
                Dump::Source {
                    name,
                    meta,
                    floor,
                    removed_ms,
                } => {
                    let meta = meta
                        .as_ref()
                        .map(serde_json::to_vec)
                        .transpose()
                        .map_err(|e| StoreError::Backend(e.to_string()))?;
                    txn.execute(
                        "INSERT INTO pollhook_sources (name, meta, floor, removed_ms) VALUES ($1, $2, $3, $4)",
                        &[name, &meta, &seq_i(*floor), removed_ms],
                    )
                    .await
                    .map_err(pg_err)?;
                }
                Dump::Item {
                    source,
                    key,
                    state,
                    data,
                } => {
                    let data = data.as_deref().map(dec).transpose()?;
                    txn.execute(
                        "INSERT INTO pollhook_items (source, key, state, data) VALUES ($1, $2, $3, $4)",
                        &[source, key, &dec(state)?, &data],
                    )
                    .await
                    .map_err(pg_err)?;
                }
                Dump::Outbox { row, body } => {
                    let row = with_body(row.clone(), body)?;
                    txn.execute(
                        "INSERT INTO pollhook_outbox (seq, destination, source, key, revision, due_ms, header, body)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        &[
                            &seq_i(row.seq),
                            &row.destination,
                            &row.source,
                            &row.key,
                            &seq_i(row.revision),
                            &row.due_ms,
                            &header(&row)?,
                            &&row.body[..],
                        ],
                    )
                    .await
                    .map_err(pg_err)?;
                    next = next.max(row.seq + 1);
                }
                Dump::Dead { row, body } => {
                    let row = with_body(row.clone(), body)?;
                    super::write::insert_dead(&txn, &row).await?;
                    next = next.max(row.seq + 1);
                }
                Dump::History { record, body } => {
                    let body = body.as_deref().map(dec).transpose()?;
                    txn.execute(
                        "INSERT INTO pollhook_history (seq, event_id, source, destination, status, created_ms, resend_of, record, body)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                        &[
                            &seq_i(record.seq),
                            &record.event_id,
                            &record.source,
                            &record.destination,
                            &record.status.as_str(),
                            &record.created_ms,
                            &record.resend_of.map(seq_i),
                            &serde_json::to_vec(record).map_err(|e| StoreError::Backend(e.to_string()))?,
                            &body,
                        ],
                    )
                    .await
                    .map_err(pg_err)?;
                    next = next.max(record.seq + 1);
                }
                Dump::NextSeq { value } => next = next.max(*value),
            }
        }
        if next > 1 {
            txn.execute("SELECT setval('pollhook_seq', $1)", &[&seq_i(next - 1)])
                .await
                .map_err(pg_err)?;
        }
        txn.commit().await.map_err(pg_err)?;
        Ok(lines.len())
    }
}

//! Reads on PostgreSQL: a source's state, item data, the outbox and dead letters, the delivery
//! log. Each is one short query on a pooled connection; nothing holds a transaction open.

use std::collections::HashMap;
use std::sync::Arc;

use super::write::from_header;
use super::{PgBackend, Rows, pg_err, seq_i, seq_u};
use crate::store::codec::decode_item;
use crate::store::{
    DeliveryStatus, EventDelivery, HistoryQuery, HistoryRecord, OutboxRow, SourceMeta,
    SourceSnapshot, StoreError,
};

fn record_of(bytes: &[u8]) -> Result<HistoryRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what: "history",
        detail: e.to_string(),
    })
}

impl PgBackend {
    pub(super) async fn read_source(&self, source: &str) -> Result<SourceSnapshot, StoreError> {
        let lease = self.epoch(source);
        let client = self.client().await?;
        let found = client
            .query_opt(
                "SELECT meta, floor FROM pollhook_sources WHERE name = $1",
                &[&source],
            )
            .await
            .map_err(pg_err)?;
        let (meta, floor) = match found {
            Some(r) => {
                let meta: Option<Vec<u8>> = r.get(0);
                let meta = match meta {
                    Some(bytes) => {
                        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                            what: "source",
                            detail: e.to_string(),
                        })?
                    }
                    None => SourceMeta::default(),
                };
                (meta, seq_u(r.get(1)))
            }
            None => (SourceMeta::default(), 0),
        };
        let rows = client
            .query(
                "SELECT key, state FROM pollhook_items WHERE source = $1",
                &[&source],
            )
            .await
            .map_err(pg_err)?;
        let mut items = HashMap::with_capacity(rows.len());
        for r in &rows {
            items.insert(r.get::<_, String>(0), decode_item(r.get(1))?);
        }
        Ok(SourceSnapshot {
            meta,
            items,
            revision_floor: floor,
            fence: lease.map_or(0, |(e, _)| e as u64),
            resume_ms: lease.and_then(|(_, r)| r),
        })
    }

    pub(super) async fn read_item_data(
        &self,
        source: &str,
        keys: &[&str],
    ) -> Result<HashMap<String, Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT key, data FROM pollhook_items
                 WHERE source = $1 AND key = ANY($2) AND data IS NOT NULL",
                &[&source, &keys],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Every row of the outbox or the dead letters in seq order, with or without bodies.
    pub(super) async fn read_rows(&self, table: &str, bodies: bool) -> Result<Rows, StoreError> {
        let client = self.client().await?;
        let sql = match bodies {
            true => format!("SELECT header, body FROM {table} ORDER BY seq"),
            false => format!("SELECT header FROM {table} ORDER BY seq"),
        };
        let rows = client.query(&sql, &[]).await.map_err(pg_err)?;
        rows.iter()
            .map(|r| from_header(r.get(0), bodies.then(|| r.get(1))))
            .collect()
    }

    pub(super) async fn read_outbox_row(&self, seq: u64) -> Result<Option<OutboxRow>, StoreError> {
        let client = self.client().await?;
        let found = client
            .query_opt(
                "SELECT header, body FROM pollhook_outbox WHERE seq = $1",
                &[&seq_i(seq)],
            )
            .await
            .map_err(pg_err)?;
        found
            .map(|r| from_header(r.get(0), Some(r.get(1))))
            .transpose()
    }

    pub(super) async fn read_history(
        &self,
        q: &HistoryQuery,
    ) -> Result<Vec<HistoryRecord>, StoreError> {
        let client = self.client().await?;
        let before = q.before_seq.map_or(i64::MAX, seq_i);
        let status = q.status.map(DeliveryStatus::as_str);
        let rows = client
            .query(
                "SELECT record FROM pollhook_history
                 WHERE seq < $1
                   AND ($2::text IS NULL OR source = $2)
                   AND ($3::text IS NULL OR destination = $3)
                   AND ($4::text IS NULL OR status = $4)
                   AND ($5::bigint IS NULL OR created_ms >= $5)
                 ORDER BY seq DESC LIMIT $6",
                &[
                    &before,
                    &q.source,
                    &q.destination,
                    &status,
                    &q.since_ms,
                    &(q.limit as i64),
                ],
            )
            .await
            .map_err(pg_err)?;
        rows.iter().map(|r| record_of(r.get(0))).collect()
    }

    pub(super) async fn read_event(
        &self,
        event_id: &str,
    ) -> Result<Vec<EventDelivery>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT h.record, h.body, o.body, d.body FROM pollhook_history h
                 LEFT JOIN pollhook_outbox o ON o.seq = h.seq
                 LEFT JOIN pollhook_dead d ON d.seq = h.seq
                 WHERE h.event_id = $1 ORDER BY h.seq",
                &[&event_id],
            )
            .await
            .map_err(pg_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let record = record_of(r.get(0))?;
            let body: Option<Vec<u8>> = match record.status {
                DeliveryStatus::Delivered => r.get(1),
                DeliveryStatus::Pending => r.get(2),
                DeliveryStatus::Dead => r.get(3),
                DeliveryStatus::Filtered => None,
            };
            out.push(EventDelivery {
                record,
                body: body.map(Arc::from),
            });
        }
        Ok(out)
    }
}

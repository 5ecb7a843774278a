//! Tombstone pruning on PostgreSQL (see `store/prune.rs` for the rules): a pruned tombstone's
//! revision becomes the source's floor, so event ids never repeat.

use tokio_postgres::Transaction;

use super::{PgBackend, pg_err, seq_i};
use crate::store::StoreError;
use crate::store::codec::{decode_item, deleted_at, encode_item};

impl PgBackend {
    /// Deletes `source`'s tombstones written before `before_ms`, raising its revision floor
    /// (see `prune.rs`); stamps tombstones of unknown age with `now_ms`.
    pub(super) async fn prune_tombstones(
        &self,
        txn: &Transaction<'_>,
        source: &str,
        before_ms: i64,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let rows = txn
            .query(
                "SELECT key, state FROM pollhook_items WHERE source = $1 FOR UPDATE",
                &[&source],
            )
            .await
            .map_err(pg_err)?;
        let mut doomed = Vec::new();
        let mut floor = 0u64;
        for r in &rows {
            let (key, bytes): (String, Vec<u8>) = (r.get(0), r.get(1));
            let state = decode_item(&bytes)?;
            if !state.deleted {
                continue;
            }
            match deleted_at(&bytes) {
                Some(at) if at < before_ms => {
                    floor = floor.max(state.revision);
                    doomed.push(key);
                }
                Some(_) => {}
                None => {
                    txn.execute(
                        "UPDATE pollhook_items SET state = $3 WHERE source = $1 AND key = $2",
                        &[&source, &key, &encode_item(&state, Some(now_ms))],
                    )
                    .await
                    .map_err(pg_err)?;
                }
            }
        }
        if !doomed.is_empty() {
            txn.execute(
                "DELETE FROM pollhook_items WHERE source = $1 AND key = ANY($2)",
                &[&source, &doomed],
            )
            .await
            .map_err(pg_err)?;
        }
        if floor > 0 {
            txn.execute(
                "INSERT INTO pollhook_sources (name, floor) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET floor = greatest(pollhook_sources.floor, EXCLUDED.floor)",
                &[&source, &seq_i(floor)],
            )
            .await
            .map_err(pg_err)?;
        }
        Ok(doomed.len())
    }
}

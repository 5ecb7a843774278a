//! Resend and replay on redb (design §6a): the deliveries to send again, found through the
//! delivery log, and the rows that send them (a delivered one as a new outbox row with its kept
//! body, a dead one revived).

use std::collections::BTreeMap;
use std::sync::Arc;

use redb::{ReadableTable, WriteTransaction};

use super::codec::encode_row;
use super::history::{self, EVENT_SEQS, HISTORY};
use super::redb::{DEAD, OUTBOX, RedbBackend, be, read_row};
use super::{HistoryRecord, OutboxRow, StoreError, WriteResult};

impl RedbBackend {
    /// A new outbox row sending a delivered delivery again: same event id and body.
    fn again(
        &self,
        txn: &WriteTransaction,
        r: &HistoryRecord,
        body: Vec<u8>,
        next_seq: &mut u64,
        now_ms: i64,
    ) -> Result<OutboxRow, StoreError> {
        let row = r.to_row(*next_seq, now_ms, Arc::from(body));
        *next_seq += 1;
        txn.open_table(OUTBOX)
            .map_err(be)?
            .insert(row.seq, encode_row(&row).as_slice())
            .map_err(be)?;
        if self.logging() {
            history::created(txn, &row, Some(r.seq))?;
        }
        Ok(row)
    }

    /// Sends the given deliveries again in order: delivered ones as new rows, dead ones revived
    /// (unless superseded); pending and filtered ones are skipped.
    pub(super) fn send_again(
        &self,
        txn: &WriteTransaction,
        seqs: &[u64],
        next_seq: &mut u64,
        now_ms: i64,
    ) -> Result<WriteResult, StoreError> {
        let mut rows = Vec::new();
        let mut superseded = Vec::new();
        for &seq in seqs {
            let in_dead = read_row(&txn.open_table(DEAD).map_err(be)?, seq)?.is_some();
            if in_dead {
                if let WriteResult::Revived {
                    rows: r,
                    superseded: s,
                } = self.revive(txn, Some(&[seq]), now_ms)?
                {
                    rows.extend(r);
                    superseded.extend(s);
                }
            } else if let Some((record, body)) = history::resendable(txn, seq)? {
                rows.push(self.again(txn, &record, body, next_seq, now_ms)?);
            }
        }
        Ok(WriteResult::Revived { rows, superseded })
    }

    /// The latest delivery of an event per destination (optionally one destination).
    pub(super) fn resend_targets(
        txn: &WriteTransaction,
        event_id: &str,
        destination: Option<&str>,
    ) -> Result<Vec<u64>, StoreError> {
        let seqs = history::seqs_of(&txn.open_table(EVENT_SEQS).map_err(be)?, event_id)?;
        let table = txn.open_table(HISTORY).map_err(be)?;
        let mut latest: BTreeMap<String, u64> = BTreeMap::new();
        for seq in seqs {
            let Some(v) = table.get(seq).map_err(be)? else {
                continue;
            };
            let r = history::decode(v.value())?;
            if destination.is_none_or(|d| d == r.destination) {
                latest.insert(r.destination, seq);
            }
        }
        Ok(latest.into_values().collect())
    }

    /// What a source emitted since `since_ms` (original deliveries only), in order.
    pub(super) fn replay_targets(
        txn: &WriteTransaction,
        source: &str,
        since_ms: i64,
        destination: Option<&str>,
    ) -> Result<Vec<u64>, StoreError> {
        let table = txn.open_table(HISTORY).map_err(be)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(be)? {
            let (k, v) = entry.map_err(be)?;
            let r = history::decode(v.value())?;
            if r.source == source
                && r.created_ms >= since_ms
                && r.resend_of.is_none()
                && destination.is_none_or(|d| d == r.destination)
            {
                out.push(k.value());
            }
        }
        Ok(out)
    }
}

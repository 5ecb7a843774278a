//! The dispatcher's in-memory view of the outbox: a few dozen bytes per pending row (no body,
//! no strings), per-item chains and per-destination ready heaps. Pure: no I/O, no clock.
//!
//! Design notes:
//! - Memory is bounded by the row count, not the payloads: a row is its seq, times, attempt
//!   count, destination index and a 128-bit hash of its chain (destination, source, item key).
//!   Bodies, ids and names stay in the store and are read when a row is sent.
//! - Per-item order (invariant 4): a chain holds its rows in revision order and only its head is
//!   ever in a ready heap, so rev 4 of an item is not attempted while rev 3 to the same
//!   destination is pending. Chains never wait on each other.
//! - A row is known once: adding a seq that is already queued is a no-op, so the same row
//!   arriving twice (a writer hand-over and a reconcile, a destination removed and re-added)
//!   never makes a chain send it twice.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use xxhash_rust::xxh3::Xxh3;

use crate::store::OutboxRow;

/// A pending row as the dispatcher keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Item revision (chain order).
    pub revision: u64,
    /// When the next attempt is due, unix ms.
    pub due_ms: i64,
    /// When the event was detected, unix ms.
    pub created_ms: i64,
    /// Attempts made so far.
    pub attempts: u32,
    /// Index of the destination in [`Queue::dests`].
    pub dest: usize,
    chain: u128,
}

/// Per-destination ready heap and counts.
#[derive(Debug, Default)]
pub struct DestQueue {
    /// Destination name.
    pub name: String,
    /// Chain heads by (due, seq).
    ready: BinaryHeap<Reverse<(i64, u64)>>,
    /// Pending rows (in flight included).
    pub pending: usize,
}

/// The pending rows of every destination.
#[derive(Debug, Default)]
pub struct Queue {
    rows: HashMap<u64, Pending>,
    chains: HashMap<u128, VecDeque<u64>>,
    /// Destinations by index; an index is never reused.
    pub dests: Vec<DestQueue>,
    index: HashMap<String, usize>,
}

fn chain_of(row: &OutboxRow) -> u128 {
    let mut h = Xxh3::new();
    for part in [&row.destination, &row.source, &row.key] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.digest128()
}

impl Queue {
    /// The index of destination `name`, creating it.
    pub fn dest(&mut self, name: &str) -> usize {
        if let Some(i) = self.index.get(name) {
            return *i;
        }
        self.dests.push(DestQueue {
            name: name.to_owned(),
            ..DestQueue::default()
        });
        self.index.insert(name.to_owned(), self.dests.len() - 1);
        self.dests.len() - 1
    }

    /// The index of destination `name`, if it has one.
    pub fn dest_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Whether `seq` is queued.
    pub fn contains(&self, seq: u64) -> bool {
        self.rows.contains_key(&seq)
    }

    /// A queued row.
    pub fn get(&self, seq: u64) -> Option<&Pending> {
        self.rows.get(&seq)
    }

    /// Pending rows in all.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Queues `row` (its destination must have an index); a seq already queued is ignored.
    /// Returns whether it was added.
    pub fn add(&mut self, row: &OutboxRow) -> bool {
        if self.rows.contains_key(&row.seq) {
            return false;
        }
        let dest = self.dest(&row.destination);
        let chain = chain_of(row);
        let pending = Pending {
            revision: row.revision,
            due_ms: row.due_ms,
            created_ms: row.created_ms,
            attempts: row.attempts,
            dest,
            chain,
        };
        self.rows.insert(row.seq, pending);
        self.dests[dest].pending += 1;
        let seqs = self.chains.entry(chain).or_default();
        // Revision order; rows normally arrive in it, so this is a push at the back.
        let at = seqs
            .iter()
            .rposition(|s| self.rows.get(s).is_some_and(|p| p.revision <= row.revision))
            .map_or(0, |i| i + 1);
        seqs.insert(at, row.seq);
        if at == 0 {
            // A new head is ready; a displaced head stays queued and leaves the heap lazily
            // (`pop_due` skips entries that are no longer heads).
            self.dests[dest].ready.push(Reverse((row.due_ms, row.seq)));
        }
        true
    }

    fn is_head(&self, seq: u64) -> bool {
        self.rows
            .get(&seq)
            .and_then(|p| self.chains.get(&p.chain))
            .and_then(|c| c.front())
            == Some(&seq)
    }

    /// The next due head of destination `dest` at `now`, removed from its heap; or when the
    /// next one will be due.
    pub fn pop_due(&mut self, dest: usize, now: i64) -> Result<u64, Option<i64>> {
        loop {
            let Some(Reverse((due, seq))) = self.dests[dest].ready.peek().copied() else {
                return Err(None);
            };
            let current = self.rows.get(&seq).map(|p| p.due_ms);
            if current != Some(due) || !self.is_head(seq) {
                // Stale entry: settled, rescheduled or no longer the head.
                self.dests[dest].ready.pop();
                continue;
            }
            if due > now {
                return Err(Some(due));
            }
            self.dests[dest].ready.pop();
            return Ok(seq);
        }
    }

    /// Reschedules a head row after a failed attempt.
    pub fn retry(&mut self, seq: u64, attempts: u32, due_ms: i64) {
        if let Some(p) = self.rows.get_mut(&seq) {
            p.attempts = attempts;
            p.due_ms = due_ms;
            self.dests[p.dest].ready.push(Reverse((due_ms, seq)));
        }
    }

    /// Removes a settled row; the next row of its chain becomes ready.
    pub fn finish(&mut self, seq: u64) -> Option<Pending> {
        let p = self.rows.remove(&seq)?;
        self.dests[p.dest].pending -= 1;
        let chain = self.chains.get_mut(&p.chain)?;
        let was_head = chain.front() == Some(&seq);
        chain.retain(|s| *s != seq);
        match chain.front().copied() {
            Some(next) if was_head => {
                if let Some(n) = self.rows.get(&next) {
                    self.dests[n.dest].ready.push(Reverse((n.due_ms, next)));
                }
            }
            Some(_) => {}
            None => {
                self.chains.remove(&p.chain);
            }
        }
        Some(p)
    }

    /// Per destination: pending rows and the oldest detection time among them.
    pub fn oldest(&self) -> Vec<Option<i64>> {
        let mut out = vec![None; self.dests.len()];
        for p in self.rows.values() {
            let o: &mut Option<i64> = &mut out[p.dest];
            *o = Some(o.map_or(p.created_ms, |c| c.min(p.created_ms)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn row(seq: u64, dest: &str, key: &str, revision: u64, due_ms: i64) -> OutboxRow {
        OutboxRow {
            seq,
            destination: dest.into(),
            source: "s".into(),
            key: key.into(),
            revision,
            event_id: format!("evt_{seq}"),
            event_type: "item.created".into(),
            attempts: 0,
            due_ms,
            created_ms: due_ms,
            last_error: None,
            dead_reason: None,
            dead_ms: None,
            render: false,
            body: Arc::from(&[][..]),
        }
    }

    /// Only a chain's head is ever due; finishing it readies the next revision.
    #[test]
    fn chains_release_revisions_in_order() {
        let mut q = Queue::default();
        q.add(&row(1, "d", "x", 3, 0));
        q.add(&row(2, "d", "x", 4, 0));
        q.add(&row(3, "d", "y", 1, 0));
        let d = q.dest_index("d").unwrap();
        let mut got = vec![q.pop_due(d, 10).unwrap(), q.pop_due(d, 10).unwrap()];
        got.sort();
        assert_eq!(got, vec![1, 3]);
        assert_eq!(q.pop_due(d, 10), Err(None), "rev 4 waits for rev 3");
        q.finish(1);
        assert_eq!(q.pop_due(d, 10), Ok(2));
    }

    /// The same seq added twice is queued once.
    #[test]
    fn a_row_is_queued_once() {
        let mut q = Queue::default();
        assert!(q.add(&row(1, "d", "x", 1, 0)));
        assert!(!q.add(&row(1, "d", "x", 1, 0)));
        assert_eq!(q.len(), 1);
        let d = q.dest_index("d").unwrap();
        assert_eq!(q.pop_due(d, 0), Ok(1));
        assert_eq!(q.pop_due(d, 0), Err(None));
    }

    /// A lower revision arriving late goes before the higher one.
    #[test]
    fn late_lower_revision_goes_first() {
        let mut q = Queue::default();
        q.add(&row(5, "d", "x", 4, 0));
        q.add(&row(2, "d", "x", 3, 0));
        let d = q.dest_index("d").unwrap();
        assert_eq!(q.pop_due(d, 0), Ok(2));
        assert_eq!(q.pop_due(d, 0), Err(None));
    }

    /// A retried head becomes due at its new time.
    #[test]
    fn retry_reschedules() {
        let mut q = Queue::default();
        q.add(&row(1, "d", "x", 1, 0));
        let d = q.dest_index("d").unwrap();
        assert_eq!(q.pop_due(d, 0), Ok(1));
        q.retry(1, 1, 500);
        assert_eq!(q.pop_due(d, 100), Err(Some(500)));
        assert_eq!(q.pop_due(d, 500), Ok(1));
        assert_eq!(q.oldest()[d], Some(0));
        q.finish(1);
        assert!(q.is_empty());
        assert_eq!(q.dests[d].pending, 0);
    }
}

//! Stored state + freshly extracted items → changes. Pure; no I/O.
//!
//! Revisions are per item key and only ever grow: a deleted item leaves a tombstone with its
//! last revision, so an item that comes back gets a new revision (and so a new event id) rather
//! than reusing the id of its first creation.

mod table;

use std::collections::HashSet;

use crate::extract::{ContentHash, Item, RawHash};
pub use table::{ItemTable, KeyHash, Prior, key_hash, short_hash, version_tag};

/// What the store keeps per item key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemState {
    /// Revision of the last recorded version (1 for the first).
    pub revision: u64,
    /// Content hash of the last recorded version.
    pub hash: ContentHash,
    /// Value at `version` of the last recorded version.
    pub version: Option<String>,
    /// Whether the item is gone (a tombstone).
    pub deleted: bool,
}

#[cfg(test)]
impl ItemState {
    /// A state for tests: no version, the hash the revision's low byte repeated.
    pub(crate) fn sample(revision: u64, deleted: bool) -> Self {
        ItemState {
            revision,
            hash: ContentHash([revision as u8; 32]),
            version: None,
            deleted,
        }
    }
}

/// Kind of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A key not seen before (or seen deleted).
    Created,
    /// A known key whose content changed.
    Updated,
    /// A known key absent from a complete snapshot.
    Deleted,
}

/// One detected change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Created, updated or deleted.
    pub kind: ChangeKind,
    /// Item key.
    pub key: String,
    /// The state after the change.
    pub state: ItemState,
    /// Index of the item in the extracted list (`None` for deletions).
    pub index: Option<usize>,
}

/// Result of a diff: the changes, plus state rows that must be rewritten without an event (a new
/// `version` whose content hash, after `ignore`, did not change).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    /// Changes in item order, deletions last.
    pub changes: Vec<Change>,
    /// Silent state updates: (index in the extracted list, new state).
    pub silent: Vec<(usize, ItemState)>,
}

impl Diff {
    /// Whether the store must be written at all.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.silent.is_empty()
    }
}

/// Compares a complete snapshot with `stored`. `items` are the parsed items; `known` are the raw
/// hashes of items recognised unchanged without parsing (each stands for a live slot of
/// `stored`). `hash` computes an item's content hash; it is skipped when a `version` is present
/// and equal to the stored one. `stored_rows` gives the source's stored rows (key and full state)
/// and is called only when something was deleted, to name the deleted items. A key with no
/// stored state starts above the table's floor (pruned tombstones), so a key re-created after its
/// tombstone was pruned never reuses a revision (nor, so, an event id).
pub fn diff<E>(
    stored: &ItemTable,
    items: &[Item],
    known: &[RawHash],
    stored_rows: impl FnOnce() -> Result<Vec<(String, ItemState)>, E>,
    hash: &dyn Fn(&Item) -> ContentHash,
) -> Result<Diff, E> {
    let mut out = Diff::default();
    for (index, item) in items.iter().enumerate() {
        let prior = stored.get(&item.key);
        if let Some(change) = compare(prior, stored.floor(), item, index, hash, &mut out.silent) {
            out.changes.push(change);
        }
    }
    // Every key of the snapshot is distinct; those not created are live in `stored`. When they
    // number as many as the live stored items, nothing was deleted, and which slots are present
    // is never worked out.
    let created = out
        .changes
        .iter()
        .filter(|c| c.kind == ChangeKind::Created)
        .count();
    if stored.live() != known.len() + items.len() - created {
        let keys = items.iter().map(|i| i.key.as_str());
        let gone = stored.live_absent(keys, known);
        if !gone.is_empty() {
            out.changes.extend(deletions(&gone, stored_rows()?));
        }
    }
    Ok(out)
}

/// The change (if any) of one parsed item; a new version with equal content is recorded as a
/// silent update.
fn compare(
    old: Option<Prior>,
    floor: u64,
    item: &Item,
    index: usize,
    hash: &dyn Fn(&Item) -> ContentHash,
    silent: &mut Vec<(usize, ItemState)>,
) -> Option<Change> {
    let Some(old) = old.filter(|o| !o.deleted) else {
        let revision = old.map_or(floor + 1, |o| o.revision + 1);
        return Some(created(item, index, revision, hash(item)));
    };
    let version = version_tag(item.version.as_deref());
    if item.version.is_some() && version == old.version {
        return None;
    }
    let new_hash = hash(item);
    if short_hash(&new_hash) == old.hash {
        if version != old.version {
            silent.push((
                index,
                ItemState {
                    revision: old.revision,
                    hash: new_hash,
                    version: item.version.clone(),
                    deleted: false,
                },
            ));
        }
        return None;
    }
    let state = ItemState {
        revision: old.revision + 1,
        hash: new_hash,
        version: item.version.clone(),
        deleted: false,
    };
    Some(Change {
        kind: ChangeKind::Updated,
        key: item.key.clone(),
        state,
        index: Some(index),
    })
}

/// The deletions of the `gone` key hashes, named and carried from their stored rows, in key
/// order.
fn deletions(gone: &[(KeyHash, Prior)], rows: Vec<(String, ItemState)>) -> Vec<Change> {
    let gone: HashSet<KeyHash> = gone.iter().map(|(k, _)| *k).collect();
    let mut out: Vec<Change> = rows
        .into_iter()
        .filter(|(key, old)| !old.deleted && gone.contains(&key_hash(key)))
        .map(|(key, old)| Change {
            kind: ChangeKind::Deleted,
            state: ItemState {
                revision: old.revision + 1,
                deleted: true,
                ..old
            },
            key,
            index: None,
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

fn created(item: &Item, index: usize, revision: u64, hash: ContentHash) -> Change {
    let state = ItemState {
        revision,
        hash,
        version: item.version.clone(),
        deleted: false,
    };
    Change {
        kind: ChangeKind::Created,
        key: item.key.clone(),
        state,
        index: Some(index),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;
    use std::convert::Infallible;

    fn h(item: &Item) -> ContentHash {
        let mut b = [0u8; 32];
        let s = item.data.to_string();
        for (i, c) in s.bytes().enumerate() {
            b[i % 32] ^= c.wrapping_add(i as u8);
        }
        ContentHash(b)
    }

    fn item(key: &str, v: Option<&str>, data: serde_json::Value) -> Item {
        Item {
            key: key.into(),
            version: v.map(Into::into),
            data,
        }
    }

    fn run(
        stored: &HashMap<String, ItemState>,
        items: &[Item],
        known: &[RawHash],
        table: impl FnOnce(&mut ItemTable),
        hash: &dyn Fn(&Item) -> ContentHash,
    ) -> Diff {
        let mut t = ItemTable::new(stored.iter().map(|(k, s)| (k.as_str(), s)), 0);
        table(&mut t);
        let rows = || Ok::<_, Infallible>(stored.clone().into_iter().collect());
        diff(&t, items, known, rows, hash).unwrap()
    }

    fn state_of(items: &[Item]) -> HashMap<String, ItemState> {
        let d = run(&HashMap::new(), items, &[], |_| {}, &h);
        d.changes.into_iter().map(|c| (c.key, c.state)).collect()
    }

    /// Above a floor (pruned tombstones), a key never seen starts at floor + 1.
    #[test]
    fn new_keys_start_above_the_floor() {
        let h = |_: &Item| ContentHash([1; 32]);
        let items = [item("9", None, json!({"a":1}))];
        let t = ItemTable::new(std::iter::empty(), 41);
        let d = diff(&t, &items, &[], || Ok::<_, Infallible>(Vec::new()), &h).unwrap();
        assert_eq!(d.changes[0].state.revision, 42);
    }

    #[test]
    fn unchanged_snapshot_yields_nothing() {
        let items = vec![
            item("1", None, json!({"a":1})),
            item("2", None, json!({"a":2})),
        ];
        let stored = state_of(&items);
        let never = || -> Result<Vec<(String, ItemState)>, Infallible> {
            panic!("no deletion: stored rows are not read")
        };
        let t = ItemTable::new(stored.iter().map(|(k, s)| (k.as_str(), s)), 0);
        assert!(diff(&t, &items, &[], never, &h).unwrap().is_empty());
    }

    #[test]
    fn detects_created_updated_deleted_with_revisions() {
        let before = vec![
            item("1", None, json!({"a":1})),
            item("2", None, json!({"a":2})),
        ];
        let stored = state_of(&before);
        let after = vec![
            item("1", None, json!({"a":9})),
            item("3", None, json!({"a":3})),
        ];
        let d = run(&stored, &after, &[], |_| {}, &h);
        let kinds: Vec<_> = d
            .changes
            .iter()
            .map(|c| (c.kind, c.key.as_str(), c.state.revision))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (ChangeKind::Updated, "1", 2),
                (ChangeKind::Created, "3", 1),
                (ChangeKind::Deleted, "2", 2)
            ]
        );
        assert_eq!(
            d.changes[2].state.hash, stored["2"].hash,
            "a tombstone keeps its hash"
        );
    }

    #[test]
    fn known_bytes_are_present_not_deleted() {
        let stored = state_of(&[
            item("1", None, json!({"a":1})),
            item("2", None, json!({"a":2})),
        ]);
        let items = [item("2", None, json!({"a":3}))];
        let d = run(&stored, &items, &[77], |t| t.record_raw("1", 77), &h);
        assert_eq!(d.changes.len(), 1);
        assert_eq!(d.changes[0].kind, ChangeKind::Updated);
    }

    #[test]
    fn recreated_item_gets_a_new_revision() {
        let mut stored = state_of(&[item("1", None, json!({"a":1}))]);
        stored.get_mut("1").unwrap().deleted = true;
        stored.get_mut("1").unwrap().revision = 2;
        let d = run(&stored, &[item("1", None, json!({"a":1}))], &[], |_| {}, &h);
        assert_eq!(d.changes[0].kind, ChangeKind::Created);
        assert_eq!(d.changes[0].state.revision, 3);
    }

    #[test]
    fn equal_version_skips_hashing_and_new_version_same_hash_is_silent() {
        let stored = state_of(&[item("1", Some("v1"), json!({"a":1}))]);
        let never = |_: &Item| -> ContentHash { panic!("hash must not be computed") };
        let same_version = [item("1", Some("v1"), json!({"a":2}))];
        assert!(run(&stored, &same_version, &[], |_| {}, &never).is_empty());
        let d = run(
            &stored,
            &[item("1", Some("v2"), json!({"a":1}))],
            &[],
            |_| {},
            &h,
        );
        assert!(d.changes.is_empty());
        assert_eq!(d.silent[0].1.version.as_deref(), Some("v2"));
    }
}

//! Stored state + freshly extracted items → changes. Pure; no I/O.
//!
//! Revisions are per item key and only ever grow: a deleted item leaves a tombstone with its
//! last revision, so an item that comes back gets a new revision (and so a new event id) rather
//! than reusing the id of its first creation.

use std::collections::{HashMap, HashSet};

use crate::extract::{ContentHash, Item};

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

/// Compares a complete snapshot with `stored`. `items` are the parsed items; `unchanged` more
/// items are known unchanged without parsing (their keys, live in `stored`, come from
/// `unchanged_keys`, which is only called when a deletion is possible). `hash` computes an item's
/// content hash; it is skipped when a `version` is present and equal to the stored one.
pub fn diff<'a, I>(
    stored: &HashMap<String, ItemState>,
    items: &'a [Item],
    unchanged: usize,
    unchanged_keys: impl FnOnce() -> I,
    hash: &dyn Fn(&Item) -> ContentHash,
) -> Diff
where
    I: IntoIterator<Item = &'a str>,
{
    diff_above(stored, 0, items, unchanged, unchanged_keys, hash)
}

/// [`diff`] for a source whose pruned tombstones reached revision `floor`: an item with no
/// stored state starts above it, so a key re-created after its tombstone was pruned never
/// reuses a revision (nor, so, an event id).
pub fn diff_above<'a, I>(
    stored: &HashMap<String, ItemState>,
    floor: u64,
    items: &'a [Item],
    unchanged: usize,
    unchanged_keys: impl FnOnce() -> I,
    hash: &dyn Fn(&Item) -> ContentHash,
) -> Diff
where
    I: IntoIterator<Item = &'a str>,
{
    let mut out = Diff::default();
    for (index, item) in items.iter().enumerate() {
        let old = stored.get(&item.key);
        if let Some(change) = compare(old, floor, item, index, hash, &mut out.silent) {
            out.changes.push(change);
        }
    }
    // Every key of the snapshot is distinct; those not created are live in `stored`. When they
    // number as many as the live stored items, nothing was deleted and no key set is needed.
    let created = out
        .changes
        .iter()
        .filter(|c| c.kind == ChangeKind::Created)
        .count();
    let present_live = unchanged + items.len() - created;
    let live = stored.values().filter(|s| !s.deleted).count();
    if live != present_live {
        out.changes
            .extend(deletions(stored, items, unchanged_keys()));
    }
    out
}

/// The change (if any) of one parsed item; a new version with equal content is recorded as a
/// silent update.
fn compare(
    old: Option<&ItemState>,
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
    if item.version.is_some() && item.version == old.version {
        return None;
    }
    let new_hash = hash(item);
    if new_hash == old.hash {
        if item.version != old.version {
            silent.push((
                index,
                ItemState {
                    version: item.version.clone(),
                    ..old.clone()
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

/// Live stored items absent from the snapshot, in key order.
fn deletions<'a>(
    stored: &HashMap<String, ItemState>,
    items: &'a [Item],
    unchanged: impl IntoIterator<Item = &'a str>,
) -> Vec<Change> {
    let mut present: HashSet<&str> = unchanged.into_iter().collect();
    present.extend(items.iter().map(|i| i.key.as_str()));
    let mut gone: Vec<(&String, &ItemState)> = stored
        .iter()
        .filter(|(k, s)| !s.deleted && !present.contains(k.as_str()))
        .collect();
    gone.sort_by(|a, b| a.0.cmp(b.0));
    gone.into_iter()
        .map(|(key, old)| {
            let state = ItemState {
                revision: old.revision + 1,
                deleted: true,
                ..old.clone()
            };
            Change {
                kind: ChangeKind::Deleted,
                key: key.clone(),
                state,
                index: None,
            }
        })
        .collect()
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

    fn state_of(items: &[Item]) -> HashMap<String, ItemState> {
        let d = diff(&HashMap::new(), items, 0, Vec::new, &h);
        d.changes.into_iter().map(|c| (c.key, c.state)).collect()
    }

    /// Above a floor (pruned tombstones), a key never seen starts at floor + 1.
    #[test]
    fn new_keys_start_above_the_floor() {
        let h = |_: &Item| ContentHash([1; 32]);
        let items = [item("9", None, json!({"a":1}))];
        let d = diff_above(&HashMap::new(), 41, &items, 0, Vec::new, &h);
        assert_eq!(d.changes[0].state.revision, 42);
    }

    #[test]
    fn unchanged_snapshot_yields_nothing() {
        let items = vec![
            item("1", None, json!({"a":1})),
            item("2", None, json!({"a":2})),
        ];
        let stored = state_of(&items);
        assert!(diff(&stored, &items, 0, Vec::new, &h).is_empty());
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
        let d = diff(&stored, &after, 0, Vec::new, &h);
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
    }

    #[test]
    fn unchanged_keys_are_present_not_deleted() {
        let stored = state_of(&[
            item("1", None, json!({"a":1})),
            item("2", None, json!({"a":2})),
        ]);
        let d = diff(&stored, &[item("2", None, json!({"a":3}))], 1, || ["1"], &h);
        assert_eq!(d.changes.len(), 1);
        assert_eq!(d.changes[0].kind, ChangeKind::Updated);
    }

    #[test]
    fn recreated_item_gets_a_new_revision() {
        let mut stored = state_of(&[item("1", None, json!({"a":1}))]);
        stored.get_mut("1").unwrap().deleted = true;
        stored.get_mut("1").unwrap().revision = 2;
        let d = diff(&stored, &[item("1", None, json!({"a":1}))], 0, Vec::new, &h);
        assert_eq!(d.changes[0].kind, ChangeKind::Created);
        assert_eq!(d.changes[0].state.revision, 3);
    }

    #[test]
    fn equal_version_skips_hashing_and_new_version_same_hash_is_silent() {
        let stored = state_of(&[item("1", Some("v1"), json!({"a":1}))]);
        let never = |_: &Item| -> ContentHash { panic!("hash must not be computed") };
        assert!(
            diff(
                &stored,
                &[item("1", Some("v1"), json!({"a":2}))],
                0,
                Vec::new,
                &never
            )
            .is_empty()
        );
        let d = diff(
            &stored,
            &[item("1", Some("v2"), json!({"a":1}))],
            0,
            Vec::new,
            &h,
        );
        assert!(d.changes.is_empty());
        assert_eq!(d.silent[0].1.version.as_deref(), Some("v2"));
    }
}

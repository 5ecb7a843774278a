//! The in-memory item state of one source: per item only what the steady-state diff needs, in
//! a fixed 40-byte slot and two 4-byte index entries (8 more bytes for sources whose items carry
//! a `version`), never the key, version or JSON text.
//!
//! Design notes:
//! - A slot holds the key's hash (64-bit SipHash-1-3 under a key drawn at random when the process
//!   starts: an upstream cannot aim two of its keys at one slot, since it never learns the hash
//!   key, and by accident two of a source's keys meet with odds of n²/2⁶⁵), the revision with the
//!   two flags in its top bits, the first 16 bytes of the content hash (the stored row keeps all
//!   32; this is what decides "changed", so it stays 128 bits of a cryptographic hash) and the
//!   seeded XXH3-64 of the bytes the stored content came from (`extract::KnownBytes`). A 64-bit
//!   tag of the `version` value lives in a column beside the slots, allocated only when an item
//!   of the source first has one: most sources configure no `version` and never pay for it.
//! - Nothing here is persisted: the table is rebuilt from the store when the task starts, so the
//!   per-process hash keys never have to match anything written earlier.
//! - Keys are needed only to name deleted items; the caller supplies them from the store when a
//!   poll finds a deletion, which is rare. Item JSON (`previous`, `changes`, deleted payloads)
//!   is read from the store for changed items only.
//! - Slots are never removed while the task runs (a deleted item keeps its tombstone's revision
//!   until the store prunes it and the task restarts), so indices into `slots` are stable.

use std::hash::{BuildHasher, RandomState};
use std::sync::LazyLock;

use hashbrown::HashTable;

use super::ItemState;
use crate::extract::{ContentHash, KnownBytes, RawHash};

/// An item key's hash (in this process only: see the module notes).
pub type KeyHash = u64;

/// SipHash-1-3 keys drawn once per process.
static KEY_HASHER: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// The hash identifying `key` in a table.
pub fn key_hash(key: &str) -> KeyHash {
    KEY_HASHER.hash_one(key)
}

/// The tag of a `version` value: 0 for none, else its XXH3-64 (never 0).
pub fn version_tag(version: Option<&str>) -> u64 {
    version.map_or(0, |v| xxhash_rust::xxh3::xxh3_64(v.as_bytes()).max(1))
}

/// The part of a content hash kept in memory.
pub fn short_hash(hash: &ContentHash) -> [u8; 16] {
    let mut b = [0u8; 16];
    b.copy_from_slice(&hash.0[..16]);
    b
}

/// What the table remembers of one stored item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prior {
    /// Revision of the last recorded version.
    pub revision: u64,
    /// Whether it is a tombstone.
    pub deleted: bool,
    /// [`version_tag`] of its version.
    pub version: u64,
    /// [`short_hash`] of its content hash.
    pub hash: [u8; 16],
}

/// Flags in the top bits of [`Slot::word`]; revisions never come near 2⁶² (a change a
/// nanosecond for a century is 2⁶¹).
const DELETED: u64 = 1 << 63;
const HAS_RAW: u64 = 1 << 62;
const REVISION: u64 = HAS_RAW - 1;

/// 40 bytes: the fields of a [`Prior`] but its version, and the raw-bytes hash, the flags packed
/// into the revision.
#[derive(Clone, Copy)]
struct Slot {
    key: KeyHash,
    raw: RawHash,
    hash: [u8; 16],
    /// Revision, [`DELETED`] and [`HAS_RAW`].
    word: u64,
}

impl Slot {
    fn deleted(&self) -> bool {
        self.word & DELETED != 0
    }

    fn has_raw(&self) -> bool {
        self.word & HAS_RAW != 0
    }

    fn set_flag(&mut self, flag: u64, on: bool) {
        self.word = if on {
            self.word | flag
        } else {
            self.word & !flag
        };
    }

    fn prior(&self, version: u64) -> Prior {
        Prior {
            revision: self.word & REVISION,
            deleted: self.deleted(),
            version,
            hash: self.hash,
        }
    }

    fn set_prior(&mut self, p: Prior) {
        assert!(
            p.revision <= REVISION,
            "revision {} out of range",
            p.revision
        );
        self.word = (self.word & HAS_RAW) | p.revision | if p.deleted { DELETED } else { 0 };
        self.hash = p.hash;
    }
}

const _: () = assert!(std::mem::size_of::<Slot>() == 40);

/// One source's item state in memory (see the module notes).
#[derive(Default)]
pub struct ItemTable {
    slots: Vec<Slot>,
    /// Each slot's [`version_tag`]: empty while every tag is 0, else as long as `slots`.
    versions: Vec<u64>,
    /// Slot index by key hash (hashed by the key hash's low 64 bits).
    by_key: HashTable<u32>,
    /// Slot index by the raw hash of the bytes its stored content came from.
    by_raw: HashTable<u32>,
    live: usize,
    floor: u64,
}

impl std::fmt::Debug for ItemTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ItemTable({} items, {} live)",
            self.slots.len(),
            self.live
        )
    }
}

impl ItemTable {
    /// A table of `states` for a source whose pruned tombstones reached revision `floor`.
    pub fn new<'a>(states: impl IntoIterator<Item = (&'a str, &'a ItemState)>, floor: u64) -> Self {
        let mut t = ItemTable {
            floor,
            ..ItemTable::default()
        };
        for (key, state) in states {
            t.set(key, state);
        }
        t.slots.shrink_to_fit();
        t.versions.shrink_to_fit();
        t.by_key.shrink_to_fit(|i| t.slots[*i as usize].key);
        t
    }

    /// The highest revision among pruned tombstones: new keys start above it.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Live (not deleted) items.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Items, tombstones included.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the table holds nothing.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Sizes a still-empty table (a source's first poll) for `n` items, so its slots are not
    /// rounded up to the next power of two. A table holding items grows as usual.
    pub fn presize(&mut self, n: usize) {
        if self.slots.is_empty() {
            self.slots.reserve_exact(n);
            let slots = &self.slots;
            self.by_key.reserve(n, |i| slots[*i as usize].key);
        }
    }

    /// Room for `n` recorded raw hashes in all (see [`ItemTable::record_raw`]).
    pub fn reserve_raw(&mut self, n: usize) {
        let additional = n.saturating_sub(self.by_raw.len());
        let slots = &self.slots;
        self.by_raw.reserve(additional, |i| slots[*i as usize].raw);
    }

    fn slot(&self, key: KeyHash) -> Option<u32> {
        self.by_key
            .find(key, |i| self.slots[*i as usize].key == key)
            .copied()
    }

    /// What is stored for `key`.
    pub fn get(&self, key: &str) -> Option<Prior> {
        self.slot(key_hash(key)).map(|i| self.prior(i as usize))
    }

    fn prior(&self, i: usize) -> Prior {
        self.slots[i].prior(self.versions.get(i).copied().unwrap_or(0))
    }

    /// Sets slot `i`'s version tag, giving the table its version column on the first non-zero tag.
    fn set_version(&mut self, i: usize, tag: u64) {
        if self.versions.is_empty() && tag != 0 {
            self.versions = Vec::with_capacity(self.slots.capacity());
            self.versions.resize(self.slots.len(), 0);
        }
        if let Some(v) = self.versions.get_mut(i) {
            *v = tag;
        }
    }

    /// The slot whose stored content came from bytes hashing to `raw`.
    pub fn slot_of_raw(&self, raw: RawHash) -> Option<u32> {
        self.by_raw
            .find(raw, |i| {
                let s = &self.slots[*i as usize];
                s.has_raw() && s.raw == raw
            })
            .copied()
    }

    /// Records `key`'s new state (a deletion also forgets its bytes).
    pub fn set(&mut self, key: &str, state: &ItemState) {
        let prior = Prior {
            revision: state.revision,
            deleted: state.deleted,
            version: version_tag(state.version.as_deref()),
            hash: short_hash(&state.hash),
        };
        let k = key_hash(key);
        let i = match self.slot(k) {
            Some(i) => i,
            None => {
                let i = u32::try_from(self.slots.len()).expect("under 4 billion items per source");
                self.slots.push(Slot {
                    key: k,
                    raw: 0,
                    hash: prior.hash,
                    word: DELETED,
                });
                if !self.versions.is_empty() {
                    self.versions.push(0);
                }
                let slots = &self.slots;
                self.by_key.insert_unique(k, i, |j| slots[*j as usize].key);
                i
            }
        };
        self.set_version(i as usize, prior.version);
        let slot = &mut self.slots[i as usize];
        let was_deleted = slot.deleted();
        slot.set_prior(prior);
        match (was_deleted, state.deleted) {
            (true, false) => self.live += 1,
            (false, true) => self.live -= 1,
            _ => {}
        }
        if state.deleted {
            self.forget_raw(i);
        }
    }

    /// Records that `key`'s stored content now comes from bytes hashing to `raw`.
    pub fn record_raw(&mut self, key: &str, raw: RawHash) {
        let Some(i) = self.slot(key_hash(key)) else {
            return;
        };
        self.forget_raw(i);
        // Another slot claiming the same bytes (only a hash collision can do it) loses them.
        if let Some(other) = self.slot_of_raw(raw) {
            self.forget_raw(other);
        }
        let slot = &mut self.slots[i as usize];
        slot.raw = raw;
        slot.set_flag(HAS_RAW, true);
        let slots = &self.slots;
        self.by_raw
            .insert_unique(raw, i, |j| slots[*j as usize].raw);
    }

    fn forget_raw(&mut self, i: u32) {
        let slot = self.slots[i as usize];
        if !slot.has_raw() {
            return;
        }
        if let Ok(e) = self.by_raw.find_entry(slot.raw, |j| *j == i) {
            e.remove();
        }
        self.slots[i as usize].set_flag(HAS_RAW, false);
    }

    /// The live items that are neither one of `keys` nor recognised by their bytes (`known`),
    /// with their key hashes.
    pub fn live_absent<'a>(
        &self,
        keys: impl Iterator<Item = &'a str>,
        known: &[RawHash],
    ) -> Vec<(KeyHash, Prior)> {
        let mut present = vec![false; self.slots.len()];
        let by_key = keys.filter_map(|k| self.slot(key_hash(k)));
        let by_bytes = known.iter().filter_map(|raw| self.slot_of_raw(*raw));
        for slot in by_key.chain(by_bytes) {
            present[slot as usize] = true;
        }
        self.slots
            .iter()
            .zip(present)
            .enumerate()
            .filter(|(_, (s, present))| !s.deleted() && !present)
            .map(|(i, (s, _))| (s.key, self.prior(i)))
            .collect()
    }
}

impl KnownBytes for ItemTable {
    fn knows(&self, raw: RawHash) -> bool {
        self.slot_of_raw(raw).is_some()
    }

    fn raw_of(&self, key: &str) -> Option<RawHash> {
        let s = &self.slots[self.slot(key_hash(key))? as usize];
        s.has_raw().then_some(s.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(revision: u64, deleted: bool) -> ItemState {
        ItemState::sample(revision, deleted)
    }

    #[test]
    fn a_first_poll_sizes_the_table_exactly_and_later_growth_doubles() {
        let mut t = ItemTable::default();
        t.presize(100);
        for i in 0..100 {
            t.set(&format!("item-{i}"), &state(1, false));
        }
        assert_eq!(
            t.slots.capacity(),
            100,
            "a baseline of 100 items keeps 100 slots"
        );
        t.presize(100);
        t.set("one-more", &state(2, false));
        assert_eq!(
            t.slots.capacity(),
            200,
            "a table holding items grows as a Vec does"
        );
        assert_eq!(t.get("item-7").map(|p| p.revision), Some(1));
    }

    #[test]
    fn versions_take_memory_only_once_an_item_has_one() {
        let mut t = ItemTable::default();
        for k in ["a", "b", "c"] {
            t.set(k, &state(1, false));
        }
        assert_eq!(t.versions.capacity(), 0, "no version, no column");
        let versioned = ItemState {
            version: Some("v7".into()),
            ..state(2, false)
        };
        t.set("b", &versioned);
        t.set("d", &state(1, false));
        let tags: Vec<u64> = ["a", "b", "c", "d"]
            .iter()
            .map(|k| t.get(k).unwrap().version)
            .collect();
        assert_eq!(tags, [0, version_tag(Some("v7")), 0, 0]);
        t.set("b", &state(3, true));
        assert_eq!(t.get("b").unwrap().version, 0, "a version can be dropped");
        let gone = t.live_absent(["a", "c"].into_iter(), &[]);
        assert_eq!(gone.len(), 1, "d only: b is a tombstone");
        assert_eq!(gone[0].1.revision, 1);
    }

    #[test]
    fn set_counts_live_items_and_deletion_forgets_bytes() {
        let mut t = ItemTable::default();
        t.set("a", &state(1, false));
        t.set("b", &state(1, false));
        t.record_raw("a", 7);
        assert_eq!((t.live(), t.len()), (2, 2));
        assert_eq!(t.raw_of("a"), Some(7));
        assert!(t.knows(7));
        t.set("a", &state(2, true));
        assert_eq!((t.live(), t.len()), (1, 2));
        assert!(!t.knows(7), "a tombstone has no bytes");
        assert_eq!(t.get("a").map(|p| (p.revision, p.deleted)), Some((2, true)));
        t.set("a", &state(3, false));
        assert_eq!(t.live(), 2);
    }

    #[test]
    fn new_bytes_replace_old_ones() {
        let mut t = ItemTable::default();
        t.set("a", &state(1, false));
        t.record_raw("a", 1);
        t.record_raw("a", 2);
        assert!(!t.knows(1) && t.knows(2));
        t.set("b", &state(1, false));
        t.record_raw("b", 2);
        assert_eq!(
            t.raw_of("a"),
            None,
            "bytes claimed by another key move to it"
        );
        assert_eq!(t.slot_of_raw(2), t.slot(key_hash("b")));
    }

    #[test]
    fn absent_lists_live_items_neither_named_nor_known() {
        let mut t = ItemTable::default();
        for (k, d) in [("a", false), ("b", true), ("c", false), ("d", false)] {
            t.set(k, &state(1, d));
        }
        t.record_raw("d", 9);
        let gone = t.live_absent(["a"].into_iter(), &[9]);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, key_hash("c"));
    }

    #[test]
    fn flags_and_large_revisions_share_a_word() {
        let mut t = ItemTable::default();
        let big = 1u64 << 61;
        t.set("a", &state(big, false));
        t.record_raw("a", 5);
        assert_eq!(
            t.get("a").map(|p| (p.revision, p.deleted)),
            Some((big, false))
        );
        assert_eq!(
            t.raw_of("a"),
            Some(5),
            "a new revision keeps the bytes flag"
        );
        t.set("a", &state(big + 1, false));
        assert_eq!(t.raw_of("a"), Some(5));
        t.set("a", &state(big + 2, true));
        assert_eq!(
            t.get("a").map(|p| (p.revision, p.deleted)),
            Some((big + 2, true))
        );
        assert_eq!(t.raw_of("a"), None);
    }
}

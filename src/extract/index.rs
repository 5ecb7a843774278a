//! The raw-bytes index of a source: which item bytes, served last time, belong to which key.
//!
//! Design notes: an item whose bytes are byte-identical to the bytes recorded for its key has the
//! content that is stored, so a poll can skip parsing it. The index therefore holds an entry only
//! for live items whose *stored* content came from exactly those bytes; it is updated only after
//! a poll succeeded (committed, or found nothing to commit): parsed items replace their key's
//! entry, deleted items lose theirs. A failed poll leaves it untouched.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// XXH3-128 of an item's raw bytes as served. Not a security boundary: it only lets a poll skip
/// parsing items whose bytes are identical to last time (the upstream controls those bytes
/// anyway); content hashes and event ids use BLAKE3 and SHA-256.
pub type RawHash = u128;

/// Hash of raw item bytes.
pub fn raw_hash(bytes: &[u8]) -> RawHash {
    xxhash_rust::xxh3::xxh3_128(bytes)
}

/// The keys are already uniform hashes: use their low bits instead of hashing again.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// Item bytes → key, and key → item bytes, for one source.
#[derive(Default, Clone)]
pub struct RawIndex {
    by_hash: HashMap<RawHash, String, BuildHasherDefault<PassThrough>>,
    by_key: HashMap<String, RawHash>,
}

impl std::fmt::Debug for RawIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawIndex({} items)", self.by_key.len())
    }
}

impl RawIndex {
    /// The key whose stored content came from bytes hashing to `hash`.
    pub fn key(&self, hash: RawHash) -> Option<&str> {
        self.by_hash.get(&hash).map(String::as_str)
    }

    /// The bytes hash recorded for `key`.
    pub fn hash_of(&self, key: &str) -> Option<RawHash> {
        self.by_key.get(key).copied()
    }

    /// Records that `key`'s stored content now comes from bytes hashing to `hash`.
    pub fn record(&mut self, key: &str, hash: RawHash) {
        if let Some(old) = self.by_key.insert(key.to_owned(), hash) {
            self.by_hash.remove(&old);
        }
        self.by_hash.insert(hash, key.to_owned());
    }

    /// Forgets a key (deleted upstream).
    pub fn forget(&mut self, key: &str) {
        if let Some(old) = self.by_key.remove(key) {
            self.by_hash.remove(&old);
        }
    }

    /// Number of keys indexed.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_replaces_and_forget_removes() {
        let mut ix = RawIndex::default();
        ix.record("a", 1);
        ix.record("a", 2);
        assert_eq!(ix.key(1), None, "old bytes of a key are forgotten");
        assert_eq!(ix.key(2), Some("a"));
        ix.forget("a");
        assert!(ix.is_empty() && ix.key(2).is_none());
    }
}

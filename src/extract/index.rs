//! Which item bytes, served last time, stand for the stored content of which key.
//!
//! Design notes: an item whose bytes are byte-identical to the bytes recorded for its key has the
//! content that is stored, so a poll can skip parsing it. Whoever keeps the record (the source's
//! item table, `diff::ItemTable`) holds an entry only for live items whose *stored* content came
//! from exactly those bytes, and updates it only after a poll succeeded; a failed poll leaves it
//! untouched. Extraction only asks through [`KnownBytes`].

use std::sync::LazyLock;

/// XXH3-64 of an item's raw bytes as served, seeded at random when the process starts (nothing
/// stores it: item tables are rebuilt at start). It only lets a poll skip parsing items whose
/// bytes are identical to last time; content hashes and event ids use BLAKE3 and SHA-256.
/// Bytes recognised by mistake would hide a change of that item, so the seed keeps anyone who
/// writes into an upstream from aiming new bytes at old ones (they never learn it), and by
/// accident a changed item meets one of a source's n recorded hashes with odds of n/2⁶⁴.
pub type RawHash = u64;

static SEED: LazyLock<u64> = LazyLock::new(rand::random);

/// Hash of raw item bytes.
pub fn raw_hash(bytes: &[u8]) -> RawHash {
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, *SEED)
}

/// What extraction needs to know about the bytes recorded for stored items.
pub trait KnownBytes {
    /// Whether bytes hashing to `raw` stand for a stored item's content.
    fn knows(&self, raw: RawHash) -> bool;
    /// The bytes hash recorded for `key`, if any.
    fn raw_of(&self, key: &str) -> Option<RawHash>;
}

/// Nothing is known: every item is parsed.
pub struct NothingKnown;

impl KnownBytes for NothingKnown {
    fn knows(&self, _: RawHash) -> bool {
        false
    }
    fn raw_of(&self, _: &str) -> Option<RawHash> {
        None
    }
}

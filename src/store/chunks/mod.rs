//! The redb store's items: each source's item states and JSON packed into a few compressed
//! chunks instead of two rows per item.
//!
//! Design notes:
//! - An item's chunk is picked by the low `bits` of its key's BLAKE3 hash (fixed: it is on
//!   disk; `diff::key_hash` is per process and must not be used here); a source
//!   starts with one chunk and doubles its chunk count (each chunk splitting in two by the next
//!   bit) whenever it averages more than [`CHUNK_ITEMS`] items per chunk, so a change rewrites
//!   about that many items, never the whole of a large source.
//! - A chunk is `FORMAT (1) ‖ raw length (u32 LE) ‖ LZ4 block` of its entries sorted by key, each
//!   `key length (u32) ‖ key ‖ state length (u32) ‖ codec::encode_item state ‖ data length + 1
//!   (u32, 0 = none) ‖ data`. Item JSON is repetitive (the same field names in every item), so
//!   a chunk is a fraction of its JSON; per-item rows left redb's leaves half full and stored every
//!   key twice (3.4× the JSON at 1 M items).
//! - `item_layout` keeps per source `bits` and the item count (tombstones included):
//!   `count << 8 | bits`.

mod format;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use self::format::visit;
pub use self::format::{Entry, decode, encode};
use super::StoreError;
use super::codec::{decode_item, deleted_at, encode_item};
use super::redb::be;
use crate::diff::ItemState;

pub(super) const ITEM_CHUNKS: TableDefinition<(&str, u32), &[u8]> =
    TableDefinition::new("item_chunks");
pub(super) const ITEM_LAYOUT: TableDefinition<&str, u64> = TableDefinition::new("item_layout");

/// Average items per chunk above which a source's chunks split.
pub const CHUNK_ITEMS: u64 = 128;
fn chunk_of(key: &str, bits: u8) -> u32 {
    let mask = if bits >= 32 {
        u32::MAX
    } else {
        (1u32 << bits) - 1
    };
    chunk_hash(key) & mask
}

/// The first four bytes (little-endian) of `key`'s BLAKE3 hash: which chunk holds it.
fn chunk_hash(key: &str) -> u32 {
    let h = blake3::hash(key.as_bytes());
    let b = h.as_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Items of schema version 1, one row each (read once, by the migration to chunks).
const V1_ITEMS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("items");
const V1_DATA: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("item_data");

type Chunks<'t> = Table<'t, (&'static str, u32), &'static [u8]>;

/// `(bits, item count)` of a source, read from `table` (`item_layout`).
pub(super) fn layout_in<T>(table: &T, source: &str) -> Result<(u8, u64), StoreError>
where
    T: ReadableTable<&'static str, u64>,
{
    let v = table.get(source).map_err(be)?.map_or(0, |v| v.value());
    Ok(((v & 0xff) as u8, v >> 8))
}

/// `(bits, item count)` of a source.
fn layout(txn: &WriteTransaction, source: &str) -> Result<(u8, u64), StoreError> {
    layout_in(&txn.open_table(ITEM_LAYOUT).map_err(be)?, source)
}

fn set_layout(
    txn: &WriteTransaction,
    source: &str,
    bits: u8,
    count: u64,
) -> Result<(), StoreError> {
    let mut table = txn.open_table(ITEM_LAYOUT).map_err(be)?;
    if count == 0 {
        table.remove(source).map_err(be)?;
    } else {
        table
            .insert(source, (count << 8) | u64::from(bits))
            .map_err(be)?;
    }
    Ok(())
}

/// The fewest bits that keep `count` items within [`CHUNK_ITEMS`] per chunk on average.
fn bits_for(count: u64) -> u8 {
    let mut bits = 0u8;
    while bits < 24 && count > CHUNK_ITEMS << bits {
        bits += 1;
    }
    bits
}

/// The chunk ids `source` has stored.
fn chunk_ids(chunks: &Chunks<'_>, source: &str) -> Result<Vec<u32>, StoreError> {
    let mut ids = Vec::new();
    for entry in chunks.range((source, 0)..=(source, u32::MAX)).map_err(be)? {
        ids.push(entry.map_err(be)?.0.value().1);
    }
    Ok(ids)
}

/// Deletes every chunk of `source`.
fn clear(chunks: &mut Chunks<'_>, source: &str) -> Result<(), StoreError> {
    for id in chunk_ids(chunks, source)? {
        chunks.remove((source, id)).map_err(be)?;
    }
    Ok(())
}

/// Every entry of `source`.
pub(super) fn entries<T>(table: &T, source: &str) -> Result<Vec<Entry>, StoreError>
where
    T: ReadableTable<(&'static str, u32), &'static [u8]>,
{
    let mut out = Vec::new();
    for entry in table.range((source, 0)..=(source, u32::MAX)).map_err(be)? {
        let (_, v) = entry.map_err(be)?;
        out.extend(decode(v.value())?);
    }
    Ok(out)
}

/// The states of `source`'s items, by key.
pub(super) fn states<T>(
    table: &T,
    source: &str,
) -> Result<std::collections::HashMap<String, ItemState>, StoreError>
where
    T: ReadableTable<(&'static str, u32), &'static [u8]>,
{
    let mut out = std::collections::HashMap::new();
    for entry in table.range((source, 0)..=(source, u32::MAX)).map_err(be)? {
        let (_, v) = entry.map_err(be)?;
        visit(v.value(), &mut |key, state, _| {
            out.insert(key.to_owned(), decode_item(state)?);
            Ok(())
        })?;
    }
    Ok(out)
}

/// The stored JSON of `keys` (those that have some).
pub(super) fn data<T>(
    table: &T,
    bits: u8,
    source: &str,
    keys: &[&str],
) -> Result<std::collections::HashMap<String, Vec<u8>>, StoreError>
where
    T: ReadableTable<(&'static str, u32), &'static [u8]>,
{
    let mut wanted: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for key in keys {
        wanted.entry(chunk_of(key, bits)).or_default().push(key);
    }
    let mut out = std::collections::HashMap::new();
    for (id, keys) in wanted {
        let Some(v) = table.get((source, id)).map_err(be)? else {
            continue;
        };
        visit(v.value(), &mut |key, _, data| {
            if let Some(d) = data.filter(|_| keys.contains(&key)) {
                out.insert(key.to_owned(), d.to_vec());
            }
            Ok(())
        })?;
    }
    Ok(out)
}

/// Applies a poll's item writes (a write without data keeps the stored data).
pub(super) fn write(
    txn: &WriteTransaction,
    source: &str,
    items: &[super::ItemWrite],
    now_ms: i64,
) -> Result<(), StoreError> {
    if items.is_empty() {
        return Ok(());
    }
    let (bits, mut count) = layout(txn, source)?;
    let mut chunks = txn.open_table(ITEM_CHUNKS).map_err(be)?;
    let mut by_chunk: BTreeMap<u32, Vec<&super::ItemWrite>> = BTreeMap::new();
    for w in items {
        by_chunk.entry(chunk_of(&w.key, bits)).or_default().push(w);
    }
    for (id, writes) in by_chunk {
        let mut entries = match chunks.get((source, id)).map_err(be)? {
            Some(v) => decode(v.value())?,
            None => Vec::new(),
        };
        for w in writes {
            let state = encode_item(&w.state, Some(now_ms));
            match entries.binary_search_by(|e| e.key.as_str().cmp(&w.key)) {
                Ok(i) => {
                    entries[i].state = state;
                    if let Some(d) = &w.data {
                        entries[i].data = Some(d.clone());
                    }
                }
                Err(i) => {
                    count += 1;
                    entries.insert(
                        i,
                        Entry {
                            key: w.key.clone(),
                            state,
                            data: w.data.clone(),
                        },
                    );
                }
            }
        }
        chunks
            .insert((source, id), encode(&entries).as_slice())
            .map_err(be)?;
    }
    if bits_for(count) > bits {
        let all = entries(&chunks, source)?;
        return put_all(txn, &mut chunks, source, all);
    }
    set_layout(txn, source, bits, count)
}

/// Replaces every stored item of `source` with `all`.
fn put_all(
    txn: &WriteTransaction,
    chunks: &mut Chunks<'_>,
    source: &str,
    all: Vec<Entry>,
) -> Result<(), StoreError> {
    clear(chunks, source)?;
    let bits = bits_for(all.len() as u64);
    let mut by_chunk: BTreeMap<u32, Vec<Entry>> = BTreeMap::new();
    for e in all {
        by_chunk.entry(chunk_of(&e.key, bits)).or_default().push(e);
    }
    let mut count = 0;
    for (id, mut entries) in by_chunk {
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        entries.dedup_by(|a, b| a.key == b.key);
        count += entries.len() as u64;
        chunks
            .insert((source, id), encode(&entries).as_slice())
            .map_err(be)?;
    }
    set_layout(txn, source, bits, count)
}

/// Stores `all` as `source`'s items (import and migration).
pub(super) fn replace(
    txn: &WriteTransaction,
    source: &str,
    all: Vec<Entry>,
) -> Result<(), StoreError> {
    let mut chunks = txn.open_table(ITEM_CHUNKS).map_err(be)?;
    put_all(txn, &mut chunks, source, all)
}

/// Deletes every item of `source`.
pub(super) fn remove_source(txn: &WriteTransaction, source: &str) -> Result<(), StoreError> {
    clear(&mut txn.open_table(ITEM_CHUNKS).map_err(be)?, source)?;
    set_layout(txn, source, 0, 0)
}

/// Deletes `source`'s tombstones written before `before_ms` and stamps those written before
/// their time was recorded with `now_ms`; returns how many were deleted and the highest
/// revision among them.
pub(super) fn prune_tombstones(
    txn: &WriteTransaction,
    source: &str,
    before_ms: i64,
    now_ms: i64,
) -> Result<(usize, u64), StoreError> {
    let (bits, count) = layout(txn, source)?;
    let mut chunks = txn.open_table(ITEM_CHUNKS).map_err(be)?;
    let (mut pruned, mut floor) = (0usize, 0u64);
    for id in chunk_ids(&chunks, source)? {
        let Some(v) = chunks.get((source, id)).map_err(be)? else {
            continue;
        };
        let entries = decode(v.value())?;
        drop(v);
        let mut kept = Vec::with_capacity(entries.len());
        let mut changed = false;
        for mut e in entries {
            let state = decode_item(&e.state)?;
            if state.deleted {
                match deleted_at(&e.state) {
                    Some(at) if at < before_ms => {
                        floor = floor.max(state.revision);
                        pruned += 1;
                        changed = true;
                        continue;
                    }
                    Some(_) => {}
                    // Tombstones written before their time was recorded start their TTL now.
                    None => {
                        e.state = encode_item(&state, Some(now_ms));
                        changed = true;
                    }
                }
            }
            kept.push(e);
        }
        if !changed {
            continue;
        }
        if kept.is_empty() {
            chunks.remove((source, id)).map_err(be)?;
        } else {
            chunks
                .insert((source, id), encode(&kept).as_slice())
                .map_err(be)?;
        }
    }
    if pruned > 0 {
        set_layout(txn, source, bits, count.saturating_sub(pruned as u64))?;
    }
    Ok((pruned, floor))
}

/// Every stored item, source by source, for the dump.
pub(super) fn for_each<T>(
    table: &T,
    f: &mut dyn FnMut(&str, Entry) -> Result<(), StoreError>,
) -> Result<(), StoreError>
where
    T: ReadableTable<(&'static str, u32), &'static [u8]>,
{
    for entry in table.iter().map_err(be)? {
        let (k, v) = entry.map_err(be)?;
        let (source, _) = k.value();
        for e in decode(v.value())? {
            f(source, e)?;
        }
    }
    Ok(())
}

/// Moves a schema-1 store's item rows into chunks (in the caller's transaction); returns how
/// many items moved.
pub(super) fn migrate_v1(txn: &WriteTransaction) -> Result<usize, StoreError> {
    let mut moved = 0;
    {
        let items = txn.open_table(V1_ITEMS).map_err(be)?;
        let data = txn.open_table(V1_DATA).map_err(be)?;
        let mut current: Option<(String, Vec<Entry>)> = None;
        for entry in items.iter().map_err(be)? {
            let (k, v) = entry.map_err(be)?;
            let (source, key) = k.value();
            if current.as_ref().is_some_and(|(s, _)| s != source)
                && let Some((s, all)) = current.take()
            {
                replace(txn, &s, all)?;
            }
            let (_, all) = current.get_or_insert_with(|| (source.to_owned(), Vec::new()));
            all.push(Entry {
                key: key.to_owned(),
                state: v.value().to_vec(),
                data: data
                    .get((source, key))
                    .map_err(be)?
                    .map(|d| d.value().to_vec()),
            });
            moved += 1;
        }
        if let Some((s, all)) = current {
            replace(txn, &s, all)?;
        }
    }
    txn.delete_table(V1_ITEMS).map_err(be)?;
    txn.delete_table(V1_DATA).map_err(be)?;
    Ok(moved)
}

/// The stored state of one item.
pub(super) fn state_of(
    txn: &WriteTransaction,
    source: &str,
    key: &str,
) -> Result<Option<ItemState>, StoreError> {
    let (bits, _) = layout(txn, source)?;
    let chunks = txn.open_table(ITEM_CHUNKS).map_err(be)?;
    let Some(v) = chunks.get((source, chunk_of(key, bits))).map_err(be)? else {
        return Ok(None);
    };
    let mut found = None;
    visit(v.value(), &mut |k, state, _| {
        if k == key {
            found = Some(decode_item(state)?);
        }
        Ok(())
    })?;
    Ok(found)
}

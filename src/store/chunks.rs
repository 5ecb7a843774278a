//! The redb store's items: each source's item states and JSON packed into a few compressed
//! chunks instead of two rows per item.
//!
//! Design notes:
//! - An item's chunk is picked by the low `bits` of its key's hash (`diff::key_hash`); a source
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

use std::collections::BTreeMap;

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use super::StoreError;
use super::codec::{decode_item, deleted_at, encode_item};
use super::redb::be;
use crate::diff::{ItemState, key_hash};

pub(super) const ITEM_CHUNKS: TableDefinition<(&str, u32), &[u8]> =
    TableDefinition::new("item_chunks");
pub(super) const ITEM_LAYOUT: TableDefinition<&str, u64> = TableDefinition::new("item_layout");

/// Average items per chunk above which a source's chunks split.
pub const CHUNK_ITEMS: u64 = 128;
const FORMAT: u8 = 1;
/// Largest chunk this build will decompress (a corrupt length must not allocate gigabytes).
const MAX_RAW: usize = 1 << 30;

/// One stored item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Item key.
    pub key: String,
    /// `codec::encode_item` bytes.
    pub state: Vec<u8>,
    /// The item's JSON.
    pub data: Option<Vec<u8>>,
}

fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        what: "item chunk",
        detail: detail.into(),
    }
}

fn chunk_of(key: &str, bits: u8) -> u32 {
    let mask = if bits >= 32 {
        u32::MAX
    } else {
        (1u32 << bits) - 1
    };
    (key_hash(key) as u32) & mask
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    // Lengths of keys, states and item JSON are far below 4 GiB (bodies are capped).
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

/// Encodes entries (sorted by key) as a stored chunk.
pub fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut raw = Vec::new();
    for e in entries {
        put_u32(&mut raw, e.key.len());
        raw.extend_from_slice(e.key.as_bytes());
        put_u32(&mut raw, e.state.len());
        raw.extend_from_slice(&e.state);
        match &e.data {
            Some(d) => {
                put_u32(&mut raw, d.len() + 1);
                raw.extend_from_slice(d);
            }
            None => put_u32(&mut raw, 0),
        }
    }
    let mut out = Vec::with_capacity(5 + raw.len() / 2);
    out.push(FORMAT);
    put_u32(&mut out, raw.len());
    out.extend_from_slice(&lz4_flex::block::compress(&raw));
    out
}

/// Inverse of [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Vec<Entry>, StoreError> {
    let mut entries = Vec::new();
    visit(bytes, &mut |key, state, data| {
        entries.push(Entry {
            key: key.to_owned(),
            state: state.to_vec(),
            data: data.map(<[u8]>::to_vec),
        });
        Ok(())
    })?;
    Ok(entries)
}

thread_local! {
    /// The decompressed bytes of the chunk being read (reused: a start-up reads every chunk).
    static RAW: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What [`visit`] calls with each entry: key, state, data.
type Visitor<'f> = dyn FnMut(&str, &[u8], Option<&[u8]>) -> Result<(), StoreError> + 'f;

/// Calls `f` with each entry of a stored chunk, borrowed: readers that need a few fields copy
/// only those.
fn visit(bytes: &[u8], f: &mut Visitor<'_>) -> Result<(), StoreError> {
    if bytes.first() != Some(&FORMAT) {
        return Err(corrupt("unknown chunk format"));
    }
    let len = bytes
        .get(1..5)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| corrupt("short chunk"))? as usize;
    if len > MAX_RAW {
        return Err(corrupt(format!("chunk claims {len} bytes")));
    }
    RAW.with_borrow_mut(|raw| {
        raw.clear();
        raw.resize(len, 0);
        let n = lz4_flex::block::decompress_into(&bytes[5..], raw)
            .map_err(|e| corrupt(e.to_string()))?;
        if n != len {
            return Err(corrupt(format!("chunk holds {n} bytes, not {len}")));
        }
        let mut r = Reader(raw);
        let result = (|| {
            while !r.0.is_empty() {
                let n = r.len()?;
                let key =
                    std::str::from_utf8(r.take(n)?).map_err(|_| corrupt("key is not UTF-8"))?;
                let n = r.len()?;
                let state = r.take(n)?;
                let data = match r.len()? {
                    0 => None,
                    n => Some(r.take(n - 1)?),
                };
                f(key, state, data)?;
            }
            Ok(())
        })();
        // A rare large chunk does not keep its buffer for the life of the thread.
        if raw.capacity() > 1 << 20 {
            *raw = Vec::new();
        }
        result
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(corrupt("truncated entry"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn len(&mut self) -> Result<usize, StoreError> {
        let b: [u8; 4] = self.take(4)?.try_into().map_err(|_| corrupt("length"))?;
        Ok(u32::from_le_bytes(b) as usize)
    }
}

/// Items of schema version 1, one row each (read once, by the migration to chunks).
const V1_ITEMS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("items");
const V1_DATA: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("item_data");

type Chunks<'t> = Table<'t, (&'static str, u32), &'static [u8]>;

/// `(bits, item count)` of a source.
fn layout(txn: &WriteTransaction, source: &str) -> Result<(u8, u64), StoreError> {
    let table = txn.open_table(ITEM_LAYOUT).map_err(be)?;
    let v = table.get(source).map_err(be)?.map_or(0, |v| v.value());
    Ok(((v & 0xff) as u8, v >> 8))
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

/// `source`'s chunk bits, for [`data`].
pub(super) fn bits_of<T>(table: &T, source: &str) -> Result<u8, StoreError>
where
    T: ReadableTable<&'static str, u64>,
{
    Ok(table
        .get(source)
        .map_err(be)?
        .map_or(0, |v| (v.value() & 0xff) as u8))
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
    for id in chunk_ids(chunks, source)? {
        chunks.remove((source, id)).map_err(be)?;
    }
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
    let mut chunks = txn.open_table(ITEM_CHUNKS).map_err(be)?;
    for id in chunk_ids(&chunks, source)? {
        chunks.remove((source, id)).map_err(be)?;
    }
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
    let entries = decode(v.value())?;
    match entries.binary_search_by(|e| e.key.as_str().cmp(key)) {
        Ok(i) => decode_item(&entries[i].state).map(Some),
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use redb::{Database, ReadableDatabase};

    use super::*;
    use crate::store::{Backend, ItemWrite, RedbBackend};

    fn state(revision: u64, deleted: bool) -> ItemState {
        ItemState::sample(revision, deleted)
    }

    fn write_of(key: &str, revision: u64, data: Option<&str>) -> ItemWrite {
        ItemWrite {
            key: key.to_owned(),
            state: state(revision, data.is_none()),
            data: data.map(|d| d.as_bytes().to_vec()),
        }
    }

    fn db() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        (dir, db)
    }

    #[test]
    fn chunk_round_trips_and_rejects_garbage() {
        let entries = vec![
            Entry {
                key: "a".into(),
                state: vec![1, 2, 3],
                data: Some(b"{\"x\":1}".to_vec()),
            },
            Entry {
                key: "b".into(),
                state: vec![],
                data: None,
            },
        ];
        let bytes = encode(&entries);
        assert_eq!(decode(&bytes).unwrap(), entries);
        for bad in [
            &b""[..],
            &[9, 0, 0, 0, 0][..],
            &[FORMAT, 255, 255, 255, 255, 0][..],
            &bytes[..bytes.len() - 1],
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        let mut flipped = bytes.clone();
        flipped[1] = flipped[1].wrapping_add(1);
        assert!(decode(&flipped).is_err());
    }

    #[test]
    fn a_growing_source_splits_into_chunks_and_keeps_every_item() {
        let (_dir, db) = db();
        let n = 1000usize;
        for round in 0..4 {
            let txn = db.begin_write().unwrap();
            let items: Vec<ItemWrite> = (round * n / 4..(round + 1) * n / 4)
                .map(|i| write_of(&format!("k{i}"), 1, Some(&format!("{{\"i\":{i}}}"))))
                .collect();
            write(&txn, "s", &items, 5).unwrap();
            // Another source in the same table stays apart.
            write(&txn, "t", &[write_of("k1", 9, Some("{}"))], 5).unwrap();
            txn.commit().unwrap();
        }
        let txn = db.begin_write().unwrap();
        // A deletion keeps the stored JSON; an update replaces it.
        write(
            &txn,
            "s",
            &[write_of("k3", 2, None), write_of("k4", 2, Some("\"new\""))],
            7,
        )
        .unwrap();
        assert_eq!(layout(&txn, "s").unwrap(), (bits_for(n as u64), n as u64));
        assert!(bits_for(n as u64) >= 3);
        txn.commit().unwrap();

        let txn = db.begin_read().unwrap();
        let table = txn.open_table(ITEM_CHUNKS).unwrap();
        let all = states(&table, "s").unwrap();
        assert_eq!(all.len(), n);
        assert_eq!(all["k3"], state(2, true));
        assert_eq!(all["k999"], state(1, false));
        assert_eq!(states(&table, "t").unwrap().len(), 1);
        let bits = bits_of(&txn.open_table(ITEM_LAYOUT).unwrap(), "s").unwrap();
        let got = data(&table, bits, "s", &["k3", "k4", "k500", "nope"]).unwrap();
        assert_eq!(got["k3"], b"{\"i\":3}");
        assert_eq!(got["k4"], b"\"new\"");
        assert_eq!(got["k500"], b"{\"i\":500}");
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn pruning_drops_old_tombstones_and_reports_their_highest_revision() {
        let (_dir, db) = db();
        let txn = db.begin_write().unwrap();
        write(&txn, "s", &[write_of("live", 1, Some("1"))], 0).unwrap();
        write(&txn, "s", &[write_of("old", 4, None)], 100).unwrap();
        write(&txn, "s", &[write_of("young", 6, None)], 900).unwrap();
        assert_eq!(prune_tombstones(&txn, "s", 500, 1000).unwrap(), (1, 4));
        assert_eq!(layout(&txn, "s").unwrap().1, 2);
        assert!(state_of(&txn, "s", "old").unwrap().is_none());
        assert_eq!(state_of(&txn, "s", "young").unwrap(), Some(state(6, true)));
        remove_source(&txn, "s").unwrap();
        assert!(state_of(&txn, "s", "live").unwrap().is_none());
        assert_eq!(layout(&txn, "s").unwrap(), (0, 0));
    }

    #[test]
    fn a_schema_1_state_file_is_migrated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let meta: TableDefinition<&str, u64> = TableDefinition::new("meta");
                txn.open_table(meta)
                    .unwrap()
                    .insert("schema_version", 1)
                    .unwrap();
                let mut items = txn.open_table(V1_ITEMS).unwrap();
                let mut data = txn.open_table(V1_DATA).unwrap();
                for (source, n) in [("a", 3), ("b", 300)] {
                    for i in 0..n {
                        let key = format!("k{i}");
                        let s = encode_item(&state(i + 1, false), None);
                        items.insert((source, key.as_str()), s.as_slice()).unwrap();
                        let d = format!("{{\"{source}\":{i}}}");
                        data.insert((source, key.as_str()), d.as_bytes()).unwrap();
                    }
                }
            }
            txn.commit().unwrap();
        }
        let store = RedbBackend::open(&path).unwrap();
        let a = store.load_source("a").unwrap();
        assert_eq!(a.items.len(), 3);
        assert_eq!(a.items["k2"], state(3, false));
        let b = store.load_source("b").unwrap();
        assert_eq!(b.items.len(), 300);
        let got = store.item_data("b", &["k299"]).unwrap();
        assert_eq!(got["k299"], b"{\"b\":299}");
        drop(store);
        let db = Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        assert!(txn.open_table(V1_ITEMS).is_err(), "the old tables are gone");
        // Opening again is a no-op.
        drop((txn, db));
        assert_eq!(
            RedbBackend::open(&path)
                .unwrap()
                .load_source("b")
                .unwrap()
                .items
                .len(),
            300
        );
    }
}

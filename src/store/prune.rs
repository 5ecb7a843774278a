//! Pruning for the redb engine: tombstones older than `tombstone_ttl`, and the whole state of
//! sources that left the config longer ago than that. Each call is one source (or one sweep of
//! the small `removed` table), so no single transaction stalls the writer for long.
//!
//! Design notes: a pruned tombstone's revision is kept as the source's floor, so a key that comes
//! back after its tombstone is gone starts above every revision it ever had: event ids never
//! repeat, whatever the TTL.

use redb::{ReadableTable, WriteTransaction};

use super::StoreError;
use super::chunks;
use super::redb::{FLOORS, REMOVED, SOURCES, be};

/// Deletes `source`'s tombstones written before `before_ms`; returns how many.
pub(super) fn tombstones(
    txn: &WriteTransaction,
    source: &str,
    before_ms: i64,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let (pruned, floor) = chunks::prune_tombstones(txn, source, before_ms, now_ms)?;
    if floor > 0 {
        let mut floors = txn.open_table(FLOORS).map_err(be)?;
        let old = floors.get(source).map_err(be)?.map_or(0, |v| v.value());
        floors.insert(source, old.max(floor)).map_err(be)?;
    }
    Ok(pruned)
}

/// Marks stored sources missing from `present` as removed since `now_ms` (once), and unmarks
/// those that are back.
pub(super) fn mark_removed(
    txn: &WriteTransaction,
    present: &[String],
    now_ms: i64,
) -> Result<(), StoreError> {
    let stored: Vec<String> = {
        let sources = txn.open_table(SOURCES).map_err(be)?;
        let mut names = Vec::new();
        for entry in sources.iter().map_err(be)? {
            names.push(entry.map_err(be)?.0.value().to_owned());
        }
        names
    };
    let mut removed = txn.open_table(REMOVED).map_err(be)?;
    for name in stored {
        let here = present.contains(&name);
        let marked = removed.get(name.as_str()).map_err(be)?.is_some();
        if here && marked {
            removed.remove(name.as_str()).map_err(be)?;
        } else if !here && !marked {
            removed.insert(name.as_str(), now_ms).map_err(be)?;
        }
    }
    Ok(())
}

/// Deletes every row of sources marked removed before `before_ms`; returns how many sources.
pub(super) fn drop_removed(txn: &WriteTransaction, before_ms: i64) -> Result<usize, StoreError> {
    let mut removed = txn.open_table(REMOVED).map_err(be)?;
    let mut doomed = Vec::new();
    for entry in removed.iter().map_err(be)? {
        let (k, v) = entry.map_err(be)?;
        if v.value() < before_ms {
            doomed.push(k.value().to_owned());
        }
    }
    let mut sources = txn.open_table(SOURCES).map_err(be)?;
    let mut floors = txn.open_table(FLOORS).map_err(be)?;
    for name in &doomed {
        let source = name.as_str();
        chunks::remove_source(txn, source)?;
        sources.remove(source).map_err(be)?;
        floors.remove(source).map_err(be)?;
        removed.remove(source).map_err(be)?;
    }
    Ok(doomed.len())
}

//! Unit tests of the chunk format and the chunked item tables.

use redb::{Database, ReadableDatabase};

use super::format::FORMAT;
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
    let (bits, _) = layout_in(&txn.open_table(ITEM_LAYOUT).unwrap(), "s").unwrap();
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

#[test]
fn chunk_choice_is_fixed_across_processes() {
    // Files written by earlier processes (and versions) must find their items: the chunk of a
    // key is a function of the key alone, pinned here.
    assert_eq!(chunk_hash("item-1"), 2_014_620_339);
    assert_eq!(chunk_of("item-1", 3), chunk_hash("item-1") & 7);
}

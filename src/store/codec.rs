//! Byte encodings of stored rows. Item states are a fixed binary layout (they are read in bulk
//! at start-up); outbox rows are a JSON header followed by the raw payload bytes.

use std::sync::Arc;

use super::{OutboxRow, StoreError};
use crate::diff::ItemState;
use crate::extract::ContentHash;

const DELETED: u8 = 1;
const HAS_VERSION: u8 = 2;
const HAS_DELETED_AT: u8 = 4;

/// `revision (u64 LE) ‖ hash (32) ‖ flags (1) ‖ [deleted at, unix ms (i64 LE)] ‖ version (rest,
/// UTF-8)`. A tombstone carries the time it was written, for `tombstone_ttl`; rows written
/// before that field existed decode as tombstones of unknown age.
pub fn encode_item(state: &ItemState, deleted_ms: Option<i64>) -> Vec<u8> {
    let version = state.version.as_deref().unwrap_or("");
    let mut out = Vec::with_capacity(49 + version.len());
    out.extend_from_slice(&state.revision.to_le_bytes());
    out.extend_from_slice(&state.hash.0);
    let mut flags = 0;
    if state.deleted {
        flags |= DELETED;
    }
    if state.version.is_some() {
        flags |= HAS_VERSION;
    }
    let deleted_ms = deleted_ms.filter(|_| state.deleted);
    if deleted_ms.is_some() {
        flags |= HAS_DELETED_AT;
    }
    out.push(flags);
    if let Some(ms) = deleted_ms {
        out.extend_from_slice(&ms.to_le_bytes());
    }
    out.extend_from_slice(version.as_bytes());
    out
}

/// When a tombstone row was written (`None`: live, or written before the field existed).
pub fn deleted_at(bytes: &[u8]) -> Option<i64> {
    let flags = *bytes.get(40)?;
    if flags & HAS_DELETED_AT == 0 {
        return None;
    }
    Some(i64::from_le_bytes(bytes.get(41..49)?.try_into().ok()?))
}

/// Inverse of [`encode_item`].
pub fn decode_item(bytes: &[u8]) -> Result<ItemState, StoreError> {
    let corrupt = |detail: &str| StoreError::Corrupt {
        what: "item",
        detail: detail.to_owned(),
    };
    if bytes.len() < 41 {
        return Err(corrupt("row shorter than 41 bytes"));
    }
    let revision = u64::from_le_bytes(bytes[..8].try_into().map_err(|_| corrupt("revision"))?);
    let hash = ContentHash(bytes[8..40].try_into().map_err(|_| corrupt("hash"))?);
    let flags = bytes[40];
    let start = if flags & HAS_DELETED_AT != 0 { 49 } else { 41 };
    let tail = bytes
        .get(start..)
        .ok_or_else(|| corrupt("truncated deletion time"))?;
    let version = if flags & HAS_VERSION != 0 {
        Some(String::from_utf8(tail.to_vec()).map_err(|_| corrupt("version is not UTF-8"))?)
    } else {
        None
    };
    Ok(ItemState {
        revision,
        hash,
        version,
        deleted: flags & DELETED != 0,
    })
}

/// `header length (u32 LE) ‖ JSON header ‖ payload`.
pub fn encode_row(row: &OutboxRow) -> Vec<u8> {
    // Serialising a struct of strings and integers cannot fail.
    let header = serde_json::to_vec(row).expect("outbox header serialisation is infallible");
    let mut out = Vec::with_capacity(4 + header.len() + row.body.len());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&row.body);
    out
}

/// Inverse of [`encode_row`].
pub fn decode_row(bytes: &[u8]) -> Result<OutboxRow, StoreError> {
    let (mut row, end) = decode_parts(bytes)?;
    row.body = Arc::from(&bytes[end..]);
    Ok(row)
}

/// [`decode_row`] without copying the body (left empty).
pub fn decode_header(bytes: &[u8]) -> Result<OutboxRow, StoreError> {
    decode_parts(bytes).map(|(row, _)| row)
}

fn decode_parts(bytes: &[u8]) -> Result<(OutboxRow, usize), StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        what: "outbox",
        detail,
    };
    let len_bytes: [u8; 4] = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("short row".into()))?;
    let end = 4 + u32::from_le_bytes(len_bytes) as usize;
    let header = bytes
        .get(4..end)
        .ok_or_else(|| corrupt("truncated header".into()))?;
    let row: OutboxRow = serde_json::from_slice(header).map_err(|e| corrupt(e.to_string()))?;
    Ok((row, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_round_trips() {
        for version in [
            None,
            Some("2026-01-01T00:00:00Z".to_owned()),
            Some(String::new()),
        ] {
            let s = ItemState {
                revision: 42,
                hash: ContentHash([3; 32]),
                version,
                deleted: true,
            };
            assert_eq!(decode_item(&encode_item(&s, None)).unwrap(), s);
            let stamped = encode_item(&s, Some(1234));
            assert_eq!(decode_item(&stamped).unwrap(), s);
            assert_eq!(deleted_at(&stamped), Some(1234));
        }
        assert!(decode_item(&[0; 10]).is_err());
    }

    #[test]
    fn row_round_trips_with_body() {
        let row = OutboxRow {
            seq: 7,
            destination: "d".into(),
            source: "s".into(),
            key: "k".into(),
            revision: 2,
            event_id: "evt_x".into(),
            event_type: "item.updated".into(),
            attempts: 1,
            due_ms: 5,
            created_ms: 4,
            last_error: Some("503".into()),
            dead_reason: None,
            dead_ms: Some(9),
            render: true,
            body: Arc::from(&b"{\"a\":1}"[..]),
        };
        assert_eq!(decode_row(&encode_row(&row)).unwrap(), row);
        assert!(decode_row(&[9, 0, 0, 0, b'{']).is_err());
    }
}

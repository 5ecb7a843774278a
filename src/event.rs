//! Events: the stable id of a change (design invariant 2) and the JSON payload sent on the wire
//! (design §3). Pure; the payload is built once at detection time and stored, so every retry and
//! replay sends the same bytes.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::extract::ContentHash;

/// Prefix of every event id.
pub const ID_PREFIX: &str = "evt_";

/// The `type` of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventType {
    /// `item.created`.
    #[serde(rename = "item.created")]
    Created,
    /// `item.updated`.
    #[serde(rename = "item.updated")]
    Updated,
    /// `item.deleted` (data = last known item).
    #[serde(rename = "item.deleted")]
    Deleted,
    /// `document.changed` (document mode).
    #[serde(rename = "document.changed")]
    DocumentChanged,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Created => "item.created",
            EventType::Updated => "item.updated",
            EventType::Deleted => "item.deleted",
            EventType::DocumentChanged => "document.changed",
        }
    }
}

/// `evt_` + lowercase unpadded base32 of the first 16 bytes of
/// SHA-256(source ‖ 0 ‖ key ‖ 0 ‖ revision in decimal ‖ 0 ‖ content hash in lowercase hex).
pub fn event_id(source: &str, key: &str, revision: u64, hash: &ContentHash) -> String {
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    h.update([0]);
    h.update(revision.to_string().as_bytes());
    h.update([0]);
    h.update(hash.to_hex().as_bytes());
    let digest = h.finalize();
    let encoded = data_encoding::BASE32_NOPAD.encode(&digest[..16]);
    format!("{ID_PREFIX}{}", encoded.to_ascii_lowercase())
}

/// Everything that goes into one payload.
#[derive(Debug, Serialize)]
pub struct Payload<'a> {
    /// Event type.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Detection time, RFC 3339 with milliseconds.
    pub timestamp: String,
    /// Source name.
    pub source: &'a str,
    /// Event id.
    pub id: &'a str,
    /// Item key.
    pub key: &'a str,
    /// Item revision.
    pub revision: u64,
    /// The item as fetched.
    pub data: &'a Value,
    /// The item before this change, when `include.previous`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<&'a Value>,
    /// RFC 6902 patch from `previous` to `data`, when `include.changes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<json_patch::Patch>,
}

/// Formats a detection time as the payload's `timestamp`.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The RFC 6902 patch turning `before` into `after`.
pub fn changes(before: &Value, after: &Value) -> json_patch::Patch {
    json_patch::diff(before, after)
}

impl Payload<'_> {
    /// Serialises the payload to the exact bytes that will be signed and sent.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising borrowed JSON values into a Vec cannot fail.
        serde_json::to_vec(self).expect("payload serialisation is infallible")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn id_is_stable_and_depends_on_every_part() {
        let h = ContentHash([7; 32]);
        let id = event_id("src", "k", 3, &h);
        assert!(id.starts_with("evt_"));
        assert_eq!(id.len(), 4 + 26);
        assert!(
            id[4..]
                .chars()
                .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c))
        );
        assert_eq!(id, event_id("src", "k", 3, &h));
        assert_ne!(id, event_id("src", "k", 4, &h));
        assert_ne!(id, event_id("sr", "ck", 3, &h));
        assert_ne!(id, event_id("src", "k", 3, &ContentHash([8; 32])));
    }

    #[test]
    fn payload_has_wire_shape() {
        let data = json!({"state":"closed"});
        let prev = json!({"state":"open"});
        let p = Payload {
            kind: EventType::Updated,
            timestamp: "2026-11-22T13:00:00.123Z".into(),
            source: "s",
            id: "evt_x",
            key: "1",
            revision: 2,
            data: &data,
            previous: Some(&prev),
            changes: Some(changes(&prev, &data)),
        };
        let v: Value = serde_json::from_slice(&p.to_bytes()).unwrap();
        assert_eq!(v["type"], "item.updated");
        assert_eq!(
            v["changes"],
            json!([{"op":"replace","path":"/state","value":"closed"}])
        );
        assert_eq!(v["previous"]["state"], "open");
    }
}

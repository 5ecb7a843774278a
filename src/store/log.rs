//! The delivery log's records (design §6a), as every store keeps them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::OutboxRow;

/// One delivery attempt as the delivery log keeps it (design §6a).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// Attempt number, from 1.
    pub n: u32,
    /// When it started, unix ms.
    pub at_ms: i64,
    /// How long it took, ms.
    pub duration_ms: u64,
    /// The receiver's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed without an answer (`timeout`, `connection failed: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The first 1 KiB of the receiver's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// In the outbox.
    Pending,
    /// A 2xx was received.
    Delivered,
    /// In the dead letters.
    Dead,
    /// A `filter` program dropped it; never sent.
    Filtered,
}

impl DeliveryStatus {
    /// The name used in the API and on the page.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
            DeliveryStatus::Filtered => "filtered",
        }
    }
}

/// One delivery (an event to one destination) in the delivery log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRecord {
    /// The outbox seq of the delivery (the log's key and cursor).
    pub seq: u64,
    /// Event id.
    pub event_id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Destination name.
    pub destination: String,
    /// Source name.
    pub source: String,
    /// Item key.
    pub key: String,
    /// Item revision.
    pub revision: u64,
    /// When the event was detected (or the resend asked for), unix ms.
    pub created_ms: i64,
    /// When the status last changed, unix ms.
    pub updated_ms: i64,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Why it is dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The delivery this one re-sends, if it is a resend or replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resend_of: Option<u64>,
    /// Attempts, oldest first (the last [`MAX_ATTEMPTS_KEPT`] of them).
    #[serde(default)]
    pub attempts: Vec<Attempt>,
}

impl HistoryRecord {
    /// Records an outcome: the attempt (the last [`MAX_ATTEMPTS_KEPT`] are kept), the new
    /// status and why it is dead.
    pub fn settle(
        &mut self,
        status: DeliveryStatus,
        attempt: Option<Attempt>,
        reason: Option<String>,
    ) {
        if let Some(a) = attempt {
            self.updated_ms = self.updated_ms.max(a.at_ms + a.duration_ms as i64);
            self.attempts.push(a);
            if self.attempts.len() > MAX_ATTEMPTS_KEPT {
                self.attempts.remove(0);
            }
        }
        self.status = status;
        self.reason = reason;
    }

    /// The first record of a delivery: `row` as created, with its status, why it is dead and
    /// the delivery it re-sends.
    pub fn created(
        row: &OutboxRow,
        status: DeliveryStatus,
        reason: Option<String>,
        resend_of: Option<u64>,
    ) -> HistoryRecord {
        HistoryRecord {
            seq: row.seq,
            event_id: row.event_id.clone(),
            event_type: row.event_type.clone(),
            destination: row.destination.clone(),
            source: row.source.clone(),
            key: row.key.clone(),
            revision: row.revision,
            created_ms: row.created_ms,
            updated_ms: row.created_ms,
            status,
            reason,
            resend_of,
            attempts: Vec::new(),
        }
    }

    /// A fresh outbox row for this delivery (no attempts yet), due and created at `at_ms`.
    pub fn to_row(&self, seq: u64, at_ms: i64, body: Arc<[u8]>) -> OutboxRow {
        OutboxRow {
            seq,
            destination: self.destination.clone(),
            source: self.source.clone(),
            key: self.key.clone(),
            revision: self.revision,
            event_id: self.event_id.clone(),
            event_type: self.event_type.clone(),
            attempts: 0,
            due_ms: at_ms,
            created_ms: at_ms,
            last_error: None,
            dead_reason: None,
            dead_ms: None,
            render: false,
            body,
        }
    }
}

/// Attempts kept per delivery record.
pub const MAX_ATTEMPTS_KEPT: usize = 50;

/// A query of the delivery log, newest first.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Only this source.
    pub source: Option<String>,
    /// Only this destination.
    pub destination: Option<String>,
    /// Only this status.
    pub status: Option<DeliveryStatus>,
    /// Only deliveries created at or after this time, unix ms.
    pub since_ms: Option<i64>,
    /// Only deliveries with a seq below this (the cursor of the previous page).
    pub before_seq: Option<u64>,
    /// At most this many.
    pub limit: usize,
}

/// One delivery of an event with the body it was (or will be) sent with, when still stored.
#[derive(Debug, Clone)]
pub struct EventDelivery {
    /// The log record.
    pub record: HistoryRecord,
    /// The body, if the store still has it.
    pub body: Option<Arc<[u8]>>,
}

//! The task that works one due outbox row: read it from the store, run its destination's jq
//! programs if it has not been rendered yet (storing the result before anything is sent, so
//! every attempt and resend carries the same bytes), then make one signed attempt.

use std::sync::Arc;

use super::retry::Outcome;
use super::send::attempt;
use super::signing::Signer;
use super::transform::{Rendering, render_row};
use crate::config::Destination;
use crate::jq::JqPool;
use crate::store::{Attempt, OutboxRow, Settle, Store};

/// What a task needs to deliver rows of one destination.
#[derive(Clone)]
pub(super) struct Sending {
    pub(super) store: Store,
    pub(super) client: reqwest::Client,
    pub(super) dest: Arc<Destination>,
    pub(super) signer: Arc<Signer>,
    /// The destination's jq worker, when it has programs.
    pub(super) jq: Option<Arc<JqPool>>,
}

/// An attempt made: event id, source, outcome and the attempt's log record.
pub(super) type Sent = (String, String, Outcome, Attempt);

/// Why a due row was not attempted.
pub(super) enum Unsent {
    /// It is no longer in the outbox (settled meanwhile).
    Gone,
    /// The store could not be read or written.
    Unreadable(String),
    /// The destination's `filter` dropped it.
    Filtered,
    /// A program failed (or hit a limit): the row is dead-lettered with the reason.
    Failed {
        /// Event id.
        event: String,
        /// Source name.
        source: String,
        /// Why.
        reason: String,
    },
}

/// Reads row `seq`, renders it once if it must be, and attempts it.
pub(super) async fn work(s: Sending, seq: u64) -> Result<Sent, Unsent> {
    let row = match s.store.read(move |b| b.outbox_row(seq)).await {
        Ok(Some(row)) => row,
        Ok(None) => return Err(Unsent::Gone),
        Err(e) => return Err(Unsent::Unreadable(e.to_string())),
    };
    let row = render(&s, row).await?;
    let (outcome, record) = attempt(&s.client, &s.dest, &s.signer, &row).await;
    Ok((row.event_id, row.source, outcome, record))
}

/// The row as it is to be sent: rendered by its destination's programs and stored so, if it
/// was not yet.
async fn render(s: &Sending, mut row: OutboxRow) -> Result<OutboxRow, Unsent> {
    if !row.render {
        return Ok(row);
    }
    let rendering = match &s.jq {
        Some(jq) => render_row(jq, &s.dest, row.body.clone()).await,
        // A reload took the destination's programs away: the envelope is the body.
        None => Rendering::Body(None),
    };
    let body = match rendering {
        Rendering::Filtered => return Err(Unsent::Filtered),
        Rendering::Failed(reason) => {
            return Err(Unsent::Failed {
                event: row.event_id,
                source: row.source,
                reason,
            });
        }
        Rendering::Body(body) => body.map(Arc::<[u8]>::from),
    };
    let stored = Settle::Rendered {
        seq: row.seq,
        body: body.clone(),
    };
    if let Err(e) = s.store.settle(vec![stored]).await {
        return Err(Unsent::Unreadable(e.to_string()));
    }
    if let Some(body) = body {
        row.body = body;
    }
    row.render = false;
    Ok(row)
}

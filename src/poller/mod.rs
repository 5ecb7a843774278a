//! The per-source loop: wait for the next fire, fetch, extract, diff, commit state and events in
//! one transaction, hand the committed rows to the dispatcher.
//!
//! Design notes: one task per source, so a slow or hanging source only delays itself
//! (invariant 5). The task keeps an in-memory copy of its stored item state, loaded once and
//! updated only after a commit is durable; a failed poll changes neither copy. A body identical
//! to the last processed one (same bytes, same settings) is known unchanged without parsing.

mod fetch;
pub mod process;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::Source;
use crate::delivery::RowSender;
use crate::extract::{ExtractError, RawIndex};
use crate::schedule::{failure_backoff, jitter};
use crate::store::{SourceSnapshot, Store, StoreError};
pub use fetch::{FetchError, client, fetch, install_crypto};
use process::{
    body_fingerprint, build_commit, extract_and_diff, previous_keys, settings_fingerprint,
    update_index,
};

/// Why one poll failed. State is untouched and no event is emitted in every case.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The request failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The body did not fit the extraction spec.
    #[error(transparent)]
    Extract(#[from] ExtractError),
    /// The commit failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a successful poll did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    /// Same body as last time, or no item changed.
    Unchanged,
    /// State written; this many events queued.
    Changed(usize),
}

/// Shared by every source task.
pub struct PollContext {
    /// State store.
    pub store: Store,
    /// Upstream HTTP client.
    pub client: reqwest::Client,
    /// Where committed rows go.
    pub rows: RowSender,
}

/// One source's runtime state.
pub struct Poller {
    source: Arc<Source>,
    snapshot: SourceSnapshot,
    /// Fingerprint of the last body processed successfully.
    last_body: Option<blake3::Hash>,
    /// Which item bytes stand for the stored content (see `extract::RawIndex`).
    known: RawIndex,
}

impl Poller {
    /// Loads the source's stored state.
    pub fn load(source: Arc<Source>, store: &Store) -> Result<Poller, StoreError> {
        let snapshot = store.backend().load_source(&source.name)?;
        Ok(Poller {
            source,
            snapshot,
            last_body: None,
            known: RawIndex::default(),
        })
    }

    /// Polls once: fetch, extract, diff, commit, hand off.
    pub async fn poll(&mut self, ctx: &PollContext) -> Result<PollOutcome, PollError> {
        let body = fetch(&ctx.client, &self.source.request).await?;
        let fingerprint = body_fingerprint(&settings_fingerprint(&self.source), &body);
        if self.snapshot.meta.initialized && self.last_body == Some(fingerprint) {
            return Ok(PollOutcome::Unchanged);
        }
        let source = self.source.clone();
        let snapshot = std::mem::take(&mut self.snapshot);
        let known = std::mem::take(&mut self.known);
        let (snapshot, known, extracted) = tokio::task::spawn_blocking(move || {
            let ex = extract_and_diff(&source, &snapshot.meta, &snapshot.items, &known, &body);
            (snapshot, known, ex)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("extraction task failed: {e}")))?;
        self.snapshot = snapshot;
        self.known = known;
        let ex = extracted?;
        if ex.diff.is_empty() && !ex.baseline {
            self.last_body = Some(fingerprint);
            update_index(&mut self.known, &ex);
            return Ok(PollOutcome::Unchanged);
        }
        let previous = ctx
            .store
            .backend()
            .item_data(&self.source.name, &previous_keys(&self.source, &ex))?;
        let commit = build_commit(&self.source, &ex, &previous, Utc::now())?;
        let (events, meta) = (commit.events.len(), commit.meta.clone());
        let rows = ctx.store.commit_poll(commit).await?;
        update_index(&mut self.known, &ex);
        for change in ex.diff.changes {
            self.snapshot.items.insert(change.key, change.state);
        }
        for (index, state) in ex.diff.silent {
            let key = ex.extraction.items[index].key.clone();
            self.snapshot.items.insert(key, state);
        }
        self.snapshot.meta = meta;
        self.last_body = Some(fingerprint);
        if !rows.is_empty() {
            let _ = ctx.rows.send(rows);
        }
        Ok(PollOutcome::Changed(events))
    }

    /// Polls on the source's schedule until `shutdown`.
    pub async fn run(mut self, ctx: Arc<PollContext>, shutdown: CancellationToken) {
        let schedule = self.source.schedule.clone();
        let mut base = schedule.first(&self.source.name, Utc::now());
        let mut failures = 0u32;
        loop {
            let fire = base
                + chrono_of(jitter(
                    schedule.interval(base),
                    self.source.jitter,
                    rand::random::<f64>(),
                ));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = sleep_until(fire) => {}
            }
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.poll(&ctx) => r,
            };
            let now = Utc::now();
            match result {
                Ok(outcome) => {
                    failures = 0;
                    tracing::debug!(source = %self.source.name, ?outcome, "polled");
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(source = %self.source.name, failures, error = %error_chain(&e), "poll failed; state unchanged");
                }
            }
            base = schedule.next_after(base, now);
            if failures > 0 {
                let backoff = failure_backoff(schedule.interval(now), failures.saturating_sub(1));
                base = base.max(now + chrono_of(backoff));
            }
        }
    }

    /// The source this poller serves.
    pub fn source(&self) -> &Source {
        &self.source
    }
}

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

async fn sleep_until(at: DateTime<Utc>) {
    let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    tokio::time::sleep(wait).await;
}

/// An error with its sources, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

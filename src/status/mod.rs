//! What each source is doing, as the admin API and `pollhook status` show it. Pollers write
//! their own entry after every poll; the admin API reads. Also the daemon-wide readiness flag and
//! the errors of the last rejected reload.
//!
//! Design notes: one `RwLock` around a small map, held only to copy or update one entry; no
//! lock is held across an `.await`. The 24 h figures live in fixed-size hourly counters
//! (`hours.rs`), memory only.

pub mod hours;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use hours::{DestHour, HOURS, Hours, SourceHour};

/// Outcome of a poll as reported (and used as a metric label).
pub mod outcome {
    /// Items changed; events were queued.
    pub const CHANGED: &str = "changed";
    /// Nothing changed.
    pub const UNCHANGED: &str = "unchanged";
    /// Upstream answered 304 Not Modified.
    pub const NOT_MODIFIED: &str = "not_modified";
    /// The poll failed; state untouched.
    pub const FAILED: &str = "failed";
    /// The flood guard held the changes and paused the source.
    pub const HELD: &str = "held";
    /// Every outcome, in the order of [`super::SourceStatus::outcomes`].
    pub const ALL: [&str; 5] = [CHANGED, UNCHANGED, NOT_MODIFIED, FAILED, HELD];
}

/// One source's status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceStatus {
    /// Source name.
    pub name: String,
    /// `every 1m` or `cron "*/5 * * * *"`.
    pub schedule: String,
    /// Why the source is paused, if it is.
    pub paused: Option<String>,
    /// When the last poll finished.
    pub last_poll: Option<Stamp>,
    /// One of [`outcome::ALL`].
    pub last_outcome: Option<&'static str>,
    /// The last failure's message (kept after a success, with `last_error_at`).
    pub last_error: Option<String>,
    /// When the last failure happened.
    pub last_error_at: Option<Stamp>,
    /// Failures in a row (0 after a success).
    pub consecutive_failures: u32,
    /// When the next poll is due.
    pub next_poll: Option<Stamp>,
    /// Polls since start.
    pub polls: u64,
    /// Events queued since start.
    pub events: u64,
    /// Live items in the stored state.
    pub items: usize,
    /// Polls since start by outcome, in [`outcome::ALL`] order: `pollhook_polls_total`, kept
    /// here (40 bytes a source) rather than as labelled counters in the metrics recorder (a few
    /// hundred bytes each, up to five a source).
    #[serde(skip)]
    pub outcomes: [u64; 5],
    /// Changes sent as events since start by type, in [`change::ALL`] order:
    /// `pollhook_changes_total`, kept here for the same reason.
    #[serde(skip)]
    pub changes: [u64; 3],
    /// Polls by outcome and events, per hour over the last 24 hours.
    #[serde(skip)]
    pub hours: Hours<SourceHour>,
}

impl SourceStatus {
    /// Counts one poll with `outcome` that queued `events`, at `now_ms`.
    pub fn count_poll(&mut self, outcome: &'static str, events: usize, now_ms: i64) {
        self.polls += 1;
        self.events += events as u64;
        self.last_outcome = Some(outcome);
        let i = outcome::ALL.iter().position(|o| *o == outcome);
        if let Some(i) = i {
            self.outcomes[i] += 1;
        }
        self.hours.record(now_ms, |h| {
            if let Some(i) = i {
                h.polls[i] = h.polls[i].saturating_add(1);
            }
            h.events = h
                .events
                .saturating_add(events.min(u32::MAX as usize) as u32);
        });
    }
}

/// A time in a status, written as RFC 3339 with milliseconds when it is read (a source's task
/// sets two on every poll; formatting them there cost an allocation and a format each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(pub DateTime<Utc>);

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&rfc3339(self.0))
    }
}

impl Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A change's type as counted (and used as a metric label).
pub mod change {
    /// Every type, in the order of [`super::SourceStatus::changes`].
    pub const ALL: [&str; 3] = ["created", "updated", "deleted"];
}

/// One source's counters, copied for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceCounters {
    /// Source name.
    pub name: String,
    /// See [`SourceStatus::outcomes`].
    pub polls: [u64; 5],
    /// See [`SourceStatus::changes`].
    pub changes: [u64; 3],
}

/// Formats a time for the API.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One source's entry, held by its task: updating it takes only its own lock.
pub type SourceEntry = Arc<Mutex<SourceStatus>>;

/// Applies `f` to an entry (a poisoned lock is taken over: the status is plain data).
pub fn apply(entry: &SourceEntry, f: impl FnOnce(&mut SourceStatus)) {
    f(&mut entry.lock().unwrap_or_else(|p| p.into_inner()));
}

fn copy(entry: &SourceEntry) -> SourceStatus {
    entry.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Shared daemon status.
#[derive(Debug, Default)]
pub struct Registry {
    sources: RwLock<BTreeMap<String, SourceEntry>>,
    ready: AtomicBool,
    reload_errors: RwLock<Vec<String>>,
    failing: RwLock<BTreeMap<String, String>>,
    filtered: RwLock<BTreeMap<String, u64>>,
    destinations: RwLock<BTreeMap<String, Hours<DestHour>>>,
    dest_errors: RwLock<BTreeMap<String, (String, i64)>>,
    started: std::sync::OnceLock<DateTime<Utc>>,
}

impl Registry {
    /// A source's entry, created when missing; a task keeps it and updates it with [`apply`].
    pub fn entry(&self, name: &str) -> SourceEntry {
        if let Some(e) = self.existing(name) {
            return e;
        }
        let mut map = self.sources.write().unwrap_or_else(|p| p.into_inner());
        map.entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Mutex::new(SourceStatus {
                    name: name.to_owned(),
                    ..Default::default()
                }))
            })
            .clone()
    }

    /// Applies `f` to a source's entry, creating it when missing.
    pub fn update(&self, name: &str, f: impl FnOnce(&mut SourceStatus)) {
        apply(&self.entry(name), f);
    }

    /// Applies `f` to a source's entry if it has one: a poll that finishes after its source was
    /// removed does not bring the entry back.
    pub fn update_existing(&self, name: &str, f: impl FnOnce(&mut SourceStatus)) {
        if let Some(e) = self.existing(name) {
            apply(&e, f);
        }
    }

    fn existing(&self, name: &str) -> Option<SourceEntry> {
        self.sources.read().ok().and_then(|m| m.get(name).cloned())
    }

    /// Removes a source's entry (the source left the config).
    pub fn remove(&self, name: &str) {
        if let Ok(mut map) = self.sources.write() {
            map.remove(name);
        }
    }

    /// Every source's status, by name.
    pub fn sources(&self) -> Vec<SourceStatus> {
        self.sources
            .read()
            .map(|m| m.values().map(copy).collect())
            .unwrap_or_default()
    }

    /// Every source's counters (see [`SourceCounters`]), by name.
    pub fn counters(&self) -> Vec<SourceCounters> {
        let Ok(m) = self.sources.read() else {
            return Vec::new();
        };
        m.iter()
            .map(|(name, e)| {
                let s = e.lock().unwrap_or_else(|p| p.into_inner());
                SourceCounters {
                    name: name.clone(),
                    polls: s.outcomes,
                    changes: s.changes,
                }
            })
            .collect()
    }

    /// One source's status.
    pub fn source(&self, name: &str) -> Option<SourceStatus> {
        self.sources.read().ok().and_then(|m| m.get(name).map(copy))
    }

    /// Marks the daemon ready (state open, admin listening, scheduler running) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether the daemon is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Records the problems of a rejected reload (empty after a successful one).
    pub fn set_reload_errors(&self, errors: Vec<String>) {
        if let Ok(mut e) = self.reload_errors.write() {
            *e = errors;
        }
    }

    /// Problems of the last rejected reload.
    pub fn reload_errors(&self) -> Vec<String> {
        self.reload_errors
            .read()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    /// Reports a task that keeps dying (`Some(reason)`) or clears it (`None`).
    pub fn set_task_failing(&self, task: &str, reason: Option<String>) {
        if let Ok(mut f) = self.failing.write() {
            match reason {
                Some(r) => f.insert(task.to_owned(), r),
                None => f.remove(task),
            };
        }
    }

    /// Why tasks keep dying, if any do; the daemon is not ready while this is not empty.
    pub fn failing_tasks(&self) -> Vec<String> {
        self.failing
            .read()
            .map(|f| f.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Counts an event a destination's `filter` dropped.
    pub fn count_filtered(&self, destination: &str) {
        if let Ok(mut f) = self.filtered.write() {
            *f.entry(destination.to_owned()).or_default() += 1;
        }
    }

    /// Counts one delivery attempt to `destination` at `now_ms`; `error` says why it failed.
    pub fn count_attempt(
        &self,
        destination: &str,
        now_ms: i64,
        duration_ms: u64,
        error: Option<String>,
    ) {
        self.dest_hour(destination, now_ms, |h| {
            h.attempt(error.is_none(), duration_ms)
        });
        if let Some(e) = error {
            let mut errors = self.dest_errors.write().unwrap_or_else(|p| p.into_inner());
            errors.insert(destination.to_owned(), (e, now_ms));
        }
    }

    /// The last failed attempt of each destination: why, and when (unix ms).
    pub fn destination_errors(&self) -> BTreeMap<String, (String, i64)> {
        self.dest_errors
            .read()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    /// Notes `destination`'s backlog at `now_ms` (the hour keeps the largest).
    pub fn note_backlog(&self, destination: &str, now_ms: i64, pending: usize) {
        let pending = pending.min(u32::MAX as usize) as u32;
        self.dest_hour(destination, now_ms, |h| h.backlog = h.backlog.max(pending));
    }

    fn dest_hour(&self, destination: &str, now_ms: i64, f: impl FnOnce(&mut DestHour)) {
        let mut map = self.destinations.write().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(destination) {
            Some(hours) => hours.record(now_ms, f),
            None => {
                let mut hours = Hours::default();
                hours.record(now_ms, f);
                map.insert(destination.to_owned(), hours);
            }
        }
    }

    /// Each destination's last 24 hours, oldest first.
    pub fn destination_hours(&self, now_ms: i64) -> BTreeMap<String, [DestHour; HOURS]> {
        let map = self.destinations.read().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|(k, h)| (k.clone(), h.last_day(now_ms)))
            .collect()
    }

    /// Since when the hourly counters count (the first time this was asked, at start).
    pub fn counting_since(&self) -> DateTime<Utc> {
        *self.started.get_or_init(Utc::now)
    }

    /// Events dropped by each destination's `filter` since start.
    pub fn filtered(&self) -> BTreeMap<String, u64> {
        self.filtered.read().map(|f| f.clone()).unwrap_or_default()
    }
}

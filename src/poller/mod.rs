//! The per-source loop: wait for the next fire, fetch, extract, diff, commit state and events in
//! one transaction, hand the committed rows to the dispatcher.
//!
//! Design notes: one task per source, so a slow or hanging source only delays itself
//! (invariant 5). The task keeps an in-memory copy of its stored item state, loaded once and
//! updated only after a commit is durable; a failed poll changes neither copy. A body identical
//! to the last processed one (same bytes, same settings) is known unchanged without parsing.

mod fetch;
pub mod mailbox;
pub mod paginate;
pub mod process;
pub mod rate_limit;
mod task;

use std::sync::Arc;

use chrono::Utc;

use crate::config::Source;
use crate::diff::ItemTable;
use crate::extract::ExtractError;
pub use crate::http::error_chain;
use crate::status::Registry;
use crate::store::{GuardPass, SourceMeta, Store, StoreError};
pub use fetch::{FetchError, Fetched, Validators, fetch, fetch_if};
pub use mailbox::{Inbox, Mailbox};
use process::{
    Snapshot, body_fingerprint, build_commit, extract_and_diff, flood, legacy_settings_fingerprint,
    previous_keys, settings_fingerprint, update_index,
};
pub use rate_limit::Limits;
use rate_limit::{Admission, Gate};
pub use task::Control;

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
    /// A paginated run was incomplete or looped.
    #[error("pagination failed: {0}")]
    Paginate(String),
}

/// What a successful poll did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollOutcome {
    /// Same body as last time, or no item changed.
    Unchanged,
    /// The upstream answered 304 Not Modified; nothing was parsed.
    NotModified,
    /// The flood guard held the changes and paused the source (the reason).
    Held(String),
    /// State written; this many events queued.
    Changed(usize),
}

/// Shared by every source task.
pub struct PollContext {
    /// State store.
    pub store: Store,
    /// Upstream HTTP client.
    pub client: reqwest::Client,
    /// Where each source reports its status.
    pub registry: Arc<Registry>,
    /// Per-host budgets and upstream signals.
    pub limits: Arc<Limits>,
    /// The configured destinations (for their `filter` and `body` programs).
    pub destinations: crate::config::Destinations,
    /// Where poll outcomes are reported for alerts.
    pub signals: crate::telemetry::Signals,
    /// Bounds the polls that parse a body and commit at the same time ([`PROCESSING_PERMITS`]).
    pub processing: Arc<tokio::sync::Semaphore>,
    /// Bounds the baselines (first polls) fetching at the same time ([`BASELINE_SLOTS`]).
    pub baselines: Arc<tokio::sync::Semaphore>,
    /// The grid source timers fire on, fitted to the running sources' poll rate.
    pub grid: crate::schedule::Grid,
}

/// How many polls may be between "this body differs" and "its commit is durable" at once. A
/// poll in that stretch holds its parsed items (several times the JSON's size); when thousands
/// of sources are first polled together, this bound is what keeps memory flat. The writer
/// commits the waiting polls together, so a few dozen keep it busy.
pub const PROCESSING_PERMITS: usize = 32;

/// How many first polls (baselines) may run at once, from fetch to durable commit. Fewer than
/// [`PROCESSING_PERMITS`]: a baseline parses and compresses a whole body, which on two cores
/// is CPU-bound, so more of them at once only holds more bodies and connections. Side by side
/// (`cargo bench --bench scale`), 8 rather than 32: first-run peak RSS 130.6 / 128.7 vs 137.9
/// MiB at 10,000 sources and 39.8 vs 43.0 MiB at 1,000; 10,000 first polls take 7–9 s instead
/// of ~6.5 (1,000: 1.05 s either way).
pub const BASELINE_SLOTS: usize = 8;

/// How far a fetch got.
enum Step {
    /// The poll is over (304).
    Done(PollOutcome),
    /// A body to process.
    Body(Body),
}

/// A fetched snapshot.
struct Body {
    snapshot: Snapshot,
    /// What it is identical to (same bytes under the same settings), unparsed.
    fingerprint: u128,
    validators: Validators,
    /// The page cache of this run, installed only if the poll succeeds.
    pages: Option<paginate::PageCache>,
}

/// One source's runtime state.
pub struct Poller {
    source: Arc<Source>,
    /// The stored metadata.
    meta: SourceMeta,
    /// The stored item state, compact (see `diff::ItemTable`): hashes and revisions, and which
    /// item bytes stand for the stored content. Shared only with the blocking threads that
    /// extract this source's bodies, and changed only when it is not ([`Poller::table`]).
    items: Arc<ItemTable>,
    /// Fingerprint of the last body processed successfully.
    last_body: Option<u128>,
    /// The source's and its host's request budgets.
    gate: Gate,
    /// Fingerprint of the extraction settings, computed once.
    settings: String,
    /// Per-page validators and items of the last paginated run (memory only).
    pages: paginate::PageCache,
    /// The store's fencing token for the loaded state (see `SourceSnapshot::fence`).
    fence: u64,
    /// When the source's previous holder meant to poll next (see `SourceSnapshot::resume_ms`).
    pub(crate) resume_ms: Option<i64>,
}

impl Poller {
    /// Loads the source's stored state.
    pub fn load(source: Arc<Source>, ctx: &PollContext) -> Result<Poller, StoreError> {
        let snapshot = ctx.store.backend().load_source(&source.name)?;
        let rows = snapshot.items.iter().map(|(k, s)| (k.as_str(), s));
        let items = Arc::new(ItemTable::new(rows, snapshot.revision_floor));
        let mut meta = snapshot.meta;
        let gate = Gate::new(ctx.limits.host(&source.request.url), source.rate);
        let settings = settings_fingerprint(&source);
        // A state stored under the legacy fingerprint of these same settings is current: it is
        // not re-baselined, and the next write stores the versioned fingerprint.
        if meta.fingerprint.as_deref() == Some(&legacy_settings_fingerprint(&source)) {
            meta.fingerprint = Some(settings.clone());
        }
        Ok(Poller {
            source,
            meta,
            items,
            last_body: None,
            gate,
            settings,
            pages: paginate::PageCache::default(),
            fence: snapshot.fence,
            resume_ms: snapshot.resume_ms,
        })
    }

    /// Polls once: fetch, extract, diff, commit. Every step that fails leaves the stored state,
    /// the in-memory copy and the page cache as they were.
    pub async fn poll(&mut self, ctx: &PollContext) -> Result<PollOutcome, PollError> {
        // Validators stand for the stored state only when it was computed with these settings.
        let current = self.meta.initialized
            && self.meta.fingerprint.as_deref() == Some(self.settings.as_str());
        // A baseline (first poll, changed settings) will parse and commit whatever comes back:
        // it waits for a baseline slot before fetching, so thousands of first polls don't hold
        // their bodies while they queue. The slots are the baselines' own: a new source whose
        // host hangs holds up other first polls at most, never the polls of running sources.
        let _baseline = match current {
            true => None,
            false => Some(ctx.baselines.acquire().await),
        };
        // A single request also waits for its host's leave here: when thousands of sources fall
        // due at once (a restart), they queue at the host's connection limit holding a
        // wait of a few hundred bytes (boxed: the idle task's future stays small), not the
        // poll's state.
        let admitted = match self.source.paginate {
            None => Some(Box::pin(self.gate.admit()).await),
            Some(_) => None,
        };
        // Boxed, and only now: the poll's state (request, extraction, commit; a few KiB) is
        // needed while polling, not while the task sleeps or its first poll queues for a slot.
        Box::pin(self.poll_now(ctx, current, admitted)).await
    }

    async fn poll_now(
        &mut self,
        ctx: &PollContext,
        current: bool,
        admitted: Option<Admission>,
    ) -> Result<PollOutcome, PollError> {
        let fetched = match self.fetch(ctx, current, admitted).await? {
            Step::Done(outcome) => return Ok(outcome),
            Step::Body(f) => f,
        };
        let fingerprint = fetched.fingerprint;
        if self.meta.initialized && self.last_body == Some(fingerprint) {
            self.keep_validators(ctx, &fetched.validators).await?;
            self.install_pages(fetched.pages);
            return Ok(PollOutcome::Unchanged);
        }
        let permit = ctx.processing.acquire().await;
        let mut ex = self.extract(ctx, current, fetched.snapshot).await?;
        match self.meta.pass_guard {
            Some(pass) => ex.discard = pass == GuardPass::Discard,
            None => {
                if let Some(reason) = flood(&self.source, &ex, self.live_items()) {
                    self.hold(ctx, reason.clone()).await?;
                    return Ok(PollOutcome::Held(reason));
                }
            }
        }
        if ex.diff.is_empty() && !ex.baseline && !ex.discard {
            self.keep_validators(ctx, &fetched.validators).await?;
            self.last_body = Some(fingerprint);
            update_index(self.table(ctx)?, &ex);
            self.install_pages(fetched.pages);
            return Ok(PollOutcome::Unchanged);
        }
        let events = self.commit(ctx, ex, fetched.validators).await?;
        drop(permit);
        self.last_body = Some(fingerprint);
        self.install_pages(fetched.pages);
        Ok(PollOutcome::Changed(events))
    }

    /// Fetches the source (every page of it when paginated); a 304 (every page 304) ends the
    /// poll here.
    async fn fetch(
        &mut self,
        ctx: &PollContext,
        current: bool,
        admitted: Option<Admission>,
    ) -> Result<Step, PollError> {
        let Some(p) = &self.source.paginate else {
            let sent = match current {
                true => Validators {
                    etag: self.meta.etag.clone(),
                    last_modified: self.meta.last_modified.clone(),
                },
                false => Validators::default(),
            };
            return Ok(
                match fetch_if(
                    &ctx.client,
                    &self.source.request,
                    &sent,
                    &self.gate,
                    admitted,
                )
                .await?
                {
                    Fetched::NotModified => Step::Done(PollOutcome::NotModified),
                    Fetched::Body(body, validators) => Step::Body(Body {
                        fingerprint: body_fingerprint(&self.settings, &body),
                        snapshot: Snapshot::Body(body),
                        validators,
                        pages: None,
                    }),
                },
            );
        };
        // Pages carry their own validators (in memory); the snapshot's stay empty.
        let run = paginate::Run {
            client: &ctx.client,
            source: &self.source,
            paginate: p,
            gate: &self.gate,
            cache: &self.pages,
            items: &self.items,
        };
        let pages = paginate::fetch_pages(run).await?;
        if pages.all_not_modified && current {
            self.pages = pages.cache;
            return Ok(Step::Done(PollOutcome::NotModified));
        }
        let seed = body_fingerprint(&self.settings, &[]);
        Ok(Step::Body(Body {
            fingerprint: pages.fingerprint ^ seed,
            snapshot: Snapshot::Pages(pages.extraction),
            validators: Validators::default(),
            pages: Some(pages.cache),
        }))
    }

    /// Extracts and diffs `snapshot` on a blocking thread (CPU work off the tokio workers).
    async fn extract(
        &mut self,
        ctx: &PollContext,
        current: bool,
        snapshot: Snapshot,
    ) -> Result<process::Extracted, PollError> {
        let (source, items, store) = (self.source.clone(), self.items.clone(), ctx.store.clone());
        tokio::task::spawn_blocking(move || {
            let rows = || {
                let stored = store.backend().load_source(&source.name)?;
                Ok(stored.items.into_iter().collect())
            };
            extract_and_diff(&source, !current, &items, rows, snapshot)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("extraction task failed: {e}")))?
    }

    /// The item table, to change: shared with no extraction thread by then. Should one still
    /// hold it (a poll cancelled while its extraction ran), the table is rebuilt from the
    /// store rather than changed under that thread.
    fn table(&mut self, ctx: &PollContext) -> Result<&mut ItemTable, StoreError> {
        if Arc::get_mut(&mut self.items).is_none() {
            let snapshot = ctx.store.backend().load_source(&self.source.name)?;
            let rows = snapshot.items.iter().map(|(k, s)| (k.as_str(), s));
            self.items = Arc::new(ItemTable::new(rows, snapshot.revision_floor));
        }
        Arc::get_mut(&mut self.items)
            .ok_or_else(|| StoreError::Backend("the item table is in use".to_owned()))
    }

    /// Commits the new state and its events in one transaction, then updates the in-memory
    /// copy; returns how many events were queued.
    async fn commit(
        &mut self,
        ctx: &PollContext,
        ex: process::Extracted,
        validators: Validators,
    ) -> Result<usize, PollError> {
        let previous = ctx
            .store
            .backend()
            .item_data(&self.source.name, &previous_keys(&self.source, &ex))?;
        let meta = SourceMeta {
            initialized: true,
            fingerprint: Some(self.settings.clone()),
            paused: self.meta.paused.clone(),
            held: false,
            // A pass through the flood guard is used up by this commit.
            pass_guard: None,
            etag: validators.etag,
            last_modified: validators.last_modified,
        };
        let mut commit = build_commit(&self.source, meta, &ex, &previous, Utc::now())?;
        // Deliveries to destinations with jq programs are rendered when they are first due.
        if let Ok(dests) = ctx.destinations.read() {
            let programmed = |name: &str| dests.get(name).is_some_and(|d| d.programmed());
            commit.defer_renders(programmed);
        }
        let (events, meta) = (commit.events.len(), commit.meta.clone());
        commit.fence = self.fence;
        // The writer hands the committed rows to the dispatcher itself.
        ctx.store.commit_poll(commit).await?;
        process::count_changes(&self.source, &ex, &ctx.registry);
        let table = self.table(ctx)?;
        table.presize(ex.diff.changes.len() + ex.diff.silent.len());
        for change in &ex.diff.changes {
            table.set(&change.key, &change.state);
        }
        for (index, state) in &ex.diff.silent {
            table.set(&ex.extraction.items[*index].key, state);
        }
        update_index(table, &ex);
        self.meta = meta;
        Ok(events)
    }

    /// Keeps a successful run's page validators for the next run.
    fn install_pages(&mut self, pages: Option<paginate::PageCache>) {
        if let Some(pages) = pages {
            self.pages = pages;
        }
    }

    /// Stores new validators for an unchanged state (an upstream may rotate its ETag without a
    /// change); nothing is written when they are the same.
    async fn keep_validators(
        &mut self,
        ctx: &PollContext,
        v: &Validators,
    ) -> Result<(), StoreError> {
        let meta = &self.meta;
        if meta.etag == v.etag && meta.last_modified == v.last_modified {
            return Ok(());
        }
        let meta = SourceMeta {
            etag: v.etag.clone(),
            last_modified: v.last_modified.clone(),
            ..meta.clone()
        };
        ctx.store.set_meta(&self.source.name, meta.clone()).await?;
        self.meta = meta;
        Ok(())
    }

    /// The interval the upstream asked for (`X-Poll-Interval`), if any.
    pub fn upstream_interval(&self) -> Option<std::time::Duration> {
        self.gate.poll_interval()
    }

    /// Live items in the stored state.
    pub fn live_items(&self) -> usize {
        self.items.live()
    }

    /// Why the source is paused, if it is.
    pub fn paused(&self) -> Option<&str> {
        self.meta.paused.as_deref()
    }

    /// Pauses (with a reason) or resumes the source, durably. Resuming a source the flood guard
    /// held lets its next poll through the guard once, emitting (or with `discard`, silently
    /// recording) the changes.
    pub async fn set_paused(
        &mut self,
        store: &Store,
        reason: Option<String>,
        discard: bool,
    ) -> Result<(), StoreError> {
        let old = &self.meta;
        let pass_guard = match (&reason, old.held) {
            (None, true) => Some(if discard {
                GuardPass::Discard
            } else {
                GuardPass::Emit
            }),
            _ => old.pass_guard,
        };
        let meta = SourceMeta {
            paused: reason,
            held: false,
            pass_guard,
            ..old.clone()
        };
        store.set_meta(&self.source.name, meta.clone()).await?;
        self.meta = meta;
        Ok(())
    }

    /// The flood guard's hold: pause with the reason, remembering it was the guard.
    async fn hold(&mut self, ctx: &PollContext, reason: String) -> Result<(), StoreError> {
        tracing::error!(source = %self.source.name, reason = %reason, "changes held; the source is paused until resumed");
        let meta = SourceMeta {
            paused: Some(reason.clone()),
            held: true,
            ..self.meta.clone()
        };
        ctx.store.set_meta(&self.source.name, meta.clone()).await?;
        self.meta = meta;
        ctx.registry
            .update(&self.source.name, |s| s.paused = Some(reason));
        Ok(())
    }
}

//! The per-source task: waits for the next fire or an operator command, polls, reports the
//! outcome to the status registry and metrics, and moves the schedule on (with failure backoff).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{PollContext, PollError, PollOutcome, Poller, error_chain};
use crate::schedule::{failure_backoff, jitter, later};
use crate::status::{SourceEntry, Stamp, apply, outcome};
use crate::telemetry as m;

/// An operator command for one source.
#[derive(Debug)]
pub enum Control {
    /// Poll now (even when paused); the reply is the outcome in words.
    PollNow(oneshot::Sender<String>),
    /// Pause with a reason; polls stop until resumed.
    Pause(String, oneshot::Sender<Result<(), String>>),
    /// Resume a paused source; `true` discards changes the flood guard held (re-baseline).
    Resume(bool, oneshot::Sender<Result<(), String>>),
}

async fn sleep_until(at: DateTime<Utc>) {
    let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    tokio::time::sleep(wait).await;
}

impl Poller {
    /// Polls on the source's schedule, and on operator command, until `shutdown`.
    ///
    /// Not an `async fn`: an `async fn`'s future stores its arguments twice, as arguments and
    /// as the body's locals (rust-lang/rust#62958), and every idle source holds this future —
    /// the `Poller` alone is 432 bytes. An `async move` block uses what it captured in place.
    #[expect(clippy::manual_async_fn, reason = "rust-lang/rust#62958, above")]
    pub fn run(
        mut self,
        ctx: Arc<PollContext>,
        control: &super::Mailbox,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> {
        async move {
            let source = self.source.clone();
            let (name, schedule) = (&source.name, &source.schedule);
            // A source handed over by another instance polls when that instance would have.
            let mut base = match self
                .resume_ms
                .take()
                .and_then(DateTime::from_timestamp_millis)
            {
                Some(due) => due.max(Utc::now()),
                None => schedule.first(name, Utc::now()),
            };
            let mut failures = 0u32;
            let live = self.live_items();
            let paused = self.paused().map(str::to_owned);
            let mut reporter = Reporter {
                status: ctx.registry.entry(name),
                metrics: m::SourceMetrics::register(),
                clean: false,
            };
            apply(&reporter.status, |s| {
                s.schedule = format!("{schedule:?}");
                s.items = live;
                s.paused = paused;
            });
            // One registration with the token for the task's life, not one per wait: a
            // `cancelled()` made inside each `select!` registered and unregistered a waiter
            // (two locks each) twice per poll.
            let mut cancelled = std::pin::pin!(shutdown.cancelled());
            loop {
                let fire = later(
                    base,
                    jitter(
                        schedule.interval(base),
                        self.source.jitter,
                        rand::random::<f64>(),
                    ),
                );
                apply(&reporter.status, |s| s.next_poll = Some(Stamp(fire)));
                let forced = tokio::select! {
                    biased;
                    _ = &mut cancelled => return,
                    _ = sleep_until(ctx.grid.on(fire)) => None,
                    cmd = control.recv() => match cmd {
                        Control::PollNow(reply) => Some(reply),
                        Control::Pause(reason, reply) => {
                            let _ = reply.send(Box::pin(self.pause(&ctx, Some(reason), false)).await);
                            continue;
                        }
                        Control::Resume(discard, reply) => {
                            let _ = reply.send(Box::pin(self.pause(&ctx, None, discard)).await);
                            continue;
                        }
                    },
                };
                if forced.is_none() {
                    let lag = (Utc::now() - fire).to_std().unwrap_or(Duration::ZERO);
                    reporter.metrics.lag.record(lag.as_secs_f64());
                }
                if forced.is_none() && self.paused().is_some() {
                    base = schedule.next_after(base, Utc::now());
                    continue;
                }
                let started = Instant::now();
                let result = tokio::select! {
                    biased;
                    _ = &mut cancelled => return,
                    r = self.poll(&ctx) => r,
                };
                let said = reporter.report(&self, &ctx, &result, started.elapsed(), failures);
                failures = if result.is_ok() { 0 } else { failures + 1 };
                if let Some(reply) = forced {
                    let _ = reply.send(said);
                    continue; // an operator poll does not move the schedule
                }
                let now = Utc::now();
                base = schedule.next_after(base, now);
                // GitHub's X-Poll-Interval raises this source's interval, never lowers it.
                if let Some(min) = self
                    .upstream_interval()
                    .filter(|min| *min > schedule.interval(now))
                {
                    base = base.max(later(now, min));
                }
                if failures > 0 {
                    let backoff = failure_backoff(schedule.interval(now), failures - 1);
                    base = base.max(later(now, backoff));
                }
            }
        }
    }

    async fn pause(
        &mut self,
        ctx: &PollContext,
        reason: Option<String>,
        discard: bool,
    ) -> Result<(), String> {
        let store = ctx.store.clone();
        self.set_paused(&store, reason.clone(), discard)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(source = %self.source.name, paused = ?reason, "source pause state changed");
        ctx.registry
            .update(&self.source.name, |s| s.paused = reason);
        Ok(())
    }
}

/// Where a source task reports its polls: its status entry and metric handles, taken once.
struct Reporter {
    status: SourceEntry,
    metrics: m::SourceMetrics,
    /// Whether the last signal sent for alerts was a success (repeats of it are not sent: a
    /// poll that changes nothing for alerts costs no message to another task).
    clean: bool,
}

impl Reporter {
    /// Records a poll's outcome in logs, metrics and the registry; returns it in words.
    fn report(
        &mut self,
        poller: &Poller,
        ctx: &PollContext,
        result: &Result<PollOutcome, PollError>,
        took: Duration,
        failures_before: u32,
    ) -> String {
        let name = &poller.source.name;
        let now = Stamp(Utc::now());
        self.metrics.duration.record(took.as_secs_f64());
        let (label, said, events) = match result {
            Ok(PollOutcome::Unchanged) => (outcome::UNCHANGED, "unchanged".to_owned(), 0),
            Ok(PollOutcome::NotModified) => (outcome::NOT_MODIFIED, "not modified".to_owned(), 0),
            Ok(PollOutcome::Held(reason)) => (outcome::HELD, reason.clone(), 0),
            Ok(PollOutcome::Changed(n)) => {
                (outcome::CHANGED, format!("changed: {n} events queued"), *n)
            }
            Err(e) => (outcome::FAILED, format!("failed: {}", error_chain(e)), 0),
        };
        match result {
            Ok(o) => tracing::debug!(source = %name, outcome = ?o, "polled"),
            Err(e) => {
                tracing::warn!(source = %name, failures = failures_before + 1, error = %error_chain(e), "poll failed; state unchanged")
            }
        }
        let clean = matches!(result, Ok(o) if !matches!(o, PollOutcome::Held(_)));
        if !(clean && self.clean) {
            ctx.signals.send(match result {
                Ok(PollOutcome::Held(reason)) => m::Signal::SourceHeld {
                    source: name.clone(),
                    reason: reason.clone(),
                },
                Ok(_) => m::Signal::SourcePolled {
                    source: name.clone(),
                    error: None,
                },
                Err(_) => m::Signal::SourcePolled {
                    source: name.clone(),
                    error: Some(said.clone()),
                },
            });
        }
        self.clean = clean;
        let live = poller.live_items();
        apply(&self.status, |s| {
            s.count_poll(label, events, now.0.timestamp_millis());
            s.items = live;
            s.last_poll = Some(now);
            if result.is_ok() {
                s.consecutive_failures = 0;
            } else {
                s.consecutive_failures = failures_before + 1;
                s.last_error = Some(said.clone());
                s.last_error_at = Some(now);
            }
        });
        said
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poller::Mailbox;

    fn returned_size<A, B, C, D, F>(_: impl FnOnce(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every source holds its task's future all the time, so its size is memory per source
    /// (10,000 sources: 10 MB per KiB). A poll's own state (request, extraction, commit) is boxed
    /// while it runs and must not be laid out in it; nor must a poll waiting for its host; nor
    /// a second copy of the `Poller` (1,616 bytes when `run` was an `async fn`; 992 now, with
    /// the per-source counters out of `Reporter`).
    #[test]
    fn an_idle_source_task_stays_small() {
        let run = returned_size::<Poller, Arc<PollContext>, &'static Mailbox, CancellationToken, _>(
            Poller::run,
        );
        let poll = returned_size(
            |p: &'static mut Poller, c: &'static PollContext, _: (), _: ()| p.poll(c),
        );
        assert!(poll <= 192, "Poller::poll's future is {poll} bytes");
        assert!(run <= 1024, "Poller::run's future is {run} bytes");
    }
}

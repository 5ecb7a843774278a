//! The daemon's side of a jq worker: one child process (`pollhook jq-worker`) per pool, started
//! on first use under the pool's [`Limits`], fed whole batches, killed when a batch outlives its
//! deadline and restarted when it dies. A batch that fails that way is rendered again one event
//! at a time, each with the time limit, so only the event whose program misbehaves fails.
//! Programs are sent to a worker the first time it needs them.
//!
//! Design notes: the daemon keeps one pool per destination with programs, so a runaway program
//! delays only its own destination. Within a pool, batches are serialised by one async mutex;
//! [`JqPool::render_one`] combines the requests of concurrent callers: whoever gets the worker
//! renders everything queued so far in one round trip and hands each caller its result.
//! Nothing a program does can panic or block the daemon: its memory is the child's, bounded by
//! `RLIMIT_AS`, and its answers are read with a size bound.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tokio::sync::{Mutex, oneshot};

use super::Limits;
use super::child::{Lost, Worker};
pub use super::child::{Outcome, Rendered, Request};
use crate::telemetry as m;

/// One event to render, owned (what [`JqPool::render_one`] queues).
#[derive(Clone)]
pub struct Job {
    /// `filter` program text, if any.
    pub filter: Option<Arc<str>>,
    /// `body` program text, if any.
    pub body: Option<Arc<str>>,
    /// `$secret`.
    pub secret: Arc<str>,
    /// The event, as JSON text.
    pub input: Arc<[u8]>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("filter", &self.filter)
            .field("body", &self.body)
            .field("secret", &"<redacted>")
            .field("input_bytes", &self.input.len())
            .finish()
    }
}

/// A queued [`Job`] and where its result goes.
type Queued = (Job, oneshot::Sender<Rendered>);

/// A jq worker, how to start it, and the limits it runs under.
pub struct JqPool {
    exe: PathBuf,
    limits: Limits,
    /// The destination it renders for (the metrics' label).
    label: String,
    worker: Mutex<Option<Worker>>,
    queue: std::sync::Mutex<Vec<Queued>>,
}

impl std::fmt::Debug for JqPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JqPool({}, {})", self.label, self.exe.display())
    }
}

impl JqPool {
    /// A pool whose worker is `exe jq-worker` (the pollhook binary), running under `limits`;
    /// `label` names it in metrics (the destination).
    pub fn new(exe: PathBuf, limits: Limits, label: &str) -> JqPool {
        JqPool {
            exe,
            limits,
            label: label.to_owned(),
            worker: Mutex::new(None),
            queue: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The limits it runs under.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Renders one job, in one round trip with every other job queued meanwhile.
    pub async fn render_one(&self, job: Job) -> Rendered {
        let mut rx = self.enqueue(job.clone());
        loop {
            let mut guard = tokio::select! {
                biased;
                done = &mut rx => match done {
                    Ok(rendered) => return rendered,
                    // The caller that took it was cancelled mid-render: queue it again.
                    Err(_) => {
                        rx = self.enqueue(job.clone());
                        continue;
                    }
                },
                guard = self.worker.lock() => guard,
            };
            let queued = std::mem::take(&mut *self.queued());
            if queued.is_empty() {
                // Another caller took this job with its batch: its result is on the way.
                continue;
            }
            let results = self.render_jobs(&mut guard, &queued).await;
            for ((_, reply), result) in queued.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
    }

    fn enqueue(&self, job: Job) -> oneshot::Receiver<Rendered> {
        let (tx, rx) = oneshot::channel();
        self.queued().push((job, tx));
        rx
    }

    /// The queue (nothing panics while holding it; a poisoned one is still consistent).
    fn queued(&self) -> std::sync::MutexGuard<'_, Vec<Queued>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn render_jobs(&self, slot: &mut Option<Worker>, jobs: &[Queued]) -> Vec<Rendered> {
        let inputs: Vec<Option<&RawValue>> = jobs
            .iter()
            .map(|(j, _)| serde_json::from_slice::<&RawValue>(&j.input).ok())
            .collect();
        let mut requests = Vec::with_capacity(jobs.len());
        let mut at = Vec::with_capacity(jobs.len());
        for (i, ((job, _), input)) in jobs.iter().zip(&inputs).enumerate() {
            if let Some(input) = input {
                at.push(i);
                requests.push(Request {
                    filter: job.filter.as_deref(),
                    body: job.body.as_deref(),
                    secret: &job.secret,
                    input,
                });
            }
        }
        let mut out = vec![Rendered::failed("the event is not JSON"); jobs.len()];
        for (i, r) in at
            .into_iter()
            .zip(self.render_locked(slot, &requests).await)
        {
            out[i] = r;
        }
        out
    }

    /// Renders every request, in one round trip when all goes well.
    pub async fn render(&self, requests: &[Request<'_>]) -> Vec<Rendered> {
        let mut guard = self.worker.lock().await;
        self.render_locked(&mut guard, requests).await
    }

    async fn render_locked(
        &self,
        slot: &mut Option<Worker>,
        requests: &[Request<'_>],
    ) -> Vec<Rendered> {
        if requests.is_empty() {
            return Vec::new();
        }
        let started = Instant::now();
        // Generous for a healthy batch; a runaway program is then found one event at a time.
        let deadline = self.limits.timeout + Duration::from_millis(10) * requests.len() as u32;
        let out = match self.batch(slot, requests, deadline).await {
            Ok(results) => results,
            Err(_) => {
                let mut out = Vec::with_capacity(requests.len());
                for r in requests {
                    out.push(self.single(slot, *r).await);
                }
                out
            }
        };
        metrics::histogram!(m::JQ_SECONDS, "destination" => self.label.clone())
            .record(started.elapsed().as_secs_f64());
        out
    }

    /// One request alone, each program on its own when they fail together, so that the
    /// failure is charged to the program that caused it.
    async fn single(&self, slot: &mut Option<Worker>, r: Request<'_>) -> Rendered {
        let failed = |lost: Lost| Some(Outcome::Failed(lost.reason()));
        let limit = self.limits.timeout;
        match self.batch(slot, &[r], limit).await {
            Ok(mut one) => one.remove(0),
            Err(lost) if r.filter.is_none() => Rendered {
                filter: None,
                body: failed(lost),
            },
            Err(lost) if r.body.is_none() => Rendered {
                filter: failed(lost),
                body: None,
            },
            Err(_) => {
                let alone = Request { body: None, ..r };
                let filter = match self.batch(slot, &[alone], limit).await {
                    Ok(mut one) => one.remove(0).filter,
                    Err(lost) => {
                        return Rendered {
                            filter: failed(lost),
                            body: None,
                        };
                    }
                };
                let kept = matches!(&filter, Some(Outcome::Values(v)) if super::keeps(&v.iter().map(|r| r.get()).collect::<Vec<_>>()));
                let body = match kept {
                    false => None,
                    true => {
                        let alone = Request { filter: None, ..r };
                        match self.batch(slot, &[alone], limit).await {
                            Ok(mut one) => one.remove(0).body,
                            Err(lost) => failed(lost),
                        }
                    }
                };
                Rendered { filter, body }
            }
        }
    }

    /// One batch on the worker (started if needed); a lost worker is killed and forgotten, and
    /// what it printed on stderr tells which limit it hit.
    async fn batch(
        &self,
        slot: &mut Option<Worker>,
        requests: &[Request<'_>],
        deadline: Duration,
    ) -> Result<Vec<Rendered>, Lost> {
        if slot.is_none() {
            *slot = Some(
                Worker::spawn(&self.exe, self.limits)
                    .map_err(|e| Lost::Died(format!("cannot start: {e}")))?,
            );
        }
        let Some(worker) = slot.as_mut() else {
            return Err(Lost::Died("not running".to_owned()));
        };
        let max_answer = self.max_answer(requests.len());
        let exchange = worker.exchange(requests, max_answer);
        let lost = match tokio::time::timeout(deadline, exchange).await {
            Ok(Ok(results)) => return Ok(self.count_outputs(results)),
            Ok(Err(e)) => e,
            Err(_) => Lost::TimedOut(self.limits.timeout),
        };
        let lost = match slot.take() {
            Some(w) => w.bury(lost, self.limits.memory).await,
            None => lost,
        };
        metrics::counter!(m::JQ_LIMITS, "destination" => self.label.clone(), "limit" => lost.limit())
            .increment(1);
        Err(lost)
    }

    /// Counts the outputs the worker refused as too large.
    fn count_outputs(&self, results: Vec<(Rendered, usize)>) -> Vec<Rendered> {
        let over: usize = results.iter().map(|(_, n)| n).sum();
        if over > 0 {
            metrics::counter!(m::JQ_LIMITS, "destination" => self.label.clone(), "limit" => "output")
                .increment(over as u64);
        }
        results.into_iter().map(|(r, _)| r).collect()
    }

    /// The longest answer line a batch of `n` may send back: every output at its cap.
    fn max_answer(&self, n: usize) -> u64 {
        (self.limits.max_output + 1024)
            .saturating_mul(4)
            .saturating_mul(n as u64)
            .saturating_add(64 * 1024)
    }
}

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

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::{Mutex, oneshot};

use super::Limits;
use crate::telemetry as m;

/// One event to render for one destination, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `filter` program text, if any.
    pub filter: Option<&'a str>,
    /// `body` program text, if any.
    pub body: Option<&'a str>,
    /// `$secret`.
    pub secret: &'a str,
    /// The event, as JSON text (sent to the worker as is: no parse and re-encode per event).
    pub input: &'a RawValue,
}

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

/// What one program produced.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The outputs as JSON text (at most two are collected).
    Values(Vec<Box<RawValue>>),
    /// Why it failed: the jq error, or the limit it hit.
    Failed(String),
}

/// The outcomes of one [`Request`]: the filter's (when there is one) and the body's (when there
/// is one and the filter kept the event).
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The filter's outcome.
    pub filter: Option<Outcome>,
    /// The body's outcome.
    pub body: Option<Outcome>,
}

impl Rendered {
    /// Both programs failed for `why` (a job that could not be sent at all).
    fn failed(why: &str) -> Rendered {
        Rendered {
            filter: Some(Outcome::Failed(why.to_owned())),
            body: Some(Outcome::Failed(why.to_owned())),
        }
    }
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: Option<ChildStderr>,
    /// Programs this worker has compiled, by (code, secret).
    defined: HashMap<(String, String), usize>,
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

/// Why the worker could not answer; each names the limit it hit.
enum Lost {
    TimedOut(Duration),
    Memory(u64),
    Stack,
    Died(String),
}

impl Lost {
    fn reason(&self) -> String {
        match self {
            Lost::TimedOut(t) => format!(
                "the jq program ran longer than its time limit ({} s, jq_timeout) and was stopped",
                t.as_secs_f64()
            ),
            Lost::Memory(bytes) => format!(
                "the jq program exceeded its memory limit ({} MiB, jq_memory) and was stopped",
                bytes >> 20
            ),
            Lost::Stack => {
                "the jq program overflowed its evaluator's stack (deep recursion?)".to_owned()
            }
            Lost::Died(why) => format!("the jq program crashed its evaluator ({why})"),
        }
    }

    fn limit(&self) -> &'static str {
        match self {
            Lost::TimedOut(_) => "time",
            Lost::Memory(_) => "memory",
            Lost::Stack | Lost::Died(_) => "crash",
        }
    }
}

/// One event of a batch line, borrowing the event (no copy before encoding).
#[derive(Serialize)]
struct RenderLine<'a> {
    filter: Option<usize>,
    body: Option<usize>,
    input: &'a RawValue,
}

#[derive(Serialize)]
struct BatchLine<'a> {
    batch: Vec<RenderLine<'a>>,
}

#[derive(Deserialize)]
struct BatchAnswer {
    results: Vec<ResultLine>,
}

#[derive(Deserialize)]
struct ResultLine {
    filter: Option<ProgramAnswer>,
    body: Option<ProgramAnswer>,
}

#[derive(Deserialize)]
struct ProgramAnswer {
    ok: Option<Vec<Box<RawValue>>>,
    err: Option<String>,
    /// Set when the error is a limit (`output`).
    limit: Option<String>,
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
        let (tx, mut rx) = oneshot::channel();
        if let Ok(mut q) = self.queue.lock() {
            q.push((job, tx));
        }
        loop {
            let mut guard = tokio::select! {
                biased;
                done = &mut rx => {
                    return done.unwrap_or_else(|_| Rendered::failed("the jq worker gave no answer"));
                }
                guard = self.worker.lock() => guard,
            };
            let queued = self
                .queue
                .lock()
                .map(|mut q| std::mem::take(&mut *q))
                .unwrap_or_default();
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
                self.spawn()
                    .map_err(|e| Lost::Died(format!("cannot start: {e}")))?,
            );
        }
        let Some(worker) = slot.as_mut() else {
            return Err(Lost::Died("not running".to_owned()));
        };
        let max_answer = self.max_answer(requests.len());
        let exchange = Self::exchange(worker, requests, max_answer);
        let lost = match tokio::time::timeout(deadline, exchange).await {
            Ok(Ok(results)) => return Ok(self.count_outputs(results)),
            Ok(Err(e)) => e,
            Err(_) => Lost::TimedOut(self.limits.timeout),
        };
        let lost = match slot.take() {
            Some(w) => self.bury(w, lost).await,
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

    /// Kills a lost worker and refines why it was lost from what it printed.
    async fn bury(&self, mut w: Worker, lost: Lost) -> Lost {
        let _ = w.child.start_kill();
        let _ = w.child.wait().await;
        let Some(stderr) = w.stderr.take() else {
            return lost;
        };
        let mut said = Vec::new();
        let mut bounded = stderr.take(4096);
        let read = bounded.read_to_end(&mut said);
        let _ = tokio::time::timeout(Duration::from_millis(200), read).await;
        let said = String::from_utf8_lossy(&said);
        if said.contains("memory allocation of") {
            Lost::Memory(self.limits.memory)
        } else if said.contains("overflowed its stack") {
            Lost::Stack
        } else {
            lost
        }
    }

    fn spawn(&self) -> std::io::Result<Worker> {
        let mut child = Command::new(&self.exe)
            .arg("jq-worker")
            .arg("--memory")
            .arg(self.limits.memory.to_string())
            .arg("--max-output")
            .arg(self.limits.max_output.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let stderr = child.stderr.take();
        Ok(Worker {
            child,
            stdin,
            // Answers of a whole batch are large: read them in big chunks.
            stdout: BufReader::with_capacity(1 << 18, stdout),
            stderr,
            defined: HashMap::new(),
        })
    }

    /// The worker's id for a program, compiling it there first if needed.
    async fn define(
        worker: &mut Worker,
        code: &str,
        secret: &str,
    ) -> Result<Result<usize, String>, Lost> {
        let key = (code.to_owned(), secret.to_owned());
        if let Some(id) = worker.defined.get(&key) {
            return Ok(Ok(*id));
        }
        let id = worker.defined.len();
        let request = json!({"define": id, "code": code, "secret": secret}).to_string();
        let answer = Self::send(worker, request, 64 * 1024).await?;
        let answer: Value =
            serde_json::from_str(&answer).map_err(|e| Lost::Died(format!("bad answer: {e}")))?;
        if let Value::String(e) = &answer["err"] {
            return Ok(Err(e.clone()));
        }
        worker.defined.insert(key, id);
        Ok(Ok(id))
    }

    /// Sends one batch; each result comes with how many of its outputs were over the cap.
    async fn exchange(
        worker: &mut Worker,
        requests: &[Request<'_>],
        max_answer: u64,
    ) -> Result<Vec<(Rendered, usize)>, Lost> {
        let mut batch = Vec::with_capacity(requests.len());
        for r in requests {
            let mut ids = [None, None];
            for (slot, code) in ids.iter_mut().zip([r.filter, r.body]) {
                if let Some(code) = code {
                    match Self::define(worker, code, r.secret).await? {
                        Ok(id) => *slot = Some(id),
                        // Validated at load; a compile failure here fails every render.
                        Err(e) => return Err(Lost::Died(format!("compile failed: {e}"))),
                    }
                }
            }
            batch.push(RenderLine {
                filter: ids[0],
                body: ids[1],
                input: r.input,
            });
        }
        let line = serde_json::to_string(&BatchLine { batch })
            .map_err(|e| Lost::Died(format!("cannot encode the batch: {e}")))?;
        let answer = Self::send(worker, line, max_answer).await?;
        let answer: BatchAnswer =
            serde_json::from_str(&answer).map_err(|e| Lost::Died(format!("bad answer: {e}")))?;
        if answer.results.len() != requests.len() {
            return Err(Lost::Died("answer without results".to_owned()));
        }
        Ok(answer.results.into_iter().map(rendered).collect())
    }

    /// Writes one request line and reads one answer line of at most `max` bytes.
    async fn send(worker: &mut Worker, mut line: String, max: u64) -> Result<String, Lost> {
        line.push('\n');
        let died = |e: std::io::Error| Lost::Died(e.to_string());
        worker
            .stdin
            .write_all(line.as_bytes())
            .await
            .map_err(died)?;
        worker.stdin.flush().await.map_err(died)?;
        let mut answer = Vec::new();
        let mut bounded = (&mut worker.stdout).take(max);
        match bounded.read_until(b'\n', &mut answer).await {
            Ok(0) => Err(Lost::Died("it exited".to_owned())),
            Ok(_) if answer.last() != Some(&b'\n') => {
                Err(Lost::Died(format!("its answer is over {max} bytes")))
            }
            Ok(_) => String::from_utf8(answer).map_err(|e| Lost::Died(e.to_string())),
            Err(e) => Err(died(e)),
        }
    }
}

/// A result line as outcomes, with how many of its programs hit the output cap.
fn rendered(r: ResultLine) -> (Rendered, usize) {
    let mut over = 0;
    let mut outcome = |a: ProgramAnswer| {
        over += usize::from(a.limit.is_some());
        match (a.ok, a.err) {
            (Some(out), _) => Outcome::Values(out),
            (None, Some(e)) => Outcome::Failed(e),
            (None, None) => Outcome::Failed("the jq worker gave no answer".to_owned()),
        }
    };
    let filter = r.filter.map(&mut outcome);
    let body = r.body.map(&mut outcome);
    (Rendered { filter, body }, over)
}

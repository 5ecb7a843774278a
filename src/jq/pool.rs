//! The daemon's side of the jq worker: one child process (`pollhook jq-worker`), started on
//! first use, fed whole batches (every event × destination of a poll's commit in one round
//! trip), killed when a batch outlives its deadline and restarted when it dies. A batch that
//! fails that way is rendered again one event at a time, each with [`JQ_TIMEOUT`], so only the
//! event whose program misbehaves is dead-lettered. Programs are sent to a worker the first
//! time it needs them.
//!
//! Design notes: batches are serialised by one async mutex, so a runaway program delays other
//! renders by at most its timeout; nothing a program does can panic or block the daemon.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;

use super::JQ_TIMEOUT;

/// One event to render for one destination.
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

/// What one program produced.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The outputs as JSON text (at most two are collected).
    Values(Vec<Box<RawValue>>),
    /// Why it failed: the jq error, a timeout, or a crash of the evaluator.
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

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Programs this worker has compiled, by (code, secret).
    defined: HashMap<(String, String), usize>,
}

/// The jq worker and how to start it.
pub struct JqPool {
    exe: PathBuf,
    worker: Mutex<Option<Worker>>,
}

impl std::fmt::Debug for JqPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JqPool({})", self.exe.display())
    }
}

/// Why the worker could not answer.
enum Lost {
    TimedOut,
    Died(String),
}

impl Lost {
    fn reason(&self) -> String {
        match self {
            Lost::TimedOut => format!(
                "the jq program ran longer than {} s and was stopped",
                JQ_TIMEOUT.as_secs_f64()
            ),
            Lost::Died(why) => {
                format!("the jq program crashed its evaluator ({why}; deep recursion?)")
            }
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
}

impl From<ProgramAnswer> for Outcome {
    fn from(a: ProgramAnswer) -> Outcome {
        match (a.ok, a.err) {
            (Some(out), _) => Outcome::Values(out),
            (None, Some(e)) => Outcome::Failed(e),
            (None, None) => Outcome::Failed("the jq worker gave no answer".to_owned()),
        }
    }
}

impl JqPool {
    /// A pool whose worker is `exe jq-worker` (the pollhook binary).
    pub fn new(exe: PathBuf) -> JqPool {
        JqPool {
            exe,
            worker: Mutex::new(None),
        }
    }

    /// Renders every request, in one round trip when all goes well.
    pub async fn render(&self, requests: &[Request<'_>]) -> Vec<Rendered> {
        if requests.is_empty() {
            return Vec::new();
        }
        let mut guard = self.worker.lock().await;
        // Generous for a healthy batch; a runaway program is then found one event at a time.
        let deadline = JQ_TIMEOUT + Duration::from_millis(10) * requests.len() as u32;
        if let Ok(results) = self.batch(&mut guard, requests, deadline).await {
            return results;
        }
        let mut out = Vec::with_capacity(requests.len());
        for r in requests {
            out.push(self.single(&mut guard, *r).await);
        }
        out
    }

    /// One request alone, each program on its own when they fail together, so that the
    /// failure is charged to the program that caused it.
    async fn single(&self, slot: &mut Option<Worker>, r: Request<'_>) -> Rendered {
        let failed = |lost: Lost| Some(Outcome::Failed(lost.reason()));
        match self.batch(slot, &[r], JQ_TIMEOUT).await {
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
                let filter = match self.batch(slot, &[alone], JQ_TIMEOUT).await {
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
                        match self.batch(slot, &[alone], JQ_TIMEOUT).await {
                            Ok(mut one) => one.remove(0).body,
                            Err(lost) => failed(lost),
                        }
                    }
                };
                Rendered { filter, body }
            }
        }
    }

    /// One batch on the worker (started if needed); a lost worker is killed and forgotten.
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
        let lost = match tokio::time::timeout(deadline, Self::exchange(worker, requests)).await {
            Ok(Ok(results)) => return Ok(results),
            Ok(Err(e)) => e,
            Err(_) => Lost::TimedOut,
        };
        if let Some(mut w) = slot.take() {
            let _ = w.child.start_kill();
            let _ = w.child.wait().await;
        }
        Err(lost)
    }

    fn spawn(&self) -> std::io::Result<Worker> {
        let mut child = Command::new(&self.exe)
            .arg("jq-worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
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
        Ok(Worker {
            child,
            stdin,
            // Answers of a whole batch are large: read them in big chunks.
            stdout: BufReader::with_capacity(1 << 18, stdout),
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
        let answer = Self::request(
            worker,
            &json!({"define": id, "code": code, "secret": secret}),
        )
        .await?;
        if let Value::String(e) = &answer["err"] {
            return Ok(Err(e.clone()));
        }
        worker.defined.insert(key, id);
        Ok(Ok(id))
    }

    async fn exchange(
        worker: &mut Worker,
        requests: &[Request<'_>],
    ) -> Result<Vec<Rendered>, Lost> {
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
        let answer = Self::send(worker, line).await?;
        let answer: BatchAnswer =
            serde_json::from_str(&answer).map_err(|e| Lost::Died(format!("bad answer: {e}")))?;
        if answer.results.len() != requests.len() {
            return Err(Lost::Died("answer without results".to_owned()));
        }
        Ok(answer
            .results
            .into_iter()
            .map(|r| Rendered {
                filter: r.filter.map(Outcome::from),
                body: r.body.map(Outcome::from),
            })
            .collect())
    }

    async fn request(worker: &mut Worker, request: &Value) -> Result<Value, Lost> {
        let answer = Self::send(worker, request.to_string()).await?;
        serde_json::from_str(&answer).map_err(|e| Lost::Died(format!("bad answer: {e}")))
    }

    /// Writes one request line and reads one answer line.
    async fn send(worker: &mut Worker, mut line: String) -> Result<String, Lost> {
        line.push('\n');
        worker
            .stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| Lost::Died(e.to_string()))?;
        worker
            .stdin
            .flush()
            .await
            .map_err(|e| Lost::Died(e.to_string()))?;
        let mut answer = String::new();
        match worker.stdout.read_line(&mut answer).await {
            Ok(0) => Err(Lost::Died("it exited".to_owned())),
            Ok(_) => Ok(answer),
            Err(e) => Err(Lost::Died(e.to_string())),
        }
    }
}

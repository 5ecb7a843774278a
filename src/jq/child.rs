//! One jq worker process as the daemon sees it: how it is started under its limits, the line
//! protocol it speaks (`worker.rs` is the other end), and how a lost one is buried and why it
//! was lost told from what it printed on stderr (an allocation failure under `RLIMIT_AS`, a
//! stack overflow, anything else).

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use super::Limits;

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
    pub(super) fn failed(why: &str) -> Rendered {
        Rendered {
            filter: Some(Outcome::Failed(why.to_owned())),
            body: Some(Outcome::Failed(why.to_owned())),
        }
    }
}

/// A running `pollhook jq-worker` and the programs it has compiled.
pub(super) struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: Option<ChildStderr>,
    /// Programs this worker has compiled, by (code, secret).
    defined: HashMap<(String, String), usize>,
}

/// Why the worker could not answer; each names the limit it hit.
pub(super) enum Lost {
    TimedOut(Duration),
    Memory(u64),
    Stack,
    Died(String),
}

impl Lost {
    pub(super) fn reason(&self) -> String {
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

    pub(super) fn limit(&self) -> &'static str {
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

impl Worker {
    /// Kills a lost worker and refines why it was lost from what it printed.
    pub(super) async fn bury(mut self, lost: Lost, memory: u64) -> Lost {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        let Some(stderr) = self.stderr.take() else {
            return lost;
        };
        let mut said = Vec::new();
        let mut bounded = stderr.take(4096);
        let read = bounded.read_to_end(&mut said);
        let _ = tokio::time::timeout(Duration::from_millis(200), read).await;
        let said = String::from_utf8_lossy(&said);
        if said.contains("memory allocation of") {
            Lost::Memory(memory)
        } else if said.contains("overflowed its stack") {
            Lost::Stack
        } else {
            lost
        }
    }

    /// Starts `exe jq-worker` under `limits`.
    pub(super) fn spawn(exe: &Path, limits: Limits) -> std::io::Result<Worker> {
        let mut child = Command::new(exe)
            .arg("jq-worker")
            .arg("--memory")
            .arg(limits.memory.to_string())
            .arg("--max-output")
            .arg(limits.max_output.to_string())
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
    async fn define(&mut self, code: &str, secret: &str) -> Result<Result<usize, String>, Lost> {
        let key = (code.to_owned(), secret.to_owned());
        if let Some(id) = self.defined.get(&key) {
            return Ok(Ok(*id));
        }
        let id = self.defined.len();
        let request = json!({"define": id, "code": code, "secret": secret}).to_string();
        let answer = self.send(request, 64 * 1024).await?;
        let answer: Value =
            serde_json::from_str(&answer).map_err(|e| Lost::Died(format!("bad answer: {e}")))?;
        if let Value::String(e) = &answer["err"] {
            return Ok(Err(e.clone()));
        }
        self.defined.insert(key, id);
        Ok(Ok(id))
    }

    /// Sends one batch; each result comes with how many of its outputs were over the cap.
    pub(super) async fn exchange(
        &mut self,
        requests: &[Request<'_>],
        max_answer: u64,
    ) -> Result<Vec<(Rendered, usize)>, Lost> {
        let mut batch = Vec::with_capacity(requests.len());
        for r in requests {
            let mut ids = [None, None];
            for (slot, code) in ids.iter_mut().zip([r.filter, r.body]) {
                if let Some(code) = code {
                    match self.define(code, r.secret).await? {
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
        let answer = self.send(line, max_answer).await?;
        let answer: BatchAnswer =
            serde_json::from_str(&answer).map_err(|e| Lost::Died(format!("bad answer: {e}")))?;
        if answer.results.len() != requests.len() {
            return Err(Lost::Died("answer without results".to_owned()));
        }
        Ok(answer.results.into_iter().map(rendered).collect())
    }

    /// Writes one request line and reads one answer line of at most `max` bytes.
    async fn send(&mut self, mut line: String, max: u64) -> Result<String, Lost> {
        line.push('\n');
        let died = |e: std::io::Error| Lost::Died(e.to_string());
        self.stdin.write_all(line.as_bytes()).await.map_err(died)?;
        self.stdin.flush().await.map_err(died)?;
        let mut answer = Vec::new();
        let mut bounded = (&mut self.stdout).take(max);
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

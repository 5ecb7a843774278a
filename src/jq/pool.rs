//! The daemon's side of the jq worker: one child process (`pollhook jq-worker`), started on
//! first use, fed one evaluation at a time, killed when an evaluation outlives [`JQ_TIMEOUT`] and
//! restarted when it dies. Programs are sent to a worker the first time it needs them.
//!
//! Design notes: evaluations are serialised by one async mutex, so a runaway program delays
//! other renders by at most the timeout; nothing a program does can panic or block the daemon.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;

use super::JQ_TIMEOUT;

/// One evaluation: a program, the secret it sees as `$secret`, and its input.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    /// Program text (compiled once per worker).
    pub code: &'a str,
    /// `$secret`.
    pub secret: &'a str,
    /// The event.
    pub input: &'a Value,
}

/// What an evaluation produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The outputs (at most two are collected).
    Values(Vec<Value>),
    /// Why it failed: the jq error, a timeout, or a crash of the evaluator.
    Failed(String),
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

impl JqPool {
    /// A pool whose worker is `exe jq-worker` (the pollhook binary).
    pub fn new(exe: PathBuf) -> JqPool {
        JqPool {
            exe,
            worker: Mutex::new(None),
        }
    }

    /// Evaluates one job; never fails except through [`Outcome::Failed`].
    pub async fn run(&self, job: Job<'_>) -> Outcome {
        let mut guard = self.worker.lock().await;
        if guard.is_none() {
            match self.spawn() {
                Ok(w) => *guard = Some(w),
                Err(e) => return Outcome::Failed(format!("cannot start the jq worker: {e}")),
            }
        }
        let Some(worker) = guard.as_mut() else {
            return Outcome::Failed("the jq worker is not running".to_owned());
        };
        match Self::exchange(worker, job).await {
            Ok(outcome) => outcome,
            Err(lost) => {
                if let Some(mut w) = guard.take() {
                    let _ = w.child.start_kill();
                    let _ = w.child.wait().await;
                }
                Outcome::Failed(match lost {
                    Lost::TimedOut => format!(
                        "the jq program ran longer than {} s and was stopped",
                        super::JQ_TIMEOUT.as_secs_f64()
                    ),
                    Lost::Died(why) => {
                        format!("the jq program crashed its evaluator ({why}; deep recursion?)")
                    }
                })
            }
        }
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
            stdout: BufReader::new(stdout),
            defined: HashMap::new(),
        })
    }

    async fn exchange(worker: &mut Worker, job: Job<'_>) -> Result<Outcome, Lost> {
        let key = (job.code.to_owned(), job.secret.to_owned());
        let id = match worker.defined.get(&key) {
            Some(id) => *id,
            None => {
                let id = worker.defined.len();
                let define = json!({"define": id, "code": job.code, "secret": job.secret});
                if let Outcome::Failed(e) = Self::request(worker, &define).await? {
                    return Ok(Outcome::Failed(e));
                }
                worker.defined.insert(key, id);
                id
            }
        };
        Self::request(worker, &json!({"run": id, "input": job.input})).await
    }

    async fn request(worker: &mut Worker, request: &Value) -> Result<Outcome, Lost> {
        let mut line = request.to_string();
        line.push('\n');
        let io = async {
            worker.stdin.write_all(line.as_bytes()).await?;
            worker.stdin.flush().await?;
            let mut answer = String::new();
            match worker.stdout.read_line(&mut answer).await? {
                0 => Err(std::io::Error::other("it exited")),
                _ => Ok(answer),
            }
        };
        let answer = match tokio::time::timeout(JQ_TIMEOUT, io).await {
            Err(_) => return Err(Lost::TimedOut),
            Ok(Err(e)) => return Err(Lost::Died(e.to_string())),
            Ok(Ok(a)) => a,
        };
        let answer: Value =
            serde_json::from_str(&answer).map_err(|e| Lost::Died(format!("bad answer: {e}")))?;
        Ok(match (&answer["ok"], &answer["err"]) {
            (Value::Array(out), _) => Outcome::Values(out.clone()),
            (_, Value::String(e)) => Outcome::Failed(e.clone()),
            _ => Outcome::Failed("the jq worker gave no answer".to_owned()),
        })
    }
}

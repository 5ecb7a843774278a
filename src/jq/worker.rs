//! `pollhook jq-worker`: the child process that evaluates jq programs for the daemon. It reads
//! one JSON request per line on stdin and writes one JSON answer per line on stdout:
//!
//! - `{"define": N, "code": "...", "secret": "..."}` compiles program N (answer `{"ok": []}`
//!   or `{"err": "..."}`);
//! - `{"batch": [{"filter": N|null, "body": M|null, "input": {...}}, …]}` renders events: for
//!   each, the filter's outputs (at most two), then — only when the filter kept the event — the
//!   body's; the answer is `{"results": [{"filter": R|null, "body": R|null}, …]}` with
//!   `R = {"ok": [outputs…]} | {"err": "..."}`.
//!
//! The process limits its own address space (`--memory`, `RLIMIT_AS`) before it reads anything,
//! and answers an output longer than `--max-output` bytes with an error naming the limit
//! (`"limit": "output"`). A program that never ends, overflows the stack or runs out of memory
//! takes this process with it (the last two print why on stderr, which the daemon reads); the
//! daemon kills or loses it, renders that batch one event at a time to find the culprit,
//! dead-letters it, and starts a new worker.

use std::io::{BufRead, Write};

use serde::Deserialize;
use serde_json::json;

use jaq_json::Val;

use super::{Filter, compile, run, write_json};

#[derive(Deserialize)]
struct Render<'a> {
    filter: Option<usize>,
    body: Option<usize>,
    /// Borrowed as text, then parsed into jaq's value type (a bad event fails alone).
    #[serde(borrow)]
    input: &'a serde_json::value::RawValue,
}

/// One request: `define` with `code` and `secret`, or `batch`. A plain struct rather than an
/// untagged enum, which would buffer the whole (large) batch before parsing it.
#[derive(Deserialize)]
struct Request<'a> {
    define: Option<usize>,
    code: Option<String>,
    secret: Option<String>,
    #[serde(borrow)]
    batch: Option<Vec<Render<'a>>>,
}

type Programs = Vec<Option<(Filter, String)>>;

/// The limits a worker runs under (`pollhook jq-worker --memory N --max-output M`).
#[derive(Debug, Clone, Copy)]
pub struct WorkerLimits {
    /// Address-space limit, bytes; `None`: inherited.
    pub memory: Option<u64>,
    /// Largest output of one program, bytes of JSON text.
    pub max_output: u64,
}

fn eval(programs: &Programs, id: usize, input: &Val) -> Result<Vec<Val>, String> {
    match programs.get(id).and_then(Option::as_ref) {
        Some((f, secret)) => run(f, input.clone(), secret, 2),
        None => Err(format!("program {id} is not defined")),
    }
}

/// Appends `R` (`{"ok": [outputs…]}` or `{"err": "..."}`), the outputs written as JSON text
/// straight from jaq's values; outputs longer than `max` make it an error naming the limit.
fn answer(out: &mut Vec<u8>, r: &Result<Vec<Val>, String>, max: u64) {
    let start = out.len();
    match r {
        Ok(values) => {
            out.extend_from_slice(b"{\"ok\":[");
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let at = out.len();
                write_json(out, v);
                if (out.len() - at) as u64 > max {
                    out.truncate(start);
                    let e = format!(
                        "the program's output is over {max} bytes (the destination's max_body)"
                    );
                    let _ = serde_json::to_writer(&mut *out, &json!({"err": e, "limit": "output"}));
                    return;
                }
            }
            out.extend_from_slice(b"]}");
        }
        Err(e) => {
            out.extend_from_slice(b"{\"err\":");
            let _ = serde_json::to_writer(&mut *out, e);
            out.push(b'}');
        }
    }
}

/// jq's truthiness of a filter's outputs: exactly one, neither `false` nor `null`.
fn kept(outputs: &[Val]) -> bool {
    matches!(outputs, [v] if !matches!(v, Val::Null | Val::Bool(false)))
}

fn render(out: &mut Vec<u8>, programs: &Programs, r: &Render, max: u64) {
    // serde_json into jaq's value measured ~10% faster here than jaq's own reader.
    let input = match serde_json::from_str::<Val>(r.input.get()) {
        Ok(v) => v,
        Err(e) => {
            let failed = Err(format!("the event is not JSON: {e}"));
            out.extend_from_slice(b"{\"filter\":null,\"body\":");
            answer(out, &failed, max);
            out.push(b'}');
            return;
        }
    };
    let filter = r.filter.map(|id| eval(programs, id, &input));
    let keep = filter
        .as_ref()
        .is_none_or(|f| f.as_ref().is_ok_and(|v| kept(v)));
    let body = r.body.filter(|_| keep).map(|id| eval(programs, id, &input));
    out.extend_from_slice(b"{\"filter\":");
    match &filter {
        Some(f) => answer(out, f, max),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"body\":");
    match &body {
        Some(b) => answer(out, b, max),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

/// Limits this process's address space to `bytes` (the soft and the hard limit: a program
/// cannot raise it again).
fn limit_memory(bytes: u64) -> std::io::Result<()> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let limit = Rlimit {
        current: Some(bytes),
        maximum: Some(bytes),
    };
    setrlimit(Resource::As, limit).map_err(std::io::Error::from)
}

/// Serves requests from stdin until it closes.
pub fn serve(limits: WorkerLimits) -> std::io::Result<()> {
    if let Some(bytes) = limits.memory {
        limit_memory(bytes)?;
    }
    let mut programs: Programs = Vec::new();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    let mut out = Vec::new();
    for line in stdin.lock().lines() {
        out.clear();
        let plain = |out: &mut Vec<u8>, v: serde_json::Value| {
            let _ = serde_json::to_writer(out, &v);
        };
        let line = line?;
        match serde_json::from_str::<Request>(&line) {
            Ok(Request {
                define: Some(define),
                code: Some(code),
                secret,
                ..
            }) => match compile(&code) {
                Ok(f) => {
                    if programs.len() <= define {
                        programs.resize_with(define + 1, || None);
                    }
                    programs[define] = Some((f, secret.unwrap_or_default()));
                    plain(&mut out, json!({ "ok": [] }));
                }
                Err(e) => plain(&mut out, json!({ "err": e.to_string() })),
            },
            Ok(Request {
                batch: Some(batch), ..
            }) => {
                out.extend_from_slice(b"{\"results\":[");
                for (i, r) in batch.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    render(&mut out, &programs, r, limits.max_output);
                }
                out.extend_from_slice(b"]}");
            }
            Ok(_) => plain(
                &mut out,
                json!({ "err": "bad request: neither define nor batch" }),
            ),
            Err(e) => plain(&mut out, json!({ "err": format!("bad request: {e}") })),
        };
        out.push(b'\n');
        stdout.write_all(&out)?;
        stdout.flush()?;
    }
    Ok(())
}

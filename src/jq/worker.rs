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
//! A program that never ends or overflows the stack takes this process with it; the daemon kills
//! or loses it, renders that batch one event at a time to find the culprit, dead-letters it,
//! and starts a new worker.

use std::io::{BufRead, Write};

use serde::Deserialize;
use serde_json::{Value, json};

use jaq_json::Val;

use super::{Filter, compile, eval_val, keeps};

#[derive(Deserialize)]
struct Render {
    filter: Option<usize>,
    body: Option<usize>,
    /// Parsed straight into jaq's value type: no intermediate `serde_json::Value`.
    input: Val,
}

/// One request: `define` with `code` and `secret`, or `batch`. A plain struct rather than an
/// untagged enum, which would buffer the whole (large) batch before parsing it.
#[derive(Deserialize)]
struct Request {
    define: Option<usize>,
    code: Option<String>,
    secret: Option<String>,
    batch: Option<Vec<Render>>,
}

type Programs = Vec<Option<(Filter, String)>>;

fn run(programs: &Programs, id: usize, input: &Val) -> Result<Vec<Value>, String> {
    match programs.get(id).and_then(Option::as_ref) {
        Some((f, secret)) => eval_val(f, input.clone(), secret, 2),
        None => Err(format!("program {id} is not defined")),
    }
}

fn answer(r: &Result<Vec<Value>, String>) -> Value {
    match r {
        Ok(out) => json!({ "ok": out }),
        Err(e) => json!({ "err": e }),
    }
}

fn render(programs: &Programs, r: &Render) -> Value {
    let filter = r.filter.map(|id| run(programs, id, &r.input));
    let kept = filter
        .as_ref()
        .is_none_or(|f| f.as_ref().is_ok_and(|v| keeps(v)));
    let body = r
        .body
        .filter(|_| kept)
        .map(|id| run(programs, id, &r.input));
    json!({
        "filter": filter.as_ref().map(answer),
        "body": body.as_ref().map(answer),
    })
}

/// Serves requests from stdin until it closes.
pub fn serve() -> std::io::Result<()> {
    let mut programs: Programs = Vec::new();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let answer = match serde_json::from_str::<Request>(&line?) {
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
                    json!({ "ok": [] })
                }
                Err(e) => json!({ "err": e.to_string() }),
            },
            Ok(Request {
                batch: Some(batch), ..
            }) => {
                let results: Vec<Value> = batch.iter().map(|r| render(&programs, r)).collect();
                json!({ "results": results })
            }
            Ok(_) => json!({ "err": "bad request: neither define nor batch" }),
            Err(e) => json!({ "err": format!("bad request: {e}") }),
        };
        serde_json::to_writer(&mut stdout, &answer)?;
        stdout.write_all(b"\n")?;
        stdout.flush()?;
    }
    Ok(())
}

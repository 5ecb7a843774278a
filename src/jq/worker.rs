//! `pollhook jq-worker`: the child process that evaluates jq programs for the daemon. It reads
//! one JSON request per line on stdin and writes one JSON answer per line on stdout:
//!
//! - `{"define": N, "code": "...", "secret": "..."}` compiles program N (answer `{"ok": []}`
//!   or `{"err": "..."}`);
//! - `{"run": N, "input": {...}}` runs program N on the input (answer `{"ok": [outputs…]}`, at
//!   most two, or `{"err": "..."}`).
//!
//! A program that never ends or overflows the stack takes this process with it; the daemon kills
//! or loses it, dead-letters that one event, and starts a new worker.

use std::io::{BufRead, Write};

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Filter, compile, eval};

#[derive(Deserialize)]
#[serde(untagged)]
enum Request {
    Define {
        define: usize,
        code: String,
        secret: String,
    },
    Run {
        run: usize,
        input: Value,
    },
}

/// Serves requests from stdin until it closes.
pub fn serve() -> std::io::Result<()> {
    let mut programs: Vec<Option<(Filter, String)>> = Vec::new();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let answer = match serde_json::from_str::<Request>(&line?) {
            Ok(Request::Define {
                define,
                code,
                secret,
            }) => match compile(&code) {
                Ok(f) => {
                    if programs.len() <= define {
                        programs.resize_with(define + 1, || None);
                    }
                    programs[define] = Some((f, secret));
                    json!({ "ok": [] })
                }
                Err(e) => json!({ "err": e.to_string() }),
            },
            Ok(Request::Run { run, input }) => match programs.get(run).and_then(Option::as_ref) {
                Some((f, secret)) => match eval(f, &input, secret, 2) {
                    Ok(out) => json!({ "ok": out }),
                    Err(e) => json!({ "err": e }),
                },
                None => json!({ "err": format!("program {run} is not defined") }),
            },
            Err(e) => json!({ "err": format!("bad request: {e}") }),
        };
        serde_json::to_writer(&mut stdout, &answer)?;
        stdout.write_all(b"\n")?;
        stdout.flush()?;
    }
    Ok(())
}

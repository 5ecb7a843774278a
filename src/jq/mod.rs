//! jq programs of destinations (`body`, `filter`; design §3a), run by jaq, a Rust
//! implementation of jq. `compile` checks a program at config load; evaluation happens in a
//! separate worker process (`worker.rs`, `pollhook jq-worker`), driven by [`JqPool`].
//!
//! Design notes: jaq has no step budget or cancellation, a runaway program (`def f: f; f`)
//! never returns from the iterator, deep recursion (`def f: 1 + f; f`) overflows the stack,
//! which aborts a process, and `[range(1e9)]` allocates without bound. Running programs in a
//! child process with an address-space limit, killed after its time limit (and simply
//! restarted when it dies) is the only way to bound them without risking the daemon: the event
//! is dead-lettered with the reason and every other event flows. Each destination with programs
//! has its own worker ([`JqPool`]), so a runaway program only delays its own destination.

mod child;
mod pool;
pub mod worker;

use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data::JustLut};
use jaq_json::Val;
use serde_json::Value;

pub use pool::{Job, JqPool, Outcome, Rendered, Request};

/// What a destination's programs may use for one event (`jq_timeout`, `jq_memory`,
/// `max_body`; the defaults live with the config's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long the programs may run for one event before the worker is killed.
    pub timeout: std::time::Duration,
    /// The worker process's address-space limit, bytes (`RLIMIT_AS`).
    pub memory: u64,
    /// The largest output of a program, bytes of JSON text.
    pub max_output: u64,
}

/// A compiled program.
pub type Filter = jaq_core::Filter<JustLut<Val>>;

/// Natives a program may not use: `env` would hand it the daemon's environment (secrets), and
/// `input`/`inputs` would read the worker's protocol stream.
const DENIED: [&str; 3] = ["env", "input", "inputs"];

/// A syntax or name error, with the byte offset in the program when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// Byte offset in the program text.
    pub offset: Option<usize>,
    /// The jq message.
    pub message: String,
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.offset {
            Some(o) => write!(f, "jq error at character {}: {}", o + 1, self.message),
            None => write!(f, "jq error: {}", self.message),
        }
    }
}

/// Compiles `code` with the jq standard library and the global `$secret`.
pub fn compile(code: &str) -> Result<Filter, CompileError> {
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let funs = jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs())
        .filter(|(name, _, _)| !DENIED.contains(name));
    let arena = Arena::default();
    // The offset of a slice of `code`; slices into the prelude have none.
    let offset = |part: &str| {
        let (start, at) = (code.as_ptr() as usize, part.as_ptr() as usize);
        (at >= start && at <= start + code.len()).then(|| load::span(code, part).start)
    };
    let first = |errors: Vec<(Option<usize>, String)>| {
        let offset = errors.first().and_then(|e| e.0);
        let message = errors
            .into_iter()
            .map(|e| e.1)
            .collect::<Vec<_>>()
            .join("; ");
        CompileError { offset, message }
    };
    let modules = Loader::new(defs)
        .load(&arena, File { code, path: () })
        .map_err(|errs| {
            first(
                errs.into_iter()
                    .flat_map(|(_, e)| match e {
                        load::Error::Io(v) => v
                            .into_iter()
                            .map(|(p, m)| (None, format!("cannot load {p}: {m}")))
                            .collect::<Vec<_>>(),
                        load::Error::Lex(v) => v
                            .into_iter()
                            .map(|(exp, got)| (offset(got), format!("expected {}", exp.as_str())))
                            .collect(),
                        load::Error::Parse(v) => v
                            .into_iter()
                            .map(|(exp, got)| {
                                (
                                    offset(got),
                                    format!("expected {}, found {got:?}", exp.as_str()),
                                )
                            })
                            .collect(),
                    })
                    .collect(),
            )
        })?;
    Compiler::default()
        .with_funs(funs)
        .with_global_vars(["$secret"])
        .compile(modules)
        .map_err(|errs| {
            first(
                errs.into_iter()
                    .flat_map(|(_, v)| v)
                    .map(|(name, undef)| {
                        (offset(name), format!("undefined {} {name}", undef.as_str()))
                    })
                    .collect(),
            )
        })
}

/// Runs `filter` on `input` with `$secret`, returning at most `max` outputs (enough to tell
/// none, one and several apart) as JSON text, or the first run-time error.
pub fn eval(
    filter: &Filter,
    input: &Value,
    secret: &str,
    max: usize,
) -> Result<Vec<String>, String> {
    let input: Val = serde_json::from_value(input.clone()).map_err(|e| e.to_string())?;
    let outputs = run(filter, input, secret, max)?;
    Ok(outputs
        .iter()
        .map(|v| {
            let mut out = Vec::new();
            write_json(&mut out, v);
            String::from_utf8_lossy(&out).into_owned()
        })
        .collect())
}

/// [`eval`] on a value already in jaq's form, keeping the outputs in that form.
pub fn run(filter: &Filter, input: Val, secret: &str, max: usize) -> Result<Vec<Val>, String> {
    let ctx = Ctx::<JustLut<Val>>::new(&filter.lut, Vars::new([Val::from(secret.to_owned())]));
    filter
        .id
        .run((ctx, input))
        .take(max)
        .map(|r| {
            r.map_err(|exn| match exn.get_err() {
                Ok(err) => match err.into_val() {
                    Val::TStr(b) => String::from_utf8_lossy(&b).into_owned(),
                    v => v.to_string(),
                },
                // `halt` and `halt_error` end the program; never the process.
                Err(exn) => match exn.get_halt() {
                    Ok(code) => format!("the program halted ({code})"),
                    Err(_) => "internal jq error".to_owned(),
                },
            })
        })
        .collect()
}

/// Whether a filter's outputs (JSON text) keep the event: exactly one value, neither `false`
/// nor `null` (jq's truthiness).
pub fn keeps<S: AsRef<str>>(outputs: &[S]) -> bool {
    matches!(outputs, [v] if !matches!(v.as_ref(), "null" | "false"))
}

/// Appends `v` as compact JSON, always valid: jaq's own printer writes `NaN`, `Infinity` and
/// byte strings, which are not JSON. Non-finite numbers become `null` (as in jq), strings that
/// are not UTF-8 are decoded lossily, and non-string object keys are written as the text of the
/// key. Numbers keep their digits: integers and decimals as parsed, floats in shortest form
/// (the same text serde_json writes).
pub fn write_json(out: &mut Vec<u8>, v: &Val) {
    use jaq_json::Num;
    use std::io::Write;
    match v {
        Val::Null => out.extend_from_slice(b"null"),
        Val::Bool(true) => out.extend_from_slice(b"true"),
        Val::Bool(false) => out.extend_from_slice(b"false"),
        Val::Num(Num::Float(f)) if !f.is_finite() => out.extend_from_slice(b"null"),
        Val::Num(Num::Float(f)) => {
            let _ = serde_json::to_writer(&mut *out, f);
        }
        Val::Num(n) => {
            let _ = write!(out, "{n}");
        }
        Val::TStr(b) | Val::BStr(b) => write_str(out, b),
        Val::Arr(a) => write_array(out, a.iter()),
        Val::Obj(o) => {
            out.push(b'{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match k {
                    Val::TStr(b) | Val::BStr(b) => write_str(out, b),
                    other => write_str(out, other.to_string().as_bytes()),
                }
                out.push(b':');
                write_json(out, x);
            }
            out.push(b'}');
        }
    }
}

/// Appends the values as a compact JSON array (see [`write_json`]).
pub fn write_array<'a>(out: &mut Vec<u8>, values: impl Iterator<Item = &'a Val>) {
    out.push(b'[');
    for (i, x) in values.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json(out, x);
    }
    out.push(b']');
}

fn write_str(out: &mut Vec<u8>, bytes: &[u8]) {
    // Writing a str into a Vec cannot fail. (`from_utf8` first: it is much faster than the
    // lossy decoder on the common, valid case.)
    let _ = match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::to_writer(&mut *out, text),
        Err(_) => serde_json::to_writer(&mut *out, String::from_utf8_lossy(bytes).as_ref()),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compiles_runs_and_reports_errors() {
        let f = compile(r#"select(.type == "item.created") | .data + {sig: $secret}"#).unwrap();
        let out = eval(
            &f,
            &json!({"type": "item.created", "data": {"a": 1}}),
            "s3",
            2,
        )
        .unwrap();
        assert_eq!(out, vec![r#"{"a":1,"sig":"s3"}"#]);
        let e = compile(".data |").err().unwrap();
        assert_eq!(e.offset, Some(7), "{e}");
        assert!(e.to_string().contains("expected term"), "{e}");
        assert!(compile("$nope").err().unwrap().message.contains("$nope"));
        assert!(compile("env").is_err(), "env is denied");
        let boom = compile(r#"error("boom")"#).unwrap();
        assert_eq!(eval(&boom, &json!(null), "", 2), Err("boom".to_owned()));
        let halt = compile("halt_error").unwrap();
        assert!(
            eval(&halt, &json!("x"), "", 2)
                .unwrap_err()
                .contains("halted")
        );
        let many = compile("1, 2, 3").unwrap();
        assert_eq!(eval(&many, &json!(null), "", 2).unwrap().len(), 2);
    }

    #[test]
    fn big_numbers_keep_their_digits() {
        let f = compile(".id").unwrap();
        let out = eval(&f, &json!({"id": 12345678901234567890123u128}), "", 2).unwrap();
        assert_eq!(out[0], "12345678901234567890123");
    }

    /// jaq values that JSON cannot express are still written as valid JSON, and numbers come
    /// out as serde_json writes them.
    #[test]
    fn writes_valid_json_for_every_value() {
        let cases = [
            ("[nan, infinite, -infinite]", "[null,null,null]"),
            (r#""a\u0000\"\n" | tobytes"#, r#""a\u0000\"\n""#),
            (
                "{(1 | tostring): 1.5, b: 0.1, c: 1e300, d: -0.0}",
                r#"{"1":1.5,"b":0.1,"c":1e300,"d":-0.0}"#,
            ),
            (
                "[1.0, 100000000000000000000, 3.25]",
                "[1.0,100000000000000000000,3.25]",
            ),
        ];
        for (code, want) in cases {
            let out = eval(&compile(code).unwrap(), &json!(null), "", 2).unwrap();
            assert_eq!(out, vec![want.to_owned()], "{code}");
            serde_json::from_str::<Value>(&out[0]).unwrap();
        }
    }
}

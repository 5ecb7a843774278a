//! jq programs of destinations (`body`, `filter`; design §3a), run by jaq, a Rust
//! implementation of jq. `compile` checks a program at config load; evaluation happens in a
//! separate worker process (`worker.rs`, `pollhook jq-worker`), driven by [`JqPool`].
//!
//! Design notes: jaq has no step budget or cancellation, a runaway program (`def f: f; f`)
//! never returns from the iterator, and deep recursion (`def f: 1 + f; f`) overflows the stack,
//! which aborts a process. Running programs in a child process that is killed after
//! [`JQ_TIMEOUT`] (and simply restarted when it dies) is the only way to bound them without
//! risking the daemon: the event is dead-lettered with the reason and every other event flows.

mod pool;
pub mod worker;

use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data::JustLut};
use jaq_json::Val;
use serde_json::Value;

pub use pool::{JqPool, Outcome, Rendered, Request};

/// How long one evaluation may run before its worker is killed.
pub const JQ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

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
/// none, one and several apart), or the first run-time error.
pub fn eval(
    filter: &Filter,
    input: &Value,
    secret: &str,
    max: usize,
) -> Result<Vec<Value>, String> {
    let input: Val = serde_json::from_value(input.clone()).map_err(|e| e.to_string())?;
    eval_val(filter, input, secret, max)
}

/// [`eval`] on a value already in jaq's form.
pub fn eval_val(
    filter: &Filter,
    input: Val,
    secret: &str,
    max: usize,
) -> Result<Vec<Value>, String> {
    let ctx = Ctx::<JustLut<Val>>::new(&filter.lut, Vars::new([Val::from(secret.to_owned())]));
    filter
        .id
        .run((ctx, input))
        .take(max)
        .map(|r| match r {
            Ok(v) => Ok(to_json(&v)),
            Err(exn) => Err(match exn.get_err() {
                Ok(err) => match err.into_val() {
                    Val::TStr(b) => String::from_utf8_lossy(&b).into_owned(),
                    v => v.to_string(),
                },
                // `halt` and `halt_error` end the program; never the process.
                Err(exn) => match exn.get_halt() {
                    Ok(code) => format!("the program halted ({code})"),
                    Err(_) => "internal jq error".to_owned(),
                },
            }),
        })
        .collect()
}

/// Whether a filter's outputs keep the event: exactly one value, neither `false` nor `null`
/// (jq's truthiness).
pub fn keeps(outputs: &[Value]) -> bool {
    matches!(outputs, [v] if !matches!(v, Value::Null | Value::Bool(false)))
}

fn to_json(v: &Val) -> Value {
    use jaq_json::Num;
    match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(Num::Int(i)) => Value::from(*i as i64),
        Val::Num(Num::Float(f)) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        // Big integers and decimals keep their digits.
        Val::Num(n) => serde_json::from_str(&n.to_string()).unwrap_or(Value::Null),
        Val::TStr(b) | Val::BStr(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        Val::Arr(a) => Value::Array(a.iter().map(to_json).collect()),
        Val::Obj(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
    }
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
        assert_eq!(out, vec![json!({"a": 1, "sig": "s3"})]);
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
        assert_eq!(out[0].to_string(), "12345678901234567890123");
    }
}

//! Validation of a destination's transforms (design §3a, §9): the `body` and `filter` jq
//! programs, compiled now so that a syntax error is a config error, and the limits they run
//! under (`jq_timeout`, `jq_memory`, `max_body`).

use super::check::Checker;
use super::defaults::{
    DEFAULT_JQ_MEMORY, DEFAULT_JQ_TIMEOUT, DEFAULT_RENDERED_MAX_BODY, MAX_JQ_TIMEOUT, MIN_JQ_MEMORY,
};
use super::raw::{RawDestination, Str};
use super::validated::JqProgram;
use crate::jq::Limits;

/// `body`, `filter` and their limits; each `None` when invalid (the problem is reported).
pub(super) fn transform(
    name: &str,
    d: &RawDestination,
    ck: &mut Checker<'_>,
) -> (
    Option<Option<JqProgram>>,
    Option<Option<JqProgram>>,
    Option<Limits>,
) {
    let p = |k: &str| format!("destinations.{name}.{k}");
    let body = jq(&p("body"), d.body.as_ref(), ".data", ck);
    let filter = jq(
        &p("filter"),
        d.filter.as_ref(),
        ".type == \"item.created\"",
        ck,
    );
    (body, filter, limits(name, d, ck))
}

fn limits(name: &str, d: &RawDestination, ck: &mut Checker<'_>) -> Option<Limits> {
    let p = |k: &str| format!("destinations.{name}.{k}");
    let timeout = match &d.jq_timeout {
        Some(v) => match ck.duration(&p("jq_timeout"), v)? {
            t if t.is_zero() || t > MAX_JQ_TIMEOUT => {
                ck.bad(
                    &p("jq_timeout"),
                    v,
                    "more than 0s and at most 60s, e.g. jq_timeout: 1s",
                );
                None
            }
            t => Some(t),
        },
        None => Some(DEFAULT_JQ_TIMEOUT),
    };
    let memory = match &d.jq_memory {
        Some(v) => match ck.size(&p("jq_memory"), v)? {
            m if m < MIN_JQ_MEMORY => {
                ck.bad(&p("jq_memory"), v, "at least 64MiB, e.g. jq_memory: 512MiB");
                None
            }
            m => Some(m),
        },
        None => Some(DEFAULT_JQ_MEMORY),
    };
    let max_output = match &d.max_body {
        Some(v) => match ck.size(&p("max_body"), v)? {
            0 => {
                ck.bad(&p("max_body"), v, "at least 1 byte, e.g. max_body: 1MiB");
                None
            }
            m => Some(m),
        },
        None => Some(DEFAULT_RENDERED_MAX_BODY),
    };
    Some(Limits {
        timeout: timeout?,
        memory: memory?,
        max_output: max_output?,
    })
}

/// A jq program, compiled now so a syntax error is a config error with its path, line and jq
/// message. `Some(None)` when absent; `None` when invalid.
fn jq(
    path: &str,
    raw: Option<&Str>,
    example: &str,
    ck: &mut Checker<'_>,
) -> Option<Option<JqProgram>> {
    let Some(raw) = raw else {
        return Some(None);
    };
    let code = ck.text(path, raw)?;
    match crate::jq::compile(&code) {
        Ok(_) => Some(Some(JqProgram(code))),
        Err(e) => {
            ck.bad(path, raw, format!("a jq program ({e}), e.g. '{example}'"));
            None
        }
    }
}

//! A destination's `filter` and `body` jq programs applied to one event (design §3a, §9): what
//! the outcomes of its programs mean for the delivery. The dispatcher renders a row when it is
//! first due, on the destination's own jq worker, and stores the result before sending it;
//! `pollhook preview` and `pollhook sign` render the same way.

use std::sync::Arc;

use serde_json::Value;
use serde_json::value::RawValue;

use crate::config::Destination;
use crate::jq::{Job, JqPool, Outcome, Rendered, Request};

/// What a destination's programs make of one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Rendering {
    /// `filter` dropped it.
    Filtered,
    /// Send this body (`None`: the event envelope itself).
    Body(Option<Vec<u8>>),
    /// A program failed; the reason.
    Failed(String),
}

/// The first secret of `dest` (the programs' `$secret`), or "".
fn secret(dest: &Destination) -> &str {
    dest.secrets.first().map_or("", |s| s.expose())
}

/// The job of rendering the event envelope `input` for `dest`.
pub fn job(dest: &Destination, input: Arc<[u8]>) -> Job {
    Job {
        filter: dest.filter.as_ref().map(|p| Arc::from(p.0.as_str())),
        body: dest.body.as_ref().map(|p| Arc::from(p.0.as_str())),
        secret: Arc::from(secret(dest)),
        input,
    }
}

/// Runs `dest`'s programs on the stored envelope `input` on its worker `jq`.
pub async fn render_row(jq: &JqPool, dest: &Destination, input: Arc<[u8]>) -> Rendering {
    let rendered = jq.render_one(job(dest, input)).await;
    decide(dest, rendered)
}

/// Runs `dest`'s `filter` then `body` on the event `input` (`preview`, `sign`).
pub async fn render_for(jq: &JqPool, dest: &Destination, input: &Value) -> Rendering {
    let raw = match serde_json::value::to_raw_value(input) {
        Ok(raw) => raw,
        Err(e) => return Rendering::Failed(format!("the event is not JSON: {e}")),
    };
    let request = Request {
        filter: dest.filter.as_ref().map(|p| p.0.as_str()),
        body: dest.body.as_ref().map(|p| p.0.as_str()),
        secret: secret(dest),
        input: &raw,
    };
    match jq.render(&[request]).await.into_iter().next() {
        Some(r) => decide(dest, r),
        None => Rendering::Failed("the jq worker gave no answer".to_owned()),
    }
}

/// What the outcomes of `dest`'s programs mean for the delivery.
fn decide(dest: &Destination, rendered: Rendered) -> Rendering {
    let secret = secret(dest);
    if let Some(filter) = rendered.filter {
        match one_value(filter, "filter", secret) {
            Ok(v) if !crate::jq::keeps(&[v.get()]) => return Rendering::Filtered,
            Ok(_) => {}
            Err(why) => return Rendering::Failed(why),
        }
    }
    match (rendered.body, &dest.body) {
        (Some(body), _) => match one_value(body, "body", secret) {
            Ok(v) => Rendering::Body(Some(v.get().as_bytes().to_vec())),
            Err(why) => Rendering::Failed(why),
        },
        (None, Some(_)) => Rendering::Failed("the body program did not run".to_owned()),
        (None, None) => Rendering::Body(None),
    }
}

/// The single value a program must produce, or why it did not. A secret the program echoed
/// into its error is redacted.
fn one_value(outcome: Outcome, what: &str, secret: &str) -> Result<Box<RawValue>, String> {
    let redact = |m: String| match secret.is_empty() {
        true => m,
        false => m.replace(secret, "<redacted>"),
    };
    match outcome {
        Outcome::Values(mut v) if v.len() == 1 => Ok(v.remove(0)),
        Outcome::Values(v) if v.is_empty() => Err(format!(
            "the {what} program produced no value; it must produce exactly one"
        )),
        Outcome::Values(_) => Err(format!(
            "the {what} program produced several values; it must produce exactly one"
        )),
        Outcome::Failed(e) => Err(format!("the {what} program failed: {}", redact(e))),
    }
}

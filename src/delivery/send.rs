//! One delivery attempt: build the signed POST, send it, turn the answer into an [`Outcome`].

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::header::RETRY_AFTER;

use super::retry::{Outcome, describe};
use super::signing::{
    CONTENT_TYPE, IDEMPOTENCY_KEY, Signer, USER_AGENT, WEBHOOK_ID, WEBHOOK_TIMESTAMP,
};
use crate::store::Attempt;
use reqwest::header::{HeaderName, HeaderValue};

use crate::config::Destination;
use crate::http::{USER_AGENT_VALUE, parse_retry_after, request_error_chain};
use crate::store::OutboxRow;
use crate::template::{Values, Var};

/// The placeholders of a destination's `headers:`, from one row and attempt.
struct RowValues<'a> {
    row: &'a OutboxRow,
    timestamp: i64,
}

impl Values for RowValues<'_> {
    fn write(&self, var: Var, out: &mut Vec<u8>) {
        let row = self.row;
        match var {
            Var::Id => out.extend_from_slice(row.event_id.as_bytes()),
            Var::Type => out.extend_from_slice(event_type(row).as_bytes()),
            Var::Source => out.extend_from_slice(row.source.as_bytes()),
            Var::Key => out.extend_from_slice(row.key.as_bytes()),
            Var::Revision => out.extend_from_slice(row.revision.to_string().as_bytes()),
            Var::Timestamp => out.extend_from_slice(self.timestamp.to_string().as_bytes()),
            // Not allowed in header templates (checked when they are parsed).
            Var::Body | Var::Signature => {}
        }
    }
}

/// The event type of a row; rows stored before the type was kept carry it in their body.
fn event_type(row: &OutboxRow) -> String {
    if !row.event_type.is_empty() {
        return row.event_type.clone();
    }
    serde_json::from_slice::<serde_json::Value>(&row.body)
        .ok()
        .and_then(|v| v["type"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Every header of one attempt, in order: the Standard Webhooks headers (always), the
/// destination's `headers:` rendered for this event and attempt, then the signature headers.
pub fn request_headers(
    dest: &Destination,
    signer: &Signer,
    row: &OutboxRow,
    timestamp: i64,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = unsigned_headers(dest, row, timestamp);
    for (name, value) in signer.headers(&row.event_id, timestamp, &row.body) {
        out.push((name, text(&value)));
    }
    out
}

fn text(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The headers of one attempt before its signatures (what the delivery log shows); configured
/// `headers:` values are marked sensitive.
pub fn unsigned_headers(
    dest: &Destination,
    row: &OutboxRow,
    timestamp: i64,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = vec![
        (
            HeaderName::from_static(CONTENT_TYPE),
            HeaderValue::from_static("application/json"),
        ),
        (HeaderName::from_static(WEBHOOK_ID), text(&row.event_id)),
        (
            HeaderName::from_static(WEBHOOK_TIMESTAMP),
            HeaderValue::from(timestamp),
        ),
        (
            HeaderName::from_static(IDEMPOTENCY_KEY),
            text(&row.event_id),
        ),
        (
            HeaderName::from_static(USER_AGENT),
            HeaderValue::from_static(USER_AGENT_VALUE),
        ),
    ];
    let values = RowValues { row, timestamp };
    for (name, template) in &dest.headers {
        // Configured headers often carry credentials: keep them out of Debug output.
        let mut value = text(&template.render(&values));
        value.set_sensitive(true);
        out.push((name.clone(), value));
    }
    out
}

/// How much of a receiver's answer the delivery log keeps.
pub const RESPONSE_SNIPPET: usize = 1024;

/// Sends `row` to `dest` once and classifies the result; the [`Attempt`] describes it for the
/// delivery log (its number is the caller's to set).
pub async fn attempt(
    client: &reqwest::Client,
    dest: &Destination,
    signer: &Signer,
    row: &OutboxRow,
) -> (Outcome, Attempt) {
    let started = std::time::Instant::now();
    let now = SystemTime::now();
    let at_ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let (outcome, response) = send(client, dest, signer, row, now).await;
    let record = Attempt {
        n: 0,
        at_ms,
        duration_ms: started.elapsed().as_millis() as u64,
        status: match &outcome {
            Outcome::Status { code, .. } => Some(*code),
            _ => None,
        },
        error: match &outcome {
            Outcome::Status { .. } => None,
            other => Some(describe(other)),
        },
        response,
    };
    (outcome, record)
}

/// The first [`RESPONSE_SNIPPET`] bytes of an answer (as text), within the request's timeout.
async fn snippet(mut resp: reqwest::Response) -> Option<String> {
    let mut out = Vec::new();
    while out.len() < RESPONSE_SNIPPET {
        match resp.chunk().await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk),
            _ => break,
        }
    }
    out.truncate(RESPONSE_SNIPPET);
    (!out.is_empty()).then(|| String::from_utf8_lossy(&out).into_owned())
}

async fn send(
    client: &reqwest::Client,
    dest: &Destination,
    signer: &Signer,
    row: &OutboxRow,
    now: SystemTime,
) -> (Outcome, Option<String>) {
    let ts = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut req = client.post(dest.url.clone()).timeout(dest.timeout);
    for (name, value) in request_headers(dest, signer, row, ts) {
        req = req.header(name, value);
    }
    match req
        .body(reqwest::Body::from(bytes::Bytes::copy_from_slice(
            &row.body,
        )))
        .send()
        .await
    {
        Ok(resp) => {
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, now));
            let code = resp.status().as_u16();
            (Outcome::Status { code, retry_after }, snippet(resp).await)
        }
        Err(e) if e.is_timeout() => (Outcome::Timeout, None),
        Err(e) => (Outcome::Connect(request_error_chain(e)), None),
    }
}

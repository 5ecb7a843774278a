//! One delivery attempt: build the signed POST, send it, turn the answer into an [`Outcome`].

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::header::RETRY_AFTER;

use super::retry::Outcome;
use super::signing::{
    CONTENT_TYPE, IDEMPOTENCY_KEY, Signer, USER_AGENT, WEBHOOK_ID, WEBHOOK_TIMESTAMP,
};
use crate::config::Destination;
use crate::http::{USER_AGENT_VALUE, parse_retry_after, request_error_chain};
use crate::store::OutboxRow;

/// Sends `row` to `dest` once and classifies the result.
pub async fn attempt(
    client: &reqwest::Client,
    dest: &Destination,
    signer: &Signer,
    row: &OutboxRow,
) -> Outcome {
    let now = SystemTime::now();
    let ts = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut req = client
        .post(dest.url.clone())
        .timeout(dest.timeout)
        .header(CONTENT_TYPE, "application/json")
        .header(WEBHOOK_ID, &row.event_id)
        .header(WEBHOOK_TIMESTAMP, ts.to_string())
        .header(IDEMPOTENCY_KEY, &row.event_id)
        .header(USER_AGENT, USER_AGENT_VALUE);
    for (name, value) in &dest.headers {
        req = req.header(name, value);
    }
    for (name, value) in signer.headers(&row.event_id, ts, &row.body) {
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
            Outcome::Status {
                code: resp.status().as_u16(),
                retry_after,
            }
        }
        Err(e) if e.is_timeout() => Outcome::Timeout,
        Err(e) => Outcome::Connect(request_error_chain(e)),
    }
}

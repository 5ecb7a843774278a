//! A webhook receiver that verifies pollhook's Standard Webhooks signatures, dedupes on
//! `webhook-id` and prints each event once. Run it, then point a destination at it:
//!
//! ```sh
//! RECEIVER_SECRET=whsec_... cargo run --example receiver -- 127.0.0.1:8080
//! ```
//!
//! Any Standard Webhooks library works the same way; this one uses pollhook's own verifier.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use pollhook::delivery::signing::{
    WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP, verify_standard,
};

/// Signatures older or newer than this are refused (replay protection).
const TOLERANCE_SECS: i64 = 5 * 60;

struct Receiver {
    secret: String,
    seen: Mutex<HashSet<String>>,
}

async fn hook(State(rx): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, ts) = (
        get(WEBHOOK_ID),
        get(WEBHOOK_TIMESTAMP).parse::<i64>().unwrap_or(0),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if (now - ts).abs() > TOLERANCE_SECS
        || !verify_standard(&rx.secret, &id, ts, &body, &get(WEBHOOK_SIGNATURE))
    {
        eprintln!("rejected {id}: bad signature or timestamp");
        return StatusCode::UNAUTHORIZED;
    }
    let first_time = rx
        .seen
        .lock()
        .map(|mut s| s.insert(id.clone()))
        .unwrap_or(true);
    if first_time {
        println!("{id} {}", String::from_utf8_lossy(&body));
    }
    StatusCode::NO_CONTENT
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let secret = std::env::var("RECEIVER_SECRET")
        .map_err(|_| "set RECEIVER_SECRET to the destination's whsec_ secret")?;
    let state = Arc::new(Receiver {
        secret,
        seen: Mutex::new(HashSet::new()),
    });
    let app = Router::new()
        .route("/{*path}", post(hook))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("receiver listening on http://{addr}/ (any path)");
    axum::serve(listener, app).await?;
    Ok(())
}

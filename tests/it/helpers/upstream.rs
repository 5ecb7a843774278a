//! A scriptable upstream: serves whatever JSON body the test sets, counting requests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// What the upstream answers.
#[derive(Clone)]
pub enum Reply {
    /// 200 with this body.
    Json(String),
    /// This status with an empty body.
    Status(u16),
    /// This status with these headers and a JSON `[]` body.
    StatusWith(u16, Vec<(&'static str, String)>),
}

#[derive(Clone)]
struct Shared {
    reply: Arc<Mutex<Reply>>,
    hits: Arc<AtomicUsize>,
}

/// A running upstream on 127.0.0.1:0.
pub struct Upstream {
    pub url: String,
    shared: Shared,
}

impl Upstream {
    /// Starts serving `body` at `/things`.
    pub async fn start(body: &str) -> Upstream {
        let shared = Shared {
            reply: Arc::new(Mutex::new(Reply::Json(body.to_owned()))),
            hits: Arc::new(AtomicUsize::new(0)),
        };
        let app = Router::new()
            .route("/things", get(serve))
            .with_state(shared.clone());
        let url = super::serve(app).await;
        Upstream { url, shared }
    }

    /// Changes what is served from now on.
    pub fn set(&self, reply: Reply) {
        *self.shared.reply.lock().expect("lock") = reply;
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Waits until `n` more requests than now have been served.
    pub async fn wait_polls(&self, n: usize) {
        let target = self.hits() + n;
        super::wait_until(
            std::time::Duration::from_secs(10),
            "upstream polled",
            || async move { self.hits() >= target },
        )
        .await;
    }
}

async fn serve(State(s): State<Shared>) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let reply = s.reply.lock().expect("lock").clone();
    match reply {
        Reply::Json(body) => ([("content-type", "application/json")], body).into_response(),
        Reply::Status(code) => StatusCode::from_u16(code)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response(),
        Reply::StatusWith(code, headers) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = (status, "[]").into_response();
            for (k, v) in headers {
                resp.headers_mut()
                    .insert(k, v.parse().expect("header value"));
            }
            resp
        }
    }
}

//! The admin HTTP API (design §6): health, readiness, Prometheus metrics, and the `/v1`
//! operator routes behind an optional bearer token. `routes.rs` holds the handlers,
//! `client.rs` the CLI's side of the API.
//!
//! The server is given its listener (port 0 in tests) and a shutdown token, like the rest of
//! the daemon.

pub mod client;
pub mod events;
pub mod page;
mod routes;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::Secret;
use crate::delivery::DispatchCmd;
use crate::poller::Mailbox;
use crate::status::Registry;
use crate::store::Store;

/// Operator command channels of the running sources, by name (replaced on reload).
pub type Controls = Arc<RwLock<HashMap<String, Arc<Mailbox>>>>;

/// A reload request: the reply carries the problems when the new config was rejected.
pub type ReloadRequest = oneshot::Sender<Result<(), Vec<String>>>;

/// Everything the handlers reach.
#[derive(Clone)]
pub struct AdminState {
    /// Source status and readiness.
    pub registry: Arc<Registry>,
    /// State store (dead letters).
    pub store: Store,
    /// Per-source command channels.
    pub controls: Controls,
    /// Dispatcher commands (statistics).
    pub dispatch: mpsc::UnboundedSender<DispatchCmd>,
    /// Asks the daemon to reload its config.
    pub reload: mpsc::Sender<ReloadRequest>,
    /// Bearer token for `/v1`.
    pub token: Option<Secret>,
    /// The configured destinations (headers shown in the delivery log).
    pub destinations: crate::config::Destinations,
    /// Keys the page's session and form tokens when no admin token is set (random per process).
    pub page_secret: Arc<[u8; 32]>,
    /// Whether the listener is on loopback (the page's buttons work there without a token).
    pub loopback: bool,
}

/// A fresh random key for [`AdminState::page_secret`].
pub fn page_secret() -> Arc<[u8; 32]> {
    let mut key = [0u8; 32];
    // The system RNG does not fail on Linux; a zero key would still need the Origin check.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key);
    Arc::new(key)
}

/// The router.
pub fn router(state: AdminState) -> Router {
    let v1 = Router::new()
        .route("/v1/sources", get(routes::sources))
        .route("/v1/sources/{name}", get(routes::source))
        .route("/v1/sources/{name}/{action}", post(routes::source_action))
        .route("/v1/outbox", get(routes::outbox))
        .route("/v1/dead", get(routes::dead).delete(routes::purge_dead))
        .route("/v1/dead/retry", post(routes::retry_all))
        .route("/v1/dead/{id}/retry", post(routes::retry_one))
        .route("/v1/reload", post(routes::reload))
        .route("/v1/cluster", get(routes::cluster))
        .route("/v1/events", get(events::list))
        .route("/v1/events/{id}", get(events::show))
        .route("/v1/events/{id}/resend", post(events::resend))
        .route("/v1/replay", post(events::replay))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/", get(page::index))
        .route("/login", post(page::login))
        .route("/events/{id}", get(page::event))
        .route("/ui/sources/{name}/resume", post(page::resume))
        .route("/ui/events/{id}/resend", post(page::resend))
        .route("/ui/dead/{seq}/retry", post(page::retry_dead))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .merge(v1)
        .with_state(state)
}

/// Rejects `/v1` requests without the configured bearer token (constant-time comparison).
async fn require_token(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    if authorized(&state, req.headers()) {
        next.run(req).await
    } else {
        let body = axum::Json(
            serde_json::json!({"error": "missing or wrong bearer token; set admin.token in the CLI's config"}),
        );
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            body,
        )
            .into_response()
    }
}

/// Whether a request may see `/v1` and details: no token is configured, or it carries it as a
/// bearer (compared in constant time).
pub fn authorized(state: &AdminState, headers: &axum::http::HeaderMap) -> bool {
    let Some(token) = &state.token else {
        return true;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    bool::from(given.as_bytes().ct_eq(token.expose().as_bytes()))
}

/// Serves the admin API on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

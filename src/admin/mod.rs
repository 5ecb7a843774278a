//! The admin HTTP API (design §6): health, readiness, Prometheus metrics, the `/v1` operator
//! routes behind an optional bearer token, and the status page. `auth.rs` is the one gate in
//! front of every route (design §9), `routes.rs` and `events.rs` hold the handlers, `page/` the
//! status page, `serve.rs` the listener (timeouts and connection caps), `client.rs` the CLI's
//! side of the API.
//!
//! The server is given its listener (port 0 in tests) and a shutdown token, like the rest of
//! the daemon.

pub mod auth;
pub mod client;
pub mod events;
pub mod page;
mod routes;
mod serve;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use tokio::sync::{mpsc, oneshot};

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
    /// The address it listens on (a `Host` naming it is this daemon's).
    pub listen: Option<SocketAddr>,
    /// Other names it answers to (`admin.hosts`).
    pub hosts: Vec<String>,
    /// How long a status-page sign-in lasts (`admin.session`).
    pub session_ttl: Duration,
    /// Open status-page sessions and recent sign-in attempts.
    pub sessions: Arc<page::Sessions>,
}

/// Largest request body any admin route reads (a replay request, a sign-in form).
pub const MAX_REQUEST_BODY: usize = 64 * 1024;

/// A fresh random key for [`AdminState::page_secret`].
pub fn page_secret() -> Arc<[u8; 32]> {
    let mut key = [0u8; 32];
    // The system RNG does not fail on Linux; a zero key would still need the Origin check.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key);
    Arc::new(key)
}

/// The router: every route behind the gate of `auth.rs`, `/v1` behind the bearer token too.
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
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/", get(page::index))
        .route("/login", post(page::login))
        .route("/logout", post(page::logout))
        .route("/events/{id}", get(page::event))
        .route("/ui/sources/{name}/resume", post(page::resume))
        .route("/ui/events/{id}/resend", post(page::resend))
        .route("/ui/dead/{seq}/retry", post(page::retry_dead))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .merge(v1)
        .layer(middleware::from_fn_with_state(state.clone(), auth::guard))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .with_state(state)
}

pub use auth::authorized;
pub use serve::serve;

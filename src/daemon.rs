//! Wiring and start/stop order of `pollhook run`.
//!
//! Start: open the store → load pending outbox rows into the dispatcher → start the settle
//! writer and dispatcher → start one poller per source. Stop (token cancelled): pollers stop at
//! once (a poll in flight is abandoned; its commit either landed or did not), then the dispatcher
//! drains in-flight deliveries up to [`DRAIN_DEADLINE`], then the settle writer flushes, then the
//! store closes. A source task that dies brings the daemon down with its name.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::delivery::{Dispatcher, send, settle_loop};
use crate::poller::{self, PollContext, Poller};
use crate::shutdown::DRAIN_DEADLINE;
use crate::store::{self, StoreError};

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The state store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An HTTP client could not be built (TLS roots unavailable).
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// A task ended when it should not have.
    #[error(
        "task {0} stopped unexpectedly; pollhook is stopping so that its supervisor restarts it"
    )]
    TaskDied(String),
}

/// Runs pollhook with `config` until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let store = store::open(&config.state)?;
    let pending = store.backend().pending()?;
    let dests: Vec<_> = config.destinations.values().cloned().collect();
    let (settle_tx, settle_rx) = mpsc::unbounded_channel();
    let mut dispatcher = Dispatcher::new(
        &dests,
        send::client().map_err(DaemonError::Client)?,
        settle_tx,
    );
    let resumed = pending.len();
    pending.into_iter().for_each(|row| dispatcher.add(row));
    let settle_task = tokio::spawn(settle_loop(store.clone(), settle_rx));
    let (rows_tx, rows_rx) = mpsc::unbounded_channel();
    let dispatch_stop = CancellationToken::new();
    let mut dispatch_task =
        tokio::spawn(dispatcher.run(rows_rx, dispatch_stop.clone(), DRAIN_DEADLINE));

    let ctx = Arc::new(PollContext {
        store: store.clone(),
        client: poller::client().map_err(DaemonError::Client)?,
        rows: rows_tx,
    });
    let mut pollers = JoinSet::new();
    for source in config.sources.values() {
        let poller = Poller::load(source.clone(), &store)?;
        let name = source.name.clone();
        let token = shutdown.child_token();
        let ctx = ctx.clone();
        pollers.spawn(async move {
            poller.run(ctx, token).await;
            name
        });
    }
    drop(ctx);
    tracing::info!(sources = config.sources.len(), destinations = dests.len(), resumed_deliveries = resumed, state = %config.state.display(), "pollhook running");

    let mut dispatch_done = false;
    let died = tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        Some(done) = pollers.join_next() => Some(match done {
            Ok(name) => format!("source {name}"),
            Err(e) => format!("source poller ({e})"),
        }),
        done = &mut dispatch_task => {
            dispatch_done = true;
            Some(format!("dispatcher ({})", done.err().map_or("returned".into(), |e| e.to_string())))
        }
    };
    // A poller that ends because the token was cancelled meanwhile did not die.
    let died = died.filter(|_| !shutdown.is_cancelled());
    shutdown.cancel();
    while pollers.join_next().await.is_some() {}
    dispatch_stop.cancel();
    if !dispatch_done {
        let _ = dispatch_task.await;
    }
    let _ = settle_task.await;
    store.close().await;
    tracing::info!("pollhook stopped");
    match died {
        Some(what) => {
            tracing::error!(task = %what, "task died");
            Err(DaemonError::TaskDied(what))
        }
        None => Ok(()),
    }
}

//! The admin listener (design §9): HTTP/1.1 connections served by hyper under bounds that
//! `axum::serve` does not set. Request headers must arrive within [`HEADER_TIMEOUT`] (a client
//! that sends half a request line and waits is dropped, and so is a keep-alive connection
//! idle that long); at most [`MAX_UNREAD`] connections may be waiting for their first request's
//! headers, and at most [`MAX_CONNECTIONS`] be open at once: a connection over either bound is
//! closed at once and counted (`pollhook_admin_connections_refused_total`). Bodies are capped by
//! the router ([`MAX_REQUEST_BODY`](super::MAX_REQUEST_BODY)). Each request carries its peer
//! address ([`ConnectInfo`]) for the sign-in limit.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use super::{AdminState, router};
use crate::telemetry as m;

/// How long a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections waiting for their first request's headers.
pub const MAX_UNREAD: usize = 64;
/// Most open connections.
pub const MAX_CONNECTIONS: usize = 512;
/// How long open connections may take to finish after shutdown.
const CLOSE_DEADLINE: Duration = Duration::from_secs(2);

/// Serves the admin API on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(state);
    let unread = Arc::new(Semaphore::new(MAX_UNREAD));
    let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, most likely: let some close.
                    tracing::warn!(error = %e, "admin API cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let permits = (
            unread.clone().try_acquire_owned(),
            open.clone().try_acquire_owned(),
        );
        let (Ok(waiting), Ok(held)) = permits else {
            metrics::counter!(m::ADMIN_REFUSED).increment(1);
            continue;
        };
        let conn = connection(stream, peer, app.clone(), waiting, shutdown.clone());
        tracker.spawn(async move {
            conn.await;
            drop(held);
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(CLOSE_DEADLINE * 2, tracker.wait()).await;
    Ok(())
}

/// Serves one connection; `waiting` is released once its first request's headers are in.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    waiting: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) {
    let waiting = Arc::new(Mutex::new(Some(waiting)));
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        if let Ok(mut w) = waiting.lock() {
            w.take();
        }
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move { app.call(req.map(axum::body::Body::new)).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(CLOSE_DEADLINE, conn).await;
        }
    }
}

//! [`Store`]: the async handle the daemon uses, and the single writer thread behind it.
//!
//! Design notes: every write is sent to one OS thread, which takes everything queued, applies it
//! in one transaction with one fsync (group commit), then answers each sender. Many sources
//! committing at once therefore cost one fsync, not one each, and no transaction ever lives on a
//! tokio worker or across an `.await`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;

use tokio::sync::oneshot;

use super::{
    Backend, OutboxRow, PollCommit, RowSink, Settle, SourceMeta, StoreError, Superseded, WriteOp,
    WriteResult, headers_only,
};

thread_local! {
    /// Set while a [`Store::read`] runs on tokio's blocking pool.
    static BLOCKING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread may block on a future of another runtime: a plain thread (the writer,
/// a command-line tool), or tokio's blocking pool running a [`Store::read`]. Not a runtime
/// worker, where blocking on another runtime panics.
pub fn may_block() -> bool {
    BLOCKING.get() || tokio::runtime::Handle::try_current().is_err()
}

/// Most operations folded into one transaction.
const MAX_BATCH: usize = 4096;

enum Job {
    Write(WriteOp, oneshot::Sender<Result<WriteResult, StoreError>>),
    /// Answers once every write queued before it is committed, with the pending rows (headers
    /// only) as they stand then.
    Snapshot(oneshot::Sender<Result<Vec<OutboxRow>, StoreError>>),
    /// Answers once every write queued before it is committed (or failed).
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

/// Handle to the state store: reads go straight to the backend, writes to the writer thread.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    tx: mpsc::Sender<Job>,
    /// Batches in a row whose commit panicked (0 after a good one).
    panics: Arc<AtomicU32>,
}

/// Batches in a row that panicked after which the store reports itself unhealthy.
const UNHEALTHY_AFTER: u32 = 3;

impl Store {
    /// Starts the writer thread for `backend`.
    pub fn start(backend: Arc<dyn Backend>, sink: Option<RowSink>) -> Store {
        let (tx, rx) = mpsc::channel();
        let writer_backend = backend.clone();
        let panics = Arc::new(AtomicU32::new(0));
        let writer_panics = panics.clone();
        thread::Builder::new()
            .name("pollhook-writer".into())
            .spawn(move || run_writer(writer_backend, rx, writer_panics, sink))
            // Spawning a thread fails only when the OS is out of threads; nothing can run then.
            .expect("cannot spawn the state writer thread");
        Store {
            backend,
            tx,
            panics,
        }
    }

    /// False while commits keep panicking (shown on `/readyz`).
    pub fn healthy(&self) -> bool {
        self.panics.load(Ordering::Relaxed) < UNHEALTHY_AFTER
    }

    /// Read access to the engine.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Runs a read on tokio's blocking pool: a long scan (the delivery log, every dead letter)
    /// must not stall the polls that share the async worker.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Backend) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || {
            BLOCKING.set(true);
            let result = f(backend.as_ref());
            BLOCKING.set(false);
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }

    async fn write(&self, op: WriteOp) -> Result<WriteResult, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Write(op, reply))
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Applies an op that deletes rows; returns how many.
    async fn count(&self, op: WriteOp) -> Result<usize, StoreError> {
        match self.write(op).await? {
            WriteResult::Count(n) => Ok(n),
            _ => Ok(0),
        }
    }

    /// Waits until every write queued before this call is committed (or failed); returns the
    /// pending rows, headers only, as they stand then.
    pub async fn snapshot(&self) -> Result<Vec<OutboxRow>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Snapshot(reply))
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Waits until every write queued before this call is committed (or failed): a source
    /// restarted after this reads the state its previous task committed, never an older one.
    pub async fn flush(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Job::Flush(reply)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Commits a poll's state and events; returns the outbox rows once they are durable. The
    /// writer also hands them to the dispatcher itself, so they reach it even when this future
    /// is dropped before the commit lands.
    pub async fn commit_poll(&self, commit: PollCommit) -> Result<Vec<OutboxRow>, StoreError> {
        match self.write(WriteOp::Poll(commit)).await? {
            WriteResult::Rows(rows) => Ok(rows),
            WriteResult::Fenced(source) => Err(StoreError::Fenced(source)),
            _ => Ok(Vec::new()),
        }
    }

    /// Replaces a source's metadata.
    pub async fn set_meta(&self, source: &str, meta: SourceMeta) -> Result<(), StoreError> {
        self.write(WriteOp::Meta {
            source: source.to_owned(),
            meta,
        })
        .await
        .map(|_| ())
    }

    /// Moves dead letters (all when `seqs` is `None`) back to the outbox, except superseded
    /// ones; returns both. The writer hands the revived rows to the dispatcher.
    pub async fn revive(
        &self,
        seqs: Option<Vec<u64>>,
        now_ms: i64,
    ) -> Result<(Vec<OutboxRow>, Vec<Superseded>), StoreError> {
        self.revived(WriteOp::Revive { seqs, now_ms }).await
    }

    /// Deletes dead letters older than `before_ms` (all when `None`); returns how many.
    pub async fn purge_dead(&self, before_ms: Option<i64>) -> Result<usize, StoreError> {
        self.count(WriteOp::PurgeDead { before_ms }).await
    }

    /// Deletes `source`'s tombstones written before `before_ms`; returns how many.
    pub async fn prune_tombstones(
        &self,
        source: &str,
        before_ms: i64,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let op = WriteOp::PruneTombstones {
            source: source.to_owned(),
            before_ms,
            now_ms,
        };
        self.count(op).await
    }

    /// Records which stored sources the config no longer has (and which came back).
    pub async fn mark_removed(&self, present: Vec<String>, now_ms: i64) -> Result<(), StoreError> {
        self.write(WriteOp::MarkRemoved { present, now_ms })
            .await
            .map(|_| ())
    }

    /// Deletes the state of sources missing from the config since before `before_ms`.
    pub async fn drop_removed(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.count(WriteOp::DropRemoved { before_ms }).await
    }

    /// Queues events that belong to no source's state (alerts); returns their rows.
    pub async fn emit(&self, commit: PollCommit) -> Result<Vec<OutboxRow>, StoreError> {
        match self.write(WriteOp::Emit(commit)).await? {
            WriteResult::Rows(rows) => Ok(rows),
            _ => Ok(Vec::new()),
        }
    }

    /// Sends an event again (same id and body) to one or all of its destinations; returns the
    /// queued rows and the dead letters left dead as superseded.
    pub async fn resend(
        &self,
        event_id: &str,
        destination: Option<String>,
        now_ms: i64,
    ) -> Result<(Vec<OutboxRow>, Vec<Superseded>), StoreError> {
        self.revived(WriteOp::Resend {
            event_id: event_id.to_owned(),
            destination,
            now_ms,
        })
        .await
    }

    /// Sends again, in order, what `source` emitted since `since_ms`.
    pub async fn replay(
        &self,
        source: &str,
        since_ms: i64,
        destination: Option<String>,
        now_ms: i64,
    ) -> Result<(Vec<OutboxRow>, Vec<Superseded>), StoreError> {
        self.revived(WriteOp::Replay {
            source: source.to_owned(),
            since_ms,
            destination,
            now_ms,
        })
        .await
    }

    /// Runs an op that re-queues deliveries; returns the queued rows and the superseded ones.
    async fn revived(&self, op: WriteOp) -> Result<(Vec<OutboxRow>, Vec<Superseded>), StoreError> {
        match self.write(op).await? {
            WriteResult::Revived { rows, superseded } => Ok((rows, superseded)),
            _ => Ok((Vec::new(), Vec::new())),
        }
    }

    /// One small step of delivery-log pruning; returns how many records went.
    pub async fn prune_history(
        &self,
        before_ms: i64,
        max_records: u64,
        budget: usize,
    ) -> Result<usize, StoreError> {
        let op = WriteOp::PruneHistory {
            before_ms,
            max_records,
            budget,
        };
        self.count(op).await
    }

    /// Records delivery outcomes.
    pub async fn settle(&self, outcomes: Vec<Settle>) -> Result<(), StoreError> {
        self.write(WriteOp::Settle(outcomes)).await.map(|_| ())
    }

    /// Finishes queued writes and stops the writer thread, so the engine closes its file once
    /// the last handle is dropped.
    pub async fn close(self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Job::Close(reply)).is_ok() {
            let _ = rx.await;
        }
    }
}

fn run_writer(
    backend: Arc<dyn Backend>,
    rx: mpsc::Receiver<Job>,
    panics: Arc<AtomicU32>,
    sink: Option<RowSink>,
) {
    while let Ok(first) = rx.recv() {
        let mut ops = Vec::new();
        let mut replies = Vec::new();
        // A job other than a write ends the batch; it is answered once the batch is committed.
        let mut barrier = None;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Write(op, reply) => {
                    ops.push(op);
                    replies.push(reply);
                }
                other => {
                    barrier = Some(other);
                    break;
                }
            }
            if ops.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !ops.is_empty() {
            commit_batch(backend.as_ref(), ops, replies, &panics, sink.as_ref());
        }
        match barrier {
            Some(Job::Snapshot(reply)) => {
                let _ = reply.send(backend.pending_headers());
            }
            Some(Job::Flush(reply)) => {
                let _ = reply.send(());
            }
            Some(Job::Close(reply)) => {
                drop(backend);
                let _ = reply.send(());
                return;
            }
            Some(Job::Write(..)) | None => {}
        }
    }
}

/// Applies one batch. A panic inside the engine fails this batch only (its transaction is
/// dropped uncommitted, every caller gets an error, nothing is half-written) and the writer
/// goes on with the next: the writer thread is never lost.
fn commit_batch(
    backend: &dyn Backend,
    mut ops: Vec<WriteOp>,
    replies: Vec<oneshot::Sender<Result<WriteResult, StoreError>>>,
    panics: &AtomicU32,
    sink: Option<&RowSink>,
) {
    let applied =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| backend.apply(&mut ops)));
    let applied = match applied {
        Ok(result) => {
            panics.store(0, Ordering::Relaxed);
            result
        }
        Err(payload) => {
            let n = panics.fetch_add(1, Ordering::Relaxed) + 1;
            metrics::counter!(crate::telemetry::TASK_RESTARTS, "task" => "writer").increment(1);
            let message = crate::telemetry::panic_message(payload.as_ref());
            tracing::error!(error = %message, panics = n, "state commit panicked; the batch is rolled back and the writer goes on");
            Err(StoreError::Backend(format!("commit panicked: {message}")))
        }
    };
    match applied {
        Ok(results) => {
            if let Some(sink) = sink {
                hand_over(sink, &results);
            }
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(result));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, ops = replies.len(), "state commit failed; the polls are retried and deliveries stay pending");
            for reply in replies {
                let _ = reply.send(Err(StoreError::Backend(e.to_string())));
            }
        }
    }
}

/// Hands a committed batch's new outbox rows (poll events, revived dead letters) to the
/// dispatcher, before any caller hears of the commit.
fn hand_over(sink: &RowSink, results: &[WriteResult]) {
    let rows: Vec<OutboxRow> = results
        .iter()
        .flat_map(|r| match r {
            WriteResult::Rows(rows) | WriteResult::Revived { rows, .. } => rows.as_slice(),
            _ => &[],
        })
        .cloned()
        .collect();
    if !rows.is_empty() {
        let _ = sink.send(headers_only(rows));
    }
}

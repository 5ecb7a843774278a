//! The PostgreSQL implementation of [`Backend`] (design §8): the same state, outbox, dead
//! letters and delivery log as redb, shared by several instances, plus what sharing needs —
//! source leases with fencing epochs (`cluster.rs`) and outbox claims taken with
//! `FOR UPDATE SKIP LOCKED`.
//!
//! Design notes:
//! - The client is `tokio-postgres` with a `deadpool-postgres` pool, driven by a small runtime
//!   of the backend's own: [`Backend`] is blocking (the writer thread, `Store::read`), and
//!   this keeps database I/O off the pollers' worker whatever thread asks.
//! - Every poll commit is conditional, in its own transaction, on this instance still holding
//!   the source's lease with the epoch it acquired ([`WriteResult::Fenced`] otherwise): an
//!   instance paused past its lease can never write stale state or events.
//! - All lease and claim times are the database's clock (`now()`), never an instance's.

mod cluster;
mod dump;
mod history;
mod prune;
mod read;
mod replay;
mod schema;
mod settle;
mod write;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

use super::{
    Backend, EventDelivery, Heartbeat, HistoryQuery, HistoryRecord, InstanceInfo, OutboxRow,
    SourceSnapshot, StoreError, WriteOp, WriteResult,
};
use crate::config::Postgres;

/// A database error as a store error (the message never carries the connection URL).
pub(super) fn pg_err(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(format!("PostgreSQL: {}", crate::http::error_chain(&e)))
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Backend(format!("PostgreSQL pool: {}", crate::http::error_chain(&e)))
}

/// PostgreSQL-backed storage for one instance.
pub struct PgBackend {
    /// Drives the pool's connections; `None` only while dropping.
    rt: Option<tokio::runtime::Runtime>,
    pool: Pool,
    /// This instance's name.
    instance: String,
    /// Lease period.
    lease: Duration,
    /// Leases held: source → (fencing epoch, when the previous holder's next poll was due if
    /// it handed the source over cleanly), set by the heartbeat.
    held: Mutex<HashMap<String, (i64, Option<i64>)>>,
    /// Whether the delivery log is kept.
    history: AtomicBool,
    /// When this instance started, unix ms.
    started_ms: i64,
}

impl PgBackend {
    /// Connects, migrates the schema (once, under an advisory lock) and registers `instance`.
    pub fn open(config: &Postgres, instance: &str) -> Result<Self, StoreError> {
        crate::http::install_crypto();
        let mut pg: tokio_postgres::Config = config
            .url
            .expose()
            .trim()
            .parse()
            .map_err(|_| StoreError::Backend("store.postgres is not a valid URL".into()))?;
        if pg.get_password().is_none()
            && let Ok(password) = std::env::var("PGPASSWORD")
        {
            pg.password(password);
        }
        pg.application_name(format!("pollhook {instance}"));
        // An instance frozen inside a transaction (SIGSTOP, a VM pause) must not hold the
        // others up for longer than a fraction of the lease: the server ends its transaction
        // (its commit is then lost, as fencing wants), and nobody waits on a lock for long.
        let lease_ms = config.lease.as_millis();
        let mut options = pg.get_options().unwrap_or("").to_owned();
        options.push_str(&format!(
            " -c idle_in_transaction_session_timeout={} -c lock_timeout={}",
            (lease_ms / 2).max(500),
            (lease_ms / 3).max(300)
        ));
        pg.options(options.trim());
        pg.connect_timeout(Duration::from_secs(10));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pollhook-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot start the database runtime: {e}")))?;
        let tls = tls()?;
        let manager = Manager::from_config(
            pg,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot build the connection pool: {e}")))?;
        let backend = PgBackend {
            rt: Some(rt),
            pool,
            instance: instance.to_owned(),
            lease: config.lease,
            held: Mutex::new(HashMap::new()),
            history: AtomicBool::new(true),
            started_ms: crate::delivery::now_ms(),
        };
        backend.run(async {
            let mut client = backend.pool.get().await.map_err(pool_err)?;
            schema::migrate(&mut client, &backend.instance).await
        })?;
        Ok(backend)
    }

    /// Runs a database future to completion from any thread: directly on a plain thread (the
    /// writer) or in a `Store::read` on the blocking pool, on a scoped helper thread when called
    /// from a tokio worker (which must not block on another runtime; only loading a source's
    /// state at its start does that).
    fn run<T: Send>(
        &self,
        f: impl Future<Output = Result<T, StoreError>> + Send,
    ) -> Result<T, StoreError> {
        let Some(rt) = self.rt.as_ref() else {
            return Err(StoreError::WriterGone);
        };
        if super::writer::may_block() {
            return rt.block_on(f);
        }
        std::thread::scope(|s| {
            s.spawn(|| rt.block_on(f))
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    fn logging(&self) -> bool {
        self.history.load(Ordering::Relaxed)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_err)
    }

    /// The fencing epoch this instance holds for `source`, and the handover time (taken: a
    /// later load of the same lease, a restarted task, polls on its own schedule).
    fn epoch(&self, source: &str) -> Option<(i64, Option<i64>)> {
        let mut held = self.held.lock().ok()?;
        let entry = held.get_mut(source)?;
        Some((entry.0, entry.1.take()))
    }
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio forbids inside another runtime.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// TLS for `sslmode=require` and `prefer`: rustls with the platform's roots.
fn tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let config = rustls::ClientConfig::builder()
        .with_platform_verifier()
        .map_err(|e| StoreError::Backend(format!("cannot load TLS roots: {e}")))?
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

impl Backend for PgBackend {
    fn apply(&self, ops: &mut [WriteOp]) -> Result<Vec<WriteResult>, StoreError> {
        self.run(self.apply_ops(ops))
    }

    fn load_source(&self, source: &str) -> Result<SourceSnapshot, StoreError> {
        self.run(self.read_source(source))
    }

    fn item_data(
        &self,
        source: &str,
        keys: &[&str],
    ) -> Result<HashMap<String, Vec<u8>>, StoreError> {
        self.run(self.read_item_data(source, keys))
    }

    fn pending(&self) -> Result<Vec<OutboxRow>, StoreError> {
        self.run(self.read_rows("pollhook_outbox", true))
    }

    fn pending_headers(&self) -> Result<Vec<OutboxRow>, StoreError> {
        self.run(self.read_rows("pollhook_outbox", false))
    }

    fn outbox_row(&self, seq: u64) -> Result<Option<OutboxRow>, StoreError> {
        self.run(self.read_outbox_row(seq))
    }

    fn dead(&self) -> Result<Vec<OutboxRow>, StoreError> {
        self.run(self.read_rows("pollhook_dead", true))
    }

    fn dead_headers(&self) -> Result<Vec<OutboxRow>, StoreError> {
        self.run(self.read_rows("pollhook_dead", false))
    }

    fn set_history(&self, on: bool) {
        self.history.store(on, Ordering::Relaxed);
    }

    fn history(&self, query: &HistoryQuery) -> Result<Vec<HistoryRecord>, StoreError> {
        self.run(self.read_history(query))
    }

    fn event(&self, event_id: &str) -> Result<Vec<EventDelivery>, StoreError> {
        self.run(self.read_event(event_id))
    }

    fn export(
        &self,
        sink: &mut dyn FnMut(crate::store::Dump) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // The sink runs on this thread: lines are gathered on the database runtime first.
        let mut lines = Vec::new();
        self.run(self.export_all(&mut |line| {
            lines.push(line);
            Ok(())
        }))?;
        lines.into_iter().try_for_each(sink)
    }

    fn import(&self, lines: &[crate::store::Dump]) -> Result<usize, StoreError> {
        self.run(self.import_all(lines))
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.lease)
    }

    fn instance(&self) -> &str {
        &self.instance
    }

    fn heartbeat(&self, sources: &[String]) -> Result<Heartbeat, StoreError> {
        self.run(self.beat(sources))
    }

    fn release(&self, handover: &[(String, Option<i64>)]) -> Result<(), StoreError> {
        self.run(self.release_some(handover))
    }

    fn claim(&self, limit: usize, mine: bool) -> Result<Vec<OutboxRow>, StoreError> {
        self.run(self.claim_rows(limit, mine))
    }

    fn instances(&self) -> Result<Vec<InstanceInfo>, StoreError> {
        self.run(self.read_instances())
    }

    fn holder(&self, source: &str) -> Result<Option<String>, StoreError> {
        self.run(self.read_holder(source))
    }

    fn step_down(&self) -> Result<(), StoreError> {
        self.run(self.release_all())
    }
}

/// Shared by the submodules: a seq as stored (PostgreSQL has no unsigned integers).
fn seq_i(seq: u64) -> i64 {
    seq as i64
}

/// A stored seq or revision.
fn seq_u(v: i64) -> u64 {
    v as u64
}

type Rows = Vec<OutboxRow>;

//! Wiring and start/stop order of `pollhook run`, live reload, and supervision.
//!
//! Start: open the store → load pending outbox rows into the dispatcher → start the settle
//! writer and dispatcher → bind the admin API → start one task per source → READY=1.
//! Reload (SIGHUP or `POST /v1/reload`): validate the file first; a rejected file leaves the old
//! config running and its problems on `/readyz`; an accepted one updates destinations in the
//! dispatcher and starts, stops or restarts only the sources that changed. Pending outbox rows
//! are never dropped. Stop (token cancelled): STOPPING=1, sources stop at once, the dispatcher
//! drains in-flight deliveries up to [`DRAIN_DEADLINE`], the settle writer flushes, the store
//! closes. A task that dies brings the daemon down with its name, so its supervisor restarts it.

pub mod alerts;
mod cluster;
mod housekeeping;
mod sources;
pub mod supervise;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState, Controls, ReloadRequest};
use crate::config::{self, Config, Destinations};
use crate::delivery::{DispatchCmd, Dispatcher, now_ms, settle_loop};
use crate::poller::{self, PollContext};
use crate::shutdown::DRAIN_DEADLINE;
use crate::status::Registry;
use crate::store::{self, Store, StoreError};
use sources::SourceSet;
use supervise::supervised;

/// How often expired dead letters, tombstones and removed sources are purged, at most.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(3600);

/// How often the dispatcher's queue is reconciled with the store's outbox.
const RECONCILE_EVERY: Duration = Duration::from_secs(300);
/// How often a step of delivery-log pruning runs.
const HISTORY_PRUNE_EVERY: Duration = Duration::from_secs(2);
/// Records a pruning step looks at, at most.
const HISTORY_PRUNE_BUDGET: usize = 5_000;
/// How often the metrics recorder drains its histograms when nothing scrapes.
const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(10);

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The state store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An HTTP client could not be built (TLS roots unavailable).
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The admin API could not listen.
    #[error("cannot listen for the admin API on {addr}; change admin.listen or set it to off")]
    Admin {
        /// Address.
        addr: String,
        /// Bind error.
        #[source]
        source: std::io::Error,
    },
    /// The path of this executable (for the jq worker) is unknown.
    #[error("cannot find this executable to start the jq worker")]
    Exe(#[source] std::io::Error),
    /// A task ended when it should not have.
    #[error(
        "task {0} stopped unexpectedly; pollhook is stopping so that its supervisor restarts it"
    )]
    TaskDied(String),
}

/// Looks up environment variables for `${VAR}` expansion on reload.
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// How the daemon is started.
#[derive(Default)]
pub struct Options {
    /// The config file, for reloads (`None`: reload is refused).
    pub config_path: Option<PathBuf>,
    /// Environment for reloads (default: the process environment).
    pub env: Option<EnvLookup>,
    /// A listener for the admin API instead of binding `admin.listen` (tests pass port 0).
    pub admin_listener: Option<std::net::TcpListener>,
    /// The pollhook binary that evaluates jq programs (`pollhook jq-worker`); default: this
    /// executable (tests running the daemon in-process pass the real binary).
    pub jq_worker: Option<PathBuf>,
}

/// Runs pollhook with `config` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    // Install the metrics recorder before anything records.
    if config.postgres.is_some() {
        crate::telemetry::set_instance(&config.instance);
    }
    let _ = crate::telemetry::handle();
    for w in &config.warnings {
        tracing::warn!(warning = %w, "risky config");
    }
    let (rows_tx, rows_rx) = mpsc::unbounded_channel();
    let claims_tx = rows_tx.clone();
    let store = store::open_config(&config, Some(rows_tx))?;
    store.backend().set_history(config.history.enabled());
    let registry = Arc::new(Registry::default());
    registry.counting_since();
    let (signals_tx, signals_rx) = mpsc::unbounded_channel();
    let signals = crate::telemetry::Signals::new(signals_tx);
    let jq_exe = match options.jq_worker {
        Some(exe) => exe,
        None => std::env::current_exe().map_err(DaemonError::Exe)?,
    };
    let inputs = DeliveryInputs {
        store: &store,
        registry: &registry,
        signals: &signals,
        jq_exe,
    };
    let delivery = Delivery::start(&config, inputs, rows_rx)?;
    if store.backend().lease().is_some() {
        let claims = crate::delivery::claimer(store.clone(), claims_tx, delivery.stop.clone());
        tokio::spawn(claims);
    }

    let controls: Controls = Arc::new(RwLock::new(HashMap::new()));
    let (reload_tx, reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let admin_stop = CancellationToken::new();
    let admin_state = AdminState {
        registry: registry.clone(),
        store: store.clone(),
        controls: controls.clone(),
        dispatch: delivery.commands.clone(),
        reload: reload_tx,
        token: config.admin.token.clone(),
        destinations: delivery.dests.clone(),
        page_secret: admin::page_secret(),
        loopback: false,
        listen: None,
        hosts: config.admin.hosts.clone(),
        session_ttl: config.admin.session,
        sessions: Default::default(),
    };
    let admin_task = start_admin(
        &config,
        options.admin_listener,
        admin_state,
        admin_stop.clone(),
    )
    .await?;

    let (alerts_tx, alerts_rx) = tokio::sync::watch::channel(config.alerts.clone());
    let alerts_stop = CancellationToken::new();
    let alerts_task = tokio::spawn(
        alerts::AlertTask {
            signals: signals_rx,
            config: alerts_rx,
            store: store.clone(),
            destinations: delivery.dests.clone(),
            stop: alerts_stop.clone(),
        }
        .run(),
    );
    let ctx = Arc::new(PollContext {
        store: store.clone(),
        client: upstream_client(&config.hosts)?,
        registry: registry.clone(),
        limits: Arc::new(poller::Limits::new(&config.hosts)),
        destinations: delivery.dests.clone(),
        signals,
        processing: Arc::new(tokio::sync::Semaphore::new(poller::PROCESSING_PERMITS)),
        baselines: Arc::new(tokio::sync::Semaphore::new(poller::BASELINE_SLOTS)),
        grid: Default::default(),
    });
    let (exit_tx, exit_rx) = mpsc::unbounded_channel();
    let mut sources = SourceSet::new(ctx, controls, shutdown.child_token(), exit_tx);
    let mut membership = cluster::Membership::default();
    let owned = membership
        .owned(&store, &mut sources, &config.sources)
        .await?;
    sources.reconcile(&owned).await?;
    store
        .mark_removed(config.sources.keys().cloned().collect(), now_ms())
        .await?;
    registry.set_ready(true);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let where_ = match &config.postgres {
        Some(_) => format!("PostgreSQL (instance {})", config.instance),
        None => config.state.display().to_string(),
    };
    tracing::info!(sources = sources.len(), destinations = config.destinations.len(), state = %where_, "pollhook running");

    let Delivery {
        commands: dispatch,
        task: dispatch_task,
        stop: dispatch_stop,
        settle: settle_task,
        dests,
    } = delivery;
    let mut daemon = Daemon {
        config,
        path: options.config_path,
        env: options.env,
        store: store.clone(),
        registry: registry.clone(),
        dispatch,
        dests,
        sources,
        membership,
        alerts: alerts_tx,
    };
    let died = daemon
        .supervise(&shutdown, reload_rx, exit_rx, dispatch_task)
        .await;

    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    registry.set_ready(false);
    shutdown.cancel();
    let handover = cluster::Membership::handover(&daemon.sources);
    daemon.sources.stop_all().await;
    dispatch_stop.cancel();
    if let Some(task) = died.1 {
        let _ = task.await;
    }
    let _ = settle_task.await;
    admin_stop.cancel();
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    drop(daemon);
    alerts_stop.cancel();
    let _ = alerts_task.await;
    store.flush().await;
    let released = store.read(move |b| b.release(&handover).and_then(|()| b.step_down()));
    if let Err(e) = released.await {
        tracing::warn!(error = %e, "cannot give up this instance's leases; they expire by themselves");
    }
    store.close().await;
    tracing::info!("pollhook stopped");
    match died.0 {
        Some(what) => {
            tracing::error!(task = %what, "task died");
            Err(DaemonError::TaskDied(what))
        }
        None => Ok(()),
    }
}

/// The running delivery side: the supervised dispatcher and the settle writer.
/// What the delivery side is started with.
struct DeliveryInputs<'a> {
    store: &'a Store,
    registry: &'a Arc<Registry>,
    signals: &'a crate::telemetry::Signals,
    jq_exe: PathBuf,
}

struct Delivery {
    commands: mpsc::UnboundedSender<DispatchCmd>,
    task: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
    settle: tokio::task::JoinHandle<()>,
    /// The current destinations, shared with the pollers (their jq programs) and the
    /// dispatcher's supervisor (a restarted dispatcher starts with the config in force).
    dests: Destinations,
}

impl Delivery {
    /// Starts the settle writer and the dispatcher, supervised: a dispatcher that panics is
    /// rebuilt from the store's outbox (a row it was sending may be sent again, with the same
    /// id and body).
    fn start(
        config: &Config,
        inputs: DeliveryInputs<'_>,
        rows: crate::delivery::RowReceiver,
    ) -> Result<Delivery, DaemonError> {
        let DeliveryInputs {
            store,
            registry,
            signals,
            jq_exe,
        } = inputs;
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let client = crate::http::destination_client().map_err(DaemonError::Client)?;
        let dests: Destinations = Arc::new(RwLock::new(config.destinations.clone()));
        let settle = tokio::spawn(settle_loop(store.clone(), settle_rx));
        let stop = CancellationToken::new();
        // Shared by the runs of the supervised dispatcher: a run that panics drops its guard.
        let inputs = Arc::new(tokio::sync::Mutex::new((rows, commands_rx)));
        let (store, registry, token, shared, signals) = (
            store.clone(),
            registry.clone(),
            stop.clone(),
            dests.clone(),
            signals.clone(),
        );
        let task = tokio::spawn(async move {
            supervised("dispatcher", "dispatcher", &registry, &token, || {
                let current: Vec<_> = shared
                    .read()
                    .map(|d| d.values().cloned().collect())
                    .unwrap_or_default();
                let parts = crate::delivery::Parts {
                    store: store.clone(),
                    client: client.clone(),
                    settle_tx: settle_tx.clone(),
                    jq_exe: jq_exe.clone(),
                    registry: registry.clone(),
                };
                let (inputs, token, signals) = (inputs.clone(), token.clone(), signals.clone());
                async move {
                    let mut guard = inputs.lock_owned().await;
                    let (rows, commands) = &mut *guard;
                    let mut dispatcher = Dispatcher::new(&current, parts);
                    dispatcher.signals = signals;
                    match dispatcher.load_pending() {
                        Ok(n) => tracing::info!(pending = n, "dispatcher started"),
                        Err(e) => panic!("cannot read the outbox: {e}"),
                    }
                    dispatcher.run(rows, commands, token, DRAIN_DEADLINE).await;
                }
            })
            .await;
        });
        Ok(Delivery {
            commands,
            task,
            stop,
            settle,
            dests,
        })
    }
}

/// The upstream client, keeping as many idle connections per host as the largest `concurrency`
/// any host is allowed (hosts added by a reload later get at most that many reused).
fn upstream_client(
    hosts: &std::collections::BTreeMap<String, config::HostLimits>,
) -> Result<reqwest::Client, DaemonError> {
    let idle = hosts
        .values()
        .filter_map(|h| h.concurrency)
        .fold(crate::http::DEFAULT_HOST_CONCURRENCY, usize::max);
    crate::http::upstream_client(idle).map_err(DaemonError::Client)
}

async fn start_admin(
    config: &Config,
    given: Option<std::net::TcpListener>,
    state: AdminState,
    stop: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, DaemonError> {
    let listener = match (given, config.admin.listen) {
        (Some(l), _) => {
            let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
            l.set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(l))
                .map_err(|source| DaemonError::Admin { addr, source })?
        }
        (None, Some(addr)) => tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Admin {
                addr: addr.to_string(),
                source,
            })?,
        (None, None) => return Ok(None),
    };
    let mut state = state;
    if let Ok(addr) = listener.local_addr() {
        state.loopback = addr.ip().is_loopback();
        state.listen = Some(addr);
        tracing::info!(%addr, token = state.token.is_some(), "admin API listening; status page at http://{addr}/");
    }
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = admin::serve(listener, state, stop).await {
            tracing::error!(error = %e, "admin API stopped");
        }
    })))
}

/// The running daemon's mutable parts.
struct Daemon {
    config: Config,
    path: Option<PathBuf>,
    env: Option<EnvLookup>,
    store: Store,
    registry: Arc<Registry>,
    dispatch: mpsc::UnboundedSender<DispatchCmd>,
    dests: Destinations,
    sources: SourceSet,
    /// Which sources this instance holds (shared stores).
    membership: cluster::Membership,
    /// The `alerts:` in force, for the alerts task.
    alerts: tokio::sync::watch::Sender<Option<config::Alerts>>,
}

/// What ended supervision: the name of a task that died, and the dispatcher task if it is still
/// to be awaited.
type Ended = (Option<String>, Option<tokio::task::JoinHandle<()>>);

impl Daemon {
    /// Waits for a stop signal, a reload, a task death, or a timer (watchdog, housekeeping).
    async fn supervise(
        &mut self,
        shutdown: &CancellationToken,
        mut reloads: mpsc::Receiver<ReloadRequest>,
        mut exits: mpsc::UnboundedReceiver<sources::Exit>,
        mut dispatch_task: tokio::task::JoinHandle<()>,
    ) -> Ended {
        let mut hup = hangups();
        let watchdog = sd_notify::watchdog_enabled()
            .map(|d| d / 2)
            .unwrap_or(Duration::from_secs(3600));
        let mut watchdog = tokio::time::interval(watchdog);
        let mut housekeeping =
            tokio::time::interval(housekeeping::housekeeping_every(&self.config));
        let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
        let mut upkeep = tokio::time::interval(METRICS_UPKEEP_EVERY);
        let mut history = tokio::time::interval(HISTORY_PRUNE_EVERY);
        let every = cluster::Membership::every(&self.store);
        let mut heartbeat = tokio::time::interval(every.unwrap_or(Duration::from_secs(3600)));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return (None, Some(dispatch_task)),
                Some((name, asked)) = exits.recv() => {
                    if !asked && !shutdown.is_cancelled() {
                        return (Some(format!("source {name}")), Some(dispatch_task));
                    }
                }
                done = &mut dispatch_task => {
                    let why = done.err().map_or("returned".to_owned(), |e| e.to_string());
                    return (Some(format!("dispatcher ({why})")), None);
                }
                Some(reply) = reloads.recv() => {
                    let _ = reply.send(self.reload().await);
                }
                Some(()) = recv_hangup(&mut hup) => {
                    let _ = self.reload().await;
                }
                _ = watchdog.tick() => {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
                _ = housekeeping.tick() => self.housekeeping().await,
                _ = reconcile.tick() => self.reconcile(),
                // Histograms and summaries drain only on upkeep; without a scraper they would
                // grow for ever.
                _ = upkeep.tick() => crate::telemetry::handle().run_upkeep(),
                _ = history.tick() => self.prune_history().await,
                _ = heartbeat.tick(), if every.is_some() => {
                    self.rebalance().await;
                    if self.membership.waiting > 0 {
                        heartbeat.reset_after(cluster::HANDOVER_BEAT);
                    }
                }
            }
        }
    }

    /// Validates the config file and applies it, or keeps the old one and reports why.
    async fn reload(&mut self) -> Result<(), Vec<String>> {
        let result = self.try_reload().await;
        match &result {
            Ok(()) => self.registry.set_reload_errors(Vec::new()),
            Err(problems) => {
                tracing::error!(problems = %problems.join("; "), "config reload rejected; the previous config keeps running");
                self.registry.set_reload_errors(problems.clone());
            }
        }
        result
    }

    async fn try_reload(&mut self) -> Result<(), Vec<String>> {
        let path = self.path.clone().ok_or_else(|| {
            vec!["this daemon was started without a config file; nothing to reload".to_owned()]
        })?;
        let process_env = |name: &str| std::env::var(name).ok();
        let loaded = match &self.env {
            Some(env) => config::load_with(&path, env.as_ref()),
            None => config::load_with(&path, &process_env),
        };
        let new = loaded.map_err(|e| match e.problems().as_slice() {
            [] => vec![e.to_string()],
            list => list.iter().map(|p| p.to_string()).collect(),
        })?;
        if new.state != self.config.state
            || new.postgres != self.config.postgres
            || new.instance != self.config.instance
        {
            return Err(vec![
                "state, store and instance: changing where state is kept needs a restart".into(),
            ]);
        }
        if new.admin != self.config.admin {
            tracing::warn!("admin settings changed; they take effect at the next restart");
        }
        let known: HashSet<&String> = self.config.destinations.keys().collect();
        let added: HashSet<&String> = new
            .destinations
            .keys()
            .filter(|d| !known.contains(d))
            .collect();
        // On a shared store the claimer finds them.
        let rows = if added.is_empty() || self.store.backend().lease().is_some() {
            Vec::new()
        } else {
            let pending = self
                .store
                .backend()
                .pending_headers()
                .map_err(|e| vec![e.to_string()])?;
            pending
                .into_iter()
                .filter(|r| added.contains(&r.destination))
                .collect()
        };
        let dests: Vec<_> = new.destinations.values().cloned().collect();
        if let Ok(mut shared) = self.dests.write() {
            shared.clone_from(&new.destinations);
        }
        let _ = self
            .dispatch
            .send(DispatchCmd::Destinations { dests, rows });
        let owned = self
            .membership
            .owned(&self.store, &mut self.sources, &new.sources)
            .await
            .map_err(|e| vec![e.to_string()])?;
        let changes = self
            .sources
            .reconcile(&owned)
            .await
            .map_err(|e| vec![e.to_string()])?;
        self.store
            .mark_removed(new.sources.keys().cloned().collect(), now_ms())
            .await
            .map_err(|e| vec![e.to_string()])?;
        tracing::info!(added = ?changes.added, removed = ?changes.removed, changed = ?changes.changed, "config reloaded");
        self.store.backend().set_history(new.history.enabled());
        self.alerts.send_replace(new.alerts.clone());
        self.config = Config {
            admin: self.config.admin.clone(),
            ..new
        };
        Ok(())
    }

    /// Heartbeat on a shared store: runs the sources this instance holds now.
    async fn rebalance(&mut self) {
        let owned = self
            .membership
            .owned(&self.store, &mut self.sources, &self.config.sources)
            .await;
        let result = match owned {
            Ok(owned) => self.sources.reconcile(&owned).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "heartbeat failed; will try again");
        }
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

#[cfg(unix)]
fn hangups() -> Hangups {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangups() -> Hangups {
    None
}

#[cfg(unix)]
async fn recv_hangup(hup: &mut Hangups) -> Option<()> {
    match hup {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn recv_hangup(_: &mut Hangups) -> Option<()> {
    std::future::pending().await
}

//! The running sources: one task per source, started, stopped and restarted as the config
//! changes. A task reports its exit on a channel, so the daemon can tell a stop it asked for
//! from a task that died.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::Controls;
use crate::config::Source;
use crate::poller::{Mailbox, PollContext, Poller};
use crate::store::StoreError;

use super::supervise::supervised;

/// A task's exit: (source name, whether it was asked to stop).
pub type Exit = (String, bool);

struct Running {
    source: Arc<Source>,
    /// Its scheduled polls per second when it started.
    rate: f64,
    token: CancellationToken,
    handle: JoinHandle<()>,
}

/// The set of running source tasks.
pub struct SourceSet {
    running: HashMap<String, Running>,
    ctx: Arc<PollContext>,
    controls: Controls,
    root: CancellationToken,
    exits: mpsc::UnboundedSender<Exit>,
    /// The running sources' scheduled polls per second (fits the timer grid).
    rate: f64,
}

/// A source's scheduled polls per second.
fn rate(source: &Source) -> f64 {
    let interval = source.schedule.interval(chrono::Utc::now());
    1.0 / interval.as_secs_f64().max(1e-3)
}

/// What a reconcile changed.
#[derive(Debug, Default)]
pub struct Changes {
    /// Sources started.
    pub added: Vec<String>,
    /// Sources stopped (their state is kept).
    pub removed: Vec<String>,
    /// Sources restarted with new settings.
    pub changed: Vec<String>,
}

impl SourceSet {
    /// An empty set; tasks get child tokens of `root` and report exits on `exits`.
    pub fn new(
        ctx: Arc<PollContext>,
        controls: Controls,
        root: CancellationToken,
        exits: mpsc::UnboundedSender<Exit>,
    ) -> Self {
        SourceSet {
            running: HashMap::new(),
            ctx,
            controls,
            root,
            exits,
            rate: 0.0,
        }
    }

    /// Starts a supervised task for `source`, loading its stored state. A panic in the task
    /// restarts it from the stored state (see `supervise.rs`).
    pub fn start(&mut self, source: Arc<Source>) -> Result<(), StoreError> {
        // Boxed, as is every large state the task holds across an await: thousands of idle
        // tasks should each cost a few hundred bytes, not the size of their busiest moment.
        let first = Box::new(Poller::load(source.clone(), &self.ctx)?);
        // Shared by the runs of one supervised task; closed when the task ends for good.
        let (tx, inbox) = Mailbox::new();
        let token = self.root.child_token();
        let (ctx, task_token, exits, src) = (
            self.ctx.clone(),
            token.clone(),
            self.exits.clone(),
            source.clone(),
        );
        let handle = tokio::spawn(async move {
            let task = format!("source {}", src.name);
            let mut first = Some(first);
            let registry = ctx.registry.clone();
            supervised("source", &task, &registry, &task_token, || {
                let (ctx, token, src, inbox) =
                    (ctx.clone(), task_token.clone(), src.clone(), &inbox);
                let given = first.take();
                async move {
                    let poller = match given {
                        Some(p) => *p,
                        // A restart reloads the stored state: whatever the dead run held in
                        // memory is rebuilt from what was committed.
                        None => {
                            Box::pin(ctx.store.flush()).await;
                            match Poller::load(src.clone(), &ctx) {
                                Ok(p) => p,
                                Err(e) => panic!("cannot reload the source's state: {e}"),
                            }
                        }
                    };
                    Box::pin(poller.run(ctx, inbox, token)).await;
                }
            })
            .await;
            let _ = exits.send((src.name.clone(), task_token.is_cancelled()));
        });
        if let Ok(mut controls) = self.controls.write() {
            controls.insert(source.name.clone(), tx);
        }
        let rate = rate(&source);
        self.rate += rate;
        self.ctx.grid.fit(self.rate);
        self.running.insert(
            source.name.clone(),
            Running {
                source,
                rate,
                token,
                handle,
            },
        );
        Ok(())
    }

    /// Stops a source's task and waits for it to end (a poll in flight is abandoned; its commit
    /// either landed or did not, and the next task reloads the stored state).
    pub async fn stop(&mut self, name: &str) {
        if let Ok(mut controls) = self.controls.write() {
            controls.remove(name);
        }
        if let Some(r) = self.running.remove(name) {
            self.rate = (self.rate - r.rate).max(0.0);
            self.ctx.grid.fit(self.rate);
            r.token.cancel();
            let _ = r.handle.await;
            // A commit the task asked for may still be queued: the next task for this source
            // must load the state after it.
            self.ctx.store.flush().await;
        }
        self.ctx.registry.remove(name);
    }

    /// Brings the running set in line with `sources`.
    pub async fn reconcile(
        &mut self,
        sources: &BTreeMap<String, Arc<Source>>,
    ) -> Result<Changes, StoreError> {
        let mut changes = Changes::default();
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            match sources.get(&name) {
                None => {
                    self.stop(&name).await;
                    changes.removed.push(name);
                }
                Some(new) if **new != *self.running[&name].source => {
                    self.stop(&name).await;
                    self.start(new.clone())?;
                    changes.changed.push(name);
                }
                Some(_) => {}
            }
        }
        for (name, source) in sources {
            if !self.running.contains_key(name) {
                self.start(source.clone())?;
                changes.added.push(name.clone());
            }
        }
        Ok(changes)
    }

    /// Stops every task.
    pub async fn stop_all(&mut self) {
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            self.stop(&name).await;
        }
    }

    /// The request budgets every source shares.
    pub fn limits(&self) -> &crate::poller::Limits {
        &self.ctx.limits
    }

    /// Names of the running sources.
    pub fn names(&self) -> Vec<String> {
        self.running.keys().cloned().collect()
    }

    /// When a running source's next scheduled poll is due, unix ms.
    pub fn next_poll_ms(&self, name: &str) -> Option<i64> {
        Some(
            self.ctx
                .registry
                .source(name)?
                .next_poll?
                .0
                .timestamp_millis(),
        )
    }

    /// Number of running sources.
    pub fn len(&self) -> usize {
        self.running.len()
    }
}

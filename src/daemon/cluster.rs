//! Membership in a shared store (design §8): which configured sources this instance runs.
//!
//! On an engine one process owns (redb) every configured source runs here. On a shared one
//! (PostgreSQL) a heartbeat every third of the lease period renews this instance's leases and
//! claims and returns the sources it holds; the source tasks follow: a source given up is
//! stopped, one taken is started from the stored state, and one whose lease epoch changed
//! (it was held by another instance meanwhile) is restarted so it reloads what that instance
//! committed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::sources::SourceSet;
use crate::config::Source;
use crate::store::{Store, StoreError};

/// This instance's share of the configured sources.
#[derive(Default)]
pub struct Membership {
    /// Lease epochs of the sources held, as of the last heartbeat.
    epochs: HashMap<String, u64>,
    /// Sources that belong here but another instance still holds, at the last heartbeat.
    pub waiting: usize,
}

/// How soon the heartbeat runs again while sources are on their way here.
pub const HANDOVER_BEAT: Duration = Duration::from_millis(200);

impl Membership {
    /// A clean stop on a shared store: the running sources' next due polls, taken before their
    /// tasks stop, so the instances that take them over poll on the same schedule.
    pub fn handover(running: &SourceSet) -> Vec<(String, Option<i64>)> {
        running
            .names()
            .into_iter()
            .map(|n| {
                let due = running.next_poll_ms(&n);
                (n, due)
            })
            .collect()
    }

    /// How often the heartbeat runs on a shared store (`None`: never; everything is local).
    pub fn every(store: &Store) -> Option<Duration> {
        store.backend().lease().map(|l| l / 3)
    }

    /// The configured sources this instance should run now: all of them on a local store;
    /// on a shared one, those the heartbeat says it holds (sources whose epoch changed are
    /// stopped first, so the caller's reconcile restarts them from the stored state).
    pub async fn owned(
        &mut self,
        store: &Store,
        running: &mut SourceSet,
        sources: &BTreeMap<String, Arc<Source>>,
    ) -> Result<BTreeMap<String, Arc<Source>>, StoreError> {
        if store.backend().lease().is_none() {
            return Ok(sources.clone());
        }
        let names: Vec<String> = sources.keys().cloned().collect();
        let beat = store.read(move |b| b.heartbeat(&names)).await?;
        self.waiting = beat.waiting;
        running.limits().set_share(beat.live);
        let held: HashMap<String, u64> = beat.held.into_iter().collect();
        // Sources that moved to another instance: stop their tasks first, then hand them over
        // with the time each was due to poll next.
        let leaving: Vec<String> = self
            .epochs
            .keys()
            .filter(|n| !held.contains_key(*n))
            .cloned()
            .collect();
        let mut handover = Vec::with_capacity(leaving.len());
        for name in leaving {
            let due = running.next_poll_ms(&name);
            running.stop(&name).await;
            handover.push((name, due));
        }
        if !handover.is_empty() {
            store.read(move |b| b.release(&handover)).await?;
        }
        for (name, epoch) in &held {
            if self.epochs.get(name).is_some_and(|old| old != epoch) {
                tracing::info!(source = %name, epoch, "source changed hands meanwhile; reloading its state");
                running.stop(name).await;
            }
        }
        let gained = held
            .keys()
            .filter(|n| !self.epochs.contains_key(*n))
            .count();
        let lost = self
            .epochs
            .keys()
            .filter(|n| !held.contains_key(*n))
            .count();
        if gained > 0 || lost > 0 {
            tracing::info!(
                instance = store.backend().instance(),
                held = held.len(),
                gained,
                lost,
                "source leases changed"
            );
        }
        self.epochs = held;
        Ok(sources
            .iter()
            .filter(|(name, _)| self.epochs.contains_key(*name))
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect())
    }
}

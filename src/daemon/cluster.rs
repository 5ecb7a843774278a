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
}

impl Membership {
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
        let held: HashMap<String, u64> = store
            .read(move |b| b.heartbeat(&names))
            .await?
            .into_iter()
            .collect();
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

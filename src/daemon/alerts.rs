//! Alerts as webhooks (design §6a, `alerts:`): pollhook's own operational events —
//! `pollhook.source.failing` / `.recovered`, `pollhook.source.held`,
//! `pollhook.destination.failing` / `.recovered`, `pollhook.event.dead` — queued through the same
//! durable, signed pipeline as any event (source `pollhook`, shaped by the destination's `body`
//! and `filter` when it has them).
//!
//! [`Episodes`] is the pure part: it turns the stream of [`Signal`]s into alerts, one per
//! episode (a failing source alerts once when it reaches `after` failures in a row and once more
//! when it recovers).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::config::{Alerts, Destinations};
use crate::extract::ContentHash;
use crate::store::{Delivery, NewEvent, PollCommit, SourceMeta, Store};
use crate::telemetry::Signal;

/// The source name of alert events.
pub const ALERT_SOURCE: &str = "pollhook";

/// One alert to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Event type, e.g. `pollhook.source.failing`.
    pub kind: &'static str,
    /// What it is about (`source/NAME`, `destination/NAME`, or an event id): the event's key.
    pub subject: String,
    /// The event's `data`.
    pub data: Value,
}

#[derive(Debug, Default)]
struct Run {
    failures: u32,
    firing: bool,
    held: bool,
}

/// Failure runs per source and destination.
#[derive(Debug, Default)]
pub struct Episodes {
    sources: HashMap<String, Run>,
    destinations: HashMap<String, Run>,
}

impl Episodes {
    /// What `signal` means with `after` failures in a row counting as failing.
    pub fn observe(&mut self, signal: Signal, after: u32) -> Option<Alert> {
        match signal {
            Signal::SourcePolled { source, error } => {
                let run = self.sources.entry(source.clone()).or_default();
                let subject = format!("source/{source}");
                match error {
                    None => {
                        run.failures = 0;
                        run.held = false;
                        std::mem::take(&mut run.firing).then(|| Alert {
                            kind: "pollhook.source.recovered",
                            subject,
                            data: json!({ "source": source }),
                        })
                    }
                    Some(error) => {
                        run.failures += 1;
                        (run.failures >= after && !run.firing).then(|| {
                            run.firing = true;
                            Alert {
                                kind: "pollhook.source.failing",
                                subject,
                                data: json!({
                                    "source": source,
                                    "failures": run.failures,
                                    "error": error,
                                }),
                            }
                        })
                    }
                }
            }
            Signal::SourceHeld { source, reason } => {
                let run = self.sources.entry(source.clone()).or_default();
                (!std::mem::replace(&mut run.held, true)).then(|| Alert {
                    kind: "pollhook.source.held",
                    subject: format!("source/{source}"),
                    data: json!({ "source": source, "reason": reason }),
                })
            }
            Signal::DestinationAttempt { destination, error } => {
                let run = self.destinations.entry(destination.clone()).or_default();
                let subject = format!("destination/{destination}");
                match error {
                    None => {
                        run.failures = 0;
                        std::mem::take(&mut run.firing).then(|| Alert {
                            kind: "pollhook.destination.recovered",
                            subject,
                            data: json!({ "destination": destination }),
                        })
                    }
                    Some(error) => {
                        run.failures += 1;
                        (run.failures >= after && !run.firing).then(|| {
                            run.firing = true;
                            Alert {
                                kind: "pollhook.destination.failing",
                                subject,
                                data: json!({
                                    "destination": destination,
                                    "failures": run.failures,
                                    "error": error,
                                }),
                            }
                        })
                    }
                }
            }
            // An alert that cannot be delivered is not alerted about (no loop).
            Signal::EventDead { source, .. } if source == ALERT_SOURCE => None,
            Signal::EventDead {
                source,
                event_id,
                destination,
                reason,
            } => Some(Alert {
                kind: "pollhook.event.dead",
                subject: event_id.clone(),
                data: json!({
                    "source": source,
                    "event": event_id,
                    "destination": destination,
                    "reason": reason,
                }),
            }),
        }
    }
}

/// The commit queuing `alert` to `config.to`.
fn commit(alert: &Alert, config: &Alerts) -> PollCommit {
    let now = Utc::now();
    let revision = now.timestamp_millis().max(0) as u64;
    let hash = ContentHash(*blake3::hash(alert.data.to_string().as_bytes()).as_bytes());
    let id = crate::event::event_id(ALERT_SOURCE, &alert.subject, revision, &hash);
    let body = json!({
        "type": alert.kind,
        "timestamp": crate::event::timestamp(now),
        "source": ALERT_SOURCE,
        "id": id,
        "key": alert.subject,
        "revision": revision,
        "data": alert.data,
    });
    PollCommit {
        source: ALERT_SOURCE.to_owned(),
        meta: SourceMeta::default(),
        items: Vec::new(),
        events: vec![NewEvent {
            id,
            kind: alert.kind,
            key: alert.subject.clone(),
            revision,
            body: Arc::from(body.to_string().into_bytes()),
            deliveries: config.to.iter().map(|d| Delivery::envelope(d)).collect(),
        }],
        now_ms: now.timestamp_millis(),
        fence: 0,
    }
}

/// Everything the alerts task needs.
pub struct AlertTask {
    /// Signals from the pollers and the dispatcher.
    pub signals: mpsc::UnboundedReceiver<Signal>,
    /// The `alerts:` in force (reloads replace it).
    pub config: watch::Receiver<Option<Alerts>>,
    /// Where alerts are queued.
    pub store: Store,
    /// Destinations (their jq programs shape alerts too: the dispatcher renders them).
    pub destinations: Destinations,
    /// Ends the task (before the store closes).
    pub stop: tokio_util::sync::CancellationToken,
}

impl AlertTask {
    /// Runs until stopped or every signal sender is gone.
    pub async fn run(mut self) {
        let mut episodes = Episodes::default();
        loop {
            let signal = tokio::select! {
                _ = self.stop.cancelled() => return,
                signal = self.signals.recv() => match signal {
                    Some(signal) => signal,
                    None => return,
                },
            };
            let Some(config) = self.config.borrow().clone() else {
                continue;
            };
            let Some(alert) = episodes.observe(signal, config.after) else {
                continue;
            };
            tracing::info!(kind = alert.kind, subject = %alert.subject, "alert");
            let mut commit = commit(&alert, &config);
            if let Ok(dests) = self.destinations.read() {
                commit.defer_renders(|name| dests.get(name).is_some_and(|d| d.programmed()));
            }
            if let Err(e) = self.store.emit(commit).await {
                tracing::error!(error = %e, kind = alert.kind, "cannot queue an alert");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn polled(error: Option<&str>) -> Signal {
        Signal::SourcePolled {
            source: "s".into(),
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn one_alert_per_episode() {
        let mut e = Episodes::default();
        assert_eq!(e.observe(polled(Some("x")), 3), None);
        assert_eq!(e.observe(polled(Some("x")), 3), None);
        let a = e.observe(polled(Some("x")), 3).unwrap();
        assert_eq!(a.kind, "pollhook.source.failing");
        assert_eq!(e.observe(polled(Some("x")), 3), None, "once per episode");
        let r = e.observe(polled(None), 3).unwrap();
        assert_eq!(r.kind, "pollhook.source.recovered");
        assert_eq!(e.observe(polled(None), 3), None);
        let held = Signal::SourceHeld {
            source: "s".into(),
            reason: "r".into(),
        };
        assert!(e.observe(held.clone(), 3).is_some());
        assert_eq!(e.observe(held.clone(), 3), None);
        e.observe(polled(None), 3);
        assert!(e.observe(held, 3).is_some(), "a new hold is a new episode");
        let dead = |source: &str| Signal::EventDead {
            source: source.into(),
            event_id: "evt_1".into(),
            destination: "d".into(),
            reason: "HTTP 400".into(),
        };
        assert!(e.observe(dead("s"), 3).is_some());
        assert_eq!(e.observe(dead(ALERT_SOURCE), 3), None, "no alert loop");
    }
}

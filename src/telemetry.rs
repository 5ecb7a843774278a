//! Every metric pollhook exports, by name, and the Prometheus recorder. Labels are bounded by
//! the config: source, destination, outcome, type — never a URL or an event id.
//!
//! The `metrics` facade needs one process-wide recorder; it is installed once, the first time a
//! daemon starts, and shared by every daemon in the process (tests run several).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Build information, value 1, label `version`.
pub const BUILD_INFO: &str = "pollhook_build_info";
/// Polls by `source` and `outcome` (changed, unchanged, not_modified, failed).
pub const POLLS: &str = "pollhook_polls_total";
/// Poll duration by `source`, seconds.
pub const POLL_DURATION: &str = "pollhook_poll_duration_seconds";
/// How late scheduled polls start, by `source`, seconds.
pub const SCHEDULE_LAG: &str = "pollhook_schedule_lag_seconds";
/// Changes detected by `source` and `type` (created, updated, deleted).
pub const CHANGES: &str = "pollhook_changes_total";
/// Delivery attempts by `destination` and `outcome` (delivered, retry, dead).
pub const DELIVERIES: &str = "pollhook_deliveries_total";
/// Detection-to-delivery latency by `destination`, seconds.
pub const DELIVERY_LATENCY: &str = "pollhook_delivery_latency_seconds";
/// Pending outbox rows by `destination`.
pub const OUTBOX_DEPTH: &str = "pollhook_outbox_depth";
/// Age of the oldest pending row by `destination`, seconds.
pub const OUTBOX_OLDEST_AGE: &str = "pollhook_outbox_oldest_age_seconds";
/// Dead letters by `destination`.
pub const DEAD_LETTERS: &str = "pollhook_dead_letters";

/// Pauses asked for by upstream rate-limit signals, by `host`.
pub const RATE_LIMIT_WAITS: &str = "pollhook_upstream_rate_limit_waits_total";

/// Supervised tasks restarted after a panic, by `task` (source, dispatcher, writer).
pub const TASK_RESTARTS: &str = "pollhook_task_restarts_total";

/// Stranded outbox rows found (and queued) by the periodic reconcile; should stay 0.
pub const OUTBOX_STRANDED: &str = "pollhook_outbox_stranded_total";

/// Rows pruned by retention, by `what` (tombstone, source).
pub const PRUNED: &str = "pollhook_pruned_total";

/// Histogram buckets, seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static INSTANCE: OnceLock<String> = OnceLock::new();

/// Labels every metric with `instance` (several instances on one store, design §8); takes
/// effect only when called before the recorder is installed (the first [`handle`]).
pub fn set_instance(name: &str) {
    let _ = INSTANCE.set(name.to_owned());
}

/// The process-wide Prometheus handle, installing the recorder on first use.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            if let Some(name) = INSTANCE.get() {
                builder = builder.add_global_label("instance", name);
            }
            let builder = builder.set_buckets(&BUCKETS);
            // Only an invalid (empty) bucket list fails; BUCKETS is not empty.
            let recorder = builder.expect("valid buckets").build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            describe();
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(BUILD_INFO, "pollhook build information");
    describe_counter!(POLLS, "Polls by source and outcome");
    describe_histogram!(POLL_DURATION, Unit::Seconds, "Poll duration");
    describe_histogram!(
        SCHEDULE_LAG,
        Unit::Seconds,
        "How late scheduled polls start"
    );
    describe_counter!(CHANGES, "Changes detected by source and type");
    describe_counter!(DELIVERIES, "Delivery attempts by destination and outcome");
    describe_histogram!(
        DELIVERY_LATENCY,
        Unit::Seconds,
        "Detection-to-delivery latency"
    );
    describe_gauge!(OUTBOX_DEPTH, "Pending outbox rows");
    describe_gauge!(
        OUTBOX_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest pending row"
    );
    describe_gauge!(DEAD_LETTERS, "Dead letters");
    describe_counter!(
        OUTBOX_STRANDED,
        "Stranded outbox rows found by the periodic reconcile"
    );
    describe_counter!(
        PRUNED,
        "Tombstones and removed sources pruned by tombstone_ttl"
    );
    describe_counter!(TASK_RESTARTS, "Supervised tasks restarted after a panic");
    describe_counter!(
        RATE_LIMIT_WAITS,
        "Pauses asked for by upstream rate-limit signals"
    );
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-text payload".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_metrics_are_rendered() {
        let h = handle();
        metrics::counter!(POLLS, "source" => "unit", "outcome" => "changed").increment(1);
        let t = std::thread::spawn(|| {
            metrics::counter!(POLLS, "source" => "unit2", "outcome" => "failed").increment(1)
        });
        t.join().unwrap();
        let text = h.render();
        assert!(
            text.contains("pollhook_polls_total{source=\"unit\",outcome=\"changed\"} 1"),
            "{text}"
        );
        assert!(text.contains("source=\"unit2\""), "{text}");
    }
}

/// Something an operator may want to be told about, reported by the pollers and the dispatcher
/// to the alerts task (design §6a, `alerts:`), which decides when an episode starts and ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A poll ended: `error` is `None` when it succeeded.
    SourcePolled {
        /// Source name.
        source: String,
        /// Why it failed.
        error: Option<String>,
    },
    /// The flood guard held a source.
    SourceHeld {
        /// Source name.
        source: String,
        /// Why.
        reason: String,
    },
    /// A delivery attempt ended: `error` is `None` when it was delivered.
    DestinationAttempt {
        /// Destination name.
        destination: String,
        /// Why it failed.
        error: Option<String>,
    },
    /// A delivery was dead-lettered.
    EventDead {
        /// Source of the event.
        source: String,
        /// Event id.
        event_id: String,
        /// Destination name.
        destination: String,
        /// Why.
        reason: String,
    },
}

/// One source's metric handles, registered once when its task starts: a poll records into them
/// without building label sets or looking keys up in the registry.
pub struct SourceMetrics {
    /// `pollhook_schedule_lag_seconds` (one histogram for all sources: a histogram per source
    /// costs kilobytes each and thousands of series in Prometheus).
    pub lag: metrics::Histogram,
    /// `pollhook_poll_duration_seconds` (one histogram for all sources).
    pub duration: metrics::Histogram,
    /// `pollhook_polls_total{source, outcome}` for each outcome, in [`POLL_OUTCOMES`] order,
    /// registered on the outcome's first poll (a labelled counter costs a few hundred bytes and
    /// most sources only ever see two or three outcomes).
    polls: [Option<metrics::Counter>; 5],
    source: String,
}

/// Every `outcome` label of `pollhook_polls_total`.
pub const POLL_OUTCOMES: [&str; 5] = [
    crate::status::outcome::CHANGED,
    crate::status::outcome::UNCHANGED,
    crate::status::outcome::NOT_MODIFIED,
    crate::status::outcome::FAILED,
    crate::status::outcome::HELD,
];

impl SourceMetrics {
    /// Registers `source`'s handles.
    pub fn new(source: &str) -> SourceMetrics {
        SourceMetrics {
            lag: metrics::histogram!(SCHEDULE_LAG),
            duration: metrics::histogram!(POLL_DURATION),
            polls: Default::default(),
            source: source.to_owned(),
        }
    }

    /// Counts a poll with outcome label `outcome` (one of [`POLL_OUTCOMES`]).
    pub fn poll(&mut self, outcome: &'static str) {
        let Some(i) = POLL_OUTCOMES.iter().position(|o| *o == outcome) else {
            return;
        };
        let source = &self.source;
        self.polls[i]
            .get_or_insert_with(
                || metrics::counter!(POLLS, "source" => source.clone(), "outcome" => outcome),
            )
            .increment(1);
    }
}

/// Where [`Signal`]s go; a no-op when no alerts are configured.
#[derive(Debug, Clone, Default)]
pub struct Signals(Option<tokio::sync::mpsc::UnboundedSender<Signal>>);

impl Signals {
    /// Signals sent to `tx`.
    pub fn new(tx: tokio::sync::mpsc::UnboundedSender<Signal>) -> Signals {
        Signals(Some(tx))
    }

    /// Reports `signal` (never blocks).
    pub fn send(&self, signal: Signal) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(signal);
        }
    }
}

//! Every metric pollhook exports, by name, and the Prometheus recorder. Labels are bounded by
//! the config: source, destination, outcome, type — never a URL or an event id.
//!
//! The `metrics` facade needs one process-wide recorder; it is installed once, the first time a
//! daemon starts, and shared by every daemon in the process (tests run several).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::status::{SourceCounters, change, outcome};

/// Build information, value 1, label `version`.
pub const BUILD_INFO: &str = "pollhook_build_info";
/// Polls by `source` and `outcome` (changed, unchanged, not_modified, failed, held): counted
/// in the status registry and written by [`render_counters`], not kept in the recorder.
pub const POLLS: &str = "pollhook_polls_total";
/// Poll duration by `source`, seconds.
pub const POLL_DURATION: &str = "pollhook_poll_duration_seconds";
/// How late scheduled polls start, by `source`, seconds.
pub const SCHEDULE_LAG: &str = "pollhook_schedule_lag_seconds";
/// Changes sent as events by `source` and `type` (created, updated, deleted): counted in the
/// status registry and written by [`render_counters`].
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

/// How long each render of a destination's jq programs took (one round trip to its worker,
/// a batch of events), by destination; `_sum` is the time its programs ran.
pub const JQ_SECONDS: &str = "pollhook_jq_render_seconds";

/// Renders stopped by a limit, by destination and `limit` (time, memory, output, crash).
pub const JQ_LIMITS: &str = "pollhook_jq_limits_total";

/// Admin connections refused because too many had not finished their request headers.
pub const ADMIN_REFUSED: &str = "pollhook_admin_connections_refused_total";

/// Histogram buckets, seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static INSTANCE: OnceLock<String> = OnceLock::new();
/// The `instance` label the recorder was installed with, for the lines written beside it.
static RECORDED_INSTANCE: OnceLock<Option<String>> = OnceLock::new();

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
            let instance = RECORDED_INSTANCE.get_or_init(|| INSTANCE.get().cloned());
            if let Some(name) = instance {
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
    describe_histogram!(POLL_DURATION, Unit::Seconds, "Poll duration");
    describe_histogram!(
        SCHEDULE_LAG,
        Unit::Seconds,
        "How late scheduled polls start"
    );
    describe_counter!(DELIVERIES, "Delivery attempts by destination and outcome");
    describe_histogram!(
        JQ_SECONDS,
        Unit::Seconds,
        "Time a destination's jq programs ran per render"
    );
    describe_counter!(
        JQ_LIMITS,
        "Renders stopped by a jq limit, by destination and limit"
    );
    describe_counter!(
        ADMIN_REFUSED,
        "Admin connections refused: too many had not sent their headers"
    );
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

/// Appends the per-source counters to a rendering of the recorder, from the status registry:
/// `pollhook_polls_total{source,outcome}` and `pollhook_changes_total{source,type}`. A
/// source's counter costs 8 bytes in its status entry where a labelled counter in the recorder
/// costs a few hundred; as with counters registered on first use, a zero has no line.
pub fn render_counters(out: &mut String, sources: &[SourceCounters]) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    let instance = RECORDED_INSTANCE.get().cloned().flatten();
    family(
        out,
        POLLS,
        "Polls by source and outcome",
        "outcome",
        &instance,
        sources
            .iter()
            .map(|s| (&s.name, outcome::ALL.iter().zip(&s.polls))),
    );
    family(
        out,
        CHANGES,
        "Changes sent as events by source and type",
        "type",
        &instance,
        sources
            .iter()
            .map(|s| (&s.name, change::ALL.iter().zip(&s.changes))),
    );
}

/// One counter family labelled `source` and `label`.
fn family<'a, V: Iterator<Item = (&'a &'static str, &'a u64)>>(
    out: &mut String,
    metric: &str,
    help: &str,
    label: &str,
    instance: &Option<String>,
    sources: impl Iterator<Item = (&'a String, V)>,
) {
    use std::fmt::Write;
    let _ = write!(out, "# HELP {metric} {help}\n# TYPE {metric} counter\n");
    for (source, values) in sources {
        for (value, n) in values.filter(|(_, n)| **n > 0) {
            let _ = write!(
                out,
                "{metric}{{source=\"{}\",{label}=\"{value}\"",
                Escaped(source)
            );
            if let Some(name) = instance {
                let _ = write!(out, ",instance=\"{}\"", Escaped(name));
            }
            let _ = writeln!(out, "}} {n}");
        }
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped.
struct Escaped<'a>(&'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => std::fmt::Write::write_char(f, c)?,
            }
        }
        Ok(())
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

/// The metric handles a source task records into, taken once when it starts: a poll records
/// without building label sets or looking keys up in the registry. (Its poll counts by outcome
/// live in its status entry; see [`render_counters`].)
pub struct SourceMetrics {
    /// `pollhook_schedule_lag_seconds` (one histogram for all sources: a histogram per source
    /// costs kilobytes each and thousands of series in Prometheus).
    pub lag: metrics::Histogram,
    /// `pollhook_poll_duration_seconds` (one histogram for all sources).
    pub duration: metrics::Histogram,
}

impl SourceMetrics {
    /// Takes the handles.
    pub fn register() -> SourceMetrics {
        SourceMetrics {
            lag: metrics::histogram!(SCHEDULE_LAG),
            duration: metrics::histogram!(POLL_DURATION),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_metrics_are_rendered() {
        let h = handle();
        metrics::counter!(DELIVERIES, "destination" => "unit", "outcome" => "dead").increment(1);
        let t = std::thread::spawn(|| {
            metrics::counter!(DELIVERIES, "destination" => "unit2", "outcome" => "retry")
                .increment(1)
        });
        t.join().unwrap();
        let text = h.render();
        assert!(
            text.contains("pollhook_deliveries_total{destination=\"unit\",outcome=\"dead\"} 1"),
            "{text}"
        );
        assert!(text.contains("destination=\"unit2\""), "{text}");
    }

    #[test]
    fn source_counters_are_rendered_with_escaped_names_and_no_zero_lines() {
        let mut text = String::from("pollhook_build_info 1");
        let counters = [
            SourceCounters {
                name: "plain".to_owned(),
                polls: [2, 0, 5, 0, 0],
                changes: [0, 3, 0],
            },
            SourceCounters {
                name: "odd\"na\\me\n".to_owned(),
                polls: [0, 0, 0, 1, 0],
                changes: [0; 3],
            },
        ];
        render_counters(&mut text, &counters);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "pollhook_build_info 1",
                "# HELP pollhook_polls_total Polls by source and outcome",
                "# TYPE pollhook_polls_total counter",
                "pollhook_polls_total{source=\"plain\",outcome=\"changed\"} 2",
                "pollhook_polls_total{source=\"plain\",outcome=\"not_modified\"} 5",
                "pollhook_polls_total{source=\"odd\\\"na\\\\me\\n\",outcome=\"failed\"} 1",
                "# HELP pollhook_changes_total Changes sent as events by source and type",
                "# TYPE pollhook_changes_total counter",
                "pollhook_changes_total{source=\"plain\",type=\"updated\"} 3",
            ]
        );
    }
}

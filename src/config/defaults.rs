//! Every default and limit of `bridge.yaml`, in one place below the validators that apply them
//! (`validate.rs`, `destination.rs`, `source.rs`), so they import it and not each other.

use std::time::Duration;

/// Default request timeout for sources and destinations.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// Default `max_body`.
pub const DEFAULT_MAX_BODY: u64 = 16 << 20;
/// Default `max_run_body`: the bytes one paginated run receives in all (design §9).
pub const DEFAULT_MAX_RUN_BODY: u64 = 256 << 20;
/// Default `admin.session`: how long a status-page sign-in lasts.
pub const DEFAULT_SESSION: Duration = Duration::from_secs(12 * 3600);
/// Default `jq_timeout` of a destination: how long its programs may run for one event.
pub const DEFAULT_JQ_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest accepted `jq_timeout` (a program that needs longer is a bug, and a destination's
/// other events wait that long behind it).
pub const MAX_JQ_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `jq_memory`: the address space of a destination's jq worker process.
pub const DEFAULT_JQ_MEMORY: u64 = 512 << 20;
/// Smallest accepted `jq_memory` (the worker's own code and stack need some).
pub const MIN_JQ_MEMORY: u64 = 64 << 20;
/// Default `max_body` of a destination: the largest body its `body` program may produce.
pub const DEFAULT_RENDERED_MAX_BODY: u64 = 1 << 20;
/// Default jitter fraction.
pub const DEFAULT_JITTER: f64 = 0.10;
/// Default retry schedule of a destination.
pub const DEFAULT_RETRY: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];
/// Default in-flight requests per destination.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Default state file name.
pub const DEFAULT_STATE: &str = "pollhook.redb";
/// Default connections per instance to a PostgreSQL store.
pub const DEFAULT_PG_POOL: u32 = 16;
/// Default source lease on a PostgreSQL store.
pub const DEFAULT_PG_LEASE: Duration = Duration::from_secs(15);
/// Shortest accepted lease (renewal runs at a third of it).
pub const MIN_PG_LEASE: Duration = Duration::from_secs(1);
/// Shortest accepted `every`.
pub const MIN_EVERY: Duration = Duration::from_millis(100);
/// Longest accepted `every` (a year; longer intervals are a typo, and keep schedule math finite).
pub const MAX_EVERY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Defaults resolved once and applied to every source.
pub(super) struct Defaults {
    pub(super) timeout: Duration,
    pub(super) max_body: u64,
    pub(super) max_run_body: u64,
    pub(super) jitter: f64,
}
/// Longest step of a destination's `retry` schedule.
pub const MAX_RETRY_STEP: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most redirect hops one upstream request follows.
pub const MAX_REDIRECTS: usize = 5;
/// Default `tombstone_ttl`.
pub const DEFAULT_TOMBSTONE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Default `history.keep`.
pub const DEFAULT_HISTORY_KEEP: Duration = Duration::from_secs(7 * 86_400);

/// Default `history.max_records`.
pub const DEFAULT_HISTORY_MAX_RECORDS: u64 = 100_000;

/// Default `alerts.after`.
pub const DEFAULT_ALERTS_AFTER: u32 = 3;

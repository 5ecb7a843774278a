//! Request budgets and upstream rate-limit signals. Every request (each page too) passes a
//! [`Gate`]: the host's block (set by the upstream's signals), the source's own `rate`, the
//! host's shared `rate`, then a slot of the host's `concurrency`. Budgets are GCRA limiters
//! (governor); signals are parsed by the pure [`signal_wait`].
//!
//! Design notes: one [`HostGate`] per `host[:port]`, shared by every source of that host, so a
//! 429 seen by one source pauses all of them. While a host is blocked no request is sent; the
//! wait is re-checked after every other wait, since a signal can arrive meanwhile.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use reqwest::Url;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::{HostLimits, Rate};
use crate::http::{MAX_UPSTREAM_WAIT, capped_secs, parse_retry_after, parse_u64_saturating};
use crate::telemetry as m;

/// Shortest wait after a 403/429 that carries no rate-limit header.
pub const UNSIGNALLED_WAIT: Duration = Duration::from_secs(60);
/// Longest such wait after repeated strikes.
pub const MAX_UNSIGNALLED_WAIT: Duration = Duration::from_secs(3600);

/// governor's clock on tokio's time, so budgets follow `tokio::time::pause` in tests and every
/// wait is a tokio sleep.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

/// An instant of [`TokioClock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokioInstant(Instant);

impl std::ops::Add<Nanos> for TokioInstant {
    type Output = TokioInstant;
    fn add(self, n: Nanos) -> TokioInstant {
        TokioInstant(self.0 + Duration::from(n))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        Nanos::from(self.0.saturating_duration_since(earlier.0))
    }
    fn saturating_sub(&self, duration: Nanos) -> Self {
        TokioInstant(
            self.0
                .checked_sub(Duration::from(duration))
                .unwrap_or(self.0),
        )
    }
}

impl Clock for TokioClock {
    type Instant = TokioInstant;
    fn now(&self) -> TokioInstant {
        TokioInstant(Instant::now())
    }
}

/// A GCRA budget on tokio's clock.
pub type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<TokioInstant>>;

/// Waits until `limiter` admits one request.
async fn until_ready(limiter: &Limiter) {
    while let Err(not_until) = limiter.check() {
        tokio::time::sleep(not_until.wait_time_from(TokioClock.now())).await;
    }
}

fn limiter(rate: Rate) -> Limiter {
    let count = NonZeroU32::new(rate.count).unwrap_or(NonZeroU32::MIN);
    let period = (rate.per / rate.count.max(1)).max(Duration::from_nanos(1));
    // `with_period` only fails for a zero period, excluded above.
    let quota = Quota::with_period(period)
        .expect("non-zero period")
        .allow_burst(count);
    RateLimiter::direct_with_clock(quota, TokioClock)
}

/// The shared state of one upstream host.
pub struct HostGate {
    name: String,
    rate: Option<Limiter>,
    concurrency: Option<Arc<Semaphore>>,
    blocked_until: Mutex<Option<Instant>>,
    strikes: AtomicU32,
    /// Live instances sharing the host's `rate` (1 alone).
    share: Arc<AtomicU32>,
}

impl HostGate {
    /// A gate for host `name` with its configured limits.
    pub fn new(name: String, limits: HostLimits) -> HostGate {
        HostGate::shared(name, limits, Arc::new(AtomicU32::new(1)))
    }

    /// A gate whose `rate` is split between `share` live instances.
    fn shared(name: String, limits: HostLimits, share: Arc<AtomicU32>) -> HostGate {
        HostGate {
            share,
            name,
            rate: limits.rate.map(limiter),
            // Unset, a host still gets a bound, so a start with thousands of sources due at once
            // cannot open thousands of connections (each with its buffers) to one host.
            concurrency: Some(Arc::new(Semaphore::new(
                limits
                    .concurrency
                    .unwrap_or(crate::http::DEFAULT_HOST_CONCURRENCY),
            ))),
            blocked_until: Mutex::new(None),
            strikes: AtomicU32::new(0),
        }
    }

    /// Until when requests to this host wait, if they do.
    pub fn blocked_until(&self) -> Option<Instant> {
        let until = *self.blocked_until.lock().ok()?;
        until.filter(|u| *u > Instant::now())
    }

    fn block_for(&self, wait: Duration) {
        let wait = wait.min(MAX_UPSTREAM_WAIT);
        // Capped above, so this cannot overflow; saturate anyway rather than panic.
        let now = Instant::now();
        let until = now.checked_add(wait).unwrap_or(now);
        if let Ok(mut b) = self.blocked_until.lock() {
            *b = Some(b.map_or(until, |old| old.max(until)));
        }
        metrics::counter!(m::RATE_LIMIT_WAITS, "host" => self.name.clone()).increment(1);
        tracing::warn!(host = %self.name, wait_s = wait.as_secs_f64(), "upstream asked to slow down; pausing every source of this host");
    }
}

/// Every host's gate, created on first use.
pub struct Limits {
    config: BTreeMap<String, HostLimits>,
    hosts: Mutex<HashMap<String, Arc<HostGate>>>,
    /// Live instances sharing each host's `rate`.
    share: Arc<AtomicU32>,
}

impl Limits {
    /// Limits from the `hosts:` section.
    pub fn new(config: &BTreeMap<String, HostLimits>) -> Limits {
        Limits {
            config: config.clone(),
            hosts: Mutex::new(HashMap::new()),
            share: Arc::new(AtomicU32::new(1)),
        }
    }

    /// Splits every host's `rate` between `instances` live instances (a shared store): each
    /// spends that many cells of its budget per request.
    pub fn set_share(&self, instances: usize) {
        let n = u32::try_from(instances.max(1)).unwrap_or(u32::MAX);
        if self.share.swap(n, Ordering::Relaxed) != n {
            tracing::info!(
                instances = n,
                "host rate budgets split between live instances"
            );
        }
    }

    /// The gate of `url`'s host: configured as `host:port` or `host`, otherwise unlimited (but
    /// still subject to the upstream's signals).
    pub fn host(&self, url: &Url) -> Arc<HostGate> {
        let host = url.host_str().unwrap_or("").to_ascii_lowercase();
        let with_port = url.port_or_known_default().map(|p| format!("{host}:{p}"));
        let key = with_port
            .clone()
            .filter(|k| self.config.contains_key(k))
            .unwrap_or(host.clone());
        let limits = self.config.get(&key).copied().unwrap_or_default();
        let share = self.share.clone();
        let Ok(mut hosts) = self.hosts.lock() else {
            return Arc::new(HostGate::shared(key, limits, share));
        };
        hosts
            .entry(key.clone())
            .or_insert_with(|| Arc::new(HostGate::shared(key, limits, share)))
            .clone()
    }
}

/// Leave from a [`Gate`] to send one request: hold it for the whole request.
#[must_use = "the request must be sent while the admission is held"]
pub struct Admission(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

/// What one source's requests pass through.
pub struct Gate {
    host: Arc<HostGate>,
    source: Option<Limiter>,
    /// GitHub's `X-Poll-Interval` (seconds) from the last answer; 0 when absent.
    poll_interval_s: AtomicU32,
}

impl Gate {
    /// A gate for a source with its own `rate`, on `host`.
    pub fn new(host: Arc<HostGate>, rate: Option<Rate>) -> Gate {
        Gate {
            host,
            source: rate.map(limiter),
            poll_interval_s: AtomicU32::new(0),
        }
    }

    /// A gate with no budgets (preview).
    pub fn open(url: &Url) -> Gate {
        Gate::new(
            Arc::new(HostGate::new(
                url.host_str().unwrap_or("").to_owned(),
                HostLimits::default(),
            )),
            None,
        )
    }

    /// Waits until a request may be sent (see [`Gate::acquire`]).
    pub async fn admit(&self) -> Admission {
        Admission(self.acquire().await)
    }

    /// Waits until a request may be sent; hold the permit for the whole request.
    pub async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.wait_unblocked().await;
        if let Some(r) = &self.source {
            until_ready(r).await;
        }
        if let Some(r) = &self.host.rate {
            // With N instances sharing a store, each spends N cells per request: together
            // they stay within the host's budget (design §8).
            for _ in 0..self.host.share.load(Ordering::Relaxed).max(1) {
                until_ready(r).await;
            }
        }
        let permit = match &self.host.concurrency {
            Some(s) => s.clone().acquire_owned().await.ok(),
            None => None,
        };
        self.wait_unblocked().await;
        permit
    }

    async fn wait_unblocked(&self) {
        while let Some(until) = self.host.blocked_until() {
            tokio::time::sleep_until(until).await;
        }
    }

    /// The shortest interval the upstream asked this source to keep (`X-Poll-Interval`).
    pub fn poll_interval(&self) -> Option<Duration> {
        let secs = self.poll_interval_s.load(Ordering::Relaxed);
        (secs > 0).then(|| Duration::from_secs(u64::from(secs)))
    }

    /// Records an answer's rate-limit signals.
    pub fn observe(&self, status: u16, headers: &HeaderMap) {
        if let Some(secs) = header(headers, "x-poll-interval").and_then(parse_u64_saturating) {
            let secs = capped_secs(secs).as_secs();
            self.poll_interval_s
                .store(u32::try_from(secs).unwrap_or(u32::MAX), Ordering::Relaxed);
        }
        let strikes = self.host.strikes.load(Ordering::Relaxed);
        match signal_wait(status, headers, SystemTime::now(), strikes) {
            Some(Signal::Told(wait)) => self.host.block_for(wait),
            Some(Signal::Unsignalled(wait)) => {
                self.host.strikes.fetch_add(1, Ordering::Relaxed);
                self.host.block_for(wait);
            }
            None if (200..400).contains(&status) => self.host.strikes.store(0, Ordering::Relaxed),
            None => {}
        }
    }
}

/// Why and how long to stop sending to a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The upstream said how long.
    Told(Duration),
    /// A 403/429 without a rate-limit header: at least a minute, doubling per strike.
    Unsignalled(Duration),
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The pause an answer asks for: `Retry-After` on 429/503, `X-RateLimit-Remaining: 0` with
/// `X-RateLimit-Reset` (epoch seconds), the IETF `RateLimit: "name";r=0;t=N` or the older
/// `RateLimit-Remaining: 0` with `RateLimit-Reset: N`; a 403/429 with none of them waits at
/// least a minute, doubling with each strike up to an hour.
pub fn signal_wait(
    status: u16,
    headers: &HeaderMap,
    now: SystemTime,
    strikes: u32,
) -> Option<Signal> {
    let retry_after = header(headers, RETRY_AFTER.as_str()).and_then(|v| parse_retry_after(v, now));
    if let Some(wait) = retry_after.filter(|_| matches!(status, 429 | 503)) {
        return Some(Signal::Told(wait));
    }
    let reset = header(headers, "x-ratelimit-reset").and_then(parse_u64_saturating);
    if let Some(reset) = reset.filter(|_| header(headers, "x-ratelimit-remaining") == Some("0")) {
        let now_s = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        return Some(Signal::Told(capped_secs(
            reset.saturating_sub(now_s).max(1),
        )));
    }
    if let Some(wait) = header(headers, "ratelimit").and_then(ietf_wait) {
        return Some(Signal::Told(wait));
    }
    let reset = header(headers, "ratelimit-reset").and_then(parse_u64_saturating);
    if let Some(secs) = reset.filter(|_| header(headers, "ratelimit-remaining") == Some("0")) {
        return Some(Signal::Told(capped_secs(secs.max(1))));
    }
    if matches!(status, 403 | 429) {
        let wait = UNSIGNALLED_WAIT
            .saturating_mul(1 << strikes.min(6))
            .min(MAX_UNSIGNALLED_WAIT);
        return Some(Signal::Unsignalled(wait));
    }
    None
}

/// `RateLimit: "default";r=0;t=30` (several comma-separated policies allowed): the longest `t`
/// of a policy with `r=0`.
fn ietf_wait(value: &str) -> Option<Duration> {
    value
        .split(',')
        .filter_map(|item| {
            let params: Vec<(&str, &str)> = item
                .split(';')
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.trim(), v.trim()))
                .collect();
            let get = |k: &str| params.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
            (get("r")? == "0")
                .then(|| parse_u64_saturating(get("t")?))
                .flatten()
        })
        .max()
        .map(|t| capped_secs(t.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn reads_every_signal() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            signal_wait(429, &h(&[("retry-after", "7")]), now, 0),
            Some(Signal::Told(Duration::from_secs(7)))
        );
        assert_eq!(
            signal_wait(
                503,
                &h(&[(
                    "retry-after",
                    &httpdate::fmt_http_date(now + Duration::from_secs(9))
                )]),
                now,
                0
            ),
            Some(Signal::Told(Duration::from_secs(9)))
        );
        assert_eq!(
            signal_wait(
                200,
                &h(&[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "1000030")
                ]),
                now,
                0
            ),
            Some(Signal::Told(Duration::from_secs(30)))
        );
        assert_eq!(
            signal_wait(
                200,
                &h(&[
                    ("x-ratelimit-remaining", "5"),
                    ("x-ratelimit-reset", "1000030")
                ]),
                now,
                0
            ),
            None
        );
        assert_eq!(
            signal_wait(200, &h(&[("ratelimit", "\"default\";r=0;t=12")]), now, 0),
            Some(Signal::Told(Duration::from_secs(12)))
        );
        assert_eq!(
            signal_wait(200, &h(&[("ratelimit", "\"default\";r=3;t=12")]), now, 0),
            None
        );
        assert_eq!(
            signal_wait(
                200,
                &h(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "4")]),
                now,
                0
            ),
            Some(Signal::Told(Duration::from_secs(4)))
        );
    }

    use proptest::prelude::*;

    /// Checks that `sends` never beat a GCRA budget of `rate`: any two sends i < j are at least
    /// (j - i - (burst - 1)) emission intervals apart.
    fn within_budget(sends: &[Instant], rate: Rate) -> Result<(), String> {
        let interval = rate.per / rate.count;
        for i in 0..sends.len() {
            for j in i + 1..sends.len() {
                let allowed_free = (rate.count as usize).saturating_sub(1);
                let needed = (j - i).saturating_sub(allowed_free) as u32;
                let gap = sends[j] - sends[i];
                if gap + Duration::from_micros(1) < interval * needed {
                    return Err(format!(
                        "sends {i} and {j} are {gap:?} apart; {rate:?} needs {:?}",
                        interval * needed
                    ));
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// With time paused: over random budgets, request counts, think times and upstream
        /// replies, no request is sent faster than the source's or the host's budget, and none
        /// while the host is blocked by a signal.
        #[test]
        fn requests_respect_budgets_and_blocks(
            src in (1u32..5, 100u64..3000),
            host in (1u32..6, 100u64..3000),
            replies in proptest::collection::vec((0u8..8, 0u64..400, 1u64..4), 5..40),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            let result: Result<(), String> = rt.block_on(async {
                let src_rate = Rate { count: src.0, per: Duration::from_millis(src.1) };
                let host_rate = Rate { count: host.0, per: Duration::from_millis(host.1) };
                let gate_host = Arc::new(HostGate::new("h".into(), HostLimits { rate: Some(host_rate), concurrency: Some(1) }));
                let gate = Gate::new(gate_host, Some(src_rate));
                let mut sends = Vec::new();
                let mut blocked_until: Option<Instant> = None;
                for (kind, think_ms, retry_s) in replies {
                    let permit = gate.acquire().await;
                    let now = Instant::now();
                    if let Some(until) = blocked_until.filter(|u| now < *u) {
                        return Err(format!("sent at {now:?} while blocked until {until:?}"));
                    }
                    sends.push(now);
                    let mut headers = HeaderMap::new();
                    let status = match kind {
                        0 => {
                            headers.insert("retry-after", retry_s.to_string().parse().unwrap());
                            429
                        }
                        1 => 403,
                        _ => 200,
                    };
                    gate.observe(status, &headers);
                    if let Some(until) = gate.host.blocked_until() {
                        blocked_until = Some(blocked_until.map_or(until, |b| b.max(until)));
                    }
                    drop(permit);
                    tokio::time::sleep(Duration::from_millis(think_ms)).await;
                }
                within_budget(&sends, src_rate)?;
                within_budget(&sends, host_rate)
            });
            prop_assert!(result.is_ok(), "{}", result.unwrap_err());
        }
    }

    #[test]
    fn unsignalled_refusals_wait_a_minute_then_back_off() {
        let now = UNIX_EPOCH;
        assert_eq!(
            signal_wait(403, &HeaderMap::new(), now, 0),
            Some(Signal::Unsignalled(Duration::from_secs(60)))
        );
        assert_eq!(
            signal_wait(429, &HeaderMap::new(), now, 2),
            Some(Signal::Unsignalled(Duration::from_secs(240)))
        );
        assert_eq!(
            signal_wait(403, &HeaderMap::new(), now, 20),
            Some(Signal::Unsignalled(MAX_UNSIGNALLED_WAIT))
        );
        assert_eq!(signal_wait(500, &HeaderMap::new(), now, 0), None);
    }
}

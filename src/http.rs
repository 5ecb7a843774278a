//! HTTP pieces shared by the poller (upstreams) and delivery (destinations): the two client
//! builders, the TLS provider, error chains without URLs, and the parsing of every wait an
//! upstream or a receiver can ask for, with the caps that keep those waits finite.
//!
//! A leaf: it imports nothing of pollhook, so poller and delivery both build on it.
//!
//! Design notes: every number that arrives in a response header is untrusted. Waits are parsed
//! with checked arithmetic and capped at [`MAX_UPSTREAM_WAIT`], so no header can overflow an
//! `Instant` (a panic in a source task) or silence a source for years.

use std::time::{Duration, SystemTime};

/// `user-agent` of every request pollhook sends.
pub const USER_AGENT_VALUE: &str = concat!("pollhook/", env!("CARGO_PKG_VERSION"));

/// The longest pause any upstream or receiver signal can impose (`Retry-After`,
/// `X-RateLimit-Reset`, `RateLimit`, `X-Poll-Interval`): 24 hours.
pub const MAX_UPSTREAM_WAIT: Duration = Duration::from_secs(24 * 3600);

/// Installs the process-wide TLS crypto provider once (reqwest is built without a default one).
pub fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Requests in flight to one upstream host when `hosts.HOST.concurrency` is unset. 64 keeps
/// 10,000 polls a second to one host on schedule (lag p99 ≤ 4 ms in `cargo bench --bench
/// scale`) while a start with thousands of sources due opens at most 64 connections (each
/// ~50 KiB of hyper buffers and channels); a host that takes 500 ms to answer gets at most 128
/// polls a second at this default, which is also as hard as pollhook leans on anyone unasked.
pub const DEFAULT_HOST_CONCURRENCY: usize = 64;

/// The HTTP client for upstreams. It follows no redirect by itself: the poller follows them
/// hop by hop under the source's `follow_redirects` policy (credentials never leave the origin
/// they were configured for), and sends no `Referer`. `idle_per_host` is the most requests a
/// host may have in flight: as many keep-alive connections are kept, so a second's polls to one
/// host reuse them instead of connecting again (a connect costs more CPU than a 304).
pub fn upstream_client(idle_per_host: usize) -> Result<reqwest::Client, reqwest::Error> {
    install_crypto();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .pool_max_idle_per_host(idle_per_host)
        .build()
}

/// The HTTP client for destinations: never follows redirects (a 3xx is an answer).
pub fn destination_client() -> Result<reqwest::Client, reqwest::Error> {
    install_crypto();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .pool_max_idle_per_host(64)
        .build()
}

/// An error with its sources, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A reqwest error and its sources on one line, without the URL (query strings may carry
/// secrets).
pub fn request_error_chain(e: reqwest::Error) -> String {
    error_chain(&e.without_url())
}

/// `secs` seconds, capped at [`MAX_UPSTREAM_WAIT`].
pub fn capped_secs(secs: u64) -> Duration {
    Duration::from_secs(secs.min(MAX_UPSTREAM_WAIT.as_secs()))
}

/// Parses `Retry-After` (delay seconds or an HTTP date) relative to `now`, capped at
/// [`MAX_UPSTREAM_WAIT`]. A number too large for 64 bits is the cap, not an error.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(value.parse::<u64>().map_or(MAX_UPSTREAM_WAIT, capped_secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_UPSTREAM_WAIT),
    )
}

/// Parses a non-negative integer header value; digits beyond 64 bits saturate.
pub fn parse_u64_saturating(value: &str) -> Option<u64> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse::<u64>().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_retry_after_forms() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn huge_waits_are_capped() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        for v in ["99999999999999999999", "18446744073709551615", "86401"] {
            assert_eq!(parse_retry_after(v, now), Some(MAX_UPSTREAM_WAIT), "{v}");
        }
        let far = httpdate::fmt_http_date(now + Duration::from_secs(10 * 365 * 86400));
        assert_eq!(parse_retry_after(&far, now), Some(MAX_UPSTREAM_WAIT));
        assert_eq!(
            parse_u64_saturating("99999999999999999999999"),
            Some(u64::MAX)
        );
        assert_eq!(parse_u64_saturating("12x"), None);
    }
}

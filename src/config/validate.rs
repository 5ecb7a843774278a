//! Phase two of config loading: raw structs → validated domain types, with every cross-check
//! (exactly one schedule, destinations that exist, pointers that parse, secrets that decode).
//! All problems are collected; none stops the others from being found. This file holds the
//! top level, `admin` and `defaults`; `destination.rs` and `source.rs` the rest.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::check::{Checker, line_of};
use super::defaults::{
    DEFAULT_JITTER, DEFAULT_MAX_BODY, DEFAULT_STATE, DEFAULT_TIMEOUT, DEFAULT_TOMBSTONE_TTL,
    Defaults,
};
use super::destination::destination;
use super::raw::{RawAdmin, RawConfig, RawDefaults, RawHost};
use super::source::source;
use super::validated::{Admin, Config, HostLimits};

/// Validates a parsed file.
pub fn validate(raw: RawConfig, ck: &mut Checker<'_>) -> Option<Config> {
    let hosts = hosts(&raw.hosts, ck);
    let admin = admin(raw.admin.as_ref(), ck);
    let dead_letter_max_age = raw
        .dead_letter_max_age
        .as_ref()
        .and_then(|v| ck.duration("dead_letter_max_age", v));
    let tombstone_ttl = match &raw.tombstone_ttl {
        Some(v) => ck.duration("tombstone_ttl", v),
        None => Some(DEFAULT_TOMBSTONE_TTL),
    };
    let state = match &raw.state {
        Some(s) => ck.text("state", s).map(|p| ck.path(&p)),
        None => Some(ck.path(DEFAULT_STATE)),
    };
    let defaults = defaults(raw.defaults.unwrap_or_default(), ck);
    let mut destinations = BTreeMap::new();
    for (name, dest) in &raw.destinations {
        if let Some(d) = destination(name, dest, ck) {
            destinations.insert(name.clone(), Arc::new(d));
        }
    }
    let mut sources = BTreeMap::new();
    for (name, src) in &raw.sources {
        if let Some(s) = source(name, src, &defaults, &raw.destinations, ck) {
            sources.insert(name.clone(), Arc::new(s));
        }
    }
    if raw.sources.is_empty() {
        ck.problem("sources", None, None, "must declare at least one source, e.g. sources: { my-api: { url: ..., every: 60s, key: /id, to: [agent] } }");
    }
    let state = state?;
    let admin = admin?;
    let warnings = ck.warnings.iter().map(ToString::to_string).collect();
    ck.problems.is_empty().then_some(Config {
        warnings,
        state,
        admin,
        dead_letter_max_age,
        tombstone_ttl: tombstone_ttl?,
        hosts,
        destinations,
        sources,
    })
}

/// Default admin address.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9464";

fn admin(raw: Option<&Spanned<RawAdmin>>, ck: &mut Checker<'_>) -> Option<Admin> {
    let listen = match raw.and_then(|a| a.value.listen.as_ref()) {
        None => Some(DEFAULT_ADMIN_LISTEN.parse().ok()),
        Some(v) => match ck.text("admin.listen", v)?.trim() {
            "off" => Some(None),
            text => match text.parse::<std::net::SocketAddr>() {
                Ok(addr) => Some(Some(addr)),
                Err(_) => {
                    ck.bad(
                        "admin.listen",
                        v,
                        "host:port or off, e.g. listen: 127.0.0.1:9464",
                    );
                    None
                }
            },
        },
    };
    let token = match raw.and_then(|a| a.value.token.as_ref()) {
        Some(t) => ck
            .secret("admin.token", &t.value, line_of(&t.referenced))
            .filter(|s| !s.expose().is_empty()),
        None => None,
    };
    let listen = listen?;
    if let Some(addr) = listen.filter(|a| !a.ip().is_loopback())
        && token.is_none()
    {
        let line = raw.and_then(|a| a.value.listen.as_ref().and_then(|v| line_of(&v.referenced)));
        ck.problem(
            "admin.listen",
            line,
            Some(addr.to_string()),
            "a loopback address unless admin.token is set: the API can resend, purge and reload; \
             e.g. listen: 127.0.0.1:9464, or keep this address and add token: ${POLLHOOK_ADMIN_TOKEN}",
        );
        return None;
    }
    Some(Admin { listen, token })
}

fn hosts(
    raw: &BTreeMap<String, Spanned<RawHost>>,
    ck: &mut Checker<'_>,
) -> BTreeMap<String, HostLimits> {
    let mut out = BTreeMap::new();
    for (name, host) in raw {
        let p = format!("hosts.{name}");
        let rate = host
            .value
            .rate
            .as_ref()
            .and_then(|r| ck.rate(&format!("{p}.rate"), r));
        let concurrency = match &host.value.concurrency {
            Some(c) if c.value == 0 => {
                ck.problem(
                    &format!("{p}.concurrency"),
                    line_of(&c.referenced),
                    Some("0".into()),
                    "at least 1, e.g. concurrency: 4",
                );
                None
            }
            Some(c) => Some(c.value as usize),
            None => None,
        };
        out.insert(name.to_ascii_lowercase(), HostLimits { rate, concurrency });
    }
    out
}

fn defaults(raw: RawDefaults, ck: &mut Checker<'_>) -> Defaults {
    Defaults {
        timeout: raw
            .timeout
            .as_ref()
            .and_then(|v| ck.duration("defaults.timeout", v))
            .unwrap_or(DEFAULT_TIMEOUT),
        max_body: raw
            .max_body
            .as_ref()
            .and_then(|v| ck.size("defaults.max_body", v))
            .unwrap_or(DEFAULT_MAX_BODY),
        jitter: raw
            .jitter
            .as_ref()
            .and_then(|v| ck.percent("defaults.jitter", v))
            .unwrap_or(DEFAULT_JITTER),
    }
}

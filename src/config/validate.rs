//! Phase two of config loading: raw structs → validated domain types, with every cross-check
//! (exactly one schedule, destinations that exist, pointers that parse, secrets that decode).
//! All problems are collected; none stops the others from being found. This file holds the
//! top level, `admin` and `defaults`; `destination.rs` and `source.rs` the rest.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::check::{Checker, line_of};
use super::defaults::{
    DEFAULT_ALERTS_AFTER, DEFAULT_HISTORY_KEEP, DEFAULT_HISTORY_MAX_RECORDS, DEFAULT_JITTER,
    DEFAULT_MAX_BODY, DEFAULT_MAX_RUN_BODY, DEFAULT_SESSION, DEFAULT_STATE, DEFAULT_TIMEOUT,
    DEFAULT_TOMBSTONE_TTL, Defaults,
};
use super::destination::destination;
use super::raw::{RawAdmin, RawAlerts, RawConfig, RawDefaults, RawHistory, RawHost};
use super::source::source;
use super::validated::{Admin, Alerts, Config, History, HostLimits};

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
    let postgres = super::store::postgres(&raw, ck);
    let instance = super::store::instance(raw.instance.as_ref(), ck);
    let history = history(raw.history.as_ref(), ck);
    let alerts = alerts(raw.alerts.as_ref(), &raw, ck);
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
    let (postgres, instance) = (postgres?, instance?);
    let warnings = ck.warnings.iter().map(ToString::to_string).collect();
    ck.problems.is_empty().then_some(Config {
        warnings,
        state,
        postgres,
        instance,
        admin,
        dead_letter_max_age,
        tombstone_ttl: tombstone_ttl?,
        history: history?,
        alerts: alerts?,
        hosts,
        destinations,
        sources,
    })
}

fn history(raw: Option<&Spanned<RawHistory>>, ck: &mut Checker<'_>) -> Option<History> {
    let keep = match raw.and_then(|h| h.value.keep.as_ref()) {
        // `0s` / `off` turns the log off.
        Some(v) if matches!(v.value.trim(), "0" | "0s" | "off") => std::time::Duration::ZERO,
        Some(v) => ck.duration("history.keep", v)?,
        None => DEFAULT_HISTORY_KEEP,
    };
    let max_records = raw
        .and_then(|h| h.value.max_records.as_ref())
        .map_or(DEFAULT_HISTORY_MAX_RECORDS, |m| m.value);
    Some(History { keep, max_records })
}

fn alerts(
    raw: Option<&Spanned<RawAlerts>>,
    config: &RawConfig,
    ck: &mut Checker<'_>,
) -> Option<Option<Alerts>> {
    let Some(raw) = raw else {
        return Some(None);
    };
    let mut to = Vec::new();
    for (i, name) in raw.value.to.iter().enumerate() {
        let text = ck.text(&format!("alerts.to[{i}]"), name)?;
        if !config.destinations.contains_key(&text) {
            ck.bad(
                &format!("alerts.to[{i}]"),
                name,
                "the name of a destination declared under destinations:, e.g. to: [ops-agent]",
            );
            return None;
        }
        to.push(text);
    }
    if to.is_empty() {
        ck.problem(
            "alerts.to",
            line_of(&raw.referenced),
            None,
            "at least one destination, e.g. alerts: { to: [ops-agent], after: 3 }",
        );
        return None;
    }
    let after = match &raw.value.after {
        Some(a) if a.value == 0 => {
            ck.problem(
                "alerts.after",
                line_of(&a.referenced),
                Some("0".to_owned()),
                "at least 1, e.g. after: 3",
            );
            return None;
        }
        Some(a) => a.value,
        None => DEFAULT_ALERTS_AFTER,
    };
    Some(Some(Alerts { to, after }))
}

/// Default admin address.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9464";

/// `admin:`.
pub(super) fn admin(raw: Option<&Spanned<RawAdmin>>, ck: &mut Checker<'_>) -> Option<Admin> {
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
    let hosts = admin_hosts(raw, ck)?;
    let session = match raw.and_then(|a| a.value.session.as_ref()) {
        Some(v) => ck.duration("admin.session", v)?,
        None => DEFAULT_SESSION,
    };
    Some(Admin {
        listen,
        token,
        hosts,
        session,
    })
}

/// `admin.hosts`: DNS names the admin API answers to besides its own address (design §9), in
/// lowercase, without a port.
fn admin_hosts(raw: Option<&Spanned<RawAdmin>>, ck: &mut Checker<'_>) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut ok = true;
    for (i, v) in raw.map_or(&[][..], |a| &a.value.hosts).iter().enumerate() {
        let path = format!("admin.hosts[{i}]");
        let Some(name) = ck.text(&path, v) else {
            ok = false;
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        match valid {
            true => out.push(name),
            false => {
                ck.bad(
                    &path,
                    v,
                    "a DNS name without scheme or port, e.g. hosts: [pollhook.internal]",
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
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
        max_run_body: raw
            .max_run_body
            .as_ref()
            .and_then(|v| ck.size("defaults.max_run_body", v))
            .unwrap_or(DEFAULT_MAX_RUN_BODY),
        jitter: raw
            .jitter
            .as_ref()
            .and_then(|v| ck.percent("defaults.jitter", v))
            .unwrap_or(DEFAULT_JITTER),
    }
}

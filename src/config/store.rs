//! `store:` and `instance:` (design §8): a shared PostgreSQL store instead of the redb file, and
//! the name this instance goes by in leases, logs, metrics and `/v1/cluster`.

use serde_saphyr::Spanned;

use super::check::{Checker, line_of};
use super::defaults::{DEFAULT_PG_LEASE, DEFAULT_PG_POOL, MIN_PG_LEASE};
use super::raw::{RawConfig, Str};
use super::validated::{Postgres, Secret};

const STORE_EXAMPLE: &str =
    "store: { postgres: postgres://pollhook@db.internal/pollhook, pool: 16, lease: 15s }";

/// `store:`, when set: mutually exclusive with `state:`.
pub(super) fn postgres(raw: &RawConfig, ck: &mut Checker<'_>) -> Option<Option<Postgres>> {
    let Some(store) = &raw.store else {
        return Some(None);
    };
    let line = line_of(&store.referenced);
    if raw.state.is_some() {
        ck.problem(
            "store",
            line,
            None,
            format!("cannot be used together with state: (one store per deployment); remove state: or store:, e.g. {STORE_EXAMPLE}"),
        );
        return None;
    }
    let Some(url) = &store.value.postgres else {
        ck.missing("store.postgres", line, STORE_EXAMPLE);
        return None;
    };
    let url = postgres_url(url, ck)?;
    let pool = match &store.value.pool {
        Some(Spanned {
            value, referenced, ..
        }) if *value == 0 || *value > 1024 => {
            ck.problem(
                "store.pool",
                line_of(referenced),
                Some(value.to_string()),
                "between 1 and 1024 connections, e.g. pool: 16",
            );
            return None;
        }
        Some(p) => p.value as usize,
        None => DEFAULT_PG_POOL as usize,
    };
    let lease = match &store.value.lease {
        Some(v) => {
            let d = ck.duration("store.lease", v)?;
            if d < MIN_PG_LEASE {
                ck.bad("store.lease", v, "at least 1s, e.g. lease: 15s");
                return None;
            }
            d
        }
        None => DEFAULT_PG_LEASE,
    };
    Some(Some(Postgres { url, pool, lease }))
}

/// The connection URL, `${VAR}` expanded and parsed; never quoted in a problem (it may carry a
/// password).
fn postgres_url(value: &Str, ck: &mut Checker<'_>) -> Option<Secret> {
    let line = line_of(&value.referenced);
    let url = ck.secret("store.postgres", &value.value, line)?;
    let text = url.expose().trim();
    let is_url = text.starts_with("postgres://") || text.starts_with("postgresql://");
    if !is_url || text.parse::<tokio_postgres::Config>().is_err() {
        ck.problem(
            "store.postgres",
            line,
            None,
            "a PostgreSQL URL, e.g. postgres: postgres://pollhook@db.internal/pollhook (the password from ${PGPASSWORD} or in the URL as ${VAR})",
        );
        return None;
    }
    Some(url)
}

/// `instance:`, default the host name.
pub(super) fn instance(raw: Option<&Str>, ck: &mut Checker<'_>) -> Option<String> {
    let name = match raw {
        Some(v) => ck.text("instance", v)?,
        None => ck
            .env_var("HOSTNAME")
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .unwrap_or_else(|| "pollhook".to_owned()),
    };
    let name = name.trim().to_owned();
    let valid = !name.is_empty() && name.len() <= 128 && name.chars().all(|c| c.is_ascii_graphic());
    if !valid {
        let line = raw.and_then(|v| line_of(&v.referenced));
        ck.problem(
            "instance",
            line,
            Some(name),
            "1 to 128 printable characters without spaces, e.g. instance: ${HOSTNAME}",
        );
        return None;
    }
    Some(name)
}

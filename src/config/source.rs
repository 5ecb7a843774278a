//! Validation of `sources.<name>`: request (URL, method, headers, body, auth), schedule,
//! extraction pointers, emitted kinds and destinations.

use std::collections::BTreeMap;

use reqwest::header::{HeaderName, HeaderValue};
use serde_saphyr::Spanned;

use super::check::{Checker, is_loopback, line_of};
use super::defaults::{Defaults, MAX_EVERY, MIN_EVERY};
use super::raw::{RawAuth, RawDestination, RawSource, Str};
use super::validated::{
    Auth, EmitSet, FirstPoll, Include, Method, Paginate, Redirects, Request, Source,
};
use crate::extract::{ExtractSpec, Mode, Pointer};
use crate::schedule::{Schedule, parse_cron};

pub(super) fn source(
    name: &str,
    raw: &Spanned<RawSource>,
    defaults: &Defaults,
    dests: &BTreeMap<String, Spanned<RawDestination>>,
    ck: &mut Checker<'_>,
) -> Option<Source> {
    let p = |k: &str| format!("sources.{name}.{k}");
    let line = line_of(&raw.referenced);
    let s = &raw.value;
    let rate = match &s.rate {
        Some(r) => Some(ck.rate(&p("rate"), r)?),
        None => None,
    };
    let request = request(name, s, defaults, line, ck);
    let schedule = schedule(name, s, line, ck);
    let jitter = s
        .jitter
        .as_ref()
        .map_or(Some(defaults.jitter), |j| ck.percent(&p("jitter"), j));
    let extract = extract_spec(name, s, line, ck);
    let emit = emit(name, s, ck);
    let on_first_poll = match &s.on_first_poll {
        Some(v) => ck.choice(
            &p("on_first_poll"),
            v,
            &[("baseline", FirstPoll::Baseline), ("emit", FirstPoll::Emit)],
        ),
        None => Some(FirstPoll::Baseline),
    };
    let include = s
        .include
        .as_ref()
        .map(|i| Include {
            previous: i.previous,
            changes: i.changes,
        })
        .unwrap_or_default();
    let to = targets(name, s, dests, line, ck);
    let paginate = paginate(name, s, ck);
    let max_pages = match &s.max_pages {
        Some(m) if m.value == 0 => {
            ck.problem(
                &p("max_pages"),
                line_of(&m.referenced),
                Some("0".into()),
                "at least 1, e.g. max_pages: 50",
            );
            None
        }
        Some(m) => Some(m.value as usize),
        None => Some(DEFAULT_MAX_PAGES),
    };
    let max_changes = s
        .max_changes
        .as_ref()
        .map_or(DEFAULT_MAX_CHANGES, |m| m.value as usize);
    Some(Source {
        name: name.to_owned(),
        request: request?,
        schedule: schedule?,
        jitter: jitter?,
        extract: extract?,
        emit: emit?,
        on_first_poll: on_first_poll?,
        include,
        to: to?,
        paginate: paginate?,
        max_pages: max_pages?,
        max_changes,
        rate,
    })
}

fn request(
    name: &str,
    s: &RawSource,
    defaults: &Defaults,
    line: Option<u64>,
    ck: &mut Checker<'_>,
) -> Option<Request> {
    let p = |k: &str| format!("sources.{name}.{k}");
    let url = match &s.url {
        Some(u) => ck.url(&p("url"), u),
        None => {
            ck.missing(&p("url"), line, "url: https://api.example.com/items");
            None
        }
    };
    let method = match &s.method {
        Some(m) => ck.choice(
            &p("method"),
            m,
            &[("GET", Method::Get), ("POST", Method::Post)],
        ),
        None => Some(Method::Get),
    };
    let body = s
        .body
        .clone()
        .filter(|b| !b.is_null())
        .map(|b| expand_json(&p("body"), b, ck));
    let auth = s.auth.as_ref().and_then(|a| auth(&p("auth"), a, ck));
    if s.auth.is_some() && auth.is_none() {
        return None;
    }
    let redirects = match &s.follow_redirects {
        Some(v) => ck.choice(
            &p("follow_redirects"),
            v,
            &[
                ("same-origin", Redirects::SameOrigin),
                ("any", Redirects::Any),
                ("none", Redirects::Never),
            ],
        ),
        None => Some(Redirects::SameOrigin),
    };
    if let Some(u) = url
        .as_ref()
        .filter(|u| u.scheme() == "http" && !is_loopback(u))
    {
        let secret_header = s.headers.keys().any(|h| looks_secret(h));
        if auth.is_some() || secret_header {
            ck.warn(
                &p("url"),
                line,
                format!(
                    "credentials are sent over plain http to {}; use https unless this network is private",
                    u.host_str().unwrap_or("")
                ),
            );
        }
    }
    Some(Request {
        url: url?,
        method: method?,
        headers: ck.headers(&p("headers"), &s.headers)?,
        body: body.flatten(),
        auth,
        timeout: s
            .timeout
            .as_ref()
            .map_or(Some(defaults.timeout), |t| ck.duration(&p("timeout"), t))?,
        conditional: s.conditional.unwrap_or(true),
        redirects: redirects?,
        max_body: s
            .max_body
            .as_ref()
            .map_or(Some(defaults.max_body), |m| ck.size(&p("max_body"), m))?,
        max_run_body: s
            .max_run_body
            .as_ref()
            .map_or(Some(defaults.max_run_body), |m| {
                ck.size(&p("max_run_body"), m)
            })?,
    })
}

/// Expands `${VAR}` in every string of a JSON body.
fn expand_json(
    path: &str,
    value: serde_json::Value,
    ck: &mut Checker<'_>,
) -> Option<serde_json::Value> {
    use serde_json::Value;
    Some(match value {
        Value::String(s) => Value::String(ck.expand_at(path, &s, None)?),
        Value::Array(list) => Value::Array(
            list.into_iter()
                .map(|v| expand_json(path, v, ck))
                .collect::<Option<_>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| expand_json(path, v, ck).map(|v| (k, v)))
                .collect::<Option<_>>()?,
        ),
        other => other,
    })
}

fn auth(path: &str, raw: &Spanned<RawAuth>, ck: &mut Checker<'_>) -> Option<Auth> {
    let line = line_of(&raw.referenced);
    let a = &raw.value;
    let given = [a.bearer.is_some(), a.basic.is_some(), a.header.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if given != 1 {
        ck.problem(
            path,
            line,
            None,
            "exactly one of bearer, basic or header, e.g. auth: { bearer: \"${GITHUB_TOKEN}\" }",
        );
        return None;
    }
    if let Some(token) = &a.bearer {
        return ck
            .secret(&format!("{path}.bearer"), token, line)
            .map(Auth::Bearer);
    }
    if let Some(b) = &a.basic {
        let username = ck.expand_at(&format!("{path}.basic.username"), &b.username, line)?;
        let password = ck.secret(&format!("{path}.basic.password"), &b.password, line)?;
        return Some(Auth::Basic { username, password });
    }
    let h = a.header.as_ref()?;
    let value = ck.secret(&format!("{path}.header.value"), &h.value, line)?;
    match HeaderName::from_bytes(h.name.as_bytes()) {
        Ok(name) if HeaderValue::from_str(value.expose()).is_ok() => {
            Some(Auth::Header { name, value })
        }
        _ => {
            ck.problem(
                &format!("{path}.header"),
                line,
                None,
                "a valid header name and value, e.g. { name: X-Api-Key, value: \"${API_KEY}\" }",
            );
            None
        }
    }
}

fn schedule(
    name: &str,
    s: &RawSource,
    line: Option<u64>,
    ck: &mut Checker<'_>,
) -> Option<Schedule> {
    let p = |k: &str| format!("sources.{name}.{k}");
    match (&s.every, &s.cron) {
        (Some(_), Some(c)) => {
            ck.problem(
                &p("cron"),
                line_of(&c.referenced),
                None,
                "give exactly one of every or cron, not both",
            );
            None
        }
        (None, None) => {
            ck.missing(&p("every"), line, "every: 60s (or cron: \"*/5 * * * *\")");
            None
        }
        (Some(every), None) => {
            let d = ck.duration(&p("every"), every)?;
            if d < MIN_EVERY || d > MAX_EVERY {
                ck.bad(
                    &p("every"),
                    every,
                    "between 100ms and 365d, e.g. every: 60s",
                );
                return None;
            }
            Some(Schedule::Every(d))
        }
        (None, Some(cron)) => {
            let text = ck.text(&p("cron"), cron)?;
            match parse_cron(text.trim()) {
                Ok(schedule) => Some(schedule),
                Err(why) => {
                    ck.bad(&p("cron"), cron, format!("a 5-field crontab expression (or 6 with seconds first), e.g. \"*/5 * * * *\" ({why})"));
                    None
                }
            }
        }
    }
}

fn pointer(path: &str, value: &Str, ck: &mut Checker<'_>) -> Option<Pointer> {
    let text = ck.text(path, value)?;
    match Pointer::parse(&text) {
        Ok(p) => Some(p),
        Err(why) => {
            ck.bad(path, value, format!("{why}, e.g. /id or /data/items"));
            None
        }
    }
}

fn extract_spec(
    name: &str,
    s: &RawSource,
    line: Option<u64>,
    ck: &mut Checker<'_>,
) -> Option<ExtractSpec> {
    let p = |k: &str| format!("sources.{name}.{k}");
    let mode = match &s.mode {
        Some(m) => ck.choice(
            &p("mode"),
            m,
            &[("items", Mode::Items), ("document", Mode::Document)],
        )?,
        None => Mode::Items,
    };
    let root = Pointer::parse("").ok()?;
    let ignore = s
        .ignore
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, v)| pointer(&format!("{}[{i}]", p("ignore")), v, ck))
        .collect::<Option<Vec<_>>>();
    if mode == Mode::Document {
        for (key, value) in [
            ("items", &s.items),
            ("key", &s.key),
            ("version", &s.version),
        ] {
            if let Some(v) = value {
                ck.problem(
                    &p(key),
                    line_of(&v.referenced),
                    None,
                    "does not apply in mode: document (the whole body is one item); remove it",
                );
            }
        }
        return Some(ExtractSpec {
            mode,
            items: root.clone(),
            key: root,
            version: None,
            ignore: ignore?,
        });
    }
    let items = s
        .items
        .as_ref()
        .map_or(Some(root), |v| pointer(&p("items"), v, ck));
    let key = match &s.key {
        Some(k) => pointer(&p("key"), k, ck),
        None => {
            ck.missing(&p("key"), line, "key: /id (a JSON Pointer into each item)");
            None
        }
    };
    let version = match &s.version {
        Some(v) => Some(pointer(&p("version"), v, ck)?),
        None => None,
    };
    Some(ExtractSpec {
        mode,
        items: items?,
        key: key?,
        version,
        ignore: ignore?,
    })
}

fn emit(name: &str, s: &RawSource, ck: &mut Checker<'_>) -> Option<EmitSet> {
    let Some(list) = &s.emit else {
        return Some(EmitSet {
            created: true,
            updated: true,
            deleted: true,
        });
    };
    let mut set = EmitSet {
        created: false,
        updated: false,
        deleted: false,
    };
    let path = format!("sources.{name}.emit");
    for v in list {
        match ck.choice(
            &path,
            v,
            &[
                ("created", 0),
                ("updated", 1),
                ("deleted", 2),
                ("changed", 1),
            ],
        )? {
            0 => set.created = true,
            1 => set.updated = true,
            _ => set.deleted = true,
        }
    }
    Some(set)
}

fn targets(
    name: &str,
    s: &RawSource,
    dests: &BTreeMap<String, Spanned<RawDestination>>,
    line: Option<u64>,
    ck: &mut Checker<'_>,
) -> Option<Vec<String>> {
    let path = format!("sources.{name}.to");
    let Some(list) = s.to.as_ref().filter(|l| !l.is_empty()) else {
        ck.missing(&path, line, "to: [triage-agent] (names from destinations:)");
        return None;
    };
    let mut out = Vec::new();
    for v in list {
        let target = ck.text(&path, v)?;
        if !dests.contains_key(&target) {
            let known: Vec<&str> = dests.keys().map(String::as_str).collect();
            ck.bad(
                &path,
                v,
                format!("the name of a destination; known: [{}]", known.join(", ")),
            );
            return None;
        }
        if !out.contains(&target) {
            out.push(target);
        }
    }
    Some(out)
}

/// Default `max_changes`.
pub const DEFAULT_MAX_CHANGES: usize = 1000;

/// Default `max_pages`.
pub const DEFAULT_MAX_PAGES: usize = 50;

fn paginate(name: &str, s: &RawSource, ck: &mut Checker<'_>) -> Option<Option<Paginate>> {
    let path = format!("sources.{name}.paginate");
    let Some(raw) = &s.paginate else {
        return Some(None);
    };
    let line = line_of(&raw.referenced);
    let p = &raw.value;
    let example = "e.g. paginate: { link: next }, { cursor: { param: after, from: /meta/next } } or { page: { param: page, start: 1 } }";
    let given = [p.link.is_some(), p.cursor.is_some(), p.page.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if given != 1 {
        ck.problem(
            &path,
            line,
            None,
            format!("exactly one of link, cursor or page, {example}"),
        );
        return None;
    }
    if s.mode
        .as_ref()
        .is_some_and(|m| m.value.trim() == "document")
    {
        ck.problem(
            &path,
            line,
            None,
            "does not apply in mode: document; remove it",
        );
        return None;
    }
    if let Some(rel) = &p.link {
        if rel != "next" {
            ck.problem(
                &format!("{path}.link"),
                line,
                Some(format!("{rel:?}")),
                "next, e.g. paginate: { link: next }",
            );
            return None;
        }
        return Some(Some(Paginate::Link));
    }
    if let Some(c) = &p.cursor {
        let Ok(from) = Pointer::parse(&c.from) else {
            ck.problem(
                &format!("{path}.cursor.from"),
                line,
                Some(format!("{:?}", c.from)),
                "a JSON Pointer, e.g. /meta/next",
            );
            return None;
        };
        return Some(Some(Paginate::Cursor {
            param: c.param.clone(),
            from,
        }));
    }
    let page = p.page.as_ref()?;
    Some(Some(Paginate::Page {
        param: page.param.clone(),
        start: page.start.unwrap_or(1),
    }))
}

/// Whether a header name suggests a credential (`X-Api-Key`, `X-Auth-Token`, `Cookie`, ...).
fn looks_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "key", "token", "auth", "secret", "cookie", "password", "session",
    ]
    .iter()
    .any(|w| n.contains(w))
}

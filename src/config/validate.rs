//! Phase two of config loading: raw structs → validated domain types, with every cross-check
//! (exactly one schedule, destinations that exist, pointers that parse, secrets that decode).
//! All problems are collected; none stops the others from being found.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use reqwest::header::{HeaderName, HeaderValue};
use serde_saphyr::Spanned;

use super::check::{Checker, line_of};
use super::raw::{
    RawAdmin, RawAuth, RawConfig, RawDefaults, RawDestination, RawSecret, RawSource, Str,
};
use super::validated::{
    Admin, Auth, Config, Destination, EmitSet, FirstPoll, Include, Method, Request, Secret,
    SignatureMode, Source,
};
use crate::extract::{ExtractSpec, Mode, Pointer};
use crate::schedule::{Schedule, parse_cron};

/// Default request timeout for sources and destinations.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// Default `max_body`.
pub const DEFAULT_MAX_BODY: u64 = 16 << 20;
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
/// Shortest accepted `every`.
pub const MIN_EVERY: Duration = Duration::from_millis(100);

/// Defaults resolved once and applied to every source.
struct Defaults {
    timeout: Duration,
    max_body: u64,
    jitter: f64,
}

/// Validates a parsed file.
pub fn validate(raw: RawConfig, ck: &mut Checker<'_>) -> Option<Config> {
    ck.unsupported("hosts", &raw.hosts);
    let admin = admin(raw.admin.as_ref(), ck);
    let dead_letter_max_age = raw
        .dead_letter_max_age
        .as_ref()
        .and_then(|v| ck.duration("dead_letter_max_age", v));
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
    ck.problems.is_empty().then_some(Config {
        state,
        admin,
        dead_letter_max_age,
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
    Some(Admin {
        listen: listen?,
        token,
    })
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

fn destination(
    name: &str,
    raw: &Spanned<RawDestination>,
    ck: &mut Checker<'_>,
) -> Option<Destination> {
    let p = |k: &str| format!("destinations.{name}.{k}");
    let line = line_of(&raw.referenced);
    let d = &raw.value;
    let url = match &d.url {
        Some(u) => ck.url(&p("url"), u),
        None => {
            ck.missing(&p("url"), line, "url: http://127.0.0.1:8080/hooks");
            None
        }
    };
    let signature = match &d.signature {
        Some(s) => ck.choice(
            &p("signature"),
            s,
            &[
                ("standard", SignatureMode::Standard),
                ("github", SignatureMode::Github),
                ("both", SignatureMode::Both),
            ],
        ),
        None => Some(SignatureMode::Standard),
    };
    let secrets = signature.and_then(|mode| secrets(name, d, mode, line, ck));
    let timeout = d
        .timeout
        .as_ref()
        .map_or(Some(DEFAULT_TIMEOUT), |t| ck.duration(&p("timeout"), t));
    let headers = headers(&p("headers"), &d.headers, ck);
    let retry = match &d.retry {
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, v)| ck.duration(&format!("{}[{i}]", p("retry")), v))
            .collect::<Option<Vec<_>>>(),
        None => Some(DEFAULT_RETRY.to_vec()),
    };
    let concurrency = match &d.concurrency {
        Some(c) if c.value == 0 => {
            ck.problem(
                &p("concurrency"),
                line_of(&c.referenced),
                Some("0".into()),
                "at least 1, e.g. concurrency: 16",
            );
            None
        }
        Some(c) => Some(c.value as usize),
        None => Some(DEFAULT_CONCURRENCY),
    };
    Some(Destination {
        name: name.to_owned(),
        url: url?,
        secrets: secrets?,
        signature: signature?,
        timeout: timeout?,
        headers: headers?,
        retry: retry?,
        concurrency: concurrency?,
    })
}

fn secrets(
    name: &str,
    d: &RawDestination,
    mode: SignatureMode,
    line: Option<u64>,
    ck: &mut Checker<'_>,
) -> Option<Vec<Secret>> {
    let path = format!("destinations.{name}.secret");
    let raw: Vec<(String, Option<u64>)> = match (&d.secret, &d.secret_file) {
        (Some(_), Some(f)) => {
            ck.problem(
                &path,
                line_of(&f.referenced),
                None,
                "give either secret or secret_file, not both",
            );
            return None;
        }
        (None, None) => {
            ck.missing(&path, line, "secret: ${TRIAGE_SECRET} (a whsec_<base64> value) or secret_file: /run/credentials/pollhook/triage");
            return None;
        }
        (None, Some(file)) => {
            let fpath = format!("destinations.{name}.secret_file");
            let file_name = ck.text(&fpath, file)?;
            match std::fs::read_to_string(ck.path(&file_name)) {
                Ok(text) => vec![(text.trim_end_matches(['\n', '\r']).to_owned(), None)],
                Err(e) => {
                    ck.problem(
                        &fpath,
                        line_of(&file.referenced),
                        Some(format!("{file_name:?}")),
                        format!("a readable file holding the secret ({e})"),
                    );
                    return None;
                }
            }
        }
        (Some(s), None) => {
            let sl = line_of(&s.referenced);
            let list: Vec<String> = match &s.value {
                RawSecret::One(v) => vec![v.clone()],
                RawSecret::Many(v) => v.clone(),
                // A credential's content is the secret itself: no ${VAR} expansion.
                RawSecret::Credential { credential } => {
                    return finish_secrets(
                        &path,
                        vec![(credential_secret(&path, credential, sl, ck)?, sl)],
                        mode,
                        line,
                        ck,
                    );
                }
            };
            let expanded: Option<Vec<String>> =
                list.iter().map(|v| ck.expand_at(&path, v, sl)).collect();
            expanded?.into_iter().map(|v| (v, sl)).collect()
        }
    };
    finish_secrets(&path, raw, mode, line, ck)
}

/// Checks each secret's form for the signature mode.
fn finish_secrets(
    path: &str,
    raw: Vec<(String, Option<u64>)>,
    mode: SignatureMode,
    line: Option<u64>,
    ck: &mut Checker<'_>,
) -> Option<Vec<Secret>> {
    let mut out = Vec::new();
    let mut failed = false;
    for (i, (value, sl)) in raw.into_iter().enumerate() {
        let ok = if value.is_empty() {
            Err("must not be empty")
        } else if mode.standard() {
            standard_key(&value).map(|_| ())
        } else {
            Ok(())
        };
        match ok {
            Ok(()) => out.push(Secret::new(value)),
            Err(why) => {
                failed = true;
                ck.problem(&format!("{path}[{i}]"), sl.or(line), Some("<redacted>".into()), format!("{why}; expected whsec_ followed by base64, e.g. whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
            }
        }
    }
    (!failed).then_some(out)
}

/// Reads a systemd credential (`LoadCredential=NAME:…`) from `$CREDENTIALS_DIRECTORY/NAME`.
fn credential_secret(
    path: &str,
    name: &str,
    line: Option<u64>,
    ck: &mut Checker<'_>,
) -> Option<String> {
    let given = Some(format!("{{ credential: {name:?} }}"));
    if name.is_empty() || name.contains('/') || name == ".." || name == "." {
        ck.problem(
            path,
            line,
            given,
            "a credential name without '/', e.g. secret: { credential: triage }",
        );
        return None;
    }
    let Some(dir) = ck.env_var("CREDENTIALS_DIRECTORY") else {
        ck.problem(path, line, given, "CREDENTIALS_DIRECTORY is not set: run under systemd with LoadCredential=, or use secret_file");
        return None;
    };
    match std::fs::read_to_string(std::path::Path::new(&dir).join(name)) {
        Ok(text) => Some(text.trim_end_matches(['\n', '\r']).to_owned()),
        Err(e) => {
            ck.problem(path, line, given, format!("a readable credential in $CREDENTIALS_DIRECTORY ({e}); check LoadCredential= in the unit"));
            None
        }
    }
}

/// Decodes the key of a Standard Webhooks `whsec_<base64>` secret.
pub fn standard_key(secret: &str) -> Result<Vec<u8>, &'static str> {
    let b64 = secret
        .strip_prefix("whsec_")
        .ok_or("does not start with whsec_")?;
    match base64::engine::general_purpose::STANDARD.decode(b64) {
        Ok(key) if !key.is_empty() => Ok(key),
        _ => Err("the part after whsec_ is not valid base64"),
    }
}

fn headers(
    path: &str,
    raw: &BTreeMap<String, Str>,
    ck: &mut Checker<'_>,
) -> Option<Vec<(HeaderName, HeaderValue)>> {
    let mut out = Vec::new();
    let mut ok = true;
    for (name, value) in raw {
        let hpath = format!("{path}.{name}");
        let Some(text) = ck.text(&hpath, value) else {
            ok = false;
            continue;
        };
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&text),
        ) {
            (Ok(n), Ok(mut v)) => {
                // Configured headers often carry credentials: keep them out of Debug output.
                v.set_sensitive(true);
                out.push((n, v));
            }
            _ => {
                ck.problem(
                    &hpath,
                    line_of(&value.referenced),
                    None,
                    "a valid HTTP header name and value, e.g. X-Env: prod",
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn source(
    name: &str,
    raw: &Spanned<RawSource>,
    defaults: &Defaults,
    dests: &BTreeMap<String, Spanned<RawDestination>>,
    ck: &mut Checker<'_>,
) -> Option<Source> {
    let p = |k: &str| format!("sources.{name}.{k}");
    let line = line_of(&raw.referenced);
    let s = &raw.value;
    for (key, value) in [
        ("rate", &s.rate),
        ("paginate", &s.paginate),
        ("max_pages", &s.max_pages),
        ("conditional", &s.conditional),
        ("max_changes", &s.max_changes),
    ] {
        ck.unsupported(&p(key), value);
    }
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
    Some(Request {
        url: url?,
        method: method?,
        headers: headers(&p("headers"), &s.headers, ck)?,
        body: body.flatten(),
        auth,
        timeout: s
            .timeout
            .as_ref()
            .map_or(Some(defaults.timeout), |t| ck.duration(&p("timeout"), t))?,
        max_body: s
            .max_body
            .as_ref()
            .map_or(Some(defaults.max_body), |m| ck.size(&p("max_body"), m))?,
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
            if d < MIN_EVERY {
                ck.bad(&p("every"), every, "at least 100ms, e.g. every: 60s");
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

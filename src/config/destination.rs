//! Validation of `destinations.<name>`: URL, secrets (inline, rotated, from a file or a systemd
//! credential), signature mode, headers, retry schedule, concurrency.

use std::collections::BTreeMap;

use base64::Engine;
use reqwest::header::{HeaderName, HeaderValue};
use serde_saphyr::Spanned;

use super::check::{Checker, line_of};
use super::defaults::{DEFAULT_CONCURRENCY, DEFAULT_RETRY, DEFAULT_TIMEOUT, MAX_RETRY_STEP};
use super::raw::{RawDestination, RawSecret, Str};
use super::validated::{Destination, Secret, SignatureMode};

pub(super) fn destination(
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
    if let Some(u) = url
        .as_ref()
        .filter(|u| u.scheme() == "http" && !super::source::is_loopback(u))
    {
        ck.warn(
            &p("url"),
            line,
            format!(
                "events go over plain http to {}; anyone on the path can read them; use https unless this network is private",
                u.host_str().unwrap_or("")
            ),
        );
    }
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
            .map(|(i, v)| {
                let path = format!("{}[{i}]", p("retry"));
                let step = ck.duration(&path, v)?;
                if step > MAX_RETRY_STEP {
                    ck.bad(
                        &path,
                        v,
                        "at most 30d per step, e.g. retry: [5s, 5m, 30m, 2h]",
                    );
                    return None;
                }
                Some(step)
            })
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

pub(super) fn headers(
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

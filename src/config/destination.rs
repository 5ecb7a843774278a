//! Validation of `destinations.<name>`: URL, secrets (inline, rotated, from a file or a systemd
//! credential), signature mode, headers, retry schedule, concurrency.

use std::collections::BTreeMap;

use base64::Engine;
use reqwest::header::{HeaderName, HeaderValue};
use serde_saphyr::Spanned;

use super::check::{Checker, is_loopback, line_of};
use super::defaults::{DEFAULT_CONCURRENCY, DEFAULT_RETRY, DEFAULT_TIMEOUT, MAX_RETRY_STEP};
use super::raw::{RawDestination, RawSecret, Str};
use super::raw::{RawScheme, RawSignature, RawSignatureItem};
use super::schemes::{PRESETS, preset};
use super::transform::transform;
use super::validated::{Destination, Encoding, KeyForm, Scheme, Secret};
use crate::template::{HEADER_VARS, SIGNS_VARS, Template, VALUE_VARS, Values, Var};

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
        .filter(|u| u.scheme() == "http" && !is_loopback(u))
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
    let signatures = match &d.signature {
        Some(s) => signatures(&p("signature"), s, ck),
        None => preset("standard"),
    };
    let secrets = signatures.as_ref().and_then(|list| {
        let needs = Needs {
            any: !list.is_empty(),
            whsec: list.iter().any(|s| s.key == KeyForm::Whsec),
        };
        secrets(name, d, needs, line, ck)
    });
    let timeout = d
        .timeout
        .as_ref()
        .map_or(Some(DEFAULT_TIMEOUT), |t| ck.duration(&p("timeout"), t));
    let headers = header_templates(&p("headers"), &d.headers, ck);
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
    let (body, filter, jq_limits) = transform(name, d, ck);
    Some(Destination {
        name: name.to_owned(),
        url: url?,
        secrets: secrets?,
        signatures: signatures?,
        body: body?,
        filter: filter?,
        jq: jq_limits?,
        timeout: timeout?,
        headers: headers?,
        retry: retry?,
        concurrency: concurrency?,
    })
}

/// What the signature schemes need of the secrets.
#[derive(Clone, Copy)]
struct Needs {
    /// Some scheme signs: a secret is required.
    any: bool,
    /// Some scheme keys with `whsec`: every secret must be `whsec_` + base64.
    whsec: bool,
}

fn secrets(
    name: &str,
    d: &RawDestination,
    needs: Needs,
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
        (None, None) if !needs.any => return Some(Vec::new()),
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
                        needs,
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
    finish_secrets(&path, raw, needs, line, ck)
}

/// Checks each secret's form for the signature schemes.
fn finish_secrets(
    path: &str,
    raw: Vec<(String, Option<u64>)>,
    needs: Needs,
    line: Option<u64>,
    ck: &mut Checker<'_>,
) -> Option<Vec<Secret>> {
    let mut out = Vec::new();
    let mut failed = false;
    for (i, (value, sl)) in raw.into_iter().enumerate() {
        let ok = if value.is_empty() {
            Err("must not be empty")
        } else if needs.whsec {
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

/// A destination's `headers:`: values are templates with per-event placeholders; each must
/// render to a legal header value.
fn header_templates(
    path: &str,
    raw: &BTreeMap<String, Str>,
    ck: &mut Checker<'_>,
) -> Option<Vec<(HeaderName, Template)>> {
    let mut out = Vec::new();
    let mut ok = true;
    for (name, value) in raw {
        let hpath = format!("{path}.{name}");
        let line = line_of(&value.referenced);
        let Some(text) = ck.text(&hpath, value) else {
            ok = false;
            continue;
        };
        let template = match Template::parse(&text, HEADER_VARS) {
            Ok(t) => t,
            Err(e) => {
                // The value may be a credential: never quoted.
                ck.problem(
                    &hpath,
                    line,
                    None,
                    format!("{e}; e.g. X-Event-ID: \"{{id}}\""),
                );
                ok = false;
                continue;
            }
        };
        let sample = template.render(&SampleEvent);
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&sample),
        ) {
            (Ok(n), Ok(_)) => out.push((n, template)),
            _ => {
                ck.problem(
                    &hpath,
                    line,
                    None,
                    "a valid HTTP header name and value, e.g. X-Env: prod",
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// Placeholder values for checking that a header template renders to a legal value.
struct SampleEvent;

impl Values for SampleEvent {
    fn write(&self, _: Var, out: &mut Vec<u8>) {
        out.extend_from_slice(b"x");
    }
}

/// `signature:` — a preset, a list of presets and schemes, or one scheme.
fn signatures(
    path: &str,
    raw: &Spanned<RawSignature>,
    ck: &mut Checker<'_>,
) -> Option<Vec<Scheme>> {
    let line = line_of(&raw.referenced);
    match &raw.value {
        RawSignature::Preset(name) => named(path, name, line, ck),
        RawSignature::Scheme(s) => custom(path, s, line, ck).map(|s| vec![s]),
        RawSignature::List(list) => {
            let mut out = Vec::new();
            let mut ok = true;
            for (i, item) in list.iter().enumerate() {
                let p = format!("{path}[{i}]");
                let got = match item {
                    RawSignatureItem::Preset(name) => named(&p, name, line, ck),
                    RawSignatureItem::Scheme(s) => custom(&p, s, line, ck).map(|s| vec![s]),
                };
                match got {
                    Some(schemes) => out.extend(schemes),
                    None => ok = false,
                }
            }
            ok.then_some(out)
        }
    }
}

fn named(path: &str, name: &str, line: Option<u64>, ck: &mut Checker<'_>) -> Option<Vec<Scheme>> {
    let found = preset(name.trim());
    if found.is_none() {
        ck.problem(
            path,
            line,
            Some(format!("{name:?}")),
            format!("one of {PRESETS}, a list of them, or a scheme {{ header, value, signs, encoding, key }}, e.g. signature: stripe"),
        );
    }
    found
}

/// A custom scheme: every field checked, each problem with its path.
fn custom(path: &str, raw: &RawScheme, line: Option<u64>, ck: &mut Checker<'_>) -> Option<Scheme> {
    let p = |k: &str| format!("{path}.{k}");
    let header = HeaderName::from_bytes(raw.header.trim().as_bytes()).ok();
    if header.is_none() {
        ck.problem(
            &p("header"),
            line,
            Some(format!("{:?}", raw.header)),
            "a header name, e.g. header: X-Signature-256",
        );
    }
    let mut template = |key: &str, text: Option<&str>, default: &str, vars| {
        let text = text.unwrap_or(default);
        Template::parse(text, vars)
            .map_err(|e| {
                ck.problem(
                    &p(key),
                    line,
                    Some(format!("{text:?}")),
                    format!("{e}; e.g. {key}: \"{default}\""),
                );
            })
            .ok()
    };
    let value = template("value", raw.value.as_deref(), "{signature}", VALUE_VARS);
    let signs = template("signs", raw.signs.as_deref(), "{body}", SIGNS_VARS);
    let encoding = match raw.encoding.as_deref().map(str::trim) {
        None | Some("hex") => Some(Encoding::Hex),
        Some("base64") => Some(Encoding::Base64),
        Some(other) => {
            ck.problem(
                &p("encoding"),
                line,
                Some(format!("{other:?}")),
                "hex or base64, e.g. encoding: hex",
            );
            None
        }
    };
    let key = match raw.key.as_deref().map(str::trim) {
        None | Some("utf8") => Some(KeyForm::Utf8),
        Some("whsec") => Some(KeyForm::Whsec),
        Some(other) => {
            ck.problem(
                &p("key"),
                line,
                Some(format!("{other:?}")),
                "utf8 (the secret string's bytes) or whsec (base64 after whsec_), e.g. key: utf8",
            );
            None
        }
    };
    if value.as_ref().is_some_and(|v| !v.uses(Var::Signature)) {
        ck.problem(
            &p("value"),
            line,
            raw.value.as_ref().map(|v| format!("{v:?}")),
            "must contain {signature}, e.g. value: \"sha256={signature}\"",
        );
        return None;
    }
    Some(Scheme {
        name: "custom",
        header: header?,
        value: value?,
        signs: signs?,
        encoding: encoding?,
        key: key?,
        more: None,
        extra: Vec::new(),
    })
}

//! The validation context: collects every problem with its path and line, expands `${VAR}` in
//! each string it reads, and parses the small scalar grammars (durations, sizes, percentages).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::Location;

use super::env::expand;
use super::error::Problem;
use super::raw::Str;
use super::validated::Secret;
use reqwest::header::{HeaderName, HeaderValue};

/// Looks up an environment variable.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Collects problems while raw values are turned into domain values.
pub struct Checker<'a> {
    env: EnvLookup<'a>,
    base_dir: PathBuf,
    /// Every problem found so far.
    pub problems: Vec<Problem>,
    /// Risky but valid settings found so far.
    pub warnings: Vec<Problem>,
}

/// A line number from a span, when the parser knew it.
pub fn line_of(location: &Location) -> Option<u64> {
    (location.line() > 0).then(|| location.line())
}

impl<'a> Checker<'a> {
    /// A checker resolving relative paths against `base_dir`.
    pub fn new(env: EnvLookup<'a>, base_dir: &Path) -> Self {
        Checker {
            env,
            base_dir: base_dir.to_path_buf(),
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// An environment variable, through the injected lookup.
    pub fn env_var(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    /// Records one problem.
    pub fn problem(
        &mut self,
        path: &str,
        line: Option<u64>,
        given: Option<String>,
        expected: impl Into<String>,
    ) {
        self.problems.push(Problem {
            path: path.to_owned(),
            line,
            given,
            expected: expected.into(),
        });
    }

    /// Records a warning: the config is valid, but this setting is risky.
    pub fn warn(&mut self, path: &str, line: Option<u64>, what: impl Into<String>) {
        self.warnings.push(Problem {
            path: path.to_owned(),
            line,
            given: None,
            expected: what.into(),
        });
    }

    /// Records a problem about a spanned value, quoting what was given.
    pub fn bad(&mut self, path: &str, value: &Str, expected: impl Into<String>) {
        let line = line_of(&value.referenced);
        self.problem(path, line, Some(format!("{:?}", value.value)), expected);
    }

    /// Records that a required key is missing.
    pub fn missing(&mut self, path: &str, line: Option<u64>, example: &str) {
        self.problem(path, line, None, format!("is required, e.g. {example}"));
    }

    /// Expands `${VAR}` in a plain value.
    pub fn text(&mut self, path: &str, value: &Str) -> Option<String> {
        self.expand_at(path, &value.value, line_of(&value.referenced))
    }

    /// Expands `${VAR}` in a value with a known line.
    pub fn expand_at(&mut self, path: &str, raw: &str, line: Option<u64>) -> Option<String> {
        match expand(raw, self.env) {
            Ok(s) => Some(s),
            Err(e) => {
                self.problem(path, line, None, e.to_string());
                None
            }
        }
    }

    /// Expands a secret; on failure the value is never quoted.
    pub fn secret(&mut self, path: &str, raw: &str, line: Option<u64>) -> Option<Secret> {
        self.expand_at(path, raw, line).map(Secret::new)
    }

    /// Resolves a path relative to the config file's folder.
    pub fn path(&self, raw: &str) -> PathBuf {
        let p = Path::new(raw);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// A humantime duration such as `30s` or `5m`.
    pub fn duration(&mut self, path: &str, value: &Str) -> Option<Duration> {
        let text = self.text(path, value)?;
        match humantime::parse_duration(text.trim()) {
            Ok(d) if !d.is_zero() => Some(d),
            _ => {
                self.bad(
                    path,
                    value,
                    "a positive duration, e.g. 30s, 500ms, 5m or 1h",
                );
                None
            }
        }
    }

    /// A size such as `16MiB`, `512KB` or `1000`.
    pub fn size(&mut self, path: &str, value: &Str) -> Option<u64> {
        let text = self.text(path, value)?;
        let parsed = parse_size(text.trim());
        if parsed.is_none() {
            self.bad(path, value, "a size, e.g. 16MiB, 512KiB, 10MB or 1048576");
        }
        parsed
    }

    /// A percentage such as `10%`, returned as a fraction.
    pub fn percent(&mut self, path: &str, value: &Str) -> Option<f64> {
        let text = self.text(path, value)?;
        let parsed = text
            .trim()
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<f64>().ok());
        match parsed {
            Some(p) if (0.0..=100.0).contains(&p) => Some(p / 100.0),
            _ => {
                self.bad(path, value, "a percentage from 0% to 100%, e.g. 10%");
                None
            }
        }
    }

    /// A rate such as `60/1m` or `5000/1h`.
    pub fn rate(&mut self, path: &str, value: &Str) -> Option<super::validated::Rate> {
        let text = self.text(path, value)?;
        let parsed = text.trim().split_once('/').and_then(|(n, d)| {
            let count = n.trim().parse::<u32>().ok().filter(|c| *c > 0)?;
            let per = humantime::parse_duration(d.trim())
                .ok()
                .filter(|p| !p.is_zero())?;
            Some(super::validated::Rate { count, per })
        });
        if parsed.is_none() {
            self.bad(path, value, "requests per duration, e.g. 60/1m or 5000/1h");
        }
        parsed
    }

    /// One of a fixed set of words.
    pub fn choice<T: Copy>(&mut self, path: &str, value: &Str, options: &[(&str, T)]) -> Option<T> {
        let text = self.text(path, value)?;
        let found = options
            .iter()
            .find(|(word, _)| word.eq_ignore_ascii_case(text.trim()));
        if found.is_none() {
            let words: Vec<&str> = options.iter().map(|(w, _)| *w).collect();
            self.bad(path, value, format!("one of {}", words.join(", ")));
        }
        found.map(|(_, v)| *v)
    }

    /// An absolute http(s) URL.
    pub fn url(&mut self, path: &str, value: &Str) -> Option<reqwest::Url> {
        let text = self.text(path, value)?;
        match reqwest::Url::parse(text.trim()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Some(url)
            }
            _ => {
                self.bad(
                    path,
                    value,
                    "an absolute http or https URL, e.g. https://api.example.com/items",
                );
                None
            }
        }
    }

    /// A header map (`headers:` of a source): every name and value must be legal HTTP.
    pub fn headers(
        &mut self,
        path: &str,
        raw: &std::collections::BTreeMap<String, Str>,
    ) -> Option<Vec<(HeaderName, HeaderValue)>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (name, value) in raw {
            let hpath = format!("{path}.{name}");
            let Some(text) = self.text(&hpath, value) else {
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
                    self.problem(
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
}

/// Parses `16MiB`, `10MB`, `512KiB`, `1000B` or a bare byte count.
pub fn parse_size(text: &str) -> Option<u64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult).filter(|n| *n > 0)
}

/// Whether `url` names this machine (127.0.0.0/8, ::1 or localhost): traffic that never crosses
/// a network, so plain http is no risk there.
pub fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or("");
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("16MiB"), Some(16 << 20));
        assert_eq!(parse_size("10MB"), Some(10_000_000));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("1.5MiB"), None);
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("12XB"), None);
    }
}

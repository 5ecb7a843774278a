//! Loading `bridge.yaml`: read, parse (the only place that names the YAML crate), expand
//! `${VAR}` in values, validate. Returns every problem at once.
//!
//! `raw.rs` holds the serde structs, `validate.rs` turns them into the domain types of
//! `validated.rs`, `check.rs` is the problem collector, `env.rs` the `${VAR}` expander.

mod check;
mod defaults;
mod destination;
pub mod env;
mod error;
mod raw;
mod schemes;
mod source;
mod store;
mod transform;
mod validate;
mod validated;

use std::path::Path;

pub use defaults::{DEFAULT_RETRY, MAX_REDIRECTS};
pub use destination::standard_key;
pub use error::{ConfigError, Problem};
pub use schemes::preset;
pub use validated::{
    Admin, Alerts, Auth, Config, Destination, Destinations, EmitSet, Encoding, FirstPoll, History,
    HostLimits, Include, JqProgram, KeyForm, Method, Paginate, Postgres, Rate, Redirects, Request,
    Scheme, Secret, Source,
};

/// Reads and validates the config file at `path`, expanding variables from the process
/// environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with(path, &|name| std::env::var(name).ok())
}

/// Reads and validates the config file at `path` with an injected environment.
pub fn load_with(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(&text, path, env)
}

/// Validates config text; `path` names the file in messages and anchors relative paths.
pub fn load_str(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let raw = parse(text, path)?;
    let mut ck = check::Checker::new(env, base_dir(path));
    finish(validate::validate(raw, &mut ck), ck, path)
}

/// Only the admin settings of the config file at `path` (`admin.listen`, `admin.token`): what
/// the commands that talk to a running daemon need. The file must parse, but nothing else in
/// it is validated, so the other secrets it names need not be in the environment.
pub fn load_admin(path: &Path) -> Result<Admin, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_admin_str(&text, path, &|name| std::env::var(name).ok())
}

/// [`load_admin`] on config text with an injected environment.
pub fn load_admin_str(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Admin, ConfigError> {
    let raw = parse(text, path)?;
    let mut ck = check::Checker::new(env, base_dir(path));
    finish(validate::admin(raw.admin.as_ref(), &mut ck), ck, path)
}

fn base_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The validated value, or every problem found.
fn finish<T>(value: Option<T>, ck: check::Checker<'_>, path: &Path) -> Result<T, ConfigError> {
    match value {
        Some(v) if ck.problems.is_empty() => Ok(v),
        _ => Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: ck.problems,
        }),
    }
}

/// Parses config text into the raw structs (the only call of the YAML crate).
fn parse(text: &str, path: &Path) -> Result<raw::RawConfig, ConfigError> {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let line = e.location().map(|l| l.line()).filter(|l| *l > 0);
        let problem = Problem {
            path: line
                .map(|l| yaml_path_at(text, l))
                .unwrap_or_else(|| "(document)".to_owned()),
            line,
            given: None,
            expected: first_line(&e.to_string()),
        };
        ConfigError::Parse {
            path: path.to_path_buf(),
            problem,
        }
    })
}

/// The parser's message without its location suffix (the line is reported separately).
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or(message);
    if let Some(i) = line.find(", set DuplicateKeyPolicy") {
        return format!("{}: each name may appear only once", &line[..i]);
    }
    match line.find(" at line ") {
        Some(i) => line[..i].to_owned(),
        None => line.to_owned(),
    }
}

/// The dotted key path of the block-style mapping entry on `line` (1-based), found from the
/// indentation of the lines above it. Used to name the path of errors the parser reports.
pub fn yaml_path_at(text: &str, line: u64) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = (line as usize).checked_sub(1).filter(|i| *i < lines.len()) else {
        return "(document)".to_owned();
    };
    let mut path = Vec::new();
    let mut limit = usize::MAX;
    for raw in lines[..=start].iter().rev() {
        let trimmed = raw.trim_start().trim_start_matches("- ");
        let indent = raw.len() - raw.trim_start().len();
        if trimmed.is_empty() || trimmed.starts_with('#') || indent >= limit {
            continue;
        }
        if let Some((key, _)) = trimmed.split_once(':') {
            path.push(key.trim().trim_matches(['"', '\'']).to_owned());
            limit = indent;
        }
        if indent == 0 {
            break;
        }
    }
    path.reverse();
    if path.is_empty() {
        "(document)".to_owned()
    } else {
        path.join(".")
    }
}

#[cfg(test)]
mod tests {
    use super::yaml_path_at;

    #[test]
    fn path_is_rebuilt_from_indentation() {
        let text = "sources:\n  a:\n    url: x\n    # c\n    evry: 5s\ndestinations: {}\n";
        assert_eq!(yaml_path_at(text, 5), "sources.a.evry");
        assert_eq!(yaml_path_at(text, 6), "destinations");
        assert_eq!(yaml_path_at(text, 99), "(document)");
    }
}

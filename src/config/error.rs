//! Config errors: one entry per problem, each with its path, what was given, what is expected
//! (with a valid example) and the YAML line when the parser knows it.

use std::fmt;
use std::path::PathBuf;

/// One problem in `bridge.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the key, e.g. `sources.github-issues.cron`.
    pub path: String,
    /// 1-based line, when known.
    pub line: Option<u64>,
    /// What was given, already redacted for secrets.
    pub given: Option<String>,
    /// What is expected, with an example.
    pub expected: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        if let Some(given) = &self.given {
            write!(f, ": got {given}")?;
        }
        write!(f, ": {}", self.expected)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or does not fit the schema.
    #[error("{path}: {problem}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The single problem the parser reported.
        problem: Problem,
    },
    /// The YAML parsed but has invalid values; every problem is listed.
    #[error("{path}: {} problem(s)\n{}", problems.len(), list(problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// Every problem this error carries (empty for read errors).
    pub fn problems(&self) -> Vec<&Problem> {
        match self {
            ConfigError::Read { .. } => Vec::new(),
            ConfigError::Parse { problem, .. } => vec![problem],
            ConfigError::Invalid { problems, .. } => problems.iter().collect(),
        }
    }
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

//! `${VAR}` and `${VAR:-default}` expansion of config values.
//!
//! Runs on each string value *after* YAML parsing, so a value's content (a secret holding `: `,
//! `#` or a newline) can never change the structure of the document. `$$` is a literal `$`.

/// Why a value could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// `${NAME}` names a variable that is not set and has no default.
    #[error("environment variable {0} is not set (set it, or give a default: ${{{0}:-value}})")]
    Missing(String),
    /// `${` without its closing `}`, or an empty name.
    #[error("unterminated or empty ${{...}} reference (write $$ for a literal $)")]
    Malformed,
}

/// Expands every `${...}` reference in `input` using `lookup`.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    if !input.contains('$') {
        return Ok(input.to_owned());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or(ExpandError::Malformed)?;
            out.push_str(&resolve(&body[..end], lookup)?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Resolves the inside of one `${...}`.
fn resolve(
    reference: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let (name, default) = match reference.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (reference, None),
    };
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(ExpandError::Malformed);
    }
    match (lookup(name), default) {
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default.to_owned()),
        (None, None) => Err(ExpandError::Missing(name.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "SET").then(|| "a: b # c\nd".to_owned())
    }

    #[test]
    fn expands_set_default_and_literal_dollar() {
        assert_eq!(expand("x${SET}y", &env).unwrap(), "xa: b # c\ndy");
        assert_eq!(expand("${UNSET:-60s}", &env).unwrap(), "60s");
        assert_eq!(expand("${UNSET:-}", &env).unwrap(), "");
        assert_eq!(expand("cost $$5 and $x", &env).unwrap(), "cost $5 and $x");
    }

    #[test]
    fn missing_variable_is_named() {
        assert_eq!(
            expand("${NOPE}", &env),
            Err(ExpandError::Missing("NOPE".into()))
        );
        assert_eq!(expand("${NOPE", &env), Err(ExpandError::Malformed));
        assert_eq!(expand("${}", &env), Err(ExpandError::Malformed));
    }
}

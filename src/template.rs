//! Placeholder templates: `X-Event-ID: "{id}"`, a signature scheme's `"t={timestamp},v1={signature}"`.
//! Parsed once at config load against the placeholders the context allows (an unknown one is a
//! config error); rendered per event or per attempt. `{{` and `}}` are literal braces. Pure; a
//! leaf below config and delivery.

use std::fmt;

/// A placeholder a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// The event id.
    Id,
    /// The event type (`item.created`, ...).
    Type,
    /// The source name.
    Source,
    /// The item key.
    Key,
    /// The item revision.
    Revision,
    /// Unix seconds of this attempt.
    Timestamp,
    /// The (rendered) body.
    Body,
    /// A signature, encoded.
    Signature,
}

impl Var {
    /// The placeholder's name.
    pub fn name(self) -> &'static str {
        match self {
            Var::Id => "id",
            Var::Type => "type",
            Var::Source => "source",
            Var::Key => "key",
            Var::Revision => "revision",
            Var::Timestamp => "timestamp",
            Var::Body => "body",
            Var::Signature => "signature",
        }
    }

    const ALL: [Var; 8] = [
        Var::Id,
        Var::Type,
        Var::Source,
        Var::Key,
        Var::Revision,
        Var::Timestamp,
        Var::Body,
        Var::Signature,
    ];
}

/// Placeholders of `headers:` values.
pub const HEADER_VARS: &[Var] = &[
    Var::Id,
    Var::Type,
    Var::Source,
    Var::Key,
    Var::Revision,
    Var::Timestamp,
];
/// Placeholders of a signature scheme's `value`.
pub const VALUE_VARS: &[Var] = &[Var::Signature, Var::Timestamp, Var::Id];
/// Placeholders of a signature scheme's `signs`.
pub const SIGNS_VARS: &[Var] = &[Var::Body, Var::Timestamp, Var::Id];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A parsed template.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// Shows the placeholders only: literal text may be a credential (a header value).
impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Text(_) => f.write_str("…")?,
                Part::Var(v) => write!(f, "{{{}}}", v.name())?,
            }
        }
        Ok(())
    }
}

/// The values a template is rendered with; `None` where the context has none.
pub trait Values {
    /// The text of `var`, appended to `out`.
    fn write(&self, var: Var, out: &mut Vec<u8>);
}

impl Template {
    /// Parses `text`, allowing the placeholders in `allowed`.
    pub fn parse(text: &str, allowed: &[Var]) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => {
                                return Err(format!(
                                    "unclosed {{{name}; write {{{{ for a literal brace"
                                ));
                            }
                        }
                    }
                    let var = Var::ALL
                        .into_iter()
                        .find(|v| v.name() == name && allowed.contains(v))
                        .ok_or_else(|| unknown(&name, allowed))?;
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Var(var));
                }
                '}' => return Err("a lone '}'; write }} for a literal brace".to_owned()),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// Whether the template uses `var`.
    pub fn uses(&self, var: Var) -> bool {
        self.parts.contains(&Part::Var(var))
    }

    /// Renders into `out`.
    pub fn render_into(&self, values: &dyn Values, out: &mut Vec<u8>) {
        for part in &self.parts {
            match part {
                Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                Part::Var(v) => values.write(*v, out),
            }
        }
    }

    /// Renders to a string (values are UTF-8 in every context headers use).
    pub fn render(&self, values: &dyn Values) -> String {
        let mut out = Vec::new();
        self.render_into(values, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn unknown(name: &str, allowed: &[Var]) -> String {
    let list: Vec<String> = allowed
        .iter()
        .map(|v| format!("{{{}}}", v.name()))
        .collect();
    format!(
        "unknown placeholder {{{name}}}; use {} (and {{{{ }}}} for literal braces)",
        list.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    struct V;
    impl Values for V {
        fn write(&self, var: Var, out: &mut Vec<u8>) {
            out.extend_from_slice(match var {
                Var::Id => b"evt_1",
                Var::Timestamp => b"1700000000",
                _ => b"?",
            });
        }
    }

    #[test]
    fn renders_placeholders_and_literal_braces() {
        let t = Template::parse("t={timestamp},id={id} {{x}}", HEADER_VARS).unwrap();
        assert_eq!(t.render(&V), "t=1700000000,id=evt_1 {x}");
        assert!(t.uses(Var::Id) && !t.uses(Var::Key));
        assert_eq!(format!("{t:?}"), "…{timestamp}…{id}…");
    }

    #[test]
    fn rejects_unknown_and_unbalanced() {
        let e = Template::parse("{signature}", HEADER_VARS).unwrap_err();
        assert!(
            e.contains("unknown placeholder {signature}") && e.contains("{id}"),
            "{e}"
        );
        assert!(Template::parse("{id", HEADER_VARS).is_err());
        assert!(Template::parse("a}b", HEADER_VARS).is_err());
    }
}

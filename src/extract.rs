//! JSON body → items: the `items` pointer, each item's `key` and `version`, and a canonical
//! content hash that skips the `ignore` pointers. Pure; no I/O.
//!
//! Sits between the fetch and the diff in the pipeline. A body that does not fit the spec (not
//! JSON, `items` not resolving to an array, a key missing or duplicated) is an error: the poll
//! fails and nothing downstream runs, so schema drift is never read as "everything was deleted".

use std::collections::HashSet;
use std::fmt;

use serde_json::Value;

/// An RFC 6901 JSON Pointer, parsed once at config time.
#[derive(Clone, PartialEq, Eq)]
pub struct Pointer {
    raw: String,
    tokens: Vec<String>,
}

impl Pointer {
    /// Parses a pointer. `""` and `"/"` both mean the whole value (the design's convention for
    /// `items: /`); otherwise it must start with `/`.
    pub fn parse(raw: &str) -> Result<Pointer, String> {
        if raw.is_empty() || raw == "/" {
            return Ok(Pointer {
                raw: raw.to_owned(),
                tokens: Vec::new(),
            });
        }
        let Some(rest) = raw.strip_prefix('/') else {
            return Err("a JSON Pointer must start with '/'".to_owned());
        };
        let tokens = rest
            .split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        Ok(Pointer {
            raw: raw.to_owned(),
            tokens,
        })
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The unescaped reference tokens.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The value this pointer designates inside `root`, if any.
    pub fn resolve<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        self.tokens.iter().try_fold(root, |node, token| match node {
            Value::Object(map) => map.get(token),
            Value::Array(list) => token.parse::<usize>().ok().and_then(|i| list.get(i)),
            _ => None,
        })
    }
}

impl fmt::Debug for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.raw)
    }
}

/// Whether the body is a list of items or one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `items` resolves to an array; each element is keyed by `key`.
    Items,
    /// The whole body is one item with key `""`.
    Document,
}

/// Everything extraction needs, from the validated config.
#[derive(Debug, Clone)]
pub struct ExtractSpec {
    /// Items or document.
    pub mode: Mode,
    /// Pointer to the items array.
    pub items: Pointer,
    /// Pointer to the key inside an item.
    pub key: Pointer,
    /// Pointer to the version inside an item.
    pub version: Option<Pointer>,
    /// Pointers removed before hashing.
    pub ignore: Vec<Pointer>,
}

/// SHA-256-sized content hash of an item (BLAKE3 of its canonical form).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// Lowercase hex, as used in event ids and `preview`.
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..12])
    }
}

/// One extracted item; its hash is computed on demand (the `version` fast path skips it).
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Value at `key`, as a string.
    pub key: String,
    /// Value at `version`, as a string, when configured and present.
    pub version: Option<String>,
    /// The item as fetched.
    pub data: Value,
}

/// Why a body could not be turned into items.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The body is not JSON.
    #[error("response is not valid JSON")]
    Json(#[source] serde_json::Error),
    /// `items` points nowhere.
    #[error("items pointer {pointer:?} does not resolve in the response (has the API changed?)")]
    ItemsMissing {
        /// The pointer.
        pointer: String,
    },
    /// `items` points at something other than an array.
    #[error("items pointer {pointer:?} resolves to {found}, expected an array")]
    ItemsNotArray {
        /// The pointer.
        pointer: String,
        /// JSON type found.
        found: &'static str,
    },
    /// An item has no value at `key`.
    #[error("item {index} has no key at {pointer:?}")]
    KeyMissing {
        /// The key pointer.
        pointer: String,
        /// Index of the item in the array.
        index: usize,
    },
    /// An item's key is an object, array, bool or null.
    #[error("item {index} has a {found} at key pointer {pointer:?}, expected a string or number")]
    KeyNotScalar {
        /// The key pointer.
        pointer: String,
        /// Index of the item.
        index: usize,
        /// JSON type found.
        found: &'static str,
    },
    /// Two items share a key.
    #[error("duplicate key {key:?} in the response (key pointer {pointer:?} must be unique)")]
    DuplicateKey {
        /// The key pointer.
        pointer: String,
        /// The repeated key.
        key: String,
    },
}

/// Parses `body` and extracts its items according to `spec`.
pub fn extract(spec: &ExtractSpec, body: &[u8]) -> Result<Vec<Item>, ExtractError> {
    let root: Value = serde_json::from_slice(body).map_err(ExtractError::Json)?;
    extract_value(spec, root)
}

/// Extracts items from an already parsed body.
pub fn extract_value(spec: &ExtractSpec, mut root: Value) -> Result<Vec<Item>, ExtractError> {
    if spec.mode == Mode::Document {
        return Ok(vec![Item {
            key: String::new(),
            version: None,
            data: root,
        }]);
    }
    let list = take_items(spec, &mut root)?;
    let mut seen = HashSet::with_capacity(list.len());
    let mut items = Vec::with_capacity(list.len());
    for (index, data) in list.into_iter().enumerate() {
        let key = item_key(spec, &data, index)?;
        if !seen.insert(key.clone()) {
            return Err(ExtractError::DuplicateKey {
                pointer: spec.key.raw.clone(),
                key,
            });
        }
        let version = spec
            .version
            .as_ref()
            .and_then(|p| p.resolve(&data))
            .map(scalar_string);
        items.push(Item { key, version, data });
    }
    Ok(items)
}

fn take_items(spec: &ExtractSpec, root: &mut Value) -> Result<Vec<Value>, ExtractError> {
    let pointer = || spec.items.raw.clone();
    let node = if spec.items.tokens.is_empty() {
        root
    } else {
        root.pointer_mut(&spec.items.raw)
            .ok_or_else(|| ExtractError::ItemsMissing { pointer: pointer() })?
    };
    match node.take() {
        Value::Array(list) => Ok(list),
        other => Err(ExtractError::ItemsNotArray {
            pointer: pointer(),
            found: type_name(&other),
        }),
    }
}

fn item_key(spec: &ExtractSpec, data: &Value, index: usize) -> Result<String, ExtractError> {
    let pointer = || spec.key.raw.clone();
    match spec.key.resolve(data) {
        None => Err(ExtractError::KeyMissing {
            pointer: pointer(),
            index,
        }),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err(ExtractError::KeyNotScalar {
            pointer: pointer(),
            index,
            found: type_name(other),
        }),
    }
}

/// A string as itself, anything else as compact JSON.
fn scalar_string(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// JSON type name for messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl ExtractSpec {
    /// Canonical content hash of `data`, skipping the `ignore` pointers. Object keys are hashed in
    /// sorted order and every value is tagged and length-prefixed, so two items hash equal exactly
    /// when they are equal as JSON (after `ignore`).
    pub fn hash(&self, data: &Value) -> ContentHash {
        let mut hasher = blake3::Hasher::new();
        let ignore: Vec<&[String]> = self.ignore.iter().map(|p| p.tokens.as_slice()).collect();
        hash_node(data, &ignore, &mut hasher);
        ContentHash(*hasher.finalize().as_bytes())
    }
}

fn hash_node(value: &Value, ignore: &[&[String]], h: &mut blake3::Hasher) {
    match value {
        Value::Null => {
            h.update(b"n");
        }
        Value::Bool(b) => {
            h.update(if *b { b"t" } else { b"f" });
        }
        Value::Number(n) => hash_str(b'#', &n.to_string(), h),
        Value::String(s) => hash_str(b's', s, h),
        Value::Array(list) => {
            h.update(b"[");
            h.update(&(list.len() as u64).to_le_bytes());
            for (i, child) in list.iter().enumerate() {
                if ignore.is_empty() {
                    hash_node(child, ignore, h);
                } else {
                    hash_child(&i.to_string(), child, ignore, h);
                }
            }
        }
        Value::Object(map) => {
            h.update(b"{");
            let mut keys: Vec<&String> = map.keys().collect();
            if !keys.is_sorted() {
                keys.sort();
            }
            for key in keys {
                let child = &map[key];
                if ignore.is_empty() {
                    hash_str(b'k', key, h);
                    hash_node(child, ignore, h);
                } else if !ignore.iter().any(|p| p.len() == 1 && p[0] == *key) {
                    hash_str(b'k', key, h);
                    hash_child(key, child, ignore, h);
                }
            }
            h.update(b"}");
        }
    }
}

/// Descends into `child` (reached by `token`) with the ignore pointers that continue below it.
fn hash_child(token: &str, child: &Value, ignore: &[&[String]], h: &mut blake3::Hasher) {
    let below: Vec<&[String]> = ignore
        .iter()
        .filter(|p| p.len() > 1 && p[0] == token)
        .map(|p| &p[1..])
        .collect();
    // An array element that an ignore pointer names exactly is hashed as null, keeping positions.
    if ignore.iter().any(|p| p.len() == 1 && p[0] == token) {
        h.update(b"n");
        return;
    }
    hash_node(child, &below, h);
}

fn hash_str(tag: u8, s: &str, h: &mut blake3::Hasher) {
    h.update(&[tag]);
    h.update(&(s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(ignore: &[&str]) -> ExtractSpec {
        ExtractSpec {
            mode: Mode::Items,
            items: Pointer::parse("/data").unwrap(),
            key: Pointer::parse("/id").unwrap(),
            version: Some(Pointer::parse("/v").unwrap()),
            ignore: ignore.iter().map(|p| Pointer::parse(p).unwrap()).collect(),
        }
    }

    #[test]
    fn extracts_keys_and_versions() {
        let body = br#"{"data":[{"id":1,"v":"a"},{"id":"x","v":2}]}"#;
        let items = extract(&spec(&[]), body).unwrap();
        assert_eq!(items[0].key, "1");
        assert_eq!(items[0].version.as_deref(), Some("a"));
        assert_eq!(items[1].key, "x");
        assert_eq!(items[1].version.as_deref(), Some("2"));
    }

    #[test]
    fn rejects_missing_duplicate_and_drifted_shapes() {
        let s = spec(&[]);
        assert!(matches!(extract(&s, b"{"), Err(ExtractError::Json(_))));
        assert!(matches!(
            extract(&s, br#"{"items":[]}"#),
            Err(ExtractError::ItemsMissing { .. })
        ));
        assert!(matches!(
            extract(&s, br#"{"data":{}}"#),
            Err(ExtractError::ItemsNotArray { .. })
        ));
        assert!(matches!(
            extract(&s, br#"{"data":[{"x":1}]}"#),
            Err(ExtractError::KeyMissing { .. })
        ));
        assert!(matches!(
            extract(&s, br#"{"data":[{"id":1},{"id":1}]}"#),
            Err(ExtractError::DuplicateKey { .. })
        ));
        assert!(matches!(
            extract(&s, br#"{"data":[{"id":[1]}]}"#),
            Err(ExtractError::KeyNotScalar { .. })
        ));
    }

    #[test]
    fn hash_ignores_configured_pointers_and_key_order() {
        let s = spec(&["/reactions", "/meta/seen"]);
        let a = json!({"id":1,"title":"t","reactions":5,"meta":{"seen":1,"x":2}});
        let b = json!({"meta":{"x":2,"seen":9},"reactions":7,"title":"t","id":1});
        assert_eq!(s.hash(&a), s.hash(&b));
        let c = json!({"id":1,"title":"u","reactions":5,"meta":{"seen":1,"x":2}});
        assert_ne!(s.hash(&a), s.hash(&c));
    }

    #[test]
    fn hash_distinguishes_types_and_boundaries() {
        let s = spec(&[]);
        assert_ne!(s.hash(&json!({"a":"1"})), s.hash(&json!({"a":1})));
        assert_ne!(s.hash(&json!(["ab", "c"])), s.hash(&json!(["a", "bc"])));
        assert_ne!(s.hash(&json!({"a":null})), s.hash(&json!({})));
    }

    #[test]
    fn pointer_unescapes_tokens() {
        let p = Pointer::parse("/a~1b/c~0d").unwrap();
        assert_eq!(p.tokens(), ["a/b", "c~d"]);
        assert!(Pointer::parse("id").is_err());
        assert!(Pointer::parse("/").unwrap().tokens().is_empty());
    }
}

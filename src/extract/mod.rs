//! JSON body → items: the `items` pointer, each item's `key` and `version`, and a canonical
//! content hash that skips the `ignore` pointers. Pure; no I/O.
//!
//! Sits between the fetch and the diff in the pipeline. A body that does not fit the spec (not
//! JSON, `items` not resolving to an array, a key missing or duplicated) is an error: the poll
//! fails and nothing downstream runs, so schema drift is never read as "everything was deleted".
//!
//! `locate.rs` finds the items array in one pass without building values; `index.rs` remembers
//! which item bytes were processed last time so that unchanged items are not parsed at all;
//! `canonical.rs` computes content hashes.

mod canonical;
mod index;
mod locate;
mod strict;

use std::collections::HashSet;
use std::fmt;

use serde_json::Value;

pub use index::{KnownBytes, NothingKnown, RawHash, raw_hash};
use strict::parse_strict;

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
#[derive(Debug, Clone, PartialEq)]
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
    /// An object inside an item has the same key twice (JSON parsers disagree on which wins).
    #[error("item {index} has the object key {key:?} twice; refusing to guess which value counts")]
    DuplicateObjectKey {
        /// Index of the item (0 in document mode).
        index: usize,
        /// The repeated object key.
        key: String,
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

/// The items of one body. Items whose bytes the index knows are not parsed (`known`); the
/// rest are parsed (`items`).
#[derive(Debug, Default)]
pub struct Extraction {
    /// Parsed items: new, or with bytes the index does not know.
    pub items: Vec<Item>,
    /// Raw hash of each parsed item, aligned with `items`.
    pub raw: Vec<RawHash>,
    /// Raw hashes of the items the index knows (unchanged content), sorted.
    pub known: Vec<RawHash>,
}

impl Extraction {
    /// Number of items in the body.
    pub fn len(&self) -> usize {
        self.items.len() + self.known.len()
    }

    /// Whether the body held no item.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parses `body` and extracts all its items according to `spec`.
pub fn extract(spec: &ExtractSpec, body: &[u8]) -> Result<Vec<Item>, ExtractError> {
    extract_with(spec, body, &NothingKnown).map(|e| e.items)
}

/// Extracts the items of `body`; items whose bytes `index` knows are reported by hash without
/// being parsed.
pub fn extract_with(
    spec: &ExtractSpec,
    body: &[u8],
    index: &dyn KnownBytes,
) -> Result<Extraction, ExtractError> {
    let mut out = extract_page(spec, body, index)?;
    if spec.mode == Mode::Items {
        check_unique(spec, &mut out, index)?;
    }
    Ok(out)
}

/// [`extract_with`] for one page of a paginated run: keys are checked for uniqueness once over
/// the whole run ([`check_run`]), after the pages' extractions are merged ([`Extraction::merge`]).
pub fn extract_page(
    spec: &ExtractSpec,
    body: &[u8],
    index: &dyn KnownBytes,
) -> Result<Extraction, ExtractError> {
    if spec.mode == Mode::Document {
        let data = parse_strict(body, 0)?;
        let item = Item {
            key: String::new(),
            version: None,
            data,
        };
        return Ok(Extraction {
            items: vec![item],
            raw: vec![raw_hash(body)],
            known: Vec::new(),
        });
    }
    let text =
        std::str::from_utf8(body).map_err(|e| ExtractError::Json(serde::de::Error::custom(e)))?;
    let list = locate::locate_items(spec, text)?;
    let mut out = Extraction {
        known: Vec::with_capacity(list.len()),
        ..Extraction::default()
    };
    for (position, raw) in list.iter().enumerate() {
        let hash = raw_hash(raw.get().as_bytes());
        if index.knows(hash) {
            out.known.push(hash);
            continue;
        }
        let data = parse_strict(raw.get().as_bytes(), position)?;
        let key = item_key(spec, &data, position)?;
        let version = spec
            .version
            .as_ref()
            .and_then(|p| p.resolve(&data))
            .map(scalar_string);
        out.items.push(Item { key, version, data });
        out.raw.push(hash);
    }
    Ok(out)
}

impl Extraction {
    /// Appends another page's items.
    pub fn merge(&mut self, page: Extraction) {
        self.items.extend(page.items);
        self.raw.extend(page.raw);
        self.known.extend(page.known);
    }
}

/// Checks a merged run's keys are unique (see [`extract_page`]).
pub fn check_run(
    spec: &ExtractSpec,
    ex: &mut Extraction,
    index: &dyn KnownBytes,
) -> Result<(), ExtractError> {
    check_unique(spec, ex, index)
}

/// Fails on a key that appears twice: among known items (identical bytes twice), among parsed
/// items, or once parsed and once known.
fn check_unique(
    spec: &ExtractSpec,
    ex: &mut Extraction,
    index: &dyn KnownBytes,
) -> Result<(), ExtractError> {
    let dup = |key: &str| ExtractError::DuplicateKey {
        pointer: spec.key.raw.clone(),
        key: key.to_owned(),
    };
    ex.known.sort_unstable();
    if ex.known.windows(2).any(|w| w[0] == w[1]) {
        // Only hashes are kept for known items: the key is not at hand, the bytes say enough.
        return Err(dup("(an item repeated with byte-identical JSON)"));
    }
    let mut parsed = HashSet::with_capacity(ex.items.len());
    for item in &ex.items {
        let known_too = index
            .raw_of(&item.key)
            .is_some_and(|h| ex.known.binary_search(&h).is_ok());
        if !parsed.insert(item.key.as_str()) || known_too {
            return Err(dup(&item.key));
        }
    }
    Ok(())
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

    /// 30-digit ids are distinct keys and `data` keeps the upstream's digits; a duplicate
    /// object key inside an item is an error naming it.
    #[test]
    fn big_ids_are_exact_and_duplicate_object_keys_fail() {
        let body = br#"{"data":[{"id":123456789012345678901234567890},{"id":123456789012345678901234567891}]}"#;
        let items = extract(&spec(&[]), body).unwrap();
        assert_eq!(items[0].key, "123456789012345678901234567890");
        assert_eq!(items[1].key, "123456789012345678901234567891");
        assert_eq!(
            items[1].data.to_string(),
            r#"{"id":123456789012345678901234567891}"#
        );
        let e = extract(
            &spec(&[]),
            br#"{"data":[{"id":1,"state":"open","state":"closed"}]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("\"state\" twice"), "{e}");
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
    fn known_bytes_are_not_parsed_and_duplicates_still_fail() {
        let s = spec(&[]);
        struct Index(Vec<(String, RawHash)>);
        impl KnownBytes for Index {
            fn knows(&self, raw: RawHash) -> bool {
                self.0.iter().any(|(_, h)| *h == raw)
            }
            fn raw_of(&self, key: &str) -> Option<RawHash> {
                self.0.iter().find(|(k, _)| k == key).map(|(_, h)| *h)
            }
        }
        let first = extract_with(&s, br#"{"data":[{"id":1},{"id":2}]}"#, &NothingKnown).unwrap();
        let index = Index(
            first
                .items
                .iter()
                .map(|i| i.key.clone())
                .zip(first.raw.iter().copied())
                .collect(),
        );
        let next = extract_with(&s, br#"{"data":[{"id":1},{"id":2,"x":1}]}"#, &index).unwrap();
        assert_eq!(next.items.len(), 1, "only the changed item is parsed");
        assert_eq!(next.items[0].key, "2");
        assert_eq!(next.known, vec![first.raw[0]]);
        let twice = extract_with(&s, br#"{"data":[{"id":1},{"id":1}]}"#, &index);
        assert!(matches!(twice, Err(ExtractError::DuplicateKey { .. })));
        let mixed = extract_with(&s, br#"{"data":[{"id":1},{"id":1,"x":2}]}"#, &index);
        assert!(matches!(mixed, Err(ExtractError::DuplicateKey { .. })));
    }

    #[test]
    fn items_pointer_walks_objects_and_arrays() {
        let mut s = spec(&[]);
        s.items = Pointer::parse("/a/1/b").unwrap();
        let items = extract(
            &s,
            br#"{"z":[1,{"q":2}],"a":[{"b":[]},{"b":[{"id":"k"}]}]}"#,
        )
        .unwrap();
        assert_eq!(items[0].key, "k");
        s.items = Pointer::parse("/a/7/b").unwrap();
        assert!(matches!(
            extract(&s, br#"{"a":[]}"#),
            Err(ExtractError::ItemsMissing { .. })
        ));
        s.items = Pointer::parse("/a").unwrap();
        assert!(matches!(
            extract(&s, br#"{"a":"x"}"#),
            Err(ExtractError::ItemsNotArray {
                found: "string",
                ..
            })
        ));
        assert!(matches!(
            extract(&s, br#"{"a":[]} trailing"#),
            Err(ExtractError::Json(_))
        ));
    }

    #[test]
    fn pointer_unescapes_tokens() {
        let p = Pointer::parse("/a~1b/c~0d").unwrap();
        assert_eq!(p.tokens(), ["a/b", "c~d"]);
        assert!(Pointer::parse("id").is_err());
        assert!(Pointer::parse("/").unwrap().tokens().is_empty());
    }
}

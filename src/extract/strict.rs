//! Strict parsing of one item: a JSON object with the same key twice is an error naming the
//! key, instead of serde_json's silent "last one wins" (other parsers keep the first, so the
//! item's meaning would depend on who reads it).

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::ExtractError;

/// Parses `bytes` (item number `index`) into a value, refusing duplicate object keys.
pub(super) fn parse_strict(bytes: &[u8], index: usize) -> Result<Value, ExtractError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    if let Err(e) = NoDuplicates.deserialize(&mut de) {
        let text = e.to_string();
        return Err(match text.strip_prefix(DUPLICATE) {
            Some(rest) => ExtractError::DuplicateObjectKey {
                index,
                key: rest.split(" at line ").next().unwrap_or(rest).to_owned(),
            },
            None => ExtractError::Json(e),
        });
    }
    serde_json::from_slice(bytes).map_err(ExtractError::Json)
}

/// Marks our error inside serde_json's (which appends the position).
const DUPLICATE: &str = "duplicate object key: ";

/// Walks a value, checking every object's keys; builds nothing.
struct NoDuplicates;

impl<'de> DeserializeSeed<'de> for NoDuplicates {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NoDuplicates {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("{DUPLICATE}{key}")));
            }
            map.next_value_seed(NoDuplicates)?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(NoDuplicates)?.is_some() {}
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_named_at_any_depth() {
        let e = parse_strict(br#"{"id":1,"a":{"b":1,"b":2}}"#, 4).unwrap_err();
        assert!(
            matches!(&e, ExtractError::DuplicateObjectKey { index: 4, key } if key == "b"),
            "{e:?}"
        );
        assert!(parse_strict(br#"[{"a":1},{"a":2}]"#, 0).is_ok());
    }

    #[test]
    fn big_numbers_stay_exact() {
        let v = parse_strict(
            br#"{"id":123456789012345678901234567890,"x":0.1000000000000000000001}"#,
            0,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"id":123456789012345678901234567890,"x":0.1000000000000000000001}"#
        );
    }
}

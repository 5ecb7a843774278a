//! Finding the items array in a body in one pass, without building a JSON value: serde seeds
//! follow the `items` pointer and capture only the target array's elements as raw slices.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{ExtractError, ExtractSpec};

/// Finds the items array by walking `spec.items` in a single pass over the body, without
/// building any value: only the elements of the target array are captured, as raw slices.
pub(super) fn locate_items<'a>(
    spec: &ExtractSpec,
    text: &'a str,
) -> Result<Vec<&'a RawValue>, ExtractError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let found = Locate {
        tokens: &spec.items.tokens,
    }
    .deserialize(&mut de)
    .map_err(ExtractError::Json)?;
    de.end().map_err(ExtractError::Json)?;
    match found {
        Found::Items(list) => Ok(list),
        Found::Missing => Err(ExtractError::ItemsMissing {
            pointer: spec.items.raw.clone(),
        }),
        Found::NotArray(found) => Err(ExtractError::ItemsNotArray {
            pointer: spec.items.raw.clone(),
            found,
        }),
    }
}

/// What the pointer walk found.
enum Found<'a> {
    Items(Vec<&'a RawValue>),
    Missing,
    NotArray(&'static str),
}

/// Seed that follows the remaining pointer tokens.
struct Locate<'p> {
    tokens: &'p [String],
}

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = Found<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Found<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Locate<'_> {
    type Value = Found<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found<'de>, A::Error> {
        let Some((token, rest)) = self.tokens.split_first() else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(Found::NotArray("object"));
        };
        let mut found = Found::Missing;
        while let Some(hit) = map.next_key_seed(KeyIs(token))? {
            if hit {
                found = map.next_value_seed(Locate { tokens: rest })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Found<'de>, A::Error> {
        let Some((token, rest)) = self.tokens.split_first() else {
            let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(64));
            while let Some(raw) = seq.next_element::<&'de RawValue>()? {
                list.push(raw);
            }
            return Ok(Found::Items(list));
        };
        let wanted = token.parse::<usize>().ok();
        let mut found = Found::Missing;
        let mut index = 0usize;
        loop {
            if Some(index) == wanted {
                match seq.next_element_seed(Locate { tokens: rest })? {
                    Some(f) => found = f,
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            index += 1;
        }
        Ok(found)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Found<'de>, E> {
        Ok(self.scalar("boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Found<'de>, E> {
        Ok(self.scalar("number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Found<'de>, E> {
        Ok(self.scalar("number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Found<'de>, E> {
        Ok(self.scalar("number"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Found<'de>, E> {
        Ok(self.scalar("string"))
    }
    fn visit_unit<E>(self) -> Result<Found<'de>, E> {
        Ok(self.scalar("null"))
    }
}

impl Locate<'_> {
    /// A scalar where the pointer wanted to go on (missing) or to end (not an array).
    fn scalar<'de>(&self, found: &'static str) -> Found<'de> {
        if self.tokens.is_empty() {
            Found::NotArray(found)
        } else {
            Found::Missing
        }
    }
}

/// Seed that compares an object key with a pointer token without allocating.
struct KeyIs<'t>(&'t str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

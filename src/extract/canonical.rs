//! The canonical content hash of an item: object keys sorted, every value type-tagged and
//! length-prefixed, `ignore` pointers skipped, then one BLAKE3 call over the encoding.

use serde_json::Value;

use super::{ContentHash, ExtractSpec};

impl ExtractSpec {
    /// Canonical content hash of `data`, skipping the `ignore` pointers. Object keys are hashed in
    /// sorted order and every value is tagged and length-prefixed, so two items hash equal exactly
    /// when they are equal as JSON (after `ignore`).
    pub fn hash(&self, data: &Value) -> ContentHash {
        let ignore: Vec<&[String]> = self.ignore.iter().map(|p| p.tokens.as_slice()).collect();
        // One buffer per thread: the canonical form is written out, then hashed in one call
        // (BLAKE3 is much faster on one long input than on many tiny updates).
        CANONICAL.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            encode_node(data, &ignore, &mut buf);
            ContentHash(*blake3::hash(&buf).as_bytes())
        })
    }
}

thread_local! {
    static CANONICAL: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn encode_node(value: &Value, ignore: &[&[String]], out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(b'n'),
        Value::Bool(b) => out.push(if *b { b't' } else { b'f' }),
        Value::Number(n) => encode_number(n, out),
        Value::String(s) => encode_str(b's', s, out),
        Value::Array(list) => {
            out.push(b'[');
            out.extend_from_slice(&(list.len() as u64).to_le_bytes());
            for (i, child) in list.iter().enumerate() {
                if ignore.is_empty() {
                    encode_node(child, ignore, out);
                } else {
                    encode_child(&i.to_string(), child, ignore, out);
                }
            }
        }
        Value::Object(map) => {
            out.push(b'{');
            let mut keys: Vec<&String> = map.keys().collect();
            if !keys.is_sorted() {
                keys.sort();
            }
            for key in keys {
                let child = &map[key];
                if ignore.is_empty() {
                    encode_str(b'k', key, out);
                    encode_node(child, ignore, out);
                } else if !ignore.iter().any(|p| p.len() == 1 && p[0] == *key) {
                    encode_str(b'k', key, out);
                    encode_child(key, child, ignore, out);
                }
            }
            out.push(b'}');
        }
    }
}

/// Descends into `child` (reached by `token`) with the ignore pointers that continue below it.
fn encode_child(token: &str, child: &Value, ignore: &[&[String]], out: &mut Vec<u8>) {
    // An array element that an ignore pointer names exactly is encoded as null, keeping positions.
    if ignore.iter().any(|p| p.len() == 1 && p[0] == token) {
        out.push(b'n');
        return;
    }
    if !ignore.iter().any(|p| p.len() > 1 && p[0] == token) {
        return encode_node(child, &[], out);
    }
    let below: Vec<&[String]> = ignore
        .iter()
        .filter(|p| p.len() > 1 && p[0] == token)
        .map(|p| &p[1..])
        .collect();
    encode_node(child, &below, out);
}

/// Numbers are kept exactly as the upstream wrote them (`arbitrary_precision`). Integers that
/// fit 64 bits, and decimals written in the shortest form of their `f64` (what nearly every
/// serializer emits), keep the encoding hashes had before exact numbers, so stored hashes stay
/// valid; any other text (30-digit ids, long decimals, exponents) is hashed verbatim under its
/// own tag, so two numbers that differ only beyond `f64` precision never hash equal.
fn encode_number(n: &serde_json::Number, out: &mut Vec<u8>) {
    let text = n.to_string();
    let legacy = if let Some(i) = n.as_i64() {
        Some(i.to_string())
    } else if let Some(u) = n.as_u64() {
        Some(u.to_string())
    } else {
        n.as_f64()
            .and_then(serde_json::Number::from_f64)
            .map(|f| f.to_string())
            .filter(|shortest| *shortest == text)
    };
    // A number's text never contains ';', so the terminator is unambiguous.
    match legacy {
        Some(t) => {
            out.push(b'#');
            out.extend_from_slice(t.as_bytes());
        }
        None => {
            out.push(b'N');
            out.extend_from_slice(text.as_bytes());
        }
    }
    out.push(b';');
}

fn encode_str(tag: u8, s: &str, out: &mut Vec<u8>) {
    out.push(tag);
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(text: &str) -> String {
        let n: serde_json::Number = serde_json::from_str(text).unwrap();
        let mut out = Vec::new();
        encode_number(&n, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// Integers and shortest-form decimals keep the encoding of stored hashes; any other text
    /// is hashed verbatim, so numbers beyond f64 precision stay distinct.
    #[test]
    fn numbers_are_exact_and_keep_legacy_hashes() {
        assert_eq!(enc("1"), "#1;");
        assert_eq!(enc("-42"), "#-42;");
        assert_eq!(enc("18446744073709551615"), "#18446744073709551615;");
        assert_eq!(enc("0.1"), "#0.1;");
        assert_eq!(enc("1e2"), "N1e+2;");
        assert_eq!(
            enc("123456789012345678901234567890"),
            "N123456789012345678901234567890;"
        );
        assert_ne!(enc("0.10000000000000000001"), enc("0.10000000000000000002"));
    }
}

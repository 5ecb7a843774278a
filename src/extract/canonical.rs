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
        Value::Number(n) => {
            // A number's text never contains ';', so the terminator is unambiguous.
            out.push(b'#');
            let _ = std::io::Write::write_fmt(out, format_args!("{n}"));
            out.push(b';');
        }
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

fn encode_str(tag: u8, s: &str, out: &mut Vec<u8>) {
    out.push(tag);
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

//! The fuzz entry points (`pollhook::fuzz`, also driven by `cargo fuzz` under `fuzz/`) as
//! proptest properties with a small budget, so CI runs them on every change: arbitrary bytes,
//! mutations of real configs, and JSON-shaped bodies.

use proptest::prelude::*;
use serde_json::{Value, json};

fn config_seed() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/bridge.yaml")).unwrap()
}

/// A JSON value of bounded size and depth, with duplicate-prone keys and big numbers.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[1-9][0-9]{18,31}".prop_map(|d| serde_json::from_str(&d).unwrap()),
        "[a-z]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("(id|v|x|a|[a-z]{1,3})", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// The config loader never panics on arbitrary bytes.
    #[test]
    fn config_loader_takes_any_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        pollhook::fuzz::config(&data);
    }

    /// The config loader never panics on a real config with bytes replaced.
    #[test]
    fn config_loader_takes_mutated_configs(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)
    ) {
        let mut bytes = config_seed().into_bytes();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        pollhook::fuzz::config(&bytes);
    }

    /// Extraction + diff of arbitrary bytes never panics.
    #[test]
    fn extraction_takes_any_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        pollhook::fuzz::extract_diff(&data);
    }

    /// A JSON body that extracts shows no change against the state it produced.
    #[test]
    fn extraction_of_json_is_stable(selector in any::<u8>(), items in prop::collection::vec(json_value(), 0..12)) {
        let body = match selector & 2 {
            0 => Value::Array(items),
            _ => json!({ "data": items }),
        };
        let mut data = vec![selector];
        data.extend(serde_json::to_vec(&body).unwrap());
        pollhook::fuzz::extract_diff(&data);
    }

    /// Items with unique ids always extract, and are stable.
    #[test]
    fn extraction_of_keyed_items_is_stable(values in prop::collection::vec(json_value(), 1..12)) {
        let items: Vec<Value> = values
            .into_iter()
            .enumerate()
            .map(|(i, v)| json!({"id": i, "v": v}))
            .collect();
        let mut data = vec![0u8];
        data.extend(serde_json::to_vec(&items).unwrap());
        pollhook::fuzz::extract_diff(&data);
    }

    /// The jq compiler never panics on jq-like text.
    #[test]
    fn jq_compiler_takes_any_text(text in r#"[.\[\]{}()|,:;$a-z0-9 "+*/<>=!?-]{0,40}"#) {
        pollhook::fuzz::jq(text.as_bytes());
    }

    /// The header parsers never panic, and every wait they yield is capped.
    #[test]
    fn header_parsers_take_any_text(
        text in "(([Rr]etry-[Aa]fter|[Xx]-[Rr]ate[Ll]imit-(Remaining|Reset)|[Rr]ate[Ll]imit(-Reset|-Remaining)?|[Ll]ink|[Xx]-[Pp]oll-[Ii]nterval): [ -~]{0,40}\n){0,6}",
        status in any::<u8>()
    ) {
        let mut data = vec![status];
        data.extend(text.as_bytes());
        pollhook::fuzz::headers(&data);
    }
}

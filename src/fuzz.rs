//! Entry points for fuzzing the parsers that see untrusted input: the config loader, extraction
//! + diff of an upstream body, the response-header parsers (`Link`, `Retry-After`,
//! `X-RateLimit-*`, `RateLimit`) and the jq compiler. The `cargo fuzz` targets under `fuzz/` and the proptest
//! properties in `tests/it/fuzz_props.rs` (run in CI) call the same functions.
//!
//! Each function takes arbitrary bytes, must never panic, and checks the properties that must
//! hold for any input (asserting them, so a fuzzer reports a violation as a crash).

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::diff::{Diff, ItemState, ItemTable, diff};
use crate::extract::{ExtractSpec, Item, Mode, NothingKnown, Pointer, RawHash, extract_with};
use crate::http::{MAX_UPSTREAM_WAIT, parse_retry_after};
use crate::poller::paginate::next_link;
use crate::poller::rate_limit::{Signal, signal_wait};

/// The config loader on arbitrary text: it returns a config or problems, never panics, and a
/// rejection always names at least one problem.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let env = |name: &str| {
        (name == "SECRET").then(|| "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned())
    };
    match crate::config::load_str(&text, Path::new("/fuzz/bridge.yaml"), &env) {
        Ok(config) => assert!(!config.sources.is_empty(), "a config without sources"),
        Err(e) => {
            let message = e.to_string();
            assert!(!message.is_empty());
        }
    }
}

fn spec(selector: u8) -> ExtractSpec {
    let p = |s: &str| Pointer::parse(s).unwrap_or_else(|_| unreachable!("static pointer"));
    ExtractSpec {
        mode: if selector & 1 == 0 {
            Mode::Items
        } else {
            Mode::Document
        },
        items: p(if selector & 2 == 0 { "/" } else { "/data" }),
        key: p("/id"),
        version: (selector & 4 != 0).then(|| p("/v")),
        ignore: if selector & 8 != 0 {
            vec![p("/x"), p("/a/0")]
        } else {
            Vec::new()
        },
    }
}

/// Extraction and diff of an arbitrary body (the first byte picks the spec). A body that
/// extracts must, diffed against the state it produced, show no change, both parsed again and
/// through the raw-bytes index (invariant 3).
pub fn extract_diff(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let spec = spec(selector);
    let Ok(first) = extract_with(&spec, body, &NothingKnown) else {
        return;
    };
    let hash = |item: &Item| spec.hash(&item.data);
    let run = |stored: &HashMap<String, ItemState>, table: &ItemTable, items, known: &[RawHash]| {
        let rows = || Ok::<_, Infallible>(stored.clone().into_iter().collect());
        let Ok::<Diff, Infallible>(d) = diff(table, items, known, rows, &hash);
        d
    };
    let created = run(&HashMap::new(), &ItemTable::default(), &first.items, &[]);
    assert_eq!(
        created.changes.len(),
        first.items.len(),
        "every item is new"
    );
    let stored: HashMap<String, ItemState> = created
        .changes
        .iter()
        .map(|c| (c.key.clone(), c.state.clone()))
        .collect();
    assert_eq!(stored.len(), first.items.len(), "keys are unique");
    let mut table = ItemTable::new(stored.iter().map(|(k, s)| (k.as_str(), s)), 0);
    let again = run(&stored, &table, &first.items, &[]);
    assert!(again.is_empty(), "an unchanged body produced changes");
    for (raw, item) in first.raw.iter().zip(&first.items) {
        table.record_raw(&item.key, *raw);
    }
    let known = extract_with(&spec, body, &table).expect("the same body extracts twice");
    let through_index = run(&stored, &table, &known.items, &known.known);
    assert!(
        through_index.is_empty(),
        "an unchanged body produced changes through the index"
    );
}

/// The response-header parsers on arbitrary text: `Link` targets, `Retry-After`, and the rate
/// limit signals; every wait they yield is within [`MAX_UPSTREAM_WAIT`].
pub fn headers(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = next_link(text.lines());
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    if let Some(wait) = parse_retry_after(&text, now) {
        assert!(wait <= MAX_UPSTREAM_WAIT);
    }
    let mut map = HeaderMap::new();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) {
            map.append(n, v);
        }
    }
    let status = [200, 403, 429, 503][usize::from(data.first().copied().unwrap_or(0)) % 4];
    let strikes = u32::from(data.last().copied().unwrap_or(0));
    match signal_wait(status, &map, now, strikes) {
        Some(Signal::Told(w)) | Some(Signal::Unsignalled(w)) => {
            assert!(w <= MAX_UPSTREAM_WAIT, "a wait of {w:?}");
            let _ = SystemTime::now()
                .checked_add(w)
                .expect("a wait fits in time");
        }
        None => {}
    }
}

/// The jq compiler on arbitrary program text: it compiles or reports an error with an offset
/// inside the text, never panics. (Evaluation is not fuzzed in-process: a program may loop or
/// overflow the stack by design, which is why it runs in the jq worker.)
pub fn jq(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = crate::jq::compile(&text) {
        assert!(
            e.offset.is_none_or(|o| o <= text.len()),
            "offset out of range"
        );
        assert!(!e.message.is_empty());
    }
}

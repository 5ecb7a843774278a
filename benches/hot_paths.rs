//! Criterion benches of the hot paths: extract + diff, the unchanged-body check, and signing.
//! Run with `cargo bench --bench hot_paths`.

use std::convert::Infallible;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pollhook::delivery::signing::Signer;
use pollhook::diff::{ItemState, ItemTable, diff};
use pollhook::extract::{ExtractSpec, Item, Mode, NothingKnown, Pointer, extract_with};
use pollhook::poller::process::body_fingerprint;
use serde_json::{Value, json};

fn spec(version: bool) -> ExtractSpec {
    ExtractSpec {
        mode: Mode::Items,
        items: Pointer::parse("/items").unwrap(),
        key: Pointer::parse("/id").unwrap(),
        version: version.then(|| Pointer::parse("/updated_at").unwrap()),
        ignore: vec![Pointer::parse("/reactions").unwrap()],
    }
}

/// A GitHub-issue-like item of about 300 bytes.
fn item(id: usize, rev: usize) -> Value {
    json!({
        "id": id, "number": id, "title": format!("Issue number {id} about something"),
        "state": if rev.is_multiple_of(2) { "open" } else { "closed" },
        "labels": [{"name": "bug"}, {"name": "p2"}], "assignee": {"login": "someone", "id": 42},
        "reactions": {"+1": id % 7, "heart": 0}, "comments": id % 13,
        "updated_at": format!("2026-11-22T13:{:02}:{:02}Z", rev % 60, id % 60),
        "body": "Steps to reproduce: run the thing, observe the other thing."
    })
}

fn body(n: usize, changed_every: usize) -> Vec<u8> {
    let items: Vec<Value> = (0..n)
        .map(|i| {
            item(
                i,
                usize::from(changed_every > 0 && i.is_multiple_of(changed_every)),
            )
        })
        .collect();
    serde_json::to_vec(&json!({ "items": items })).unwrap()
}

/// The stored rows and the source's item table (with the bytes of each item recorded) after a
/// successful poll of `body`.
fn baseline(spec: &ExtractSpec, body: &[u8]) -> (Rows, ItemTable) {
    let ex = extract_with(spec, body, &NothingKnown).unwrap();
    let hash = |i: &Item| spec.hash(&i.data);
    let none = || Ok::<_, Infallible>(Vec::new());
    let d = diff(&ItemTable::default(), &ex.items, &[], none, &hash).unwrap();
    let rows: Rows = d.changes.into_iter().map(|c| (c.key, c.state)).collect();
    let mut table = ItemTable::new(rows.iter().map(|(k, s)| (k.as_str(), s)), 0);
    for (h, item) in ex.raw.iter().zip(&ex.items) {
        table.record_raw(&item.key, *h);
    }
    (rows, table)
}

type Rows = Vec<(String, ItemState)>;

/// What a poll does with a body: extract (skipping items whose bytes are known) and diff.
fn poll_path(spec: &ExtractSpec, rows: &Rows, table: &ItemTable, body: &[u8]) -> usize {
    let ex = extract_with(spec, body, table).unwrap();
    let hash = |i: &Item| spec.hash(&i.data);
    let rows = || Ok::<_, Infallible>(rows.clone());
    diff(table, &ex.items, &ex.known, rows, &hash)
        .unwrap()
        .changes
        .len()
}

fn extract_and_diff(c: &mut Criterion) {
    let before = body(10_000, 0);
    let after = body(10_000, 100); // 1% of items changed
    let mut g = c.benchmark_group("extract_diff_10k_items_1pct_changed");
    g.throughput(Throughput::Bytes(after.len() as u64));
    let s = spec(false);
    let (rows, table) = baseline(&s, &before);
    g.bench_function("steady_state", |b| {
        b.iter(|| assert_eq!(poll_path(&s, &rows, &table, black_box(&after)), 100))
    });
    // After a restart: the stored state without any recorded bytes.
    let cold = |rows: &Rows| ItemTable::new(rows.iter().map(|(k, s)| (k.as_str(), s)), 0);
    let table = cold(&rows);
    g.bench_function("cold_hash_every_item", |b| {
        b.iter(|| assert_eq!(poll_path(&s, &rows, &table, black_box(&after)), 100))
    });
    let sv = spec(true);
    let (rows_v, _) = baseline(&sv, &before);
    let table_v = cold(&rows_v);
    g.bench_function("cold_version_fast_path", |b| {
        b.iter(|| assert_eq!(poll_path(&sv, &rows_v, &table_v, black_box(&after)), 100))
    });
    g.finish();
}

fn unchanged_body(c: &mut Criterion) {
    // About 1 MiB: 3,300 items of ~320 bytes.
    let body = body(3_300, 0);
    let s = spec(false);
    let (rows, table) = baseline(&s, &body);
    let last = body_fingerprint("settings", &body);
    let mut g = c.benchmark_group("unchanged_1mib_body");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("fingerprint_check", |b| {
        b.iter(|| body_fingerprint("settings", black_box(&body)) == last)
    });
    g.bench_function("steady_state_extract_and_diff", |b| {
        b.iter(|| assert_eq!(poll_path(&s, &rows, &table, black_box(&body)), 0))
    });
    g.finish();
    eprintln!("unchanged body size: {} bytes", body.len());
}

/// A destination with `signature`, parsed from config text.
fn destination(signature: &str) -> std::sync::Arc<pollhook::config::Destination> {
    let yaml = format!(
        "destinations:\n  d:\n    url: http://127.0.0.1:9/hook\n    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n    signature: {signature}\nsources:\n  s:\n    url: http://127.0.0.1:9/x\n    every: 1h\n    key: /id\n    to: [d]\n"
    );
    let config =
        pollhook::config::load_str(&yaml, std::path::Path::new("/tmp/bridge.yaml"), &|_| None)
            .expect("bench config");
    config.destinations["d"].clone()
}

fn signing(c: &mut Criterion) {
    let payload = vec![b'x'; 1024];
    let mut g = c.benchmark_group("sign_1kib_event");
    g.throughput(Throughput::Elements(1));
    for preset in ["standard", "stripe", "github"] {
        let signer = Signer::new(&destination(preset));
        g.bench_function(preset, |b| {
            b.iter(|| {
                signer.headers(
                    "evt_abcdefghijklmnopqrstuvwxyz",
                    1_700_000_000,
                    black_box(&payload),
                )
            })
        });
    }
    g.finish();
}

/// Render (`body`: `.data` plus a 5-key object) + `filter` + sign a 1 KiB event through the
/// jq worker process, as the daemon does per event and destination.
fn render_filter_sign(c: &mut Criterion) {
    let yaml = "destinations:\n  d:\n    url: http://127.0.0.1:9/hook\n    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n    filter: '.type == \"item.created\" and .data.assigned_agent_id == \"a1\"'\n    body: '.data + {event: .id, kind: .type, source: .source, key: .key, revision: .revision}'\nsources:\n  s:\n    url: http://127.0.0.1:9/x\n    every: 1h\n    key: /id\n    to: [d]\n";
    let config =
        pollhook::config::load_str(yaml, std::path::Path::new("/tmp/bridge.yaml"), &|_| None)
            .expect("bench config");
    let dest = config.destinations["d"].clone();
    let signer = Signer::new(&dest);
    let jq = pollhook::jq::JqPool::new(env!("CARGO_BIN_EXE_pollhook").into(), dest.jq, "d");
    let event = json!({
        "type": "item.created", "timestamp": "2026-11-30T12:00:00.000Z", "source": "s",
        "id": "evt_abcdefghijklmnopqrstuvwxyz", "key": "1", "revision": 1,
        "data": {"id": 1, "assigned_agent_id": "a1", "description": "x".repeat(900)},
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("render_filter_sign_1kib_event");
    g.throughput(Throughput::Elements(1));
    g.bench_function("one_event_per_round_trip", |b| {
        b.iter(|| {
            rt.block_on(async {
                match pollhook::delivery::transform::render_for(&jq, &dest, black_box(&event)).await
                {
                    pollhook::delivery::transform::Rendering::Body(Some(body)) => {
                        signer.headers("evt_abcdefghijklmnopqrstuvwxyz", 1_700_000_000, &body)
                    }
                    other => panic!("unexpected {other:?}"),
                }
            })
        })
    });
    // A poll's commit renders all its events in one round trip.
    const BATCH: usize = 100;
    g.throughput(Throughput::Elements(BATCH as u64));
    let secret = dest.secrets[0].expose();
    let raw = serde_json::value::to_raw_value(&event).unwrap();
    let requests: Vec<pollhook::jq::Request> = (0..BATCH)
        .map(|_| pollhook::jq::Request {
            filter: dest.filter.as_ref().map(|p| p.0.as_str()),
            body: dest.body.as_ref().map(|p| p.0.as_str()),
            secret,
            input: &raw,
        })
        .collect();
    g.bench_function("batch_of_100", |b| {
        b.iter(|| {
            rt.block_on(async {
                for r in jq.render(black_box(&requests)).await {
                    let Some(pollhook::jq::Outcome::Values(v)) = r.body else {
                        panic!("no body: {r:?}");
                    };
                    black_box(signer.headers(
                        "evt_abcdefghijklmnopqrstuvwxyz",
                        1_700_000_000,
                        v[0].get().as_bytes(),
                    ));
                }
            })
        })
    });
    g.bench_function("in_process_floor", |b| {
        let filter = pollhook::jq::compile(dest.filter.as_ref().unwrap().0.as_str()).unwrap();
        let body = pollhook::jq::compile(dest.body.as_ref().unwrap().0.as_str()).unwrap();
        let text = raw.get().as_bytes().to_vec();
        b.iter(|| {
            for _ in 0..BATCH {
                let v = jaq_json::read::parse_single(black_box(&text)).unwrap();
                let f = pollhook::jq::run(&filter, v.clone(), secret, 2).unwrap();
                assert!(matches!(f[..], [jaq_json::Val::Bool(true)]));
                let out = pollhook::jq::run(&body, v, secret, 2).unwrap();
                let mut body = Vec::new();
                pollhook::jq::write_json(&mut body, &out[0]);
                black_box(signer.headers("evt_abcdefghijklmnopqrstuvwxyz", 1_700_000_000, &body));
            }
        })
    });
    g.finish();
}

/// The status page's hourly counters, as a poll updates them (design §6a; the target is at
/// most 1 µs a poll).
fn status_counters(c: &mut Criterion) {
    let mut status = pollhook::status::SourceStatus::default();
    let mut now = 1_764_417_600_000i64;
    c.bench_function("status_count_poll", |b| {
        b.iter(|| {
            now += 100;
            status.count_poll(black_box(pollhook::status::outcome::NOT_MODIFIED), 0, now);
        })
    });
}

criterion_group!(
    benches,
    status_counters,
    extract_and_diff,
    unchanged_body,
    signing,
    render_filter_sign
);
criterion_main!(benches);

//! From a fetched body to a [`PollCommit`]: extract, diff against the in-memory copy of the
//! stored state, build the events (ids, payloads) for the destinations. Pure except for the
//! read of stored item data that `deleted` payloads and `previous`/`changes` need. The
//! destinations' jq programs run later, in the dispatcher (`delivery::transform`): a runaway
//! program never holds up a poll's commit.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::config::{EmitSet, FirstPoll, Source};
use crate::diff::{ChangeKind, Diff, ItemState, ItemTable, diff};
use crate::event::{EventType, Payload, changes, event_id, timestamp};
use crate::extract::{Extraction, Item, Mode, extract_with};
use crate::status::Registry;
use crate::store::{Delivery, ItemWrite, NewEvent, PollCommit, SourceMeta, StoreError};

use super::PollError;

/// Extraction result for one body.
pub struct Extracted {
    /// Items from the body (parsed ones, and those recognised by raw bytes).
    pub extraction: Extraction,
    /// Their diff against the stored state.
    pub diff: Diff,
    /// True when this poll only records a baseline (first poll, or changed extraction settings).
    pub baseline: bool,
    /// True when the changes are recorded without events (`resume --discard` after a hold).
    pub discard: bool,
}

/// Whether this poll's changes produce events.
fn emits(source: &Source, ex: &Extracted) -> bool {
    !ex.discard && (!ex.baseline || source.on_first_poll == FirstPoll::Emit)
}

/// Counts a committed poll's changes in its status entry (`pollhook_changes_total`): the
/// changes sent as events only. A baseline recorded without events (or a discarded hold)
/// reported nothing to anyone, and counting its items would show a burst of "changes" on every
/// first start and every change of extraction settings.
pub fn count_changes(source: &Source, ex: &Extracted, registry: &Registry) {
    if !emits(source, ex) || ex.diff.changes.is_empty() {
        return;
    }
    let mut counts = [0u64; 3];
    for change in &ex.diff.changes {
        counts[match change.kind {
            ChangeKind::Created => 0,
            ChangeKind::Updated => 1,
            ChangeKind::Deleted => 2,
        }] += 1;
    }
    registry.update_existing(&source.name, |s| {
        for (total, n) in s.changes.iter_mut().zip(counts) {
            *total += n;
        }
    });
}

/// Why the flood guard holds this poll, if it does: more events than `max_changes`, or more
/// than half of the live items deleted at once.
pub fn flood(source: &Source, ex: &Extracted, live: usize) -> Option<String> {
    if !emits(source, ex) {
        return None;
    }
    let how = format!(
        "`pollhook sources resume {}` emits them, `--discard` records them without events",
        source.name
    );
    let events = ex
        .diff
        .changes
        .iter()
        .filter(|c| wanted(c.kind, &source.emit))
        .count();
    if events > source.max_changes {
        return Some(format!(
            "held by the flood guard: {events} changes exceed max_changes ({}); {how}",
            source.max_changes
        ));
    }
    let deleted = ex
        .diff
        .changes
        .iter()
        .filter(|c| c.kind == ChangeKind::Deleted)
        .count();
    (deleted > 0 && deleted * 2 > live).then(|| {
        format!(
            "held by the flood guard: {deleted} of {live} items would be deleted at once; {how}"
        )
    })
}

/// Version tag of the settings encoding: bump it only when extraction semantics change on
/// purpose (every source then re-baselines once).
const SETTINGS_ENCODING: &str = "extract-v1";

/// Fingerprint of the extraction settings (`items`, `key`, `version`, `ignore`, `mode`); when
/// it changes the source is re-baselined. An explicit, versioned encoding of the settings, so
/// that no change of a `Debug` derive or a dependency can re-baseline every source.
pub fn settings_fingerprint(source: &Source) -> String {
    let spec = &source.extract;
    let mut h = blake3::Hasher::new();
    let mut field = |s: &str| {
        h.update(&(s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    field(SETTINGS_ENCODING);
    field(match spec.mode {
        Mode::Items => "items",
        Mode::Document => "document",
    });
    field(spec.items.as_str());
    field(spec.key.as_str());
    match &spec.version {
        Some(p) => {
            field("version");
            field(p.as_str());
        }
        None => field("no version"),
    }
    field(&spec.ignore.len().to_string());
    for p in &spec.ignore {
        field(p.as_str());
    }
    format!("v1:{}", &h.finalize().to_hex()[..16])
}

/// The fingerprint releases before the versioned encoding stored (a hash of the settings'
/// `Debug` text); still recognised so that upgrading re-baselines nothing.
pub fn legacy_settings_fingerprint(source: &Source) -> String {
    let text = format!("{:?}", source.extract);
    blake3::hash(text.as_bytes()).to_hex()[..16].to_owned()
}

/// Fingerprint of one body under the current settings.
pub fn body_fingerprint(settings: &str, body: &[u8]) -> u128 {
    // XXH3-128, as for each item's bytes (`extract::KnownBytes`): it runs at memory speed, and
    // it guards against accidents, not against an upstream hiding its own change from us.
    let seed = xxhash_rust::xxh3::xxh3_64(settings.as_bytes());
    xxhash_rust::xxh3::xxh3_128_with_seed(body, seed)
}

/// What a poll diffs: one body still to parse, or a paginated run's items, extracted page by
/// page as they arrived.
pub enum Snapshot {
    /// One response body.
    Body(Vec<u8>),
    /// Every page's items.
    Pages(Extraction),
}

/// Extracts `snapshot` (a body is parsed; items whose bytes `stored` knows are unchanged and
/// not parsed) and diffs it against `stored` (`baseline`: the stored state does not come from
/// the current settings, or there is none). `stored_rows` reads the source's stored rows, only
/// when items were deleted.
pub fn extract_and_diff(
    source: &Source,
    baseline: bool,
    stored: &ItemTable,
    stored_rows: impl FnOnce() -> Result<Vec<(String, ItemState)>, StoreError>,
    snapshot: Snapshot,
) -> Result<Extracted, PollError> {
    let spec = &source.extract;
    let extraction = match snapshot {
        Snapshot::Body(body) => extract_with(spec, &body, stored)?,
        Snapshot::Pages(extraction) => extraction,
    };
    let hash = |item: &Item| spec.hash(&item.data);
    let diff = diff(
        stored,
        &extraction.items,
        &extraction.known,
        stored_rows,
        &hash,
    )?;
    Ok(Extracted {
        extraction,
        diff,
        baseline,
        discard: false,
    })
}

/// After a successful poll whose changes are in `table`: parsed items' bytes now stand for
/// their stored content (deleted items lost theirs when their tombstone was set).
pub fn update_index(table: &mut ItemTable, ex: &Extracted) {
    table.reserve_raw(ex.extraction.raw.len());
    for (hash, item) in ex.extraction.raw.iter().zip(&ex.extraction.items) {
        table.record_raw(&item.key, *hash);
    }
}

fn wanted(kind: ChangeKind, emit: &EmitSet) -> bool {
    match kind {
        ChangeKind::Created => emit.created,
        ChangeKind::Updated => emit.updated,
        ChangeKind::Deleted => emit.deleted,
    }
}

fn event_type(kind: ChangeKind, mode: Mode) -> EventType {
    match (mode, kind) {
        (Mode::Document, _) => EventType::DocumentChanged,
        (Mode::Items, ChangeKind::Created) => EventType::Created,
        (Mode::Items, ChangeKind::Updated) => EventType::Updated,
        (Mode::Items, ChangeKind::Deleted) => EventType::Deleted,
    }
}

/// Whether the stored (previous) data of changed items is needed for the payloads.
pub fn previous_keys<'a>(source: &Source, ex: &'a Extracted) -> Vec<&'a str> {
    if !emits(source, ex) {
        return Vec::new();
    }
    let with_previous = source.include.previous || source.include.changes;
    ex.diff
        .changes
        .iter()
        .filter(|c| wanted(c.kind, &source.emit))
        .filter(|c| {
            c.kind == ChangeKind::Deleted || (c.kind == ChangeKind::Updated && with_previous)
        })
        .map(|c| c.key.as_str())
        .collect()
}

/// Builds the atomic commit for one poll; `meta` is the source metadata the new state carries. `previous` holds the stored data of [`previous_keys`].
pub fn build_commit(
    source: &Source,
    meta: SourceMeta,
    ex: &Extracted,
    previous: &HashMap<String, Vec<u8>>,
    now: DateTime<Utc>,
) -> Result<PollCommit, StoreError> {
    let emit_now = emits(source, ex);
    let mut items = Vec::with_capacity(ex.diff.changes.len() + ex.diff.silent.len());
    let mut events = Vec::new();
    let ts = timestamp(now);
    for change in &ex.diff.changes {
        let data = change.index.map(|i| &ex.extraction.items[i].data);
        items.push(ItemWrite {
            key: change.key.clone(),
            state: change.state.clone(),
            data: data.map(|d| d.to_string().into_bytes()),
        });
        if !emit_now || !wanted(change.kind, &source.emit) {
            continue;
        }
        let prev: Option<Value> = previous
            .get(&change.key)
            .map(|b| serde_json::from_slice(b))
            .transpose()
            .map_err(|e| StoreError::Corrupt {
                what: "item data",
                detail: e.to_string(),
            })?;
        let id = event_id(
            &source.name,
            &change.key,
            change.state.revision,
            &change.state.hash,
        );
        let null = Value::Null;
        let body_data = data.or(prev.as_ref()).unwrap_or(&null);
        let is_update = change.kind == ChangeKind::Updated;
        let kind = event_type(change.kind, source.extract.mode);
        let payload = Payload {
            kind,
            timestamp: ts.clone(),
            source: &source.name,
            id: &id,
            key: &change.key,
            revision: change.state.revision,
            data: body_data,
            previous: prev
                .as_ref()
                .filter(|_| is_update && source.include.previous),
            changes: prev
                .as_ref()
                .filter(|_| is_update && source.include.changes)
                .map(|p| changes(p, body_data)),
        };
        events.push(NewEvent {
            id: id.clone(),
            kind: kind.as_str(),
            key: change.key.clone(),
            revision: change.state.revision,
            body: Arc::from(payload.to_bytes()),
            deliveries: source.to.iter().map(|d| Delivery::envelope(d)).collect(),
        });
    }
    for (index, state) in &ex.diff.silent {
        let item = &ex.extraction.items[*index];
        items.push(ItemWrite {
            key: item.key.clone(),
            state: state.clone(),
            data: Some(item.data.to_string().into_bytes()),
        });
    }
    Ok(PollCommit {
        source: source.name.clone(),
        meta,
        items,
        events,
        now_ms: now.timestamp_millis(),
        fence: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(extra: &str) -> Arc<Source> {
        let yaml = format!(
            "destinations:\n  d:\n    url: http://127.0.0.1:9/h\n    signature: none\nsources:\n  s:\n    url: http://127.0.0.1:9/x\n    every: 1h\n    items: /data\n    key: /id\n    to: [d]\n{extra}"
        );
        let config =
            crate::config::load_str(&yaml, std::path::Path::new("/tmp/bridge.yaml"), &|_| None)
                .unwrap();
        config.sources["s"].clone()
    }

    /// The settings fingerprint is a fixed, versioned encoding: these values may only change
    /// together with `SETTINGS_ENCODING` (which re-baselines every source once).
    #[test]
    fn settings_fingerprint_is_a_stable_encoding() {
        let plain = source("");
        let full = source("    version: /updated_at\n    ignore: [/reactions]\n");
        assert_eq!(settings_fingerprint(&plain), "v1:8bc1b50934f2c245");
        assert_eq!(settings_fingerprint(&full), "v1:98f5a2bbe54d929e");
        assert_ne!(
            settings_fingerprint(&plain),
            legacy_settings_fingerprint(&plain)
        );
    }
}

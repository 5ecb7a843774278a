//! Pagination: fetch every page of a source (RFC 8288 `Link`, a cursor from the body, or page
//! numbers) and extract each page's items as it arrives, so the rest of the pipeline sees one
//! complete snapshot. Any page failing, a page repeating, a next link to another origin, more
//! pages than `max_pages` or more bytes than `max_run_body` fails the whole poll: deletions are
//! only ever computed from complete runs.
//!
//! Design notes (design §9, "Upstream bodies"): a run holds one page body at a time beyond the
//! items extracted so far. A page is extracted on a blocking thread and its body released
//! before the next is fetched; items whose bytes the stored state knows are kept as 8-byte
//! hashes, not parsed. The page cache that answers a later 304 keeps each page's validators,
//! next link, body fingerprint and item hashes, never its text: a page answered 304 (or served
//! byte-identical) contributes its cached hashes, and when the stored state no longer knows
//! one of them the page is fetched again in full.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use reqwest::Url;
use reqwest::header::{HeaderMap, LINK};
use serde_json::Value;

use super::PollError;
use super::fetch::{Fetched, Validators, fetch_url};
use super::rate_limit::Gate;
use crate::config::{Paginate, Source};
use crate::diff::ItemTable;
use crate::extract::{
    ExtractError, Extraction, KnownBytes, Pointer, RawHash, check_run, extract_page,
};

/// What one page contributed, kept (in memory) to answer a later 304 for the same URL.
#[derive(Debug, Clone, Default)]
pub struct CachedPage {
    validators: Validators,
    next: Option<Url>,
    /// XXH3-128 of the page body.
    fingerprint: u128,
    /// Raw hashes of the page's items (see `extract::RawHash`).
    hashes: Vec<RawHash>,
}

/// Per-page validators and item hashes of a source's last run, by page URL.
pub type PageCache = HashMap<String, CachedPage>;

/// A complete run.
#[derive(Debug)]
pub struct Pages {
    /// Every page's items, merged (unique keys checked).
    pub extraction: Extraction,
    /// A fingerprint of the whole run (its pages' bodies, in order).
    pub fingerprint: u128,
    /// Whether every page answered 304 (the snapshot is unchanged).
    pub all_not_modified: bool,
    /// This run's pages, to replace the cache once the poll has succeeded (a failed or held
    /// poll keeps the old cache, so the next run is not answered 304 for a state never stored).
    pub cache: PageCache,
}

/// What a run works with.
pub struct Run<'a> {
    /// Upstream client.
    pub client: &'a reqwest::Client,
    /// The source.
    pub source: &'a Arc<Source>,
    /// How it pages.
    pub paginate: &'a Paginate,
    /// Its budgets.
    pub gate: &'a Gate,
    /// The last successful run's pages.
    pub cache: &'a PageCache,
    /// The stored state's item table (which item bytes are known).
    pub items: &'a Arc<ItemTable>,
}

/// Fetches every page of the source and extracts their items. With conditional requests on,
/// each page is sent its own validators from the cache, and a 304 page reuses its cached item
/// hashes.
pub async fn fetch_pages(run: Run<'_>) -> Result<Pages, PollError> {
    let source = run.source;
    let mut fresh = PageCache::new();
    let mut url = source.request.url.clone();
    if let Paginate::Page { param, start } = run.paginate {
        url = with_param(&url, param, &start.to_string());
    }
    let mut seen = HashSet::from([url.to_string()]);
    let mut extraction = Extraction::default();
    let mut fingerprints = Vec::new();
    let mut received = 0u64;
    let mut all_not_modified = true;
    for number in 1.. {
        if number > source.max_pages {
            return Err(fail(format!(
                "more than max_pages ({}) pages; raise max_pages",
                source.max_pages
            )));
        }
        let page = page(&run, &url, number, &mut received).await?;
        all_not_modified &= page.not_modified;
        fingerprints.extend_from_slice(&page.cached.fingerprint.to_le_bytes());
        extraction.merge(page.extraction);
        let next = page.cached.next.clone();
        fresh.insert(url.to_string(), page.cached);
        let Some(next) = next else { break };
        if next.origin() != source.request.url.origin() {
            return Err(fail(
                "a next link points to another host; refusing to follow it".to_owned(),
            ));
        }
        if !seen.insert(next.to_string()) {
            return Err(fail(
                "the next page repeats a page already fetched in this run".to_owned(),
            ));
        }
        url = next;
    }
    check_run(&source.extract, &mut extraction, run.items.as_ref())?;
    Ok(Pages {
        extraction,
        fingerprint: xxhash_rust::xxh3::xxh3_128(&fingerprints),
        all_not_modified,
        cache: fresh,
    })
}

/// One page's part of a run.
struct Page {
    cached: CachedPage,
    extraction: Extraction,
    not_modified: bool,
}

/// One page: from the network, or from the cache on a 304 (or byte-identical body) whose item
/// hashes the stored state still knows. `received` counts the run's body bytes.
async fn page(
    run: &Run<'_>,
    url: &Url,
    number: usize,
    received: &mut u64,
) -> Result<Page, PollError> {
    let cached = run.cache.get(url.as_str());
    let sent = match (run.source.request.conditional, cached) {
        (true, Some(c)) if still_known(c, run.items) => c.validators.clone(),
        _ => Validators::default(),
    };
    let (fetched, headers) =
        fetch_url(run.client, &run.source.request, url, &sent, run.gate, None).await?;
    let (body, validators) = match fetched {
        Fetched::NotModified => {
            let cached = cached.ok_or_else(|| {
                fail("a page answered 304 to a request without validators".to_owned())
            })?;
            return Ok(reuse(cached.clone(), cached.validators.clone(), true));
        }
        Fetched::Body(body, validators) => (body, validators),
    };
    *received += body.len() as u64;
    if *received > run.source.request.max_run_body {
        let limit = run.source.request.max_run_body;
        let limit = match limit % (1 << 20) {
            0 => format!("{} MiB", limit >> 20),
            _ => format!("{limit} bytes"),
        };
        return Err(fail(format!(
            "the run received more than max_run_body ({limit}) in {number} pages; raise max_run_body"
        )));
    }
    let fingerprint = xxhash_rust::xxh3::xxh3_128(&body);
    if let Some(c) = cached.filter(|c| c.fingerprint == fingerprint && still_known(c, run.items)) {
        return Ok(reuse(c.clone(), validators, false));
    }
    let (extraction, next) = extract(run, body, headers, url, number).await?;
    let hashes = extraction
        .raw
        .iter()
        .chain(&extraction.known)
        .copied()
        .collect();
    let cached = CachedPage {
        validators,
        next,
        fingerprint,
        hashes,
    };
    Ok(Page {
        cached,
        extraction,
        not_modified: false,
    })
}

/// Whether every item hash of a cached page still stands for stored content.
fn still_known(page: &CachedPage, items: &ItemTable) -> bool {
    page.hashes.iter().all(|h| items.knows(*h))
}

/// A cached page's contribution: its items as known hashes.
fn reuse(cached: CachedPage, validators: Validators, not_modified: bool) -> Page {
    let extraction = Extraction {
        known: cached.hashes.clone(),
        ..Extraction::default()
    };
    Page {
        cached: CachedPage {
            validators,
            ..cached
        },
        extraction,
        not_modified,
    }
}

/// Extracts a page's items and finds the next page, on a blocking thread; the body is released
/// there.
async fn extract(
    run: &Run<'_>,
    body: Vec<u8>,
    headers: HeaderMap,
    url: &Url,
    number: usize,
) -> Result<(Extraction, Option<Url>), PollError> {
    let (source, items, paginate, url) = (
        run.source.clone(),
        run.items.clone(),
        run.paginate.clone(),
        url.clone(),
    );
    let work = move || -> Result<(Extraction, Option<Url>), PollError> {
        let extraction = extract_page(&source.extract, &body, items.as_ref())?;
        let next = next_page(&paginate, &url, &headers, &body, number, extraction.len())?;
        Ok((extraction, next))
    };
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| fail(format!("the page could not be extracted: {e}")))?
}

/// The next page's URL, if there is one.
fn next_page(
    paginate: &Paginate,
    url: &Url,
    headers: &HeaderMap,
    body: &[u8],
    number: usize,
    items: usize,
) -> Result<Option<Url>, PollError> {
    let next = match paginate {
        Paginate::Link => next_link(headers.get_all(LINK).iter().filter_map(|v| v.to_str().ok()))
            .map(|target| url.join(&target)),
        Paginate::Cursor { param, from } => {
            cursor_in(body, from)?.map(|c| Ok(with_param(url, param, &c)))
        }
        Paginate::Page { param, start } => {
            (items > 0).then(|| Ok(with_param(url, param, &(start + number as i64).to_string())))
        }
    };
    next.transpose()
        .map_err(|_| fail("a next link is not a valid URL".to_owned()))
}

/// The next cursor at `from` in a page body.
fn cursor_in(body: &[u8], from: &Pointer) -> Result<Option<String>, PollError> {
    let doc: Value = serde_json::from_slice(body).map_err(ExtractError::Json)?;
    Ok(cursor(from.resolve(&doc)))
}

fn fail(why: String) -> PollError {
    PollError::Paginate(why)
}

/// The cursor for the next page: a string as is, a number as text; absent, null or empty ends.
fn cursor(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// `url` with query parameter `param` set to `value` (replacing any earlier value).
fn with_param(url: &Url, param: &str, value: &str) -> Url {
    let mut next = url.clone();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != param)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    next.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair(param, value);
    next
}

/// The target of the `rel="next"` link in RFC 8288 `Link` header values; tolerant of unquoted
/// and multi-valued `rel` (`rel=next`, `rel="next last"`).
pub fn next_link<'a>(values: impl Iterator<Item = &'a str>) -> Option<String> {
    for value in values {
        let mut rest = value;
        while let Some(open) = rest.find('<') {
            let after_open = &rest[open + 1..];
            let close = after_open.find('>')?;
            let target = &after_open[..close];
            let params_and_rest = &after_open[close + 1..];
            let end = params_and_rest.find('<').unwrap_or(params_and_rest.len());
            let is_next = params_and_rest[..end].split(';').any(|param| {
                let Some((key, val)) = param.split_once('=') else {
                    return false;
                };
                let val = val.trim().trim_end_matches(',').trim().trim_matches('"');
                key.trim().eq_ignore_ascii_case("rel")
                    && val
                        .split_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
            });
            if is_next {
                return Some(target.trim().to_owned());
            }
            rest = &params_and_rest[end..];
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_next_in_quoted_unquoted_and_multi_valued_rel() {
        let h =
            r#"<https://a.example/x?page=1>; rel="prev", <https://a.example/x?page=3>; rel="next""#;
        assert_eq!(
            next_link([h].into_iter()).as_deref(),
            Some("https://a.example/x?page=3")
        );
        assert_eq!(
            next_link(["</p2>; rel=next"].into_iter()).as_deref(),
            Some("/p2")
        );
        assert_eq!(
            next_link([r#"</p9>; title="x"; rel="next last""#].into_iter()).as_deref(),
            Some("/p9")
        );
        assert_eq!(
            next_link(["</p1>; rel=\"prev\"", "</p4>; REL = \"Next\""].into_iter()).as_deref(),
            Some("/p4")
        );
        assert_eq!(next_link([r#"</x>; rel="nextish""#].into_iter()), None);
    }

    #[test]
    fn params_are_replaced_not_duplicated() {
        let url = Url::parse("http://h/x?state=all&page=1").unwrap();
        assert_eq!(
            with_param(&url, "page", "2").as_str(),
            "http://h/x?state=all&page=2"
        );
        assert_eq!(cursor(Some(&Value::Null)), None);
        assert_eq!(cursor(Some(&serde_json::json!(42))).as_deref(), Some("42"));
    }
}

//! Pagination: fetch every page of a source (RFC 8288 `Link`, a cursor from the body, or page
//! numbers) and merge their items into one array, so the rest of the pipeline sees one complete
//! snapshot. Any page failing, a page repeating, a next link to another origin, or more pages
//! than `max_pages` fails the whole poll: deletions are only ever computed from complete runs.

use std::collections::{HashMap, HashSet};

use reqwest::Url;
use reqwest::header::LINK;
use serde_json::Value;

use super::PollError;
use super::fetch::{Fetched, Validators, fetch_url};
use super::rate_limit::Gate;
use crate::config::{Paginate, Source};
use crate::extract::{ExtractError, raw_items};

/// What one page contributed, kept (in memory) to answer a later 304 for the same URL.
#[derive(Debug, Clone, Default)]
pub struct CachedPage {
    validators: Validators,
    items: Vec<String>,
    next: Option<Url>,
}

/// Per-page validators and contents of a source's last run, by page URL.
pub type PageCache = HashMap<String, CachedPage>;

/// A complete run.
#[derive(Debug)]
pub struct Pages {
    /// The merged items array, as JSON.
    pub body: Vec<u8>,
    /// Whether every page answered 304 (the snapshot is unchanged).
    pub all_not_modified: bool,
    /// This run's pages, to replace the cache once the poll has succeeded (a failed or held
    /// poll keeps the old cache, so the next run is not answered 304 for a state never stored).
    pub cache: PageCache,
}

/// Fetches every page of `source` and merges their items. With conditional requests on, each
/// page is sent its own validators from `cache`, and a 304 page reuses its cached items.
pub async fn fetch_pages(
    client: &reqwest::Client,
    source: &Source,
    paginate: &Paginate,
    gate: &Gate,
    cache: &PageCache,
) -> Result<Pages, PollError> {
    let mut fresh = PageCache::new();
    let mut url = source.request.url.clone();
    if let Paginate::Page { param, start } = paginate {
        url = with_param(&url, param, &start.to_string());
    }
    let mut seen = HashSet::from([url.to_string()]);
    let mut merged = String::from("[");
    let mut count = 0usize;
    let mut all_not_modified = true;
    for fetched_pages in 1.. {
        if fetched_pages > source.max_pages {
            return Err(fail(format!(
                "more than max_pages ({}) pages; raise max_pages",
                source.max_pages
            )));
        }
        let page = fetch_page(client, source, paginate, gate, cache, &url, fetched_pages).await?;
        all_not_modified &= page.1;
        fresh.insert(url.to_string(), page.0.clone());
        for raw in &page.0.items {
            if count > 0 {
                merged.push(',');
            }
            merged.push_str(raw);
            count += 1;
        }
        let Some(next) = page.0.next else { break };
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
    merged.push(']');
    Ok(Pages {
        body: merged.into_bytes(),
        all_not_modified,
        cache: fresh,
    })
}

/// One page: from the network, or from the cache on a 304. Returns whether it was a 304.
async fn fetch_page(
    client: &reqwest::Client,
    source: &Source,
    paginate: &Paginate,
    gate: &Gate,
    cache: &PageCache,
    url: &Url,
    number: usize,
) -> Result<(CachedPage, bool), PollError> {
    let sent = match source.request.conditional {
        true => cache
            .get(url.as_str())
            .map(|c| c.validators.clone())
            .unwrap_or_default(),
        false => Validators::default(),
    };
    let (fetched, headers) = fetch_url(client, &source.request, url, &sent, gate, None).await?;
    let (body, validators) = match fetched {
        Fetched::NotModified => {
            let cached = cache.get(url.as_str()).cloned();
            return cached.map(|c| (c, true)).ok_or_else(|| {
                fail("a page answered 304 to a request without validators".to_owned())
            });
        }
        Fetched::Body(body, validators) => (body, validators),
    };
    let items: Vec<String> = raw_items(&source.extract, &body)?
        .into_iter()
        .map(str::to_owned)
        .collect();
    let next = match paginate {
        Paginate::Link => next_link(headers.get_all(LINK).iter().filter_map(|v| v.to_str().ok()))
            .map(|target| url.join(&target)),
        Paginate::Cursor { param, from } => {
            let doc: Value = serde_json::from_slice(&body).map_err(ExtractError::Json)?;
            cursor(from.resolve(&doc)).map(|c| Ok(with_param(url, param, &c)))
        }
        Paginate::Page { param, start } => (!items.is_empty())
            .then(|| Ok(with_param(url, param, &(start + number as i64).to_string()))),
    };
    let next = next
        .transpose()
        .map_err(|_| fail("a next link is not a valid URL".to_owned()))?;
    let page = CachedPage {
        validators,
        items,
        next,
    };
    Ok((page, false))
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

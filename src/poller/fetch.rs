//! One upstream request: method, headers, auth, JSON body, timeout, redirects followed hop by
//! hop under the source's `follow_redirects` (credentials stay with their origin), and the
//! `max_body` cap enforced while streaming (a huge body is cut off, never buffered whole).

use std::borrow::Cow;
use std::time::Duration;

use reqwest::header::{
    CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, LOCATION, USER_AGENT,
};

use super::rate_limit::{Admission, Gate};
use crate::config::{Auth, MAX_REDIRECTS, Method, Redirects, Request};
use crate::http::{USER_AGENT_VALUE, request_error_chain};

/// Why a fetch failed. None of these changes stored state.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No complete answer within the timeout.
    #[error("upstream timed out after {0:?}")]
    Timeout(Duration),
    /// Connection or protocol failure.
    #[error("upstream request failed: {0}")]
    Connect(String),
    /// A non-2xx answer.
    #[error("upstream answered HTTP {0}")]
    Status(u16),
    /// A redirect the source's `follow_redirects` does not allow.
    #[error("upstream redirect (HTTP {status}) not followed: {why}")]
    Redirect {
        /// The 3xx status.
        status: u16,
        /// Why it was refused.
        why: String,
    },
    /// The body exceeded `max_body`.
    #[error("upstream body exceeds max_body ({limit} bytes); raise max_body or narrow the request")]
    TooLarge {
        /// The configured limit.
        limit: u64,
    },
}

/// Validators of the stored state, sent as `If-None-Match` / `If-Modified-Since`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    /// `ETag`.
    pub etag: Option<String>,
    /// `Last-Modified`.
    pub last_modified: Option<String>,
}

/// What a fetch returned.
#[derive(Debug)]
pub enum Fetched {
    /// 304: the stored state is current.
    NotModified,
    /// 2xx with its body and the validators to store with the state it produces.
    Body(Vec<u8>, Validators),
}

/// Fetches `req` once, outside any budget (preview), and returns the whole body.
pub async fn fetch(client: &reqwest::Client, req: &Request) -> Result<Vec<u8>, FetchError> {
    let gate = Gate::open(&req.url);
    match fetch_if(client, req, &Validators::default(), &gate, None).await? {
        Fetched::Body(body, _) => Ok(body),
        Fetched::NotModified => Err(FetchError::Status(304)),
    }
}

/// Fetches `req`, sending `validators` when the source uses conditional requests. `admitted`
/// is `gate`'s leave when the caller already waited for it; `None` waits here.
pub async fn fetch_if(
    client: &reqwest::Client,
    req: &Request,
    validators: &Validators,
    gate: &Gate,
    admitted: Option<Admission>,
) -> Result<Fetched, FetchError> {
    Ok(fetch_url(client, req, &req.url, validators, gate, admitted)
        .await?
        .0)
}

/// Fetches `url` with `req`'s settings; also returns the response headers (for `Link`).
pub async fn fetch_url(
    client: &reqwest::Client,
    req: &Request,
    url: &reqwest::Url,
    validators: &Validators,
    gate: &Gate,
    admitted: Option<Admission>,
) -> Result<(Fetched, reqwest::header::HeaderMap), FetchError> {
    // Budget waits come before the request's own timeout starts.
    let _admitted = match admitted {
        Some(a) => a,
        None => gate.admit().await,
    };
    match tokio::time::timeout(req.timeout, fetch_inner(client, req, url, validators, gate)).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout(req.timeout)),
    }
}

async fn fetch_inner(
    client: &reqwest::Client,
    req: &Request,
    url: &reqwest::Url,
    validators: &Validators,
    gate: &Gate,
) -> Result<(Fetched, reqwest::header::HeaderMap), FetchError> {
    // The first hop is the configured URL itself: no copy of it, no origin to compare.
    let mut hop = Cow::Borrowed(url);
    let mut method = req.method;
    for hops in 0.. {
        // Credentials, configured headers and validators go only to the configured origin.
        let trusted = hops == 0 || hop.origin() == url.origin();
        let mut resp = build(client, req, &hop, method, trusted, validators)
            .send()
            .await
            .map_err(|e| classify(e, req.timeout))?;
        let status = resp.status();
        if trusted {
            gate.observe(status.as_u16(), resp.headers());
        }
        if status.is_redirection() && status != reqwest::StatusCode::NOT_MODIFIED {
            let next = redirect_target(req, &hop, status, resp.headers(), hops)?;
            // 303, and 301/302 after a POST, continue as GET without the body (as browsers do).
            if status == reqwest::StatusCode::SEE_OTHER
                || (matches!(status.as_u16(), 301 | 302) && method == Method::Post)
            {
                method = Method::Get;
            }
            hop = Cow::Owned(next);
            continue;
        }
        if status == reqwest::StatusCode::NOT_MODIFIED && req.conditional {
            return Ok((Fetched::NotModified, std::mem::take(resp.headers_mut())));
        }
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        let body = read_capped(&mut resp, req).await?;
        let headers = std::mem::take(resp.headers_mut());
        return Ok((Fetched::Body(body, validators_of(&headers)), headers));
    }
    unreachable!("the redirect loop only ends by returning")
}

/// One request of a fetch: to the configured origin with everything configured, elsewhere with
/// nothing but the user agent.
fn build(
    client: &reqwest::Client,
    req: &Request,
    url: &reqwest::Url,
    method: Method,
    trusted: bool,
    validators: &Validators,
) -> reqwest::RequestBuilder {
    let mut builder = match method {
        Method::Get => client.get(url.clone()),
        Method::Post => client.post(url.clone()),
    };
    builder = builder.header(USER_AGENT, USER_AGENT_VALUE);
    if method == Method::Post
        && let Some(body) = &req.body
    {
        builder = builder
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
    }
    if !trusted {
        return builder;
    }
    for (name, value) in &req.headers {
        builder = builder.header(name, value);
    }
    builder = match &req.auth {
        Some(Auth::Bearer(token)) => builder.bearer_auth(token.expose()),
        Some(Auth::Basic { username, password }) => {
            builder.basic_auth(username, Some(password.expose()))
        }
        Some(Auth::Header { name, value }) => builder.header(name, sensitive(value.expose())),
        None => builder,
    };
    if req.conditional {
        if let Some(etag) = &validators.etag {
            builder = builder.header(IF_NONE_MATCH, etag);
        }
        if let Some(date) = &validators.last_modified {
            builder = builder.header(IF_MODIFIED_SINCE, date);
        }
    }
    builder
}

/// Where a 3xx answer may lead under the source's `follow_redirects`, or why not. Messages
/// name origins only: paths and query strings may carry secrets.
fn redirect_target(
    req: &Request,
    from: &reqwest::Url,
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    hops: usize,
) -> Result<reqwest::Url, FetchError> {
    let code = status.as_u16();
    let refuse = |why: String| Err(FetchError::Redirect { status: code, why });
    if req.redirects == Redirects::Never {
        return refuse("follow_redirects is none".to_owned());
    }
    if hops >= MAX_REDIRECTS {
        return refuse(format!("more than {MAX_REDIRECTS} redirects (a loop?)"));
    }
    let Some(to) = headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| from.join(l).ok())
    else {
        return refuse("no valid Location header".to_owned());
    };
    if !matches!(to.scheme(), "http" | "https") {
        return refuse(format!("to a {} URL", to.scheme()));
    }
    if from.scheme() == "https" && to.scheme() == "http" {
        return refuse("from https to plain http".to_owned());
    }
    if req.redirects == Redirects::SameOrigin && to.origin() != req.url.origin() {
        return refuse(format!(
            "to another origin ({}); set follow_redirects: any to follow it without credentials",
            to.origin().ascii_serialization()
        ));
    }
    Ok(to)
}

/// Reads a success body, refusing it as soon as it passes `max_body`.
async fn read_capped(resp: &mut reqwest::Response, req: &Request) -> Result<Vec<u8>, FetchError> {
    if resp.content_length().is_some_and(|len| len > req.max_body) {
        return Err(FetchError::TooLarge {
            limit: req.max_body,
        });
    }
    let mut body =
        Vec::with_capacity(resp.content_length().unwrap_or(8192).min(req.max_body) as usize);
    while let Some(chunk) = resp.chunk().await.map_err(|e| classify(e, req.timeout))? {
        if body.len() as u64 + chunk.len() as u64 > req.max_body {
            return Err(FetchError::TooLarge {
                limit: req.max_body,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn validators_of(headers: &reqwest::header::HeaderMap) -> Validators {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    Validators {
        etag: text(ETAG),
        last_modified: text(LAST_MODIFIED),
    }
}

fn sensitive(value: &str) -> reqwest::header::HeaderValue {
    // Validated at config time: the value is a legal header value.
    let mut v = reqwest::header::HeaderValue::from_str(value)
        .expect("auth header value validated in config");
    v.set_sensitive(true);
    v
}

fn classify(e: reqwest::Error, timeout: Duration) -> FetchError {
    if e.is_timeout() {
        FetchError::Timeout(timeout)
    } else {
        FetchError::Connect(request_error_chain(e))
    }
}

//! One upstream request: method, headers, auth, JSON body, timeout, and the `max_body` cap
//! enforced while streaming (a huge body is cut off, never buffered whole).

use std::time::Duration;

use reqwest::header::{
    CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, USER_AGENT,
};

use super::rate_limit::Gate;
use crate::config::{Auth, Method, Request};
use crate::delivery::send::error_chain;
use crate::delivery::signing::USER_AGENT_VALUE;

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
    /// The body exceeded `max_body`.
    #[error("upstream body exceeds max_body ({limit} bytes); raise max_body or narrow the request")]
    TooLarge {
        /// The configured limit.
        limit: u64,
    },
}

/// Installs the process-wide TLS crypto provider once (reqwest is built without a default one).
pub fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The HTTP client for upstreams.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    install_crypto();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(5))
        .pool_max_idle_per_host(32)
        .build()
}

/// Fetches `req` and returns the whole body, or why not.
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
    match fetch_if(client, req, &Validators::default(), &Gate::open(&req.url)).await? {
        Fetched::Body(body, _) => Ok(body),
        Fetched::NotModified => Err(FetchError::Status(304)),
    }
}

/// Fetches `req`, sending `validators` when the source uses conditional requests.
pub async fn fetch_if(
    client: &reqwest::Client,
    req: &Request,
    validators: &Validators,
    gate: &Gate,
) -> Result<Fetched, FetchError> {
    Ok(fetch_url(client, req, &req.url, validators, gate).await?.0)
}

/// Fetches `url` with `req`'s settings; also returns the response headers (for `Link`).
pub async fn fetch_url(
    client: &reqwest::Client,
    req: &Request,
    url: &reqwest::Url,
    validators: &Validators,
    gate: &Gate,
) -> Result<(Fetched, reqwest::header::HeaderMap), FetchError> {
    // Budget waits come before the request's own timeout starts.
    let _permit = gate.acquire().await;
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
    let mut builder = match req.method {
        Method::Get => client.get(url.clone()),
        Method::Post => client.post(url.clone()),
    };
    builder = builder.header(USER_AGENT, USER_AGENT_VALUE);
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
    if let Some(body) = &req.body {
        builder = builder
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
    }
    let mut resp = builder.send().await.map_err(|e| classify(e, req.timeout))?;
    let status = resp.status();
    gate.observe(status.as_u16(), resp.headers());
    if status == reqwest::StatusCode::NOT_MODIFIED && req.conditional {
        return Ok((Fetched::NotModified, resp.headers().clone()));
    }
    if !status.is_success() {
        return Err(FetchError::Status(status.as_u16()));
    }
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
    let headers = resp.headers().clone();
    Ok((Fetched::Body(body, validators_of(&headers)), headers))
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
        FetchError::Connect(error_chain(e))
    }
}

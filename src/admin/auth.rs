//! One gate in front of every admin route (design §9). A daemon on 127.0.0.1 is reachable
//! from every web page its operator opens, so whether or not `admin.token` is set:
//!
//! - **Host allowlist** (DNS rebinding): a request whose `Host` is not the listen address,
//!   `localhost`, an IP literal or a name in `admin.hosts` is refused with 421 on every route
//!   but `/healthz`, `/readyz` and `/metrics`.
//! - **No cross-site writes**: a `POST`/`DELETE` carrying the bearer token is accepted (a
//!   browser cannot add that header cross-site). Any other one is refused with 403 when it is
//!   cross-site: an `Origin` other than this host, `Sec-Fetch-Site: cross-site`, or a form
//!   content type (`application/x-www-form-urlencoded`, `multipart/form-data`, `text/plain`)
//!   on a route that is not one of the page's own forms, which check their form token
//!   themselves. pollhook's CLI sends no `Origin` and no form body, so it keeps working.
//! - **The bearer token** on `/v1` when one is set ([`require_token`]), compared in constant
//!   time over SHA-256 digests, so neither its content nor its length leaks.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AdminState;

/// Routes any `Host` may read: probes and scrapers address the daemon by whatever name.
const OPEN_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Routes that are the status page's own forms; they check their form token themselves.
fn page_form(path: &str) -> bool {
    path == "/login" || path == "/logout" || path.starts_with("/ui/")
}

/// SHA-256 of `bytes`: what tokens and session ids are compared as.
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Whether `given` is the secret `expected`, in constant time whatever either's length.
pub fn same_secret(given: &str, expected: &str) -> bool {
    bool::from(digest(given.as_bytes()).ct_eq(&digest(expected.as_bytes())))
}

/// Whether the request carries the configured bearer token (never true when none is set).
pub fn has_bearer(state: &AdminState, headers: &HeaderMap) -> bool {
    let Some(token) = &state.token else {
        return false;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| same_secret(given, token.expose()))
}

/// Whether a request may see `/v1` and details: no token is configured, or it carries it.
pub fn authorized(state: &AdminState, headers: &HeaderMap) -> bool {
    state.token.is_none() || has_bearer(state, headers)
}

/// The gate every request passes first (module docs).
pub async fn guard(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !OPEN_ROUTES.contains(&path) && !host_allowed(&state, req.headers()) {
        let why = "this Host is not the admin address; add it to admin.hosts if the API is reached by that name";
        return refuse(path, StatusCode::MISDIRECTED_REQUEST, why);
    }
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if writes
        && !has_bearer(&state, req.headers())
        && let Some(why) = cross_site(req.headers(), page_form(path))
    {
        return refuse(path, StatusCode::FORBIDDEN, why);
    }
    next.run(req).await
}

/// Rejects `/v1` requests without the configured bearer token.
pub async fn require_token(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    if authorized(&state, req.headers()) {
        return next.run(req).await;
    }
    let body = axum::Json(
        serde_json::json!({"error": "missing or wrong bearer token; set admin.token in the CLI's config"}),
    );
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        body,
    )
        .into_response()
}

/// A refusal: JSON on the API, plain text elsewhere (a refused page is shown no page).
fn refuse(path: &str, status: StatusCode, why: &str) -> Response {
    match path.starts_with("/v1") {
        true => (status, axum::Json(serde_json::json!({ "error": why }))).into_response(),
        false => (status, format!("{why}\n")).into_response(),
    }
}

/// The host part of a `Host` value (`name`, `1.2.3.4`, `[::1]`), lowercased, without the port.
fn host_name(value: &str) -> String {
    let value = value.trim();
    let host = match value.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => value.rsplit_once(':').map_or(value, |(h, _)| h),
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether the request's `Host` names this daemon (module docs). A request without one is
/// not from a browser (HTTP/1.1 browsers always send it), so it cannot be a rebinding.
fn host_allowed(state: &AdminState, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::HOST) else {
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let host = host_name(value);
    host == "localhost"
        || host.parse::<std::net::IpAddr>().is_ok()
        || state.hosts.contains(&host)
        || state.listen.is_some_and(|a| a.to_string() == value)
}

/// Why a state-changing request without the bearer token is cross-site, if it is; `form_ok`:
/// the route is one of the page's forms, which may send a form content type.
fn cross_site(headers: &HeaderMap, form_ok: bool) -> Option<&'static str> {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(origin) = text(header::ORIGIN) {
        let host = text(header::HOST).unwrap_or("");
        if origin != format!("http://{host}") && origin != format!("https://{host}") {
            return Some("cross-site request refused (its Origin is not this daemon)");
        }
    }
    if text(HeaderName::from_static("sec-fetch-site")) == Some("cross-site") {
        return Some("cross-site request refused (Sec-Fetch-Site: cross-site)");
    }
    let essence = text(header::CONTENT_TYPE).map(|t| {
        t.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let form = matches!(
        essence.as_deref(),
        Some("application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain")
    );
    (form && !form_ok).then_some(
        "a form body is refused here (a cross-site form could send it): send the bearer token, \
         or no body or a JSON one",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_port_and_brackets() {
        assert_eq!(host_name("127.0.0.1:9464"), "127.0.0.1");
        assert_eq!(host_name("[::1]:9464"), "::1");
        assert_eq!(host_name("Pollhook.Internal."), "pollhook.internal");
        assert_eq!(host_name("rebind.evil.example:9464"), "rebind.evil.example");
    }

    #[test]
    fn writes_without_origin_or_form_body_pass() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:9464".parse().unwrap());
        assert_eq!(cross_site(&h, false), None, "the CLI's request");
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert_eq!(cross_site(&h, false), None);
        h.insert(header::ORIGIN, "http://127.0.0.1:9464".parse().unwrap());
        assert_eq!(cross_site(&h, false), None, "same origin");
        h.insert(header::ORIGIN, "http://127.0.0.1:8000".parse().unwrap());
        assert!(
            cross_site(&h, false).is_some(),
            "another port is another origin"
        );
        h.remove(header::ORIGIN);
        h.insert(
            header::CONTENT_TYPE,
            "Text/Plain; charset=utf-8".parse().unwrap(),
        );
        assert!(cross_site(&h, false).is_some());
        assert_eq!(cross_site(&h, true), None, "the page's own form");
    }

    #[test]
    fn secrets_compare_by_digest() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "abc"));
    }
}

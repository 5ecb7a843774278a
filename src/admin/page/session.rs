//! Who may read the status page and press its buttons: the token sign-in, the session cookie
//! and the CSRF defences of the page's POSTs (module docs of `page`).

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::html::{login_page, refuse};
use crate::admin::AdminState;

/// The session cookie's name.
pub const COOKIE: &str = "pollhook_session";

fn hmac_hex(key: &[u8], what: &str) -> String {
    data_encoding::HEXLOWER.encode(&crate::delivery::signing::hmac(key, &[what.as_bytes()]))
}

fn key(s: &AdminState) -> Vec<u8> {
    match &s.token {
        Some(t) => t.expose().as_bytes().to_vec(),
        None => s.page_secret.to_vec(),
    }
}

fn session_value(s: &AdminState) -> String {
    hmac_hex(&key(s), "pollhook-session-v1")
}

pub(super) fn csrf_value(s: &AdminState) -> String {
    hmac_hex(&key(s), "pollhook-csrf-v1")
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the request may read the page: no token configured, a valid session cookie, or the
/// bearer token.
pub(super) fn can_read(s: &AdminState, headers: &HeaderMap) -> bool {
    if s.token.is_none() || crate::admin::authorized(s, headers) {
        return true;
    }
    cookie(headers, COOKIE)
        .is_some_and(|c| bool::from(c.as_bytes().ct_eq(session_value(s).as_bytes())))
}

/// Whether the page's buttons work for this request: readable, and (without a token) only on a
/// loopback listener.
pub(super) fn can_write(s: &AdminState, headers: &HeaderMap) -> bool {
    can_read(s, headers) && (s.token.is_some() || s.loopback)
}

/// A state-changing POST from the page: allowed, same-origin (when the browser says), and
/// carrying the CSRF token; the refusal otherwise.
pub(super) fn check_post(
    s: &AdminState,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<(), Box<Response>> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if let Some(origin) = origin
        && origin != format!("http://{host}")
        && origin != format!("https://{host}")
    {
        return Err(Box::new(refuse(
            StatusCode::FORBIDDEN,
            "cross-site request refused (Origin does not match this page)",
        )));
    }
    if !bool::from(csrf.as_bytes().ct_eq(csrf_value(s).as_bytes())) {
        return Err(Box::new(refuse(
            StatusCode::FORBIDDEN,
            "missing or wrong form token; reload the page and try again",
        )));
    }
    if !can_write(s, headers) {
        return Err(Box::new(refuse(
            StatusCode::FORBIDDEN,
            "the page is read-only: set admin.token to use its buttons on a non-loopback listener",
        )));
    }
    Ok(())
}

/// Form of `POST /login`.
#[derive(Debug, Deserialize)]
pub struct Login {
    token: String,
}

/// `POST /login`: sets the session cookie when the token is right.
pub async fn login(State(s): State<AdminState>, Form(form): Form<Login>) -> Response {
    let Some(token) = &s.token else {
        return Redirect::to("/").into_response();
    };
    if !bool::from(form.token.as_bytes().ct_eq(token.expose().as_bytes())) {
        return (
            StatusCode::UNAUTHORIZED,
            Html(login_page(Some("That is not the admin token."))),
        )
            .into_response();
    }
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
        session_value(&s)
    );
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, "/".to_owned()),
        ],
    )
        .into_response()
}

//! Who may read the status page and press its buttons (design §6a, §9): the token sign-in
//! (rate-limited per client address), sessions that expire and can be ended, and the form
//! tokens that the page's POSTs carry.
//!
//! Design notes: sessions live in memory only (a restart signs everyone out), keyed by the
//! SHA-256 of a random cookie value and bound to the digest of the token they were opened
//! with, so a changed token ends them all. Form tokens are HMACs under a per-process random key
//! of the session (or of "no session" on a token-less loopback listener), which a cross-site
//! page cannot read.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::{ConnectInfo, Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::html::{login_page, refuse};
use crate::admin::AdminState;
use crate::admin::auth::{authorized, digest, same_secret};

/// The session cookie's name.
pub const COOKIE: &str = "pollhook_session";
/// Sign-in attempts allowed per client address in [`LOGIN_WINDOW`].
pub const LOGIN_ATTEMPTS: usize = 5;
/// The window [`LOGIN_ATTEMPTS`] are counted over.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Most sessions kept at once (the oldest go first).
const MAX_SESSIONS: usize = 1_000;
/// Most client addresses whose sign-in attempts are remembered.
const MAX_CLIENTS: usize = 4_096;

struct Session {
    expires: Instant,
    token: [u8; 32],
}

/// Open sessions and recent sign-in attempts.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<[u8; 32], Session>>,
    attempts: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl Sessions {
    /// Opens a session for `token` lasting `ttl`; returns the cookie value.
    fn open(&self, token: &str, ttl: Duration) -> String {
        let mut id = [0u8; 32];
        // The system RNG does not fail on Linux; a failure leaves a guessable id, so refuse.
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id).is_err() {
            return String::new();
        }
        let value = data_encoding::BASE64URL_NOPAD.encode(&id);
        let now = Instant::now();
        if let Ok(mut open) = self.open.lock() {
            open.retain(|_, s| s.expires > now);
            if open.len() >= MAX_SESSIONS
                && let Some(oldest) = open.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
            {
                open.remove(&oldest);
            }
            let session = Session {
                expires: now + ttl,
                token: digest(token.as_bytes()),
            };
            open.insert(digest(value.as_bytes()), session);
        }
        value
    }

    /// Whether `cookie` is an open session of `token`.
    fn valid(&self, cookie: &str, token: &str) -> bool {
        let now = Instant::now();
        let Ok(open) = self.open.lock() else {
            return false;
        };
        open.get(&digest(cookie.as_bytes())).is_some_and(|s| {
            s.expires > now && bool::from(s.token.ct_eq(&digest(token.as_bytes())))
        })
    }

    fn close(&self, cookie: &str) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(&digest(cookie.as_bytes()));
        }
    }

    /// Records a sign-in attempt from `ip`, or says how long until one is allowed.
    fn attempt(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let Ok(mut all) = self.attempts.lock() else {
            return Ok(());
        };
        if all.len() >= MAX_CLIENTS && !all.contains_key(&ip) {
            all.retain(|_, times| times.back().is_some_and(|t| now - *t < LOGIN_WINDOW));
        }
        let times = all.entry(ip).or_default();
        while times.front().is_some_and(|t| now - *t >= LOGIN_WINDOW) {
            times.pop_front();
        }
        if times.len() >= LOGIN_ATTEMPTS {
            let oldest = times.front().copied().unwrap_or(now);
            return Err(LOGIN_WINDOW.saturating_sub(now - oldest));
        }
        times.push_back(now);
        Ok(())
    }
}

fn hmac_hex(key: &[u8], what: &[&[u8]]) -> String {
    data_encoding::HEXLOWER.encode(&crate::delivery::signing::hmac(key, what))
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

/// The request's open session, if it has one.
fn session<'a>(s: &AdminState, headers: &'a HeaderMap) -> Option<&'a str> {
    let token = s.token.as_ref()?;
    cookie(headers, COOKIE).filter(|c| s.sessions.valid(c, token.expose()))
}

/// The form token of the page this request reads: bound to its session, if any.
pub(super) fn csrf_value(s: &AdminState, headers: &HeaderMap) -> String {
    let bound = session(s, headers).unwrap_or("");
    hmac_hex(
        &s.page_secret[..],
        &[b"pollhook-csrf-v2:", bound.as_bytes()],
    )
}

/// The sign-in form's token.
pub(super) fn login_value(s: &AdminState) -> String {
    hmac_hex(&s.page_secret[..], &[b"pollhook-login-v1"])
}

/// Whether the request may read the page: no token configured, an open session, or the
/// bearer token.
pub(super) fn can_read(s: &AdminState, headers: &HeaderMap) -> bool {
    authorized(s, headers) || session(s, headers).is_some()
}

/// Whether the request is signed in with a session (the page then offers to sign out).
pub(super) fn signed_in(s: &AdminState, headers: &HeaderMap) -> bool {
    session(s, headers).is_some()
}

/// Whether the page's buttons work for this request: readable, and (without a token) only on a
/// loopback listener.
pub(super) fn can_write(s: &AdminState, headers: &HeaderMap) -> bool {
    can_read(s, headers) && (s.token.is_some() || s.loopback)
}

/// A state-changing POST from the page: allowed and carrying the page's form token; the
/// refusal otherwise. (Cross-site requests were refused by the admin gate already.)
pub(super) fn check_post(
    s: &AdminState,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<(), Box<Response>> {
    if !bool::from(csrf.as_bytes().ct_eq(csrf_value(s, headers).as_bytes())) {
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
    #[serde(default)]
    form: String,
}

/// `POST /login`: opens a session when the token is right; at most `LOGIN_ATTEMPTS` (5) a
/// `LOGIN_WINDOW` (a minute) per client address, then 429 with `Retry-After`.
pub async fn login(
    State(s): State<AdminState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Form(form): Form<Login>,
) -> Response {
    let Some(token) = &s.token else {
        return Redirect::to("/").into_response();
    };
    let ip = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.0.0.ip());
    if let Err(wait) = s.sessions.attempt(ip, Instant::now()) {
        let secs = wait.as_secs().max(1).to_string();
        let why = "Too many sign-in attempts from this address; wait a minute.";
        let page = Html(login_page(Some(why), &login_value(&s)));
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs)],
            page,
        )
            .into_response();
    }
    if !same_secret(&form.form, &login_value(&s)) {
        return refuse(
            StatusCode::FORBIDDEN,
            "missing or wrong form token; reload the page and try again",
        );
    }
    if !same_secret(&form.token, token.expose()) {
        let page = Html(login_page(
            Some("That is not the admin token."),
            &login_value(&s),
        ));
        return (StatusCode::UNAUTHORIZED, page).into_response();
    }
    let value = s.sessions.open(token.expose(), s.session_ttl);
    let cookie = format!(
        "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        s.session_ttl.as_secs()
    );
    let headers = [
        (header::SET_COOKIE, cookie),
        (header::LOCATION, "/".to_owned()),
    ];
    (StatusCode::SEE_OTHER, headers).into_response()
}

/// Form of `POST /logout`.
#[derive(Debug, Deserialize)]
pub struct Logout {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: ends the request's session and clears its cookie.
pub async fn logout(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Form(form): Form<Logout>,
) -> Response {
    if !bool::from(
        form.csrf
            .as_bytes()
            .ct_eq(csrf_value(&s, &headers).as_bytes()),
    ) {
        return refuse(
            StatusCode::FORBIDDEN,
            "missing or wrong form token; reload the page and try again",
        );
    }
    if let Some(c) = cookie(&headers, COOKIE) {
        s.sessions.close(c);
    }
    let cleared = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    let headers = [
        (header::SET_COOKIE, cleared),
        (header::LOCATION, "/".to_owned()),
    ];
    (StatusCode::SEE_OTHER, headers).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_ins_are_limited_per_address_within_the_window() {
        let s = Sessions::default();
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let t0 = Instant::now();
        for _ in 0..LOGIN_ATTEMPTS {
            assert!(s.attempt(a, t0).is_ok());
        }
        let wait = s.attempt(a, t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(
            s.attempt(b, t0).is_ok(),
            "another address has its own budget"
        );
        assert!(s.attempt(a, t0 + LOGIN_WINDOW).is_ok(), "the window slides");
    }

    #[test]
    fn sessions_expire_close_and_follow_the_token() {
        let s = Sessions::default();
        let c = s.open("t1", Duration::from_secs(60));
        assert!(s.valid(&c, "t1"));
        assert!(!s.valid(&c, "t2"), "a changed token ends the session");
        assert!(!s.valid("forged", "t1"));
        s.close(&c);
        assert!(!s.valid(&c, "t1"));
        let short = s.open("t1", Duration::ZERO);
        assert!(!s.valid(&short, "t1"), "expired");
    }
}

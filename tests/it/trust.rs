//! The admin listener against hostile web pages and clients (design §9): cross-site writes
//! refused whether or not a token is set, rebound `Host`s refused, half-sent requests dropped,
//! connection and body bounds, rate-limited sign-ins, sessions that expire and end.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::upstream::Upstream;
use crate::helpers::{Daemon, admin, receiver, simple_yaml, wait_until};

const T: Duration = Duration::from_secs(10);
const TOKEN: &str = "s3cr3t-token";

/// A raw HTTP/1.1 exchange with the admin listener: the status code and the whole answer.
async fn raw(admin: &str, request: &str) -> (u16, String) {
    let addr = admin.trim_start_matches("http://");
    let mut s = tokio::time::timeout(T, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    s.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A request with the listener's own `Host` and `extra` header lines, closing the connection.
fn request(method: &str, path: &str, admin: &str, extra: &[String], body: &str) -> String {
    let host = admin.trim_start_matches("http://");
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for h in extra {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out
}

async fn started(token: Option<&str>, extra_admin: &str) -> (Daemon, Upstream) {
    let up = Upstream::start(r#"[{"id": 1}]"#).await;
    let rx = receiver(204).await;
    let admin_block = match token {
        Some(t) => format!("admin:\n  listen: off\n  token: {t}\n{extra_admin}"),
        None => format!("admin:\n  listen: off\n{extra_admin}"),
    };
    let yaml = simple_yaml(&up.url, &rx.uri(), "").replace("admin:\n  listen: off\n", &admin_block);
    let d = Daemon::start(&yaml);
    wait_until(T, "ready", || async {
        admin("GET", &format!("{}/readyz", d.admin), None).await.0 == 200
    })
    .await;
    (d, up)
}

async fn paused(d: &Daemon, token: Option<&str>) -> bool {
    let (_, v) = admin("GET", &format!("{}/v1/sources/things", d.admin), token).await;
    !v["paused"].is_null()
}

/// The shapes a cross-site page can send without a preflight: a form of each content type,
/// with and without `Origin`, and a bodiless fetch that says `Sec-Fetch-Site: cross-site`.
fn cross_site_shapes() -> Vec<(Vec<String>, &'static str)> {
    let mut out = Vec::new();
    for ct in [
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
    ] {
        out.push((vec![format!("Content-Type: {ct}")], "a=1"));
        out.push((
            vec![
                format!("Content-Type: {ct}"),
                "Origin: http://evil.example".to_owned(),
            ],
            "a=1",
        ));
    }
    out.push((vec!["Origin: http://evil.example".to_owned()], ""));
    out.push((vec!["Origin: null".to_owned()], ""));
    out.push((vec!["Sec-Fetch-Site: cross-site".to_owned()], ""));
    out
}

/// Without a token, a cross-site form or fetch cannot pause, resume (discarding held changes),
/// retry, reload or replay: each is refused with 403 and changes nothing; the CLI's own
/// requests (no Origin, no form body) still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_writes_are_refused_without_a_token() {
    let (d, _up) = started(None, "").await;
    let routes = [
        "/v1/sources/things/pause",
        "/v1/sources/things/resume?discard=true",
        "/v1/dead/retry",
        "/v1/reload",
        "/v1/events/evt_x/resend",
        "/v1/replay",
    ];
    for (headers, body) in cross_site_shapes() {
        for path in routes {
            let (status, text) =
                raw(&d.admin, &request("POST", path, &d.admin, &headers, body)).await;
            assert_eq!(status, 403, "{path} {headers:?}: {text}");
        }
        let (status, _) = raw(
            &d.admin,
            &request("DELETE", "/v1/dead", &d.admin, &headers, body),
        )
        .await;
        assert_eq!(status, 403, "DELETE /v1/dead {headers:?}");
    }
    assert!(!paused(&d, None).await, "a refused pause acted");
    // The CLI's shape: no Origin, no body (or JSON).
    let (status, _) = admin(
        "POST",
        &format!("{}/v1/sources/things/pause", d.admin),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(paused(&d, None).await);
    let same_origin = vec![format!("Origin: {}", d.admin)];
    let (status, text) = raw(
        &d.admin,
        &request(
            "POST",
            "/v1/sources/things/resume",
            &d.admin,
            &same_origin,
            "",
        ),
    )
    .await;
    assert_eq!(status, 200, "a same-origin request: {text}");
    assert!(!paused(&d, None).await);
    d.stop().await;
}

/// With a token set, the bearer token admits any request shape (a browser cannot add it
/// cross-site); without it, the same cross-site shapes are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_token_admits_writes_and_nothing_else_does() {
    let (d, _up) = started(Some(TOKEN), "").await;
    let path = "/v1/sources/things/pause";
    for (headers, body) in cross_site_shapes() {
        let (status, _) = raw(&d.admin, &request("POST", path, &d.admin, &headers, body)).await;
        assert!(status == 403 || status == 401, "{headers:?}: {status}");
    }
    assert!(!paused(&d, Some(TOKEN)).await);
    let with_token = vec![
        format!("Authorization: Bearer {TOKEN}"),
        "Content-Type: application/x-www-form-urlencoded".to_owned(),
        "Origin: http://evil.example".to_owned(),
    ];
    let (status, text) = raw(
        &d.admin,
        &request("POST", path, &d.admin, &with_token, "a=1"),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(paused(&d, Some(TOKEN)).await);
    d.stop().await;
}

/// A `Host` that is not this daemon (a DNS-rebound page) is refused with 421 on reads and
/// writes, the page included; health, readiness and metrics answer any name; a name listed
/// in `admin.hosts` is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebound_hosts_are_refused() {
    let (d, _up) = started(None, "  hosts: [pollhook.internal]\n").await;
    let port = d.admin.rsplit(':').next().unwrap().to_owned();
    let rebound = |method: &str, path: &str, host: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let evil = format!("rebind.evil.example:{port}");
    for path in ["/", "/v1/sources", "/v1/dead", "/events/evt_x"] {
        let (status, text) = raw(&d.admin, &rebound("GET", path, &evil)).await;
        assert_eq!(status, 421, "GET {path}: {text}");
        assert!(!text.contains("things"), "{path} leaked the sources");
    }
    let (status, _) = raw(
        &d.admin,
        &rebound("POST", "/v1/sources/things/pause", &evil),
    )
    .await;
    assert_eq!(status, 421);
    assert!(!paused(&d, None).await);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _) = raw(&d.admin, &rebound("GET", path, &evil)).await;
        assert_eq!(status, 200, "{path}");
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("Pollhook.Internal:{port}"),
    ] {
        let (status, text) = raw(&d.admin, &rebound("GET", "/v1/sources", &host)).await;
        assert_eq!(status, 200, "{host}: {text}");
    }
    d.stop().await;
}

/// A client that sends half a request line and waits is dropped after the 10 s header limit;
/// a body over the cap is refused with 413; connections that have not sent their headers are
/// bounded in number (the one over the bound is closed at once), and a normal request still
/// works once they are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_numerous_clients_are_bounded() {
    let (d, _up) = started(None, "").await;
    let addr = d.admin.trim_start_matches("http://").to_owned();
    let mut half = TcpStream::connect(&addr).await.expect("connect");
    half.write_all(b"GET / HTTP/1.1\r\nHo").await.expect("send");
    let since = Instant::now();
    let big = "x".repeat(100 * 1024);
    let json = vec!["Content-Type: application/json".to_owned()];
    let (status, _) = raw(
        &d.admin,
        &request("POST", "/v1/replay", &d.admin, &json, &big),
    )
    .await;
    assert_eq!(status, 413, "an oversized body");
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    let mut over = TcpStream::connect(&addr).await.expect("connect");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(T, over.read(&mut buf)).await;
    assert!(
        matches!(n, Ok(Ok(0)) | Ok(Err(_))),
        "the connection over the bound was not closed: {n:?}"
    );
    drop(idle);
    wait_until(T, "a normal request works again", || async {
        admin("GET", &format!("{}/v1/sources", d.admin), None)
            .await
            .0
            == 200
    })
    .await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), half.read_to_end(&mut rest)).await;
    let waited = since.elapsed();
    assert!(closed.is_ok(), "the half-sent request was kept open");
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(15),
        "dropped after {waited:?}, not after the 10 s header limit"
    );
    d.stop().await;
}

/// The form token a page carries in `name`.
fn hidden(page: &str, name: &str) -> String {
    let needle = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&needle)
        .unwrap_or_else(|| panic!("no {name} in {page}"))
        + needle.len();
    page[start..].split('"').next().unwrap_or("").to_owned()
}

/// The session cookie a sign-in set.
fn session_cookie(answer: &str) -> String {
    answer
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: pollhook_session="))
        .and_then(|v| v.split(';').next())
        .map(|v| format!("pollhook_session={v}"))
        .unwrap_or_else(|| panic!("no session cookie in {answer}"))
}

async fn sign_in(d: &Daemon, token: &str) -> (u16, String) {
    let (_, page) = raw(&d.admin, &request("GET", "/", &d.admin, &[], "")).await;
    let form = hidden(&page, "form");
    let headers = vec!["Content-Type: application/x-www-form-urlencoded".to_owned()];
    let body = format!("token={token}&form={form}");
    raw(
        &d.admin,
        &request("POST", "/login", &d.admin, &headers, &body),
    )
    .await
}

/// `/login` takes five attempts a minute per client address, then answers 429 with
/// `Retry-After`, even for the right token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_guesses_are_rate_limited() {
    let (d, _up) = started(Some(TOKEN), "").await;
    for i in 0..5 {
        let (status, _) = sign_in(&d, "wrong").await;
        assert_eq!(status, 401, "attempt {i}");
    }
    let (status, text) = sign_in(&d, TOKEN).await;
    assert_eq!(status, 429, "{text}");
    let retry = text
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(retry.is_some_and(|s| (1..=60).contains(&s)), "{text}");
    d.stop().await;
}

/// A session cookie opens the page until it expires (`admin.session`) or is ended with
/// `POST /logout`; a cross-site sign-out or button press with the cookie is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_and_end() {
    let (d, _up) = started(Some(TOKEN), "  session: 2s\n").await;
    let (status, answer) = sign_in(&d, TOKEN).await;
    assert_eq!(status, 303, "{answer}");
    let cookie = vec![format!("Cookie: {}", session_cookie(&answer))];
    let signed_in = |headers: Vec<String>| {
        let admin = d.admin.clone();
        async move {
            let (_, page) = raw(&admin, &request("GET", "/", &admin, &headers, "")).await;
            page.contains("Sign out")
        }
    };
    assert!(signed_in(cookie.clone()).await, "the cookie opens the page");
    let (_, page) = raw(&d.admin, &request("GET", "/", &d.admin, &cookie, "")).await;
    let csrf = hidden(&page, "csrf");
    let mut forged = cookie.clone();
    forged.push("Content-Type: application/x-www-form-urlencoded".to_owned());
    forged.push("Origin: http://evil.example".to_owned());
    let body = format!("csrf={csrf}");
    let (status, _) = raw(
        &d.admin,
        &request("POST", "/logout", &d.admin, &forged, &body),
    )
    .await;
    assert_eq!(status, 403, "a cross-site sign-out");
    assert!(signed_in(cookie.clone()).await);
    let mut form = cookie.clone();
    form.push("Content-Type: application/x-www-form-urlencoded".to_owned());
    let (status, _) = raw(
        &d.admin,
        &request("POST", "/logout", &d.admin, &form, &body),
    )
    .await;
    assert_eq!(status, 303);
    assert!(!signed_in(cookie).await, "a logged-out cookie still works");

    let (_, answer) = sign_in(&d, TOKEN).await;
    let since = Instant::now();
    let cookie = vec![format!("Cookie: {}", session_cookie(&answer))];
    assert!(signed_in(cookie.clone()).await);
    wait_until(T, "the session expired", || {
        let still = signed_in(cookie.clone());
        async move { !still.await }
    })
    .await;
    assert!(
        since.elapsed() >= Duration::from_millis(1500),
        "expired early"
    );
    d.stop().await;
}

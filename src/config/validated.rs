//! Validated configuration: domain types that the rest of pollhook uses. Nothing downstream
//! re-parses a string; every value here has been checked by `validate.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue};

use crate::extract::ExtractSpec;
use crate::schedule::Schedule;
use crate::template::Template;

/// The whole validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Settings that are valid but risky (plain-HTTP credentials), for `check` and the log.
    pub warnings: Vec<String>,
    /// redb state file (unused when `postgres` is set).
    pub state: PathBuf,
    /// The shared PostgreSQL store, when `store.postgres` is set (design §8).
    pub postgres: Option<Postgres>,
    /// This instance's name (`instance:`, default the host name).
    pub instance: String,
    /// Admin API.
    pub admin: Admin,
    /// Dead letters older than this are purged automatically.
    pub dead_letter_max_age: Option<std::time::Duration>,
    /// Tombstones older than this, and the state of sources removed from the config for
    /// longer, are pruned.
    pub tombstone_ttl: std::time::Duration,
    /// Delivery log retention (design §6a).
    pub history: History,
    /// Operational alerts, if any.
    pub alerts: Option<Alerts>,
    /// Shared budgets by `host[:port]`.
    pub hosts: BTreeMap<String, HostLimits>,
    /// Receivers by name.
    pub destinations: BTreeMap<String, Arc<Destination>>,
    /// Sources by name.
    pub sources: BTreeMap<String, Arc<Source>>,
}

/// `store:` with `postgres:`: where several instances share state (design §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Postgres {
    /// Connection URL (may carry a password: never logged).
    pub url: Secret,
    /// Connections per instance.
    pub pool: usize,
    /// Lease period: a dead instance's sources and claimed deliveries move after this.
    pub lease: Duration,
}

/// `history:`: how much of the delivery log is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    /// Records older than this are pruned; zero turns the log off.
    pub keep: std::time::Duration,
    /// Most records kept.
    pub max_records: u64,
}

impl History {
    /// Whether the delivery log is kept at all.
    pub fn enabled(&self) -> bool {
        !self.keep.is_zero() && self.max_records > 0
    }
}

/// `alerts:`: where pollhook's own operational events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alerts {
    /// Destination names.
    pub to: Vec<String>,
    /// Failures in a row before `failing` fires.
    pub after: u32,
}

/// A request budget: `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests.
    pub count: u32,
    /// Period.
    pub per: Duration,
}

/// `hosts.<host>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostLimits {
    /// Shared request budget.
    pub rate: Option<Rate>,
    /// Most requests in flight to the host.
    pub concurrency: Option<usize>,
}

/// The admin API settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// Where it listens; `None` when `listen: off`.
    pub listen: Option<std::net::SocketAddr>,
    /// Bearer token required on `/v1`, when set.
    pub token: Option<Secret>,
    /// DNS names (lowercase, no port) the API answers to besides its own address, `localhost`
    /// and IP literals (`admin.hosts`; design §9).
    pub hosts: Vec<String>,
    /// How long a status-page sign-in lasts (`admin.session`).
    pub session: Duration,
}

/// A secret string: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself; call only where it is used (signing, auth headers).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How a destination's requests are signed.
/// How a signature's bytes are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Lowercase hex.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// Which bytes key the HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyForm {
    /// The secret string's UTF-8 bytes, exactly as configured.
    Utf8,
    /// The base64-decoded part after `whsec_` (Standard Webhooks).
    Whsec,
}

/// A signature scheme (design §3a): HMAC-SHA256 over `signs`, encoded, written into `header`
/// as `value`. Presets (`standard`, `github`, `stripe`, `slack`, `shopify`) are values of this
/// type, not code paths (`config/schemes.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheme {
    /// Preset name, or `custom`.
    pub name: &'static str,
    /// The header carrying the signature.
    pub header: HeaderName,
    /// The header's value; placeholders `{signature}`, `{timestamp}`, `{id}`.
    pub value: Template,
    /// The signed message; placeholders `{body}`, `{timestamp}`, `{id}`.
    pub signs: Template,
    /// How the signature is encoded.
    pub encoding: Encoding,
    /// Which bytes key the HMAC.
    pub key: KeyForm,
    /// With several secrets (rotation), appended to `value` once per further secret; `None`
    /// when the header holds one signature (the first secret signs).
    pub more: Option<Template>,
    /// Further headers the scheme sends (Slack's request timestamp).
    pub extra: Vec<(HeaderName, Template)>,
}

/// A jq program that compiled at load time; the text is compiled again by the jq worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JqProgram(pub String);

/// Every configured destination by name, shared with the running tasks and replaced on reload.
pub type Destinations = Arc<std::sync::RwLock<BTreeMap<String, Arc<Destination>>>>;

/// A webhook receiver.
#[derive(Debug, Clone)]
pub struct Destination {
    /// Its name in `destinations:`.
    pub name: String,
    /// Where events are POSTed.
    pub url: Url,
    /// Signing secrets, newest first; every one signs.
    pub secrets: Vec<Secret>,
    /// Signature schemes, each adding its headers (empty: `none`).
    pub signatures: Vec<Scheme>,
    /// jq program producing the body sent (`None`: the event envelope).
    pub body: Option<JqProgram>,
    /// jq program deciding whether the event is sent here at all.
    pub filter: Option<JqProgram>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Extra headers; values may use `{id}` `{type}` `{source}` `{key}` `{revision}`
    /// `{timestamp}`.
    pub headers: Vec<(HeaderName, Template)>,
    /// Delay after attempt 1, 2, ...; past the end the event is dead-lettered.
    pub retry: Vec<Duration>,
    /// Most requests in flight at once.
    pub concurrency: usize,
    /// Limits of the `body` and `filter` programs (time, memory, output size).
    pub jq: crate::jq::Limits,
}

impl Destination {
    /// Whether it has `filter` or `body` programs, which must run before an event is sent.
    pub fn programmed(&self) -> bool {
        self.filter.is_some() || self.body.is_some()
    }
}

/// HTTP method of a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST with the JSON `body`.
    Post,
}

/// Upstream authentication.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// HTTP basic.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
    /// A custom header whose value is secret.
    Header {
        /// Header name.
        name: HeaderName,
        /// Header value.
        value: Secret,
    },
}

/// Which change kinds are emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmitSet {
    /// `item.created`.
    pub created: bool,
    /// `item.updated` / `document.changed`.
    pub updated: bool,
    /// `item.deleted`.
    pub deleted: bool,
}

/// What the first successful poll of a source does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstPoll {
    /// Record the state, emit nothing.
    Baseline,
    /// Emit `created` for every item.
    Emit,
}

/// Optional payload fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Include {
    /// Add `previous` (the item before the change).
    pub previous: bool,
    /// Add `changes` (RFC 6902 patch from previous to current).
    pub changes: bool,
}

/// How a source is fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// URL polled.
    pub url: Url,
    /// GET or POST.
    pub method: Method,
    /// Extra headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// JSON body for POST.
    pub body: Option<serde_json::Value>,
    /// Authentication.
    pub auth: Option<Auth>,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Largest body accepted, enforced while streaming.
    pub max_body: u64,
    /// Most bytes one paginated run receives in all pages together.
    pub max_run_body: u64,
    /// Whether validators (ETag, Last-Modified) are sent.
    pub conditional: bool,
    /// Which redirects are followed.
    pub redirects: Redirects,
}

/// `follow_redirects`: which upstream redirects a poll follows (at most
/// [`MAX_REDIRECTS`](crate::config::MAX_REDIRECTS) hops; https → http never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirects {
    /// Only to the origin (scheme, host, port) of the configured URL (default).
    SameOrigin,
    /// Anywhere; configured headers, auth and validators are sent only to the configured origin.
    Any,
    /// None: a 3xx fails the poll.
    Never,
}

/// A polled source.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// Its name in `sources:`.
    pub name: String,
    /// The request.
    pub request: Request,
    /// When it is polled.
    pub schedule: Schedule,
    /// Fraction of the interval added at random to each poll (0.0–1.0).
    pub jitter: f64,
    /// How items are extracted.
    pub extract: ExtractSpec,
    /// Which changes are sent.
    pub emit: EmitSet,
    /// What the first poll does.
    pub on_first_poll: FirstPoll,
    /// Optional payload fields.
    pub include: Include,
    /// Destination names.
    pub to: Vec<String>,
    /// How further pages are found, if the source is paginated.
    pub paginate: Option<Paginate>,
    /// Most pages per poll; a run that needs more fails.
    pub max_pages: usize,
    /// Most events one poll may emit before the flood guard holds the source.
    pub max_changes: usize,
    /// This source's own request budget.
    pub rate: Option<Rate>,
}

/// How a paginated source finds its next page.
#[derive(Debug, Clone, PartialEq)]
pub enum Paginate {
    /// Follow `Link: <url>; rel="next"`.
    Link,
    /// Send the cursor found at `from` in the body as query parameter `param`.
    Cursor {
        /// Query parameter.
        param: String,
        /// Where the next cursor is in each page.
        from: crate::extract::Pointer,
    },
    /// Send page numbers `start`, `start + 1`, … as query parameter `param`; an empty page ends.
    Page {
        /// Query parameter.
        param: String,
        /// First page number.
        start: i64,
    },
}

//! Raw `bridge.yaml` structures: exactly what serde reads, before any validation.
//!
//! Phase one of the two-phase config (see `validated.rs` for phase two). Every struct denies
//! unknown keys; scalars that need validation are `Spanned` so that errors can name the YAML line.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

/// A scalar string with the YAML location it came from.
pub type Str = Spanned<String>;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Path of the redb state file.
    pub state: Option<Str>,
    /// A shared store (PostgreSQL) instead of `state`, design §8.
    pub store: Option<Spanned<RawStore>>,
    /// This instance's name in leases, logs, metrics and `/v1/cluster`.
    pub instance: Option<Str>,
    /// Admin API.
    pub admin: Option<Spanned<RawAdmin>>,
    /// Dead letters older than this are purged automatically (default: kept until purged).
    pub dead_letter_max_age: Option<Str>,
    /// How long tombstones and the state of removed sources are kept (default 30d).
    pub tombstone_ttl: Option<Str>,
    /// Delivery log retention.
    pub history: Option<Spanned<RawHistory>>,
    /// pollhook's own operational events, sent as webhooks.
    pub alerts: Option<Spanned<RawAlerts>>,
    /// Defaults applied to every source.
    pub defaults: Option<RawDefaults>,
    /// Shared budgets by `host[:port]` of source URLs.
    #[serde(default)]
    pub hosts: BTreeMap<String, Spanned<RawHost>>,
    /// Webhook receivers by name.
    #[serde(default)]
    pub destinations: BTreeMap<String, Spanned<RawDestination>>,
    /// Polled APIs by name.
    #[serde(default)]
    pub sources: BTreeMap<String, Spanned<RawSource>>,
}

/// `store:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// Connection URL, `postgres://user@host/db`.
    pub postgres: Option<Str>,
    /// Connections per instance.
    pub pool: Option<Spanned<u32>>,
    /// How long a source's lease lasts without renewal.
    pub lease: Option<Str>,
}

/// `hosts.<host>`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHost {
    /// Requests per period shared by every source of the host, `N/DURATION`.
    pub rate: Option<Str>,
    /// Requests in flight to the host at once.
    pub concurrency: Option<Spanned<u32>>,
}

/// `history:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHistory {
    /// How long delivery records (and delivered bodies) are kept, humantime; `0s` turns the
    /// log off.
    pub keep: Option<Str>,
    /// Most delivery records kept; the oldest go first.
    pub max_records: Option<Spanned<u64>>,
}

/// `alerts:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// Destinations that receive the alerts.
    #[serde(default)]
    pub to: Vec<Str>,
    /// Failures in a row before a source or destination counts as failing.
    pub after: Option<Spanned<u32>>,
}

/// `admin:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `host:port`, or `off`.
    pub listen: Option<Str>,
    /// Bearer token required on `/v1` when set and not empty.
    pub token: Option<Str>,
    /// Host names (besides the listen address, `localhost` and IP literals) the API answers to.
    #[serde(default)]
    pub hosts: Vec<Str>,
    /// How long a status-page sign-in lasts, humantime.
    pub session: Option<Str>,
}

/// `defaults:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    /// Request timeout, humantime.
    pub timeout: Option<Str>,
    /// Largest accepted response body, e.g. `16MiB`.
    pub max_body: Option<Str>,
    /// Random delay added to each poll, as a percentage of the interval, e.g. `10%`.
    pub jitter: Option<Str>,
    /// Most bytes one paginated run receives in all, e.g. `256MiB`.
    pub max_run_body: Option<Str>,
}

/// `destinations.<name>`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDestination {
    /// Receiver URL.
    pub url: Option<Str>,
    /// One secret or a list (rotation), or `{ credential: NAME }`.
    pub secret: Option<Spanned<RawSecret>>,
    /// A file holding the secret.
    pub secret_file: Option<Str>,
    /// A preset name, a list of presets and schemes, or one scheme.
    pub signature: Option<Spanned<RawSignature>>,
    /// jq program: the body sent (default: the event itself).
    pub body: Option<Str>,
    /// jq program: keeps the event when it yields a value other than false or null.
    pub filter: Option<Str>,
    /// Largest body the `body` program may produce, e.g. `1MiB`.
    pub max_body: Option<Str>,
    /// How long the programs may run for one event, humantime.
    pub jq_timeout: Option<Str>,
    /// Memory limit of the process that runs the programs, e.g. `512MiB`.
    pub jq_memory: Option<Str>,
    /// Request timeout, humantime.
    pub timeout: Option<Str>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, Str>,
    /// Delays after attempt 1, 2, ...
    pub retry: Option<Vec<Str>>,
    /// In-flight requests to this destination.
    pub concurrency: Option<Spanned<u32>>,
}

/// The forms `signature:` may take.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSignature {
    /// A preset: `standard`, `github`, `stripe`, `slack`, `shopify`, `none`, `both`.
    Preset(String),
    /// Several presets and schemes; each adds its headers.
    List(Vec<RawSignatureItem>),
    /// One custom scheme.
    Scheme(RawScheme),
}

/// One entry of a `signature:` list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSignatureItem {
    /// A preset name.
    Preset(String),
    /// A custom scheme.
    Scheme(RawScheme),
}

/// A custom signature scheme.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScheme {
    /// Header name, e.g. `X-Signature-256`.
    pub header: String,
    /// Header value; placeholders `{signature}` `{timestamp}` `{id}` (default `{signature}`).
    pub value: Option<String>,
    /// Signed message; placeholders `{body}` `{timestamp}` `{id}` (default `{body}`).
    pub signs: Option<String>,
    /// `hex` (default) | `base64`.
    pub encoding: Option<String>,
    /// `utf8` (default) | `whsec`.
    pub key: Option<String>,
}

/// The forms `secret:` may take.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSecret {
    /// One secret.
    One(String),
    /// Several secrets during rotation; every one signs.
    Many(Vec<String>),
    /// `{ credential: NAME }`, read from `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).
    Credential {
        /// Credential name.
        credential: String,
    },
}

/// `sources.<name>`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// URL to poll.
    pub url: Option<Str>,
    /// `GET` | `POST`.
    pub method: Option<Str>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, Str>,
    /// JSON body for POST.
    pub body: Option<serde_json::Value>,
    /// Upstream authentication.
    pub auth: Option<Spanned<RawAuth>>,
    /// Fixed interval, humantime.
    pub every: Option<Str>,
    /// Cron expression (5 or 6 fields, UTC).
    pub cron: Option<Str>,
    /// Request timeout, humantime (overrides `defaults.timeout`).
    pub timeout: Option<Str>,
    /// Largest accepted body (overrides `defaults.max_body`).
    pub max_body: Option<Str>,
    /// Most bytes one paginated run receives in all (overrides `defaults.max_run_body`).
    pub max_run_body: Option<Str>,
    /// Jitter (overrides `defaults.jitter`).
    pub jitter: Option<Str>,
    /// This source's own request budget, `N/DURATION`.
    pub rate: Option<Str>,
    /// Pagination: `{ link: next }`, `{ cursor: { param, from } }` or `{ page: { param, start } }`.
    pub paginate: Option<Spanned<RawPaginate>>,
    /// Most pages fetched per poll (default 50).
    pub max_pages: Option<Spanned<u32>>,
    /// Send If-None-Match / If-Modified-Since (default true).
    pub conditional: Option<bool>,
    /// `same-origin` (default) | `any` | `none`.
    pub follow_redirects: Option<Str>,
    /// Flood guard: most events one poll may emit before the source is held (default 1000).
    pub max_changes: Option<Spanned<u32>>,
    /// JSON Pointer to the items array.
    pub items: Option<Str>,
    /// JSON Pointer to each item's key.
    pub key: Option<Str>,
    /// JSON Pointer to each item's version.
    pub version: Option<Str>,
    /// Pointers removed before hashing.
    pub ignore: Option<Vec<Str>>,
    /// `items` | `document`.
    pub mode: Option<Str>,
    /// Which change kinds are sent.
    pub emit: Option<Vec<Str>>,
    /// `baseline` | `emit`.
    pub on_first_poll: Option<Str>,
    /// Extra payload fields.
    pub include: Option<RawInclude>,
    /// Destination names.
    pub to: Option<Vec<Str>>,
}

/// `paginate:` — exactly one key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPaginate {
    /// Follow the RFC 8288 `Link` header with this relation (`next`).
    pub link: Option<String>,
    /// A cursor read from the body and sent as a query parameter.
    pub cursor: Option<RawCursor>,
    /// A page number sent as a query parameter.
    pub page: Option<RawPage>,
}

/// `paginate.cursor`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCursor {
    /// Query parameter name.
    pub param: String,
    /// JSON Pointer to the next cursor in the body.
    pub from: String,
}

/// `paginate.page`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPage {
    /// Query parameter name.
    pub param: String,
    /// First page number (default 1).
    pub start: Option<i64>,
}

/// `auth:` — exactly one key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// `Authorization: Bearer <token>`.
    pub bearer: Option<String>,
    /// HTTP basic auth.
    pub basic: Option<RawBasic>,
    /// A custom header.
    pub header: Option<RawHeaderAuth>,
}

/// `auth.basic`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasic {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// `auth.header`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderAuth {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// `include:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInclude {
    /// Add the previous item as `previous`.
    #[serde(default)]
    pub previous: bool,
    /// Add an RFC 6902 patch as `changes`.
    #[serde(default)]
    pub changes: bool,
}

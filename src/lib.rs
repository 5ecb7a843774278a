//! pollhook gives webhooks to APIs that have none.
//!
//! ```text
//! bridge.yaml ─► config ─► scheduler ─► fetch (auth, timeout, streamed body cap, pages)
//!                                          │
//!                          extract items (pointer, key, version, ignore)
//!                                          │
//!             diff against stored state ─► ONE write txn: new state + outbox rows
//!                                          │
//!             dispatcher: due rows ─► render once (jq, per destination) ─► sign ─► POST
//!                                          ─► delivered | retry at | dead
//! ```
//!
//! Module map, top down: [`cli`] (subcommands) and [`demo`] (the self-contained demo) over
//! [`daemon`] (wiring, supervision, alerts) and [`admin`] (the HTTP surface: one gate in front
//! of the API, the status page, the listener); then [`poller`] (per-source loop, fetch,
//! pages, rate limits) and [`delivery`] (dispatcher, the per-row task, jq transforms, signing,
//! retry decisions, the settle writer); [`store`] (the storage interface, its redb and
//! PostgreSQL engines); [`config`] (load and validate `bridge.yaml`); [`jq`] (jq programs in
//! worker processes), [`diff`], [`event`] (ids and payloads), [`telemetry`] (metric names and
//! the recorder); and pure leaves: [`extract`], [`schedule`], [`template`] (header and
//! signature placeholders), [`status`] (per-source status), [`http`] (HTTP clients, error
//! chains, upstream wait parsing), [`shutdown`] (signals).
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod demo;
pub mod diff;
pub mod event;
pub mod extract;
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod jq;
pub mod poller;
pub mod schedule;
pub mod shutdown;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod template;

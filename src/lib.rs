//! pollhook gives webhooks to APIs that have none.
//!
//! ```text
//! bridge.yaml ─► config ─► scheduler ─► fetch (auth, timeout, streamed body cap)
//!                                          │
//!                          extract items (pointer, key, version, ignore)
//!                                          │
//!             diff against stored state ─► ONE write txn: new state + outbox rows
//!                                          │
//!             dispatcher: due rows ─► sign ─► POST ─► delivered | retry at | dead
//! ```
//!
//! Module map: [`config`] (load and validate `bridge.yaml`), [`schedule`] (pure time math),
//! [`poller`] (per-source loop and fetch), [`extract`] and [`diff`] (pure), [`event`] (ids and
//! payloads), [`store`] (storage interface and its redb implementation), [`delivery`]
//! (dispatcher, signing, retry decisions), [`daemon`] (wiring), [`shutdown`] (signals),
//! [`demo`] (the self-contained demo), [`cli`] (subcommands). Leaves below them all: [`http`]
//! (HTTP clients, error chains, upstream wait parsing and caps) and [`telemetry`] (metric names
//! and the recorder).
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

//! pollhook's integration tests: one binary, a file per behaviour.

mod helpers;

mod admin;
mod browser;
mod cli;
mod cluster;
mod conditional;
mod config_errors;
mod delivery;
mod detection;
mod docs;
mod durability;
mod fetch_failures;
mod flood;
mod front_door;
mod fuzz_props;
mod history;
mod hostile;
mod migration;
mod ops;
mod ordering;
mod pagination;
mod pruning;
mod rate_limits;
mod receivers;
mod recovery;
mod reload;
mod signatures;
mod stores;
mod transform;
mod trust;

//! Delivery: the dispatcher that sends committed outbox rows (`dispatcher.rs`) from its compact
//! in-memory queue (`queue.rs`), the task that works one due row (`task.rs`: render once, then
//! attempt), the destinations' jq transforms (`transform.rs`), one signed attempt (`send.rs`),
//! signatures (`signing.rs`), the pure retry decision (`retry.rs`), and the settle writer and
//! claimer (`settle.rs`).

pub mod dispatcher;
pub mod queue;
pub mod retry;
pub mod send;
pub mod settle;
pub mod signing;
mod task;
pub mod transform;

pub use dispatcher::{DestStats, DispatchCmd, Dispatcher, Parts, RowReceiver, RowSender, now_ms};
pub use settle::{CLAIM_EVERY, SettleMsg, claimer, settle_loop};

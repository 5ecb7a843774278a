//! Delivery: the dispatcher that sends committed outbox rows (`dispatcher.rs`) from its compact
//! in-memory queue (`queue.rs`), one signed
//! attempt (`send.rs`), signatures (`signing.rs`) and the pure retry decision (`retry.rs`).

pub mod dispatcher;
pub mod queue;
pub mod retry;
pub mod send;
pub mod signing;

pub use dispatcher::{
    DestStats, DispatchCmd, Dispatcher, RowReceiver, RowSender, SettleMsg, claimer, now_ms,
    settle_loop,
};

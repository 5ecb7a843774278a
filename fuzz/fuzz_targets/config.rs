//! `cargo fuzz run config`: see `pollhook::fuzz::config` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pollhook::fuzz::config(data));

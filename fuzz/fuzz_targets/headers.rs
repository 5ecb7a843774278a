//! `cargo fuzz run headers`: see `pollhook::fuzz::headers` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pollhook::fuzz::headers(data));

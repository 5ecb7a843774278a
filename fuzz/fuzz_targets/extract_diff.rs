//! `cargo fuzz run extract_diff`: see `pollhook::fuzz::extract_diff` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pollhook::fuzz::extract_diff(data));

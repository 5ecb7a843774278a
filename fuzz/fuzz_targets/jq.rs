//! `cargo fuzz run jq`: see `pollhook::fuzz::jq` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pollhook::fuzz::jq(data));

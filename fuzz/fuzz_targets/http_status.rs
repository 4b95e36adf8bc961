//! Fuzz target: see `anypoll_fuzz::http_status` (fuzz/src/lib.rs) for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| anypoll_fuzz::http_status(data));

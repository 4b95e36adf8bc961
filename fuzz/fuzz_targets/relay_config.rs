//! Fuzz target: see `anypoll_fuzz::relay_config` (fuzz/src/lib.rs) for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| anypoll_fuzz::relay_config(data));

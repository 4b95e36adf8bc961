//! Fuzz target: see `anypoll_fuzz::ring_buffer` (fuzz/src/lib.rs) for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| anypoll_fuzz::ring_buffer(data));

//! Arbitrary bytes as a config file: read → UTF-8 → YAML → schema →
//! resolve → encode. Seeds: the bad-input corpus (`tests/corpus/`) and the
//! examples.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = common::check(data);
});

//! Arbitrary text through the scenario and settings parsers: see
//! `outpost_cli::fuzzing::config_parsers`.
//!
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run config_parsers`
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| outpost_cli::fuzzing::config_parsers(data));

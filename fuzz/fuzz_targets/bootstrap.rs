//! Arbitrary bytes as a bootstrap file: see `outpost_cli::fuzzing::bootstrap`.
//!
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run bootstrap`
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| outpost_cli::fuzzing::bootstrap(data));

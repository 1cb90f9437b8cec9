//! Arbitrary bytes decoded as a batch of changes and applied at central, checked against
//! replay and reordering: see `outpost_cli::fuzzing::apply_changes`.
//!
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run apply_changes`
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| outpost_cli::fuzzing::apply_changes(data));

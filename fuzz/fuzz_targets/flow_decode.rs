//! Arbitrary bytes as a flow file (envelope, frames, compression): see
//! `outpost_cli::fuzzing::flow_decode`.
//!
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run flow_decode`
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| outpost_cli::fuzzing::flow_decode(data));

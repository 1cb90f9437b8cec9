//! Replays every committed fuzz corpus entry (fuzz/corpus/<target>/*) through the same bodies
//! the cargo-fuzz targets run, on stable: a crash once found and minimised stays fixed. The
//! fuzzers themselves run with `RUSTC_BOOTSTRAP=1 cargo fuzz run <target>` (docs/TESTING.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    assert!(!entries.is_empty(), "{} has no corpus", dir.display());
    for path in &entries {
        let data = std::fs::read(path).unwrap();
        let outcome = std::panic::catch_unwind(|| body(&data));
        assert!(
            outcome.is_ok(),
            "{target} fails on {}\nreproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run {target} {}",
            path.display(),
            path.display()
        );
    }
    eprintln!("{target}: {} corpus entries replayed", entries.len());
}

#[test]
fn fuzz_corpus_flow_decode() {
    replay("flow_decode", outpost_cli::fuzzing::flow_decode);
}

#[test]
fn fuzz_corpus_apply_changes() {
    replay("apply_changes", outpost_cli::fuzzing::apply_changes);
}

#[test]
fn fuzz_corpus_bootstrap() {
    replay("bootstrap", outpost_cli::fuzzing::bootstrap);
}

#[test]
fn fuzz_corpus_config_parsers() {
    replay("config_parsers", outpost_cli::fuzzing::config_parsers);
}

//! The comparison harness runs end to end on a small flow and writes every figure the issue
//! names (its own checks — half applied, half superseded, SQLite changing the same half, the
//! re-merge applying nothing — make it fail otherwise).

use std::process::Command;

#[test]
fn compare_runs_small_and_writes_every_figure() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let json = dir.path().join("compare.json");
    let out = Command::new(env!("CARGO_BIN_EXE_compare"))
        .args(["--changes", "8000", "--json"])
        .arg(&json)
        .output()
        .unwrap_or_else(|e| panic!("run compare: {e}"));
    assert!(
        out.status.success(),
        "compare failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("read json: {e}"));
    for key in [
        "outpost_merge_per_s",
        "sqlite_lww_per_s",
        "redb_raw_per_s",
        "sled_raw_per_s",
        "decode_per_s",
        "redb_per_record_floor_per_s",
        "outpost_remerge_per_s",
        "return_build_ms_10k",
        "return_build_ms_1m",
        "flow_overhead_bytes_per_change",
        "flow_overhead_bytes_per_change_zstd",
        "apply_peak_rss_bytes",
        "flow_bytes",
        "merge_vs_sqlite",
        "merge_vs_redb_raw",
    ] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("\"{key}\"")))
            .unwrap_or_else(|| panic!("{key} missing from {text}"));
        let value: f64 = line
            .split(':')
            .nth(1)
            .map(|v| v.trim().trim_end_matches(','))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key}: no number in {line:?}"));
        if !key.ends_with("_zstd") {
            assert!(value > 0.0, "{key} = {value}");
        }
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_compare"))
        .args(["--changes", "ten"])
        .output()
        .unwrap_or_else(|e| panic!("run compare: {e}"));
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("compare:"));
}

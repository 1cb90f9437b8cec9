//! The fleet harness runs end to end with a few remotes (issue 22): central in its own process,
//! every emission processed, a return for every remote, every fetch applied, and the fleet
//! converged — the harness checks convergence itself and fails otherwise.

use std::process::Command;

#[test]
fn m1_fleet_runs_small_and_converges() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let json = dir.path().join("fleet.json");
    let out = Command::new(env!("CARGO_BIN_EXE_fleet"))
        .args([
            "--remotes",
            "6",
            "--changes",
            "9",
            "--threads",
            "2",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap_or_else(|e| panic!("run fleet: {e}"));
    assert!(
        out.status.success(),
        "fleet failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("read json: {e}"));
    let report: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(report["converged"], true, "{report}");
    assert_eq!(report["returns_built"], 6, "{report}");
    assert_eq!(report["central_processing"]["processed"], 6, "{report}");
    for key in [
        "uploads_per_s",
        "fetch_ms_p50",
        "fetch_ms_p99",
        "central_peak_rss_bytes",
        "central_store_bytes",
    ] {
        assert!(
            report[key].as_f64().is_some_and(|v| v > 0.0),
            "{key}: {report}"
        );
    }
}

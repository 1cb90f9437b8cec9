//! The main job, end to end: the `outpost demo` binary plays the SPEC's example plan (C5) in the
//! simulator on stores on disk, every forbidden write is refused with its rule, the journal shows
//! the seed's rows, and every site ends with central's data.

use std::process::Command;

#[test]
fn c5_the_demo_plays_the_example_plan_on_real_stores() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["demo", "--data"])
        .arg(&data)
        .output()
        .expect("run outpost demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "2026-11-25 21:00",
        "2026-11-25 22:00",
        "2026-11-25 23:00",
        "2026-11-25 23:20",
        "2026-11-25 23:40",
        "refused by R3",
        "refused by R4/R9",
        "refused by R6",
        "refused by R8",
        "reserves sales_documents/BSOC-D2",
        "Ret D02",
        "Ret D03",
        "every site holds central's data: true; violations: none",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains("FAILED"), "{stdout}");
    for site in ["ASOC", "BSOC", "CSOC"] {
        assert!(
            data.join(site).join("outpost.redb").is_file(),
            "{site}'s store file"
        );
    }
    // A second run into the same directory is refused rather than mixing two demos.
    let again = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["demo", "--data"])
        .arg(&data)
        .output()
        .expect("run outpost demo again");
    assert!(!again.status.success());
}

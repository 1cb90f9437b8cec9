//! The main job, end to end: the `outpost demo` binary plays the SPEC's example plan (C5) on
//! stores on disk, every forbidden write is refused with its rule, and central and CSOC end with
//! the same data.

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
        "21:00",
        "22:00",
        "23:00",
        "23:20",
        "23:40",
        "refused by R3",
        "refused by R4/R9",
        "refused by R6",
        "refused by R8",
        "held back (R7)",
        "Ret D02",
        "Ret D03",
        "CSOC holds exactly central's data: true",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains("ACCEPTED"), "{stdout}");
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

//! Every scenario in `scenarios/` runs through the simulator's scripted driver: each step does
//! what it says (an `expect_error` step is refused with its rule), every `expect` holds, and all
//! sites end equal to central.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::PathBuf;

use outpost_sim::scenario;

fn run(name: &str) -> scenario::ScenarioReport {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(name);
    let s = scenario::load(&path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report = scenario::run(&s, dir.path()).unwrap();
    assert!(
        report.violations.is_empty(),
        "{name}: {:#?}",
        report.violations
    );
    assert!(report.converged, "{name}");
    for (i, step) in report.steps.iter().enumerate() {
        assert!(
            step.ok,
            "{name}: step {i} ({} at {}) failed: {:?}",
            step.site, step.at, step.error
        );
    }
    report
}

#[test]
fn c5_j3_the_example_plan() {
    let r = run("c5-example-plan.toml");
    let rows = |kind: &str, site: &str| {
        r.journal
            .iter()
            .filter(|j| j.kind == kind && j.site == site)
            .cloned()
            .collect::<Vec<_>>()
    };
    let eb = &rows("emission", "BSOC")[0];
    assert_eq!(eb.file_ready.as_deref(), Some("2026-11-25 21:00"));
    assert_eq!(eb.exec_end.as_deref(), Some("2026-11-25 21:00"));
    let rc = &rows("return", "CSOC")[0];
    assert_eq!(rc.file_ready.as_deref(), Some("2026-11-25 23:00"));
    assert_eq!(rc.exec_start.as_deref(), Some("2026-11-25 23:40"));
    assert_eq!(rc.link, rows("emission", "CSOC")[0].syn_id);
}

#[test]
fn every_scenario_in_the_directory_runs_clean() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    assert!(names.len() >= 2, "{names:?}");
    for name in names {
        run(&name);
    }
}

#[test]
fn a_failed_expect_and_an_unrefused_forbidden_write_are_violations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrong.toml");
    std::fs::write(
        &path,
        r#"
start = "2026-11-25T08:00"
days = 1
[central]
code = "ASOC"
id = 1
tz = "Europe/Paris"
deferred_return_at = "23:00"
[[remote]]
code = "BSOC"
id = 2
tz = "Europe/Paris"
sync = "immediate"
wait = "60s"
[[step]]
at = "2026-11-25T09:00"
site = "BSOC"
put = { table = "customers", key = "C1", fields = { city = "Lyon" } }
[[step]]
at = "2026-11-25T09:01"
site = "BSOC"
expect = { table = "customers", key = "C1", field = "city", equals = "Paris" }
[[step]]
at = "2026-11-25T09:02"
site = "BSOC"
put = { table = "customers", key = "C2", fields = { city = "Nice" } }
expect_error = "R3"
"#,
    )
    .unwrap();
    let s = scenario::load(&path).unwrap();
    let report = scenario::run(&s, &dir.path().join("stores")).unwrap();
    assert_eq!(report.violations.len(), 2, "{:#?}", report.violations);
    assert!(report.violations[0].contains("expected customers/C1.city = Paris"));
    assert!(report.violations[1].contains("succeeded"));
    // A malformed file is a clear error with its position.
    std::fs::write(&path, "start = 5\n").unwrap();
    let err = scenario::load(&path).unwrap_err().to_string();
    assert!(err.contains("wrong.toml") && err.contains("line"), "{err}");
}

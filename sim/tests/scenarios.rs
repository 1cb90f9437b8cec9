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

fn journal_of<'a>(
    r: &'a scenario::ScenarioReport,
    kind: &str,
    site: &str,
) -> Vec<&'a scenario::JournalEntry> {
    r.journal
        .iter()
        .filter(|j| j.kind == kind && j.site == site)
        .collect()
}

#[test]
fn s1_c1_a2_ids_and_ret_dnn() {
    let r = run("s1-c1-a2-establishments.toml");
    let did = |at: &str, what: &str| {
        r.activities
            .iter()
            .any(|a| a.at == at && a.activity == what)
    };
    // BSOC (id 2) syncs immediately at 16:00: processed, then its return built at once.
    assert!(did("2026-11-25 16:00", "Tra D02"), "{:?}", r.activities);
    assert!(did("2026-11-25 16:00", "Ret D02"), "{:?}", r.activities);
    // DSOC (id 4, fixed): emission at 20:00 Lisbon (21:00 Paris), return at the common 23:00.
    assert!(did("2026-11-25 21:00", "Tra D04"), "{:?}", r.activities);
    assert!(did("2026-11-25 23:00", "Ret D04"), "{:?}", r.activities);
    for (code, id) in [("BSOC", "02"), ("CSOC", "03"), ("DSOC", "04")] {
        let e = journal_of(&r, "emission", code);
        assert!(e[0].syn_id.starts_with(&format!("{id}-")), "{e:?}");
    }
}

#[test]
fn m2_emission_linked_to_its_return() {
    let r = run("m2-immediate-return.toml");
    let e = journal_of(&r, "emission", "BSOC")[0];
    assert_eq!(e.mode, "immediate");
    assert_eq!(e.file_ready.as_deref(), Some("2026-11-25 11:00"));
    let ret = r.journal.iter().find(|j| j.syn_id == e.link).unwrap();
    assert_eq!(ret.kind, "return");
    assert_eq!(ret.link, e.syn_id);
    // A3: applied by the remote and reported back within the wait.
    assert_eq!(ret.exec_end.as_deref(), Some("2026-11-25 11:00"));
    assert_eq!(ret.exec_count, 1);
    assert!(!ret.refused);
}

#[test]
fn m3_no_return_has_no_return() {
    let r = run("m3-no-return.toml");
    let e = journal_of(&r, "emission", "CSOC")[0];
    assert_eq!(e.mode, "noreturn");
    assert_eq!(e.link, "0");
    // No return was made for CSOC during the day (only the end's quiet round makes some).
    assert!(
        journal_of(&r, "return", "CSOC")
            .iter()
            .all(|j| j.file_ready.as_deref() > Some("2026-11-25 23:59")),
        "{:?}",
        r.journal
    );
}

#[test]
fn j2_superseded_emission_keeps_link_0() {
    let r = run("j2-link-zero.toml");
    let emissions = journal_of(&r, "emission", "BSOC");
    let fixed = emissions
        .iter()
        .find(|e| e.file_ready.as_deref() == Some("2026-11-25 21:00"))
        .unwrap();
    assert_eq!(fixed.mode, "deferred");
    assert_eq!(fixed.link, "0", "{:?}", r.journal);
    let immediate = emissions
        .iter()
        .find(|e| e.file_ready.as_deref() == Some("2026-11-25 22:00"))
        .unwrap();
    assert_ne!(immediate.link, "0");
    // No return ever links the 21:00 emission.
    assert!(r.journal.iter().all(|j| j.link != fixed.syn_id));
}

#[test]
fn t3_a_file_cut_half_way_leaves_nothing_in_the_sync_table() {
    let r = run("t1-t3-sync-table.toml");
    // The cut copy (18:00) is refused whole: BSOC's only emission is the complete one (19:00).
    let emissions = journal_of(&r, "emission", "BSOC");
    let during_day: Vec<_> = emissions
        .iter()
        .filter(|e| e.file_ready.as_deref() < Some("2026-11-26"))
        .collect();
    assert_eq!(during_day.len(), 1, "{:?}", r.journal);
    assert_eq!(
        during_day[0].file_ready.as_deref(),
        Some("2026-11-25 19:00")
    );
    assert_eq!(during_day[0].exec_count, 1);
    assert!(
        r.steps[3]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("truncated")
    );
}

/// M1 (one fixed-time sync a day) with C6: a remote admin moves BSOC's emission to 20:00 (it
/// emits at 20:00); the 23:20 return puts central's 21:00 back. The 21:00 of that day is not
/// "caught up" at 23:21: one fixed-time emission that day, the next one at 21:00 the day after.
#[test]
fn m1_a_schedule_changed_by_a_return_never_emits_twice_the_same_day() {
    let r = run("c6-local-settings-overwritten.toml");
    let emissions: Vec<_> = r
        .journal
        .iter()
        .filter(|j| j.kind == "emission" && j.site == "BSOC" && j.mode == "deferred")
        .map(|j| j.file_ready.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        emissions,
        vec!["2026-11-25 20:00".to_owned(), "2026-11-26 21:00".to_owned()],
        "one fixed-time emission a day"
    );
}

/// A step is one operation (`scenario::Op`): a step that names two is refused when the file is
/// read, instead of one of them being picked silently.
#[test]
fn a_step_with_two_operations_is_refused_when_read() {
    let text = r#"
start = "2026-11-25T08:00"
days = 1

[central]
code = "ASOC"
id = 1
tz = "Europe/Paris"
deferred_return_at = "23:00"

[[step]]
at = "2026-11-25T09:00"
site = "ASOC"
put = { table = "articles", key = "A1", fields = { name = "Chair" } }
delete = { table = "articles", key = "A1" }
"#;
    let e = scenario::parse(text, "two-ops").map(drop).unwrap_err();
    assert!(e.to_string().contains("2 operations"), "{e}");
    let one = text.replace("delete = { table = \"articles\", key = \"A1\" }\n", "");
    let plan = scenario::parse(&one, "one-op").unwrap();
    assert!(matches!(plan.step[0].op, Some(scenario::Op::Put(_))));
}

#[test]
fn c5_j4_the_picture_shows_each_remote_s_staleness_drop_when_it_fetches_its_return() {
    // C5: central makes the returns at 23:00; BSOC applies its own at 23:20, CSOC at 23:40.
    const MINUTE: u64 = 60_000;
    let r = run("c5-example-plan.toml");
    let t = &r.timeline;
    assert_eq!(
        t.lanes.iter().map(|l| l.0.as_str()).collect::<Vec<_>>(),
        ["ASOC", "BSOC", "CSOC"]
    );
    for (lane, after) in [(1, 20 * MINUTE), (2, 40 * MINUTE)] {
        let points = &t.staleness_ms[lane];
        assert!(
            points
                .windows(2)
                .any(|w| w[0].0 == w[1].0 && w[1].1 == after && w[0].1 > after),
            "{}: {points:?}",
            t.lanes[lane].0
        );
    }
    let svg = outpost_sim::timeline_svg(t);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 2);
    assert!(svg.contains("BSOC Europe/Paris"));
}

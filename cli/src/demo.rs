//! `outpost demo`, the main job: the SPEC's example plan (C1, C5) played by the simulator's
//! scripted driver on real stores on disk — the same engine, replicator and automatons as
//! production, on a virtual clock, in seconds. It prints the schedule, every step with its
//! outcome (forbidden writes refused with their rule), the journal as the monitoring screen shows
//! it (J1), and where every site stands.
//!
//! The plan is `scenarios/c5-example-plan.toml`, built into the program.

use std::fmt::Write as _;
use std::path::Path;

use outpost_sim::scenario::{self, ScenarioError};

/// The seed's example plan (C5), as a scenario.
pub const EXAMPLE_PLAN: &str = include_str!("../../scenarios/c5-example-plan.toml");

/// Runs the example plan with stores under `dir` and returns the transcript; the second value
/// says whether everything held (every step as expected, every site converged).
pub fn run(dir: &Path) -> Result<(String, bool), ScenarioError> {
    let plan = scenario::parse(EXAMPLE_PLAN, "scenarios/c5-example-plan.toml")?;
    let report = scenario::run(&plan, dir)?;
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "outpost demo — the example plan of SPEC C5, stores in {}\n",
        dir.display()
    );
    let _ = writeln!(w, "Schedule");
    let _ = writeln!(
        w,
        "  {} (central, {}): one return per deferred remote at {}",
        plan.central.code, plan.central.tz, plan.central.deferred_return_at
    );
    for r in &plan.remote {
        let when = match (&r.emit_at, &r.fetch_return_at) {
            (Some(e), Some(f)) => format!("emits at {e}, fetches its return at {f}"),
            _ => String::new(),
        };
        let stock = if r.stock_documents == Some(false) {
            "; may not write stock documents (R4/R9)"
        } else {
            ""
        };
        let _ = writeln!(
            w,
            "  {} (remote, {}): {} sync, {when}{stock}",
            r.code, r.tz, r.sync
        );
    }
    let _ = writeln!(w, "\nSteps (local times)");
    for (step, outcome) in plan.step.iter().zip(&report.steps) {
        let result = match (&outcome.error, outcome.ok) {
            (Some(e), true) => e.clone(),
            (None, true) => "ok".to_owned(),
            (Some(e), false) => format!("FAILED: {e}"),
            (None, false) => "FAILED".to_owned(),
        };
        let _ = writeln!(
            w,
            "  {} {:<5} {}\n        → {result}",
            step.at.replace('T', " "),
            step.site,
            step.describe()
        );
    }
    let _ = writeln!(w, "\nJournal at central (J1)");
    let _ = writeln!(
        w,
        "  {:<10} {:<10} {:<5} {:<8} {:<10} {:<17} {:<17} {:<17} {:>4} refused",
        "SynID", "kind", "site", "job", "link", "file ready", "exec start", "exec end", "runs"
    );
    for j in &report.journal {
        let job = match j.kind.as_str() {
            "return" => plan
                .remote
                .iter()
                .find(|r| r.code == j.site)
                .map(|r| format!("Ret D{:02}", r.id))
                .unwrap_or_default(),
            _ => String::new(),
        };
        let t = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let _ = writeln!(
            w,
            "  {:<10} {:<10} {:<5} {:<8} {:<10} {:<17} {:<17} {:<17} {:>4} {}",
            j.syn_id,
            j.kind,
            j.site,
            job,
            j.link,
            t(&j.file_ready),
            t(&j.exec_start),
            t(&j.exec_end),
            j.exec_count,
            if j.refused { "yes" } else { "no" }
        );
    }
    let _ = writeln!(w, "\nOutcome");
    for (code, tables) in &report.sites {
        let counts: Vec<String> = tables
            .iter()
            .map(|(t, rows)| format!("{} {t}", rows.len()))
            .collect();
        let _ = writeln!(w, "  {code}: {}", counts.join(", "));
    }
    let ok = report.converged && report.violations.is_empty() && report.steps.iter().all(|s| s.ok);
    let _ = writeln!(
        w,
        "  every site holds central's data: {}; violations: {}",
        report.converged,
        if report.violations.is_empty() {
            "none".to_owned()
        } else {
            report.violations.join("; ")
        }
    );
    Ok((out, ok))
}

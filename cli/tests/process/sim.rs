//! `outpost sim` as a process: the pictures the simulator promised (`--svg`) for a random run
//! and for a scripted scenario — the schedule of every site across time zones and each remote's
//! staleness over the run — and no progress bar when standard error is not a terminal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

fn sim(dir: &Path, args: &[&str]) -> Output {
    // Standard error is a pipe: the progress bar must stay hidden.
    let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .current_dir(dir)
        .arg("sim")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "outpost sim {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The picture's staleness panel: its heading, and one polyline per remote named.
fn assert_staleness_panel(svg: &str, remotes: &[&str]) {
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(
        svg.contains("Staleness: how old the newest information from central each remote had"),
        "{svg}"
    );
    assert_eq!(svg.matches("<polyline").count(), remotes.len(), "{svg}");
    for code in remotes {
        let at = svg
            .find(&format!(
                "<polyline class=\"site-staleness\" data-site=\"{code}\""
            ))
            .unwrap_or_else(|| panic!("no staleness line for {code}"));
        // A line of several points, each `x,y`.
        let points = svg[at..]
            .split("points=\"")
            .nth(1)
            .and_then(|p| p.split('"').next())
            .unwrap();
        assert!(points.split(' ').count() >= 2, "{code}: {points}");
        assert!(
            points
                .split(' ')
                .all(|p| p.split(',').all(|n| n.parse::<f64>().is_ok())),
            "{code}: {points}"
        );
    }
}

#[test]
fn j4_sim_svg_draws_the_schedule_and_each_remote_s_staleness() {
    let tmp = tempfile::tempdir().unwrap();
    let out = sim(
        tmp.path(),
        &["--sites", "3", "--days", "2", "--svg", "run.svg"],
    );
    assert!(
        !out.stderr.contains(&0x1b),
        "no escape codes on a pipe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(tmp.path().join("run.svg")).unwrap();
    // The schedule: central's lane, then S002 to S004 with their time zones.
    for code in ["ASOC Europe/Paris", "S002 ", "S003 ", "S004 "] {
        assert!(svg.contains(code), "{code}");
    }
    assert!(svg.contains("common return time"));
    assert_staleness_panel(&svg, &["S002", "S003", "S004"]);
}

#[test]
fn j4_sim_scenario_svg_draws_the_example_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/c5-example-plan.toml");
    let out = sim(
        tmp.path(),
        &["--scenario", plan.to_str().unwrap(), "--svg", "c5.svg"],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("converged: true"));
    let svg = std::fs::read_to_string(tmp.path().join("c5.svg")).unwrap();
    assert!(svg.contains("c5-example-plan.toml"));
    for lane in [
        "ASOC Europe/Paris",
        "BSOC Europe/Paris",
        "CSOC Europe/Paris",
    ] {
        assert!(svg.contains(lane), "{lane}");
    }
    assert_staleness_panel(&svg, &["BSOC", "CSOC"]);
}

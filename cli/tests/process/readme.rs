//! The README's walk-through, run as written on a fresh directory (issue 21): every command of
//! its "Administering stores" and "Syncing over the network" blocks, in order, with the
//! `outpost` program on the PATH; `central serve` and `remote run`, which run until stopped,
//! are started in the background as a reader would start them in another terminal.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::net::*;

/// The `sh` blocks under the README's heading that starts with `heading`, as logical lines
/// (continuations joined).
fn block_after(readme: &str, heading: &str) -> Vec<String> {
    let start = readme
        .find(heading)
        .unwrap_or_else(|| panic!("the README has no heading {heading:?}"));
    let rest = &readme[start..];
    let open = rest.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let close = rest[open..].find("```").expect("the block's end") + open;
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in rest[open..close].lines() {
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    lines.push(std::mem::take(&mut current));
                }
                current.clear();
            }
        }
    }
    lines
}

fn bash(dir: &Path, path: &str, line: &str) -> Command {
    let mut c = Command::new("bash");
    c.current_dir(dir).env("PATH", path).args(["-c", line]);
    c
}

#[test]
fn s4_t2_m1_the_readme_walk_through_runs_as_written_on_a_fresh_directory() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fresh");
    std::fs::create_dir(&dir).unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_outpost"), bin.join("outpost")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut lines = block_after(&readme, "### Administering stores");
    lines.extend(block_after(&readme, "### Syncing over the network"));
    assert!(lines.len() > 15, "{lines:?}");
    let mut background = Vec::new();
    for line in &lines {
        let daemon = line.contains("central serve") || line.contains("remote run");
        if daemon {
            let n = background.len();
            let log = dir.join(format!("daemon-{n}.log"));
            let child = bash(&dir, &path, line)
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(std::fs::File::create(dir.join(format!("daemon-{n}.err"))).unwrap())
                .spawn()
                .unwrap();
            background.push(Running(child));
            // Ready once it takes commands (its control socket) — the daemon's data directory
            // is the word after --data.
            let data = line
                .split_whitespace()
                .skip_while(|w| *w != "--data")
                .nth(1)
                .unwrap();
            let socket = dir.join(data).join("control.sock");
            wait_for(30, line, || socket.exists());
            if line.contains("central serve") {
                wait_for(30, "central listening", || {
                    std::fs::read_to_string(&log).is_ok_and(|l| l.contains("listening on"))
                });
            }
            continue;
        }
        let out = bash(&dir, &path, line)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "README line failed: {line}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8_lossy(&out.stdout);
        // What the README's comments promise.
        if line.contains("outpost get --data bsoc") {
            assert!(printed.contains("\"name\":\"Dupont\""), "{printed}");
        }
        if line.contains("remote sync --data csoc") {
            assert!(printed.contains("received 1 return(s)"), "{printed}");
        }
        if line.starts_with("curl") {
            let rows: serde_json::Value = serde_json::from_str(&printed).unwrap();
            assert!(!rows.as_array().unwrap().is_empty(), "{printed}");
        }
    }
    assert_eq!(
        background.len(),
        2,
        "central serve and remote run were started"
    );
}

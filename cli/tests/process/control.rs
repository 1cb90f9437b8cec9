//! The command line while a daemon holds the store (issue 21 item 1): `central serve`,
//! `remote run` and `site serve` run the commands on their data directory through their
//! control socket, so nothing needs a stop, and a remote added at central syncs without a
//! restart. Rules: C4, C6, M1, S2, S4, J1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::net::*;

/// Runs `outpost` in `cwd` and returns (success, stdout, stderr).
fn run(cwd: &Path, args: &[&str]) -> (bool, String, String) {
    let out = outpost(cwd, args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// C4, C6, M1, J1: with `central serve` running, the journal, records, a backup, a remote
/// added and its settings changed are all done from the command line; the new remote syncs
/// at once (no restart), and what cannot run beside the daemon says why.
#[test]
fn c4_m1_central_commands_run_in_the_daemon_and_a_new_remote_syncs_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(dir, &[], &[("BSOC", "bsoc", &["immediate 60"])]);
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", "127.0.0.1:0"]);
    assert!(dir.join("asoc/control.sock").exists());

    let journal = ok(dir, &["journal", "--data", "asoc"]);
    assert!(journal.contains("SynID"), "{journal}");
    let (good, _, err) = run(
        dir,
        &[
            "get",
            "--data",
            "asoc",
            "--table",
            "customers",
            "--key",
            "none",
        ],
    );
    assert!(good, "{err}");

    // A remote added while central runs: its bootstrap written by the daemon (relative path
    // read from this command line's working directory, a subfolder), and it syncs at once.
    std::fs::create_dir(dir.join("usb")).unwrap();
    let added = ok(
        &dir.join("usb"),
        &[
            "central",
            "add-remote",
            "--data",
            "../asoc",
            "--id",
            "3",
            "--code",
            "CSOC",
            "--sync",
            "immediate 60",
            "--bootstrap",
            "csoc.boot",
        ],
    );
    assert!(added.contains("CSOC"), "{added}");
    assert!(
        dir.join("usb/csoc.boot").is_file(),
        "the bootstrap is where the operator said"
    );
    ok(
        dir,
        &[
            "remote",
            "init",
            "--data",
            "csoc",
            "--bootstrap",
            "usb/csoc.boot",
        ],
    );
    put(dir, "csoc", "K-C", r#"{"name": "Camille"}"#);
    let summary = sync(dir, "csoc", &central, &[]);
    assert!(summary.contains("sent 1 emission(s)"), "{summary}");
    assert!(summary.contains("received 1 return(s)"), "{summary}");
    let got = get(dir, "asoc", "K-C");
    assert_eq!(got["name"], "Camille", "central has the new remote's write");

    // Its schedule changed while central runs (C6: delivered with its next return).
    ok(
        dir,
        &[
            "central",
            "set-remote",
            "--data",
            "asoc",
            "--site",
            "CSOC",
            "--sync",
            "fixed 21:00 23:20",
        ],
    );
    let journal = ok(
        dir,
        &["journal", "--data", "asoc", "--site", "CSOC", "--json"],
    );
    let rows: serde_json::Value = serde_json::from_str(&journal).unwrap();
    assert!(!rows.as_array().unwrap().is_empty(), "{journal}");

    // A backup while central runs is taken in a write lock; it opens as central's store.
    let backup = ok(
        dir,
        &["central", "backup", "--data", "asoc", "--to", "saved"],
    );
    assert!(backup.contains("backup of central"), "{backup}");
    let (good, listed, err) = run(dir, &["schema", "--data", "saved"]);
    assert!(
        good && listed.contains("customers"),
        "the backup opens: {err}"
    );

    // What cannot run beside the daemon is refused with the reason, the daemon unharmed.
    let (good, _, err) = run(
        dir,
        &["central", "restore", "--backup", "saved", "--data", "asoc"],
    );
    assert!(!good);
    assert!(err.contains("stop the daemon"), "{err}");
    let (good, _, err) = run(dir, &["central", "serve", "--data", "asoc"]);
    assert!(!good);
    assert!(err.contains("already runs"), "{err}");
    // A command line that does not parse in the daemon is clap's error, exit 2.
    let (good, _, err) = run(dir, &["journal", "--data", "asoc", "--site"]);
    assert!(!good, "{err}");

    // The daemon still serves, and once stopped, the commands run on their own again.
    sync(dir, "bsoc", &central, &[]);
    assert!(central.terminate().success());
    assert!(
        !dir.join("asoc/control.sock").exists(),
        "the socket is removed at stop"
    );
    let after = ok(
        dir,
        &["journal", "--data", "asoc", "--site", "CSOC", "--json"],
    );
    let after: serde_json::Value = serde_json::from_str(&after).unwrap();
    assert_eq!(after, rows, "the journal read by the daemon is the store's");
}

/// S2, S4, M1: with `remote run` holding a shop's store, the operator reads and writes
/// records, scans into `head`, exports a sync file and syncs at once from the command line.
#[test]
fn s4_m1_a_shops_commands_run_in_remote_run_without_stopping_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(dir, &[], &[("BSOC", "bsoc", &["immediate 60"])]);
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", "127.0.0.1:0"]);
    let (_run, _log) = remote_run(dir, "bsoc", &central.url);
    wait_for(30, "remote run's control socket", || {
        dir.join("bsoc/control.sock").exists()
    });

    for i in 0..3 {
        put(
            dir,
            "bsoc",
            &format!("K-{i}"),
            &format!(r#"{{"name": "n{i}"}}"#),
        );
    }
    assert_eq!(get(dir, "bsoc", "K-1")["name"], "n1");
    let scanned = ok(dir, &["scan", "--data", "bsoc", "--table", "customers"]);
    assert_eq!(scanned.lines().count(), 3, "{scanned}");

    // `| head -1`: the reader stops early; no panic, no error.
    let sh = format!(
        "{} scan --data bsoc --table customers | head -1",
        env!("CARGO_BIN_EXE_outpost")
    );
    let piped = Command::new("bash")
        .current_dir(dir)
        .args(["-o", "pipefail", "-c", &sh])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        piped.status.success(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&piped.stdout).lines().count(), 1);

    // A sync now, between two of the scheduler's (never during one).
    let summary = sync(dir, "bsoc", &central, &[]);
    assert!(summary.contains("sent 1 emission(s)"), "{summary}");
    let at_central = get(dir, "asoc", "K-2");
    assert_eq!(at_central["name"], "n2");

    // A sync file written by the daemon where this command line said, relative to its folder.
    std::fs::create_dir(dir.join("usb")).unwrap();
    let written = ok(
        &dir.join("usb"),
        &["remote", "export", "--data", "../bsoc", "--out", "."],
    );
    let files: Vec<_> = std::fs::read_dir(dir.join("usb")).unwrap().collect();
    assert_eq!(files.len(), 1, "{written}");

    // Refused beside the daemon, with the reason.
    let (good, _, err) = run(
        dir,
        &["remote", "run", "--data", "bsoc", "--central", &central.url],
    );
    assert!(!good);
    assert!(
        err.contains("already runs") && err.contains("remote run"),
        "{err}"
    );
}

/// C4, C6, J1: a remote removed while central runs (a shop closed) can no longer sync — its
/// credential is refused, a file of it is refused and listed — while what it wrote and its
/// journal rows stay at central, and the other remotes go on (issue 21 item 2).
#[test]
fn c4_j1_a_removed_remote_is_refused_from_then_on_and_its_data_and_journal_stay() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(
        dir,
        &[],
        &[
            ("BSOC", "bsoc", &["immediate 60"]),
            ("CSOC", "csoc", &["immediate 60"]),
        ],
    );
    std::fs::write(dir.join("asoc/outpost.toml"), "[alerts]\ncheck_s = 1\n").unwrap();
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", "127.0.0.1:0"]);
    put(dir, "bsoc", "K-B", r#"{"name": "Bertrand"}"#);
    sync(dir, "bsoc", &central, &[]);

    let removed = ok(
        dir,
        &[
            "central",
            "remove-remote",
            "--data",
            "asoc",
            "--site",
            "BSOC",
        ],
    );
    assert!(removed.contains("remote BSOC (id 02) removed"), "{removed}");

    // Its credential no longer works.
    put(dir, "bsoc", "K-B2", r#"{"name": "Blaise"}"#);
    // Its own credential: the shop is told why, and the person responsible that it still
    // syncs (what it writes reaches no one), once a day however often it tries.
    for _ in 0..2 {
        let sync = [
            "remote",
            "sync",
            "--data",
            "bsoc",
            "--central",
            &central.url,
        ];
        let (good, _, err) = run(dir, &sync);
        assert!(!good, "a removed remote synced");
        assert!(
            err.contains("site BSOC was removed from this deployment")
                && err.contains("reaches no"),
            "{err}"
        );
    }
    let still_syncs = || {
        admin_get(dir, &central, "/v1/alerts")["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a.to_string().contains("BSOC, removed from this deployment"))
            .count()
    };
    wait_for(30, "the alert that a removed remote still syncs", || {
        still_syncs() > 0
    });
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    assert_eq!(still_syncs(), 1, "one alert for two attempts");
    // Another credential naming it (a wrong secret) is told nothing.
    let mut r = agent()
        .get(format!("{}/v1/returns", central.url))
        .header("authorization", format!("Bearer BSOC.{}", "0".repeat(64)))
        .call()
        .unwrap();
    let body = r.body_mut().read_to_string().unwrap();
    assert_eq!(r.status(), 401, "{body}");
    assert!(!body.contains("removed"), "{body}");
    // A file of it is refused at central and listed with the reason.
    let file = ok(dir, &["remote", "export", "--data", "bsoc", "--out", "."]);
    let file = file
        .split_whitespace()
        .find(|w| w.contains("emission-"))
        .unwrap_or_else(|| panic!("{file}"))
        .trim_end_matches(['.', ','])
        .to_owned();
    let (good, _, err) = run(dir, &["central", "import", "--data", "asoc", &file]);
    assert!(!good, "a removed remote's file was taken");
    assert!(err.contains("was removed"), "{err}");
    let refused = ok(dir, &["journal", "--data", "asoc", "--refused"]);
    assert!(refused.contains("was removed"), "{refused}");
    assert!(get(dir, "asoc", "K-B2").is_null());

    // What it wrote and its journal rows stay; the others go on and still receive its data.
    assert_eq!(get(dir, "asoc", "K-B")["name"], "Bertrand");
    let rows = ok(
        dir,
        &["journal", "--data", "asoc", "--site", "BSOC", "--json"],
    );
    let rows: serde_json::Value = serde_json::from_str(&rows).unwrap();
    assert!(!rows.as_array().unwrap().is_empty());
    sync(dir, "csoc", &central, &[]);
    assert_eq!(get(dir, "csoc", "K-B")["name"], "Bertrand");

    // Its id and code are not given again; removing it twice says there is no such remote.
    let (good, _, err) = run(
        dir,
        &[
            "central",
            "remove-remote",
            "--data",
            "asoc",
            "--site",
            "BSOC",
        ],
    );
    assert!(!good && err.contains("no remote BSOC"), "{err}");
    let (good, _, err) = run(
        dir,
        &[
            "central",
            "add-remote",
            "--data",
            "asoc",
            "--id",
            "2",
            "--code",
            "XSOC",
            "--sync",
            "immediate 60",
            "--bootstrap",
            "xsoc.boot",
        ],
    );
    assert!(!good, "id 2 given again: {err}");
    // Not even to the same establishment: its old stores' flows stay refused, so a new
    // credential or a new set-up would be a remote that can never sync.
    let (good, _, err) = run(
        dir,
        &[
            "central",
            "add-remote",
            "--data",
            "asoc",
            "--id",
            "2",
            "--code",
            "BSOC",
            "--sync",
            "immediate 60",
            "--bootstrap",
            "bsoc-again.boot",
        ],
    );
    assert!(!good && err.contains("was removed"), "{err}");
    assert!(!dir.join("bsoc-again.boot").exists());
    let (good, _, err) = run(
        dir,
        &[
            "central",
            "new-credential",
            "--data",
            "asoc",
            "--site",
            "BSOC",
        ],
    );
    assert!(!good && err.contains("was removed"), "{err}");
}

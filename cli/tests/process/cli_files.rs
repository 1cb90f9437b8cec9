//! The command line end to end, with the real `outpost` binary and real files: central and two
//! remotes created, sync files carried by hand (S4), guards enforced (R3), the journal (J1), and
//! bad input refused with a clear message and nothing changed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::process::{Command, Output};

/// A command's arguments: a string split at spaces, or a list (for arguments holding spaces).
trait Args {
    fn list(&self) -> Vec<&str>;
}

impl Args for &str {
    fn list(&self) -> Vec<&str> {
        self.split_whitespace().collect()
    }
}

impl Args for &[&str] {
    fn list(&self) -> Vec<&str> {
        self.to_vec()
    }
}

impl<const N: usize> Args for &[&str; N] {
    fn list(&self) -> Vec<&str> {
        self.to_vec()
    }
}

impl Args for &Vec<&str> {
    fn list(&self) -> Vec<&str> {
        self.to_vec()
    }
}

fn outpost(dir: &Path, args: impl Args) -> Output {
    let args = args.list();
    Command::new(env!("CARGO_BIN_EXE_outpost"))
        .current_dir(dir)
        .args(&args)
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: impl Args) -> String {
    let args = args.list();
    let out = outpost(dir, &args);
    assert!(
        out.status.success(),
        "outpost {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(dir: &Path, args: impl Args, wanted: &str) {
    let args = args.list();
    let out = outpost(dir, &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "outpost {args:?} should have failed");
    assert!(
        err.contains(wanted),
        "outpost {args:?}: {err:?} lacks {wanted:?}"
    );
}

/// `outpost put` of a customer's fields.
fn put_customer<'a>(data: &'a str, key: &'a str, fields: &'a str) -> Vec<&'a str> {
    vec![
        "put",
        "--data",
        data,
        "--table",
        "customers",
        "--key",
        key,
        "--fields",
        fields,
    ]
}

fn journal(dir: &Path, extra: &str) -> Vec<serde_json::Value> {
    let mut args = vec!["journal", "--data", "asoc", "--json"];
    args.extend(extra.split_whitespace());
    serde_json::from_str::<serde_json::Value>(&ok(dir, &args))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn s4_central_and_two_remotes_sync_by_files_through_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir(d.join("usb")).unwrap();
    ok(d, "central init --data asoc");
    fails(d, "central init --data asoc", "already holds a store");
    let said = ok(
        d,
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
            "fixed 21:00 23:20",
            "--sync",
            "immediate 60",
            "--bootstrap",
            "usb/bsoc.outpost",
        ],
    );
    // M1: what the remote will get and when, in words.
    assert!(
        said.contains("BSOC: emits at 21:00") && said.contains("fetched at 23:20"),
        "{said}"
    );
    ok(
        d,
        "central add-remote --data asoc --id 3 --code CSOC --tz America/New_York --deny stock_documents --bootstrap usb/csoc.outpost",
    );
    fails(
        d,
        "central add-remote --data asoc --id 4 --code BSOC --bootstrap usb/x.outpost",
        "already exists",
    );
    // A file already there is not overwritten (here BSOC's bootstrap, not handed over yet).
    let before = std::fs::read(d.join("usb/bsoc.outpost")).unwrap();
    fails(
        d,
        "central add-remote --data asoc --id 5 --code DSOC --bootstrap usb/bsoc.outpost",
        "usb/bsoc.outpost already exists; it is left as it is",
    );
    assert_eq!(std::fs::read(d.join("usb/bsoc.outpost")).unwrap(), before);
    ok(d, "remote init --data bsoc --bootstrap usb/bsoc.outpost");
    ok(d, "remote init --data csoc --bootstrap usb/csoc.outpost");

    // Work at BSOC: a customer is fine, an article is central's alone (R3).
    ok(
        d,
        &[
            "put",
            "--data",
            "bsoc",
            "--table",
            "customers",
            "--key",
            "BSOC-1",
            "--fields",
            r#"{"name": "Dupont", "city": "Lyon"}"#,
        ],
    );
    fails(
        d,
        &[
            "put",
            "--data",
            "bsoc",
            "--table",
            "articles",
            "--key",
            "A1",
            "--fields",
            r#"{"price": "3.50"}"#,
        ],
        "R3",
    );
    assert_eq!(
        ok(d, "get --data bsoc --table articles --key A1").trim(),
        "null"
    );
    fails(
        d,
        "put --data bsoc --table customers --key K --fields [1]",
        "JSON object",
    );
    ok(
        d,
        &[
            "put",
            "--data",
            "asoc",
            "--table",
            "articles",
            "--key",
            "A1",
            "--fields",
            r#"{"name": "Lamp", "price": "19.90"}"#,
        ],
    );

    // BSOC's emission on the stick; a copy cut half-way is refused whole (T3).
    ok(d, "remote export --data bsoc --out usb/e1.outpost");
    let bytes = std::fs::read(d.join("usb/e1.outpost")).unwrap();
    std::fs::write(d.join("usb/cut.outpost"), &bytes[..bytes.len() / 2]).unwrap();
    let rows_before = journal(d, "").len();
    fails(d, "central import --data asoc usb/cut.outpost", "truncated");
    assert_eq!(
        journal(d, "").len(),
        rows_before,
        "a refused file leaves no row"
    );
    assert_eq!(
        ok(d, "get --data asoc --table customers --key BSOC-1").trim(),
        "null"
    );
    fails(
        d,
        "central import --data asoc usb/missing.outpost",
        "missing.outpost",
    );
    let imported = ok(d, "central import --data asoc usb/e1.outpost");
    assert!(imported.contains("file ready"), "{imported}");
    assert!(ok(d, "central import --data asoc usb/e1.outpost").contains("already received"));

    // The return for CSOC carries BSOC's customer and central's article.
    fails(
        d,
        "central export-return --data asoc --site ZSOC --out usb",
        "no remote ZSOC",
    );
    ok(
        d,
        "central export-return --data asoc --site CSOC --out usb/r-csoc.outpost",
    );
    fails(
        d,
        "remote import --data bsoc usb/r-csoc.outpost",
        "addressed to site 03",
    );
    let applied = ok(d, "remote import --data csoc usb/r-csoc.outpost");
    assert!(applied.contains("applied"), "{applied}");
    let customer: serde_json::Value =
        serde_json::from_str(&ok(d, "get --data csoc --table customers --key BSOC-1")).unwrap();
    assert_eq!(customer["city"], "Lyon");
    let article: serde_json::Value =
        serde_json::from_str(&ok(d, "get --data csoc --table articles --key A1")).unwrap();
    assert_eq!(article["price"], "19.90");

    // The journal (J1): BSOC's emission processed once; the table view names the columns.
    let bsoc = journal(d, "--site BSOC");
    let emission = bsoc
        .iter()
        .find(|r| r["kind"] == "Emission")
        .unwrap_or_else(|| panic!("no emission in {bsoc:?}"));
    assert_eq!(emission["executions"], 1);
    assert!(emission["exec_end_ms"].is_u64());
    assert!(bsoc.iter().all(|r| r["site"] == 2), "{bsoc:?}");
    let table = ok(d, "journal --data asoc");
    assert!(
        table.contains("SynID") && table.contains("02-000001"),
        "{table}"
    );
    fails(d, "journal --data bsoc", "not central's");
}

/// `outpost put` takes one JSON object naming each field once and at least one, under a key
/// that is not empty; anything else is refused with what to do, and nothing is written.
#[test]
fn s3_put_refuses_empty_fields_a_field_given_twice_and_an_empty_key_writing_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(d, "central init --data asoc");
    let put = |key, fields| put_customer("asoc", key, fields);
    fails(d, &put("K1", "{}"), "names no field");
    fails(
        d,
        &put("K1", r#"{"city": "Lyon", "city": "Paris"}"#),
        "\"city\" is given twice",
    );
    fails(d, &put("", r#"{"city": "Lyon"}"#), "--key is empty");
    let get = [
        "get",
        "--data",
        "asoc",
        "--table",
        "customers",
        "--key",
        "K1",
    ];
    assert_eq!(ok(d, &get[..]).trim(), "null", "nothing was written");
    ok(d, &put("K1", r#"{"city": "Lyon"}"#));
    assert!(ok(d, &get[..]).contains("Lyon"));
}

/// Listing and comparing without a server: `outpost scan` (JSON lines, from a key, a limit),
/// `outpost export` (JSON lines or CSV with the schema's columns) and `outpost schema`; an
/// unknown table's error lists the tables.
#[test]
fn s4_scan_export_and_schema_list_a_store_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(d, "central init --data asoc");
    for (key, fields) in [
        ("K1", r#"{"name": "Dupont", "city": "Lyon"}"#),
        ("K2", r#"{"name": "Martin, fils", "city": "Lille"}"#),
        ("K3", r#"{"name": "Durand"}"#),
    ] {
        ok(d, &put_customer("asoc", key, fields));
    }
    let lines: Vec<serde_json::Value> = ok(d, "scan --data asoc --table customers --from K2")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["key"], "K2");
    assert_eq!(lines[0]["fields"]["name"], "Martin, fils");
    assert_eq!(
        ok(d, "scan --data asoc --table customers --limit 1")
            .lines()
            .count(),
        1
    );
    let jsonl = ok(d, "export --data asoc --table customers");
    assert_eq!(jsonl.lines().count(), 3);
    let csv = ok(d, "export --data asoc --table customers --format csv");
    let rows: Vec<&str> = csv.lines().collect();
    // The schema's fields by name; values as JSON, quoted as CSV quotes them.
    assert_eq!(rows[0], "key,address,city,email,name,phone", "{csv}");
    assert_eq!(rows[1], r#"K1,,"""Lyon""",,"""Dupont""","#, "{csv}");
    assert_eq!(rows[2], r#"K2,,"""Lille""",,"""Martin, fils""","#, "{csv}");
    assert_eq!(rows.len(), 4);
    let schema = ok(d, "schema --data asoc");
    assert!(schema.contains("customers — shared"), "{schema}");
    assert!(schema.contains("articles — central only (R3)"), "{schema}");
    assert!(schema.contains("  price: Decimal"), "{schema}");
    fails(
        d,
        "scan --data asoc --table clients",
        "no table clients; the tables are: ",
    );
    fails(
        d,
        "export --data asoc --table customers --format xml",
        "jsonl or csv",
    );
}

/// `outpost central set-remote`: a remote's schedule changed at central, checked as the whole
/// configuration is (a second fixed time is refused, M1, and nothing changes), reaches the
/// remote with its next return (C6).
#[test]
fn m1_c6_set_remote_changes_a_schedule_checked_and_the_remote_gets_it_with_its_next_return() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir(d.join("usb")).unwrap();
    ok(d, "central init --data asoc");
    ok(
        d,
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
            "fixed 21:00 23:20",
            "--bootstrap",
            "usb/bsoc.outpost",
        ],
    );
    ok(d, "remote init --data bsoc --bootstrap usb/bsoc.outpost");
    let said = ok(
        d,
        &[
            "central",
            "set-remote",
            "--data",
            "asoc",
            "--site",
            "BSOC",
            "--sync",
            "fixed 20:00 22:30",
        ],
    );
    assert!(
        said.contains("BSOC: emits at 20:00") && said.contains("fetched at 22:30"),
        "{said}"
    );
    fails(
        d,
        &[
            "central",
            "set-remote",
            "--data",
            "asoc",
            "--site",
            "BSOC",
            "--sync",
            "fixed 19:00 22:00",
            "--sync",
            "fixed 20:00 22:30",
        ][..],
        "M1",
    );
    fails(
        d,
        "central set-remote --data asoc --site ZSOC --tz Europe/Paris",
        "no remote ZSOC; the remotes are: BSOC",
    );
    // The next return carries it (C6).
    ok(
        d,
        "central export-return --data asoc --site BSOC --out usb/r-bsoc.outpost",
    );
    ok(d, "remote import --data bsoc usb/r-bsoc.outpost");
    let store = outpost_cli::admin::open(&d.join("bsoc")).unwrap();
    let settings = outpost_replicator::remote::settings(&store).unwrap();
    assert_eq!(
        settings.get("sync_types").map(String::as_str),
        Some("fixed 20:00 22:30"),
        "{settings:?}"
    );
}

/// The directories in `dir` a restore moved aside (`….before-restore-<time>`).
fn moved_aside(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("before-restore"))
        .collect()
}

/// `central restore` with the backup kept inside central's data directory, or given as the data
/// directory itself: refused before anything moves, with the reason — the restore moves the
/// data directory aside, and the backup with it; it used to leave the directory empty and say
/// only that no store was there. A backup that is no central store leaves everything in place.
#[test]
fn central_restore_from_a_backup_inside_the_data_directory_moves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(dir, "central init --data asoc");
    ok(dir, &put_customer("asoc", "ASOC-1", r#"{"name":"Dupont"}"#));
    ok(dir, "central backup --data asoc --to asoc/backups/monday");
    fails(
        dir,
        "central restore --backup asoc/backups/monday --data asoc",
        "inside",
    );
    fails(dir, "central restore --backup asoc --data asoc", "inside");
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    fails(dir, "central restore --backup empty --data asoc", "backup");
    let left = moved_aside(dir);
    assert!(left.is_empty(), "moved aside: {left:?}");
    let got = ok(dir, "get --data asoc --table customers --key ASOC-1");
    assert!(got.contains("Dupont"), "{got}");
    // From a backup elsewhere, the restore goes through.
    std::fs::rename(dir.join("asoc/backups/monday"), dir.join("monday")).unwrap();
    ok(dir, "central restore --backup monday --data asoc");
    let got = ok(dir, "get --data asoc --table customers --key ASOC-1");
    assert!(got.contains("Dupont"), "{got}");
}

/// `central restore` failing once the backup is copied in, while it makes the store safe to run
/// again (its numbers jumped, R1/J1): the data directory is put back as it was, as when the
/// copy itself fails. It used to keep the copied backup with its numbers not jumped, and a
/// daemon started on it would have numbered its returns and commits as the lost central did.
#[test]
fn r1_central_restore_failing_after_the_copy_puts_the_data_directory_back_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(dir, "central init --data asoc");
    ok(dir, &put_customer("asoc", "ASOC-1", r#"{"name":"Dupont"}"#));
    ok(dir, "central backup --data asoc --to monday");
    ok(dir, &put_customer("asoc", "ASOC-2", r#"{"name":"Durand"}"#));
    let err =
        outpost_cli::admin::central_restore_with(&dir.join("monday"), &dir.join("asoc"), |_| {
            Err("the disk failed".to_owned())
        })
        .unwrap_err();
    assert!(err.starts_with("the disk failed"), "{err}");
    assert!(err.contains("is as it was"), "{err}");
    // Central's own store is back in place, the write made after the backup with it.
    let got = ok(dir, "get --data asoc --table customers --key ASOC-2");
    assert!(got.contains("Durand"), "{got}");
    let left = moved_aside(dir);
    assert!(left.is_empty(), "left aside: {left:?}");
}

/// Central's data directory put back from a copy by hand, without `central restore`: BSOC's
/// next file shows it (BSOC applied a return the copy never gave). The import says the file is
/// not taken yet, and adding a remote is refused with nothing changed — its bootstrap would
/// take a number the lost central gave, and the remote's settings would stay behind. After
/// `central restore` from a copy of the directory, both go through.
#[test]
fn r1_j1_central_put_back_by_hand_refuses_to_add_a_remote_or_write_until_restored() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir(d.join("usb")).unwrap();
    ok(d, "central init --data asoc");
    ok(
        d,
        "central add-remote --data asoc --id 2 --code BSOC --bootstrap usb/bsoc.outpost",
    );
    ok(d, "remote init --data bsoc --bootstrap usb/bsoc.outpost");
    ok(d, "central backup --data asoc --to copy");
    ok(
        d,
        "central export-return --data asoc --site BSOC --out usb/r1.outpost",
    );
    ok(d, "remote import --data bsoc usb/r1.outpost");
    // The copy is put in place by hand.
    std::fs::remove_dir_all(d.join("asoc")).unwrap();
    std::fs::rename(d.join("copy"), d.join("asoc")).unwrap();
    ok(d, "remote export --data bsoc --out usb/e1.outpost");
    fails(
        d,
        "central import --data asoc usb/e1.outpost",
        "not taken yet, nothing kept",
    );
    fails(
        d,
        "central add-remote --data asoc --id 3 --code CSOC --bootstrap usb/csoc.outpost",
        "nothing changed",
    );
    assert!(!d.join("usb/csoc.outpost").exists());
    // Nor does central write anything of its own: its next commit would take a number the
    // lost central gave.
    let put = r#"put --data asoc --table customers --key ASOC-X --fields {"name":"Central"}"#;
    fails(d, put, "writes nothing of its own");
    // Restored as the docs say.
    ok(d, "central backup --data asoc --to again");
    ok(d, "central restore --backup again --data asoc");
    ok(d, put);
    ok(
        d,
        "central add-remote --data asoc --id 3 --code CSOC --bootstrap usb/csoc.outpost",
    );
    ok(d, "central import --data asoc usb/e1.outpost");
}

/// C3 in a deployment that syncs only by files: no daemon runs, yet `journal --alerts` lists
/// what the daemon would — it brings the alerts up to date itself (here two shops numbered a
/// sales document alike, and central refused the second's changes, R5). It used to say "no
/// alert".
#[test]
fn c3_journal_alerts_with_no_daemon_lists_the_alerts_the_daemon_would() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir(d.join("usb")).unwrap();
    ok(d, "central init --data asoc");
    for (id, code) in [("2", "bsoc"), ("3", "csoc")] {
        let upper = code.to_uppercase();
        let boot = format!("usb/{code}.outpost");
        ok(
            d,
            format!("central add-remote --data asoc --id {id} --code {upper} --bootstrap {boot}")
                .as_str(),
        );
        ok(
            d,
            format!("remote init --data {code} --bootstrap {boot}").as_str(),
        );
    }
    assert!(ok(d, "journal --data asoc --alerts").contains("no alert"));
    for (code, total) in [("csoc", "1.00"), ("bsoc", "2.00")] {
        ok(
            d,
            format!(r#"put --data {code} --table sales_documents --key D1 --fields {{"total":"{total}"}}"#)
                .as_str(),
        );
        let file = format!("usb/{code}-1.outpost");
        ok(d, &["remote", "export", "--data", code, "--out", &file]);
        ok(d, &["central", "import", "--data", "asoc", &file]);
    }
    // An event: raised and closed at once (the refused changes go back with BSOC's return).
    let alerts = ok(d, "journal --data asoc --alerts");
    assert!(
        alerts.contains("change(s) of BSOC refused") && alerts.contains("R5"),
        "{alerts}"
    );
}

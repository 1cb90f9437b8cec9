//! Silent divergence and silent loss, end to end with the real program and real processes:
//! the same document number picked at two shops (R1/R5), and a shop set up again from its old
//! bootstrap (R1: no two stores emit the same dot).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use crate::common::net::*;

fn get_doc(dir: &std::path::Path, data: &str, key: &str) -> serde_json::Value {
    serde_json::from_str(&ok(
        dir,
        &[
            "get",
            "--data",
            data,
            "--table",
            "sales_documents",
            "--key",
            key,
        ],
    ))
    .unwrap()
}

fn put_doc(dir: &std::path::Path, data: &str, key: &str, fields: &str) {
    ok(
        dir,
        &[
            "put",
            "--data",
            data,
            "--table",
            "sales_documents",
            "--key",
            key,
            "--fields",
            fields,
        ],
    );
}

#[test]
fn r1_r5_the_same_document_number_created_at_two_shops_converges_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(
        dir,
        &[],
        &[
            ("BSOC", "bsoc", &["immediate 30"]),
            ("CSOC", "csoc", &["immediate 30"]),
        ],
    );
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", "127.0.0.1:0"]);
    put_doc(
        dir,
        "bsoc",
        "D1",
        r#"{"customer":"K1","total":"10.00","status":"open"}"#,
    );
    put_doc(
        dir,
        "csoc",
        "D1",
        r#"{"status":"draft","date":"2026-12-03"}"#,
    );
    for data in ["bsoc", "csoc", "bsoc", "csoc"] {
        sync(dir, data, &central, &[]);
    }
    let b = get_doc(dir, "bsoc", "D1");
    let c = get_doc(dir, "csoc", "D1");
    assert_eq!(b["customer"], "K1", "{b}");
    assert_eq!(b["status"], "open", "{b}");
    assert_eq!(
        c, b,
        "CSOC holds BSOC's document, the first central received"
    );
    // The losing shop's writes are in central's rejection log with their rule, and were
    // reported back to it.
    drop(central);
    let asoc = outpost_server::data_dir::open(&dir.join("asoc")).unwrap();
    let refused: Vec<_> = asoc
        .rejections()
        .unwrap()
        .into_iter()
        .filter(|r| r.change.key == "D1")
        .collect();
    assert!(
        refused.iter().any(|r| r.refusal.rule == outpost::Rule::R5
            && r.change.value == outpost::Value::Text("draft".into())),
        "{refused:?}"
    );
    drop(asoc);
    let csoc = outpost_server::data_dir::open(&dir.join("csoc")).unwrap();
    let told = outpost::replicator::remote::refused_by_central(&csoc).unwrap();
    assert!(
        told.iter().any(|r| r.rejection.change.key == "D1"),
        "CSOC was told: {told:?}"
    );
    drop(csoc);
    let a = get_doc(dir, "asoc", "D1");
    assert_eq!(a, b, "central holds the same record");
}

#[test]
fn r1_a_shop_set_up_again_from_its_old_bootstrap_is_refused_until_reprovisioned_and_loses_nothing()
{
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(dir, &[], &[("BSOC", "bsoc", &["immediate 30"])]);
    std::fs::write(dir.join("asoc/outpost.toml"), "[alerts]\ncheck_s = 1\n").unwrap();
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", "127.0.0.1:0"]);
    put(dir, "bsoc", "K-1", r#"{"name": "before the disk died"}"#);
    sync(dir, "bsoc", &central, &[]);
    // The shop's PC is set up again from the bootstrap it was first set up with.
    ok(
        dir,
        &[
            "remote",
            "init",
            "--data",
            "bsoc2",
            "--bootstrap",
            "bsoc.boot",
        ],
    );
    put(dir, "bsoc2", "K-2", r#"{"name": "after the reinstall"}"#);
    let out = try_sync(dir, "bsoc2", &central.url, &[]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "a refused emission is a failure: {said}"
    );
    assert!(
        said.contains("reprovision --site BSOC"),
        "names the fix: {said}"
    );
    // Refused, kept in the list of refused flows, and alerted; the first store still syncs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let alerts = admin_get(dir, &central, "/v1/alerts");
        if alerts.to_string().contains("reprovision --site BSOC") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "an alert tells the person responsible: {alerts}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    put(dir, "bsoc", "K-3", r#"{"name": "the first store goes on"}"#);
    sync(dir, "bsoc", &central, &[]);
    drop(central);
    let refused = ok(dir, &["journal", "--data", "asoc", "--refused"]);
    assert!(refused.contains("BSOC"), "{refused}");
    assert!(get(dir, "asoc", "K-3").is_object());
    assert!(
        get(dir, "asoc", "K-2").is_null(),
        "nothing taken from the second store"
    );

    // The fix the error names: a fresh bootstrap numbering past everything central knows.
    let said = reprovision(dir, "BSOC", "bsoc-new.boot");
    assert!(said.contains("bsoc-new.boot"), "{said}");
    ok(
        dir,
        &[
            "remote",
            "init",
            "--data",
            "bsoc3",
            "--bootstrap",
            "bsoc-new.boot",
        ],
    );
    assert!(
        get(dir, "bsoc3", "K-3").is_object(),
        "the new store starts from central's data"
    );
    put(dir, "bsoc3", "K-4", r#"{"name": "after reprovisioning"}"#);
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", "127.0.0.1:0"]);
    sync(dir, "bsoc3", &central, &[]);
    // The superseded stores are refused from now on, the first one too.
    put(dir, "bsoc", "K-5", r#"{"name": "the old PC, still on"}"#);
    let out = try_sync(dir, "bsoc", &central.url, &[]);
    assert!(!out.status.success());
    drop(central);
    assert_eq!(get(dir, "asoc", "K-4")["name"], "after reprovisioning");
    assert!(get(dir, "asoc", "K-5").is_null());
}

//! Silent divergence and silent loss, end to end with the real program and real processes:
//! the same document number picked at two shops (R1/R5), and a shop set up again from its old
//! bootstrap (R1: no two stores emit the same dot).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::net::*;

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
    let asoc = outpost::admin::open(&dir.join("asoc")).unwrap();
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
    let csoc = outpost::admin::open(&dir.join("csoc")).unwrap();
    let told = outpost::replicator::remote::refused_by_central(&csoc).unwrap();
    assert!(
        told.iter().any(|r| r.rejection.change.key == "D1"),
        "CSOC was told: {told:?}"
    );
    drop(csoc);
    let a = get_doc(dir, "asoc", "D1");
    assert_eq!(a, b, "central holds the same record");
}

//! The replicator end to end, through sync files only (SPEC S4): three real stores on disk —
//! central ASOC, remotes BSOC and CSOC — and a directory standing for the USB stick.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::*;
use outpost::replicator::central::{self, Received};
use outpost::replicator::remote::{self, Applied};
use outpost::replicator::{Error, FlowKind, SyncMode, files, journal};
use outpost::{Outcome, Rule, Site, SiteId, Store, StoreConfig, Value};
use std::collections::BTreeSet;

#[test]
fn j3_a_deferred_cycle_leaves_the_journal_rows_and_links_the_seed_describes() {
    let d = Deployment::new();
    d.at(21, 30);
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-000001", "name", "Dupont"))
        .unwrap();
    // 22:00 BSOC emits; central receives it at 22:00 and processes it at 22:01.
    d.at(22, 0);
    let (path, emission) = files::emit_to(&d.bsoc, &d.usb(), SyncMode::Deferred).unwrap();
    assert!(matches!(
        files::receive_from(&d.asoc, &path, Some(BSOC)).unwrap(),
        Received::Ready { .. }
    ));
    d.at(22, 1);
    let processed = central::process_ready(&d.asoc).unwrap();
    assert_eq!(processed.len(), 1);
    assert_eq!(processed[0].report.count(Outcome::Applied), 2);
    let e = journal::row(&d.asoc, emission.id).unwrap().unwrap();
    assert_eq!(e.file_ready_ms, Some(hhmm(22, 0)));
    assert_eq!(
        (e.exec_start_ms, e.exec_end_ms),
        (Some(hhmm(22, 1)), Some(hhmm(22, 1)))
    );
    assert_eq!(e.executions, 1);
    assert_eq!(e.link, None, "Link 0 until a return answers it");
    // 23:00 central emits the return; 23:01 BSOC applies it.
    d.at(23, 0);
    let (ret_path, built) = files::return_to(&d.asoc, BSOC, &d.usb()).unwrap();
    assert_eq!(built.link, Some(emission.id));
    d.at(23, 1);
    assert!(matches!(
        files::apply_return_from(&d.bsoc, &ret_path).unwrap(),
        Applied::Applied { .. }
    ));
    // The remote reports the application with its next emission.
    d.at(23, 30);
    let (_, next) = d.emit_and_process(&d.bsoc, SyncMode::NoReturn);
    let e = journal::row(&d.asoc, emission.id).unwrap().unwrap();
    let r = journal::row(&d.asoc, built.id).unwrap().unwrap();
    assert_eq!(e.link, Some(built.id), "the emission's link is its return");
    assert_eq!(
        r.link,
        Some(emission.id),
        "the return's link is the emission it answers"
    );
    assert_eq!(r.kind, FlowKind::Return);
    assert_eq!(r.file_ready_ms, Some(hhmm(23, 0)));
    assert_eq!(
        (r.exec_start_ms, r.exec_end_ms),
        (Some(hhmm(23, 1)), Some(hhmm(23, 1)))
    );
    assert_eq!(r.executions, 1);
    assert!(!r.refused_by_remote);
    // The journal can be read by site and time range.
    let bsoc_rows =
        journal::rows(&d.asoc, Some(BSOC), Some(hhmm(22, 0)), Some(hhmm(23, 59))).unwrap();
    let ids: Vec<_> = bsoc_rows.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![emission.id, built.id, next], "in time order");
    assert!(
        journal::rows(&d.asoc, Some(CSOC), None, None)
            .unwrap()
            .iter()
            .all(|r| r.kind == FlowKind::Bootstrap)
    );
}

#[test]
fn j2_an_emission_whose_return_was_superseded_keeps_link_0() {
    let d = Deployment::new();
    d.at(9, 0);
    d.bsoc
        .write(|tx| tx.set("customers", "C1", "name", "a"))
        .unwrap();
    // An immediate sync whose return is never made (the connection dropped).
    let (_, first) = d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    d.at(10, 0);
    d.bsoc
        .write(|tx| tx.set("customers", "C1", "city", "b"))
        .unwrap();
    let (_, second) = d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    let (_, applied) = d.return_and_apply(&d.bsoc);
    let Applied::Applied { id: ret, .. } = applied else {
        panic!("{applied:?}")
    };
    assert_eq!(journal::row(&d.asoc, first).unwrap().unwrap().link, None);
    assert_eq!(
        journal::row(&d.asoc, second).unwrap().unwrap().link,
        Some(ret)
    );
    assert_eq!(
        journal::row(&d.asoc, ret).unwrap().unwrap().link,
        Some(second)
    );
}

#[test]
fn r6_bsoc_cannot_modify_its_document_after_emission_but_central_can_and_bsoc_receives_it() {
    let d = Deployment::new();
    d.bsoc
        .write(|tx| tx.set("sales_documents", "BSOC-000001", "status", "confirmed"))
        .unwrap();
    let (_, emission) = d.emit_and_process(&d.bsoc, SyncMode::Deferred);
    let err = d
        .bsoc
        .write(|tx| tx.set("sales_documents", "BSOC-000001", "status", "cancelled"))
        .unwrap_err();
    assert_eq!(err.refusal().unwrap().rule, Rule::R6);
    assert!(
        d.asoc
            .snapshot()
            .unwrap()
            .is_frozen("sales_documents", "BSOC-000001")
            .unwrap()
    );
    d.asoc
        .write(|tx| tx.set("sales_documents", "BSOC-000001", "status", "invoiced"))
        .unwrap();
    d.return_and_apply(&d.bsoc);
    assert_eq!(
        d.bsoc
            .record("sales_documents", "BSOC-000001")
            .unwrap()
            .unwrap()
            .get("status"),
        Some(&Value::from("invoiced"))
    );
    assert!(
        journal::row(&d.asoc, emission)
            .unwrap()
            .unwrap()
            .link
            .is_some()
    );
}

#[test]
fn r7_a_reserved_document_goes_with_the_first_emission_after_release() {
    let d = Deployment::new();
    // Two commits: a commit that wrote a reserved document is held whole.
    d.bsoc
        .write(|tx| tx.set("sales_documents", "BSOC-000001", "status", "open"))
        .unwrap();
    d.bsoc
        .write(|tx| tx.set("sales_documents", "BSOC-000002", "status", "done"))
        .unwrap();
    d.bsoc
        .reserve("sales_documents", "BSOC-000001", "till-1")
        .unwrap();
    let (path, emitted) = files::emit_to(&d.bsoc, &d.usb(), SyncMode::Deferred).unwrap();
    assert_eq!(emitted.held_back, 1);
    files::receive_from(&d.asoc, &path, Some(BSOC)).unwrap();
    central::process_ready(&d.asoc).unwrap();
    assert!(
        d.asoc
            .record("sales_documents", "BSOC-000001")
            .unwrap()
            .is_none()
    );
    assert!(
        d.asoc
            .record("sales_documents", "BSOC-000002")
            .unwrap()
            .is_some()
    );
    // The reserved one is not frozen: its user can still finish it.
    d.bsoc
        .write_as("till-1", |tx| {
            tx.set("sales_documents", "BSOC-000001", "total", dec("10.00"))
        })
        .unwrap();
    d.bsoc
        .release("sales_documents", "BSOC-000001", "till-1")
        .unwrap();
    d.emit_and_process(&d.bsoc, SyncMode::Deferred);
    let doc = d
        .asoc
        .record("sales_documents", "BSOC-000001")
        .unwrap()
        .unwrap();
    assert_eq!(doc.get("total"), Some(&dec("10.00")));
}

#[test]
fn a_forbidden_change_from_a_tampered_remote_is_refused_logged_and_undone_by_the_next_return() {
    let d = Deployment::new();
    // CSOC's document reaches BSOC through central.
    d.csoc
        .write(|tx| tx.set("sales_documents", "CSOC-000001", "status", "draft"))
        .unwrap();
    d.emit_and_process(&d.csoc, SyncMode::Deferred);
    d.return_and_apply(&d.bsoc);
    // A tampered BSOC (an old or hostile build, without the guards) commits a customer edit and,
    // in the same commit, lowers an article's price and edits CSOC's document. The engine's
    // `revert` writes registers without guards; it stands in for that build here.
    let (_, commit) = d
        .bsoc
        .write_commit(|tx| tx.set("customers", "BSOC-000009", "name", "honest"))
        .unwrap();
    let dot = commit.dot.unwrap();
    let stamp = commit.changes[0].stamp;
    d.bsoc
        .write(|tx| {
            for (table, key, field, value) in [
                ("articles", "ART-CHAIR", "price", dec("0.01")),
                (
                    "sales_documents",
                    "CSOC-000001",
                    "status",
                    Value::from("stolen"),
                ),
            ] {
                let raw = tx.raw_record(table, key)?.unwrap();
                let slot = outpost::Slot::Field(field.into());
                let current = raw.fields[field].dot;
                let forged = outpost::engine::Register { value, stamp, dot };
                assert!(tx.revert(table, key, &slot, current, Some(&forged))?);
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(
        d.bsoc
            .record("articles", "ART-CHAIR")
            .unwrap()
            .unwrap()
            .get("price"),
        Some(&dec("0.01"))
    );
    let asoc_before = d.asoc.record("articles", "ART-CHAIR").unwrap();
    let (_, emission) = d.emit_and_process(&d.bsoc, SyncMode::Deferred);
    // Refused at central with their rules, logged; the honest change applied.
    let row = journal::row(&d.asoc, emission).unwrap().unwrap();
    assert_eq!(row.n_rejections, 2);
    let log = d.asoc.rejections().unwrap();
    let rules: Vec<Rule> = log.iter().map(|r| r.refusal.rule).collect();
    assert!(
        rules.contains(&Rule::R3) && rules.contains(&Rule::R5),
        "{rules:?}"
    );
    assert_eq!(d.asoc.record("articles", "ART-CHAIR").unwrap(), asoc_before);
    assert!(d.asoc.record("customers", "BSOC-000009").unwrap().is_some());
    // The next return puts BSOC's copy back and tells it why.
    let (_, applied) = d.return_and_apply(&d.bsoc);
    let Applied::Applied { reverted, .. } = applied else {
        panic!("{applied:?}")
    };
    assert_eq!(reverted, 2);
    assert_eq!(
        d.bsoc
            .record("articles", "ART-CHAIR")
            .unwrap()
            .unwrap()
            .get("price"),
        Some(&dec("49.90"))
    );
    assert_eq!(
        d.bsoc
            .record("sales_documents", "CSOC-000001")
            .unwrap()
            .unwrap()
            .get("status"),
        Some(&Value::from("draft"))
    );
    let told = remote::refused_by_central(&d.bsoc).unwrap();
    assert_eq!(told.len(), 2);
    assert!(told.iter().any(|r| r.rejection.refusal.rule == Rule::R3));
    // BSOC and central hold the same data again.
    d.emit_and_process(&d.csoc, SyncMode::Deferred);
    d.return_and_apply(&d.csoc);
    assert_eq!(content(&d.bsoc), content(&d.asoc));
    assert_eq!(content(&d.csoc), content(&d.asoc));
}

#[test]
fn a_flow_claiming_another_site_is_refused_and_nothing_is_kept() {
    let d = Deployment::new();
    d.csoc
        .write(|tx| tx.set("customers", "CSOC-1", "name", "x"))
        .unwrap();
    let (path, _) = files::emit_to(&d.csoc, &d.usb(), SyncMode::Deferred).unwrap();
    let rows_before = journal::rows(&d.asoc, None, None, None).unwrap();
    // It arrives on BSOC's authenticated connection.
    let err = files::receive_from(&d.asoc, &path, Some(BSOC)).unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err}");
    assert!(err.to_string().contains("sent by site 02"), "{err}");
    assert_eq!(
        journal::rows(&d.asoc, None, None, None).unwrap(),
        rows_before
    );
}

#[test]
fn c6_a_return_overwrites_a_remote_admins_local_settings() {
    let d = Deployment::new();
    // A schedule this site could not run is refused, as central refuses it; nothing changes.
    for (name, bad) in [
        ("sync_types", "garbage schedule"),
        ("sync_types", "fixed 21:00"),
        ("time_zone", "Mars/Olympus"),
    ] {
        let err = remote::set_setting(&d.bsoc, name, bad).unwrap_err();
        assert!(err.to_string().contains(name), "{err}");
        assert!(
            !remote::settings(&d.bsoc).unwrap().contains_key(name)
                || remote::settings(&d.bsoc).unwrap()[name] != bad
        );
    }
    remote::set_setting(&d.bsoc, "sync_types", "fixed 20:00 23:30;immediate 60").unwrap();
    assert_eq!(remote::settings(&d.bsoc).unwrap()["emission_time"], "21:00");
    remote::set_setting(&d.bsoc, "emission_time", "19:30").unwrap();
    assert_eq!(remote::settings(&d.bsoc).unwrap()["emission_time"], "19:30");
    d.emit_and_process(&d.bsoc, SyncMode::Deferred);
    d.return_and_apply(&d.bsoc);
    assert_eq!(remote::settings(&d.bsoc).unwrap()["emission_time"], "21:00");
    // Made on central, it sticks.
    central::set_remote_settings(&d.asoc, BSOC, settings("19:30")).unwrap();
    d.emit_and_process(&d.bsoc, SyncMode::Deferred);
    d.return_and_apply(&d.bsoc);
    assert_eq!(remote::settings(&d.bsoc).unwrap()["emission_time"], "19:30");
}

#[test]
fn j1_a_stale_return_is_refused_by_the_remote_and_flagged_in_the_journal() {
    let d = Deployment::new();
    d.emit_and_process(&d.bsoc, SyncMode::Deferred);
    let (older, built_older) = files::return_to(&d.asoc, BSOC, &d.usb()).unwrap();
    d.asoc
        .write(|tx| tx.set("articles", "ART-CHAIR", "price", dec("55.00")))
        .unwrap();
    let (newer, _) = files::return_to(&d.asoc, BSOC, &d.usb()).unwrap();
    assert!(matches!(
        files::apply_return_from(&d.bsoc, &newer).unwrap(),
        Applied::Applied { .. }
    ));
    let before = content(&d.bsoc);
    let outcome = files::apply_return_from(&d.bsoc, &older).unwrap();
    assert!(
        matches!(outcome, Applied::RefusedStale { .. }),
        "{outcome:?}"
    );
    assert_eq!(content(&d.bsoc), before);
    // The same return again is recognised, not applied twice.
    assert!(matches!(
        files::apply_return_from(&d.bsoc, &newer).unwrap(),
        Applied::AlreadyApplied(_)
    ));
    d.emit_and_process(&d.bsoc, SyncMode::NoReturn);
    let row = journal::row(&d.asoc, built_older.id).unwrap().unwrap();
    assert!(row.refused_by_remote);
    assert!(row.error.unwrap().contains("older"));
    assert!(
        remote::log_rows(&d.bsoc)
            .unwrap()
            .iter()
            .any(|r| r.outcome.starts_with("refused"))
    );
}

#[test]
fn damaged_files_are_refused_with_a_clear_error_and_change_nothing() {
    let d = Deployment::new();
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-1", "name", "x"))
        .unwrap();
    let (path, _) = files::emit_to(&d.bsoc, &d.usb(), SyncMode::Deferred).unwrap();
    let good = std::fs::read(&path).unwrap();
    let rows_before = journal::rows(&d.asoc, None, None, None).unwrap();
    let central_before = content(&d.asoc);
    let truncated = d.usb().join("truncated.outpost");
    std::fs::write(&truncated, &good[..good.len() - 7]).unwrap();
    let err = files::receive_from(&d.asoc, &truncated, Some(BSOC)).unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err}");
    let flipped = d.usb().join("flipped.outpost");
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0x10;
    std::fs::write(&flipped, &bad).unwrap();
    let err = files::receive_from(&d.asoc, &flipped, Some(BSOC)).unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err}");
    assert_eq!(
        journal::rows(&d.asoc, None, None, None).unwrap(),
        rows_before
    );
    assert_eq!(content(&d.asoc), central_before);
    // The intact file goes through; twice is recognised as a duplicate.
    assert!(matches!(
        files::receive_from(&d.asoc, &path, Some(BSOC)).unwrap(),
        Received::Ready { .. }
    ));
    assert!(matches!(
        files::receive_from(&d.asoc, &path, Some(BSOC)).unwrap(),
        Received::Duplicate(_)
    ));
    assert_eq!(central::process_ready(&d.asoc).unwrap().len(), 1);
    assert!(central::process_ready(&d.asoc).unwrap().is_empty());
    // A damaged return changes nothing at the remote either.
    d.asoc
        .write(|tx| tx.set("articles", "ART-CHAIR", "price", dec("60.00")))
        .unwrap();
    let (ret, _) = files::return_to(&d.asoc, BSOC, &d.usb()).unwrap();
    let mut bytes = std::fs::read(&ret).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    std::fs::write(&ret, &bytes).unwrap();
    let remote_before = content(&d.bsoc);
    let log_before = remote::log_rows(&d.bsoc).unwrap();
    let err = files::apply_return_from(&d.bsoc, &ret).unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err}");
    assert_eq!(content(&d.bsoc), remote_before);
    assert_eq!(remote::log_rows(&d.bsoc).unwrap(), log_before);
}

#[test]
fn s4_a_missing_emission_file_is_detected_and_reported() {
    let d = Deployment::new();
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-1", "name", "x"))
        .unwrap();
    let (_lost, _) = files::emit_to(&d.bsoc, &d.usb(), SyncMode::Deferred).unwrap();
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-2", "name", "y"))
        .unwrap();
    let (path, emitted) = files::emit_to(&d.bsoc, &d.usb(), SyncMode::Deferred).unwrap();
    let Received::Ready { note, .. } = files::receive_from(&d.asoc, &path, Some(BSOC)).unwrap()
    else {
        panic!("not ready")
    };
    assert!(
        note.as_deref().unwrap_or("").contains("never received"),
        "{note:?}"
    );
    assert!(
        journal::row(&d.asoc, emitted.id)
            .unwrap()
            .unwrap()
            .error
            .is_some()
    );
    // Nothing is lost: the second emission holds everything central lacked.
    central::process_ready(&d.asoc).unwrap();
    assert!(d.asoc.record("customers", "BSOC-1").unwrap().is_some());
    assert!(d.asoc.record("customers", "BSOC-2").unwrap().is_some());
}

#[test]
fn j1_processing_cut_off_by_a_crash_is_redone_on_restart_once() {
    let d = Deployment::new();
    let dir = d.root.path().join("ASOC");
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-1", "name", "x"))
        .unwrap();
    let (path, emitted) = files::emit_to(&d.bsoc, &d.usb(), SyncMode::Deferred).unwrap();
    files::receive_from(&d.asoc, &path, Some(BSOC)).unwrap();
    // Processing starts, and the process dies before its transaction commits.
    central::begin_processing(&d.asoc, emitted.id).unwrap();
    let Deployment { asoc, clock, .. } = d;
    drop(asoc);
    let asoc = outpost::Store::open(
        &dir,
        outpost::StoreConfig::new(
            outpost::Site::central(1, "ASOC").unwrap(),
            outpost::retail::schema(),
            clock,
        ),
    )
    .unwrap();
    assert!(asoc.record("customers", "BSOC-1").unwrap().is_none());
    let redone = central::process_ready(&asoc).unwrap();
    assert_eq!(redone.len(), 1);
    let row = journal::row(&asoc, emitted.id).unwrap().unwrap();
    assert_eq!(row.executions, 2, "more than one: cut off and redone (J1)");
    assert!(row.exec_end_ms.is_some());
    assert!(asoc.record("customers", "BSOC-1").unwrap().is_some());
    assert!(
        central::process_ready(&asoc).unwrap().is_empty(),
        "not applied twice"
    );
}

#[test]
fn an_emission_central_cannot_apply_keeps_its_error_and_does_not_hold_up_the_others() {
    use outpost::replicator::flow::{FlowReader, FlowWriter, ReturnedRejection};
    use outpost::{Change, Creation, Dot, Refusal, Rejection, Slot, Stamp};
    let d = Deployment::new();
    d.at(20, 0);
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-000001", "name", "Dupont"))
        .unwrap();
    d.csoc
        .write(|tx| tx.set("customers", "CSOC-000001", "name", "Miller"))
        .unwrap();
    // BSOC's emission, rewritten to carry a rejections frame (only returns may): it is whole
    // and well formed, so it becomes file ready, but central cannot apply it.
    let (path, _) = files::emit_to(&d.bsoc, &d.usb(), SyncMode::Deferred).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let header = FlowReader::open(bytes.as_slice()).unwrap().header().clone();
    let change = Change {
        table: "customers".into(),
        key: "K".into(),
        slot: Slot::Field("name".into()),
        value: Value::Text("x".into()),
        stamp: Stamp::new(hhmm(20, 0), 0),
        dot: Dot { site: BSOC, seq: 1 },
        created: Creation {
            stamp: Stamp::new(hhmm(20, 0), 0),
            dot: Dot { site: BSOC, seq: 1 },
        },
    };
    let mut w = FlowWriter::new(Vec::new(), &header, false).unwrap();
    w.push_rejections(&[ReturnedRejection {
        rejection: Rejection {
            source: BSOC,
            change,
            refusal: Refusal {
                rule: Rule::R3,
                writer: BSOC,
                table: "customers".into(),
                key: "K".into(),
                field: None,
                reason: "crafted".into(),
            },
            at_ms: hhmm(20, 0),
        },
        central: None,
    }])
    .unwrap();
    let bad = w.finish().unwrap().0;
    let Received::Ready { id: bad_id, .. } =
        central::receive(&d.asoc, bad.as_slice(), Some(BSOC)).unwrap()
    else {
        panic!("the crafted emission was not received")
    };
    let (csoc_path, csoc_emission) = files::emit_to(&d.csoc, &d.usb(), SyncMode::Deferred).unwrap();
    files::receive_from(&d.asoc, &csoc_path, Some(CSOC)).unwrap();
    // CSOC's emission, received after, is processed all the same.
    let processed = central::process_ready(&d.asoc).unwrap();
    assert_eq!(
        processed.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![csoc_emission.id]
    );
    assert!(d.asoc.record("customers", "CSOC-000001").unwrap().is_some());
    // BSOC's keeps its error in the journal, stays pending, and changed nothing.
    let row = journal::row(&d.asoc, bad_id).unwrap().unwrap();
    assert!(row.exec_end_ms.is_none());
    assert!(
        row.error.as_deref().unwrap_or("").contains("no rejections"),
        "{row:?}"
    );
    assert_eq!(central::pending_emissions(&d.asoc).unwrap(), vec![bad_id]);
    assert!(d.asoc.record("customers", "K").unwrap().is_none());
    // The automaton goes on the same way, and says which emission it could not apply.
    let mut automaton = outpost::replicator::automaton::CentralAutomaton::new(
        &outpost::replicator::config::seed_example(),
        hhmm(20, 0),
    )
    .unwrap();
    let run = outpost::replicator::automaton::run_central(
        &d.asoc,
        &mut automaton,
        vec![outpost::replicator::automaton::Command::Sweep],
    )
    .unwrap();
    assert!(run.processed.is_empty());
    assert_eq!(run.failed.len(), 1);
    assert_eq!(run.failed[0].0, bad_id);
}

#[test]
fn r1_a_site_created_after_a_remote_s_bootstrap_reaches_it_with_its_first_return() {
    let d = Deployment::new();
    // DSOC is created after BSOC was provisioned: BSOC has never heard of it.
    central::create_remote(
        &d.asoc,
        outpost::Site::remote(4, "DSOC").unwrap(),
        std::collections::BTreeSet::new(),
        settings("21:30"),
    )
    .unwrap();
    let (boot, _) = files::bootstrap_to(&d.asoc, outpost::SiteId(4), &d.usb()).unwrap();
    let dir = d.root.path().to_path_buf();
    let clock = d.clock.clone();
    let dsoc = remote::bootstrap(
        std::io::BufReader::new(std::fs::File::open(&boot).unwrap()),
        |site| {
            outpost::Store::open(
                dir.join(site.code.as_str()),
                outpost::StoreConfig::new(site.clone(), outpost::retail::schema(), clock),
            )
        },
    )
    .unwrap();
    dsoc.write(|tx| tx.set("customers", "DSOC-000001", "name", "Durand"))
        .unwrap();
    d.emit_and_process(&dsoc, SyncMode::Deferred);
    assert!(d.bsoc.sites().get(outpost::SiteId(4)).is_none());
    // The return that first tells BSOC about DSOC also carries DSOC's customer: the site is
    // known before its changes are merged, so nothing is refused or lost.
    let (_, applied) = d.return_and_apply(&d.bsoc);
    let Applied::Applied { report, .. } = applied else {
        panic!("{applied:?}");
    };
    assert_eq!(report.refused(), 0, "{report:?}");
    assert_eq!(report.count(Outcome::Applied), 2);
    assert_eq!(
        d.bsoc
            .record("customers", "DSOC-000001")
            .unwrap()
            .unwrap()
            .fields["name"],
        Value::Text("Durand".into())
    );
}

#[test]
fn j2_an_emission_carrying_changes_central_already_had_counts_them_and_merges_only_the_rest() {
    let d = Deployment::new();
    d.at(9, 0);
    d.bsoc
        .write(|tx| {
            tx.set("customers", "C1", "name", "a")?;
            tx.set("customers", "C1", "city", "x")
        })
        .unwrap();
    // The return of this emission is never made: BSOC's next emission carries its changes again.
    let (_, first) = d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    d.at(10, 0);
    d.bsoc
        .write(|tx| tx.set("customers", "C2", "name", "b"))
        .unwrap();
    let (path, _) = files::emit_to(&d.bsoc, &d.usb(), SyncMode::Immediate).unwrap();
    let Received::Ready { id: second, .. } =
        files::receive_from(&d.asoc, &path, Some(BSOC)).unwrap()
    else {
        panic!("not received")
    };
    assert_ne!(first, second);
    let processed = central::process(&d.asoc, second).unwrap();
    let report = &processed.report;
    // C1's name, city and creation were had from the first emission; C2's are new. One
    // outcome per change, in the flow's order: C1's commit came first.
    assert_eq!(
        report.outcomes,
        [
            Outcome::AlreadyHad,
            Outcome::AlreadyHad,
            Outcome::AlreadyHad,
            Outcome::Applied,
            Outcome::Applied
        ]
    );
    let c2 = d.asoc.record("customers", "C2").unwrap().unwrap();
    assert_eq!(
        c2.fields.get("name"),
        Some(&outpost::Value::Text("b".into()))
    );
    assert_eq!(journal::row(&d.asoc, second).unwrap().unwrap().n_changes, 5);
}

/// The same document number written at BSOC and CSOC before either synced, then the syncs in
/// `order` (a remote's letter: it emits, central processes, and it applies its return), then
/// a round for each so that the last refusals travel back.
fn same_document_number_at_two_shops(order: &[char], c_fetches_first: bool) -> Deployment {
    let d = Deployment::new();
    d.at(9, 0);
    d.bsoc
        .write(|tx| {
            tx.set("sales_documents", "D1", "customer", "K1")?;
            tx.set("sales_documents", "D1", "total", dec("10.00"))?;
            tx.set("sales_documents", "D1", "status", "open")
        })
        .unwrap();
    d.at(9, 1);
    d.csoc
        .write(|tx| {
            tx.set("sales_documents", "D1", "status", "draft")?;
            tx.set("sales_documents", "D1", "date", "2026-11-25")
        })
        .unwrap();
    let sync = |s: &Store| {
        d.emit_and_process(s, SyncMode::Immediate);
        d.return_and_apply(s);
    };
    let store = |c: char| if c == 'b' { &d.bsoc } else { &d.csoc };
    for (i, c) in order.iter().enumerate() {
        d.at(10, i as u64);
        if c_fetches_first && i == 1 {
            // CSOC takes a return carrying BSOC's document before it ever emitted its own.
            d.return_and_apply(&d.csoc);
        }
        sync(store(*c));
    }
    for (i, c) in ['b', 'c', 'b', 'c'].iter().enumerate() {
        d.at(11, i as u64);
        sync(store(*c));
    }
    d
}

fn assert_converged_on(d: &Deployment, creator: outpost::SiteId, loser: &Store) {
    let a = d.asoc.record("sales_documents", "D1").unwrap().unwrap();
    assert_eq!(a.creator, creator);
    for s in [&d.bsoc, &d.csoc] {
        assert_eq!(
            s.record("sales_documents", "D1").unwrap().as_ref(),
            Some(&a),
            "{} holds central's record",
            s.site().code
        );
    }
    assert_eq!(content(&d.bsoc), content(&d.asoc));
    assert_eq!(content(&d.csoc), content(&d.asoc));
    // The losing shop's writes: in central's rejection log with R5, and reported back to it.
    let rejected: Vec<_> = d
        .asoc
        .rejections()
        .unwrap()
        .into_iter()
        .filter(|r| r.change.dot.site == loser.site().id)
        .collect();
    assert!(!rejected.is_empty());
    assert!(
        rejected.iter().all(|r| r.refusal.rule == Rule::R5),
        "{rejected:?}"
    );
    let told = remote::refused_by_central(loser).unwrap();
    for r in &rejected {
        assert!(
            told.iter().any(|t| t.rejection.change.dot == r.change.dot
                && t.rejection.change.slot == r.change.slot),
            "{} was told of {:?}",
            loser.site().code,
            r.change
        );
    }
}

#[test]
fn r1_r5_the_same_document_number_at_two_shops_converges_on_the_first_central_received() {
    let d = same_document_number_at_two_shops(&['b', 'c', 'b', 'c'], false);
    assert_converged_on(&d, BSOC, &d.csoc);
    let rec = d.csoc.record("sales_documents", "D1").unwrap().unwrap();
    assert_eq!(rec.get("customer"), Some(&Value::Text("K1".into())));
    assert_eq!(rec.get("date"), None, "CSOC's own field is taken back");
    let d = same_document_number_at_two_shops(&['c', 'b', 'c', 'b'], false);
    assert_converged_on(&d, CSOC, &d.bsoc);
}

#[test]
fn r1_r5_a_shop_receiving_another_shop_s_document_before_emitting_its_own_converges() {
    let d = same_document_number_at_two_shops(&['b', 'c'], true);
    assert_converged_on(&d, BSOC, &d.csoc);
    // Its own creation, replaced by BSOC's before it ever left, is not lost from view: refused
    // (R5) in its own rejection log, with why.
    let own: Vec<_> = d
        .csoc
        .rejections()
        .unwrap()
        .into_iter()
        .filter(|r| r.change.key == "D1" && r.change.slot == outpost::Slot::Created)
        .collect();
    assert_eq!(own.len(), 1, "{own:?}");
    assert_eq!(own[0].refusal.rule, Rule::R5);
    assert_eq!(own[0].change.dot.site, CSOC);
    assert!(own[0].refusal.reason.contains("central received first"));
    // CSOC may no longer write BSOC's document (R5), as any other shop.
    let err = d
        .csoc
        .write(|tx| tx.set("sales_documents", "D1", "status", "void"))
        .unwrap_err();
    assert!(err.to_string().contains("R5"), "{err}");
}

/// Central creates DSOC (id 4) after the deployment; its bootstrap file.
fn add_dsoc(d: &Deployment) -> std::path::PathBuf {
    central::create_remote(
        &d.asoc,
        outpost::Site::remote(4, "DSOC").unwrap(),
        std::collections::BTreeSet::new(),
        settings("21:30"),
    )
    .unwrap();
    files::bootstrap_to(&d.asoc, outpost::SiteId(4), &d.usb())
        .unwrap()
        .0
}

/// DSOC, created after the deployment, with a store the test owns (to close, copy and open).
fn dsoc_store(d: &Deployment, dir: &std::path::Path, boot: &std::path::Path) -> Store {
    let clock = d.clock.clone();
    let dir = dir.to_path_buf();
    remote::bootstrap(
        std::io::BufReader::new(std::fs::File::open(boot).unwrap()),
        move |site| {
            Store::open(
                dir,
                outpost::StoreConfig::new(site.clone(), outpost::retail::schema(), clock),
            )
        },
    )
    .unwrap()
}

fn reopen(d: &Deployment, dir: &std::path::Path) -> Store {
    Store::open(
        dir,
        outpost::StoreConfig::new(
            outpost::Site::remote(4, "DSOC").unwrap(),
            outpost::retail::schema(),
            d.clock.clone(),
        ),
    )
    .unwrap()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn emit_refused(d: &Deployment, from: &Store) -> String {
    let (path, _) = files::emit_to(from, &d.usb(), SyncMode::Deferred).unwrap();
    let err = files::receive_from(&d.asoc, &path, Some(from.site().id)).unwrap_err();
    assert!(matches!(err, Error::WrongStore(_)), "{err}");
    err.to_string()
}

#[test]
fn r1_a_remote_restored_from_an_old_backup_of_its_store_is_refused_and_central_keeps_what_it_had() {
    let d = Deployment::new();
    let boot = add_dsoc(&d);
    let live = d.root.path().join("DSOC");
    let backup = d.root.path().join("DSOC-backup");
    let dsoc = dsoc_store(&d, &live, &boot);
    dsoc.write(|tx| tx.set("customers", "D-1", "name", "before the backup"))
        .unwrap();
    d.emit_and_process(&dsoc, SyncMode::Deferred);
    drop(dsoc);
    copy_dir(&live, &backup);
    // After the backup: two more commits and emissions reach central.
    let dsoc = reopen(&d, &live);
    for (i, name) in ["after the backup", "later still"].iter().enumerate() {
        d.at(10, i as u64);
        dsoc.write(|tx| tx.set("customers", &format!("D-{}", i + 2), "name", *name))
            .unwrap();
        d.emit_and_process(&dsoc, SyncMode::Deferred);
    }
    drop(dsoc);
    // The disk dies; the shop puts back its backup and works on.
    std::fs::remove_dir_all(&live).unwrap();
    copy_dir(&backup, &live);
    let dsoc = reopen(&d, &live);
    d.at(12, 0);
    dsoc.write(|tx| tx.set("customers", "D-9", "name", "after the restore"))
        .unwrap();
    // Its emission reuses numbers central holds other content under: refused, not "already
    // held", and the refusal names the fix.
    let why = emit_refused(&d, &dsoc);
    assert!(why.contains("reprovision --site DSOC"), "{why}");
    assert!(
        central::refused_flows(&d.asoc)
            .unwrap()
            .iter()
            .any(|f| f.reason.contains("DSOC"))
    );
    assert_eq!(
        d.asoc.record("customers", "D-3").unwrap().unwrap().fields["name"],
        Value::Text("later still".into()),
        "central keeps what it had"
    );
    // A second emission of the restored store, numbered past central's newest, is refused too.
    d.at(12, 30);
    let why = emit_refused(&d, &dsoc);
    assert!(why.contains("reprovision"), "{why}");
}

#[test]
fn r1_two_stores_set_up_from_one_bootstrap_never_share_numbers_and_reprovisioning_starts_past_them()
{
    let d = Deployment::new();
    let boot = add_dsoc(&d);
    let first = dsoc_store(&d, &d.root.path().join("DSOC"), &boot);
    first
        .write(|tx| tx.set("customers", "D-1", "name", "first machine"))
        .unwrap();
    d.emit_and_process(&first, SyncMode::Deferred);
    // The same bootstrap, a second machine, a little later.
    d.at(9, 0);
    let second = dsoc_store(&d, &d.root.path().join("DSOC-2"), &boot);
    second
        .write(|tx| tx.set("customers", "D-2", "name", "second machine"))
        .unwrap();
    let why = emit_refused(&d, &second);
    assert!(why.contains("second store"), "{why}");
    assert!(why.contains("reprovision --site DSOC"), "{why}");
    assert!(d.asoc.record("customers", "D-2").unwrap().is_none());
    // The person responsible hears of it.
    let alerts =
        outpost::replicator::monitor::evaluate(&d.asoc, hhmm(9, 1), &Default::default(), None)
            .unwrap();
    assert!(
        alerts.iter().any(|a| a.text.contains("second store")),
        "{alerts:?}"
    );
    // The first machine goes on.
    first
        .write(|tx| tx.set("customers", "D-3", "name", "first machine again"))
        .unwrap();
    d.emit_and_process(&first, SyncMode::Deferred);
    assert!(d.asoc.record("customers", "D-3").unwrap().is_some());
    // Reprovisioned: a new bootstrap; both old stores are refused, the new one numbers past
    // everything central knows of DSOC and gets through.
    central::reprovision(&d.asoc, outpost::SiteId(4)).unwrap();
    let (boot2, _) = files::bootstrap_to(&d.asoc, outpost::SiteId(4), &d.usb()).unwrap();
    d.at(10, 0);
    let third = dsoc_store(&d, &d.root.path().join("DSOC-3"), &boot2);
    third
        .write(|tx| tx.set("customers", "D-4", "name", "reprovisioned"))
        .unwrap();
    let (_, commit) = third
        .write_commit(|tx| tx.set("customers", "D-5", "name", "reprovisioned too"))
        .unwrap();
    let known = d.asoc.knowledge().max_seq(outpost::SiteId(4));
    assert!(
        commit.dot.unwrap().seq > known,
        "numbered past central's {known}"
    );
    d.emit_and_process(&third, SyncMode::Deferred);
    assert!(d.asoc.record("customers", "D-5").unwrap().is_some());
    for old in [&first, &second] {
        old.write(|tx| tx.set("customers", "D-6", "name", "old machine"))
            .unwrap();
        let why = emit_refused(&d, old);
        assert!(why.contains("replaced"), "{why}");
    }
}

#[test]
fn r1_reprovisioning_while_an_emission_of_the_old_store_waits_refuses_nothing_of_the_new_one() {
    let d = Deployment::new();
    let boot = add_dsoc(&d);
    let old = dsoc_store(&d, &d.root.path().join("DSOC"), &boot);
    old.write(|tx| tx.set("customers", "D-1", "name", "old store"))
        .unwrap();
    d.emit_and_process(&old, SyncMode::Deferred);
    // Its next emission is received, not processed yet, when the site is reprovisioned.
    old.write(|tx| tx.set("customers", "D-2", "name", "old store, pending"))
        .unwrap();
    let (path, _) = files::emit_to(&old, &d.usb(), SyncMode::Deferred).unwrap();
    files::receive_from(&d.asoc, &path, Some(outpost::SiteId(4))).unwrap();
    central::reprovision(&d.asoc, outpost::SiteId(4)).unwrap();
    let (boot2, _) = files::bootstrap_to(&d.asoc, outpost::SiteId(4), &d.usb()).unwrap();
    let new = dsoc_store(&d, &d.root.path().join("DSOC-new"), &boot2);
    new.write(|tx| tx.set("customers", "D-3", "name", "new store"))
        .unwrap();
    // The new store's emission is processed first, the old one's after (central was cut off
    // while processing it, say).
    let (path, emitted) = files::emit_to(&new, &d.usb(), SyncMode::Deferred).unwrap();
    files::receive_from(&d.asoc, &path, Some(outpost::SiteId(4))).unwrap();
    central::process(&d.asoc, emitted.id).unwrap();
    central::process_ready(&d.asoc).unwrap();
    assert!(d.asoc.record("customers", "D-2").unwrap().is_some());
    assert!(d.asoc.record("customers", "D-3").unwrap().is_some());
    // The old store's last change comes back to the new one with its next return: central
    // does not take the old store's word for what the site knows.
    d.return_and_apply(&new);
    assert_eq!(
        new.record("customers", "D-2").unwrap().unwrap().fields["name"],
        Value::Text("old store, pending".into())
    );
    assert_eq!(content(&new), content(&d.asoc));
}

#[test]
fn r1_an_old_file_arriving_after_its_successor_from_a_clock_set_back_is_no_fork() {
    let d = Deployment::new();
    let boot = add_dsoc(&d);
    let dsoc = dsoc_store(&d, &d.root.path().join("DSOC"), &boot);
    dsoc.write(|tx| tx.set("customers", "D-1", "name", "one"))
        .unwrap();
    d.emit_and_process(&dsoc, SyncMode::Deferred);
    // The shop's clock runs a few minutes ahead for a while: an emission goes on the stick…
    d.at(9, 4);
    dsoc.write(|tx| tx.set("customers", "D-2", "name", "two"))
        .unwrap();
    let (late, _) = files::emit_to(&dsoc, &d.usb(), SyncMode::Deferred).unwrap();
    // …the clock is set back, the next emission is imported first, then the old file.
    d.at(9, 1);
    dsoc.write(|tx| tx.set("customers", "D-3", "name", "three"))
        .unwrap();
    d.emit_and_process(&dsoc, SyncMode::Deferred);
    files::receive_from(&d.asoc, &late, Some(outpost::SiteId(4))).unwrap();
    central::process_ready(&d.asoc).unwrap();
    // And the store goes on.
    dsoc.write(|tx| tx.set("customers", "D-4", "name", "four"))
        .unwrap();
    d.emit_and_process(&dsoc, SyncMode::Deferred);
    for k in ["D-1", "D-2", "D-3", "D-4"] {
        assert!(d.asoc.record("customers", k).unwrap().is_some(), "{k}");
    }
}

/// M1, issue 22: at the common return time, returns for many remotes are prepared together —
/// the changes above what all of them know encoded once and copied into each — and every
/// remote applying its return holds exactly central's content (its own changes in the shared
/// part counted as already had).
/// `n` remotes besides BSOC and CSOC, each created at central and set up from its bootstrap.
fn more_remotes(d: &Deployment, n: usize) -> Vec<(SiteId, Store)> {
    (0..n)
        .map(|i| {
            let id = SiteId(u16::try_from(10 + i).unwrap());
            let site = Site::remote(id.0, &format!("X{i:02}")).unwrap();
            central::create_remote(&d.asoc, site, BTreeSet::new(), settings("21:00")).unwrap();
            let (file, _) = files::bootstrap_to(&d.asoc, id, &d.usb()).unwrap();
            let store = remote::bootstrap(
                std::io::BufReader::new(std::fs::File::open(&file).unwrap()),
                |site: &Site| {
                    Store::open(
                        d.root.path().join(site.code.as_str()),
                        StoreConfig::new(site.clone(), outpost::retail::schema(), d.clock.clone()),
                    )
                },
            )
            .unwrap();
            (id, store)
        })
        .collect()
}

#[test]
fn m1_common_returns_share_their_common_part_and_every_remote_converges() {
    let d = Deployment::new();
    let n = central::SHARED_RETURNS_MIN + 2;
    let mut remotes = vec![(BSOC, &d.bsoc), (CSOC, &d.csoc)];
    let extra = more_remotes(&d, n - 2);
    remotes.extend(extra.iter().map(|(id, s)| (*id, s)));
    for (id, store) in &remotes {
        store
            .write(|tx| {
                tx.set("customers", &format!("K-{id}"), "name", "Dupont")?;
                tx.set("customers", "K-SHARED", "city", format!("city of {id}"))
            })
            .unwrap();
        d.emit_and_process(store, SyncMode::Deferred);
    }
    let ids: Vec<SiteId> = remotes.iter().map(|(id, _)| *id).collect();
    let built = central::prepare_returns(&d.asoc, &ids).unwrap();
    assert_eq!(built.len(), n);
    // One common part: every return holds the same changes, the whole fleet's day.
    assert!(built.iter().all(|b| b.n_changes == built[0].n_changes));
    assert!(built[0].n_changes >= 2 * n as u64, "{built:?}");
    for (id, store) in &remotes {
        let (_, reader) = central::fetch_return(&d.asoc, *id, 0).unwrap().unwrap();
        let applied = remote::apply_return(store, reader).unwrap();
        assert!(
            matches!(applied, remote::Applied::Applied { .. }),
            "{id}: {applied:?}"
        );
        assert_eq!(content(store), content(&d.asoc), "{id}");
    }
    // Fewer remotes than the threshold: each return holds what its remote lacks, as central
    // knows it (BSOC, which just emitted, lacks nothing; CSOC's knowledge is as of its last
    // emission).
    d.bsoc
        .write(|tx| tx.set("customers", "K-LATE", "name", "Late"))
        .unwrap();
    d.emit_and_process(&d.bsoc, SyncMode::Deferred);
    let few = central::prepare_returns(&d.asoc, &[BSOC, CSOC]).unwrap();
    assert_eq!(few[0].n_changes, 0, "BSOC lacks nothing: {few:?}");
    assert!(few[1].n_changes >= 1, "CSOC lacks K-LATE: {few:?}");
}

#[test]
fn m1_the_common_part_of_the_returns_is_stored_once_and_dropped_with_the_returns_that_read_it() {
    let d = Deployment::new();
    let n = central::SHARED_RETURNS_MIN + 2;
    let mut remotes = vec![(BSOC, &d.bsoc), (CSOC, &d.csoc)];
    let extra = more_remotes(&d, n - 2);
    remotes.extend(extra.iter().map(|(id, s)| (*id, s)));
    let ids: Vec<SiteId> = remotes.iter().map(|(id, _)| *id).collect();
    // Two days: each remote writes 20 kB that zstd cannot shrink much, emits; central makes
    // the common returns and every remote applies its own.
    let mut grown = Vec::new();
    let mut return_len = 0;
    for day in 0..2u64 {
        for (id, store) in &remotes {
            let value = noise(day * 1_000 + u64::from(id.0), 20_000);
            store
                .write(|tx| tx.set("customers", &format!("K-{id}-{day}"), "name", value))
                .unwrap();
            d.emit_and_process(store, SyncMode::Deferred);
        }
        let before = central::stored_flow_bytes(&d.asoc).unwrap();
        let built = central::prepare_returns(&d.asoc, &ids).unwrap();
        assert!(built.iter().all(|b| b.n_changes >= n as u64), "{built:?}");
        let after = central::stored_flow_bytes(&d.asoc).unwrap();
        grown.push(i128::from(after) - i128::from(before));
        assert_eq!(
            central::sync_table_problems(&d.asoc).unwrap(),
            Vec::<String>::new()
        );
        for (id, store) in &remotes {
            let (_, mut reader) = central::fetch_return(&d.asoc, *id, 0).unwrap().unwrap();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut bytes).unwrap();
            return_len = bytes.len();
            let applied = remote::apply_return(store, bytes.as_slice()).unwrap();
            assert!(
                matches!(applied, Applied::Applied { .. }),
                "{id}: {applied:?}"
            );
            assert_eq!(content(store), content(&d.asoc), "{id}");
        }
    }
    let one = i128::try_from(return_len).unwrap();
    assert!(
        one > 80_000,
        "each return holds the fleet's day: {one} bytes"
    );
    // The first day: one copy of the common part, not one per remote (n × {one}).
    assert!(
        grown[0] < 2 * one,
        "the sync table grew by {} bytes for {n} returns of {one} bytes",
        grown[0]
    );
    // The second day's returns supersede the first's: the first common part goes with them.
    assert!(
        grown[1].abs() < one / 2,
        "the sync table grew by {} bytes on the second day",
        grown[1]
    );
}

/// Text zstd cannot shrink much: `n` bytes of hexadecimal from a fixed sequence.
fn noise(seed: u64, n: usize) -> String {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut out = String::with_capacity(n);
    while out.len() < n {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        out.push_str(&format!("{:016x}", x));
    }
    out.truncate(n);
    out
}

#[test]
fn t1_t3_flows_longer_than_a_chunk_are_stored_checked_and_served_whole() {
    let d = Deployment::new();
    // About 3 MB of text that compresses to well over one 1 MiB chunk.
    d.bsoc
        .write(|tx| {
            for i in 0..3_000u64 {
                tx.set(
                    "customers",
                    &format!("BSOC-{i:05}"),
                    "name",
                    noise(i, 1_000),
                )?;
            }
            Ok(())
        })
        .unwrap();
    let (path, _) = files::emit_to(&d.bsoc, &d.usb(), SyncMode::Deferred).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert!(
        bytes.len() > 1 << 20,
        "{} bytes: not over a chunk",
        bytes.len()
    );
    // Cut short past its first chunk: refused, listed, nothing else kept.
    let rows_before = journal::rows(&d.asoc, None, None, None).unwrap();
    let refused_before = central::refused_flows(&d.asoc).unwrap().len();
    let cut = d.usb().join("cut.outpost");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let err = files::receive_from(&d.asoc, &cut, Some(BSOC)).unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err}");
    assert_eq!(
        journal::rows(&d.asoc, None, None, None).unwrap(),
        rows_before
    );
    assert_eq!(
        central::refused_flows(&d.asoc).unwrap().len(),
        refused_before + 1
    );
    // Whole: file ready, processed; CSOC's return, kept in the sync table, carries it all.
    assert!(matches!(
        files::receive_from(&d.asoc, &path, Some(BSOC)).unwrap(),
        Received::Ready { .. }
    ));
    assert_eq!(central::process_ready(&d.asoc).unwrap().len(), 1);
    let built = central::prepare_return(&d.asoc, CSOC).unwrap();
    assert!(built.bytes > 1 << 20, "a return of {} bytes", built.bytes);
    let (id, reader) = central::fetch_return(&d.asoc, CSOC, 0).unwrap().unwrap();
    assert_eq!(id, built.id);
    remote::apply_return(&d.csoc, reader).unwrap();
    let customers = |s: &Store| s.snapshot().unwrap().scan("customers", None, None).unwrap();
    let at_csoc = customers(&d.csoc);
    assert_eq!(at_csoc.len(), 3_000);
    assert_eq!(at_csoc, customers(&d.bsoc));
    // A small return after it is kept too, and supersedes it.
    d.asoc
        .write(|tx| tx.set("articles", "ART-CHAIR", "price", dec("51.00")))
        .unwrap();
    let small = central::prepare_return(&d.asoc, CSOC).unwrap();
    let (id, reader) = central::fetch_return(&d.asoc, CSOC, built.id.seq)
        .unwrap()
        .unwrap();
    assert_eq!(id, small.id);
    remote::apply_return(&d.csoc, reader).unwrap();
    assert_eq!(name(&d.csoc, "BSOC-00001"), name(&d.bsoc, "BSOC-00001"));
    assert_eq!(content(&d.csoc), content(&d.asoc));
}

/// An output that, at its first write, runs `meanwhile` — another thread's work done while a
/// flow is being written.
struct Slow<F: FnMut()> {
    meanwhile: Option<F>,
}

impl<F: FnMut()> Slow<F> {
    fn new(meanwhile: F) -> Self {
        Slow {
            meanwhile: Some(meanwhile),
        }
    }
}

impl<F: FnMut()> std::io::Write for Slow<F> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(mut f) = self.meanwhile.take() {
            f();
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A host program building returns on several threads at once (here: within one build's
/// output, as a slow writer lets another thread in). A return takes its number when its build
/// starts and records it when it ends: recorded after two others made meanwhile, it gave its
/// number twice (BSOC's and CSOC's returns alike, their journal rows one) and put central's
/// counter back, and the next return took a number CSOC had applied — skipped by it as already
/// applied, silently, with central's new write in it. The late one is now refused, nothing of
/// it kept, and built again.
#[test]
fn a2_a_return_built_while_others_are_made_never_reuses_or_puts_back_a_number() {
    let d = Deployment::new();
    d.at(9, 0);
    let made = std::cell::RefCell::new(Vec::new());
    let slow = Slow::new(|| {
        for _ in 0..2 {
            let (_, applied) = d.return_and_apply(&d.csoc);
            let Applied::Applied { id, .. } = applied else {
                panic!("{applied:?}")
            };
            made.borrow_mut().push(id);
        }
    });
    let late = central::build_return(&d.asoc, BSOC, slow, false).map(|(_, built)| built);
    let made = made.into_inner();
    assert_eq!(made.len(), 2);
    let Err(Error::NumberTaken(n)) = late else {
        panic!("{late:?}, CSOC's returns {made:?}")
    };
    assert_eq!(n, made[0].seq, "the late one had taken CSOC's first number");
    let row = journal::row(&d.asoc, made[0]).unwrap().unwrap();
    assert_eq!(row.site, CSOC, "the number stays CSOC's alone");
    d.at(10, 0);
    d.asoc
        .write(|tx| tx.set("customers", "ASOC-000001", "name", "written at central"))
        .unwrap();
    for shop in [&d.csoc, &d.bsoc] {
        let (_, applied) = d.return_and_apply(shop);
        let Applied::Applied { id, .. } = applied else {
            panic!("{applied:?}")
        };
        assert!(id.seq > made[1].seq, "{id:?}");
        assert_eq!(
            name(shop, "ASOC-000001"),
            Some(Value::from("written at central"))
        );
    }
}

/// The same at a shop: an emission takes its number when it starts and records it when it
/// ends. Two made at once by a host program (here: one made while another is written) took
/// one number; central took the first and counted the second a duplicate, so the second's
/// reports (the returns the shop applied) were dropped at the shop as sent, never to reach
/// central. The late one is now refused, nothing of it kept.
#[test]
fn j1_an_emission_made_while_another_is_made_never_takes_its_number() {
    let d = Deployment::new();
    d.at(9, 0);
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-000001", "name", "Dupont"))
        .unwrap();
    let made = std::cell::RefCell::new(Vec::new());
    let slow = Slow::new(|| {
        let (_, emitted) = d.emit_and_process(&d.bsoc, SyncMode::Immediate);
        made.borrow_mut().push(emitted);
    });
    let late = remote::emit(&d.bsoc, slow, SyncMode::Immediate, false).map(|(_, e)| e.id);
    let made = made.into_inner();
    assert_eq!(made.len(), 1);
    let Err(Error::NumberTaken(n)) = late else {
        panic!("{late:?}, the other {made:?}")
    };
    assert_eq!(n, made[0].seq);
    // The next emission takes the next number and central takes it.
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-000002", "name", "Durand"))
        .unwrap();
    let (_, next) = d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    assert_eq!(next.seq, made[0].seq + 1);
    assert!(name(&d.asoc, "BSOC-000002").is_some());
}

/// J1 with a stick pulled out or full: an emission is recorded in the store (its number taken,
/// the reports of returns applied it carries dropped as sent) only once its bytes are pushed
/// out to the file — a write failing there (no space left) records nothing, and the reports go
/// with the next emission. (A review feared otherwise; this checks it.)
#[test]
fn j1_an_emission_whose_bytes_cannot_be_written_out_keeps_its_reports() {
    struct FailsAtFlush(Vec<u8>);
    impl std::io::Write for FailsAtFlush {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::Error::other("no space left on the stick"))
        }
    }
    let d = Deployment::new();
    d.at(9, 0);
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-000001", "name", "Dupont"))
        .unwrap();
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    d.return_and_apply(&d.bsoc);
    let acks = remote::unreported_acks(&d.bsoc).unwrap();
    assert_eq!(acks.len(), 1);
    let failed = remote::emit(
        &d.bsoc,
        FailsAtFlush(Vec::new()),
        SyncMode::Immediate,
        false,
    );
    assert!(failed.is_err());
    assert_eq!(remote::unreported_acks(&d.bsoc).unwrap(), acks);
    let (_, next) = d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    assert_eq!(next.seq, 2, "the failed one took no number");
}

/// S4: two threads of a host program write emission files of the same shop into the same
/// directory at once. Both wrote under one temporary name: one renamed the other's file away
/// (possibly half-written) and the other failed with "No such file or directory" — its
/// emission recorded as made, its file never written (central then reports it missing). Each
/// writer now has a temporary name of its own, and an attempt refused (a number the other
/// thread took meanwhile, `NumberTaken`: tried again) leaves no temporary file behind.
#[test]
fn s4_two_emission_files_written_at_once_into_one_directory_are_both_whole() {
    let d = Deployment::new();
    d.bsoc
        .write(|tx| {
            for n in 0..2_000 {
                tx.set(
                    "customers",
                    &format!("BSOC-{n:06}"),
                    "name",
                    format!("a customer of the shop, number {n}").as_str(),
                )?;
            }
            Ok(())
        })
        .unwrap();
    let usb = d.usb();
    let mut written = Vec::new();
    for _ in 0..10 {
        // A number taken meanwhile by the other thread is refused: the host program tries again.
        let emit = || loop {
            match files::emit_to(&d.bsoc, &usb, SyncMode::NoReturn) {
                Err(Error::NumberTaken(_)) => continue,
                other => break other.map(|(path, _)| path),
            }
        };
        let paths: Vec<std::path::PathBuf> = std::thread::scope(|s| {
            let a = s.spawn(emit);
            let b = s.spawn(emit);
            [a.join().unwrap(), b.join().unwrap()]
                .into_iter()
                .collect::<Result<_, _>>()
                .unwrap()
        });
        written.extend(paths);
    }
    // Nothing else is left in the directory: no temporary file of a refused attempt.
    let mut in_dir: Vec<_> = std::fs::read_dir(&usb)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("emission")
        })
        .collect();
    in_dir.sort();
    let mut expected = written.clone();
    expected.sort();
    assert_eq!(in_dir, expected);
    for path in &written {
        let received = files::receive_from(&d.asoc, path, Some(BSOC));
        assert!(
            matches!(received, Ok(Received::Ready { .. })),
            "{}: {received:?}",
            path.display()
        );
    }
}

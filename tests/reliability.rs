//! Reliability (issue 8), at the library's level: clock-skew quarantine, and flow files that
//! are wrong or hostile — each gets a clear error, an entry, and changes nothing. The restore of
//! central from a backup, which goes through the command line's backup and restore, is in
//! `cli/tests/process/reliability.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{Deployment, content, hhmm, name};
use outpost::replicator::{SyncMode, central, journal, remote};
use outpost::{ManualClock, Value};

const DAY_MS: u64 = 86_400_000;

fn skewed_day(skew_ms_max: u64) -> (Deployment, ManualClock, outpost::replicator::FlowId) {
    let clock = ManualClock::new(hhmm(8, 0));
    let bsoc_clock = ManualClock::new(hhmm(8, 0) + 3 * DAY_MS);
    let d = Deployment::with_clocks(clock, bsoc_clock.clone(), skew_ms_max);
    d.csoc
        .write(|tx| tx.set("customers", "CSOC-1", "name", "as created"))
        .unwrap();
    d.emit_and_process(&d.csoc, SyncMode::Deferred);
    d.return_and_apply(&d.csoc);
    d.return_and_apply(&d.bsoc);
    assert_eq!(name(&d.bsoc, "CSOC-1"), Some(Value::from("as created")));

    d.at(9, 0);
    bsoc_clock.set(hhmm(9, 0) + 3 * DAY_MS);
    d.bsoc
        .write(|tx| {
            tx.set("customers", "CSOC-1", "name", "edited at BSOC")?;
            tx.set("customers", "BSOC-1", "name", "new at BSOC")
        })
        .unwrap();
    d.at(9, 5);
    bsoc_clock.set(hhmm(9, 5) + 3 * DAY_MS);
    d.csoc
        .write(|tx| tx.set("customers", "CSOC-1", "name", "edited at CSOC, later"))
        .unwrap();
    d.at(9, 10);
    bsoc_clock.set(hhmm(9, 10) + 3 * DAY_MS);
    let (_, held) = d.emit_and_process(&d.bsoc, SyncMode::Deferred);
    d.emit_and_process(&d.csoc, SyncMode::Deferred);
    (d, bsoc_clock, held)
}

#[test]
fn skew_without_the_bound_a_site_3_days_ahead_silently_wins_every_conflict() {
    let (d, _, emission) = skewed_day(u64::MAX);
    // CSOC's edit came five minutes later, yet BSOC's wins at central, and nothing says why.
    assert_eq!(name(&d.asoc, "CSOC-1"), Some(Value::from("edited at BSOC")));
    let row = journal::row(&d.asoc, emission).unwrap().unwrap();
    assert_eq!(row.error, None);
    assert_eq!(row.executions, 1);
    // And central's clock was dragged three days ahead: its own next writes carry that too.
    assert!(d.asoc.clock_high_water().physical_ms() > hhmm(9, 0) + 2 * DAY_MS);
}

#[test]
fn skew_a_site_3_days_ahead_is_quarantined_then_goes_through_once_its_clock_is_set_right() {
    let (d, bsoc_clock, held) = skewed_day(outpost::engine::SKEW_MS_MAX_DEFAULT);
    // Held: nothing of BSOC's emission applied, the row says why, it is no execution, it stays
    // pending; central's clock was not dragged ahead.
    let row = journal::row(&d.asoc, held).unwrap().unwrap();
    let error = row.error.clone().unwrap();
    assert!(
        error.starts_with("quarantined: BSOC's changes are stamped 3.0 d ahead of central's clock"),
        "{error}"
    );
    assert!(error.contains("outpost remote restamp"), "{error}");
    assert_eq!((row.executions, row.exec_start_ms), (0, None));
    assert!(central::pending_emissions(&d.asoc).unwrap().contains(&held));
    assert_eq!(
        name(&d.asoc, "CSOC-1"),
        Some(Value::from("edited at CSOC, later"))
    );
    assert_eq!(name(&d.asoc, "BSOC-1"), None);
    assert!(d.asoc.clock_high_water().physical_ms() < hhmm(10, 0));
    // Nothing else harmed: CSOC's emission went through and its return carries no BSOC stamp.
    let csoc_rows = journal::rows(&d.asoc, Some(crate::common::CSOC), None, None).unwrap();
    assert!(csoc_rows.iter().all(|r| r.error.is_none()), "{csoc_rows:?}");
    d.return_and_apply(&d.csoc);
    assert!(d.csoc.clock_high_water().physical_ms() < hhmm(10, 0));
    // Cycles later, even once time has caught up with its stamps, it is still held and still
    // no execution: BSOC may restamp meanwhile, and the old stamps must then never apply.
    d.at(9, 30);
    central::process_ready(&d.asoc).unwrap();
    d.clock.set(hhmm(9, 30) + 4 * DAY_MS);
    central::process_ready(&d.asoc).unwrap();
    let row = journal::row(&d.asoc, held).unwrap().unwrap();
    assert_eq!(row.executions, 0);
    assert!(row.error.unwrap().starts_with("quarantined"));

    // Still ahead, BSOC writes a customer, deletes it, writes it again.
    bsoc_clock.set(hhmm(9, 35) + 3 * DAY_MS);
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-2", "name", "first"))
        .unwrap();
    d.bsoc.write(|tx| tx.delete("customers", "BSOC-2")).unwrap();
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-2", "name", "again"))
        .unwrap();
    // BSOC's clock is set right; its unacknowledged writes are stamped again from it, in
    // their order.
    d.at(9, 40);
    bsoc_clock.set(hhmm(9, 40));
    assert_eq!(
        remote::restamp(&d.bsoc).unwrap(),
        6,
        "CSOC-1 name, BSOC-1 creation and name, BSOC-2 creation, tombstone and name"
    );
    assert_eq!(name(&d.bsoc, "BSOC-2"), Some(Value::from("again")));
    assert!(d.bsoc.clock_high_water().physical_ms() <= hhmm(9, 40));
    d.bsoc.check_invariants().unwrap();
    assert_eq!(
        remote::restamp(&d.bsoc).unwrap(),
        0,
        "a second run finds nothing"
    );
    // Its work goes through, with the time it was (re)stamped at: the latest edit now.
    let (_, next) = d.emit_and_process(&d.bsoc, SyncMode::Deferred);
    assert_eq!(journal::row(&d.asoc, next).unwrap().unwrap().error, None);
    assert_eq!(name(&d.asoc, "BSOC-1"), Some(Value::from("new at BSOC")));
    assert_eq!(name(&d.asoc, "BSOC-2"), Some(Value::from("again")));
    assert_eq!(name(&d.asoc, "CSOC-1"), Some(Value::from("edited at BSOC")));
    // The held emission was superseded by it, never applied, and is no longer pending.
    let row = journal::row(&d.asoc, held).unwrap().unwrap();
    assert_eq!(row.executions, 0);
    let error = row.error.unwrap();
    assert!(
        error.starts_with(&format!("superseded by emission {next}")),
        "{error}"
    );
    assert!(central::pending_emissions(&d.asoc).unwrap().is_empty());
    // Everyone converges, and no clock is ahead.
    d.return_and_apply(&d.bsoc);
    d.return_and_apply(&d.csoc);
    assert_eq!(content(&d.bsoc), content(&d.asoc));
    assert_eq!(content(&d.csoc), content(&d.asoc));
    for s in [&d.asoc, &d.bsoc, &d.csoc] {
        s.check_invariants().unwrap();
        assert!(s.clock_high_water().physical_ms() < hhmm(10, 0));
    }
}

/// The same flow with its header changed (its changes and rejections as they were).
fn rewrite(bytes: &[u8], change: impl FnOnce(&mut outpost::replicator::FlowHeader)) -> Vec<u8> {
    use outpost::replicator::{FlowReader, FlowWriter, Item};
    let mut reader = FlowReader::open(bytes).unwrap();
    let mut header = reader.header().clone();
    change(&mut header);
    let mut writer = FlowWriter::new(Vec::new(), &header, true).unwrap();
    while let Some(item) = reader.next_item().unwrap() {
        match item {
            Item::Changes(cs) => cs.into_iter().for_each(|c| writer.push_change(c).unwrap()),
            Item::Rejections(rs) => writer.push_rejections(&rs).unwrap(),
        }
    }
    writer.finish().unwrap().0
}

/// A flow whose compressed body is a few hundred bytes and claims a frame of 4 GiB, then
/// gigabytes of zeros: a decompression bomb.
fn bomb(valid: &[u8]) -> Vec<u8> {
    let header_len = u32::from_le_bytes(valid[12..16].try_into().unwrap()) as usize;
    let mut out = valid[..16 + header_len + 4].to_vec();
    out[10] |= 1; // flags: zstd body
    let mut body = vec![3u8];
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    body.extend(std::iter::repeat_n(0u8, 64 << 20));
    out.extend(zstd::encode_all(body.as_slice(), 19).unwrap());
    out
}

#[test]
fn hostile_flow_files_are_refused_with_a_clear_error_an_entry_and_no_change() {
    use outpost::replicator::{Error, FlowKind, files};
    let d = Deployment::new();
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-1", "name", "x"))
        .unwrap();
    let (old, _) = d.emit_and_process(&d.bsoc, SyncMode::Deferred);
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-2", "name", "y"))
        .unwrap();
    let (path, _) = files::emit_to(&d.bsoc, &d.usb(), SyncMode::Deferred).unwrap();
    let good = std::fs::read(&path).unwrap();
    // Another deployment, made a minute later: same codes, same schema, another central.
    let other = Deployment::with_clocks(
        ManualClock::new(hhmm(8, 1)),
        ManualClock::new(hhmm(8, 1)),
        outpost::engine::SKEW_MS_MAX_DEFAULT,
    );
    other
        .bsoc
        .write(|tx| tx.set("customers", "BSOC-1", "name", "from elsewhere"))
        .unwrap();
    let (foreign, _) = files::emit_to(&other.bsoc, &other.usb(), SyncMode::Deferred).unwrap();

    let before = (
        content(&d.asoc),
        journal::rows(&d.asoc, None, None, None).unwrap(),
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("decompression bomb", bomb(&good), "frame"),
        (
            "wrong schema",
            rewrite(&good, |h| h.schema_fingerprint ^= 1),
            "schema",
        ),
        (
            "wrong target",
            rewrite(&good, |h| h.target = crate::common::CSOC),
            "addressed to site",
        ),
        (
            "a return sent to central",
            rewrite(&good, |h| h.kind = FlowKind::Return),
            "is a return, not an emission",
        ),
        (
            "another deployment",
            std::fs::read(&foreign).unwrap(),
            "another deployment",
        ),
    ];
    for (i, (what, bytes, wanted)) in cases.iter().enumerate() {
        let file = d.usb().join(format!("hostile-{i}.outpost"));
        std::fs::write(&file, bytes).unwrap();
        let err = files::receive_from(&d.asoc, &file, Some(crate::common::BSOC)).unwrap_err();
        assert!(err.to_string().contains(wanted), "{what}: {err}");
        assert!(err.is_the_flows(), "{what}: {err}");
        let logged = central::refused_flows(&d.asoc).unwrap();
        assert_eq!(logged.len(), i + 1, "{what}: one entry per refused flow");
        assert!(logged[i].reason.contains(wanted), "{what}: {:?}", logged[i]);
        central::process_ready(&d.asoc).unwrap();
        assert_eq!(
            (
                content(&d.asoc),
                journal::rows(&d.asoc, None, None, None).unwrap()
            ),
            before,
            "{what} changed central"
        );
    }
    // A replay of an old emission: recognised, nothing applied again.
    assert!(matches!(
        files::receive_from(&d.asoc, &old, Some(crate::common::BSOC)).unwrap(),
        central::Received::Duplicate(_)
    ));
    assert_eq!(content(&d.asoc), before.0);

    // At the remote: a return meant for CSOC, a return of another deployment.
    let (for_csoc, _) = files::return_to(&d.asoc, crate::common::CSOC, &d.usb()).unwrap();
    let (elsewhere, _) = files::return_to(&other.asoc, crate::common::BSOC, &other.usb()).unwrap();
    let remote_before = (content(&d.bsoc), remote::log_rows(&d.bsoc).unwrap());
    for (what, file, wanted) in [
        ("CSOC's return", for_csoc, "addressed to site"),
        (
            "another deployment's return",
            elsewhere,
            "another deployment",
        ),
    ] {
        let err = files::apply_return_from(&d.bsoc, &file).unwrap_err();
        assert!(matches!(err, Error::Refused(_)), "{what}: {err}");
        assert!(err.to_string().contains(wanted), "{what}: {err}");
        assert_eq!(
            (content(&d.bsoc), remote::log_rows(&d.bsoc).unwrap()),
            remote_before,
            "{what} changed BSOC"
        );
    }
    // The genuine file still goes through.
    assert!(matches!(
        files::receive_from(&d.asoc, &path, Some(crate::common::BSOC)).unwrap(),
        central::Received::Ready { .. }
    ));
    assert_eq!(central::process_ready(&d.asoc).unwrap().len(), 1);
    assert_eq!(name(&d.asoc, "BSOC-2"), Some(Value::from("y")));
}

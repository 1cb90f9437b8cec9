//! Reliability (issue 8), at the library's level: clock-skew quarantine, and flow files that
//! are wrong or hostile — each gets a clear error, an entry, and changes nothing. The restore of
//! central from a backup, which goes through the command line's backup and restore, is in
//! `cli/tests/process/reliability.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{Deployment, content, dec, hhmm, name};
use outpost::replicator::{SyncMode, central, files, journal, monitor, remote};
use outpost::{Clock, ManualClock, Value};

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

// ---------------------------------------------------------------------------------------------
// Central restored from a backup (OPERATIONS.md "Restore"), at the library's level: the
// simulator's `central_restored_from_old_backup` found both of these.

/// The deployment with BSOC on a clock of its own, both clocks right at 8:00 (central's, which
/// CSOC shares, is `d.clock`), and the default skew bound.
fn bsoc_on_a_clock_of_its_own() -> (Deployment, ManualClock) {
    let bsoc_clock = ManualClock::new(hhmm(8, 0));
    let d = Deployment::with_clocks(
        ManualClock::new(hhmm(8, 0)),
        bsoc_clock.clone(),
        outpost::engine::SKEW_MS_MAX_DEFAULT,
    );
    (d, bsoc_clock)
}

/// Central's store configuration in the deployment.
fn central_config(d: &Deployment) -> outpost::StoreConfig {
    outpost::StoreConfig::new(
        outpost::Site::central(1, "ASOC").unwrap(),
        outpost::retail::schema(),
        d.clock.clone(),
    )
}

/// Central adds remote `code` (id `id`) and it is set up from its bootstrap (a store in memory).
fn add_remote(d: &Deployment, id: u16, code: &str) -> outpost::Store {
    create_remote(d, id, code);
    set_up_from_bootstrap(d, outpost::SiteId(id))
}

/// Central adds remote `code` (id `id`): `outpost central add-remote`.
fn create_remote(d: &Deployment, id: u16, code: &str) {
    central::create_remote(
        &d.asoc,
        outpost::Site::remote(id, code).unwrap(),
        std::collections::BTreeSet::new(),
        common::settings("21:30"),
    )
    .unwrap();
}

/// A store in memory set up from the bootstrap central writes now for `site`.
fn set_up_from_bootstrap(d: &Deployment, site: outpost::SiteId) -> outpost::Store {
    let (boot, _) = central::write_bootstrap(&d.asoc, site, Vec::new(), false).unwrap();
    set_up_from(d, &boot, None)
}

/// A store in memory set up from `boot` (a bootstrap central wrote), with store identity `id`
/// (none: drawn from the bootstrap and the time).
fn set_up_from(d: &Deployment, boot: &[u8], id: Option<u64>) -> outpost::Store {
    set_up_on(d.clock.clone(), boot, id)
}

/// A store in memory set up from bootstrap `boot`, on `clock`.
fn set_up_on(clock: ManualClock, boot: &[u8], id: Option<u64>) -> outpost::Store {
    remote::bootstrap_as(
        boot,
        |s| {
            outpost::Store::in_memory(outpost::StoreConfig::new(
                s.clone(),
                outpost::retail::schema(),
                clock,
            ))
        },
        id,
    )
    .unwrap()
}

/// `store` writes customer `key` named `who` and syncs; `relay` then applies a return, and holds
/// it.
fn customer_reaches(
    d: &Deployment,
    store: &outpost::Store,
    key: &str,
    who: &str,
    relay: &outpost::Store,
) {
    store
        .write(|tx| tx.set("customers", key, "name", who))
        .unwrap();
    d.emit_and_process(store, SyncMode::Immediate);
    d.return_and_apply(store);
    d.return_and_apply(relay);
    assert_eq!(name(relay, key), Some(Value::from(who)));
}

/// The deployment's sync configuration (BSOC, CSOC and DSOC), which `remove-remote` edits.
fn set_deployment_config(d: &Deployment) {
    let mut config = outpost::replicator::config::seed_example();
    let mut dsoc_settings = config.remotes[0].clone();
    dsoc_settings.id = outpost::SiteId(4);
    dsoc_settings.code = "DSOC".into();
    config.remotes.push(dsoc_settings);
    central::set_config(&d.asoc, &config).unwrap();
}

/// Central's disk is lost and `backup` put in its place (`outpost central restore`).
fn restore_central(d: &mut Deployment, backup: outpost::Store) {
    d.asoc = backup;
    central::after_restore(&d.asoc).unwrap();
}

/// The person responsible removes remote `code` at central (`outpost central remove-remote`).
fn remove(d: &Deployment, code: &str, removal: central::Removal) {
    central::remove_remote(&d.asoc, code, d.clock.now_ms(), removal).unwrap();
}

/// A deployment with DSOC (in its sync configuration), every remote synced once, then central's
/// backup. Gives the deployment, DSOC and the backup.
fn dsoc_synced_then_a_backup() -> (Deployment, outpost::Store, outpost::Store) {
    let d = Deployment::new();
    let dsoc = add_remote(&d, 4, "DSOC");
    set_deployment_config(&d);
    sync_all(&d, &[&d.bsoc, &d.csoc, &dsoc], 1);
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    (d, dsoc, backup)
}

/// A deployment with DSOC, central's backup, then DSOC's last customer, written at 10:00, synced
/// (central holds it, the backup does not).
fn dsoc_s_day_after_a_backup() -> (Deployment, outpost::Store, outpost::Store) {
    let (d, dsoc, backup) = dsoc_synced_then_a_backup();
    d.at(10, 0);
    dsoc.write(|tx| tx.set("customers", "DSOC-LAST", "name", "DSOC's last customer"))
        .unwrap();
    d.emit_and_process(&dsoc, SyncMode::Immediate);
    d.return_and_apply(&dsoc);
    (d, dsoc, backup)
}

/// Every remote of `remotes` syncs (emits, then applies its return), `rounds` times.
fn sync_all(d: &Deployment, remotes: &[&outpost::Store], rounds: usize) {
    for _ in 0..rounds {
        for r in remotes {
            d.emit_and_process(r, SyncMode::Immediate);
            d.return_and_apply(r);
        }
    }
}

/// The site that created D1, as `store` holds it.
fn creator_of_d1(store: &outpost::Store) -> outpost::SiteId {
    store
        .record("sales_documents", "D1")
        .unwrap()
        .unwrap()
        .creator
}

/// `store` numbers a sales document D1 (customer and status in one commit).
fn number_d1(store: &outpost::Store, customer: &str, status: &str) {
    store
        .write(|tx| {
            tx.set("sales_documents", "D1", "customer", customer)?;
            tx.set("sales_documents", "D1", "status", status)
        })
        .unwrap();
}

/// Central restored at 9:00 from the backup taken after every shop's first sync, then every
/// shop synced twice. Gives the deployment and a copy of that backup.
fn central_restored_once() -> (Deployment, outpost::Store) {
    let mut d = Deployment::new();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    let old = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    let old_again = old.copy_in_memory(central_config(&d)).unwrap();
    d.at(9, 0);
    restore_central(&mut d, old);
    sync_all(&d, &[&d.bsoc, &d.csoc], 2);
    (d, old_again)
}

/// At `hour`:00 central is restored from `backup` and writes customer `key` (a key it chose),
/// then every shop syncs `rounds` times: each holds it, and holds what central holds.
fn restored_writes_and_syncs(
    d: &mut Deployment,
    hour: u64,
    backup: outpost::Store,
    key: &str,
    rounds: usize,
) {
    d.at(hour, 0);
    restore_central(d, backup);
    d.asoc
        .write(|tx| tx.set("customers", key, "name", "written after a restore"))
        .unwrap();
    sync_all(d, &[&d.bsoc, &d.csoc], rounds);
    for shop in [&d.bsoc, &d.csoc] {
        let code = &shop.site().code;
        assert_eq!(name(shop, key), name(&d.asoc, key), "{key} at {code}");
        assert!(name(shop, key).is_some(), "{key} at {code}");
        assert_eq!(content(shop), content(&d.asoc), "{code}");
    }
}

#[test]
fn r1_j1_the_same_backup_restored_twice_numbers_the_second_central_s_returns_and_commits_past_the_first_s()
 {
    // Central is restored once (its numbers jump past the time), then backed up: that backup's
    // numbers are already past the time.
    let (mut d, _) = central_restored_once();
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    let again = backup.copy_in_memory(central_config(&d)).unwrap();
    // That backup is restored, central writes a customer, every shop applies its returns.
    restored_writes_and_syncs(&mut d, 10, backup, "ASOC-FIRST", 2);
    // The same backup is restored again an hour later: its returns and its commits must be
    // numbered past the first restored central's, which the shops applied and hold.
    restored_writes_and_syncs(&mut d, 11, again, "ASOC-SECOND", 2);
}

#[test]
fn r1_j1_an_older_backup_restored_after_a_newer_one_numbers_past_the_central_restored_from_the_newer()
 {
    // The restored central is backed up in turn: a newer backup.
    let (mut d, older) = central_restored_once();
    let newer = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    restored_writes_and_syncs(&mut d, 10, newer, "ASOC-NEWER", 2);
    // That central is lost too and the older backup put back: its returns and commits must be
    // numbered past the newer one's, and what that central wrote comes back from the shops.
    restored_writes_and_syncs(&mut d, 11, older, "ASOC-OLDER", 3);
    assert!(name(&d.asoc, "ASOC-NEWER").is_some());
}

/// A snapshot of central's store; then, at 10:00, central writes ASOC-LOST and BSOC and CSOC
/// sync it: what a central put back from the snapshot lost.
fn snapshot_then_a_write_the_shops_take(d: &Deployment) -> outpost::Store {
    let snapshot = d.asoc.copy_in_memory(central_config(d)).unwrap();
    d.at(10, 0);
    d.asoc
        .write(|tx| {
            tx.set(
                "customers",
                "ASOC-LOST",
                "name",
                "written after the snapshot",
            )
        })
        .unwrap();
    sync_all(d, &[&d.bsoc, &d.csoc], 1);
    snapshot
}

/// Central's disk put back from a snapshot (or a backup copied in by hand) without `outpost
/// central restore`: its numbers are not jumped, so its returns and new commits would be
/// numbered as the lost central's, which the shops applied and hold — skipped by them,
/// silently. Central tells from a shop's emission (it applied a return, or holds a change of
/// central's, numbered past any this store gave): the emission waits, with the reason, and an
/// alert says what to do. Once restored as the docs say, nothing is lost.
#[test]
fn r1_j1_central_put_back_without_a_restore_takes_nothing_and_says_so_until_restored() {
    let mut d = Deployment::new();
    // DSOC syncs before the snapshot only: its emissions alone show nothing.
    let dsoc = add_remote(&d, 4, "DSOC");
    set_deployment_config(&d);
    sync_all(&d, &[&d.bsoc, &d.csoc, &dsoc], 1);
    let snapshot = snapshot_then_a_write_the_shops_take(&d);
    assert!(name(&d.bsoc, "ASOC-LOST").is_some());

    // The snapshot is put back in place, and the daemon started on it.
    d.asoc = snapshot;
    d.at(11, 0);
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-NEW", "name", "keyed in at BSOC"))
        .unwrap();
    let (path, _) = files::emit_to(&d.bsoc, &d.usb(), SyncMode::Immediate).unwrap();
    let err = files::receive_from(&d.asoc, &path, Some(common::BSOC)).unwrap_err();
    assert!(
        matches!(err, outpost::replicator::Error::Deferred(_)),
        "{err}"
    );
    let why = err.to_string();
    assert!(why.contains("outpost central restore"), "{why}");
    assert_eq!(name(&d.asoc, "BSOC-NEW"), None);
    let raised =
        monitor::evaluate(&d.asoc, hhmm(11, 1), &monitor::Thresholds::default(), None).unwrap();
    assert!(
        raised
            .iter()
            .any(|a| a.site == Some(common::BSOC) && a.text.contains("outpost central restore")),
        "{raised:?}"
    );
    // From then on central gives no return (the common return time would give again the
    // numbers the lost central gave, and BSOC's next emission would then go through), nor
    // takes any emission: not even DSOC's, which alone shows nothing. The monitor says so
    // while it lasts.
    assert_eq!(
        central::prepare_returns(&d.asoc, &[common::BSOC, common::CSOC]).unwrap(),
        []
    );
    let err = files::return_to(&d.asoc, common::BSOC, &d.usb()).unwrap_err();
    assert!(err.to_string().contains("outpost central restore"), "{err}");
    let (path, _) = files::emit_to(&dsoc, &d.usb(), SyncMode::Immediate).unwrap();
    let again = files::receive_from(&d.asoc, &path, Some(outpost::SiteId(4))).unwrap_err();
    assert!(
        matches!(again, outpost::replicator::Error::Deferred(_)),
        "{again}"
    );
    monitor::evaluate(&d.asoc, hhmm(12, 0), &monitor::Thresholds::default(), None).unwrap();
    let open: Vec<_> = monitor::alerts(&d.asoc, 0)
        .unwrap()
        .into_iter()
        .filter(|a| a.is_open() && a.key == "central/put-back")
        .collect();
    assert_eq!(open.len(), 1, "{open:?}");

    // Restored as the docs say (from a copy of what is there), every shop syncs: what central
    // wrote after the snapshot comes back from the shops, and BSOC's new customer goes through.
    let copy = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    restore_central(&mut d, copy);
    sync_all(&d, &[&d.bsoc, &d.csoc, &dsoc], 3);
    assert!(name(&d.asoc, "ASOC-LOST").is_some());
    for shop in [&d.bsoc, &d.csoc, &dsoc] {
        assert!(name(shop, "BSOC-NEW").is_some(), "{}", shop.site().code);
        assert_eq!(content(shop), content(&d.asoc), "{}", shop.site().code);
    }
}

/// Central, put back from a snapshot without `outpost central restore`, found so by a shop's
/// emission: its own next commit would take the number the lost central's last commit took,
/// which the shops hold — kept at central under that number, it would never reach them, and
/// the lost one coming back would be taken for known. So central writes nothing of its own
/// until the restore (the write is refused saying why, nothing is kept), then writes again.
#[test]
fn r1_j1_central_put_back_writes_nothing_of_its_own_until_restored() {
    let mut d = Deployment::new();
    set_deployment_config(&d);
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    let snapshot = snapshot_then_a_write_the_shops_take(&d);

    d.asoc = snapshot;
    d.at(11, 0);
    let (path, _) = files::emit_to(&d.bsoc, &d.usb(), SyncMode::Immediate).unwrap();
    files::receive_from(&d.asoc, &path, Some(common::BSOC)).unwrap_err();
    let before = content(&d.asoc);
    let err = d
        .asoc
        .write(|tx| tx.set("customers", "ASOC-NEW", "name", "written while put back"))
        .unwrap_err();
    assert!(matches!(err, outpost::Error::OwnWritesHeld(_)), "{err}");
    assert!(err.to_string().contains("outpost central restore"), "{err}");
    assert_eq!(content(&d.asoc), before);
    assert!(d.asoc.own_writes_held().is_some());

    let copy = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    restore_central(&mut d, copy);
    assert_eq!(d.asoc.own_writes_held(), None);
    d.asoc
        .write(|tx| tx.set("customers", "ASOC-NEW", "name", "written once restored"))
        .unwrap();
    sync_all(&d, &[&d.bsoc, &d.csoc], 3);
    for key in ["ASOC-LOST", "ASOC-NEW"] {
        assert!(name(&d.asoc, key).is_some(), "{key} at central");
    }
    for shop in [&d.bsoc, &d.csoc] {
        assert_eq!(content(shop), content(&d.asoc), "{}", shop.site().code);
    }
}

#[test]
fn r1_r5_after_central_is_restored_a_document_numbered_twice_converges_on_central_s_new_verdict() {
    let mut d = Deployment::new();
    let dsoc = add_remote(&d, 4, "DSOC");
    sync_all(&d, &[&d.bsoc, &d.csoc, &dsoc], 1);
    // BSOC and CSOC both number a document D1; CSOC's is written later.
    d.at(9, 0);
    number_d1(&d.bsoc, "K-B", "open");
    d.at(9, 5);
    number_d1(&d.csoc, "K-C", "confirmed");
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    // Central takes CSOC's first, and DSOC receives it as the document.
    d.at(10, 0);
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    d.return_and_apply(&d.csoc);
    d.return_and_apply(&dsoc);
    let at_dsoc = dsoc.record("sales_documents", "D1").unwrap().unwrap();
    assert_eq!(at_dsoc.creator, common::CSOC);
    // Central's disk dies; restored, it takes BSOC's first this time: its judgement now.
    d.at(11, 0);
    restore_central(&mut d, backup);
    sync_all(&d, &[&d.bsoc, &d.csoc, &dsoc], 3);
    let a = d.asoc.record("sales_documents", "D1").unwrap().unwrap();
    assert_eq!(a.creator, common::BSOC);
    assert_eq!(a.get("customer"), Some(&Value::from("K-B")));
    for s in [&d.bsoc, &d.csoc, &dsoc] {
        assert_eq!(
            s.record("sales_documents", "D1").unwrap().as_ref(),
            Some(&a),
            "{} holds central's document",
            s.site().code
        );
        assert_eq!(content(s), content(&d.asoc), "{}", s.site().code);
    }
    // DSOC made neither document: nothing of this is in its rejection log.
    assert!(
        dsoc.rejections().unwrap().is_empty(),
        "{:?}",
        dsoc.rejections().unwrap()
    );
}

#[test]
fn r1_after_central_is_restored_what_a_removed_shop_sent_since_the_backup_comes_back_from_the_others()
 {
    // After the backup DSOC's last day reaches central and BSOC; then DSOC closes.
    let (mut d, _dsoc, backup) = dsoc_s_day_after_a_backup();
    d.return_and_apply(&d.bsoc);
    assert_eq!(
        name(&d.bsoc, "DSOC-LAST"),
        Some(Value::from("DSOC's last customer"))
    );
    remove(&d, "DSOC", central::Removal::default());
    // Central's disk dies; the backup predates the closing, so DSOC is removed again — its store
    // is gone, so what central lost of it can come only from the others.
    d.at(11, 0);
    restore_central(&mut d, backup);
    let gone = central::Removal {
        drop_unsent: true,
        ..Default::default()
    };
    remove(&d, "DSOC", gone);
    assert!(central::restore_under_way(&d.asoc).unwrap());
    // Three rounds: BSOC sends DSOC's last day back in the second, and every remote then takes
    // a return made since and answers it (a remote may hold a commit in part).
    sync_all(&d, &[&d.bsoc, &d.csoc], 3);
    // BSOC sent DSOC's last day back: central and CSOC hold it, nothing was refused.
    assert_eq!(
        name(&d.asoc, "DSOC-LAST"),
        Some(Value::from("DSOC's last customer"))
    );
    assert_eq!(content(&d.bsoc), content(&d.asoc));
    assert_eq!(content(&d.csoc), content(&d.asoc));
    assert!(
        d.asoc.rejections().unwrap().is_empty(),
        "{:?}",
        d.asoc.rejections().unwrap()
    );
    // Every remote still in the deployment sent back what it had: the restore is over, even
    // though the removed DSOC never will; from now on a remote relaying another's change is
    // refused (R1) again.
    assert!(!central::restore_under_way(&d.asoc).unwrap());
}

/// The person responsible reprovisions `site` (`outpost central reprovision`) and its machine is
/// set up again from the new bootstrap (a store in memory).
fn set_up_again(d: &Deployment, site: outpost::SiteId) -> outpost::Store {
    central::reprovision(&d.asoc, site).unwrap();
    set_up_from_bootstrap(d, site)
}

/// [`set_up_again`], the new store's identity `id` (which chooses its numbering block).
fn set_up_again_as(d: &Deployment, site: outpost::SiteId, id: u64) -> outpost::Store {
    central::reprovision(&d.asoc, site).unwrap();
    let (boot, _) = central::write_bootstrap(&d.asoc, site, Vec::new(), false).unwrap();
    set_up_from(d, &boot, Some(id))
}

/// Central and every one of `remotes` hold each customer of `customers` (key, name), and the
/// remotes hold what central holds.
fn all_hold(d: &Deployment, remotes: &[&outpost::Store], customers: &[(&str, &str)]) {
    for s in std::iter::once(&d.asoc).chain(remotes.iter().copied()) {
        for (key, who) in customers {
            assert_eq!(
                name(s, key),
                Some(Value::from(*who)),
                "{} {key}",
                s.site().code
            );
        }
        assert_eq!(content(s), content(&d.asoc), "{}", s.site().code);
    }
}

#[test]
fn r1_a_shop_set_up_again_after_central_s_backup_and_again_after_its_restore_numbers_no_change_twice()
 {
    let mut d = Deployment::new();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    // After the backup BSOC's disk dies; its second store's first write reaches CSOC.
    d.at(10, 0);
    let bsoc2 = set_up_again(&d, common::BSOC);
    customer_reaches(&d, &bsoc2, "B2-1", "by the second store", &d.csoc);
    // Central's disk dies. The restored central never issued the second store's bootstrap: it
    // refuses it, and BSOC is set up once more.
    d.at(11, 0);
    restore_central(&mut d, backup);
    let (path, _) =
        outpost::replicator::files::emit_to(&bsoc2, &d.usb(), SyncMode::Immediate).unwrap();
    let err =
        outpost::replicator::files::receive_from(&d.asoc, &path, Some(common::BSOC)).unwrap_err();
    assert!(
        matches!(err, outpost::replicator::Error::WrongStore(_)),
        "{err}"
    );
    let bsoc3 = set_up_again(&d, common::BSOC);
    bsoc3
        .write(|tx| tx.set("customers", "B3-1", "name", "by the third store"))
        .unwrap();
    // CSOC sends the second store's change back once it has applied a return of the restored
    // central (its second sync); BSOC receives it at its third.
    sync_all(&d, &[&bsoc3, &d.csoc], 3);
    // The third store numbered its changes past the second's: both are everywhere.
    all_hold(
        &d,
        &[&d.csoc, &bsoc3],
        &[
            ("B2-1", "by the second store"),
            ("B3-1", "by the third store"),
        ],
    );
}

#[test]
fn c4_a_remote_is_not_removed_during_central_s_restore_before_it_sent_back_what_central_lost() {
    let (mut d, dsoc, backup) = dsoc_s_day_after_a_backup();
    // Central's disk dies; DSOC closes the same day. Its last emission is computed from what
    // the lost central acknowledged: it does not carry what the restore lost.
    d.at(11, 0);
    restore_central(&mut d, backup);
    d.emit_and_process(&dsoc, SyncMode::NoReturn);
    let err = central::remove_remote(
        &d.asoc,
        "DSOC",
        d.clock.now_ms(),
        central::Removal::default(),
    )
    .unwrap_err();
    let why = err.to_string();
    assert!(why.contains("restored") && why.contains("sync it"), "{why}");
    assert_eq!(name(&d.asoc, "DSOC-LAST"), None);
    // The other shops sync (central takes DSOC's new changes once every remote has reported
    // what it holds); then a return of the restored central, and an emission: what central
    // lost of DSOC comes back, and the shop may go.
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    sync_all(&d, &[&dsoc], 2);
    remove(&d, "DSOC", central::Removal::default());
    assert_eq!(
        name(&d.asoc, "DSOC-LAST"),
        Some(Value::from("DSOC's last customer"))
    );
}

/// BSOC and CSOC both number a document D1; central takes BSOC's first and refuses CSOC's (R5),
/// CSOC's return not reaching it; DSOC, which sent a file in between, receives BSOC's document
/// and knows CSOC's change as one central has (refused). Central's backup is from before. Gives
/// the deployment, DSOC, the backup and DSOC's file.
fn d1_numbered_twice_and_dsoc_knows_the_refused_one() -> (
    Deployment,
    outpost::Store,
    outpost::Store,
    std::path::PathBuf,
) {
    let d = Deployment::new();
    let dsoc = add_remote(&d, 4, "DSOC");
    sync_all(&d, &[&d.bsoc, &d.csoc, &dsoc], 1);
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    d.at(9, 0);
    d.bsoc
        .write(|tx| tx.set("sales_documents", "D1", "customer", "K-B"))
        .unwrap();
    d.at(9, 5);
    d.csoc
        .write(|tx| tx.set("sales_documents", "D1", "customer", "K-C"))
        .unwrap();
    d.at(10, 0);
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    let (early, _) = d.emit_and_process(&dsoc, SyncMode::Immediate);
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    d.return_and_apply(&dsoc);
    assert_eq!(creator_of_d1(&dsoc), common::BSOC);
    (d, dsoc, backup, early)
}

/// Central holds CSOC's D1, and every shop holds central's document and content.
fn every_shop_holds_csoc_s_d1(d: &Deployment, dsoc: &outpost::Store) {
    let a = d.asoc.record("sales_documents", "D1").unwrap().unwrap();
    assert_eq!(a.creator, common::CSOC);
    for s in [&d.bsoc, &d.csoc, dsoc] {
        assert_eq!(
            s.record("sales_documents", "D1").unwrap().as_ref(),
            Some(&a),
            "{} holds central's document",
            s.site().code
        );
        assert_eq!(content(s), content(&d.asoc), "{}", s.site().code);
    }
}

/// CSOC and BSOC take a return; the shops of `trusted` send an emission (trusted); DSOC takes
/// its return after the last; every shop syncs three times more. The restore is over and every
/// shop holds CSOC's D1.
fn the_restore_ends_before_dsoc_s_next_return(
    d: &Deployment,
    dsoc: &outpost::Store,
    trusted: &[&outpost::Store],
) {
    d.return_and_apply(&d.csoc);
    d.return_and_apply(&d.bsoc);
    d.at(12, 0);
    for s in trusted {
        d.emit_and_process(s, SyncMode::Immediate);
    }
    d.return_and_apply(dsoc);
    sync_all(d, &[&d.bsoc, &d.csoc, dsoc], 3);
    assert!(!central::restore_under_way(&d.asoc).unwrap());
    every_shop_holds_csoc_s_d1(d, dsoc);
}

/// Central's disk dies and `backup` is put back; DSOC's old file (`early`, sent before it
/// learnt CSOC's refused number) reaches the restored central first: DSOC's first report.
fn restored_with_dsoc_s_old_file_first(
    d: &mut Deployment,
    dsoc: &outpost::Store,
    backup: outpost::Store,
    early: &std::path::Path,
) {
    d.at(11, 0);
    restore_central(d, backup);
    files::receive_from(&d.asoc, early, Some(dsoc.site().id)).unwrap();
    central::process_ready(&d.asoc).unwrap();
}

#[test]
fn r1_r5_after_central_is_restored_a_shop_that_knew_the_refused_creation_takes_central_s_new_verdict()
 {
    let (mut d, dsoc, backup, _) = d1_numbered_twice_and_dsoc_knows_the_refused_one();
    // Central's disk dies; restored, it receives CSOC's first this time (at the second round:
    // at the first, CSOC's and BSOC's documents wait until every remote has reported).
    d.at(11, 0);
    restore_central(&mut d, backup);
    sync_all(&d, &[&d.csoc, &d.bsoc, &dsoc], 4);
    every_shop_holds_csoc_s_d1(&d, &dsoc);
}

/// The same, with the shop that knew the refused creation trusted before central takes it: DSOC
/// reports and applies a return of the restored central first; CSOC's emission — not trusted yet,
/// its first since the restore — brings its creation, which central now takes; then every shop
/// sends a trusted emission and the restore ends before DSOC's next return, which no longer
/// carries again what central took since. DSOC knew CSOC's change by its number (refused by the
/// lost central) and kept BSOC's document for ever: silent divergence (the simulator's `--sites 5
/// --days 3 --seed 54270 --faults`). Taking a change of its own site that another remote reported
/// holding restarts the confirmations, whatever the emission: DSOC's next return carries it.
#[test]
fn r1_r5_after_central_is_restored_a_shop_trusted_before_it_took_the_refused_creation_takes_central_s_new_verdict()
 {
    let (mut d, dsoc, backup, _) = d1_numbered_twice_and_dsoc_knows_the_refused_one();
    // Central's disk dies. DSOC and BSOC report first, and DSOC applies a return.
    d.at(11, 0);
    restore_central(&mut d, backup);
    d.emit_and_process(&dsoc, SyncMode::Immediate);
    d.return_and_apply(&dsoc);
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    // CSOC's first emission since: every remote has reported, central takes its document.
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    assert_eq!(creator_of_d1(&d.asoc), common::CSOC);
    the_restore_ends_before_dsoc_s_next_return(&d, &dsoc, &[&dsoc, &d.bsoc, &d.csoc]);
}

/// The same again, with DSOC's first report to the restored central made before it learnt the
/// refused change's number: its file from before, carried in after the restore (a read-only
/// review's case). CSOC's emission is received next, and central takes its document; DSOC's
/// later report of the number came after central had begun taking CSOC's changes from CSOC
/// itself, so it was not counted among those others hold, and nothing restarted. What any
/// other remote's latest emission says it knows of the site counts too.
#[test]
fn r1_r5_after_central_is_restored_a_shop_whose_first_report_predates_the_refused_number_takes_central_s_new_verdict()
 {
    let (mut d, dsoc, backup, early) = d1_numbered_twice_and_dsoc_knows_the_refused_one();
    restored_with_dsoc_s_old_file_first(&mut d, &dsoc, backup, &early);
    d.return_and_apply(&dsoc);
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    // CSOC's emission is received, then DSOC's (trusted, knowing CSOC's number); central
    // processes both.
    let (path, _) = files::emit_to(&d.csoc, &d.usb(), SyncMode::Immediate).unwrap();
    files::receive_from(&d.asoc, &path, Some(d.csoc.site().id)).unwrap();
    d.emit_and_process(&dsoc, SyncMode::Immediate);
    assert_eq!(creator_of_d1(&d.asoc), common::CSOC);
    the_restore_ends_before_dsoc_s_next_return(&d, &dsoc, &[&d.bsoc, &d.csoc]);
}

/// The same, as a network sync would have it (a read-only review's case): CSOC learnt from
/// central's acknowledgement that the lost central held its emission, so its first emission
/// since the restore carries only a new customer, which central takes — from then on the other
/// shops' word on CSOC's changes no longer counted among those they hold. DSOC's current report
/// of the refused number comes next, and DSOC applies a return; CSOC's first trusted emission
/// then brings D1 back and central takes it, before DSOC's trusted emission. DSOC's report still
/// counts for the restart: its next return carries D1.
#[test]
fn r1_r5_after_central_is_restored_a_shop_reporting_the_refused_number_once_central_takes_its_creator_s_new_changes_takes_central_s_new_verdict()
 {
    let (mut d, dsoc, backup, early) = d1_numbered_twice_and_dsoc_knows_the_refused_one();
    let csoc_site = d.csoc.site().id;
    remote::record_acknowledgement(
        &d.csoc,
        &central::acknowledgement(&d.asoc, csoc_site).unwrap(),
    )
    .unwrap();
    restored_with_dsoc_s_old_file_first(&mut d, &dsoc, backup, &early);
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    d.csoc
        .write(|tx| tx.set("customers", "K-NEW", "name", "CSOC's new customer"))
        .unwrap();
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    assert!(name(&d.asoc, "K-NEW").is_some());
    assert!(d.asoc.record("sales_documents", "D1").unwrap().is_none());
    // DSOC's current report, then a return of the restored central (trusted from then on).
    d.emit_and_process(&dsoc, SyncMode::Immediate);
    d.return_and_apply(&dsoc);
    d.return_and_apply(&d.csoc);
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    assert_eq!(creator_of_d1(&d.asoc), common::CSOC);
    d.emit_and_process(&dsoc, SyncMode::Immediate);
    the_restore_ends_before_dsoc_s_next_return(&d, &dsoc, &[&d.bsoc, &d.csoc]);
}

/// The same once more, DSOC's report of the refused number coming in only after central took
/// CSOC's document: DSOC's old file reached the restored central first, DSOC applied a return,
/// then CSOC's first emission since brought D1 and central took it — nobody had reported its
/// number — and only then came DSOC's current emission, trusted, knowing the number from the
/// lost central. DSOC's word that it had sent back what it held no longer counts: it knows a
/// change central took since the return it applied was made, and the confirmations restart.
#[test]
fn r1_r5_after_central_is_restored_a_shop_reporting_the_refused_number_after_central_took_it_takes_central_s_new_verdict()
 {
    let (mut d, dsoc, backup, early) = d1_numbered_twice_and_dsoc_knows_the_refused_one();
    restored_with_dsoc_s_old_file_first(&mut d, &dsoc, backup, &early);
    d.return_and_apply(&dsoc);
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    assert_eq!(creator_of_d1(&d.asoc), common::CSOC);
    d.emit_and_process(&dsoc, SyncMode::Immediate);
    the_restore_ends_before_dsoc_s_next_return(&d, &dsoc, &[&d.bsoc, &d.csoc]);
}

/// The check above must not take a shop's lost acknowledgement for a change known from the
/// lost central (a read-only review's case): during central's restore, CSOC's new customer is
/// taken and DSOC applies the return carrying it; DSOC's next file, which acknowledges that
/// return, is lost on the way; the one after knows the customer and acknowledges nothing. It
/// says the newest return its store applied (setting `applied`), so it counts as DSOC's
/// answer and no restart follows: the restore ends once BSOC has answered too.
#[test]
fn r1_after_central_is_restored_a_shop_s_lost_acknowledgement_does_not_hold_the_restore_open() {
    let (mut d, dsoc, backup) = dsoc_synced_then_a_backup();
    d.at(11, 0);
    restore_central(&mut d, backup);
    // CSOC and DSOC report, take a return and answer; BSOC only reports.
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    sync_all(&d, &[&d.csoc, &dsoc], 2);
    d.csoc
        .write(|tx| tx.set("customers", "K-NEW", "name", "CSOC's new customer"))
        .unwrap();
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    d.return_and_apply(&dsoc);
    assert!(name(&dsoc, "K-NEW").is_some());
    // DSOC's file acknowledging that return never reaches central.
    files::emit_to(&dsoc, &d.usb(), SyncMode::Immediate).unwrap();
    d.emit_and_process(&dsoc, SyncMode::Immediate);
    let status = central::restore_status(&d.asoc).unwrap().unwrap();
    assert!(
        !status.not_sent_back.contains(&"DSOC".to_owned()),
        "{:?}",
        status.not_sent_back
    );
    d.return_and_apply(&d.bsoc);
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    assert!(!central::restore_under_way(&d.asoc).unwrap());
}

/// C4 with R1: central put back from a backup takes no remote's new changes until every remote
/// has reported what it holds — and a shop opened during the restore has not reported yet.
/// BSOC, closing, keys in its last customer and syncs: central puts that emission off, keeping
/// nothing of it. BSOC had sent back what central lost of it already, so its removal went
/// through, and the customer was lost with the shop (the simulator's `--sites 4 --days 10
/// --seed 602852`). Central now refuses to remove a remote that has reported while it waits
/// for others', and says for whom; once DSOC has reported and BSOC synced again, the removal
/// goes through with the customer at central.
#[test]
fn c4_r1_a_shop_whose_last_emission_central_put_off_in_its_restore_is_not_removed_yet() {
    let mut d = Deployment::new();
    set_deployment_config(&d);
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    restore_central(&mut d, backup);
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    d.emit_and_process(&d.bsoc, SyncMode::NoReturn);
    assert!(central::restore_under_way(&d.asoc).unwrap());
    let dsoc = add_remote(&d, 4, "DSOC");
    assert_eq!(
        central::restore_waiting_for(&d.asoc).unwrap(),
        vec!["DSOC".to_owned()]
    );
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-LAST", "name", "BSOC's last customer"))
        .unwrap();
    d.emit_and_process(&d.bsoc, SyncMode::NoReturn);
    assert_eq!(name(&d.asoc, "BSOC-LAST"), None, "put off");
    let err = central::remove_remote(
        &d.asoc,
        "BSOC",
        d.clock.now_ms(),
        central::Removal::default(),
    )
    .unwrap_err();
    let why = err.to_string();
    assert!(why.contains("DSOC") && why.contains("sync"), "{why}");
    sync_all(&d, &[&dsoc], 1);
    d.emit_and_process(&d.bsoc, SyncMode::NoReturn);
    remove(&d, "BSOC", central::Removal::default());
    assert_eq!(
        name(&d.asoc, "BSOC-LAST"),
        Some(Value::from("BSOC's last customer"))
    );
}

#[test]
fn c4_j1_a_removed_shop_still_syncing_is_reported_once_a_day_across_daemon_restarts() {
    let d = Deployment::new();
    let _dsoc = add_remote(&d, 4, "DSOC");
    set_deployment_config(&d);
    remove(&d, "DSOC", central::Removal::default());
    let at = d.clock.now_ms();
    let report = |ms: u64| {
        central::record_removed_site_call(
            &d.asoc,
            outpost::SiteId(4),
            ms,
            "DSOC still syncs".into(),
        )
        .unwrap()
    };
    // Each call is what a daemon started afresh does on DSOC's first attempt: the store, not
    // the daemon's memory, says whether today's event was raised.
    assert!(report(at), "the first attempt raises the event");
    assert!(
        !report(at + 3_600_000),
        "an hour later, after a restart: not again"
    );
    assert!(report(at + 25 * 3_600_000), "the next day: again");
}

#[test]
fn r1_after_central_is_restored_a_relayed_change_it_refuses_is_still_taken_from_its_own_site() {
    let mut d = Deployment::new();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    // DSOC is added after the backup; its first customer reaches BSOC.
    d.at(10, 0);
    let dsoc = add_remote(&d, 4, "DSOC");
    customer_reaches(&d, &dsoc, "DSOC-1", "DSOC's first customer", &d.bsoc);
    // Central's disk dies: the restored central does not know DSOC, and refuses it from BSOC.
    d.at(11, 0);
    restore_central(&mut d, backup);
    sync_all(&d, &[&d.bsoc], 2);
    assert_eq!(name(&d.asoc, "DSOC-1"), None);
    // The person responsible adds DSOC again (the same id and code); DSOC syncs twice.
    create_remote(&d, 4, "DSOC");
    sync_all(&d, &[&dsoc, &d.bsoc, &d.csoc], 2);
    assert_eq!(
        name(&d.asoc, "DSOC-1"),
        Some(Value::from("DSOC's first customer"))
    );
    assert_eq!(content(&d.csoc), content(&d.asoc));
}

/// Central adds DSOC and writes its bootstrap; BSOC and CSOC sync; central's backup is taken;
/// then it is 10:00. DSOC's machine is not set up yet: the backup knows no store of it.
fn dsoc_bootstrap_then_backup() -> (Deployment, Vec<u8>, outpost::Store) {
    let d = Deployment::new();
    create_remote(&d, 4, "DSOC");
    let (boot, _) =
        central::write_bootstrap(&d.asoc, outpost::SiteId(4), Vec::new(), false).unwrap();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    d.at(10, 0);
    (d, boot, backup)
}

#[test]
fn r1_a_shop_set_up_again_from_its_old_bootstrap_during_central_s_restore_loses_no_change() {
    // DSOC is added before central's backup, but its first sync comes after it: the backup
    // does not know DSOC's store.
    let (mut d, boot, backup) = dsoc_bootstrap_then_backup();
    let first = set_up_from(&d, &boot, Some(0x1111_2222_3333_4444));
    customer_reaches(&d, &first, "DSOC-1", "by the first store", &d.bsoc);
    // Central's disk dies and so does DSOC's; DSOC's PC is set up again from the same (old)
    // bootstrap file, and writes another customer: its first commit, as the lost store's was.
    d.at(11, 0);
    restore_central(&mut d, backup);
    let second = set_up_from(&d, &boot, Some(0x5555_6666_7777_8888));
    second
        .write(|tx| tx.set("customers", "DSOC-2", "name", "by the second store"))
        .unwrap();
    sync_all(&d, &[&second, &d.bsoc, &d.csoc], 3);
    // Both customers are everywhere: the second store numbered nothing as the first did.
    all_hold(
        &d,
        &[&d.bsoc, &d.csoc, &second],
        &[
            ("DSOC-1", "by the first store"),
            ("DSOC-2", "by the second store"),
        ],
    );
}

#[test]
fn r1_a_shop_reprovisioned_during_central_s_restore_numbers_past_a_store_reprovisioned_since_the_backup()
 {
    // DSOC's first store numbers in the last block of all (identity ≡ 65535 mod 2^16) and
    // makes ten commits after central's backup; DSOC is then reprovisioned, its second store
    // numbering in a low block (2) past them, and its customer reaches BSOC.
    let (mut d, boot, backup) = dsoc_bootstrap_then_backup();
    let first = set_up_from(&d, &boot, Some(0xffff));
    for i in 0..10 {
        first
            .write(|tx| {
                tx.set(
                    "customers",
                    &format!("D1-{i}"),
                    "name",
                    "by the first store",
                )
            })
            .unwrap();
    }
    d.emit_and_process(&first, SyncMode::Immediate);
    let second = set_up_again_as(&d, outpost::SiteId(4), 2);
    customer_reaches(&d, &second, "D2-0", "by the second store", &d.bsoc);
    // Central's disk dies; restored, it refuses the second store (a provisioning it never
    // issued), and DSOC is reprovisioned again: the third store numbers in block 0, from what
    // the backup knew of DSOC (nothing). Its commits must not land on the second store's.
    d.at(11, 0);
    restore_central(&mut d, backup);
    let third = set_up_again_as(&d, outpost::SiteId(4), 0);
    for i in 0..12 {
        third
            .write(|tx| {
                tx.set(
                    "customers",
                    &format!("D3-{i}"),
                    "name",
                    "by the third store",
                )
            })
            .unwrap();
    }
    sync_all(&d, &[&third, &d.bsoc, &d.csoc], 3);
    let mut customers = vec![("D2-0", "by the second store")];
    let keys: Vec<String> = (0..12).map(|i| format!("D3-{i}")).collect();
    customers.extend(keys.iter().map(|k| (k.as_str(), "by the third store")));
    all_hold(&d, &[&d.bsoc, &d.csoc, &third], &customers);
}

#[test]
fn r1_r5_after_central_is_restored_a_commit_relayed_in_part_comes_whole_from_its_own_site() {
    // BSOC's document D1 (customer and status in one commit) reaches central after its backup.
    let mut d = Deployment::new();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    d.at(9, 0);
    number_d1(&d.bsoc, "K-B", "open");
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    d.return_and_apply(&d.bsoc);
    // CSOC numbers a D1 too, later, then takes BSOC's from central before sending its own: it
    // keeps BSOC's creation and its own newer fields.
    d.at(9, 5);
    number_d1(&d.csoc, "K-C", "confirmed");
    d.return_and_apply(&d.csoc);
    assert_eq!(creator_of_d1(&d.csoc), common::BSOC);
    // Central's disk dies. CSOC's fields on BSOC's document are refused (R5) and put back to
    // central's registers: none, the restored central never had D1. CSOC then sends back BSOC's
    // creation alone — all it holds of that commit.
    d.at(11, 0);
    restore_central(&mut d, backup);
    sync_all(&d, &[&d.csoc], 2);
    // BSOC's own fields must still reach central: from BSOC, which holds the whole commit.
    sync_all(&d, &[&d.bsoc, &d.csoc], 2);
    let a = d.asoc.record("sales_documents", "D1").unwrap().unwrap();
    assert_eq!(a.creator, common::BSOC);
    assert_eq!(a.get("status"), Some(&Value::from("open")));
    assert_eq!(a.get("customer"), Some(&Value::from("K-B")));
    assert_eq!(content(&d.bsoc), content(&d.asoc));
    assert_eq!(content(&d.csoc), content(&d.asoc));
}

/// After central's backup, BSOC's document D1 (customer and status in one commit) reaches
/// central and DSOC whole; CSOC numbers a D1 too, later, and takes BSOC's from central before
/// sending its own: it keeps BSOC's creation and its own newer fields. Returns the deployment
/// (with DSOC, in its configuration), DSOC and the backup.
fn d1_at_dsoc_whole_and_at_csoc_in_part() -> (Deployment, outpost::Store, outpost::Store) {
    let (d, dsoc, backup) = dsoc_synced_then_a_backup();
    d.at(9, 0);
    number_d1(&d.bsoc, "K-B", "open");
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    d.return_and_apply(&dsoc);
    d.at(9, 5);
    number_d1(&d.csoc, "K-C", "confirmed");
    d.return_and_apply(&d.csoc);
    (d, dsoc, backup)
}

#[test]
fn r1_r5_after_central_is_restored_a_commit_relayed_in_part_comes_whole_from_another_remote_when_its_site_is_gone()
 {
    // As above, but DSOC holds BSOC's document whole, and BSOC's store is gone with central's
    // disk: BSOC is removed, and only DSOC can send the document's fields back.
    let (mut d, dsoc, backup) = d1_at_dsoc_whole_and_at_csoc_in_part();
    d.at(11, 0);
    restore_central(&mut d, backup);
    let gone = central::Removal {
        drop_unsent: true,
        ..Default::default()
    };
    remove(&d, "BSOC", gone);
    // CSOC relays BSOC's creation alone first; DSOC, which holds the whole commit, after.
    sync_all(&d, &[&d.csoc], 2);
    sync_all(&d, &[&dsoc, &d.csoc], 3);
    let a = d.asoc.record("sales_documents", "D1").unwrap().unwrap();
    assert_eq!(a.creator, common::BSOC);
    assert_eq!(a.get("status"), Some(&Value::from("open")));
    assert_eq!(content(&dsoc), content(&d.asoc));
    assert_eq!(content(&d.csoc), content(&d.asoc));
}

#[test]
fn r1_r5_after_central_is_restored_a_shop_holding_a_commit_in_part_takes_it_whole_once_another_remote_sent_it()
 {
    let (mut d, dsoc, backup) = d1_at_dsoc_whole_and_at_csoc_in_part();
    assert_eq!(creator_of_d1(&d.csoc), common::BSOC);
    // Central's disk dies. CSOC syncs first: its fields on BSOC's document are refused (R5)
    // and put back to the restored central's registers, none.
    d.at(11, 0);
    restore_central(&mut d, backup);
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    d.return_and_apply(&d.csoc);
    // DSOC sends BSOC's commit back whole; CSOC then sends what it holds of it (the creation,
    // which central now has) and BSOC its own: every remote has sent back what it had.
    d.return_and_apply(&dsoc);
    d.emit_and_process(&dsoc, SyncMode::Immediate);
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    d.return_and_apply(&d.bsoc);
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    // CSOC must still get BSOC's fields, though it knows the commit.
    sync_all(&d, &[&d.bsoc, &d.csoc, &dsoc], 3);
    let a = d.asoc.record("sales_documents", "D1").unwrap().unwrap();
    assert_eq!(a.creator, common::BSOC);
    assert_eq!(a.get("status"), Some(&Value::from("open")));
    for s in [&d.bsoc, &d.csoc, &dsoc] {
        assert_eq!(content(s), content(&d.asoc), "{}", s.site().code);
    }
    assert!(!central::restore_under_way(&d.asoc).unwrap());
}

/// DSOC's three customers written after both central's backup and DSOC's own reach central and
/// then BSOC; then central's disk dies, and so does DSOC's: each is put back from its backup
/// (at 11:00). Gives the deployment and DSOC's restored store.
fn dsoc_lost_three_customers_then_both_restored() -> (Deployment, outpost::Store) {
    let (mut d, dsoc, backup) = dsoc_synced_then_a_backup();
    let dsoc_backup = backup_then_three_lost_customers(&d, &dsoc);
    d.emit_and_process(&dsoc, SyncMode::Immediate);
    d.return_and_apply(&d.bsoc);
    assert_eq!(
        name(&d.bsoc, "DSOC-LOST-1"),
        Some(Value::from("by the lost store"))
    );
    d.at(11, 0);
    restore_central(&mut d, backup);
    (d, dsoc_backup)
}

/// The restored DSOC writes customers `DSOC-NEW-i`, one commit each.
fn new_customers(dsoc: &outpost::Store, which: std::ops::RangeInclusive<usize>) {
    for i in which {
        dsoc.write(|tx| {
            tx.set(
                "customers",
                &format!("DSOC-NEW-{i}"),
                "name",
                "by the restored store",
            )
        })
        .unwrap();
    }
}

/// Central holds none of the customers `DSOC-NEW-i`.
fn none_at_central(d: &Deployment, which: std::ops::RangeInclusive<usize>) {
    for i in which {
        let key = format!("DSOC-NEW-{i}");
        assert_eq!(name(&d.asoc, &key), None, "{key}");
    }
}

/// `store` emits a file and central receives it: why central does not take it.
fn refused_at_central(d: &Deployment, store: &outpost::Store) -> outpost::replicator::Error {
    let (path, _) =
        outpost::replicator::files::emit_to(store, &d.usb(), SyncMode::Immediate).unwrap();
    outpost::replicator::files::receive_from(&d.asoc, &path, Some(store.site().id)).unwrap_err()
}

/// BSOC and CSOC report what they hold (BSOC's newest change of DSOC is the lost store's third,
/// with its stamp); then the restored DSOC's emission, which carries a change under that number
/// with another stamp, is refused and nothing of DSOC-NEW-1..4 is taken.
fn others_report_then_dsoc_is_refused_by_a_stamp(d: &Deployment, dsoc: &outpost::Store) -> String {
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    let err = refused_at_central(d, dsoc);
    assert!(
        matches!(&err, outpost::replicator::Error::WrongStore(why)
            if why.contains("which another remote holds as stamped")),
        "{err}"
    );
    none_at_central(d, 1..=4);
    err.to_string()
}

/// BSOC applies a return and syncs: it sends back what central lost, DSOC's lost customers as
/// the lost store wrote them.
fn bsoc_sends_back_dsoc_s_lost_customers(d: &Deployment) {
    d.return_and_apply(&d.bsoc);
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    for i in 1..=3 {
        assert_eq!(
            name(&d.asoc, &format!("DSOC-LOST-{i}")),
            Some(Value::from("by the lost store")),
            "DSOC-LOST-{i}"
        );
    }
}

#[test]
fn r1_a_shop_restored_from_its_own_backup_that_syncs_first_after_central_s_restore_waits_until_every_remote_reported()
 {
    let (d, dsoc) = dsoc_lost_three_customers_then_both_restored();
    // This time the restored DSOC syncs first, before BSOC has said what it holds.
    dsoc.write(|tx| tx.set("customers", "DSOC-NEW", "name", "by the restored store"))
        .unwrap();
    // Central cannot tell yet whether another remote holds changes numbered as these: nothing
    // of it is taken for now, and the sender is told whom central waits for.
    let err = refused_at_central(&d, &dsoc);
    assert!(
        matches!(&err, outpost::replicator::Error::Deferred(why)
            if why.contains("BSOC") && why.contains("CSOC") && !why.contains("DSOC,")),
        "{err}"
    );
    assert_eq!(name(&d.asoc, "DSOC-NEW"), None);
    assert_eq!(
        central::restore_waiting_for(&d.asoc).unwrap(),
        vec!["BSOC".to_owned(), "CSOC".to_owned()]
    );
    // BSOC and CSOC sync (neither wrote since the backup: nothing of theirs waits).
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    assert!(central::restore_waiting_for(&d.asoc).unwrap().is_empty());
    // Every remote has reported: the restored store lacks two changes of its own BSOC holds.
    let err = refused_at_central(&d, &dsoc);
    assert!(
        matches!(&err, outpost::replicator::Error::WrongStore(why)
            if why.contains("lacks 2 of its own changes another remote reported holding")),
        "{err}"
    );
    assert_eq!(name(&d.asoc, "DSOC-NEW"), None);
    bsoc_sends_back_dsoc_s_lost_customers(&d);
}

#[test]
fn r1_a_shop_restored_from_its_own_backup_that_numbers_past_its_lost_changes_while_central_waits_is_refused()
 {
    let (d, dsoc) = dsoc_lost_three_customers_then_both_restored();
    // The restored DSOC writes one customer and syncs first: central waits for the others' reports.
    d.at(11, 10);
    new_customers(&dsoc, 1..=1);
    d.emit_and_process(&dsoc, SyncMode::Immediate);
    assert_eq!(name(&d.asoc, "DSOC-NEW-1"), None);
    // Meanwhile it numbers past the lost changes: its knowledge now covers every number BSOC
    // holds of it.
    new_customers(&dsoc, 2..=4);
    // BSOC reports from a version before emissions said their stamps of the others' newest
    // changes (`tips`): only what DSOC's store claimed since the restore tells.
    let (bsoc_emission, _) =
        outpost::replicator::files::emit_to(&d.bsoc, &d.usb(), SyncMode::Immediate).unwrap();
    let without_tips = rewrite(&std::fs::read(&bsoc_emission).unwrap(), |h| {
        if let Some(c) = h.config.as_mut() {
            c.settings
                .remove(outpost::replicator::incarnation::TIPS_SETTING);
        }
    });
    std::fs::write(&bsoc_emission, without_tips).unwrap();
    outpost::replicator::files::receive_from(&d.asoc, &bsoc_emission, Some(d.bsoc.site().id))
        .unwrap();
    central::process_ready(&d.asoc).unwrap();
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    assert!(central::restore_waiting_for(&d.asoc).unwrap().is_empty());
    // Its emission made since central's restore lacked two of BSOC's: refused, nothing taken.
    let err = refused_at_central(&d, &dsoc);
    assert!(
        matches!(&err, outpost::replicator::Error::WrongStore(why)
            if why.contains("lacked, in an emission made since central's restore, 2 of its own changes another remote reported holding")),
        "{err}"
    );
    none_at_central(&d, 1..=4);
    bsoc_sends_back_dsoc_s_lost_customers(&d);
}

#[test]
fn r1_a_shop_restored_from_its_own_backup_during_central_s_restore_is_refused_before_its_new_changes_are_taken()
 {
    let (d, dsoc) = dsoc_lost_three_customers_then_both_restored();
    // BSOC syncs first (it has not applied a return of the restored central yet).
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    // The restored DSOC numbers a new customer as the lost store numbered its first lost one.
    dsoc.write(|tx| tx.set("customers", "DSOC-NEW", "name", "by the restored store"))
        .unwrap();
    // BSOC reported holding two of the lost changes this store lacks (the third is numbered as
    // its new one): refused, nothing of it taken, listed with why. On BSOC's word only, the
    // store is not condemned yet.
    let err = refused_at_central(&d, &dsoc);
    assert!(
        matches!(&err, outpost::replicator::Error::WrongStore(why)
            if why.contains("lacks 2 of its own changes another remote reported holding")),
        "{err}"
    );
    let refused = central::refused_flows(&d.asoc).unwrap();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].sender, Some(dsoc.site().id));
    // Refused, DSOC is heard from all the same: central waits only for CSOC's report now (a
    // refused store must not hold every remote's new changes back).
    assert_eq!(
        central::restore_waiting_for(&d.asoc).unwrap(),
        vec!["CSOC".to_owned()]
    );
    assert_eq!(name(&d.asoc, "DSOC-NEW"), None);
    bsoc_sends_back_dsoc_s_lost_customers(&d);
    // Central now holds them itself: the restored store's next emission is refused on that (had
    // the first refusal condemned the store, this one would say so instead of what it lacks).
    let err = refused_at_central(&d, &dsoc);
    assert!(
        matches!(&err, outpost::replicator::Error::WrongStore(why)
            if why.contains("lacks 2 of its own changes central holds")),
        "{err}"
    );
    assert_eq!(name(&d.asoc, "DSOC-NEW"), None);
}

#[test]
fn r1_a_file_made_before_central_s_restore_by_a_clock_set_ahead_and_carried_in_later_refuses_nothing()
 {
    let (mut d, dsoc, backup) = dsoc_synced_then_a_backup();
    // 10:00: DSOC writes a customer and makes a file that stays on the stick, stamped 11:30 as
    // by a clock set an hour and a half ahead.
    d.at(10, 0);
    dsoc.write(|tx| tx.set("customers", "DSOC-A", "name", "on the stick"))
        .unwrap();
    let (on_stick, _) =
        outpost::replicator::files::emit_to(&dsoc, &d.usb(), SyncMode::Immediate).unwrap();
    let ahead = rewrite(&std::fs::read(&on_stick).unwrap(), |h| {
        h.created_wall_ms = hhmm(11, 30);
    });
    std::fs::write(&on_stick, ahead).unwrap();
    // 10:15: another customer, synced over the network; BSOC applies a return and holds both.
    d.at(10, 15);
    dsoc.write(|tx| tx.set("customers", "DSOC-B", "name", "synced"))
        .unwrap();
    d.emit_and_process(&dsoc, SyncMode::Immediate);
    d.return_and_apply(&d.bsoc);
    assert_eq!(name(&d.bsoc, "DSOC-B"), Some(Value::from("synced")));
    // 11:00: central's disk is lost and its backup put back.
    d.at(11, 0);
    restore_central(&mut d, backup);
    // 12:00: the old file is carried in. Stamped past the restore, but received long after
    // its stamp: it does not count as made since the restore (it lacks DSOC-B, which its
    // store, never put back, holds).
    d.at(12, 0);
    let err = outpost::replicator::files::receive_from(&d.asoc, &on_stick, Some(dsoc.site().id))
        .unwrap_err();
    assert!(
        matches!(&err, outpost::replicator::Error::Deferred(_)),
        "{err}"
    );
    d.at(12, 10);
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    assert!(central::restore_waiting_for(&d.asoc).unwrap().is_empty());
    // 12:20: DSOC writes again and syncs: its store is the one that was never lost, and
    // everything of it is taken.
    d.at(12, 20);
    dsoc.write(|tx| tx.set("customers", "DSOC-C", "name", "after the restore"))
        .unwrap();
    let (path, _) =
        outpost::replicator::files::emit_to(&dsoc, &d.usb(), SyncMode::Immediate).unwrap();
    outpost::replicator::files::receive_from(&d.asoc, &path, Some(dsoc.site().id)).unwrap();
    central::process_ready(&d.asoc).unwrap();
    assert!(central::refused_flows(&d.asoc).unwrap().is_empty());
    for (key, who) in [
        ("DSOC-A", "on the stick"),
        ("DSOC-B", "synced"),
        ("DSOC-C", "after the restore"),
    ] {
        assert_eq!(name(&d.asoc, key), Some(Value::from(who)), "{key}");
    }
}

#[test]
fn r1_a_shop_restored_from_its_own_backup_that_numbers_past_its_lost_changes_before_it_syncs_is_refused_by_their_stamps()
 {
    let (d, dsoc) = dsoc_lost_three_customers_then_both_restored();
    // Before it makes any emission, the restored DSOC writes four customers: numbered as the
    // three the lost store had sent (which BSOC holds), and one past them.
    d.at(11, 10);
    new_customers(&dsoc, 1..=4);
    // DSOC's store knows every number BSOC holds of it, but carries its third change with
    // another stamp: refused before anything of it is taken, and the store condemned.
    let why = others_report_then_dsoc_is_refused_by_a_stamp(&d, &dsoc);
    assert!(why.contains("carries a change"), "{why}");
    // BSOC sends back what the lost store had written; the restored store stays refused.
    bsoc_sends_back_dsoc_s_lost_customers(&d);
    let err = refused_at_central(&d, &dsoc);
    assert!(
        matches!(&err, outpost::replicator::Error::WrongStore(why)
            if why.contains("as with its emissions since central first saw it")),
        "{err}"
    );
    // CSOC gets the lost store's customers too, and converges with central.
    sync_all(&d, &[&d.bsoc, &d.csoc], 4);
    for i in 1..=3 {
        assert_eq!(
            name(&d.csoc, &format!("DSOC-LOST-{i}")),
            Some(Value::from("by the lost store"))
        );
    }
    assert_eq!(content(&d.csoc), content(&d.asoc));
    assert_eq!(content(&d.bsoc), content(&d.asoc));
}

#[test]
fn r1_a_shop_restored_from_its_own_backup_whose_renumbered_creation_was_written_over_is_still_refused_by_its_stamp()
 {
    let (d, dsoc) = dsoc_lost_three_customers_then_both_restored();
    d.at(11, 10);
    // The restored DSOC creates two customers, then a third under the number of the lost
    // store's third, whose only field it then writes again: the record's creation register
    // (`Slot::Created`) still carries that number.
    new_customers(&dsoc, 1..=3);
    dsoc.write(|tx| tx.set("customers", "DSOC-NEW-3", "name", "corrected"))
        .unwrap();
    new_customers(&dsoc, 4..=4);
    others_report_then_dsoc_is_refused_by_a_stamp(&d, &dsoc);
    bsoc_sends_back_dsoc_s_lost_customers(&d);
}

#[test]
fn r1_a_shop_restored_from_its_own_backup_whose_renumbered_change_was_written_over_before_it_synced_is_still_refused_by_its_stamp()
 {
    let (d, dsoc) = dsoc_lost_three_customers_then_both_restored();
    d.at(11, 10);
    // The restored DSOC creates two customers, then, under the number of the lost store's third
    // change, renames the first; then renames it again. The third commit holds no register any
    // more: no change of that number travels in its emission (as in simulator seed 4322 of
    // `--sites 12 --days 40` when it was found; docs/TESTING.md).
    new_customers(&dsoc, 1..=2);
    for name in ["renamed", "renamed again"] {
        dsoc.write(|tx| tx.set("customers", "DSOC-NEW-1", "name", name))
            .unwrap();
    }
    let why = others_report_then_dsoc_is_refused_by_a_stamp(&d, &dsoc);
    assert!(why.contains("names as not travelling"), "{why}");
    bsoc_sends_back_dsoc_s_lost_customers(&d);
}

/// The same when the restored DSOC's clock runs a day ahead and its operator runs `restamp`
/// before central has held anything (its first sync only waits for the others' reports): the
/// restamp replaces its commits numbered as the lost store's, and their stamps must still be
/// named (`unsent`), or central would take the emission and DSOC would count the lost store's
/// changes as its own (a review found the restamp dropping them).
#[test]
fn r1_a_shop_restored_from_its_own_backup_and_restamped_before_central_held_it_is_still_refused_by_its_stamps()
 {
    let (d, restored) = dsoc_lost_three_customers_then_both_restored();
    let ahead = ManualClock::new(hhmm(11, 10) + DAY_MS);
    let dsoc = restored
        .copy_in_memory(outpost::StoreConfig::new(
            restored.site().clone(),
            outpost::retail::schema(),
            ahead.clone(),
        ))
        .unwrap();
    new_customers(&dsoc, 1..=3);
    let err = refused_at_central(&d, &dsoc);
    assert!(
        matches!(&err, outpost::replicator::Error::Deferred(_)),
        "{err}"
    );
    ahead.set(hhmm(11, 20));
    d.at(11, 20);
    assert!(remote::restamp(&dsoc).unwrap() > 0);
    let why = others_report_then_dsoc_is_refused_by_a_stamp(&d, &dsoc);
    assert!(why.contains("names as not travelling"), "{why}");
    bsoc_sends_back_dsoc_s_lost_customers(&d);
}

#[test]
fn r1_r7_a_shop_restored_from_its_own_backup_whose_renumbered_change_is_held_back_with_a_reserved_document_is_still_refused_by_its_stamp()
 {
    let (d, dsoc) = dsoc_lost_three_customers_then_both_restored();
    d.at(11, 10);
    // The restored DSOC creates two customers, then numbers a sales document under the number
    // of the lost store's third change, which a till then reserves (R7): the emission holds
    // that change back. A fourth commit numbers past the lost ones.
    new_customers(&dsoc, 1..=2);
    number_d1(&dsoc, "K-D", "open");
    dsoc.reserve("sales_documents", "D1", "till-1").unwrap();
    new_customers(&dsoc, 4..=4);
    let why = others_report_then_dsoc_is_refused_by_a_stamp(&d, &dsoc);
    assert!(why.contains("names as not travelling"), "{why}");
    bsoc_sends_back_dsoc_s_lost_customers(&d);
}

/// R1: a remote keeps the stamp of each of its commits until central confirms holding it (a
/// return; an acknowledgement of a no-return sync, M3), and its emission names, with its stamp,
/// the commit none of whose changes travels.
#[test]
fn r1_a_remote_keeps_its_commits_stamps_until_central_confirms_them_and_names_those_that_do_not_travel()
 {
    use outpost::replicator::{FlowReader, incarnation};
    let d = Deployment::new();
    let kept = || d.bsoc.snapshot().unwrap().own_stamps_kept().unwrap();
    // The customer is created and synced; then renamed twice.
    d.bsoc
        .write(|tx| tx.set("customers", "K-B", "name", "created"))
        .unwrap();
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    d.return_and_apply(&d.bsoc);
    assert_eq!(kept(), 0);
    let mut stamps = Vec::new();
    for name in ["first", "second"] {
        d.at(9, stamps.len() as u64);
        let (_, commit) = d
            .bsoc
            .write_commit(|tx| tx.set("customers", "K-B", "name", name))
            .unwrap();
        stamps.push((commit.dot.unwrap().seq, commit.changes[0].stamp));
    }
    assert_eq!(kept(), 2);
    let (path, _) = d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    let bytes = std::fs::read(&path).unwrap();
    let header = FlowReader::open(bytes.as_slice()).unwrap().header().clone();
    let said = header.config.unwrap().settings[incarnation::UNSENT_SETTING].clone();
    assert_eq!(
        incarnation::parse_unsent(&said),
        vec![stamps[0]],
        "the first commit, written over, named with its stamp"
    );
    assert_eq!(kept(), 2, "not confirmed yet");
    d.return_and_apply(&d.bsoc);
    assert_eq!(kept(), 0, "central's return confirmed both");
    // A no-return sync's acknowledgement confirms too.
    d.bsoc
        .write(|tx| tx.set("customers", "K-B", "name", "third"))
        .unwrap();
    assert_eq!(kept(), 1);
    let mut ack = outpost::engine::Knowledge::new();
    ack.union_with(&d.bsoc.knowledge());
    let ack = central::Acknowledgement {
        ack,
        clock: Some(d.asoc.clock_high_water()),
    };
    remote::record_acknowledgement(&d.bsoc, &ack).unwrap();
    assert_eq!(kept(), 0);
}

/// The person responsible for syncs sees where central's restore from a backup stands: whom
/// every remote's new changes wait for, and who has still to sync after applying a return of
/// the restored central — `central::restore_status` (the daemon's `/v1/status`), and standing
/// alerts that close by themselves as the remotes sync.
#[test]
fn r1_a_restore_of_central_says_whom_it_waits_for_until_it_is_over() {
    use outpost::replicator::monitor;
    let mut d = Deployment::new();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    assert_eq!(central::restore_status(&d.asoc).unwrap(), None);
    d.at(11, 0);
    restore_central(&mut d, backup);
    let open_alerts = |h, m| {
        monitor::evaluate(&d.asoc, hhmm(h, m), &Default::default(), None).unwrap();
        monitor::alerts(&d.asoc, 0)
            .unwrap()
            .into_iter()
            .filter(|a| a.is_open() && a.key.starts_with("restore/"))
            .map(|a| (a.key, a.text))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let status = central::restore_status(&d.asoc).unwrap().unwrap();
    assert_eq!(status.since_ms, hhmm(11, 0));
    assert_eq!(status.waiting_for, ["BSOC", "CSOC"]);
    assert_eq!(status.not_sent_back, ["BSOC", "CSOC"]);
    let alerts = open_alerts(11, 30);
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let waiting = &alerts["restore/waiting"];
    assert!(
        waiting.contains("30 min ago") && waiting.contains("2 still to: BSOC, CSOC"),
        "{alerts:?}"
    );
    assert!(
        alerts["restore/open"].contains("2 still to: BSOC, CSOC"),
        "{alerts:?}"
    );
    // Both sync once: no remote's changes wait any more; the restore is still under way.
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    let status = central::restore_status(&d.asoc).unwrap().unwrap();
    assert!(status.waiting_for.is_empty(), "{status:?}");
    assert_eq!(status.not_sent_back, ["BSOC", "CSOC"]);
    let alerts = open_alerts(11, 40);
    assert_eq!(
        alerts.keys().map(String::as_str).collect::<Vec<_>>(),
        ["restore/open"]
    );
    // Each applies a return of the restored central and syncs again: the restore is over, and
    // the alert closes.
    d.return_and_apply(&d.bsoc);
    d.return_and_apply(&d.csoc);
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    assert_eq!(
        central::restore_status(&d.asoc)
            .unwrap()
            .unwrap()
            .not_sent_back,
        ["CSOC"]
    );
    // The open alert says how things stand now, not when it was raised.
    let open = &open_alerts(11, 45)["restore/open"];
    assert!(open.contains("1 still to: CSOC"), "{open}");
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    assert_eq!(central::restore_status(&d.asoc).unwrap(), None);
    assert!(open_alerts(11, 50).is_empty());
}

/// M3 after central's restore: a remote that gets no return learns from central's
/// acknowledgement (asked before each emission over the network) that the restored central
/// lacks its change, and its next emission carries it again — no return needed.
#[test]
fn r1_m3_after_central_s_restore_the_acknowledgement_brings_a_no_return_remote_s_lost_change_back()
{
    let mut d = Deployment::new();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    let acknowledged = |d: &Deployment| {
        let ack = central::acknowledgement(&d.asoc, d.bsoc.site().id).unwrap();
        remote::record_acknowledgement(&d.bsoc, &ack).unwrap();
    };
    // BSOC writes K-B after the backup; central takes it and acknowledges it (no return).
    d.at(10, 0);
    d.bsoc
        .write(|tx| tx.set("customers", "K-B", "name", "after the backup"))
        .unwrap();
    d.emit_and_process(&d.bsoc, SyncMode::NoReturn);
    acknowledged(&d);
    assert_eq!(name(&d.asoc, "K-B"), Some(Value::from("after the backup")));
    // Central's disk is lost; its backup does not hold K-B.
    d.at(11, 0);
    restore_central(&mut d, backup);
    assert_eq!(name(&d.asoc, "K-B"), None);
    // CSOC reports; BSOC asks for the acknowledgement before its next emission, which carries
    // K-B again.
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    acknowledged(&d);
    d.emit_and_process(&d.bsoc, SyncMode::NoReturn);
    assert_eq!(name(&d.asoc, "K-B"), Some(Value::from("after the backup")));
}

/// R4/R9: central grants CSOC the stock documents it was denied. CSOC learns it with its next
/// return and writes one, which central takes. BSOC, which still held CSOC as denied from its
/// last return, gets that document with the return that also grants the permission: central's
/// judgement is final, so BSOC takes it. It used to judge it by the permission it held (merged
/// before the new one is set) and refuse it into its own rejection log, while its knowledge
/// moved past it: BSOC never held the document central and CSOC hold (silent divergence).
#[test]
fn r4_r9_a_document_central_took_under_a_permission_granted_since_reaches_every_shop() {
    let d = csoc_granted_stock_documents_writes_one();
    d.at(23, 0);
    let (_, applied) = d.return_and_apply(&d.bsoc);
    let remote::Applied::Applied { report, .. } = applied else {
        panic!("applied: {applied:?}");
    };
    assert_eq!(report.refused(), 0, "{:?}", report.refusals);
    assert!(
        d.bsoc.denied_tables(common::CSOC).is_empty(),
        "BSOC learnt it too"
    );
    assert!(
        d.bsoc
            .record("stock_documents", "CSOC-S1")
            .unwrap()
            .is_some()
    );
    assert_eq!(content(&d.bsoc), content(&d.asoc));
}

/// Central grants CSOC the stock documents it was denied; CSOC learns it with a return, writes
/// `CSOC-S1` and syncs, and central takes it.
fn csoc_granted_stock_documents_writes_one() -> Deployment {
    csoc_granted_stock_documents_writes_one_on(Deployment::new())
}

/// [`csoc_granted_stock_documents_writes_one`] on `d`.
fn csoc_granted_stock_documents_writes_one_on(d: Deployment) -> Deployment {
    let csoc = common::CSOC;
    assert!(d.bsoc.denied_tables(csoc).contains("stock_documents"));
    d.asoc
        .set_denied_tables(csoc, std::collections::BTreeSet::new())
        .unwrap();
    d.at(9, 0);
    d.return_and_apply(&d.csoc);
    assert!(d.csoc.denied_tables(csoc).is_empty(), "CSOC learnt it may");
    d.csoc
        .write(|tx| tx.set("stock_documents", "CSOC-S1", "quantity", 5))
        .unwrap();
    d.emit_and_process(&d.csoc, SyncMode::Deferred);
    assert!(
        d.asoc
            .record("stock_documents", "CSOC-S1")
            .unwrap()
            .is_some()
    );
    d
}

/// R4/R9 the other way: central withdraws the permission after taking CSOC's document, then
/// sets up a new shop. Its bootstrap sets the permissions before the data, and the new shop
/// used to refuse the document central holds (silent divergence from its first day).
#[test]
fn r4_r9_a_shop_set_up_after_a_permission_is_withdrawn_holds_what_central_took_under_it() {
    let d = csoc_granted_stock_documents_writes_one();
    let csoc = common::CSOC;
    d.asoc
        .set_denied_tables(
            csoc,
            std::collections::BTreeSet::from(["stock_documents".into()]),
        )
        .unwrap();
    d.at(10, 0);
    let dsoc = add_remote(&d, 4, "DSOC");
    assert!(dsoc.denied_tables(csoc).contains("stock_documents"));
    assert!(dsoc.record("stock_documents", "CSOC-S1").unwrap().is_some());
    assert_eq!(content(&dsoc), content(&d.asoc));
    // And CSOC's writes from now on are refused, at CSOC once it knows, at central before.
    d.csoc
        .write(|tx| tx.set("stock_documents", "CSOC-S2", "quantity", 1))
        .unwrap();
    d.emit_and_process(&d.csoc, SyncMode::Deferred);
    assert!(
        d.asoc
            .record("stock_documents", "CSOC-S2")
            .unwrap()
            .is_none()
    );
    d.return_and_apply(&d.csoc);
    let err = d
        .csoc
        .write(|tx| tx.set("stock_documents", "CSOC-S3", "quantity", 1))
        .unwrap_err();
    assert_eq!(
        err.refusal().map(|r| r.rule),
        Some(outpost::Rule::R4),
        "{err}"
    );
}

/// R4/R9 across central's restore: central took CSOC's stock document under a permission it
/// granted after its backup. Its disk dies; the backup put back still denies CSOC stock
/// documents. What the lost central took under the permission then in force is not judged
/// again by the restored one's: taken back from BSOC's relay and from CSOC alike, in whichever
/// order. It used to be refused (R4) — CSOC put its document back, BSOC kept it, and the two
/// never agreed again (silent divergence, found by the simulator, seed 107).
#[test]
fn r4_r9_after_central_is_restored_what_it_took_under_a_permission_granted_since_the_backup_stays()
{
    for csoc_first in [true, false] {
        let d = Deployment::new();
        let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
        let mut d = csoc_granted_stock_documents_writes_one_on(d);
        d.at(12, 0);
        d.return_and_apply(&d.bsoc);
        assert!(
            d.bsoc
                .record("stock_documents", "CSOC-S1")
                .unwrap()
                .is_some()
        );
        d.at(13, 0);
        restore_central(&mut d, backup);
        assert!(
            d.asoc
                .denied_tables(common::CSOC)
                .contains("stock_documents")
        );
        let order: [&outpost::Store; 2] = if csoc_first {
            [&d.csoc, &d.bsoc]
        } else {
            [&d.bsoc, &d.csoc]
        };
        sync_all(&d, &order, 3);
        assert!(
            d.asoc
                .record("stock_documents", "CSOC-S1")
                .unwrap()
                .is_some(),
            "CSOC first: {csoc_first}"
        );
        assert_eq!(
            content(&d.bsoc),
            content(&d.asoc),
            "CSOC first: {csoc_first}"
        );
        assert_eq!(
            content(&d.csoc),
            content(&d.asoc),
            "CSOC first: {csoc_first}"
        );
    }
}

/// R2 with a clock behind: BSOC's clock says it is a day earlier than it is. It stamps its
/// writes just after the newest change it has seen, not when they are made, so they lose every
/// conflict to writes made earlier elsewhere — nothing is refused, nothing is held. Central
/// cannot know which edit a person made last, but it can see that BSOC holds changes stamped
/// later than its own clock says it is, and says so: an alert names BSOC and how far behind its
/// clock is at least. A shop whose clock is right raises none.
#[test]
fn r2_a_shop_whose_clock_is_a_day_behind_is_named_in_an_alert() {
    use outpost::replicator::monitor;
    let clock = ManualClock::new(hhmm(8, 0));
    let bsoc_clock = ManualClock::new(hhmm(8, 0) - DAY_MS);
    let d = Deployment::with_clocks(
        clock,
        bsoc_clock.clone(),
        outpost::engine::SKEW_MS_MAX_DEFAULT,
    );
    d.at(9, 0);
    bsoc_clock.set(hhmm(9, 0) - DAY_MS);
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-1", "name", "keyed in at BSOC"))
        .unwrap();
    d.csoc
        .write(|tx| tx.set("customers", "CSOC-1", "name", "keyed in at CSOC"))
        .unwrap();
    d.emit_and_process(&d.bsoc, SyncMode::Deferred);
    d.emit_and_process(&d.csoc, SyncMode::Deferred);
    let raised =
        monitor::evaluate(&d.asoc, hhmm(9, 1), &monitor::Thresholds::default(), None).unwrap();
    let about = |site| {
        raised
            .iter()
            .filter(|a| a.site == Some(site) && a.text.contains("clock"))
            .map(|a| a.text.clone())
            .collect::<Vec<_>>()
    };
    let bsoc = about(common::BSOC);
    assert_eq!(bsoc.len(), 1, "{raised:?}");
    assert!(
        bsoc[0].contains("BSOC's clock is at least 23.0 h behind"),
        "{}",
        bsoc[0]
    );
    // A clock that ran ahead and was set back looks the same: the alert says what to do then.
    assert!(
        bsoc[0].contains("If central holds its emissions for clock skew")
            && bsoc[0].contains("outpost remote restamp"),
        "{}",
        bsoc[0]
    );
    assert!(about(common::CSOC).is_empty(), "{raised:?}");
}

/// R2 with central's own clock ahead: central's clock ran three days ahead for an hour, and was
/// set right. What central wrote meanwhile carries stamps three days ahead, and BSOC, whose
/// clock is right, took them: its next writes are stamped just after them (the clock is causal).
/// Those stamps are central's doing, not BSOC's: central takes BSOC's emission (it used to hold
/// it as if BSOC's clock were wrong, and `restamp` could not help), BSOC's edit — made after it
/// saw central's — wins, and the alert names central's clock, not BSOC's.
#[test]
fn r2_after_central_s_clock_ran_ahead_and_was_set_right_a_shop_with_a_right_clock_is_not_held() {
    use outpost::replicator::monitor;
    let (d, bsoc_clock) = bsoc_on_a_clock_of_its_own();
    let clock = d.clock.clone();
    // 9:00: central's clock says three days later.
    clock.set(hhmm(9, 0) + 3 * DAY_MS);
    bsoc_clock.set(hhmm(9, 0));
    d.asoc
        .write(|tx| tx.set("customers", "ASOC-1", "name", "keyed in at central"))
        .unwrap();
    d.emit_and_process(&d.bsoc, SyncMode::Deferred);
    d.return_and_apply(&d.bsoc);
    assert_eq!(
        name(&d.bsoc, "ASOC-1"),
        Some(Value::from("keyed in at central"))
    );
    // 9:30: central's clock is set right. 9:40: BSOC edits the customer and syncs.
    d.at(9, 30);
    bsoc_clock.set(hhmm(9, 40));
    d.bsoc
        .write(|tx| {
            tx.set("customers", "ASOC-1", "name", "edited at BSOC")?;
            tx.set("customers", "BSOC-1", "name", "new at BSOC")
        })
        .unwrap();
    d.at(9, 40);
    let (_, id) = d.emit_and_process(&d.bsoc, SyncMode::Deferred);
    let row = journal::row(&d.asoc, id).unwrap().unwrap();
    assert_eq!(row.error, None, "BSOC's clock is right: nothing is held");
    assert_eq!(row.executions, 1);
    assert_eq!(name(&d.asoc, "ASOC-1"), Some(Value::from("edited at BSOC")));
    assert_eq!(name(&d.asoc, "BSOC-1"), Some(Value::from("new at BSOC")));
    d.return_and_apply(&d.bsoc);
    assert_eq!(content(&d.bsoc), content(&d.asoc));

    // The alert names central's clock, and how far behind its own newest stamp it is; none
    // blames BSOC's.
    let raised =
        monitor::evaluate(&d.asoc, hhmm(9, 41), &monitor::Thresholds::default(), None).unwrap();
    let clocks: Vec<_> = raised.iter().filter(|a| a.text.contains("clock")).collect();
    assert!(
        clocks.iter().all(|a| !a.text.contains("BSOC's clock")),
        "{clocks:?}"
    );
    assert_eq!(clocks.len(), 1, "{raised:?}");
    assert!(
        clocks[0]
            .text
            .starts_with("central's clock is 3.0 d behind"),
        "{}",
        clocks[0].text
    );
    assert!(clocks[0].is_open(), "it holds until the time catches up");
    // Once central's clock has caught up with its stamps, it closes.
    let later = hhmm(9, 41) + 3 * DAY_MS;
    monitor::evaluate(&d.asoc, later, &monitor::Thresholds::default(), None).unwrap();
    let still: Vec<_> = monitor::alerts(&d.asoc, 0)
        .unwrap()
        .into_iter()
        .filter(|a| a.text.contains("clock"))
        .collect();
    assert!(still.is_empty(), "{still:?}");
}

/// R2 and R1 together: central's clock ran a day ahead, central wrote, BSOC took it; then
/// central's disk died and its backup from before was put back, its clock set right. The
/// restored central never issued those stamps, but BSOC sends back central's lost write with
/// them, and stamps its own writes after them: central's own changes vouch for the time, and
/// BSOC is not held (it used to be, until central's time caught up, and the restore waited on
/// it meanwhile).
#[test]
fn r2_a_shop_that_took_the_stamps_of_a_central_clock_ahead_is_not_held_by_central_restored() {
    let (mut d, bsoc_clock) = bsoc_on_a_clock_of_its_own();
    let clock = d.clock.clone();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    clock.set(hhmm(9, 0) + DAY_MS);
    bsoc_clock.set(hhmm(9, 0));
    d.asoc
        .write(|tx| tx.set("customers", "ASOC-1", "name", "keyed in at central"))
        .unwrap();
    sync_all(&d, &[&d.bsoc], 1);
    assert_eq!(
        name(&d.bsoc, "ASOC-1"),
        Some(Value::from("keyed in at central"))
    );
    // 9:30: central's disk dies; its backup is put back and its clock set right.
    d.at(9, 30);
    restore_central(&mut d, backup);
    bsoc_clock.set(hhmm(9, 40));
    d.at(9, 40);
    d.bsoc
        .write(|tx| {
            tx.set("customers", "ASOC-1", "name", "edited at BSOC")?;
            tx.set("customers", "BSOC-1", "name", "new at BSOC")
        })
        .unwrap();
    sync_all(&d, &[&d.bsoc, &d.csoc], 3);
    let rows = journal::rows(&d.asoc, Some(common::BSOC), None, None).unwrap();
    assert!(
        rows.iter().all(|r| matches!(r.hold, journal::Hold::None)
            && !r.error.as_deref().unwrap_or("").contains("clock")),
        "{rows:?}"
    );
    assert!(!central::restore_under_way(&d.asoc).unwrap());
    assert_eq!(name(&d.asoc, "ASOC-1"), Some(Value::from("edited at BSOC")));
    assert_eq!(name(&d.asoc, "BSOC-1"), Some(Value::from("new at BSOC")));
    assert_eq!(content(&d.bsoc), content(&d.asoc));
    // The alert that BSOC's clock is behind, raised before central took its lost change back,
    // says that central's lost stamps may explain it.
    let raised = outpost::replicator::monitor::evaluate(
        &d.asoc,
        hhmm(9, 45),
        &outpost::replicator::monitor::Thresholds::default(),
        None,
    )
    .unwrap();
    let about_bsoc: Vec<_> = raised
        .iter()
        .filter(|a| a.text.contains("BSOC's clock"))
        .collect();
    assert!(!about_bsoc.is_empty(), "{raised:?}");
    assert!(
        about_bsoc
            .iter()
            .all(|a| a.text.contains("Central is being restored from a backup")),
        "{about_bsoc:?}"
    );
    assert_eq!(content(&d.csoc), content(&d.asoc));
}

/// R1 after central's restore: a shop opened after central's backup (added, set up from its
/// bootstrap, synced) is unknown to the restored central. Nothing it wrote may be lost: its
/// syncs are refused with a clear reason until the person responsible adds it again with the
/// same id and code (`central add-remote` writes a bootstrap: the shop keeps its store, which
/// central takes as the first to emit under that provisioning), and then what it wrote before
/// and after the loss reaches central and every shop.
#[test]
fn r1_a_shop_opened_after_central_s_backup_is_added_again_and_loses_nothing() {
    let mut d = Deployment::new();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    d.at(10, 0);
    let dsoc = add_remote(&d, 4, "DSOC");
    set_deployment_config(&d);
    customer_reaches(&d, &dsoc, "DSOC-1", "DSOC's first customer", &d.bsoc);
    d.at(11, 0);
    restore_central(&mut d, backup);
    dsoc.write(|tx| tx.set("customers", "DSOC-2", "name", "keyed in after the loss"))
        .unwrap();
    let (path, _) = files::emit_to(&dsoc, &d.usb(), SyncMode::Immediate).unwrap();
    let refused = files::receive_from(&d.asoc, &path, Some(dsoc.site().id))
        .unwrap_err()
        .to_string();
    assert!(refused.contains("which is not a known remote"), "{refused}");
    // The other shops relay DSOC-1, which central does not take from them yet (a site it does
    // not know), and the restore does not wait for DSOC.
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    assert_eq!(name(&d.asoc, "DSOC-1"), None);
    // The person responsible adds DSOC again, as it was; DSOC keeps its store.
    create_remote(&d, 4, "DSOC");
    set_deployment_config(&d);
    central::write_bootstrap(&d.asoc, outpost::SiteId(4), Vec::new(), false).unwrap();
    sync_all(&d, &[&d.bsoc, &d.csoc, &dsoc], 3);
    for key in ["DSOC-1", "DSOC-2"] {
        for s in [&d.asoc, &d.bsoc, &d.csoc, &dsoc] {
            assert!(name(s, key).is_some(), "{key} at {}", s.site().code);
        }
    }
    assert!(!central::restore_under_way(&d.asoc).unwrap());
    for s in [&d.bsoc, &d.csoc, &dsoc] {
        assert_eq!(content(s), content(&d.asoc), "{}", s.site().code);
    }
}

/// R2, R1 and M2 together: central's clock ran a day ahead, BSOC took its stamps, central was
/// restored from a backup from before. BSOC's first emission after the restore, made before it
/// heard of the restore, is held (its writes follow central's lost ones, which it did not send
/// back): central's automaton must still give it a return (an immediate sync), or a shop that
/// syncs immediately would never hear of the restore and be held for ever. With that return
/// applied, its next emission carries central's lost change back and goes through. (A store of
/// this version says in its emission the newest stamp a central sent it, which vouches for its
/// writes: the emission here is made as by an earlier version, without it, to be held.)
#[test]
fn r2_m2_a_shop_held_while_central_is_restored_gets_a_return_and_its_next_emission_goes_through() {
    use outpost::replicator::automaton::{CentralAutomaton, Command, run_central};
    let (mut d, bsoc_clock) = bsoc_on_a_clock_of_its_own();
    let clock = d.clock.clone();
    central::set_config(&d.asoc, &outpost::replicator::config::seed_example()).unwrap();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    clock.set(hhmm(9, 0) + DAY_MS);
    bsoc_clock.set(hhmm(9, 0));
    d.asoc
        .write(|tx| tx.set("customers", "ASOC-1", "name", "keyed in at central"))
        .unwrap();
    sync_all(&d, &[&d.bsoc], 1);
    d.at(9, 30);
    restore_central(&mut d, backup);
    bsoc_clock.set(hhmm(9, 40));
    d.at(9, 40);
    d.bsoc
        .write(|tx| tx.set("customers", "ASOC-1", "name", "edited at BSOC"))
        .unwrap();
    // CSOC reports first (nothing new of its own: taken at once), then BSOC's emission.
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    let (path, emitted) = files::emit_to(&d.bsoc, &d.usb(), SyncMode::Immediate).unwrap();
    let with_claim = std::fs::read(&path).unwrap();
    let without = rewrite(&with_claim, |h| {
        if let Some(c) = h.config.as_mut() {
            assert!(
                c.settings
                    .remove(outpost::replicator::incarnation::SETTLED_SETTING)
                    .is_some()
            );
        }
    });
    std::fs::write(&path, &without).unwrap();
    files::receive_from(&d.asoc, &path, Some(common::BSOC)).unwrap();
    let config = central::config(&d.asoc).unwrap().unwrap();
    let mut automaton = CentralAutomaton::new(&config, hhmm(9, 40)).unwrap();
    let run = run_central(&d.asoc, &mut automaton, vec![Command::Process(emitted.id)]).unwrap();
    let held = journal::row(&d.asoc, emitted.id).unwrap().unwrap();
    let reason = held.error.clone().unwrap_or_default();
    assert!(
        reason.contains(central::HELD_IN_RESTORE) && !reason.contains("clock is probably wrong"),
        "{reason}"
    );
    let returned: Vec<_> = run
        .returns
        .iter()
        .filter(|(site, _)| *site == common::BSOC)
        .collect();
    assert_eq!(returned.len(), 1, "{run:?}");
    // BSOC applies that return; its next emission carries central's lost change back.
    d.return_and_apply(&d.bsoc);
    let (_, next) = d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    assert_eq!(journal::row(&d.asoc, next).unwrap().unwrap().error, None);
    assert!(matches!(
        journal::row(&d.asoc, emitted.id).unwrap().unwrap().hold,
        journal::Hold::Superseded
    ));
    assert_eq!(name(&d.asoc, "ASOC-1"), Some(Value::from("edited at BSOC")));
}

/// R2: central's clock ran a day ahead and was set right, so its own newest stamp is a day
/// ahead of its clock. A shop that took none of those stamps (it has not synced since) and whose
/// clock is itself twelve hours ahead is still held: only what central sent a shop vouches for
/// that shop's stamps, not central's lead as a whole.
#[test]
fn r2_after_central_s_clock_ran_ahead_a_shop_that_never_took_its_stamps_and_is_ahead_is_held() {
    let (d, bsoc_clock) = bsoc_on_a_clock_of_its_own();
    let clock = d.clock.clone();
    sync_all(&d, &[&d.bsoc], 1);
    // 9:00: central's clock says a day later; it writes; set right at 9:30.
    clock.set(hhmm(9, 0) + DAY_MS);
    d.asoc
        .write(|tx| tx.set("customers", "ASOC-1", "name", "keyed in at central"))
        .unwrap();
    d.at(9, 30);
    // BSOC's clock runs twelve hours ahead; it has not synced since central's write.
    bsoc_clock.set(hhmm(9, 40) + DAY_MS / 2);
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-1", "name", "keyed in at BSOC"))
        .unwrap();
    d.at(9, 40);
    let (_, id) = d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    let row = journal::row(&d.asoc, id).unwrap().unwrap();
    let error = row.error.unwrap_or_default();
    assert!(
        error.starts_with("quarantined: BSOC's changes are stamped 12.0 h ahead"),
        "{error}"
    );
    assert_eq!(name(&d.asoc, "BSOC-1"), None);
}

/// `at` creates customer `key`, named "created at 8:00", and every remote syncs once.
fn customer_created_at_8(d: &Deployment, at: &outpost::Store, key: &str) {
    at.write(|tx| tx.set("customers", key, "name", "created at 8:00"))
        .unwrap();
    sync_all(d, &[&d.bsoc, &d.csoc], 1);
}

/// Central's backup, then 9:00 a day ahead on central's clock (CSOC's shares it) and BSOC's:
/// gives the backup.
fn backup_then_both_clocks_a_day_ahead(d: &Deployment, bsoc_clock: &ManualClock) -> outpost::Store {
    let backup = d.asoc.copy_in_memory(central_config(d)).unwrap();
    d.clock.set(hhmm(9, 0) + DAY_MS);
    bsoc_clock.set(hhmm(9, 0) + DAY_MS);
    backup
}

/// 9:30: central's clock is set right (CSOC's shares it); BSOC's, `ahead` ahead of 9:40, names
/// customer `key` "edited at BSOC" and is held; the procedure follows — its clock set right,
/// then `restamp` — and after two rounds every site holds the edit, and the same content.
fn bsoc_s_held_edit_restamped_reaches_every_site(
    d: &Deployment,
    bsoc_clock: &ManualClock,
    key: &str,
    ahead: u64,
) {
    d.at(9, 30);
    bsoc_clock.set(hhmm(9, 40) + ahead);
    d.bsoc
        .write(|tx| tx.set("customers", key, "name", "edited at BSOC"))
        .unwrap();
    let (_, id) = d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    let error = journal::row(&d.asoc, id).unwrap().unwrap().error;
    assert!(
        error.as_deref().unwrap_or("").starts_with("quarantined"),
        "{error:?}"
    );
    bsoc_clock.set(hhmm(9, 45));
    d.at(9, 45);
    assert_eq!(remote::restamp(&d.bsoc).unwrap(), 1);
    sync_all(d, &[&d.bsoc, &d.csoc], 2);
    all_hold(d, &[&d.bsoc, &d.csoc], &[(key, "edited at BSOC")]);
}

/// R2 after both clocks ran ahead: central's clock and BSOC's were a day ahead together, so
/// central took BSOC's new name for a customer created the day before (within the bound of its
/// own clock), and CSOC got it. Central's clock is set right; BSOC's, still ahead, edits the
/// name again and is held; its clock is set right and `restamp` run. The edit, stamped again,
/// must still come after the name it replaced, which every other site holds with its day-ahead
/// stamp: stamped from the clock alone, it lost to that name everywhere but at BSOC (which no
/// longer held the old name and skipped it as known), a silent difference of values.
#[test]
fn r2_a_shop_restamped_after_its_write_stamped_ahead_reached_the_others_keeps_its_later_edit() {
    let (d, bsoc_clock) = bsoc_on_a_clock_of_its_own();
    customer_created_at_8(&d, &d.bsoc, "BSOC-1");
    d.clock.set(hhmm(9, 0) + DAY_MS);
    bsoc_clock.set(hhmm(9, 0) + DAY_MS);
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-1", "name", "first"))
        .unwrap();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    assert_eq!(name(&d.csoc, "BSOC-1"), Some(Value::from("first")));
    bsoc_s_held_edit_restamped_reaches_every_site(&d, &bsoc_clock, "BSOC-1", DAY_MS);
}

/// R2 with a creation (found by the simulator, seeds 102772, 105691 and 118649 of `--sites 5
/// --days 3`): central's clock ran a day ahead and BSOC took central's stamps then (its clock
/// reads after them until time catches up). Central's clock set right, BSOC keys in a customer,
/// stamped after central's stamps, and central takes it (they vouch for it) — but no return or
/// acknowledgement reaches BSOC. BSOC's clock then jumps ahead; its next write is held, its
/// clock set right and `restamp` stamps again what central has not acknowledged, the customer's
/// creation too: after the newest stamp other sites hold, so after the old creation. Central
/// keeps the earlier creation (a record's creation is its earliest), and BSOC, which knows the
/// old one's number, kept its new one: the stores differed for ever in when the record was
/// created. Central returns the later creation refused under R2 with its own, which BSOC takes.
///
/// With central two days ahead (a review's case) the restamped creation has the old one's stamp
/// (past 36 hours behind, the clock's logical counter no longer follows it): the earlier by
/// number is kept, the same way.
#[test]
fn r2_a_creation_central_took_then_restamped_comes_back_to_central_s() {
    a_creation_central_took_then_restamped(DAY_MS);
    a_creation_central_took_then_restamped(2 * DAY_MS);
}

/// The test above, central's clock `ahead`.
fn a_creation_central_took_then_restamped(ahead: u64) {
    let d = bsoc_creates_on_central_s_stamps_then_restamps(
        ahead,
        (
            "customers",
            "BSOC-9",
            "name",
            "keyed in on central's stamps",
        ),
    );
    all_hold(
        &d,
        &[&d.bsoc, &d.csoc],
        &[("BSOC-9", "keyed in on central's stamps")],
    );
}

/// Central's clock runs `ahead`; BSOC, having taken a write of central's, creates a record
/// (`table`, `key`, one `field` set to `value`) on central's stamps and central takes it. BSOC's
/// clock then runs a day further ahead: its next write (customer BSOC-9's city) is held, and it
/// restamps, the creation with it. Then every remote syncs twice.
fn bsoc_creates_on_central_s_stamps_then_restamps(
    ahead: u64,
    (table, key, field, value): (&str, &str, &str, &str),
) -> Deployment {
    let (d, bsoc_clock) = bsoc_on_a_clock_of_its_own();
    customer_created_at_8(&d, &d.asoc, "ASOC-1");
    d.clock.set(hhmm(9, 0) + ahead);
    d.asoc
        .write(|tx| tx.set("customers", "ASOC-1", "name", "keyed in at central"))
        .unwrap();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    d.at(9, 10);
    bsoc_clock.set(hhmm(9, 10));
    d.bsoc.write(|tx| tx.set(table, key, field, value)).unwrap();
    let (_, id) = d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    assert_eq!(journal::row(&d.asoc, id).unwrap().unwrap().error, None);
    d.at(9, 30);
    bsoc_clock.set(hhmm(9, 30) + ahead + DAY_MS);
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-9", "city", "Lyon"))
        .unwrap();
    let (_, id) = d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    let error = journal::row(&d.asoc, id).unwrap().unwrap().error;
    assert!(error.unwrap_or_default().starts_with("quarantined"));
    bsoc_clock.set(hhmm(9, 45));
    d.at(9, 45);
    assert!(remote::restamp(&d.bsoc).unwrap() > 0);
    sync_all(&d, &[&d.bsoc, &d.csoc], 2);
    d
}

/// The same with a document: BSOC creates D9 on central's stamps and restamps it. Its
/// restamped creation of D9 is refused (R5: the document was created already, by BSOC itself)
/// and the refusal says so, rather than naming the same site twice as two creators. Every site
/// holds BSOC's document.
#[test]
fn r5_a_document_central_took_then_restamped_is_refused_as_created_before_by_its_own_site() {
    let d = bsoc_creates_on_central_s_stamps_then_restamps(
        DAY_MS,
        ("sales_documents", "D9", "customer", "K-B"),
    );
    let refused = remote::refused_by_central(&d.bsoc).unwrap();
    let r5: Vec<&str> = refused
        .iter()
        .filter(|r| r.rejection.refusal.rule == outpost::engine::Rule::R5)
        .map(|r| r.rejection.refusal.reason.as_str())
        .collect();
    assert!(!r5.is_empty(), "{refused:?}");
    for reason in r5 {
        assert!(
            reason.contains("created already by site 02 itself"),
            "{reason}"
        );
    }
    let a = d.asoc.record("sales_documents", "D9").unwrap().unwrap();
    assert_eq!(a.creator, common::BSOC);
    for s in [&d.bsoc, &d.csoc] {
        assert_eq!(content(s), content(&d.asoc), "{}", s.site().code);
    }
}

/// The same with central's write: central's clock ran a day ahead and it renamed a customer
/// created before; BSOC took it, and its own clock, running two days ahead (beyond what central
/// vouches for), edited that name and was held. Its restamped edit must come after central's.
#[test]
fn r2_a_shop_restamped_after_it_edited_a_write_of_central_stamped_ahead_keeps_its_edit() {
    let (d, bsoc_clock) = bsoc_on_a_clock_of_its_own();
    customer_created_at_8(&d, &d.asoc, "ASOC-1");
    d.clock.set(hhmm(9, 0) + DAY_MS);
    d.asoc
        .write(|tx| tx.set("customers", "ASOC-1", "name", "keyed in at central"))
        .unwrap();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    bsoc_s_held_edit_restamped_reaches_every_site(&d, &bsoc_clock, "ASOC-1", 2 * DAY_MS);
}

/// R2, twice: BSOC's clock runs three days ahead, it is held, set right and restamped; its
/// writes go through. Weeks later its clock jumps a day ahead, and the same procedure must
/// release it again. The first restamp left the old commits' stamps (three days ahead) among
/// those the store keeps until central confirms them; central's next return confirmed those
/// numbers (the emission covers them, though no change of them travels), and the store took
/// them for stamps another site holds: the second restamp stamped its writes three days
/// ahead, and central held them until that time came.
#[test]
fn r2_a_shop_whose_clock_runs_ahead_twice_is_released_by_restamp_both_times() {
    let (d, bsoc_clock) = bsoc_on_a_clock_of_its_own();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    for (i, ahead) in [(1, 3 * DAY_MS), (2, DAY_MS)] {
        let key = format!("BSOC-{i}");
        let h = 8 + 2 * i;
        bsoc_clock.set(hhmm(h, 0) + ahead);
        d.bsoc
            .write(|tx| tx.set("customers", &key, "name", "keyed in ahead"))
            .unwrap();
        d.at(h, 0);
        let (_, id) = d.emit_and_process(&d.bsoc, SyncMode::Immediate);
        let error = journal::row(&d.asoc, id).unwrap().unwrap().error;
        assert!(
            error.as_deref().unwrap_or("").starts_with("quarantined"),
            "{error:?}"
        );
        d.return_and_apply(&d.bsoc);
        bsoc_clock.set(hhmm(h, 10));
        d.at(h, 10);
        assert_eq!(remote::restamp(&d.bsoc).unwrap(), 2, "creation and name");
        let (_, id) = d.emit_and_process(&d.bsoc, SyncMode::Immediate);
        let row = journal::row(&d.asoc, id).unwrap().unwrap();
        assert_eq!(row.error, None, "round {i}: released by the restamp");
        assert_eq!(name(&d.asoc, &key), Some(Value::from("keyed in ahead")));
        d.return_and_apply(&d.bsoc);
        assert!(d.bsoc.clock_high_water().physical_ms() < hhmm(h + 1, 0));
    }
}

/// BSOC creates customer BSOC-1 at 8:00 and every remote syncs; at 9:00 BSOC's clock runs six
/// minutes ahead (the bound is five), it renames BSOC-1 "stamped ahead", and central holds its
/// emission.
fn bsoc_held_for_a_write_six_minutes_ahead() -> (Deployment, ManualClock) {
    let (d, bsoc_clock) = bsoc_on_a_clock_of_its_own();
    customer_created_at_8(&d, &d.bsoc, "BSOC-1");
    bsoc_names_bsoc_1_six_minutes_ahead_and_is_held(&d, &bsoc_clock);
    (d, bsoc_clock)
}

/// At 9:00 (9:06 by BSOC's clock) BSOC names BSOC-1 "stamped ahead" and syncs: held.
fn bsoc_names_bsoc_1_six_minutes_ahead_and_is_held(d: &Deployment, bsoc_clock: &ManualClock) {
    d.at(9, 0);
    bsoc_clock.set(hhmm(9, 6));
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-1", "name", "stamped ahead"))
        .unwrap();
    let (_, held) = d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    let error = journal::row(&d.asoc, held).unwrap().unwrap().error;
    assert!(error.unwrap_or_default().starts_with("quarantined"));
}

/// 9:03: BSOC names BSOC-1 "edited at 9:03"; at 9:05 every remote syncs twice, and every site
/// holds `name` for it, and the same content.
fn bsoc_edits_at_9_03_then_all_hold(d: &Deployment, bsoc_clock: &ManualClock, name: &str) {
    bsoc_clock.set(hhmm(9, 3));
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-1", "name", "edited at 9:03"))
        .unwrap();
    bsoc_clock.set(hhmm(9, 5));
    d.at(9, 5);
    sync_all(d, &[&d.bsoc, &d.csoc], 2);
    all_hold(d, &[&d.bsoc, &d.csoc], &[("BSOC-1", name)]);
}

/// R2: central judges a stamp by its clock when the emission reached it, not when it gets to
/// processing it. BSOC's clock ran six minutes ahead (the bound is five): held. Its clock set
/// right, its next emission — carrying the same write — reaches central at 9:00, and BSOC
/// restamps at 9:00:30 (the write is still 5.5 minutes ahead of its clock). Central processes
/// the emission at 9:01:30, when the old stamp was only 4.5 minutes ahead of its clock: it used
/// to take it, after BSOC had stamped the write again below it, and BSOC's later edit of the
/// field lost everywhere but at BSOC (a review found this race).
#[test]
fn r2_an_emission_waiting_at_central_when_its_shop_restamps_is_judged_by_its_time_of_arrival() {
    let (d, bsoc_clock) = bsoc_held_for_a_write_six_minutes_ahead();
    // BSOC's clock is set right; its next emission reaches central, which has not processed it
    // yet when BSOC restamps.
    bsoc_clock.set(hhmm(9, 0));
    let (path, waiting) = files::emit_to(&d.bsoc, &d.usb(), SyncMode::Immediate).unwrap();
    files::receive_from(&d.asoc, &path, Some(common::BSOC)).unwrap();
    bsoc_clock.set(hhmm(9, 0) + 30_000);
    assert_eq!(remote::restamp(&d.bsoc).unwrap(), 1);
    d.clock.set(hhmm(9, 1) + 30_000);
    central::process_ready(&d.asoc).unwrap();
    let error = journal::row(&d.asoc, waiting.id).unwrap().unwrap().error;
    assert!(
        error.as_deref().unwrap_or("").starts_with("quarantined"),
        "{error:?}"
    );
    bsoc_edits_at_9_03_then_all_hold(&d, &bsoc_clock, "edited at 9:03");
}

/// R2 and R1 together (the simulator's seed 86230): central's clock and BSOC's ran a day ahead
/// together, so the central of then took BSOC's write, and CSOC got it; then central's disk
/// died and its backup from before was put back, its clock right. The restored central never
/// saw those stamps, but the remotes report them: CSOC, whose clock was never wrong, sends
/// BSOC's write back, and BSOC — held for its later edit, its clock set right and restamped —
/// stamps that edit after the write CSOC holds. Neither may be held for stamps the lost central
/// took: they would be until the time caught up, and the restore with them.
#[test]
fn r1_r2_stamps_the_lost_central_took_while_both_clocks_ran_ahead_hold_no_emission_after_its_restore()
 {
    let (mut d, bsoc_clock) = bsoc_on_a_clock_of_its_own();
    customer_created_at_8(&d, &d.bsoc, "BSOC-1");
    let backup = backup_then_both_clocks_a_day_ahead(&d, &bsoc_clock);
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-1", "name", "first"))
        .unwrap();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    assert_eq!(name(&d.csoc, "BSOC-1"), Some(Value::from("first")));
    // 9:30: central's disk dies; its backup is put back, its clock right (CSOC's with it).
    d.at(9, 30);
    restore_central(&mut d, backup);
    bsoc_clock.set(hhmm(9, 40) + DAY_MS);
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-1", "name", "second"))
        .unwrap();
    sync_all(&d, &[&d.bsoc, &d.csoc], 2);
    // BSOC's clock is still a day ahead: the procedure, clock set right then `restamp`.
    bsoc_clock.set(hhmm(9, 50));
    d.at(9, 50);
    let before = journal::rows(&d.asoc, Some(common::BSOC), None, None).unwrap();
    assert!(remote::restamp(&d.bsoc).unwrap() > 0);
    sync_all(&d, &[&d.bsoc, &d.csoc], 3);
    // Held for clock skew (not for the restore): all of a site's emissions, or those since the
    // restamp.
    let held = |site, since_restamp: bool| {
        journal::rows(&d.asoc, Some(site), None, None)
            .unwrap()
            .into_iter()
            .filter(|r| !since_restamp || !before.iter().any(|b| b.id == r.id))
            .filter(|r| {
                r.error
                    .as_deref()
                    .unwrap_or("")
                    .contains("ahead of central's clock")
            })
            .filter(|r| {
                !r.error
                    .as_deref()
                    .unwrap_or("")
                    .contains(central::HELD_IN_RESTORE)
            })
            .count()
    };
    assert_eq!(held(common::CSOC, false), 0, "CSOC's clock was never wrong");
    assert_eq!(
        held(common::BSOC, true),
        0,
        "BSOC's restamped edit comes after what the lost central took"
    );
    assert!(!central::restore_under_way(&d.asoc).unwrap());
    all_hold(&d, &[&d.bsoc, &d.csoc], &[("BSOC-1", "second")]);
}

/// R2 during central's restore: what the lost central sent one remote vouches for that remote
/// only. Central's clock ran a day ahead and it wrote a customer, which CSOC took (BSOC did not
/// sync then); central was then put back from a backup from before, its clock right. CSOC sends
/// the lost customer back, and its stamp vouches for CSOC's writes. BSOC's clock is itself a day
/// ahead now: it took none of those stamps, and is held as it would have been by the lost
/// central.
#[test]
fn r1_r2_during_central_s_restore_a_shop_that_took_none_of_the_lost_stamps_and_is_ahead_is_held() {
    let (mut d, bsoc_clock) = bsoc_on_a_clock_of_its_own();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    d.clock.set(hhmm(9, 0) + DAY_MS);
    d.asoc
        .write(|tx| tx.set("customers", "ASOC-1", "name", "keyed in at central"))
        .unwrap();
    sync_all(&d, &[&d.csoc], 1);
    d.at(9, 30);
    restore_central(&mut d, backup);
    // BSOC's clock runs a day ahead: its write is stamped as late as central's lost one.
    bsoc_clock.set(hhmm(9, 1) + DAY_MS);
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-1", "name", "keyed in ahead"))
        .unwrap();
    // Both report; CSOC, having applied a return of the restored central, sends the lost
    // customer back. BSOC is held: not for the restore, for its clock.
    sync_all(&d, &[&d.bsoc, &d.csoc], 3);
    assert_eq!(
        name(&d.asoc, "ASOC-1"),
        Some(Value::from("keyed in at central"))
    );
    let rows = journal::rows(&d.asoc, Some(common::BSOC), None, None).unwrap();
    assert!(
        rows.iter().any(|r| r
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("quarantined: BSOC's changes are stamped")
                && !e.contains(central::HELD_IN_RESTORE))),
        "{rows:?}"
    );
    assert_eq!(name(&d.asoc, "BSOC-1"), None);
}

/// R2 and R1: central's clock ran a day ahead and it wrote a customer, which BSOC and CSOC both
/// took; BSOC's next write is stamped after it. Central is put back from a backup from before.
/// CSOC sends the lost customer back first; BSOC's emission, made before it knew, carries it too,
/// but central knows it by then and skips it — and it is what vouches for BSOC's write. It used
/// to be held a round more (until a return told BSOC what central holds).
#[test]
fn r1_r2_a_shop_whose_copy_of_central_s_lost_change_came_second_is_not_held_for_stamps_after_it() {
    let (mut d, bsoc_clock) = bsoc_on_a_clock_of_its_own();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    d.clock.set(hhmm(9, 0) + DAY_MS);
    bsoc_clock.set(hhmm(9, 0));
    d.asoc
        .write(|tx| tx.set("customers", "ASOC-1", "name", "keyed in at central"))
        .unwrap();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    d.at(9, 30);
    restore_central(&mut d, backup);
    bsoc_clock.set(hhmm(9, 40));
    d.at(9, 40);
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-1", "name", "keyed in at BSOC"))
        .unwrap();
    // Both report and get a return of the restored central, which lacks ASOC-1.
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    // CSOC sends it back first.
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    assert_eq!(
        name(&d.asoc, "ASOC-1"),
        Some(Value::from("keyed in at central"))
    );
    let (_, id) = d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    let row = journal::row(&d.asoc, id).unwrap().unwrap();
    assert!(
        matches!(row.hold, journal::Hold::None),
        "BSOC's clock is right: {:?}",
        row.error
    );
    assert_eq!(
        name(&d.asoc, "BSOC-1"),
        Some(Value::from("keyed in at BSOC"))
    );
}

/// R2 and R1 (the simulator's seed 5017): central's clock and BSOC's ran a day ahead together;
/// central took BSOC's write and confirmed it, and no other shop got it before central's disk
/// died; its backup from before was put back, its clock right. BSOC, still ahead, is held; its
/// clock is set right and restamped — but a restamp never stamps below what BSOC counts as
/// held elsewhere (the write central confirmed), so its writes stayed a day ahead and every
/// emission was held until the time came. BSOC's emissions say the newest stamp a central
/// sent it or took from it, and that vouches for it as a return of central's does.
#[test]
fn r1_r2_a_shop_whose_writes_only_the_lost_central_took_is_released_by_restamp_after_its_restore() {
    let (mut d, bsoc_clock) = bsoc_on_a_clock_of_its_own();
    customer_created_at_8(&d, &d.bsoc, "BSOC-1");
    let backup = backup_then_both_clocks_a_day_ahead(&d, &bsoc_clock);
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-1", "name", "keyed in ahead"))
        .unwrap();
    sync_all(&d, &[&d.bsoc], 1);
    assert_eq!(name(&d.asoc, "BSOC-1"), Some(Value::from("keyed in ahead")));
    d.at(9, 30);
    restore_central(&mut d, backup);
    bsoc_clock.set(hhmm(9, 40) + DAY_MS);
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-2", "name", "keyed in after"))
        .unwrap();
    sync_all(&d, &[&d.bsoc, &d.csoc], 2);
    assert_eq!(name(&d.asoc, "BSOC-2"), None, "held: BSOC's clock is wrong");
    bsoc_clock.set(hhmm(9, 50));
    d.at(9, 50);
    assert!(remote::restamp(&d.bsoc).unwrap() > 0);
    sync_all(&d, &[&d.bsoc, &d.csoc], 3);
    assert!(!central::restore_under_way(&d.asoc).unwrap());
    all_hold(
        &d,
        &[&d.bsoc, &d.csoc],
        &[("BSOC-1", "keyed in ahead"), ("BSOC-2", "keyed in after")],
    );
}

/// A till creates a customer (`create`: the engine numbers it), `write` being the host's write.
fn create_customer(store: &outpost::Store, name: &str) -> outpost::Result<String> {
    store.write(|tx| {
        let key = tx.new_key("customers")?;
        tx.set("customers", &key, "name", name)?;
        Ok(key)
    })
}

/// R7 and R1 together: a shop is reprovisioned while a till at central holds a document
/// reserved. Its bootstrap leaves the document's last commit out (held back while reserved),
/// yet central counted the new store as knowing all it held: once the document was released,
/// the store's first return (fetched before its first emission, as `remote run` does) claimed
/// that commit covered without carrying it, and the new store never got it — silently.
#[test]
fn r1_r7_a_shop_set_up_again_while_central_holds_a_document_reserved_gets_it_once_released() {
    let d = Deployment::new();
    d.asoc
        .write(|tx| tx.set("sales_documents", "ASOC-D1", "total", dec("10.00")))
        .unwrap();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    d.asoc
        .reserve("sales_documents", "ASOC-D1", "till-1")
        .unwrap();
    d.asoc
        .write_as("till-1", |tx| {
            tx.set("sales_documents", "ASOC-D1", "total", dec("12.50"))
        })
        .unwrap();
    let bsoc = set_up_again(&d, outpost::SiteId(2));
    d.asoc
        .release("sales_documents", "ASOC-D1", "till-1")
        .unwrap();
    d.return_and_apply(&bsoc);
    sync_all(&d, &[&bsoc, &d.csoc], 2);
    let total = |s: &outpost::Store| {
        s.record("sales_documents", "ASOC-D1")
            .unwrap()
            .and_then(|r| r.get("total").cloned())
    };
    assert_eq!(total(&bsoc), Some(dec("12.50")));
    assert_eq!(content(&bsoc), content(&d.asoc));
}

/// A shop's disk is lost and the site reprovisioned (docs/OPERATIONS.md). The new store holds,
/// from its bootstrap, the customers the lost one created; a till's `create` must not give one
/// of their keys again: the new customer's fields would merge into the old one's, at every site,
/// silently.
#[test]
fn r1_a_shop_set_up_again_numbers_its_new_records_past_those_the_lost_store_created() {
    let d = Deployment::new();
    let dupont = create_customer(&d.bsoc, "Dupont").unwrap();
    d.bsoc
        .write(|tx| tx.set("customers", &dupont, "city", "Lyon"))
        .unwrap();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    let bsoc = set_up_again(&d, outpost::SiteId(2));
    assert_eq!(name(&bsoc, &dupont), Some(Value::from("Dupont")));
    let martin = create_customer(&bsoc, "Martin").unwrap();
    assert_ne!(martin, dupont, "a key given twice");
    sync_all(&d, &[&bsoc, &d.csoc], 2);
    all_hold(
        &d,
        &[&bsoc, &d.csoc],
        &[(&dupont, "Dupont"), (&martin, "Martin")],
    );
    let city = |key: &str| {
        d.asoc
            .record("customers", key)
            .unwrap()
            .and_then(|r| r.get("city").cloned())
    };
    assert_eq!(city(&dupont), Some(Value::from("Lyon")));
    assert_eq!(city(&martin), None, "Dupont's city given to Martin");
}

/// Central is put back from a backup; a customer it created after the backup is lost with its
/// disk but held by the shops, which send it back. Until they have, central cannot know which
/// numbers it gave since the backup: its `create` is refused, with the reason, rather than give
/// one of them again (the records would merge, silently); once every shop has sent back what it
/// held, it numbers past them.
#[test]
fn r1_central_put_back_from_a_backup_gives_no_key_it_gave_after_the_backup() {
    let mut d = Deployment::new();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    let dupont = create_customer(&d.asoc, "Dupont").unwrap();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    assert_eq!(name(&d.csoc, &dupont), Some(Value::from("Dupont")));
    restore_central(&mut d, backup);
    assert_eq!(name(&d.asoc, &dupont), None, "lost with central's disk");
    let refused = create_customer(&d.asoc, "Martin").unwrap_err();
    assert!(
        refused.to_string().contains("backup"),
        "the reason names the restore: {refused}"
    );
    sync_all(&d, &[&d.bsoc, &d.csoc], 3);
    assert_eq!(central::restore_status(&d.asoc).unwrap(), None);
    let martin = create_customer(&d.asoc, "Martin").unwrap();
    assert_ne!(martin, dupont, "a key given twice");
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    all_hold(
        &d,
        &[&d.bsoc, &d.csoc],
        &[(&dupont, "Dupont"), (&martin, "Martin")],
    );
}

/// DSOC's backup is taken (given back); then, at 10:00, DSOC writes customers DSOC-LOST-1..3,
/// one commit each.
fn backup_then_three_lost_customers(d: &Deployment, dsoc: &outpost::Store) -> outpost::Store {
    let config = outpost::StoreConfig::new(
        dsoc.site().clone(),
        outpost::retail::schema(),
        d.clock.clone(),
    );
    let backup = dsoc.copy_in_memory(config).unwrap();
    d.at(10, 0);
    for i in 1..=3 {
        dsoc.write(|tx| {
            let key = format!("DSOC-LOST-{i}");
            tx.set("customers", &key, "name", "by the lost store")
        })
        .unwrap();
    }
    backup
}

/// After central's restore, the remote that holds a restored shop's lost changes may have got
/// them from its bootstrap rather than from a return: a shop whose machine was set up after
/// those changes reached central. Its emissions must say their stamps too (`tips`), so that the
/// restored shop's change numbered as one of them is refused. Without the bootstrap's tips,
/// central took the new change for the lost one: the shop set up later kept the lost store's
/// fields under a record that central and the others held without them (silent divergence;
/// the simulator's seed 50402).
#[test]
fn r1_a_shop_restored_with_central_is_refused_by_the_stamps_a_shop_holds_from_its_bootstrap() {
    let mut d = Deployment::new();
    let dsoc = add_remote(&d, 4, "DSOC");
    create_remote(&d, 5, "ESOC");
    let mut config = outpost::replicator::config::seed_example();
    for (id, code) in [(4, "DSOC"), (5, "ESOC")] {
        let mut settings = config.remotes[0].clone();
        settings.id = outpost::SiteId(id);
        settings.code = code.into();
        config.remotes.push(settings);
    }
    central::set_config(&d.asoc, &config).unwrap();
    sync_all(&d, &[&d.bsoc, &d.csoc, &dsoc], 1);
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    let dsoc_backup = backup_then_three_lost_customers(&d, &dsoc);
    d.emit_and_process(&dsoc, SyncMode::Immediate);
    // ESOC's machine is set up now: its bootstrap holds the lost customers; BSOC and CSOC have
    // not received them.
    let esoc = set_up_from_bootstrap(&d, outpost::SiteId(5));
    assert_eq!(
        name(&esoc, "DSOC-LOST-3"),
        Some(Value::from("by the lost store"))
    );
    assert_eq!(name(&d.bsoc, "DSOC-LOST-3"), None);
    d.at(11, 0);
    restore_central(&mut d, backup);
    // DSOC's disk is lost too; put back from its backup, it numbers its new customers as the
    // lost ones.
    let dsoc = dsoc_backup;
    d.at(11, 10);
    new_customers(&dsoc, 1..=4);
    d.emit_and_process(&esoc, SyncMode::Immediate);
    let why = others_report_then_dsoc_is_refused_by_a_stamp(&d, &dsoc);
    assert!(why.contains("carries a change"), "{why}");
}

/// DSOC emits a file, which stays on the USB stick (set aside): its path.
fn file_left_on_the_stick(d: &Deployment, dsoc: &outpost::Store) -> std::path::PathBuf {
    let (stick, _) = files::emit_to(dsoc, &d.usb(), SyncMode::Immediate).unwrap();
    let aside = d.root.path().join("stick.outpost");
    std::fs::rename(&stick, &aside).unwrap();
    aside
}

/// DSOC synced, then backed up; it writes DSOC-LOST-1..3 and emits `lost` files, each lost on
/// the way, then one that stays on the USB stick; its disk dies and the backup is put back.
/// Gives the deployment, the restored DSOC and the stick's file.
fn the_lost_store_s_file_on_the_stick(
    lost: usize,
) -> (Deployment, outpost::Store, std::path::PathBuf) {
    let (d, dsoc, _) = dsoc_synced_then_a_backup();
    let dsoc_backup = backup_then_three_lost_customers(&d, &dsoc);
    files_lost_on_the_way(&d, &dsoc, lost);
    let stick = file_left_on_the_stick(&d, &dsoc);
    (d, dsoc_backup, stick)
}

/// `store` emits `n` files, each lost on the way.
fn files_lost_on_the_way(d: &Deployment, store: &outpost::Store, n: usize) {
    for _ in 0..n {
        let (lost, _) = files::emit_to(store, &d.usb(), SyncMode::Immediate).unwrap();
        std::fs::remove_file(lost).unwrap();
    }
}

/// The file on the stick, carried in, is refused for `why` and nothing of it is taken (`absent`,
/// a customer of the lost store, is not at central); DSOC's store is condemned: its next
/// emission is refused too.
fn stick_refused_then_the_store_condemned(
    d: &Deployment,
    dsoc: &outpost::Store,
    stick: &std::path::Path,
    why: &str,
    absent: &str,
) {
    let err = files::receive_from(&d.asoc, stick, Some(outpost::SiteId(4))).unwrap_err();
    assert!(
        matches!(&err, outpost::replicator::Error::WrongStore(w) if w.contains(why)),
        "{err}"
    );
    central::process_ready(&d.asoc).unwrap();
    assert_eq!(name(&d.asoc, absent), None);
    let err = refused_at_central(d, dsoc);
    assert!(
        matches!(&err, outpost::replicator::Error::WrongStore(w)
            if w.contains("as with its emissions since central first saw it")),
        "{err}"
    );
}

/// A shop's file is left on the USB stick; the shop's disk dies and its store is put back from a
/// backup, which syncs; central's disk dies too and is put back from a backup older than that
/// sync, so central keeps no trace of the emission number the restored store reused. The
/// restored store writes fewer commits than the lost one had, under the same numbers. When the
/// stick is found and its file carried in, it is older than the restored store's last emission
/// yet claims changes of its own that emission did not know: two stores numbered alike. It was
/// taken — its changes under numbers central held from the restored store dropped as already
/// had, the others applied, and the restored store never got them (silent divergence; the
/// simulator's seed 45197). It is refused, and the store condemned.
#[test]
fn r1_a_late_file_of_a_shop_s_lost_store_claiming_more_than_its_restored_store_is_refused() {
    let (mut d, dsoc, backup) = dsoc_synced_then_a_backup();
    let dsoc_backup = backup_then_three_lost_customers(&d, &dsoc);
    let stick = file_left_on_the_stick(&d, &dsoc);
    // DSOC's disk dies; put back from its backup, it syncs (nothing new) under the number the
    // file on the stick has.
    let dsoc = dsoc_backup;
    d.emit_and_process(&dsoc, SyncMode::Immediate);
    d.at(11, 0);
    restore_central(&mut d, backup);
    d.at(11, 10);
    new_customers(&dsoc, 1..=2);
    // Not taken yet (central waits for every remote's report), then taken.
    d.emit_and_process(&dsoc, SyncMode::Immediate);
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    d.emit_and_process(&dsoc, SyncMode::Immediate);
    assert_eq!(
        name(&d.asoc, "DSOC-NEW-2"),
        Some(Value::from("by the restored store"))
    );
    stick_refused_then_the_store_condemned(&d, &dsoc, &stick, "did not know", "DSOC-LOST-3");
}

/// A shop's third file since its last sync is left on the USB stick, the two before it lost on
/// the way; its disk dies and its store is put back from a backup, which writes two customers
/// under the numbers of the lost store's first two and syncs. The stick's file, carried in then,
/// is numbered past that sync and follows an emission central never received: nothing tied it
/// to the lost store. It was taken, its changes under the numbers central held dropped as
/// already had. The stamps tell the two stores apart: it is refused, and the store condemned.
#[test]
fn r1_a_file_of_a_shop_s_lost_store_numbered_past_its_restored_store_s_sync_is_refused_by_their_stamps()
 {
    let (d, dsoc, stick) = the_lost_store_s_file_on_the_stick(2);
    d.at(10, 20);
    new_customers(&dsoc, 1..=2);
    d.emit_and_process(&dsoc, SyncMode::Immediate);
    stick_refused_then_the_store_condemned(
        &d,
        &dsoc,
        &stick,
        "central holds as stamped",
        "DSOC-LOST-3",
    );
}

/// A shop's file is left on the USB stick; its disk dies and its store is put back from a
/// backup, which syncs three times without writing: the first two files are lost on the way.
/// When the stick's file is carried in, it is numbered below the newest emission central
/// received and follows the one it had before; central holds nothing under its numbers to
/// compare stamps with, yet it claims changes of its own the newest emission did not know: two
/// stores numbered alike. It is refused, and the store condemned.
#[test]
fn r1_a_late_file_of_a_shop_s_lost_store_claiming_changes_its_restored_store_s_newest_emission_did_not_know_is_refused()
 {
    let (d, dsoc, stick) = the_lost_store_s_file_on_the_stick(0);
    files_lost_on_the_way(&d, &dsoc, 2);
    d.emit_and_process(&dsoc, SyncMode::Immediate);
    stick_refused_then_the_store_condemned(&d, &dsoc, &stick, "did not know", "DSOC-LOST-1");
}

/// A shop's file is left on the USB stick; its disk dies and its store is put back from a
/// backup, which writes under the numbers the lost store had used: two customers, then a sales
/// document a till holds reserved (R7). Its next two files are lost on the way and a third
/// reaches central, carrying the customers and holding the document back. When the stick's file
/// is carried in, it is numbered below that one, follows the emission central had before it,
/// and holds no number of its own the restored store did not know: only other changes under
/// them. It was taken — its changes under numbers central held dropped as already had, the one
/// under the document's number applied — and the document, once released and sent, was dropped
/// in turn as already had (silent loss; the simulator's seed 601911). The stamps tell the two
/// stores apart: the file is refused, and the store condemned.
#[test]
fn r1_r7_a_late_file_of_a_shop_s_lost_store_whose_numbers_the_restored_store_reused_is_refused_by_their_stamps()
 {
    let (d, dsoc, stick) = the_lost_store_s_file_on_the_stick(0);
    // DSOC, put back from its backup, writes two customers under the numbers of the lost store's
    // first two; two files are lost on the way, the third is taken.
    d.at(10, 20);
    new_customers(&dsoc, 1..=2);
    number_d1(&dsoc, "K-D", "open");
    dsoc.reserve("sales_documents", "D1", "till-1").unwrap();
    files_lost_on_the_way(&d, &dsoc, 2);
    d.emit_and_process(&dsoc, SyncMode::Immediate);
    assert_eq!(
        name(&d.asoc, "DSOC-NEW-2"),
        Some(Value::from("by the restored store"))
    );
    assert!(d.asoc.record("sales_documents", "D1").unwrap().is_none());
    stick_refused_then_the_store_condemned(
        &d,
        &dsoc,
        &stick,
        "central holds as stamped",
        "DSOC-LOST-3",
    );
}

/// A shop numbers a sales document and writes its status twice; a till then reserves it (R7:
/// held back). The commit between, written over, travels only as a number central knows, and
/// BSOC learns that number from central's return. Central's disk dies and its backup from
/// before is put back; so is the shop's. The restored store numbers its own documents D1 and D2
/// in one commit under that number, both reserved: no stamp BSOC holds tells the two apart, and
/// central's restore ends. When the tills release them and the shop syncs, central takes them —
/// and BSOC, knowing the number, was never sent them (silent divergence; the simulator's seeds
/// 607990 and 608919). What central takes after its restore under a number another remote knew
/// while central did not is sent to that remote again, judged by its value — once the whole
/// commit has come (D2 released first, D1 after).
#[test]
fn r1_r7_a_number_known_from_the_lost_central_that_a_restored_shop_reused_for_a_reserved_document_reaches_the_others()
 {
    let (mut d, dsoc, backup) = dsoc_synced_then_a_backup();
    let config = outpost::StoreConfig::new(
        dsoc.site().clone(),
        outpost::retail::schema(),
        d.clock.clone(),
    );
    let dsoc_backup = dsoc.copy_in_memory(config).unwrap();
    d.at(10, 0);
    for status in ["open", "paid", "delivered"] {
        dsoc.write(|tx| tx.set("sales_documents", "D9", "status", status))
            .unwrap();
    }
    dsoc.reserve("sales_documents", "D9", "till-1").unwrap();
    d.emit_and_process(&dsoc, SyncMode::Immediate);
    d.return_and_apply(&d.bsoc);
    assert!(d.bsoc.record("sales_documents", "D9").unwrap().is_none());
    d.at(11, 0);
    restore_central(&mut d, backup);
    let dsoc = dsoc_backup;
    d.at(11, 10);
    new_customers(&dsoc, 1..=1);
    // One commit: two documents, each reserved by a till (held back).
    dsoc.write(|tx| {
        tx.set("sales_documents", "D1", "status", "open")?;
        tx.set("sales_documents", "D2", "status", "open")
    })
    .unwrap();
    dsoc.reserve("sales_documents", "D1", "till-1").unwrap();
    dsoc.reserve("sales_documents", "D2", "till-2").unwrap();
    sync_all(&d, &[&d.bsoc, &d.csoc, &dsoc], 2);
    assert!(!central::restore_under_way(&d.asoc).unwrap());
    // BSOC's next emission still says it knows the number. D2 is released and sent first (the
    // commit in part), then D1.
    sync_all(&d, &[&d.bsoc], 1);
    dsoc.release("sales_documents", "D2", "till-2").unwrap();
    sync_all(&d, &[&dsoc, &d.bsoc, &d.csoc], 1);
    dsoc.release("sales_documents", "D1", "till-1").unwrap();
    sync_all(&d, &[&dsoc, &d.bsoc, &d.csoc], 1);
    for key in ["D1", "D2"] {
        assert!(d.asoc.record("sales_documents", key).unwrap().is_some());
    }
    for s in [&d.bsoc, &d.csoc] {
        let code = &s.site().code;
        assert!(
            s.record("sales_documents", "D1").unwrap().is_some(),
            "{code} never got D1"
        );
        assert!(
            content(s) == content(&d.asoc),
            "{code} differs from central"
        );
    }
    // Sent again once: BSOC reported applying it, and its next return is empty.
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    match d.return_and_apply(&d.bsoc).1 {
        remote::Applied::Applied { report, .. } => assert!(report.outcomes.is_empty()),
        other => panic!("{other:?}"),
    }
}

/// R6 after a reprovisioning: a document the shop's lost store created and synced comes back
/// with the new bootstrap. It was synchronised, so the new store refuses to modify it, on the
/// spot — not accept the write and have central refuse it at the next sync, the till's edit
/// then put back silently.
#[test]
fn r6_a_shop_set_up_again_refuses_to_modify_its_documents_already_synchronised() {
    let d = Deployment::new();
    d.bsoc
        .write(|tx| {
            tx.set("sales_documents", "BSOC-D1", "customer", "Dupont")?;
            tx.set("sales_documents", "BSOC-D1", "total", dec("100.00"))
        })
        .unwrap();
    sync_all(&d, &[&d.bsoc], 1);
    let before = d
        .bsoc
        .write(|tx| tx.set("sales_documents", "BSOC-D1", "total", dec("90.00")))
        .unwrap_err();
    assert_eq!(before.refusal().map(|r| r.rule), Some(outpost::Rule::R6));
    let bsoc = set_up_again(&d, outpost::SiteId(2));
    let after = bsoc
        .write(|tx| tx.set("sales_documents", "BSOC-D1", "total", dec("90.00")))
        .unwrap_err();
    assert_eq!(after.refusal().map(|r| r.rule), Some(outpost::Rule::R6));
    // A document it creates now is its own to edit until it is synchronised.
    bsoc.write(|tx| tx.set("sales_documents", "BSOC-D2", "total", dec("7.00")))
        .unwrap();
    bsoc.write(|tx| tx.set("sales_documents", "BSOC-D2", "total", dec("8.00")))
        .unwrap();
}

/// A return file is made for the store that reported what it holds. DSOC first syncs after
/// central's backup; a return of it stays on the USB stick; central is put back from its
/// backup, DSOC's disk dies and it is set up again from its old bootstrap (taken as the site's
/// store: the restored central never saw the lost one). The stick's return, imported then, was
/// applied: its knowledge was the lost store's, so the new store counted as known changes it
/// never got, for ever (the simulator's seed 2199). It is refused: made for another store.
#[test]
fn r1_a_return_made_for_a_shop_s_lost_store_is_refused_by_the_store_set_up_again() {
    let mut d = Deployment::new();
    create_remote(&d, 4, "DSOC");
    set_deployment_config(&d);
    let (boot, _) =
        central::write_bootstrap(&d.asoc, outpost::SiteId(4), Vec::new(), false).unwrap();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    d.at(10, 0);
    let lost = set_up_from(&d, &boot, Some(1));
    d.asoc
        .write(|tx| tx.set("customers", "ASOC-1", "name", "by central"))
        .unwrap();
    lost.write(|tx| tx.set("customers", "DSOC-1", "name", "by the lost store"))
        .unwrap();
    d.emit_and_process(&lost, SyncMode::Immediate);
    d.return_and_apply(&lost);
    lost.write(|tx| tx.set("customers", "DSOC-2", "name", "by the lost store"))
        .unwrap();
    d.emit_and_process(&lost, SyncMode::Immediate);
    let (stick, _) = files::return_to(&d.asoc, outpost::SiteId(4), &d.usb()).unwrap();
    d.at(11, 0);
    restore_central(&mut d, backup);
    // DSOC's disk dies: set up again from its old bootstrap, it syncs.
    let dsoc = set_up_from(&d, &boot, Some(2));
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    d.emit_and_process(&dsoc, SyncMode::Immediate);
    let before = content(&dsoc);
    let applied = files::apply_return_from(&dsoc, &stick).unwrap();
    assert!(
        matches!(applied, remote::Applied::RefusedOtherStore { .. }),
        "{applied:?}"
    );
    assert_eq!(content(&dsoc), before, "nothing of it taken");
    // The deployment converges from here.
    sync_all(&d, &[&d.bsoc, &d.csoc, &dsoc], 4);
    assert_eq!(content(&dsoc), content(&d.asoc));
    assert_eq!(content(&d.bsoc), content(&d.asoc));
}

/// R2 with R7: BSOC numbers a document D1 at 8:00; its clock then runs a day ahead, it changes
/// D1's status and changes it again, and a till reserves D1: D1's changes are held
/// back with the document, the first travels in no emission (written over), and nothing in the
/// emission is stamped ahead, so central takes it and its return confirms the first change's
/// number — a stamp central never saw. BSOC counted it among the stamps held elsewhere
/// (`settled`), which vouched for its next writes stamped up to it: a customer keyed in a day
/// ahead went through. A confirmed stamp counts only once central's clock has reached it.
#[test]
fn r2_r7_a_shop_s_commit_written_over_in_a_reserved_document_vouches_for_no_stamp_ahead() {
    written_over_in_a_reserved_document_then_confirmed(false);
    written_over_in_a_reserved_document_then_confirmed(true);
}

/// The test above, the number confirmed by central's return or by its acknowledgement (M3).
fn written_over_in_a_reserved_document_then_confirmed(by_acknowledgement: bool) {
    let (d, bsoc_clock) = bsoc_on_a_clock_of_its_own();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    number_d1(&d.bsoc, "BSOC-C", "open");
    d.at(9, 0);
    bsoc_clock.set(hhmm(9, 0) + DAY_MS);
    for status in ["paid", "delivered"] {
        d.bsoc
            .write(|tx| tx.set("sales_documents", "D1", "status", status))
            .unwrap();
    }
    d.bsoc.reserve("sales_documents", "D1", "till-1").unwrap();
    let (_, id) = d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    assert_eq!(journal::row(&d.asoc, id).unwrap().unwrap().error, None);
    if by_acknowledgement {
        let ack = central::acknowledgement(&d.asoc, d.bsoc.site().id).unwrap();
        remote::record_acknowledgement(&d.bsoc, &ack).unwrap();
    } else {
        d.return_and_apply(&d.bsoc);
    }
    assert_eq!(
        d.bsoc.snapshot().unwrap().own_stamps_kept().unwrap(),
        2,
        "\"paid\" confirmed; D1's numbering and \"delivered\", held back, still kept"
    );
    assert!(
        d.bsoc.settled_high().physical_ms() < hhmm(9, 0) + DAY_MS,
        "the stamp central never saw is not counted"
    );
    bsoc_clock.set(hhmm(9, 2) + DAY_MS);
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-9", "name", "keyed in a day ahead"))
        .unwrap();
    d.at(9, 2);
    let (_, id) = d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    let error = journal::row(&d.asoc, id).unwrap().unwrap().error;
    assert!(
        error
            .as_deref()
            .unwrap_or("")
            .starts_with("quarantined: BSOC's changes are stamped 1.0 d ahead"),
        "{error:?}"
    );
    assert_eq!(
        name(&d.asoc, "BSOC-9"),
        None,
        "by acknowledgement: {by_acknowledgement}"
    );
    // The procedure releases it: the till's work done, the clock set right, `restamp`.
    d.bsoc.release("sales_documents", "D1", "till-1").unwrap();
    bsoc_clock.set(hhmm(9, 10));
    d.at(9, 10);
    assert!(remote::restamp(&d.bsoc).unwrap() > 0);
    sync_all(&d, &[&d.bsoc, &d.csoc], 2);
    all_hold(
        &d,
        &[&d.bsoc, &d.csoc],
        &[("BSOC-9", "keyed in a day ahead")],
    );
    let status = |s: &outpost::Store| {
        s.record("sales_documents", "D1")
            .unwrap()
            .and_then(|r| r.get("status").cloned())
    };
    assert_eq!(status(&d.asoc), Some(Value::from("delivered")));
}

/// R2 after central's restore (a review's case against the test above): central's clock and
/// BSOC's ran a day ahead together; the central of then took BSOC's new opening time of its
/// cash register (not frozen once synced, R6) and CSOC got it, but BSOC's return never came.
/// Central is put back from a backup from before, its clock right. BSOC writes the opening time
/// again and a till reserves the register (R7): held back, so BSOC's next emission covers the
/// first write without carrying it, and the restored central — whose clock never passed that
/// write's stamp — confirms its number. The stamp is held at CSOC all the same: BSOC's restamp,
/// once its clock is set right, must stamp the second write after it, or CSOC keeps the first
/// for ever (a silent difference of values).
#[test]
fn r1_r2_r7_a_write_the_lost_central_relayed_counts_when_the_restored_central_confirms_it() {
    lost_central_relayed_a_write_bsoc_writes_over_during_the_restore(false);
    lost_central_relayed_a_write_bsoc_writes_over_during_the_restore(true);
}

/// The test above, with the remotes syncing after the restore BSOC first, or CSOC first (which
/// then sends back the first write before BSOC's emission covers it).
fn lost_central_relayed_a_write_bsoc_writes_over_during_the_restore(csoc_first: bool) {
    let (mut d, bsoc_clock) = bsoc_on_a_clock_of_its_own();
    let reg = |s: &outpost::Store| {
        s.record("cash_registers", "BSOC-REG-1")
            .unwrap()
            .and_then(|r| r.get("opened_at").cloned())
    };
    d.bsoc
        .write(|tx| tx.set("cash_registers", "BSOC-REG-1", "opened_at", "8:00"))
        .unwrap();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    let backup = backup_then_both_clocks_a_day_ahead(&d, &bsoc_clock);
    d.bsoc
        .write(|tx| tx.set("cash_registers", "BSOC-REG-1", "opened_at", "first"))
        .unwrap();
    let (_, id) = d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    assert_eq!(journal::row(&d.asoc, id).unwrap().unwrap().error, None);
    sync_all(&d, &[&d.csoc], 1);
    assert_eq!(reg(&d.csoc), Some(Value::from("first")));
    // 9:30: central's disk dies; its backup is put back, its clock right (CSOC's with it).
    d.at(9, 30);
    restore_central(&mut d, backup);
    bsoc_clock.set(hhmm(9, 40) + DAY_MS);
    d.bsoc
        .write(|tx| tx.set("cash_registers", "BSOC-REG-1", "opened_at", "second"))
        .unwrap();
    d.bsoc
        .reserve("cash_registers", "BSOC-REG-1", "till-1")
        .unwrap();
    if csoc_first {
        sync_all(&d, &[&d.csoc, &d.bsoc], 2);
    } else {
        sync_all(&d, &[&d.bsoc, &d.csoc], 2);
    }
    // The till done, BSOC's clock set right, `restamp`.
    d.bsoc
        .release("cash_registers", "BSOC-REG-1", "till-1")
        .unwrap();
    bsoc_clock.set(hhmm(9, 50));
    d.at(9, 50);
    remote::restamp(&d.bsoc).unwrap();
    sync_all(&d, &[&d.bsoc, &d.csoc], 3);
    for s in [&d.asoc, &d.bsoc, &d.csoc] {
        assert_eq!(
            reg(s),
            Some(Value::from("second")),
            "{} (CSOC first: {csoc_first})",
            s.site().code
        );
    }
    all_hold(&d, &[&d.bsoc, &d.csoc], &[]);
}

/// R1, R2: while central's restore from a backup is under way, the stamps a remote reports
/// holding (`tips`) move central's clock past them, as the lost central's had passed them — but
/// not a stamp past the emission's own clock, which has passed every stamp its store holds: a
/// report a year ahead (a damaged or forged header) would otherwise push central's clock, and
/// the stamps of all its next writes, a year ahead for good.
#[test]
fn r1_r2_a_reported_stamp_past_its_emission_s_own_clock_does_not_move_restored_central_s_clock() {
    use outpost::replicator::incarnation::TIPS_SETTING;
    let mut d = Deployment::new();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    d.at(9, 0);
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-1", "name", "keyed in at 9:00"))
        .unwrap();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    d.at(9, 30);
    restore_central(&mut d, backup);
    let (path, _) =
        outpost::replicator::files::emit_to(&d.csoc, &d.usb(), SyncMode::Immediate).unwrap();
    let year = outpost::engine::Stamp::new(hhmm(9, 30) + 365 * DAY_MS, 0);
    let forged = rewrite(&std::fs::read(&path).unwrap(), |h| {
        let settings = &mut h.config.as_mut().unwrap().settings;
        let tips = settings[TIPS_SETTING].clone();
        assert!(tips.starts_with("2:"), "CSOC reports BSOC's newest: {tips}");
        settings.insert(
            TIPS_SETTING.to_owned(),
            format!("2:/{:016x}", year.as_u64()),
        );
    });
    std::fs::write(&path, forged).unwrap();
    outpost::replicator::files::receive_from(&d.asoc, &path, Some(common::CSOC)).unwrap();
    assert!(
        d.asoc.clock_high_water().physical_ms() < hhmm(10, 0),
        "central's clock moved to {:?}",
        d.asoc.clock_high_water()
    );
}

/// R2, an emission still on its way when its shop restamps: BSOC's clock ran six minutes ahead
/// (the bound is five) and central held its emission. Its clock set right, BSOC writes its next
/// emission to a stick — still carrying the held write with its old stamp — and restamps before
/// the stick reaches central, at 9:01:30, when that stamp is only 4.5 minutes ahead: central
/// takes it. BSOC's edit at 9:03 then loses at central to its own write stamped 9:06, which
/// BSOC no longer holds (the restamp replaced it) and skips as known: BSOC kept its edit, every
/// other site the old value, for ever. Central now sees a site's change lose to a write of the
/// same site that the site says it knows, and returns it refused (R2) with central's value,
/// which BSOC takes: every site holds the same, and BSOC is told why its edit did not stand.
#[test]
fn r2_an_emission_on_its_way_when_its_shop_restamps_leaves_no_difference_of_values() {
    let (d, bsoc_clock) = bsoc_restamps_while_its_emission_is_on_its_way();
    bsoc_edits_at_9_03_then_all_hold(&d, &bsoc_clock, "stamped ahead");
    bsoc_was_told(&d, outpost::engine::Rule::R2);
}

/// The test above with BSOC confirmed before the stick comes in (found by the simulator, seed 43
/// of `--sites 5 --days 3`): after central's restore, CSOC and BSOC report, take a return of the
/// restored central (BSOC's holds the edit, not the old write) and CSOC sends its next emission;
/// then the stick comes in and central takes the old write from it, over the edit. BSOC's next
/// emission, made after the return it applied, completes the restore — and BSOC, which knows the
/// old write's number, would never take it (its returns merge whole only while the restore is
/// under way): a silent difference of values. Central taking from an emission it does not trust
/// a change of its sender that the sender had said it knows restarts the restore's
/// confirmations, so that BSOC takes a return carrying the old write, judged anew.
#[test]
fn r1_r2_an_old_write_carried_in_after_its_site_took_the_restored_central_s_return_converges() {
    let (d, bsoc_clock, on_the_stick) = old_write_on_a_stick_then_central_restored();
    d.return_and_apply(&d.csoc);
    d.return_and_apply(&d.bsoc);
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    assert_eq!(name(&d.bsoc, "BSOC-1"), Some(Value::from("edited at 9:03")));
    stick_comes_in_at_9_04(&d, &on_the_stick);
    assert_eq!(name(&d.asoc, "BSOC-1"), Some(Value::from("stamped ahead")));
    restore_over_at_9_05_and_all_hold(&d, &bsoc_clock, true, "stamped ahead");
}

/// The test above with two files on the stick (a review's case): the first made at 8:30, before
/// the write stamped ahead, the second after it. Central processes them in turn; what BSOC said
/// it knows is taken from its newest emission central received, not from the last one
/// processed — the first file, older, knows nothing of the old write, and the second's old write
/// must still restart the restore's confirmations.
#[test]
fn r1_r2_two_old_files_carried_in_after_their_site_took_the_restored_central_s_return_converge() {
    let (mut d, bsoc_clock) = bsoc_on_a_clock_of_its_own();
    customer_created_at_8(&d, &d.bsoc, "BSOC-1");
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    d.at(8, 30);
    bsoc_clock.set(hhmm(8, 30));
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-2", "name", "keyed in at 8:30"))
        .unwrap();
    let (first, _) = files::emit_to(&d.bsoc, &d.usb(), SyncMode::Immediate).unwrap();
    d.at(9, 0);
    bsoc_clock.set(hhmm(9, 6));
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-1", "name", "stamped ahead"))
        .unwrap();
    let (_, held) = d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    let error = journal::row(&d.asoc, held).unwrap().unwrap().error;
    assert!(error.unwrap_or_default().starts_with("quarantined"));
    bsoc_clock.set(hhmm(9, 0));
    let (second, _) = files::emit_to(&d.bsoc, &d.usb(), SyncMode::Immediate).unwrap();
    bsoc_clock.set(hhmm(9, 0) + 30_000);
    assert_eq!(remote::restamp(&d.bsoc).unwrap(), 1);
    bsoc_clock.set(hhmm(9, 3));
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-1", "name", "edited at 9:03"))
        .unwrap();
    d.at(9, 3);
    restore_central(&mut d, backup);
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    d.return_and_apply(&d.csoc);
    d.return_and_apply(&d.bsoc);
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    d.at(9, 4);
    for file in [&first, &second] {
        files::receive_from(&d.asoc, file, Some(common::BSOC)).unwrap();
        central::process_ready(&d.asoc).unwrap();
    }
    assert_eq!(name(&d.asoc, "BSOC-1"), Some(Value::from("stamped ahead")));
    bsoc_clock.set(hhmm(9, 5));
    d.at(9, 5);
    sync_all(&d, &[&d.bsoc, &d.csoc], 3);
    assert!(!central::restore_under_way(&d.asoc).unwrap());
    all_hold(
        &d,
        &[&d.bsoc, &d.csoc],
        &[("BSOC-1", "stamped ahead"), ("BSOC-2", "keyed in at 8:30")],
    );
}

/// R1/R2 (found by the simulator, seed 7513 of `--sites 5 --days 3`): BSOC restamps while an
/// emission carrying its held write is on a stick; the stick comes in, central takes the old
/// write and CSOC gets it. BSOC edits the field (stamped below the old write); the emission
/// carrying the edit is lost, and central is put back from a backup from before the stick. BSOC
/// sends the edit again, then — having taken a return of the restored central — an emission
/// saying it knows the old write's number. CSOC's emission relays the old write back after
/// that: central knew the number, so it took nothing of it, and CSOC kept the old write (stamped
/// later) against the edit everyone else held — for ever. While its restore is under way,
/// central judges by the registers every change a remote relays, those whose numbers it knows
/// included: the old write wins back, and every site takes it.
#[test]
fn r1_r2_an_old_write_the_lost_central_took_from_a_stick_comes_back_from_its_holder() {
    let (mut d, bsoc_clock) = bsoc_held_for_a_write_six_minutes_ahead();
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    stick_taken_after_the_restamp(&d, &bsoc_clock);
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    d.return_and_apply(&d.csoc);
    assert_eq!(name(&d.csoc, "BSOC-1"), Some(Value::from("stamped ahead")));
    bsoc_clock.set(hhmm(9, 3));
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-1", "name", "edited at 9:03"))
        .unwrap();
    // The emission carrying the edit is lost on the way; central is put back at 9:04.
    files::emit_to(&d.bsoc, &d.usb(), SyncMode::Immediate).unwrap();
    d.at(9, 4);
    restore_central(&mut d, backup);
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    d.return_and_apply(&d.csoc);
    d.return_and_apply(&d.bsoc);
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    assert_eq!(name(&d.asoc, "BSOC-1"), Some(Value::from("edited at 9:03")));
    restore_over_at_9_05_and_all_hold(&d, &bsoc_clock, false, "stamped ahead");
}

/// R1/R6 with the test above (a review's case): while central's restore is under way, every
/// change relayed to it is merged again by value, its number known or not. BSOC numbers D1 and
/// marks it paid in a later commit; central takes both and freezes D1 (R6), CSOC gets them;
/// central is put back from a backup from before. BSOC sends D1 back, then CSOC — whose last
/// return came before that — relays D1's changes too: central holds them, frozen, and must not
/// refuse them (a refusal logged and returned to CSOC for a write central holds).
#[test]
fn r1_r6_a_document_relayed_during_the_restore_that_central_holds_is_not_refused() {
    let mut d = Deployment::new();
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    number_d1(&d.bsoc, "BSOC-C", "open");
    d.bsoc
        .write(|tx| tx.set("sales_documents", "D1", "status", "paid"))
        .unwrap();
    sync_all(&d, &[&d.bsoc, &d.csoc], 1);
    assert!(
        d.asoc
            .snapshot()
            .unwrap()
            .is_frozen("sales_documents", "D1")
            .unwrap()
    );
    restore_central(&mut d, backup);
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    d.return_and_apply(&d.csoc);
    d.return_and_apply(&d.bsoc);
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    let (_, relayed) = d.emit_and_process(&d.csoc, SyncMode::Immediate);
    let row = journal::row(&d.asoc, relayed).unwrap().unwrap();
    assert_eq!((row.error, row.n_rejections), (None, 0));
    assert_eq!(d.asoc.rejections().unwrap(), Vec::new());
    sync_all(&d, &[&d.bsoc, &d.csoc], 3);
    assert_eq!(remote::refused_by_central(&d.csoc).unwrap().len(), 0);
    assert!(!central::restore_under_way(&d.asoc).unwrap());
    assert_eq!(content(&d.csoc), content(&d.asoc));
    assert_eq!(content(&d.bsoc), content(&d.asoc));
}

/// After BSOC's emission was held (`bsoc_held_for_a_write_six_minutes_ahead`) and central
/// backed up: BSOC's clock set right at 9:00, it writes its next emission to a stick, is
/// restamped at 9:00:30 and names BSOC-1 "edited at 9:03"; at 9:03 central is put back from the
/// backup, CSOC reports, then BSOC's emission is taken (not trusted yet: made before BSOC applied
/// a return of the restored central). Gives the deployment, BSOC's clock and the stick's file.
fn old_write_on_a_stick_then_central_restored() -> (Deployment, ManualClock, std::path::PathBuf) {
    let (mut d, bsoc_clock) = bsoc_held_for_a_write_six_minutes_ahead();
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    bsoc_clock.set(hhmm(9, 0));
    let (on_the_stick, _) = files::emit_to(&d.bsoc, &d.usb(), SyncMode::Immediate).unwrap();
    bsoc_clock.set(hhmm(9, 0) + 30_000);
    assert_eq!(remote::restamp(&d.bsoc).unwrap(), 1);
    bsoc_clock.set(hhmm(9, 3));
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-1", "name", "edited at 9:03"))
        .unwrap();
    d.at(9, 3);
    restore_central(&mut d, backup);
    d.emit_and_process(&d.csoc, SyncMode::Immediate);
    d.emit_and_process(&d.bsoc, SyncMode::Immediate);
    (d, bsoc_clock, on_the_stick)
}

/// R1 with R2, the old write central knows only by its writer's word: BSOC's held write
/// ("stamped ahead", 9:06 by its clock) reaches central on a stick after BSOC restamped it;
/// DSOC takes it from central; BSOC writes over it at 9:03 (stamped before it). Central's disk
/// dies and its backup from before the stick is put back: it takes BSOC's edit, and learns the
/// old write's number from BSOC's word alone (its trusted emission covers it). DSOC had sent
/// the old write back in an emission held for DSOC's own clock, a day ahead; once DSOC's clock
/// is set right and restamped, its next emission must carry the old write again — central's
/// returns say it lacks what it knows only by a site's word — so that central judges it by its
/// value. Without that, DSOC kept the old write, stamped later, against every other site's edit
/// (the simulator's seed 878, a network shop's outbox).
#[test]
fn r1_r2_an_old_write_central_knows_only_by_its_site_s_word_comes_back_from_its_holder() {
    let (mut d, bsoc_clock) = bsoc_on_a_clock_of_its_own();
    let dsoc_clock = ManualClock::new(hhmm(8, 0));
    create_remote(&d, 4, "DSOC");
    let (boot, _) =
        central::write_bootstrap(&d.asoc, outpost::SiteId(4), Vec::new(), false).unwrap();
    let dsoc = set_up_on(dsoc_clock.clone(), &boot, None);
    customer_created_at_8(&d, &d.bsoc, "BSOC-1");
    sync_all(&d, &[&dsoc], 1);
    dsoc_clock.set(hhmm(9, 0));
    bsoc_names_bsoc_1_six_minutes_ahead_and_is_held(&d, &bsoc_clock);
    let backup = d.asoc.copy_in_memory(central_config(&d)).unwrap();
    stick_taken_after_the_restamp(&d, &bsoc_clock);
    dsoc_clock.set(hhmm(9, 2));
    d.at(9, 2);
    sync_all(&d, &[&dsoc], 1);
    assert_eq!(name(&dsoc, "BSOC-1"), Some(Value::from("stamped ahead")));
    bsoc_clock.set(hhmm(9, 3));
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-1", "name", "edited at 9:03"))
        .unwrap();
    d.at(9, 3);
    dsoc_clock.set(hhmm(9, 3));
    restore_central(&mut d, backup);
    // Every remote reports and takes a return of the restored central (which took BSOC's edit
    // from an emission it does not trust yet).
    sync_all(&d, &[&d.csoc, &d.bsoc, &dsoc], 1);
    // DSOC's clock runs a day ahead: its emission, sending the old write back, is held.
    dsoc_clock.set(hhmm(9, 4) + DAY_MS);
    d.at(9, 4);
    dsoc.write(|tx| tx.set("customers", "DSOC-1", "name", "keyed in a day ahead"))
        .unwrap();
    let (_, held) = d.emit_and_process(&dsoc, SyncMode::Immediate);
    let error = journal::row(&d.asoc, held).unwrap().unwrap().error;
    assert!(
        error
            .as_deref()
            .unwrap_or_default()
            .starts_with("quarantined"),
        "{error:?}"
    );
    // BSOC's trusted emission covers the old write: central knows its number by BSOC's word,
    // and holds BSOC's edit.
    sync_all(&d, &[&d.bsoc], 1);
    assert_eq!(name(&d.asoc, "BSOC-1"), Some(Value::from("edited at 9:03")));
    d.return_and_apply(&dsoc);
    // DSOC's clock set right, restamped: its next emission goes through.
    dsoc_clock.set(hhmm(9, 5));
    d.at(9, 5);
    assert!(remote::restamp(&dsoc).unwrap() > 0);
    sync_all(&d, &[&dsoc, &d.bsoc, &d.csoc], 3);
    assert!(!central::restore_under_way(&d.asoc).unwrap());
    all_hold(
        &d,
        &[&d.bsoc, &d.csoc, &dsoc],
        &[("BSOC-1", "stamped ahead")],
    );
}

/// 9:04: the stick comes in; the old write is 2 minutes ahead, within the bound.
fn stick_comes_in_at_9_04(d: &Deployment, on_the_stick: &std::path::Path) {
    d.at(9, 4);
    files::receive_from(&d.asoc, on_the_stick, Some(common::BSOC)).unwrap();
    central::process_ready(&d.asoc).unwrap();
}

/// The same with BSOC of an earlier version, which cannot decode rule R2 in a return: its
/// emission does not say it reads it (setting `rules`), so central returns the refusal under
/// rule R1, with the same reason and value — read, and taken.
#[test]
fn r2_a_remote_that_does_not_say_it_reads_rule_r2_gets_that_refusal_under_r1() {
    use outpost::replicator::incarnation::RULES_SETTING;
    let (d, bsoc_clock) = bsoc_restamps_while_its_emission_is_on_its_way();
    bsoc_clock.set(hhmm(9, 3));
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-1", "name", "edited at 9:03"))
        .unwrap();
    let (path, _) = files::emit_to(&d.bsoc, &d.usb(), SyncMode::Immediate).unwrap();
    let earlier = rewrite(&std::fs::read(&path).unwrap(), |h| {
        h.config.as_mut().unwrap().settings.remove(RULES_SETTING);
    });
    std::fs::write(&path, earlier).unwrap();
    files::receive_from(&d.asoc, &path, Some(common::BSOC)).unwrap();
    central::process_ready(&d.asoc).unwrap();
    d.return_and_apply(&d.bsoc);
    bsoc_was_told(&d, outpost::engine::Rule::R1);
    all_hold(&d, &[&d.bsoc], &[("BSOC-1", "stamped ahead")]);
}

/// After BSOC's emission was held (`bsoc_held_for_a_write_six_minutes_ahead`): its clock set
/// right at 9:00, it writes its next emission to a stick, and restamps at 9:00:30; the stick
/// reaches central at 9:01:30, which takes the write with its old stamp (4.5 minutes ahead).
fn bsoc_restamps_while_its_emission_is_on_its_way() -> (Deployment, ManualClock) {
    let (d, bsoc_clock) = bsoc_held_for_a_write_six_minutes_ahead();
    stick_taken_after_the_restamp(&d, &bsoc_clock);
    (d, bsoc_clock)
}

/// The steps of `bsoc_restamps_while_its_emission_is_on_its_way` after BSOC's emission was held.
fn stick_taken_after_the_restamp(d: &Deployment, bsoc_clock: &ManualClock) {
    bsoc_clock.set(hhmm(9, 0));
    let (on_the_stick, _) = files::emit_to(&d.bsoc, &d.usb(), SyncMode::Immediate).unwrap();
    bsoc_clock.set(hhmm(9, 0) + 30_000);
    assert_eq!(remote::restamp(&d.bsoc).unwrap(), 1);
    d.clock.set(hhmm(9, 1) + 30_000);
    files::receive_from(&d.asoc, &on_the_stick, Some(common::BSOC)).unwrap();
    central::process_ready(&d.asoc).unwrap();
    assert_eq!(name(&d.asoc, "BSOC-1"), Some(Value::from("stamped ahead")));
}

/// 9:05: every remote syncs three times, BSOC first if `bsoc_first`; central's restore is over
/// and every site holds `value` for BSOC-1, and the same content.
fn restore_over_at_9_05_and_all_hold(
    d: &Deployment,
    bsoc_clock: &ManualClock,
    bsoc_first: bool,
    value: &str,
) {
    bsoc_clock.set(hhmm(9, 5));
    d.at(9, 5);
    let order = if bsoc_first {
        [&d.bsoc, &d.csoc]
    } else {
        [&d.csoc, &d.bsoc]
    };
    sync_all(d, &order, 3);
    assert!(!central::restore_under_way(&d.asoc).unwrap());
    all_hold(d, &[&d.bsoc, &d.csoc], &[("BSOC-1", value)]);
}

/// BSOC holds, among the refusals central returned, its edit "edited at 9:03" under `rule`,
/// with the reason.
fn bsoc_was_told(d: &Deployment, rule: outpost::engine::Rule) {
    let refused = remote::refused_by_central(&d.bsoc).unwrap();
    assert!(
        refused.iter().any(|r| r.rejection.refusal.rule == rule
            && r.rejection.change.value == Value::from("edited at 9:03")
            && r.rejection
                .refusal
                .reason
                .contains("stamped it again, lower (restamp)")),
        "{refused:?}"
    );
}

/// R2 with R1, the other order (a review's case, feared open): BSOC restamps while an emission
/// carrying its held write is on a stick, edits the field, and central — put back from a backup
/// meanwhile — takes the edit from an emission whose coverage it does not trust yet (made before
/// BSOC applied a return of the restored central), so it does not learn that BSOC knows the old
/// write. The stick comes in last: the old write, stamped later than the edit, replaces it at
/// central and reaches every other site. BSOC knows it, yet takes it too: while the restore is
/// under way central's returns say they judged anew (`rejudged`) and are merged whole, known
/// changes included. Every site holds the same.
#[test]
fn r1_r2_an_old_write_carried_in_after_its_site_s_later_edit_leaves_no_difference_of_values() {
    let (d, bsoc_clock, on_the_stick) = old_write_on_a_stick_then_central_restored();
    assert_eq!(name(&d.asoc, "BSOC-1"), Some(Value::from("edited at 9:03")));
    stick_comes_in_at_9_04(&d, &on_the_stick);
    assert_eq!(name(&d.asoc, "BSOC-1"), Some(Value::from("stamped ahead")));
    assert_eq!(name(&d.bsoc, "BSOC-1"), Some(Value::from("edited at 9:03")));
    assert!(central::restore_under_way(&d.asoc).unwrap());
    bsoc_clock.set(hhmm(9, 5));
    d.at(9, 5);
    sync_all(&d, &[&d.bsoc, &d.csoc], 3);
    all_hold(&d, &[&d.bsoc, &d.csoc], &[("BSOC-1", "stamped ahead")]);
}

/// During central's restore from a backup, a shop writes a sales document and a customer in one
/// commit, and a till reserves the document (R7). The emission carried the customer and held the
/// document back; central, not trusting yet what the shop's emission says it covers, counted the
/// commit's number as known because it carried a change of it — and when the till released the
/// document, its changes under that number were dropped as already had (a silent loss). Now the
/// emission holds the commit whole, the customer with the document (and central would count a
/// number only once an emission covers it, for a commit sent in part by an earlier version).
#[test]
fn r1_r7_a_commit_held_back_in_part_during_central_s_restore_comes_whole_once_released() {
    let (mut d, dsoc, backup) = dsoc_synced_then_a_backup();
    d.at(11, 0);
    restore_central(&mut d, backup);
    d.at(11, 10);
    dsoc.write(|tx| {
        tx.set("sales_documents", "D1", "status", "open")?;
        tx.set("customers", "DSOC-WITH-D1", "name", "keyed in with D1")
    })
    .unwrap();
    dsoc.reserve("sales_documents", "D1", "till-1").unwrap();
    sync_all(&d, &[&d.bsoc, &d.csoc, &dsoc], 2);
    assert!(!central::restore_under_way(&d.asoc).unwrap());
    assert!(
        d.asoc
            .record("customers", "DSOC-WITH-D1")
            .unwrap()
            .is_none(),
        "held with the document"
    );
    dsoc.release("sales_documents", "D1", "till-1").unwrap();
    sync_all(&d, &[&dsoc, &d.bsoc, &d.csoc], 1);
    for s in [&d.asoc, &d.bsoc, &d.csoc] {
        assert!(s.record("sales_documents", "D1").unwrap().is_some());
        assert!(s.record("customers", "DSOC-WITH-D1").unwrap().is_some());
    }
}

//! The automatons driven by a virtual clock, minute by minute: central's automaton and each
//! remote's scheduler decide, this driver only carries bytes between the stores (as the network
//! daemon will). The seed's plan (C5) and its journal (J3), M5 across time zones, A3's wait.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;

use outpost::replicator::automaton::{
    Activity, CentralAutomaton, RemoteCommand, RemoteScheduler, run_central,
};
use outpost::replicator::central::{self, Received};
use outpost::replicator::config::{RemoteSchedule, RemoteSettings, SyncConfig};
use outpost::replicator::remote::{self, Applied};
use outpost::replicator::schedule::{Daily, Zone};
use outpost::replicator::{FlowKind, SyncMode, journal, monitor};
use outpost::{Clock, ManualClock, Site, SiteId, Store, StoreConfig, Value};

const MINUTE: u64 = 60_000;

fn utc_ms(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> u64 {
    let t = chrono::NaiveDate::from_ymd_opt(y, mo, d)
        .unwrap()
        .and_hms_opt(h, mi, 0)
        .unwrap()
        .and_utc();
    t.timestamp_millis() as u64
}

/// The seed's configuration (C4) with other remotes: (id, code, time zone, sync types).
fn config(remotes: Vec<(u16, &str, &str, &str)>) -> SyncConfig {
    let mut cfg = outpost::replicator::config::seed_example();
    cfg.central.host = "127.0.0.1".into();
    cfg.remotes = remotes
        .into_iter()
        .map(|(id, code, zone, sync)| RemoteSettings {
            id: SiteId(id),
            code: code.into(),
            time_zone: zone.into(),
            sync_types: sync.split(';').map(|s| s.parse().unwrap()).collect(),
            denied_tables: BTreeSet::new(),
        })
        .collect();
    cfg
}

struct RemoteSite {
    store: Store,
    scheduler: RemoteScheduler,
}

struct World {
    _root: tempfile::TempDir,
    clock: ManualClock,
    asoc: Store,
    automaton: CentralAutomaton,
    remotes: Vec<RemoteSite>,
    /// Activities central showed, with the time.
    activities: Vec<(u64, String)>,
}

impl World {
    fn new(config: &SyncConfig, start_ms: u64) -> Self {
        let root = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(start_ms);
        let open = |site: &Site| {
            Store::open(
                root.path().join(site.code.as_str()),
                StoreConfig::new(site.clone(), outpost::retail::schema(), clock.clone()),
            )
        };
        let asoc = open(&Site::central(1, "ASOC").unwrap()).unwrap();
        central::set_config(&asoc, config).unwrap();
        let remotes = config
            .remotes
            .iter()
            .map(|r| {
                let (bytes, _) = central::write_bootstrap(&asoc, r.id, Vec::new(), true).unwrap();
                let store = remote::bootstrap(bytes.as_slice(), open).unwrap();
                let schedule =
                    RemoteSchedule::from_settings(&remote::settings(&store).unwrap()).unwrap();
                RemoteSite {
                    store,
                    scheduler: RemoteScheduler::new(&schedule),
                }
            })
            .collect();
        let automaton = CentralAutomaton::new(config, start_ms).unwrap();
        World {
            _root: root,
            clock,
            asoc,
            automaton,
            remotes,
            activities: Vec::new(),
        }
    }

    fn remote(&self, code: &str) -> &Store {
        &self
            .remotes
            .iter()
            .find(|r| r.store.site().code.as_str() == code)
            .unwrap()
            .store
    }

    /// Whether remote `code` holds customer `key`.
    fn holds(&self, code: &str, key: &str) -> bool {
        self.remote(code)
            .record("customers", key)
            .unwrap()
            .is_some()
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Carries out a remote's commands: the only thing this driver decides is nothing.
    fn execute(&mut self, i: usize, commands: Vec<RemoteCommand>) {
        for cmd in commands {
            let site = self.remotes[i].store.site().id;
            match cmd {
                RemoteCommand::Emit(mode) => {
                    let (bytes, _) =
                        remote::emit(&self.remotes[i].store, Vec::new(), mode, true).unwrap();
                    let received =
                        central::receive(&self.asoc, bytes.as_slice(), Some(site)).unwrap();
                    if let Received::Ready { id, .. } = received {
                        let cmds = self.automaton.on_flow_ready(id);
                        self.run_central(cmds);
                    }
                }
                RemoteCommand::FetchReturn => {
                    let after = remote::last_return_seq(&self.remotes[i].store).unwrap();
                    if let Some((_, reader)) =
                        central::fetch_return(&self.asoc, site, after).unwrap()
                    {
                        let applied = remote::apply_return(&self.remotes[i].store, reader).unwrap();
                        assert!(matches!(applied, Applied::Applied { .. }), "{applied:?}");
                        self.remotes[i].scheduler.on_return_applied();
                    }
                }
            }
        }
    }

    fn run_central(&mut self, commands: Vec<outpost::replicator::automaton::Command>) {
        for c in &commands {
            if let outpost::replicator::automaton::Command::PrepareReturn(s) = c {
                self.activities
                    .push((self.now(), Activity::Returning(*s).to_string()));
            }
        }
        run_central(&self.asoc, &mut self.automaton, commands).unwrap();
    }

    /// One virtual minute.
    fn tick(&mut self) {
        self.clock.advance(MINUTE);
        let now = self.now();
        for i in 0..self.remotes.len() {
            let cmds = self.remotes[i].scheduler.on_time(now);
            self.execute(i, cmds);
        }
        let cmds = self.automaton.on_time(now);
        self.run_central(cmds);
    }

    /// One virtual minute in which central's automaton does not run (central is down).
    fn tick_remotes_only(&mut self) {
        self.clock.advance(MINUTE);
        let now = self.now();
        for i in 0..self.remotes.len() {
            let cmds = self.remotes[i].scheduler.on_time(now);
            self.execute(i, cmds);
        }
    }

    fn run_until(&mut self, end_ms: u64) {
        while self.now() < end_ms {
            self.tick();
        }
    }

    fn request_sync(&mut self, code: &str, no_return: bool) {
        let i = self
            .remotes
            .iter()
            .position(|r| r.store.site().code.as_str() == code)
            .unwrap();
        let now = self.now();
        let cmds = self.remotes[i].scheduler.request_sync(now, no_return);
        self.execute(i, cmds);
        // While it waits, the remote polls for its return: once right away.
        let cmds = self.remotes[i].scheduler.on_time(now);
        self.execute(i, cmds);
    }
}

/// 2026-11-25 in Paris (UTC+1): local hh:mm as UTC ms.
fn paris(day: u32, h: u32, m: u32) -> u64 {
    utc_ms(2026, 11, day, h - 1, m)
}

fn c5_plan(csoc_fetch: &str) -> World {
    let cfg = config(vec![
        (2, "BSOC", "Europe/Paris", "fixed 21:00 23:20"),
        (
            3,
            "CSOC",
            "Europe/Paris",
            &format!("fixed 22:00 {csoc_fetch}"),
        ),
    ]);
    let mut w = World::new(&cfg, paris(25, 20, 0));
    w.remote("BSOC")
        .write(|tx| tx.set("customers", "BSOC-000001", "name", "Dupont"))
        .unwrap();
    w.remote("CSOC")
        .write(|tx| tx.set("customers", "CSOC-000001", "name", "Martin"))
        .unwrap();
    // The whole evening, then the next day until both remotes have emitted again (their
    // emissions carry the report of the returns they applied).
    w.run_until(paris(26, 22, 30));
    w
}

#[test]
fn c5_j3_the_seeds_plan_driven_by_the_automatons() {
    let w = c5_plan("23:40");
    let rows = journal::rows(
        &w.asoc,
        None,
        Some(paris(25, 20, 0)),
        Some(paris(25, 23, 59)),
    )
    .unwrap();
    let find = |kind: FlowKind, site: u16| {
        rows.iter()
            .find(|r| r.kind == kind && r.site == SiteId(site))
            .unwrap_or_else(|| panic!("{kind:?} of {site} in {rows:#?}"))
            .clone()
    };
    let (eb, ec) = (find(FlowKind::Emission, 2), find(FlowKind::Emission, 3));
    let (rb, rc) = (find(FlowKind::Return, 2), find(FlowKind::Return, 3));
    // 21:00 BSOC emits, 22:00 CSOC emits: each processed at once (an event, not a poll).
    assert_eq!(eb.file_ready_ms, Some(paris(25, 21, 0)));
    assert_eq!(eb.exec_end_ms, Some(paris(25, 21, 0)));
    assert_eq!(ec.file_ready_ms, Some(paris(25, 22, 0)));
    assert!(ec.exec_end_ms.unwrap() <= paris(25, 22, 1));
    // 23:00: one return per remote, each answering its remote's emission.
    assert_eq!(rb.file_ready_ms, Some(paris(25, 23, 0)));
    assert_eq!(rc.file_ready_ms, Some(paris(25, 23, 0)));
    assert_eq!((rb.link, eb.link), (Some(eb.id), Some(rb.id)));
    assert_eq!((rc.link, ec.link), (Some(ec.id), Some(rc.id)));
    // 23:20 BSOC and 23:40 CSOC fetch and apply (reported with their next emissions).
    assert_eq!(rb.exec_start_ms, Some(paris(25, 23, 20)));
    assert_eq!(rc.exec_start_ms, Some(paris(25, 23, 40)));
    assert_eq!((rb.executions, rc.executions), (1, 1));
    // Every shop got every shop's information (M1).
    for code in ["BSOC", "CSOC"] {
        for key in ["BSOC-000001", "CSOC-000001"] {
            assert!(
                w.remote(code).record("customers", key).unwrap().is_some(),
                "{code} {key}"
            );
        }
    }
    // Central showed "Ret D02" and "Ret D03" at 23:00, and waits again.
    assert!(w.activities.contains(&(paris(25, 23, 0), "Ret D02".into())));
    assert!(w.activities.contains(&(paris(25, 23, 0), "Ret D03".into())));
    assert_eq!(w.automaton.status().to_string(), "Att Dep");
    // One fixed-time sync a day: two emissions per remote over the two evenings.
    let all = journal::rows(&w.asoc, Some(SiteId(2)), None, None).unwrap();
    assert_eq!(
        all.iter().filter(|r| r.kind == FlowKind::Emission).count(),
        2
    );
}

/// C6 and M1: a shop that synced at a fixed time is switched at central to syncs on demand
/// only. It learns its new schedule from its next return — but it left the common return's
/// list at once, and its fixed-time emissions were answered by none: it kept syncing every
/// evening and never heard from central again (neither its new schedule nor anyone's changes),
/// with no alert, its emissions arriving daily. A fixed-time emission of a shop no longer on a
/// fixed schedule now gets its return right after processing.
#[test]
fn c6_m1_a_shop_switched_from_fixed_times_to_immediate_syncs_still_gets_a_return() {
    let mut w = c5_plan("23:40");
    let mut cfg = central::config(&w.asoc).unwrap().unwrap();
    let bsoc = cfg.remotes.iter_mut().find(|r| r.id == SiteId(2)).unwrap();
    bsoc.sync_types = vec!["immediate 60".parse().unwrap()];
    central::set_config(&w.asoc, &cfg).unwrap();
    w.automaton.reconfigure(&cfg).unwrap();
    w.asoc
        .write(|tx| tx.set("customers", "ASOC-000001", "name", "written at central"))
        .unwrap();
    w.run_until(paris(28, 23, 59));
    let settings = remote::settings(w.remote("BSOC")).unwrap();
    assert_eq!(
        settings.get("sync_types").map(String::as_str),
        Some("immediate 60")
    );
    assert!(w.holds("BSOC", "ASOC-000001"));
}

/// BSOC on immediate syncs uploads an emission — after one lost on the way if `lost_before`
/// (central notes at receipt that it never arrived) — and an operator's `central import`
/// processes it before the automaton gets to it; then the automaton's turn, and BSOC fetches.
fn immediate_emission_processed_by_an_import(lost_before: bool) -> World {
    let cfg = config(vec![(2, "BSOC", "Europe/Paris", "immediate 60")]);
    let mut w = World::new(&cfg, paris(25, 9, 0));
    w.asoc
        .write(|tx| tx.set("customers", "ASOC-000001", "name", "written at central"))
        .unwrap();
    if lost_before {
        remote::emit(&w.remotes[0].store, Vec::new(), SyncMode::Immediate, true).unwrap();
    }
    let (bytes, _) =
        remote::emit(&w.remotes[0].store, Vec::new(), SyncMode::Immediate, true).unwrap();
    let Received::Ready { id, .. } =
        central::receive(&w.asoc, bytes.as_slice(), Some(SiteId(2))).unwrap()
    else {
        panic!("not ready")
    };
    let noted = journal::row(&w.asoc, id).unwrap().unwrap().error.is_some();
    assert_eq!(noted, lost_before);
    central::process_ready(&w.asoc).unwrap();
    let cmds = w.automaton.on_flow_ready(id);
    w.run_central(cmds);
    w.execute(0, vec![RemoteCommand::FetchReturn]);
    w
}

/// M2 with an import at central: a shop on immediate syncs uploads its emission; before the
/// automaton gets to it, an operator's `central import` (run inside the daemon) processes every
/// emission waiting, this one too. The automaton then skipped it as processed and asked no
/// return for it: the shop waited in vain, told its return would come at its next connection.
/// An emission processed meanwhile by another hand still gets its return.
#[test]
fn m2_an_immediate_emission_processed_by_an_import_meanwhile_still_gets_its_return() {
    let w = immediate_emission_processed_by_an_import(false);
    assert!(w.holds("BSOC", "ASOC-000001"));
}

/// The same with an emission central notes at receipt — the emission before it never reached
/// central (a file lost on the way): the note is kept in the journal row's error, and the
/// automaton took any emission processed meanwhile with an error for one that failed — no
/// return. An emission processed is answered whatever its receipt noted (found by a review).
#[test]
fn m2_an_immediate_emission_noted_at_receipt_and_processed_by_an_import_still_gets_its_return() {
    let w = immediate_emission_processed_by_an_import(true);
    assert!(w.holds("BSOC", "ASOC-000001"));
}

/// The seed's plan, then BSOC's machine asleep from 22:00 to 08:00 (Paris) every night: its
/// 23:20 fetch falls while it sleeps. Central writes a customer on the 26th. With `fetches`
/// false, every fetch BSOC tries fails (its return cannot be reached). Runs until `end_ms`.
fn bsoc_asleep_at_night(fetches: bool, end_ms: u64) -> World {
    let mut w = c5_plan("23:40");
    w.asoc
        .write(|tx| tx.set("customers", "ASOC-000001", "name", "written at central"))
        .unwrap();
    let asleep = |now: u64| {
        let h = (now / 3_600_000 + 1) % 24; // Paris, UTC+1 in November
        !(8..22).contains(&h)
    };
    while w.now() < end_ms {
        w.clock.advance(MINUTE);
        let now = w.now();
        for i in 0..w.remotes.len() {
            let bsoc = w.remotes[i].store.site().code.as_str() == "BSOC";
            if bsoc && asleep(now) {
                continue;
            }
            let mut cmds = w.remotes[i].scheduler.on_time(now);
            if bsoc && !fetches {
                cmds.retain(|c| *c != RemoteCommand::FetchReturn);
            }
            w.execute(i, cmds);
        }
        let cmds = w.automaton.on_time(now);
        w.run_central(cmds);
    }
    w
}

/// The open `stale/` alerts at central after a monitor pass.
fn stale_alerts(w: &World) -> Vec<monitor::Alert> {
    monitor::evaluate(&w.asoc, w.now(), &monitor::Thresholds::default(), None).unwrap();
    monitor::alerts(&w.asoc, 0)
        .unwrap()
        .into_iter()
        .filter(|a| a.is_open() && a.key.starts_with("stale/"))
        .collect()
}

/// M1: a shop's machine sleeps from 22:00 to 08:00; it emits at 21:00 every day, and its 23:20
/// fetch falls while it sleeps. Waking more than six hours later, it let the fetch go (a
/// daily job runs only within six hours of its time): it never applied a return, central's
/// and the other shops' data never reached it. It now fetches the return it missed on waking.
#[test]
fn m1_a_shop_asleep_at_its_fetch_time_fetches_on_waking() {
    let w = bsoc_asleep_at_night(true, paris(27, 8, 1));
    assert!(w.holds("BSOC", "ASOC-000001"));
    assert!(w.holds("BSOC", "CSOC-000001"));
    let w = bsoc_asleep_at_night(true, paris(29, 21, 30));
    assert!(stale_alerts(&w).is_empty());
}

/// C3 and M1: a shop emits at 21:00 every day, but every fetch it tries fails: it never applies
/// a return, its data from central grows older every day — and no alert said so, since its
/// emissions keep coming. The person responsible is now told once its newest emission is more
/// than `stale_after` past the first return made for it that it has not reported applied.
#[test]
fn c3_m1_a_shop_that_emits_but_applies_no_return_raises_an_alert() {
    let w = bsoc_asleep_at_night(false, paris(29, 21, 30));
    let open = stale_alerts(&w);
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].key, "stale/BSOC");
    assert!(
        open[0].text.contains("applied no return"),
        "{}",
        open[0].text
    );
}

#[test]
fn c4_a_removed_remote_s_newest_return_is_dropped_from_the_sync_table() {
    let w = c5_plan("23:40");
    let csoc = SiteId(3);
    let (id, _) = central::fetch_return(&w.asoc, csoc, 0).unwrap().unwrap();
    let before = central::stored_flow_bytes(&w.asoc).unwrap();
    central::remove_remote(&w.asoc, "CSOC", w.now(), central::Removal::default()).unwrap();
    let after = central::stored_flow_bytes(&w.asoc).unwrap();
    assert!(after < before, "{before} bytes before, {after} after");
    assert!(central::fetch_return(&w.asoc, csoc, 0).unwrap().is_none());
    let row = journal::row(&w.asoc, id).unwrap().unwrap();
    assert_eq!(row.receipt, None, "its row stays, without bytes: {row:?}");
    // BSOC's return is still there.
    assert!(
        central::fetch_return(&w.asoc, SiteId(2), 0)
            .unwrap()
            .is_some()
    );
}

/// BSOC (fixed times 21:00 and 23:20) and CSOC at 20:00; a till of BSOC holds its document D-1
/// reserved (R7).
fn bsoc_holding_d1_reserved() -> World {
    let cfg = config(vec![
        (2, "BSOC", "Europe/Paris", "fixed 21:00 23:20"),
        (3, "CSOC", "Europe/Paris", "fixed 22:00 23:40"),
    ]);
    let w = World::new(&cfg, paris(25, 20, 0));
    let bsoc = w.remote("BSOC");
    bsoc.write(|tx| tx.set("sales_documents", "D-1", "status", "open"))
        .unwrap();
    bsoc.reserve("sales_documents", "D-1", "till-1").unwrap();
    w
}

#[test]
fn r7_c4_a_remote_holding_reserved_documents_is_removed_only_when_asked_to_drop_them() {
    let mut w = bsoc_holding_d1_reserved();
    let bsoc = w.remote("BSOC");
    bsoc.write_commit_as("till-1", |tx| {
        tx.set("sales_documents", "D-1", "status", "being edited")
    })
    .unwrap();
    // 21:00 BSOC emits, reporting the document it holds reserved (held out of syncs, R7).
    w.run_until(paris(25, 21, 30));
    let err =
        central::remove_remote(&w.asoc, "BSOC", w.now(), central::Removal::default()).unwrap_err();
    assert!(err.to_string().contains("1 document(s) reserved"), "{err}");
    assert!(central::retired(&w.asoc, SiteId(2)).unwrap().is_none());
    // Asked to drop them (the shop is gone): removed.
    central::remove_remote(
        &w.asoc,
        "BSOC",
        w.now(),
        central::Removal {
            drop_reserved: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(central::retired(&w.asoc, SiteId(2)).unwrap().is_some());
}

/// A shop whose store held a document reserved at its last sync is set up again from a new
/// bootstrap (`central reprovision`: its store lost, or refused and condemned): what the old
/// store held reserved is lost with it, and the new store holds nothing reserved. Central kept
/// counting the old store's reservations and refused to remove the shop for them (the
/// simulator's seed 601858: a closing shop whose last emission was refused had its store
/// reprovisioned, and its removal was then refused for documents no store of it held). Central
/// forgets them when it reprovisions the site.
#[test]
fn r7_c4_the_reservations_of_a_store_a_reprovisioning_replaced_do_not_hold_the_removal_back() {
    let mut w = bsoc_holding_d1_reserved();
    w.run_until(paris(25, 21, 30));
    let snap = w.asoc.snapshot().unwrap();
    assert_eq!(
        outpost::replicator::monitor::reserved(&snap, SiteId(2))
            .unwrap()
            .map(|r| r.count),
        Some(1)
    );
    central::reprovision(&w.asoc, SiteId(2)).unwrap();
    let snap = w.asoc.snapshot().unwrap();
    assert_eq!(
        outpost::replicator::monitor::reserved(&snap, SiteId(2)).unwrap(),
        None
    );
    central::remove_remote(&w.asoc, "BSOC", w.now(), central::Removal::default()).unwrap();
    assert!(central::retired(&w.asoc, SiteId(2)).unwrap().is_some());
}

#[test]
fn j3_a_return_fetched_at_23_01_is_applied_at_23_01() {
    let w = c5_plan("23:01");
    let rows = journal::rows(
        &w.asoc,
        Some(SiteId(3)),
        Some(paris(25, 20, 0)),
        Some(paris(25, 23, 59)),
    )
    .unwrap();
    let e = rows.iter().find(|r| r.kind == FlowKind::Emission).unwrap();
    let r = rows.iter().find(|r| r.kind == FlowKind::Return).unwrap();
    assert_eq!(e.file_ready_ms, Some(paris(25, 22, 0)));
    assert!(e.exec_end_ms.unwrap() <= paris(25, 22, 1));
    assert_eq!(r.file_ready_ms, Some(paris(25, 23, 0)));
    assert_eq!(r.exec_start_ms, Some(paris(25, 23, 1)));
}

#[test]
fn m5_immediate_remotes_far_apart_the_first_lacks_the_last_until_a_morning_resync() {
    // Tokyo (UTC+9) syncs at 18:00 local = 09:00 UTC; Los Angeles (UTC-8) at 15:00 local =
    // 23:00 UTC: Tokyo is first, Los Angeles last.
    let cfg = config(vec![
        (2, "TSOC", "Asia/Tokyo", "immediate 600"),
        (3, "LSOC", "America/Los_Angeles", "immediate 600"),
    ]);
    let start = utc_ms(2026, 11, 25, 0, 0);
    let mut w = World::new(&cfg, start);
    let tokyo: Zone = "Asia/Tokyo".parse().unwrap();
    let la: Zone = "America/Los_Angeles".parse().unwrap();
    let mut tokyo_sync = Daily::new("18:00".parse().unwrap());
    let mut la_sync = Daily::new("15:00".parse().unwrap());
    let mut tokyo_morning = Daily::new("08:30".parse().unwrap());
    // Yesterday's runs are past: only from now on.
    for (job, zone) in [
        (&mut tokyo_sync, tokyo),
        (&mut la_sync, la),
        (&mut tokyo_morning, tokyo),
    ] {
        job.take_due(zone, start);
    }
    // Tokyo's day: a customer at 12:00 JST (03:00 UTC). LA's day: one at 12:00 PST (20:00 UTC).
    w.run_until(utc_ms(2026, 11, 25, 3, 0));
    w.remote("TSOC")
        .write(|tx| tx.set("customers", "TSOC-1", "name", "Sato"))
        .unwrap();
    let mut la_written = false;
    let mut checked_before_morning = false;
    let end = utc_ms(2026, 11, 26, 0, 0);
    while w.now() < end {
        w.tick();
        let now = w.now();
        if !la_written && now >= utc_ms(2026, 11, 25, 20, 0) {
            w.remote("LSOC")
                .write(|tx| tx.set("customers", "LSOC-1", "name", "Garcia"))
                .unwrap();
            la_written = true;
        }
        if tokyo_sync.take_due(tokyo, now) {
            w.request_sync("TSOC", false);
        }
        if la_sync.take_due(la, now) {
            w.request_sync("LSOC", false);
            // LA, last, has Tokyo's data at once.
            assert!(
                w.remote("LSOC")
                    .record("customers", "TSOC-1")
                    .unwrap()
                    .is_some()
            );
        }
        if now == utc_ms(2026, 11, 25, 23, 29) {
            // Tokyo, first, does not have LA's data: it synced before LA wrote and emitted.
            assert!(
                w.remote("TSOC")
                    .record("customers", "LSOC-1")
                    .unwrap()
                    .is_none()
            );
            checked_before_morning = true;
        }
        if tokyo_morning.take_due(tokyo, now) {
            // The advice (M5): an immediate sync in the morning, with nothing to send.
            w.request_sync("TSOC", false);
            assert_eq!(
                w.remote("TSOC")
                    .record("customers", "LSOC-1")
                    .unwrap()
                    .unwrap()
                    .get("name"),
                Some(&Value::from("Garcia")),
                "the morning re-sync brings LA's day"
            );
        }
    }
    assert!(la_written && checked_before_morning);
}

#[test]
fn a3_an_immediate_sync_whose_wait_expires_fetches_its_return_at_the_next_connection() {
    let cfg = config(vec![(
        2,
        "BSOC",
        "Europe/Paris",
        "fixed 21:00 23:20;immediate 120",
    )]);
    let mut w = World::new(&cfg, paris(25, 10, 0));
    w.asoc
        .write(|tx| {
            tx.set(
                "articles",
                "ART-1",
                "price",
                outpost::Value::Decimal("9.90".parse().unwrap()),
            )
        })
        .unwrap();
    // M4: an immediate sync although a fixed-time one is configured.
    w.request_sync("BSOC", false);
    // The return is prepared at once by central and fetched while waiting.
    assert!(
        w.remote("BSOC")
            .record("articles", "ART-1")
            .unwrap()
            .is_some()
    );
    assert!(!w.remotes[0].scheduler.is_waiting());
    // Now one whose return central cannot make in time: its automaton is down, and the
    // emission arrives in the sync table without the event, so the wait expires.
    w.asoc
        .write(|tx| {
            tx.set(
                "articles",
                "ART-2",
                "price",
                outpost::Value::Decimal("1.00".parse().unwrap()),
            )
        })
        .unwrap();
    let now = w.now();
    let cmds = w.remotes[0].scheduler.request_sync(now, false);
    assert_eq!(
        cmds,
        vec![RemoteCommand::Emit(
            outpost::replicator::SyncMode::Immediate
        )]
    );
    let (bytes, _) = remote::emit(
        w.remote("BSOC"),
        Vec::new(),
        outpost::replicator::SyncMode::Immediate,
        true,
    )
    .unwrap();
    let Received::Ready { id, .. } =
        central::receive(&w.asoc, bytes.as_slice(), Some(SiteId(2))).unwrap()
    else {
        panic!()
    };
    for _ in 0..3 {
        w.tick_remotes_only(); // waits 2 minutes, polling: nothing; then the wait expires
    }
    assert!(
        w.remote("BSOC")
            .record("articles", "ART-2")
            .unwrap()
            .is_none()
    );
    assert!(!w.remotes[0].scheduler.is_waiting());
    // Central comes back: its safety-net sweep finds the unannounced emission and processes it.
    w.tick();
    assert!(
        journal::row(&w.asoc, id)
            .unwrap()
            .unwrap()
            .exec_end_ms
            .is_some()
    );
    // The next connection — the fixed 21:00 emission — fetches the pending return first.
    w.run_until(paris(25, 21, 1));
    assert!(
        w.remote("BSOC")
            .record("articles", "ART-2")
            .unwrap()
            .is_some(),
        "nothing lost"
    );
}

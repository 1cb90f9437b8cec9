//! The remote's executor under an injected clock, with an in-memory transport to central's
//! store and automaton: a running executor follows a new schedule without a restart (C4, C6)
//! and makes at most one fixed-time emission a day across schedule changes and restarts (M1).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::convert::Infallible;

use outpost_engine::{
    Clock, FieldKind, ManualClock, Schema, Site, SiteId, Store, StoreConfig, TableDef,
};
use outpost_replicator::automaton::{CentralAutomaton, run_central};
use outpost_replicator::central::{self, Received};
use outpost_replicator::config::{SyncConfig, SyncType};
use outpost_replicator::executor::{Fetched, RemoteExecutor, RemoteTransport};
use outpost_replicator::flow::{FlowId, FlowKind, SyncMode};
use outpost_replicator::schedule::Zone;
use outpost_replicator::{journal, remote};

const MINUTE: u64 = 60_000;

fn schema() -> Schema {
    Schema::new([TableDef::shared("t").field("f", FieldKind::Text)]).unwrap()
}

/// Central's store and automaton, reached in memory.
struct Memory<'a> {
    central: &'a Store,
    automaton: &'a mut CentralAutomaton,
}

impl RemoteTransport for Memory<'_> {
    type Error = Infallible;

    fn is_transient(_: &Infallible) -> bool {
        false
    }

    fn emit(&mut self, store: &Store, mode: SyncMode) -> Result<FlowId, Infallible> {
        let (bytes, emitted) = remote::emit(store, Vec::new(), mode, true).unwrap();
        let got = central::receive(self.central, bytes.as_slice(), Some(store.site().id)).unwrap();
        if let Received::Ready { id, .. } = got {
            let cmds = self.automaton.on_flow_ready(id);
            run_central(self.central, self.automaton, cmds).unwrap();
        }
        Ok(emitted.id)
    }

    fn fetch_return(
        &mut self,
        store: &Store,
        after: u64,
        _wait_ms: u64,
    ) -> Result<Option<Fetched<'_>>, Infallible> {
        Ok(central::fetch_return(self.central, store.site().id, after)
            .unwrap()
            .map(|(id, reader)| Fetched {
                answers: journal::row(self.central, id)
                    .unwrap()
                    .and_then(|r| r.link)
                    .map(|l| l.seq),
                reader: Box::new(reader),
            }))
    }
}

struct Deployment {
    clock: ManualClock,
    central: Store,
    automaton: CentralAutomaton,
    bsoc: Store,
    config: SyncConfig,
}

/// 2026-11-25 in Paris (UTC+1): local hh:mm on day `d` as UTC ms.
fn paris(d: u32, h: u32, m: u32) -> u64 {
    let z: Zone = "Europe/Paris".parse().unwrap();
    let date = chrono::NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
    z.instant(
        date,
        format!("{h:02}:{m:02}").parse().unwrap(), // HhMm
    )
}

impl Deployment {
    /// ASOC and BSOC (fixed 21:00, fetch 23:20, Europe/Paris), at `start`.
    fn new(start: u64) -> Self {
        let clock = ManualClock::new(start);
        let central = Store::in_memory(StoreConfig::new(
            Site::central(1, "ASOC").unwrap(),
            schema(),
            clock.clone(),
        ))
        .unwrap();
        let mut config = outpost_replicator::config::seed_example();
        config.remotes.retain(|r| r.code == "BSOC");
        central::set_config(&central, &config).unwrap();
        let (bytes, _) = central::write_bootstrap(&central, SiteId(2), Vec::new(), true).unwrap();
        let bsoc = remote::bootstrap(bytes.as_slice(), |site| {
            Store::in_memory(StoreConfig::new(site.clone(), schema(), clock.clone()))
        })
        .unwrap();
        let automaton = CentralAutomaton::new(&config, start).unwrap();
        Deployment {
            clock,
            central,
            automaton,
            bsoc,
            config,
        }
    }

    /// Minute by minute until `end`: BSOC's executor and central's automaton.
    fn run_until(&mut self, exec: &mut RemoteExecutor, end: u64) {
        while self.clock.now_ms() < end {
            self.clock.advance(MINUTE);
            let mut t = Memory {
                central: &self.central,
                automaton: &mut self.automaton,
            };
            let run = exec.on_time(&self.bsoc, &mut t).unwrap();
            assert!(run.failed.is_empty(), "{:?}", run.failed);
            let cmds = self.automaton.on_time(self.clock.now_ms());
            run_central(&self.central, &mut self.automaton, cmds).unwrap();
        }
    }

    /// The local times (Paris) of BSOC's fixed-time emissions, as central's journal has them.
    fn fixed_emissions(&self) -> Vec<String> {
        let z: Zone = "Europe/Paris".parse().unwrap();
        journal::rows(&self.central, Some(SiteId(2)), None, None)
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == FlowKind::Emission && r.mode == SyncMode::Deferred)
            .map(|r| z.datetime_at(r.file_ready_ms.unwrap()))
            .collect()
    }

    /// Central's administrator sets BSOC's fixed times (reaching BSOC with its next return).
    fn central_sets_bsoc(&mut self, emission: &str, fetch: &str) {
        self.config.remotes[0].sync_types = vec![SyncType::Fixed {
            emission: emission.parse().unwrap(),
            fetch: fetch.parse().unwrap(),
        }];
        central::set_config(&self.central, &self.config).unwrap();
    }
}

fn write(store: &Store, key: &str) {
    store.write(|tx| tx.set("t", key, "f", "v")).unwrap();
}

#[test]
fn c4_c6_a_running_executor_follows_a_schedule_changed_by_a_return_without_restart() {
    let mut d = Deployment::new(paris(25, 12, 0));
    let mut exec = RemoteExecutor::new(&d.bsoc).unwrap();
    write(&d.bsoc, "a");
    // Central moves BSOC's emission to 19:00; the 23:00 return carries it, fetched at 23:20.
    d.central_sets_bsoc("19:00", "23:20");
    d.run_until(&mut exec, paris(25, 23, 30));
    assert_eq!(d.fixed_emissions(), vec!["2026-11-25 21:00:00"]);
    assert_eq!(
        exec.schedule().sync_types,
        vec!["fixed 19:00 23:20".parse().unwrap()],
        "followed at once"
    );
    write(&d.bsoc, "b");
    d.run_until(&mut exec, paris(26, 22, 0));
    assert_eq!(
        d.fixed_emissions(),
        vec!["2026-11-25 21:00:00", "2026-11-26 19:00:00"],
        "the same running executor emits at the new time"
    );
    // A local admin's edit (C6) is followed too, at the executor's next wake-up (until the
    // next return puts central's times back).
    d.run_until(&mut exec, paris(27, 1, 0));
    remote::set_setting(&d.bsoc, "sync_types", "fixed 18:00 23:40").unwrap();
    d.run_until(&mut exec, paris(27, 20, 0));
    assert_eq!(
        d.fixed_emissions(),
        vec![
            "2026-11-25 21:00:00",
            "2026-11-26 19:00:00",
            "2026-11-27 18:00:00"
        ]
    );
}

#[test]
fn m1_a_schedule_changed_by_a_return_or_a_restart_never_emits_twice_the_same_day() {
    let mut d = Deployment::new(paris(25, 12, 0));
    let mut exec = RemoteExecutor::new(&d.bsoc).unwrap();
    // BSOC's admin moves the emission to 20:00 (C6); it emits at 20:00.
    remote::set_setting(&d.bsoc, "sync_types", "fixed 20:00 23:20").unwrap();
    write(&d.bsoc, "a");
    d.run_until(&mut exec, paris(25, 23, 0));
    assert_eq!(d.fixed_emissions(), vec!["2026-11-25 20:00:00"]);
    // The 23:20 return restores central's 21:00: no "catching up" of 21:00 that day.
    write(&d.bsoc, "b");
    d.run_until(&mut exec, paris(26, 2, 0));
    assert_eq!(
        exec.schedule().sync_types,
        vec!["fixed 21:00 23:20".parse().unwrap()]
    );
    assert_eq!(d.fixed_emissions(), vec!["2026-11-25 20:00:00"]);
    d.run_until(&mut exec, paris(26, 21, 30));
    assert_eq!(
        d.fixed_emissions(),
        vec!["2026-11-25 20:00:00", "2026-11-26 21:00:00"]
    );
    // A restart after the day's emission (a new executor, as a new process) does not make it
    // again either.
    let mut restarted = RemoteExecutor::new(&d.bsoc).unwrap();
    d.run_until(&mut restarted, paris(26, 23, 59));
    assert_eq!(
        d.fixed_emissions(),
        vec!["2026-11-25 20:00:00", "2026-11-26 21:00:00"]
    );
}

#[test]
fn m1_a_manual_export_in_the_morning_does_not_stand_for_the_evening_s_fixed_emission_after_a_restart()
 {
    let mut d = Deployment::new(paris(25, 9, 0));
    let mut exec = RemoteExecutor::new(&d.bsoc).unwrap();
    d.run_until(&mut exec, paris(25, 10, 0));
    // An emission on a USB stick at 10:00 (`outpost remote export`: deferred mode, S4)…
    write(&d.bsoc, "a");
    remote::emit(&d.bsoc, Vec::new(), SyncMode::Deferred, false).unwrap();
    // …then the process restarts: the 21:00 fixed-time emission is still the day's to make.
    let mut restarted = RemoteExecutor::new(&d.bsoc).unwrap();
    write(&d.bsoc, "b");
    d.run_until(&mut restarted, paris(25, 21, 30));
    assert_eq!(d.fixed_emissions(), vec!["2026-11-25 21:00:00"]);
}

/// Central out of reach: every call fails and may succeed later.
struct Down {
    calls: u32,
}

impl RemoteTransport for Down {
    type Error = &'static str;

    fn is_transient(_: &&'static str) -> bool {
        true
    }

    fn emit(&mut self, _: &Store, _: SyncMode) -> Result<FlowId, &'static str> {
        self.calls += 1;
        Err("central is unreachable")
    }

    fn fetch_return(
        &mut self,
        _: &Store,
        _: u64,
        _: u64,
    ) -> Result<Option<Fetched<'_>>, &'static str> {
        self.calls += 1;
        Err("central is unreachable")
    }
}

/// S2: a remote started while central is down, after its fixed emission time (the day's
/// emission and the catch-up fetch both due at once): one failed attempt waits the first pause,
/// however many calls it made, and each attempt after it doubles the pause.
#[test]
fn s2_the_pause_after_an_unreachable_central_doubles_once_per_attempt() {
    let d = Deployment::new(paris(25, 21, 13));
    let mut exec = RemoteExecutor::new(&d.bsoc).unwrap();
    exec.catch_up();
    let mut down = Down { calls: 0 };
    let mut pauses = Vec::new();
    for _ in 0..3 {
        let run = exec.on_time(&d.bsoc, &mut down).unwrap();
        assert!(run.unreachable.is_some());
        let at = run.retry_at.unwrap();
        pauses.push(at - d.clock.now_ms());
        d.clock.set(at);
    }
    assert!(down.calls > 3, "the first attempt emits and fetches");
    assert_eq!(
        pauses,
        vec![
            outpost_replicator::executor::RETRY_FIRST_MS,
            2 * outpost_replicator::executor::RETRY_FIRST_MS,
            4 * outpost_replicator::executor::RETRY_FIRST_MS
        ]
    );
}

/// C6 across versions: settings this remote's build cannot read — a sync type of a newer
/// central, a time zone its time-zone database lacks (stood for here by a bootstrap's
/// first-start settings, which central does not check) — made `RemoteExecutor::new` refuse:
/// after a restart neither `remote run` nor `remote sync` ran, and the return that would set
/// the settings right was never fetched ("wait for central's next return", which could not
/// come). It now follows what of them it can read, says what it cannot, and a sync asked for
/// fetches the return that sets them right.
#[test]
fn c6_a_remote_whose_settings_it_cannot_read_still_syncs_and_gets_them_set_right() {
    let mut d = Deployment::new(paris(25, 12, 0));
    let unreadable: std::collections::BTreeMap<String, String> = [
        ("sync_types", "fixed 21:00 23:20;weekdays 21:00"),
        ("time_zone", "Mars/Olympus"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let (bytes, _) =
        central::write_bootstrap_with(&d.central, SiteId(2), Vec::new(), true, &unreadable)
            .unwrap();
    d.bsoc = remote::bootstrap(bytes.as_slice(), |site| {
        Store::in_memory(StoreConfig::new(site.clone(), schema(), d.clock.clone()))
    })
    .unwrap();
    let mut exec = RemoteExecutor::new(&d.bsoc).unwrap();
    assert_eq!(
        exec.schedule().sync_types,
        vec!["fixed 21:00 23:20".parse::<SyncType>().unwrap()]
    );
    write(&d.bsoc, "a");
    let mut t = Memory {
        central: &d.central,
        automaton: &mut d.automaton,
    };
    let run = exec
        .request_sync(
            &d.bsoc,
            &mut t,
            outpost_replicator::executor::SyncAsk::Immediate { wait_ms: None },
        )
        .unwrap();
    assert!(
        run.notes
            .iter()
            .any(|n| n.contains("weekdays 21:00") && n.contains("Mars/Olympus")),
        "{:?}",
        run.notes
    );
    assert_eq!(run.applied.len(), 1, "{run:?}");
    let run = exec.on_time(&d.bsoc, &mut t).unwrap();
    assert!(run.failed.is_empty());
    assert_eq!(exec.schedule().zone.to_string(), "Europe/Paris");
}

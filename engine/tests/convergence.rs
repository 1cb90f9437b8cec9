//! Convergence, checked against a plain `BTreeMap` model: 2–6 sites write, delete and collide on
//! the same fields (equal physical times included, clocks hours apart), changes are delivered in
//! random orders with duplicates — directly from their origin, or relayed by syncs. Once every
//! change has reached every site, all stores hold byte-identical replicated content, and every
//! register equals the maximum `(stamp, site, seq)` among the writes to it (the minimum for a
//! record's creation).
//!
//! Fixed default seed; `PROPTEST_RNG_SEED=<n>` and `PROPTEST_CASES=<n>` change the run. A failure
//! prints the command that reproduces it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::BTreeMap;

use common::{T0_MS, proptest_config, proptest_seed};
use outpost_engine::{
    Change, Creation, FieldKind, Knowledge, ManualClock, Marker, Schema, Site, SiteId, Slot, Store,
    StoreConfig, TableDef, Value,
};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

const FIELDS: [&str; 3] = ["a", "b", "c"];
const HOUR_MS: i64 = 3_600_000;

fn schema() -> Schema {
    Schema::new([TableDef::shared("customers")
        .field("a", FieldKind::Any)
        .field("b", FieldKind::Any)
        .field("c", FieldKind::Any)])
    .unwrap()
}

/// One step of a run; numbers are reduced modulo what they index.
#[derive(Clone, Debug)]
enum Op {
    /// Site `site` writes `mask` fields of record `key`, after its clock moves by `tick`.
    Write {
        site: u8,
        key: u8,
        mask: u8,
        value: u8,
        tick: u8,
    },
    /// Site `site` deletes record `key` if it sees it.
    Delete { site: u8, key: u8, tick: u8 },
    /// Commit number `commit` reaches site `to`, straight from its origin.
    Deliver { commit: u16, to: u8 },
    /// Site `from` sends site `to` everything `to` lacks.
    Sync { from: u8, to: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u8>(), 0u8..4, 1u8..8, any::<u8>(), 0u8..4)
            .prop_map(|(site, key, mask, value, tick)| Op::Write { site, key, mask, value, tick }),
        1 => (any::<u8>(), 0u8..4, 0u8..4).prop_map(|(site, key, tick)| Op::Delete { site, key, tick }),
        3 => (any::<u16>(), any::<u8>()).prop_map(|(commit, to)| Op::Deliver { commit, to }),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(from, to)| Op::Sync { from, to }),
    ]
}

/// Clock offsets: equal clocks, a second apart, three hours behind or ahead.
const OFFSETS_MS: [i64; 5] = [0, 0, 1_000, -3 * HOUR_MS, 3 * HOUR_MS];

struct Site_ {
    store: Store,
    clock: ManualClock,
}

fn open_sites(n: usize, offsets: &[u8]) -> Vec<Site_> {
    let sites: Vec<Site> = (1..=n as u16)
        .map(|id| {
            let code = format!("S{id}");
            if id == 1 {
                Site::central(id, &code).unwrap()
            } else {
                Site::remote(id, &code).unwrap()
            }
        })
        .collect();
    sites
        .iter()
        .enumerate()
        .map(|(i, site)| {
            let offset = OFFSETS_MS[usize::from(offsets[i]) % OFFSETS_MS.len()];
            let clock = ManualClock::new(T0_MS.checked_add_signed(offset).unwrap());
            let store =
                Store::in_memory(StoreConfig::new(site.clone(), schema(), clock.clone())).unwrap();
            for s in &sites {
                store.add_site(s.clone()).unwrap();
            }
            Site_ { store, clock }
        })
        .collect()
}

fn deliver(commit: &(SiteId, Vec<Change>), to: &Store) {
    let (origin, changes) = commit;
    if *origin == to.site().id {
        return;
    }
    let mut covers = Knowledge::new();
    if let Some(c) = changes.first() {
        covers.insert(c.dot);
    }
    to.apply(*origin, changes.clone(), &covers).unwrap();
}

fn sync(from: &Store, to: &Store) {
    let mut lacking = from.changes_lacking(&to.knowledge(), false).unwrap();
    let changes: Vec<Change> = lacking.by_ref().map(Result::unwrap).collect();
    to.apply(from.site().id, changes, &lacking.covered())
        .unwrap();
}

/// The model: per (key, slot), the winning marker and value; per key, the earliest creation.
#[derive(Default)]
struct Model {
    registers: BTreeMap<(String, Slot), (Marker, Value)>,
    creations: BTreeMap<String, Creation>,
}

impl Model {
    fn record(&mut self, change: &Change) {
        if change.slot == Slot::Created {
            let c = self
                .creations
                .entry(change.key.clone())
                .or_insert(change.created);
            *c = (*c).min(change.created);
            return;
        }
        let entry = self
            .registers
            .entry((change.key.clone(), change.slot.clone()))
            .or_insert((change.marker(), change.value.clone()));
        if change.marker() > entry.0 {
            *entry = (change.marker(), change.value.clone());
        }
    }
}

fn run(n_sites: usize, offsets: &[u8], ops: &[Op]) -> Result<(), TestCaseError> {
    let sites = open_sites(n_sites, offsets);
    let mut commits: Vec<(SiteId, Vec<Change>)> = Vec::new();
    let mut model = Model::default();
    for op in ops {
        match *op {
            Op::Write {
                site,
                key,
                mask,
                value,
                tick,
            } => {
                let s = &sites[usize::from(site) % n_sites];
                s.clock.advance(u64::from(tick));
                let key = format!("K{key}");
                let (_, commit) = s
                    .store
                    .write_commit(|tx| {
                        for (i, f) in FIELDS.iter().enumerate() {
                            if mask & (1 << i) != 0 {
                                tx.set("customers", &key, f, i64::from(value))?;
                            }
                        }
                        Ok(())
                    })
                    .unwrap();
                commit.changes.iter().for_each(|c| model.record(c));
                commits.push((s.store.site().id, commit.changes));
            }
            Op::Delete { site, key, tick } => {
                let s = &sites[usize::from(site) % n_sites];
                s.clock.advance(u64::from(tick));
                let key = format!("K{key}");
                if s.store.record("customers", &key).unwrap().is_some() {
                    let (_, commit) = s
                        .store
                        .write_commit(|tx| tx.delete("customers", &key))
                        .unwrap();
                    commit.changes.iter().for_each(|c| model.record(c));
                    commits.push((s.store.site().id, commit.changes));
                }
            }
            Op::Deliver { commit, to } => {
                if !commits.is_empty() {
                    let c = &commits[usize::from(commit) % commits.len()];
                    deliver(c, &sites[usize::from(to) % n_sites].store);
                }
            }
            Op::Sync { from, to } => {
                let (from, to) = (usize::from(from) % n_sites, usize::from(to) % n_sites);
                if from != to {
                    sync(&sites[from].store, &sites[to].store);
                }
            }
        }
    }
    // Quiet period: every commit reaches every site, from its origin, in an order of its own.
    for (i, site) in sites.iter().enumerate() {
        for k in 0..commits.len() {
            deliver(&commits[(k * 7 + i * 3) % commits.len()], &site.store);
        }
        for c in commits.iter().rev() {
            deliver(c, &site.store);
        }
    }
    let reference = sites[0]
        .store
        .snapshot()
        .unwrap()
        .replicated_content()
        .unwrap();
    for site in &sites {
        site.store.check_invariants().unwrap();
        let content = site.store.snapshot().unwrap().replicated_content().unwrap();
        prop_assert!(
            content == reference,
            "site {} diverged",
            site.store.site().code
        );
        let snap = site.store.snapshot().unwrap();
        for ((key, slot), (marker, value)) in &model.registers {
            let raw = snap.raw_record("customers", key).unwrap().unwrap();
            let reg = match slot {
                Slot::Tombstone => raw.tombstone.clone().unwrap(),
                Slot::Field(f) => raw.fields[f].clone(),
                Slot::Created => unreachable!("creations are modelled apart"),
            };
            prop_assert_eq!(reg.marker(), *marker);
            prop_assert_eq!(&reg.value, value);
        }
        for (key, creation) in &model.creations {
            let raw = snap.raw_record("customers", key).unwrap().unwrap();
            prop_assert_eq!(raw.created, *creation);
        }
        // One stored record per created key, holding exactly the modelled registers.
        prop_assert_eq!(content.len(), model.creations.len());
        let n_registers: usize = snap
            .scan_raw("customers", None, None)
            .unwrap()
            .iter()
            .map(|r| 1 + r.fields.len() + usize::from(r.tombstone.is_some()))
            .sum();
        prop_assert_eq!(n_registers, model.registers.len() + model.creations.len());
    }
    // Each site's knowledge covers every commit.
    for site in &sites {
        let k = site.store.knowledge();
        for (_, changes) in &commits {
            if let Some(c) = changes.first() {
                prop_assert!(k.contains(c.dot));
            }
        }
    }
    Ok(())
}

#[test]
fn r2_all_sites_converge_to_the_maximum_stamp_per_field() {
    let config = proptest_config(96);
    let seed = proptest_seed(&config);
    let mut runner = TestRunner::new(config);
    let strategy = (
        2usize..=6,
        proptest::collection::vec(any::<u8>(), 6),
        proptest::collection::vec(op(), 1..80),
    );
    let result = runner.run(&strategy, |(n, offsets, ops)| run(n, &offsets, &ops));
    if let Err(e) = result {
        panic!(
            "{e}\nreproduce: PROPTEST_RNG_SEED={seed} cargo test -p outpost-engine --test convergence"
        );
    }
}

#[test]
fn hlc_a_site_three_hours_behind_or_ahead_still_converges_and_wins_when_later() {
    // Central's clock is right, BSOC's three hours behind, CSOC's three hours ahead.
    let sites = open_sites(3, &[0, 3, 4]);
    let (a, b, c) = (&sites[0].store, &sites[1].store, &sites[2].store);
    c.write(|tx| tx.set("customers", "K", "a", "from CSOC (ahead)"))
        .unwrap();
    sync(c, a);
    sync(a, b);
    // BSOC writes after having seen CSOC's change: although its own clock is six hours behind
    // CSOC's, its stamp is later, so its write wins (causality), everywhere.
    b.write(|tx| tx.set("customers", "K", "a", "from BSOC (behind, later)"))
        .unwrap();
    sync(b, a);
    sync(a, c);
    sync(a, b);
    for s in [a, b, c] {
        assert_eq!(
            s.record("customers", "K").unwrap().unwrap().get("a"),
            Some(&Value::from("from BSOC (behind, later)"))
        );
    }
    let content = a.snapshot().unwrap().replicated_content().unwrap();
    assert_eq!(b.snapshot().unwrap().replicated_content().unwrap(), content);
    assert_eq!(c.snapshot().unwrap().replicated_content().unwrap(), content);
    // The stamp from three hours ahead was reported on arrival (not clamped, not dropped).
    let d = open_sites(3, &[0, 0, 0]);
    let (_, commit) = c
        .write_commit(|tx| tx.set("customers", "K2", "b", 1))
        .unwrap();
    let changes = commit.changes;
    let report = d[0]
        .store
        .apply(SiteId(3), changes.clone(), &Knowledge::new())
        .unwrap();
    assert!(!report.ahead.is_empty());
    assert!(
        report
            .ahead
            .iter()
            .all(|r| r.ahead_ms >= 3 * HOUR_MS as u64 - 10_000)
    );
    assert_eq!(report.refused(), 0);
    assert!(d[0].store.clock_high_water() >= changes.iter().map(|c| c.stamp).max().unwrap());
}

/// R2 when one site stamps two different writes alike: a site put back from a backup, whose
/// clock had run ahead before its loss, can stamp a write exactly as a lost one of its own was
/// (same stamp, same site, another commit). Every site must still pick the same winner whatever
/// the order of arrival — the later commit — instead of each keeping the one it had first (a
/// silent divergence).
#[test]
fn r2_two_writes_of_one_site_stamped_alike_converge_on_the_later_commit() {
    let sites = open_sites(3, &[0, 0, 0]);
    let (a, b, c) = (&sites[0].store, &sites[1].store, &sites[2].store);
    let (_, lost) = a
        .write_commit(|tx| tx.set("customers", "K", "a", "written before the loss"))
        .unwrap();
    // The same commit as the site put back writes it: a later sequence, the same stamp.
    let mut again = lost.changes.clone();
    for ch in &mut again {
        ch.dot.seq += 1 << 32;
        ch.created.dot.seq += 1 << 32;
        if ch.slot == Slot::Field("a".into()) {
            ch.value = Value::from("written after the restore");
        }
    }
    let covers = |changes: &[Change]| {
        let mut k = Knowledge::new();
        k.insert(changes[0].dot);
        k
    };
    b.apply(SiteId(1), lost.changes.clone(), &covers(&lost.changes))
        .unwrap();
    b.apply(SiteId(1), again.clone(), &covers(&again)).unwrap();
    c.apply(SiteId(1), again.clone(), &covers(&again)).unwrap();
    c.apply(SiteId(1), lost.changes.clone(), &covers(&lost.changes))
        .unwrap();
    for s in [b, c] {
        assert_eq!(
            s.record("customers", "K").unwrap().unwrap().get("a"),
            Some(&Value::from("written after the restore")),
            "{}",
            s.site().code
        );
    }
    assert_eq!(
        b.snapshot().unwrap().replicated_content().unwrap(),
        c.snapshot().unwrap().replicated_content().unwrap()
    );
}

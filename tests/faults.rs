//! I/O faults along every commit path (issue 8): a disk that fails from its N-th write on, for
//! every N the path reaches. After the failure the store refuses writes (poisoned); reopened
//! from what reached the disk it is clean (invariants hold) and holds the whole transaction or
//! none of it; the operation done again from there ends where an unfailing run ends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use outpost::replicator::{SyncMode, central, journal, remote};
use outpost::{ManualClock, Site, SiteId, Store, StoreConfig};

const T0: u64 = 1_795_564_800_000;
const BSOC: SiteId = SiteId(2);

/// A disk held in memory that outlives the stores opened on it, and fails every write, resize
/// and sync from the `budget`-th on (the writes before it are on the disk).
#[derive(Debug, Clone)]
struct Disk {
    bytes: Arc<Mutex<Vec<u8>>>,
    budget: Arc<AtomicU64>,
    used: Arc<AtomicU64>,
}

impl Disk {
    fn new() -> Self {
        Disk {
            bytes: Arc::default(),
            budget: Arc::new(AtomicU64::new(u64::MAX)),
            used: Arc::default(),
        }
    }

    /// A copy of the disk as it is now, with no failure planned.
    fn copy(&self) -> Self {
        Disk {
            bytes: Arc::new(Mutex::new(self.bytes.lock().unwrap().clone())),
            ..Disk::new()
        }
    }

    /// From now on, `n` more writes succeed, then every one fails.
    fn fail_after(&self, n: u64) {
        self.used.store(0, Ordering::SeqCst);
        self.budget.store(n, Ordering::SeqCst);
    }

    fn spend(&self) -> std::io::Result<()> {
        if self.used.fetch_add(1, Ordering::SeqCst) >= self.budget.load(Ordering::SeqCst) {
            Err(std::io::Error::other("injected disk failure"))
        } else {
            Ok(())
        }
    }
}

impl redb::StorageBackend for Disk {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.bytes.lock().unwrap().len() as u64)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let bytes = self.bytes.lock().unwrap();
        let start = offset as usize;
        let src = bytes
            .get(start..start + out.len())
            .ok_or_else(|| std::io::Error::other("read past the end"))?;
        out.copy_from_slice(src);
        Ok(())
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.spend()?;
        self.bytes.lock().unwrap().resize(len as usize, 0);
        Ok(())
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.spend()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.spend()?;
        let mut bytes = self.bytes.lock().unwrap();
        let start = offset as usize;
        if bytes.len() < start + data.len() {
            bytes.resize(start + data.len(), 0);
        }
        bytes[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }
}

fn open(disk: &Disk, site: &Site, clock: &ManualClock) -> Store {
    Store::with_backend(
        disk.clone(),
        StoreConfig::new(site.clone(), outpost::retail::schema(), clock.clone()),
    )
    .unwrap()
}

/// Everything a commit path can change, to compare a store against "before" and "after".
fn state_of(store: &Store) -> String {
    let content = store.snapshot().unwrap().replicated_content().unwrap();
    let mut out = format!("{content:?}\n{:?}\n", store.knowledge());
    if store.site().is_central() {
        out += &format!("{:?}\n", journal::rows(store, None, None, None).unwrap());
        out += &format!("{:?}\n", central::pending_emissions(store).unwrap());
        out += &format!(
            "restore {:?} {:?}\n",
            store.lost_own(),
            central::restore_under_way(store).unwrap()
        );
    } else {
        out += &format!("{:?}\n", remote::log_rows(store).unwrap());
        out += &format!("{:?}\n", remote::unreported_acks(store).unwrap());
    }
    out
}

/// The data, the knowledge, and what the journal or the log says was done (not the receipt
/// numbers, which a cut receipt uses up).
fn core_state(store: &Store) -> String {
    let content = store.snapshot().unwrap().replicated_content().unwrap();
    let mut out = format!("{content:?}\n{:?}\n", store.knowledge());
    if store.site().is_central() {
        for r in journal::rows(store, None, None, None).unwrap() {
            out += &format!(
                "{} {:?} ready {:?} end {:?} changes {} link {:?}\n",
                r.id, r.kind, r.file_ready_ms, r.exec_end_ms, r.n_changes, r.link
            );
        }
        out += &format!("{}\n", central::pending_emissions(store).unwrap().len());
    }
    out
}

fn reference_store(disk: &Disk, site: &Site, clock: &ManualClock) -> Store {
    open(&disk.copy(), site, clock)
}

/// Runs `op` on a store opened on a copy of `disk`, failing the disk from each write on in
/// turn; `whole` says whether `op` is one transaction (so the reopened store is exactly before
/// or after) or several (so it is checked by doing `op` again). Returns how many cut points were
/// tried.
fn every_cut<R: Debug>(
    what: &str,
    disk: &Disk,
    site: &Site,
    clock: &ManualClock,
    whole: bool,
    op: &dyn Fn(&Store) -> Result<R, String>,
) -> u64 {
    // The unfailing run: the reference "after", and how many writes the path makes.
    let reference = disk.copy();
    let store = open(&reference, site, clock);
    let before = state_of(&store);
    reference.fail_after(u64::MAX);
    reference.used.store(0, Ordering::SeqCst);
    op(&store).unwrap_or_else(|e| panic!("{what}: the unfailing run fails: {e}"));
    let writes = reference.used.load(Ordering::SeqCst);
    let after = state_of(&store);
    assert_ne!(before, after, "{what} changes nothing");
    drop(store);
    assert!(writes > 0, "{what}: no write");
    let mut states_seen = BTreeSet::new();
    for n in 0..writes {
        let cut = disk.copy();
        let store = open(&cut, site, clock);
        cut.fail_after(n);
        let result = op(&store);
        assert!(
            result.is_err(),
            "{what}: the disk failed at write {n} of {writes}, yet it succeeded: {result:?}"
        );
        assert!(store.is_poisoned(), "{what}: cut at {n}: not poisoned");
        let refused = store.write(|tx| tx.set("customers", "X", "name", "after the failure"));
        assert!(
            matches!(refused, Err(outpost::Error::Poisoned(_))),
            "{what}: cut at {n}: a poisoned store took a write: {refused:?}"
        );
        drop(store);
        // Reopened from what reached the disk: clean, and before or after.
        let reopened = Store::with_backend(
            cut.copy(),
            StoreConfig::new(site.clone(), outpost::retail::schema(), clock.clone()),
        )
        .unwrap_or_else(|e| panic!("{what}: cut at {n}: does not reopen: {e}"));
        reopened
            .check_invariants()
            .unwrap_or_else(|e| panic!("{what}: cut at {n}: {e}"));
        let now = state_of(&reopened);
        if whole {
            assert!(
                now == before || now == after,
                "{what}: cut at write {n} of {writes} left a part of the transaction"
            );
        } else if now != after {
            op(&reopened).unwrap_or_else(|e| panic!("{what}: cut at {n}: redoing it fails: {e}"));
            reopened.check_invariants().unwrap();
            // Done again, it ends where the unfailing run ended (receipt numbers aside: a cut
            // receipt used one).
            assert_eq!(
                core_state(&reopened),
                core_state(&reference_store(&reference, site, clock)),
                "{what}: cut at {n}, then done again"
            );
        }
        states_seen.insert(now == after);
        drop(reopened);
    }
    eprintln!("{what}: {writes} cut points, every one clean (states seen: {states_seen:?})");
    writes
}

/// Central with BSOC, BSOC bootstrapped, each on its own disk; BSOC has a day of work.
struct World {
    clock: ManualClock,
    asoc_site: Site,
    bsoc_site: Site,
    asoc_disk: Disk,
    bsoc_disk: Disk,
}

fn world() -> World {
    let clock = ManualClock::new(T0);
    let asoc_site = Site::central(1, "ASOC").unwrap();
    let asoc_disk = Disk::new();
    let asoc = open(&asoc_disk, &asoc_site, &clock);
    central::create_remote(
        &asoc,
        Site::remote(2, "BSOC").unwrap(),
        BTreeSet::new(),
        Default::default(),
    )
    .unwrap();
    asoc.write(|tx| tx.set("articles", "A1", "price", outpost::Value::from("x")))
        .ok();
    let (boot, _) = central::write_bootstrap(&asoc, BSOC, Vec::new(), false).unwrap();
    let bsoc_disk = Disk::new();
    let bsoc = remote::bootstrap(boot.as_slice(), |site| {
        Store::with_backend(
            bsoc_disk.clone(),
            StoreConfig::new(site.clone(), outpost::retail::schema(), clock.clone()),
        )
    })
    .unwrap();
    let bsoc_site = bsoc.site().clone();
    for i in 0..300 {
        bsoc.write(|tx| {
            tx.set(
                "customers",
                &format!("BSOC-{i}"),
                "name",
                format!("customer {i}"),
            )?;
            tx.set("customers", &format!("BSOC-{i}"), "city", "Lyon")
        })
        .unwrap();
    }
    World {
        clock,
        asoc_site,
        bsoc_site,
        asoc_disk,
        bsoc_disk,
    }
}

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

#[test]
fn faults_every_cut_along_every_commit_path_leaves_all_or_nothing_and_reopens_cleanly() {
    let w = world();
    let mut total = 0;
    // A local write: three fields of two records in one commit.
    total += every_cut(
        "local write",
        &w.bsoc_disk,
        &w.bsoc_site,
        &w.clock,
        true,
        &|st| {
            st.write(|tx| {
                tx.set("customers", "BSOC-1", "name", "renamed")?;
                tx.set("customers", "BSOC-99", "name", "new")?;
                tx.set("customers", "BSOC-99", "city", "Nantes")
            })
            .map_err(s)
        },
    );
    // Writing an emission (the remote's log and sequence, frozen documents).
    total += every_cut("emit", &w.bsoc_disk, &w.bsoc_site, &w.clock, true, &|st| {
        remote::emit(st, Vec::new(), SyncMode::Deferred, true)
            .map(|(_, e)| e.id)
            .map_err(s)
    });
    // Receiving it at central (a chunk per transaction, then "file ready"), then processing it.
    let bsoc = open(&w.bsoc_disk, &w.bsoc_site, &w.clock);
    let (emission, _) = remote::emit(&bsoc, Vec::new(), SyncMode::Deferred, true).unwrap();
    drop(bsoc);
    total += every_cut(
        "receive",
        &w.asoc_disk,
        &w.asoc_site,
        &w.clock,
        false,
        &|st| central::receive(st, emission.as_slice(), Some(BSOC)).map_err(s),
    );
    let asoc = open(&w.asoc_disk, &w.asoc_site, &w.clock);
    central::receive(&asoc, emission.as_slice(), Some(BSOC)).unwrap();
    drop(asoc);
    total += every_cut(
        "process",
        &w.asoc_disk,
        &w.asoc_site,
        &w.clock,
        false,
        &|st| {
            let done = central::process_ready(st).map_err(s)?;
            (!done.is_empty() || central::pending_emissions(st).map_err(s)?.is_empty())
                .then_some(done.len())
                .ok_or_else(|| "nothing processed".to_owned())
        },
    );
    // The return: written into central's sync table, then applied at BSOC.
    let asoc = open(&w.asoc_disk, &w.asoc_site, &w.clock);
    central::process_ready(&asoc).unwrap();
    drop(asoc);
    total += every_cut(
        "prepare return",
        &w.asoc_disk,
        &w.asoc_site,
        &w.clock,
        false,
        &|st| central::prepare_return(st, BSOC).map(|b| b.id).map_err(s),
    );
    let asoc = open(&w.asoc_disk, &w.asoc_site, &w.clock);
    let (ret, built) = central::build_return(&asoc, BSOC, Vec::new(), true).unwrap();
    drop(asoc);
    total += every_cut(
        "apply return",
        &w.bsoc_disk,
        &w.bsoc_site,
        &w.clock,
        true,
        &|st| {
            remote::apply_return(st, ret.as_slice())
                .map(|a| format!("{a:?}"))
                .map_err(s)
        },
    );
    // The journal: the remote's report of the return, recorded at central.
    let ack = outpost::replicator::ReturnAck {
        id: built.id,
        start_ms: T0,
        end_ms: T0 + 5,
        refused: false,
        reason: None,
    };
    total += every_cut(
        "journal (acks)",
        &w.asoc_disk,
        &w.asoc_site,
        &w.clock,
        true,
        &|st| central::record_acks(st, BSOC, std::slice::from_ref(&ack)).map_err(s),
    );
    // Central put back from a backup and marked restored (`outpost central restore`): its
    // numbers jump and the restore window opens together, or not at all.
    total += every_cut(
        "after restore",
        &w.asoc_disk,
        &w.asoc_site,
        &w.clock,
        true,
        &|st| central::after_restore(st).map_err(s),
    );
    eprintln!("{total} cut points in all");
}

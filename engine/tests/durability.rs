//! Durability, the persisted clock, and the poisoned store.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use outpost_engine::{Error, ManualClock, Store, StoreConfig, Value};

const CHILD_ENV: &str = "OUTPOST_DURABILITY_CHILD_DIR";

fn open_file_store(dir: &std::path::Path, id: u16, clock: &ManualClock) -> Store {
    Store::open(dir, StoreConfig::new(site(id), schema(), clock.clone())).unwrap()
}

/// In the child: commit one record after another, announcing each once `write` has returned,
/// until killed.
fn child(dir: &str) -> ! {
    let clock = ManualClock::new(T0_MS);
    let store = open_file_store(std::path::Path::new(dir), BSOC, &clock);
    for i in 1u64.. {
        clock.advance(1);
        store
            .write(|tx| tx.set("customers", &format!("C{i:06}"), "name", format!("n{i}")))
            .unwrap();
        println!("committed {i}");
    }
    unreachable!()
}

#[test]
fn durability_a_commit_survives_sigkill_right_after_it_returns() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3u64 {
        let mut proc = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "durability_a_commit_survives_sigkill_right_after_it_returns",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = proc.stdout.take().unwrap();
        let kill_after = 5 + round * 7;
        let mut last = 0u64;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("committed ") {
                last = n.parse().unwrap();
                if last >= kill_after {
                    // SIGKILL: no destructor, no flush, no chance to finish anything.
                    proc.kill().unwrap();
                    break;
                }
            }
        }
        proc.wait().unwrap();
        assert!(last >= kill_after, "the child stopped before committing");
        // Reopen: everything announced is there (the child may have committed one more).
        let clock = ManualClock::new(T0_MS);
        let store = open_file_store(dir.path(), BSOC, &clock);
        store.check_invariants().unwrap();
        for i in 1..=last {
            let r = store
                .record("customers", &format!("C{i:06}"))
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: commit {i} lost after SIGKILL"));
            assert_eq!(r.get("name"), Some(&Value::from(format!("n{i}"))));
        }
        // The next child starts over from 1: it overwrites the same keys, which is fine.
        drop(store);
    }
}

#[test]
fn hlc_never_regresses_across_a_reopen_even_with_the_clock_set_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0_MS);
    let store = open_file_store(dir.path(), ASOC, &clock);
    let (_, first) = store
        .write_commit(|tx| tx.set("customers", "C1", "name", "before"))
        .unwrap();
    let high = store.clock_high_water();
    drop(store);
    // The machine's clock is set back a day before the restart.
    clock.set(T0_MS - 86_400_000);
    let store = open_file_store(dir.path(), ASOC, &clock);
    assert_eq!(store.clock_high_water(), high);
    let (_, second) = store
        .write_commit(|tx| tx.set("customers", "C1", "name", "after"))
        .unwrap();
    assert!(second.changes[0].stamp > first.changes[0].stamp);
    assert_eq!(
        second.dot.unwrap().seq,
        first.dot.unwrap().seq + 1,
        "sequence resumes"
    );
    assert_eq!(
        store
            .record("customers", "C1")
            .unwrap()
            .unwrap()
            .get("name"),
        Some(&Value::from("after"))
    );
}

/// A store whose own writes are held (a central put back without its restore) refuses every
/// write that would take a dot of its own — after a reopen too — and writes nothing of it, while
/// other sites' changes still merge; let go, it writes on from the number it stopped at.
#[test]
fn r1_own_writes_held_are_refused_across_a_reopen_while_merges_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0_MS);
    let store = open_file_store(dir.path(), ASOC, &clock);
    setup_directory(&store);
    let (_, first) = store
        .write_commit(|tx| tx.set("customers", "C1", "name", "before"))
        .unwrap();
    store
        .write(|tx| tx.hold_own_writes(Some("put back: run the restore")))
        .unwrap();
    drop(store);
    let store = open_file_store(dir.path(), ASOC, &clock);
    assert_eq!(
        store.own_writes_held().as_deref(),
        Some("put back: run the restore")
    );
    let err = store
        .write(|tx| {
            tx.local_put(b"note", b"kept with it?")?;
            tx.set("customers", "C2", "name", "refused")
        })
        .unwrap_err();
    assert!(matches!(err, Error::OwnWritesHeld(_)), "{err}");
    assert!(err.to_string().contains("run the restore"), "{err}");
    assert_eq!(store.record("customers", "C2").unwrap(), None);
    assert_eq!(store.snapshot().unwrap().local_get(b"note").unwrap(), None);
    let bsoc = common::store(BSOC, &clock);
    bsoc.write(|tx| tx.set("customers", "B1", "name", "from BSOC"))
        .unwrap();
    sync(&bsoc, &store);
    assert!(store.record("customers", "B1").unwrap().is_some());

    store.write(|tx| tx.hold_own_writes(None)).unwrap();
    let (_, next) = store
        .write_commit(|tx| tx.set("customers", "C2", "name", "written"))
        .unwrap();
    assert_eq!(next.dot.unwrap().seq, first.dot.unwrap().seq + 1);
    drop(store);
    let store = open_file_store(dir.path(), ASOC, &clock);
    assert_eq!(store.own_writes_held(), None);
}

#[test]
fn a_store_refuses_to_open_as_another_site_or_with_another_schema() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0_MS);
    drop(open_file_store(dir.path(), BSOC, &clock));
    let err = Store::open(
        dir.path(),
        StoreConfig::new(site(CSOC), schema(), clock.clone()),
    )
    .unwrap_err();
    assert!(matches!(err, Error::IdentityMismatch { .. }), "{err}");
    let other = outpost_engine::Schema::new([
        outpost_engine::TableDef::shared("x").field("y", outpost_engine::FieldKind::Any)
    ])
    .unwrap();
    let err = Store::open(dir.path(), StoreConfig::new(site(BSOC), other, clock)).unwrap_err();
    assert!(matches!(err, Error::SchemaMismatch { .. }), "{err}");
}

/// An in-memory backend whose writes and syncs fail while `fail` is set.
#[derive(Debug)]
struct FailingBackend {
    inner: redb::backends::InMemoryBackend,
    fail: Arc<AtomicBool>,
}

impl FailingBackend {
    fn check(&self) -> std::io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            Err(std::io::Error::other("injected disk failure"))
        } else {
            Ok(())
        }
    }
}

impl redb::StorageBackend for FailingBackend {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.check()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        self.inner.write(offset, data)
    }
}

#[test]
fn a_failed_disk_write_poisons_the_store() {
    let fail = Arc::new(AtomicBool::new(false));
    let backend = FailingBackend {
        inner: redb::backends::InMemoryBackend::new(),
        fail: Arc::clone(&fail),
    };
    let clock = ManualClock::new(T0_MS);
    let store =
        Store::with_backend(backend, StoreConfig::new(site(BSOC), schema(), clock)).unwrap();
    store
        .write(|tx| tx.set("customers", "C1", "name", "kept"))
        .unwrap();
    let knowledge = store.knowledge();
    fail.store(true, Ordering::SeqCst);
    let err = store
        .write(|tx| tx.set("customers", "C2", "name", "lost"))
        .unwrap_err();
    assert!(matches!(err, Error::Storage(_)), "{err}");
    assert!(store.is_poisoned());
    // The disk is back, but the store does not carry on in an unknown state.
    fail.store(false, Ordering::SeqCst);
    let err = store
        .write(|tx| tx.set("customers", "C3", "name", "refused"))
        .unwrap_err();
    assert!(matches!(err, Error::Poisoned(_)), "{err}");
    assert!(err.to_string().contains("reopen"), "{err}");
    // Nothing of the failed commit is in the in-memory state.
    assert_eq!(store.knowledge(), knowledge);
}

#[test]
fn a_copy_in_memory_is_the_store_as_it_was_and_goes_on_from_there() {
    let clock = ManualClock::new(1_800_000_000_000);
    let s = store(2, &clock);
    s.write(|tx| tx.set("customers", "K1", "name", "Dupont"))
        .unwrap();
    s.reserve("sales_documents", "D1", "till").ok();
    let copy = s
        .copy_in_memory(StoreConfig::new(site(2), schema(), clock.clone()))
        .unwrap();
    assert_eq!(
        copy.snapshot().unwrap().replicated_content().unwrap(),
        s.snapshot().unwrap().replicated_content().unwrap()
    );
    assert_eq!(copy.knowledge(), s.knowledge());
    // Later writes to the original are not in the copy; the copy numbers its next commit as the
    // original did then.
    let (_, a) = s
        .write_commit(|tx| tx.set("customers", "K2", "name", "Martin"))
        .unwrap();
    let (_, b) = copy
        .write_commit(|tx| tx.set("customers", "K3", "name", "Bernard"))
        .unwrap();
    assert_eq!(a.dot, b.dot, "a restored backup numbers its commits again");
    assert!(copy.record("customers", "K2").unwrap().is_none());
    copy.check_invariants().unwrap();
}

/// A store is owned by one process: opening it while it is open is `Error::Locked`, a typed
/// error the command line tells apart without reading the storage library's message (issue 20:
/// it used to look for "already open" in the text).
#[test]
fn a_store_open_elsewhere_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0_MS);
    let first = open_file_store(dir.path(), BSOC, &clock);
    let again = Store::open(
        dir.path(),
        StoreConfig::new(site(BSOC), schema(), clock.clone()),
    );
    assert!(matches!(again, Err(Error::Locked)), "{again:?}");
    drop(first);
    let store = Store::open(dir.path(), StoreConfig::new(site(BSOC), schema(), clock)).unwrap();
    drop(store);
}

/// S3: workstations of a site server write at once. Every commit stays consistent with the
/// clock it persisted, and a check running beside another thread's commits (the
/// `slow-assertions` walk after each write, enabled in tests) sees the store and the clock
/// of one same moment — never a stamp committed after the clock it read.
#[test]
#[allow(
    clippy::disallowed_methods,
    reason = "the host's threads, as a site server's workstations are, not the engine's"
)]
fn s3_writes_from_several_threads_at_once_each_see_the_store_and_its_clock_of_one_moment() {
    let clock = ManualClock::new(T0_MS);
    let store = Arc::new(store(BSOC, &clock));
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..150 {
                    store
                        .write(|tx| tx.set("customers", &format!("T{t}-{i:04}"), "name", "n"))
                        .unwrap();
                    store.check_invariants().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    store.check_invariants().unwrap();
    assert_eq!(
        store
            .snapshot()
            .unwrap()
            .scan("customers", None, None)
            .unwrap()
            .len(),
        450
    );
}

/// R1: a remote's store keeps the stamp of each own commit once asked to, across a reopen and
/// into a backup, names the commits of which no change would travel (every change written
/// over, or held back, R7), and forgets the stamps its peer confirmed.
#[test]
fn r1_r7_own_commits_written_over_or_held_back_are_named_with_their_kept_stamps() {
    let clock = ManualClock::new(T0_MS);
    let dir = tempfile::tempdir().unwrap();
    let own = |seq| outpost_engine::Dot {
        site: outpost_engine::SiteId(BSOC),
        seq,
    };
    let stamps_of_written_over = |s: &Store, known: &outpost_engine::Knowledge| {
        s.snapshot()
            .unwrap()
            .own_commits_unsent(known, &outpost_engine::Knowledge::new())
            .unwrap()
    };
    let none = outpost_engine::Knowledge::new();
    let stamp_of = std::cell::RefCell::new(std::collections::BTreeMap::new());
    let write = |s: &Store, name: &str| {
        clock.advance(1_000);
        let (_, commit) = s
            .write_commit(|tx| tx.set("customers", "K1", "name", name))
            .unwrap();
        let dot = commit.dot.unwrap();
        stamp_of
            .borrow_mut()
            .insert(dot.seq, commit.changes[0].stamp);
        dot
    };
    let s = open_file_store(dir.path(), BSOC, &clock);
    // Not asked to keep them: a commit written over is not named.
    let first = write(&s, "a");
    write(&s, "b");
    assert!(stamps_of_written_over(&s, &none).is_empty());
    s.write(|tx| tx.keep_own_stamps()).unwrap();
    let kept = write(&s, "c");
    assert_eq!(kept.seq, first.seq + 2);
    // Its change still holds the register: not written over.
    assert!(stamps_of_written_over(&s, &none).is_empty());
    let last = write(&s, "d");
    drop(s);
    let s = open_file_store(dir.path(), BSOC, &clock);
    let named = stamps_of_written_over(&s, &none);
    assert_eq!(named.len(), 1, "{named:?}");
    assert_eq!(named[0], (kept.seq, stamp_of.borrow()[&kept.seq]));
    // A commit the peer holds is not named; a backup names the same.
    let mut peer_holds = outpost_engine::Knowledge::new();
    peer_holds.insert(own(kept.seq));
    assert!(stamps_of_written_over(&s, &peer_holds).is_empty());
    let backup = s
        .copy_in_memory(StoreConfig::new(site(BSOC), schema(), clock.clone()))
        .unwrap();
    assert_eq!(stamps_of_written_over(&backup, &none), named);
    // Forgotten once confirmed: a later commit writing over the last is named alone.
    assert_eq!(
        s.write(|tx| tx.forget_own_stamps(&peer_holds, None))
            .unwrap(),
        1
    );
    let newest = write(&s, "e");
    let named = stamps_of_written_over(&s, &none);
    assert_eq!(
        named.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        vec![last.seq]
    );
    assert!(newest.seq > last.seq);
    // A commit held back (R7) is named too, though its change holds the register.
    let mut held_back = outpost_engine::Knowledge::new();
    held_back.insert(newest);
    let named: Vec<u64> = s
        .snapshot()
        .unwrap()
        .own_commits_unsent(&none, &held_back)
        .unwrap()
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(named, vec![last.seq, newest.seq]);
    s.check_invariants().unwrap();
}

//! A deployment on disk for the end-to-end tests: central ASOC and remotes BSOC and CSOC, each
//! with its own durable store, exchanging sync files through a "USB stick" directory. Shared by
//! these library-level tests and, through `cli/tests/common`, by the command line's.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use outpost::replicator::{central, files, remote};
use outpost::{ManualClock, Site, SiteId, Store, StoreConfig};

/// 2026-11-25 00:00 UTC.
pub const DAY_MS: u64 = 1_795_564_800_000;
pub const ASOC: SiteId = SiteId(1);
pub const BSOC: SiteId = SiteId(2);
pub const CSOC: SiteId = SiteId(3);

pub fn hhmm(h: u64, m: u64) -> u64 {
    DAY_MS + h * 3_600_000 + m * 60_000
}

pub struct Deployment {
    pub root: tempfile::TempDir,
    pub clock: ManualClock,
    pub asoc: Store,
    pub bsoc: Store,
    pub csoc: Store,
}

pub fn settings(emission: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("emission_time".to_owned(), emission.to_owned())])
}

impl Deployment {
    /// Central creates BSOC and CSOC (CSOC may not write stock documents) and each remote is
    /// initialised from its bootstrap file.
    pub fn new() -> Self {
        let clock = ManualClock::new(hhmm(8, 0));
        Self::with_clocks(clock.clone(), clock, outpost::engine::SKEW_MS_MAX_DEFAULT)
    }

    /// Like [`Deployment::new`], with BSOC on a clock of its own (it may be wrong) and central
    /// holding emissions stamped more than `skew_ms_max` ahead of its clock.
    pub fn with_clocks(clock: ManualClock, bsoc_clock: ManualClock, skew_ms_max: u64) -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("usb")).unwrap();
        let mut config = StoreConfig::new(
            Site::central(1, "ASOC").unwrap(),
            outpost::retail::schema(),
            clock.clone(),
        );
        config.skew_ms_max = skew_ms_max;
        let asoc = Store::open(root.path().join("ASOC"), config).unwrap();
        central::create_remote(
            &asoc,
            Site::remote(2, "BSOC").unwrap(),
            BTreeSet::new(),
            settings("21:00"),
        )
        .unwrap();
        central::create_remote(
            &asoc,
            Site::remote(3, "CSOC").unwrap(),
            BTreeSet::from(["stock_documents".to_owned()]),
            settings("22:00"),
        )
        .unwrap();
        asoc.write(|tx| {
            tx.set("articles", "ART-CHAIR", "name", "Chair")?;
            tx.set("articles", "ART-CHAIR", "price", dec("49.90"))
        })
        .unwrap();
        let usb = root.path().join("usb");
        let (b_file, _) = files::bootstrap_to(&asoc, BSOC, &usb).unwrap();
        let (c_file, _) = files::bootstrap_to(&asoc, CSOC, &usb).unwrap();
        let open = |path: &Path, clock: &ManualClock| {
            let path = path.to_path_buf();
            let clock = clock.clone();
            move |site: &Site| {
                Store::open(
                    path.join(site.code.as_str()),
                    StoreConfig::new(site.clone(), outpost::retail::schema(), clock),
                )
            }
        };
        let bsoc = remote::bootstrap(
            std::io::BufReader::new(std::fs::File::open(&b_file).unwrap()),
            open(root.path(), &bsoc_clock),
        )
        .unwrap();
        let csoc = remote::bootstrap(
            std::io::BufReader::new(std::fs::File::open(&c_file).unwrap()),
            open(root.path(), &clock),
        )
        .unwrap();
        Deployment {
            root,
            clock,
            asoc,
            bsoc,
            csoc,
        }
    }

    pub fn usb(&self) -> PathBuf {
        self.root.path().join("usb")
    }

    pub fn at(&self, h: u64, m: u64) {
        self.clock.set(hhmm(h, m));
    }

    /// A remote emits a file; central receives it (as from that remote) and processes it —
    /// unless central does not take it yet (after its restore, until every remote has reported
    /// what it holds), as a remote's sync would find it.
    pub fn emit_and_process(
        &self,
        from: &Store,
        mode: outpost::replicator::SyncMode,
    ) -> (PathBuf, outpost::replicator::FlowId) {
        let (path, emitted) = files::emit_to(from, &self.usb(), mode).unwrap();
        match files::receive_from(&self.asoc, &path, Some(from.site().id)) {
            // Central's restore waits for every remote's report: the next sync sends it again.
            Err(outpost::replicator::Error::Deferred(_)) => {}
            received => {
                received.unwrap();
            }
        }
        central::process_ready(&self.asoc).unwrap();
        (path, emitted.id)
    }

    /// Central writes the return of `to`, and `to` applies it.
    pub fn return_and_apply(&self, to: &Store) -> (PathBuf, remote::Applied) {
        let (path, _) = files::return_to(&self.asoc, to.site().id, &self.usb()).unwrap();
        let applied = files::apply_return_from(to, &path).unwrap();
        (path, applied)
    }
}

pub fn dec(s: &str) -> outpost::Value {
    outpost::Value::Decimal(s.parse().unwrap())
}

pub fn content(s: &Store) -> Vec<(Vec<u8>, Vec<u8>)> {
    s.snapshot().unwrap().replicated_content().unwrap()
}

/// A customer's name in `store`.
pub fn name(store: &Store, key: &str) -> Option<outpost::Value> {
    store
        .record("customers", key)
        .unwrap()
        .and_then(|r| r.get("name").cloned())
}

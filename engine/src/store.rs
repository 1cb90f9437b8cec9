//! The store: one site's durable copy of the business data, and the ways to change it.
//!
//! Local writes go through [`Store::write`]; changes from other sites through [`Store::apply`].
//! Both run the same guards ([`crate::guard`]) and the same last-writer-wins rule, in one redb
//! write transaction each.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::guard::{self, Refusal, Rule};
use crate::hlc::{self, Clock, Hlc, Stamp};
use crate::keys;
use crate::knowledge::{Dot, Knowledge};
use crate::mapping;
use crate::record::{Change, Creation, Incoming, Marker, RawRecord, Record, Register, Slot};
use crate::rejection::Rejection;
use crate::schema::{Policy, Schema, TableDef};
use crate::site::{Role, Site, SiteDirectory, SiteId};
use crate::storage::{CellReader, Db, Held, ReadTables, WriteTables};
use crate::value::Value;

/// The file name of the store inside its directory.
pub const STORE_FILE_NAME: &str = "outpost.redb";

/// Default bound beyond which a received stamp ahead of the local clock is reported: 5 minutes.
pub const SKEW_MS_MAX_DEFAULT: u64 = 5 * 60 * 1000;

const META_SITE: &str = "site";
const META_SCHEMA: &str = "schema_fingerprint";
const META_HLC: &str = "hlc_high_water";
const META_NEXT_SEQ: &str = "next_seq";
const META_KNOWLEDGE: &str = "knowledge";
/// After a restore: the first own sequence number the backup lacks, and the first after the
/// jump (see [`Store::skip_sequence`]), as two big-endian u64.
const META_LOST_OWN: &str = "lost_own_seqs";
const META_KEY_SEQ_PREFIX: &str = "key_seq:";
/// Changes [`Store::apply_stream`] merges together ([`WriteTx::apply_batch`]); a flow's frame
/// holds as many.
const BATCH_LEN: usize = 1024;

/// What a store needs to open: who it is, what it holds, where time comes from.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// This site.
    pub site: Site,
    /// The deployment's schema.
    pub schema: Schema,
    /// The source of physical time.
    pub clock: Arc<dyn Clock>,
    /// A received stamp further ahead of the local clock than this is reported; at central,
    /// an emission carrying one is held (clock-skew quarantine).
    pub skew_ms_max: u64,
    /// Fault injection for testing checkers (the simulator's): rules this store does **not**
    /// enforce. Empty in every real use.
    pub broken_rules: Vec<Rule>,
    /// The most memory the store file's page cache may take (reads cached and pages written by
    /// the open transaction together); `None` (the default) sizes it from the file when the
    /// store opens ([`cache_bytes_for`]). Applying a large flow stays within it: pages beyond it
    /// are written out before the commit (and made durable by it). Ignored by in-memory stores.
    pub cache_bytes: Option<usize>,
}

/// The smallest page cache a store file gets by default: 32 MiB, also the bound for a new store.
pub const CACHE_BYTES_MIN: usize = 32 << 20;
/// The largest page cache a store file gets by default: 256 MiB.
pub const CACHE_BYTES_MAX: usize = 256 << 20;

/// The default page cache of a store file of `file_bytes`: the file's size, within
/// [`CACHE_BYTES_MIN`] and [`CACHE_BYTES_MAX`]. A store that fits is merged into with its
/// pages read from disk once; a larger one keeps 256 MiB of them. The peak memory of a merge
/// follows (docs/BENCHMARKS.md states both).
pub fn cache_bytes_for(file_bytes: u64) -> usize {
    usize::try_from(file_bytes)
        .unwrap_or(usize::MAX)
        .clamp(CACHE_BYTES_MIN, CACHE_BYTES_MAX)
}

impl StoreConfig {
    /// A configuration with the default skew bound.
    pub fn new(site: Site, schema: Schema, clock: impl Clock + 'static) -> Self {
        StoreConfig {
            site,
            schema,
            clock: Arc::new(clock),
            skew_ms_max: SKEW_MS_MAX_DEFAULT,
            broken_rules: Vec::new(),
            cache_bytes: None,
        }
    }
}

/// In-memory state mirrored from the `meta`, `sites` and `permissions` tables. A write works on
/// a copy and swaps it in only once its transaction committed.
#[derive(Clone, Debug)]
struct State {
    hlc: Hlc,
    // Invariant: greater than every sequence number this site has committed.
    next_seq: u64,
    /// Own commits lost in a restore from a backup, `[from, to)`: other sites may send them
    /// back (see [`Store::skip_sequence`]).
    lost_own: Option<(u64, u64)>,
    knowledge: Knowledge,
    sites: SiteDirectory,
    denied: BTreeMap<SiteId, BTreeSet<String>>,
}

/// One site's store.
#[derive(Debug)]
pub struct Store {
    db: Db,
    site: Site,
    schema: Arc<Schema>,
    clock: Arc<dyn Clock>,
    skew_ms_max: u64,
    broken_rules: Vec<Rule>,
    state: Mutex<State>,
    /// Set when a write to disk failed: the store's state on disk is then unknown to us.
    poisoned: Mutex<Option<String>>,
}

/// What one local commit did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Commit {
    /// The commit's dot, if it wrote any register.
    pub dot: Option<Dot>,
    /// The changes it made, one per register written.
    pub changes: Vec<Change>,
}

/// The fate of one incoming change.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Outcome {
    /// It won and is now stored.
    Applied,
    /// A later write already holds the register; the change is kept in knowledge only.
    Superseded,
    /// The store already had it.
    AlreadyHad,
    /// A rule refused it; it is in the rejection log.
    Refused(Rule),
}

/// A received stamp ahead of the local clock by more than the configured bound.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AheadReport {
    /// The change's dot.
    pub dot: Dot,
    /// Its stamp.
    pub stamp: Stamp,
    /// How far ahead of local physical time.
    pub ahead_ms: u64,
}

/// What [`Store::apply`] did with a batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MergeReport {
    /// One outcome per change, in input order.
    pub outcomes: Vec<Outcome>,
    /// The refused changes, whole, with their index in the input (also in the rejection log).
    pub refusals: Vec<(usize, Rejection)>,
    /// Stamps further ahead of the local clock than the bound (applied, and reported).
    pub ahead: Vec<AheadReport>,
}

impl MergeReport {
    /// How many changes had this outcome.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.outcomes.iter().filter(|o| **o == outcome).count()
    }

    /// How many were refused, whatever the rule.
    pub fn refused(&self) -> usize {
        self.refusals.len()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic inside a write leaves the committed state untouched (writes work on a copy).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn table_def<'s>(schema: &'s Schema, table: &str) -> Result<&'s TableDef> {
    schema
        .table(table)
        .ok_or_else(|| Error::Schema(format!("unknown table {table}")))
}

/// Checks a slot and value against the schema; `Err` holds the reason.
fn check_slot(def: &TableDef, slot: &Slot, value: &Value) -> Result<(), String> {
    match slot {
        Slot::Created => match value {
            Value::Null => Ok(()),
            other => Err(format!(
                "a creation carries null, not {}",
                other.kind_name()
            )),
        },
        Slot::Tombstone => match value {
            Value::Bool(_) => Ok(()),
            other => Err(format!(
                "a deletion carries a bool, not {}",
                other.kind_name()
            )),
        },
        Slot::Field(field) => match def.field_kind(field) {
            None => Err(format!("table {} has no field {field}", def.name())),
            Some(kind) if !kind.accepts(value) => Err(format!(
                "{}.{field} is declared {kind:?}, not {}",
                def.name(),
                value.kind_name()
            )),
            Some(_) => Ok(()),
        },
    }
}

fn put_u64(t: &mut WriteTables<'_>, name: &str, v: u64) -> Result<()> {
    t.put_meta(name, &v.to_le_bytes())
}

fn get_u64(t: &WriteTables<'_>, name: &str) -> Result<Option<u64>> {
    match t.meta(name)? {
        None => Ok(None),
        Some(bytes) => {
            let arr: [u8; 8] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| Error::Corrupt(format!("meta {name} is not 8 bytes")))?;
            Ok(Some(u64::from_le_bytes(arr)))
        }
    }
}

impl Store {
    /// Opens (or creates) the store of `config.site` in directory `dir`. Every commit is durable
    /// when it returns.
    pub fn open(dir: impl AsRef<Path>, config: StoreConfig) -> Result<Store> {
        std::fs::create_dir_all(dir.as_ref())?;
        let path = dir.as_ref().join(STORE_FILE_NAME);
        let cache = match config.cache_bytes {
            Some(bytes) => bytes,
            None => cache_bytes_for(std::fs::metadata(&path).map_or(0, |m| m.len())),
        };
        let db = Db::open_file(&path, cache)?;
        Self::init(db, config)
    }

    /// Opens the store already in `dir` as the site it was created for (read from the store
    /// itself): for tools that administer a store without knowing its site beforehand.
    pub fn open_existing(
        dir: impl AsRef<Path>,
        schema: Schema,
        clock: impl Clock + 'static,
    ) -> Result<Store> {
        let path = dir.as_ref().join(STORE_FILE_NAME);
        if !path.is_file() {
            return Err(Error::Input(
                format!("no outpost store in {}", dir.as_ref().display()).into(),
            ));
        }
        let db = Db::open_file(&path, cache_bytes_for(std::fs::metadata(&path)?.len()))?;
        let bytes = db
            .read()?
            .meta(META_SITE)?
            .ok_or_else(|| Error::Corrupt("the store has no site identity".into()))?;
        let site: Site = postcard::from_bytes(&bytes)
            .map_err(|e| Error::Corrupt(format!("site identity: {e}")))?;
        Self::init(db, StoreConfig::new(site, schema, clock))
    }

    /// A store held in memory (tests, the simulator), through the same code as a file store.
    pub fn in_memory(config: StoreConfig) -> Result<Store> {
        Self::init(Db::in_memory()?, config)
    }

    /// A copy of this store in memory, as it is now (one snapshot): a backup taken now, which
    /// the simulator puts back in place of the store to play a shop restoring an old backup of
    /// its own store. `config` must name the same site and schema.
    pub fn copy_in_memory(&self, config: StoreConfig) -> Result<Store> {
        let db = Db::in_memory()?;
        self.db.copy_into(&db)?;
        Self::init(db, config)
    }

    /// A store on any redb storage backend (for fault injection).
    pub fn with_backend(backend: impl redb::StorageBackend, config: StoreConfig) -> Result<Store> {
        Self::init(Db::with_backend(backend)?, config)
    }

    fn init(db: Db, config: StoreConfig) -> Result<Store> {
        let fingerprint = config.schema.fingerprint();
        let site = config.site.clone();
        let state = db.write(|t| {
            match t.meta(META_SITE)? {
                Some(bytes) => {
                    let stored: Site = postcard::from_bytes(&bytes)
                        .map_err(|e| Error::Corrupt(format!("site identity: {e}")))?;
                    if stored != site {
                        return Err(Error::IdentityMismatch {
                            stored: stored.to_string(),
                            given: site.to_string(),
                        });
                    }
                }
                None => {
                    let bytes = postcard::to_stdvec(&site)
                        .map_err(|e| Error::Corrupt(format!("site identity: {e}")))?;
                    t.put_meta(META_SITE, &bytes)?;
                }
            }
            match get_u64(t, META_SCHEMA)? {
                Some(stored) if stored != fingerprint => {
                    return Err(Error::SchemaMismatch {
                        stored,
                        declared: fingerprint,
                    });
                }
                Some(_) => {}
                None => put_u64(t, META_SCHEMA, fingerprint)?,
            }
            let knowledge: Knowledge = match t.meta(META_KNOWLEDGE)? {
                Some(bytes) => postcard::from_bytes(&bytes)
                    .map_err(|e| Error::Corrupt(format!("knowledge: {e}")))?,
                None => Knowledge::new(),
            };
            if !knowledge.is_well_formed() {
                return Err(Error::Corrupt("knowledge ranges are malformed".into()));
            }
            let mut sites = SiteDirectory::default();
            for s in t.sites()? {
                sites.add(s)?;
            }
            if sites.get(site.id).is_none() {
                sites.add(site.clone())?;
                t.put_site(&site)?;
            }
            Ok(State {
                hlc: Hlc::new(Stamp::from_u64(get_u64(t, META_HLC)?.unwrap_or(0))),
                next_seq: get_u64(t, META_NEXT_SEQ)?.unwrap_or(1),
                lost_own: t.meta(META_LOST_OWN)?.and_then(|b| {
                    let from = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
                    let to = u64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
                    Some((from, to))
                }),
                knowledge,
                sites,
                denied: t.all_denied()?.into_iter().collect(),
            })
        })?;
        Ok(Store {
            db,
            site: config.site,
            schema: Arc::new(config.schema),
            clock: config.clock,
            skew_ms_max: config.skew_ms_max,
            broken_rules: config.broken_rules,
            state: Mutex::new(state),
            poisoned: Mutex::new(None),
        })
    }

    /// This store's site.
    pub fn site(&self) -> &Site {
        &self.site
    }

    /// The schema the store was opened with.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The known sites.
    pub fn sites(&self) -> SiteDirectory {
        lock(&self.state).sites.clone()
    }

    /// What this store has, per origin site.
    pub fn knowledge(&self) -> Knowledge {
        lock(&self.state).knowledge.clone()
    }

    /// The highest stamp issued or observed (persisted: never goes back across a reopen).
    pub fn clock_high_water(&self) -> Stamp {
        lock(&self.state).hlc.last()
    }

    /// The tables a site may not write (R4/R9).
    pub fn denied_tables(&self, site: SiteId) -> BTreeSet<String> {
        lock(&self.state)
            .denied
            .get(&site)
            .cloned()
            .unwrap_or_default()
    }

    /// The injected clock's time: UTC milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// How far a stamp is ahead of this site's clock, in milliseconds.
    pub fn ahead_ms(&self, stamp: Stamp) -> u64 {
        hlc::ahead_ms(stamp, self.clock.now_ms())
    }

    /// The same store with another skew bound (see [`StoreConfig::skew_ms_max`]): for a store
    /// opened with [`Store::open_existing`], which takes the default.
    #[must_use]
    pub fn with_skew_ms_max(mut self, ms: u64) -> Self {
        self.skew_ms_max = ms;
        self
    }

    /// The bound beyond which a stamp ahead of the local clock is reported.
    pub fn skew_ms_max(&self) -> u64 {
        self.skew_ms_max
    }

    /// Whether a failed write to disk has poisoned the store.
    pub fn is_poisoned(&self) -> bool {
        lock(&self.poisoned).is_some()
    }

    /// Runs one write transaction; the state copy is swapped in only on commit, and a failure of
    /// the storage layer poisons the store.
    fn with_write<R>(
        &self,
        body: impl FnOnce(&mut WriteTables<'_>, &mut State) -> Result<R>,
    ) -> Result<R> {
        if let Some(why) = lock(&self.poisoned).clone() {
            return Err(Error::Poisoned(why));
        }
        let mut state = lock(&self.state);
        let mut staged = state.clone();
        match self.db.write(|t| body(t, &mut staged)) {
            Ok(r) => {
                *state = staged;
                drop(state);
                if cfg!(feature = "slow-assertions") {
                    self.check_invariants()?;
                }
                Ok(r)
            }
            Err(e) => {
                if e.is_storage() {
                    *lock(&self.poisoned) = Some(e.to_string());
                }
                Err(e)
            }
        }
    }

    /// Runs `f` as one local commit: every write in it shares one dot and one stamp, and either
    /// all of them are stored or none (an error from `f` aborts the transaction).
    pub fn write<R>(&self, f: impl FnOnce(&mut WriteTx<'_, '_>) -> Result<R>) -> Result<R> {
        self.transact(None, f).map(|(r, _)| r)
    }

    /// Like [`Store::write`], acting as `holder` — the only one who may write the documents it
    /// has reserved (R7).
    pub fn write_as<R>(
        &self,
        holder: &str,
        f: impl FnOnce(&mut WriteTx<'_, '_>) -> Result<R>,
    ) -> Result<R> {
        self.transact(Some(holder), f).map(|(r, _)| r)
    }

    /// Like [`Store::write`], also returning what the commit did.
    pub fn write_commit<R>(
        &self,
        f: impl FnOnce(&mut WriteTx<'_, '_>) -> Result<R>,
    ) -> Result<(R, Commit)> {
        self.transact(None, f)
    }

    /// Like [`Store::write_as`], also returning what the commit did.
    pub fn write_commit_as<R>(
        &self,
        holder: &str,
        f: impl FnOnce(&mut WriteTx<'_, '_>) -> Result<R>,
    ) -> Result<(R, Commit)> {
        self.transact(Some(holder), f)
    }

    fn transact<R>(
        &self,
        holder: Option<&str>,
        f: impl FnOnce(&mut WriteTx<'_, '_>) -> Result<R>,
    ) -> Result<(R, Commit)> {
        self.with_write(|tables, state| {
            let mut tx = WriteTx {
                store: self,
                tables,
                state,
                holder,
                dot: None,
                changes: Vec::new(),
                change_index: HashMap::new(),
                state_moved: false,
            };
            let r = f(&mut tx)?;
            let commit = tx.finish()?;
            Ok((r, commit))
        })
    }

    /// Merges changes received from `source` in one write transaction, then records `covers` —
    /// the dots the batch covers completely — as known. Each change passes the guards and
    /// last-writer-wins; refused ones go to the rejection log. Idempotent, commutative and
    /// associative for changes the guards accept.
    pub fn apply(
        &self,
        source: SiteId,
        changes: impl IntoIterator<Item = Change>,
        covers: &Knowledge,
    ) -> Result<MergeReport> {
        self.apply_stream(
            source,
            changes.into_iter().map(Ok::<_, std::convert::Infallible>),
            covers,
        )
    }

    /// Like [`Store::apply`], from a fallible stream (a flow being decoded): the first error
    /// aborts the whole transaction, so the store is left unchanged.
    pub fn apply_stream<E: std::error::Error + Send + Sync + 'static>(
        &self,
        source: SiteId,
        changes: impl IntoIterator<Item = std::result::Result<Change, E>>,
        covers: &Knowledge,
    ) -> Result<MergeReport> {
        self.write(|tx| {
            let mut report = MergeReport::default();
            let mut batch = Vec::with_capacity(BATCH_LEN);
            for change in changes {
                batch.push(Incoming::New(
                    change.map_err(|e| Error::Input(Box::new(e)))?,
                ));
                if batch.len() == BATCH_LEN {
                    tx.apply_batch(source, std::mem::take(&mut batch), &mut report)?;
                }
            }
            tx.apply_batch(source, batch, &mut report)?;
            tx.add_knowledge(source, covers)?;
            report.outcomes.shrink_to_fit();
            Ok(report)
        })
    }

    /// A consistent read snapshot.
    pub fn snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot {
            tables: self.db.read()?,
            schema: Arc::clone(&self.schema),
        })
    }

    /// A record as the application sees it (`None` if absent or deleted).
    pub fn record(&self, table: &str, key: &str) -> Result<Option<Record>> {
        self.snapshot()?.record(table, key)
    }

    /// A record mapped to the host's type (one top-level field per register).
    pub fn get<T: DeserializeOwned>(&self, table: &str, key: &str) -> Result<Option<T>> {
        self.snapshot()?.get(table, key)
    }

    /// Every visible record of a table, in key order.
    pub fn scan(&self, table: &str) -> Result<Vec<Record>> {
        self.snapshot()?.scan(table, None, None)
    }

    /// The rejection log.
    pub fn rejections(&self) -> Result<Vec<Rejection>> {
        self.snapshot()?.rejections()
    }

    /// The changes a site with knowledge `peer` lacks, streamed from one snapshot. With
    /// `exclude_reserved`, changes of reserved documents are left out (R7) and their dots
    /// reported by [`ChangesLacking::left_out`].
    pub fn changes_lacking(
        &self,
        peer: &Knowledge,
        exclude_reserved: bool,
    ) -> Result<ChangesLacking> {
        // Take the snapshot under the state lock so knowledge and data agree.
        let state = lock(&self.state);
        let tables = self.db.read()?;
        let knowledge = state.knowledge.clone();
        drop(state);
        let mut ranges = VecDeque::new();
        for (site, set) in knowledge.difference(peer).iter() {
            for (a, b) in set.ranges() {
                ranges.push_back((site, *a, *b));
            }
        }
        Ok(ChangesLacking {
            tables,
            schema: Arc::clone(&self.schema),
            ranges,
            current: None,
            exclude_reserved,
            knowledge,
            left_out: Knowledge::new(),
            pending: VecDeque::new(),
        })
    }

    /// Reserves a document for `holder` (R7): only `holder` may write it, and it stays out of
    /// emissions until released.
    pub fn reserve(&self, table: &str, key: &str, holder: &str) -> Result<()> {
        self.write(|tx| tx.reserve(table, key, holder))
    }

    /// Releases `holder`'s reservation of a document.
    pub fn release(&self, table: &str, key: &str, holder: &str) -> Result<()> {
        self.write(|tx| tx.release(table, key, holder))
    }

    /// Freezes a document for its remote creator (R6); the replicator calls it at emission.
    /// Returns whether the table freezes at all.
    pub fn freeze(&self, table: &str, key: &str) -> Result<bool> {
        self.write(|tx| tx.freeze(table, key))
    }

    /// Registers a site (central's, or a remote's once created).
    pub fn add_site(&self, site: Site) -> Result<()> {
        self.write(|tx| tx.add_site(site))
    }

    /// Sets the tables a site may not write (R4/R9).
    pub fn set_denied_tables(&self, site: SiteId, tables: BTreeSet<String>) -> Result<()> {
        self.write(|tx| tx.set_denied_tables(site, tables))
    }

    /// For a store restored from a backup: the commits this site made after the backup are
    /// lost here, but other sites received them. Its sequence of commits moves `by` ahead, so
    /// that no new commit reuses the dot of a lost one, and the lost ones — own dots between
    /// the old and the new next number that this store does not know — are taken back from the
    /// other sites that send them, although a remote otherwise sends only its own changes (R1).
    /// The next number is at least `at_least` too: restoring the same backup twice must not
    /// land on the same numbers (the caller passes something that grows, like the time).
    pub fn skip_sequence(&self, by: u64, at_least: u64) -> Result<()> {
        self.with_write(|t, state| {
            let from = state.next_seq;
            state.next_seq = state.next_seq.saturating_add(by).max(at_least);
            let lost = (
                state.lost_own.map_or(from, |(a, _)| a.min(from)),
                state.next_seq,
            );
            state.lost_own = Some(lost);
            let mut bytes = lost.0.to_be_bytes().to_vec();
            bytes.extend_from_slice(&lost.1.to_be_bytes());
            t.put_meta(META_LOST_OWN, &bytes)?;
            put_u64(t, META_NEXT_SEQ, state.next_seq)
        })
    }

    /// Repairs a site whose clock ran ahead, once it has been set right: its own writes that
    /// `acknowledged` (what central holds of them) lacks and whose stamps are further ahead of
    /// the clock now than the skew bound are stamped again from the clock as it is, as one new
    /// local commit (same values, a new dot), and the clock's high-water mark comes back to
    /// now — or to the newest stamp that stays; each old commit becomes a new one, in the same
    /// order. Central held the flows carrying the old stamps
    /// (clock-skew quarantine, with the same bound) without applying them, so no other site has
    /// those writes and nothing else changes. Returns how many registers were stamped again.
    pub fn restamp_ahead(&self, acknowledged: &Knowledge) -> Result<u64> {
        let own = self.site.id;
        self.with_write(|t, state| {
            let now = self.clock.now_ms();
            let (redo, keep): (Vec<Cell>, Vec<Cell>) =
                t.all_cells()?.into_iter().partition(|(_, reg)| {
                    reg.dot.site == own
                        && reg.stamp.physical_ms() > now.saturating_add(self.skew_ms_max)
                        && !acknowledged.contains(reg.dot)
                });
            if redo.is_empty() {
                return Ok(0);
            }
            let floor = keep
                .iter()
                .map(|(_, reg)| reg.stamp)
                .max()
                .unwrap_or_default()
                .max(Stamp::new(now, 0));
            state.hlc = Hlc::new(floor);
            // One new commit per old one, in the old order: a write, its deletion and a write
            // after it keep their order (a record's visibility compares their stamps).
            let mut commits: BTreeMap<(Stamp, u64), Vec<&Cell>> = BTreeMap::new();
            for cell in &redo {
                commits
                    .entry((cell.1.stamp, cell.1.dot.seq))
                    .or_default()
                    .push(cell);
            }
            for cells in commits.values() {
                let stamp = state.hlc.tick(now);
                let dot = Dot {
                    site: own,
                    seq: state.next_seq,
                };
                state.next_seq += 1;
                state.knowledge.insert(dot);
                for (cell, old) in cells {
                    let new = Register {
                        value: old.value.clone(),
                        stamp,
                        dot,
                    };
                    t.put_cell(cell, Some(old), &new)?;
                }
            }
            put_u64(t, META_NEXT_SEQ, state.next_seq)?;
            persist_clock_and_knowledge(t, state)?;
            Ok(redo.len() as u64)
        })
    }

    /// Walks the whole store and checks its invariants: every register's dot is indexed and
    /// every index entry points at its register; every register's record exists; the clock's
    /// high-water mark is at least every stored stamp. O(n): for tests and `slow-assertions`.
    pub fn check_invariants(&self) -> Result<()> {
        let state = lock(&self.state).clone();
        let snap = self.db.read()?;
        let cells = snap.cells_between(&[], &[0xFF; 1], None)?;
        let dot_keys = snap.all_dot_keys()?;
        let created: BTreeSet<Vec<u8>> = cells
            .iter()
            .filter_map(|(cell, _)| {
                let ck = keys::decode_cell_key(cell)?;
                (ck.slot == Slot::Created).then(|| cell.get(..ck.prefix_len).map(<[u8]>::to_vec))?
            })
            .collect();
        let fail = |what: String| Err(Error::Corrupt(format!("invariant: {what}")));
        // The dot index holds one entry per dot and record that a register of the record
        // holds — no more, no fewer.
        let mut expected: BTreeSet<Vec<u8>> = BTreeSet::new();
        for (cell, reg) in &cells {
            let Some(ck) = keys::decode_cell_key(cell) else {
                return fail(format!("undecodable cell key {cell:?}"));
            };
            expected.insert(keys::dot_key(
                reg.dot,
                cell.get(..ck.prefix_len).unwrap_or_default(),
            ));
        }
        let indexed: BTreeSet<Vec<u8>> = dot_keys.iter().cloned().collect();
        if let Some(k) = expected.symmetric_difference(&indexed).next() {
            return fail(format!(
                "dot-index entry {k:?} is {} ({} expected, {} indexed)",
                if indexed.contains(k) {
                    "not held by its record"
                } else {
                    "missing"
                },
                expected.len(),
                indexed.len()
            ));
        }
        for (cell, reg) in &cells {
            if reg.stamp > state.hlc.last() {
                return fail(format!("stamp {:?} is above the clock", reg.stamp));
            }
            let Some(ck) = keys::decode_cell_key(cell) else {
                return fail(format!("undecodable cell key {cell:?}"));
            };
            if !created.contains(cell.get(..ck.prefix_len).unwrap_or_default()) {
                return fail(format!("register {cell:?} has no creation"));
            }
            if reg.dot.site == self.site.id && reg.dot.seq >= state.next_seq {
                return fail(format!("own dot {} not below next_seq", reg.dot));
            }
        }
        Ok(())
    }
}

fn persist_clock_and_knowledge(t: &mut WriteTables<'_>, state: &State) -> Result<()> {
    put_u64(t, META_HLC, state.hlc.last().as_u64())?;
    let bytes = postcard::to_stdvec(&state.knowledge)
        .map_err(|e| Error::Corrupt(format!("knowledge: {e}")))?;
    t.put_meta(META_KNOWLEDGE, &bytes)
}

/// One local write transaction. Obtained from [`Store::write`].
pub struct WriteTx<'a, 't> {
    store: &'a Store,
    tables: &'a mut WriteTables<'t>,
    state: &'a mut State,
    holder: Option<&'a str>,
    dot: Option<(Dot, Stamp)>,
    changes: Vec<Change>,
    change_index: HashMap<Vec<u8>, usize>,
    /// Whether the clock or knowledge moved without a local dot (a merge).
    state_moved: bool,
}

impl std::fmt::Debug for WriteTx<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTx")
            .field("site", &self.store.site.id)
            .field("holder", &self.holder)
            .field("dot", &self.dot)
            .finish()
    }
}

impl WriteTx<'_, '_> {
    /// This transaction's dot and stamp, taken at its first register write.
    fn dot(&mut self) -> (Dot, Stamp) {
        if let Some(d) = self.dot {
            return d;
        }
        let dot = Dot {
            site: self.store.site.id,
            seq: self.state.next_seq,
        };
        let stamp = self.state.hlc.tick(self.store.clock.now_ms());
        self.state.next_seq += 1;
        self.dot = Some((dot, stamp));
        (dot, stamp)
    }

    fn finish(self) -> Result<Commit> {
        if let Some((dot, _)) = self.dot {
            self.state.knowledge.insert(dot);
            put_u64(self.tables, META_NEXT_SEQ, self.state.next_seq)?;
        }
        if self.dot.is_some() || self.state_moved {
            persist_clock_and_knowledge(self.tables, self.state)?;
        }
        Ok(Commit {
            dot: self.dot.map(|(d, _)| d),
            changes: self.changes,
        })
    }

    /// Merges one change received from `source` (see [`Store::apply`]); its outcome is pushed
    /// onto `report`, and a refusal is also written to the rejection log. A flow's frames go
    /// faster through [`WriteTx::apply_batch`], which reads and writes each record once.
    pub fn apply_change(
        &mut self,
        source: SiteId,
        change: Change,
        report: &mut MergeReport,
    ) -> Result<Outcome> {
        self.apply_batch(source, vec![Incoming::New(change)], report)?;
        report
            .outcomes
            .last()
            .copied()
            .ok_or_else(|| Error::Corrupt("a merge gave no outcome".into()))
    }

    /// Merges a batch of changes received from `source` (a frame of a flow), record by record:
    /// the changes are grouped by record, each group keeping its input order, and each record
    /// is read once and written at most once. The outcomes are appended to `report` in input
    /// order and are exactly those of merging each change alone in that order: a change's fate
    /// depends only on its own record's registers, the site directory and the knowledge, which
    /// a merge does not move. [`Incoming::Known`] changes are recorded as already had.
    pub fn apply_batch(
        &mut self,
        source: SiteId,
        batch: Vec<Incoming>,
        report: &mut MergeReport,
    ) -> Result<()> {
        let store = self.store;
        if source == store.site.id {
            return Err(Error::UnknownSite(source));
        }
        let source_role = self
            .state
            .sites
            .get(source)
            .map(|s| s.role)
            .ok_or(Error::UnknownSite(source))?;
        let base = report.outcomes.len();
        let mut items: Vec<(Vec<u8>, usize, Change)> = Vec::with_capacity(batch.len());
        for (i, incoming) in batch.into_iter().enumerate() {
            report.outcomes.push(Outcome::AlreadyHad);
            if let Incoming::New(c) = incoming {
                items.push((keys::record_prefix(&c.table, &c.key), base + i, c));
            }
        }
        if items.is_empty() {
            return Ok(());
        }
        self.state_moved = true;
        // Stable, so that each record's changes keep their order; records in key order, so
        // that the B-tree is walked forwards. A sender writes them so: usually no work.
        if !items.is_sorted_by(|x, y| x.0 <= y.0) {
            items.sort_by(|x, y| x.0.cmp(&y.0));
        }
        let refusals_from = report.refusals.len();
        let mut merge = Merge {
            own: store.site.id,
            schema: &store.schema,
            broken_rules: &store.broken_rules,
            t: self.tables,
            state: self.state,
            source,
            source_role,
            now_ms: store.clock.now_ms(),
            skew_ms_max: store.skew_ms_max,
            report,
            ahead: Vec::new(),
        };
        let mut items = items.into_iter().peekable();
        while let Some((prefix, index, change)) = items.next() {
            let mut record = MergedRecord {
                held: merge.t.hold(&prefix)?,
                prefix,
                frozen: None,
            };
            merge.one(&mut record, index, change)?;
            while let Some((_, index, change)) = items.next_if(|n| n.0 == record.prefix) {
                merge.one(&mut record, index, change)?;
            }
            merge.t.release(&record.prefix, record.held)?;
        }
        let mut ahead = std::mem::take(&mut merge.ahead);
        ahead.sort_by_key(|(i, _)| *i);
        report.ahead.extend(ahead.into_iter().map(|(_, a)| a));
        if let Some(new) = report.refusals.get_mut(refusals_from..) {
            new.sort_by_key(|(i, _)| *i);
        }
        Ok(())
    }

    /// Records, in its place in `report`, a change from `source` whose dot this transaction's
    /// [`WriteTx::knowledge`] holds, without looking at it further: what a flow reader hands
    /// over as already known. The outcome [`WriteTx::apply_change`] gives such a change.
    pub fn already_had(&mut self, source: SiteId, report: &mut MergeReport) -> Result<()> {
        if source == self.store.site.id || self.state.sites.get(source).is_none() {
            return Err(Error::UnknownSite(source));
        }
        report.outcomes.push(Outcome::AlreadyHad);
        Ok(())
    }

    /// Ends the taking back of this site's commits lost in a restore (see
    /// [`Store::skip_sequence`]): from now on a remote sending one is refused (R1) like any
    /// change it did not make. Called once every remote has sent back what it had.
    pub fn forget_lost_own(&mut self) -> Result<()> {
        if self.state.lost_own.take().is_some() {
            self.tables.put_meta(META_LOST_OWN, &[])?;
        }
        Ok(())
    }

    /// Moves this site's sequence of commits to at least `next`: a store set up from a
    /// bootstrap numbers its commits past every one of its site's that central already knows,
    /// so that no dot is used twice for different content.
    pub fn number_from(&mut self, next: u64) -> Result<()> {
        if next > self.state.next_seq {
            self.state.next_seq = next;
            put_u64(self.tables, META_NEXT_SEQ, next)?;
        }
        Ok(())
    }

    /// Records `covers` as known, from `source`. A remote vouches only for its own changes:
    /// what else it claims to cover central already knows (it came from central), and believing
    /// it would let a remote hide another site's changes from central.
    pub fn add_knowledge(&mut self, source: SiteId, covers: &Knowledge) -> Result<()> {
        if !covers.is_well_formed() {
            return Err(Error::Schema("malformed knowledge ranges".into()));
        }
        let role = self
            .state
            .sites
            .get(source)
            .map(|s| s.role)
            .ok_or(Error::UnknownSite(source))?;
        match role {
            Role::Remote => {
                self.state.knowledge.union_with(&covers.only(source));
                // After a restore, this site's own commits lost with it, which the remote
                // sent back (a commit's every change, so only once the flow is through).
                if let Some((from, to)) = self.state.lost_own {
                    let own = self.store.site.id;
                    for (_, set) in covers.only(own).iter() {
                        for (a, b) in set.ranges() {
                            let (a, b) = ((*a).max(from), (*b).min(to.saturating_sub(1)));
                            self.state.knowledge.insert_range(own, a, b);
                        }
                    }
                }
            }
            Role::Central => self.state.knowledge.union_with(covers),
        }
        self.state_moved = true;
        Ok(())
    }

    /// Puts a register back to `to` (or removes it when `None`) — but only if it still holds
    /// the write `expected`. No guard and no last-writer-wins: this undoes a local write that
    /// central refused, so that the remote's copy is central's again (the replicator applies it
    /// from a return). Returns whether the register was reverted.
    pub fn revert(
        &mut self,
        table: &str,
        key: &str,
        slot: &Slot,
        expected: Dot,
        to: Option<&Register>,
    ) -> Result<bool> {
        table_def(&self.store.schema, table)?;
        let cell = keys::cell_key(&keys::record_prefix(table, key), slot);
        let Some(old) = self.tables.cell(&cell)? else {
            return Ok(false);
        };
        if old.dot != expected {
            return Ok(false);
        }
        match to {
            Some(reg) => {
                self.state.hlc.observe(reg.stamp);
                self.state_moved = true;
                self.tables.put_cell(&cell, Some(&old), reg)?;
            }
            None => self.tables.remove_cell(&cell, &old)?,
        }
        Ok(true)
    }

    /// A value of the store's local side table (not replicated): the replicator keeps its sync
    /// table, journal and logs there, in the same transactions as the data.
    pub fn local_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.tables.local_get(key)
    }

    /// Sets a value of the local side table.
    pub fn local_put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.tables.local_put(key, value)
    }

    /// Removes a value of the local side table.
    pub fn local_remove(&mut self, key: &[u8]) -> Result<()> {
        self.tables.local_remove(key)
    }

    /// Entries of the local side table from `start` (inclusive) to `end` (exclusive).
    pub fn local_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.tables.local_range(start, end, limit)
    }

    /// The store's site.
    pub fn site(&self) -> &Site {
        &self.store.site
    }

    /// The store's knowledge, as this transaction sees it.
    pub fn knowledge(&self) -> &Knowledge {
        &self.state.knowledge
    }

    /// Whether a document is frozen (R6).
    pub fn is_frozen(&self, table: &str, key: &str) -> Result<bool> {
        self.tables.is_frozen(&keys::record_prefix(table, key))
    }

    /// A record with every register, as this transaction sees it.
    pub fn raw_record(&self, table: &str, key: &str) -> Result<Option<RawRecord>> {
        table_def(&self.store.schema, table)?;
        let prefix = keys::record_prefix(table, key);
        assemble(table, key, self.tables.record_cells(&prefix)?)
    }

    /// Sets one field of a record, creating the record if needed.
    pub fn set(
        &mut self,
        table: &str,
        key: &str,
        field: &str,
        value: impl Into<Value>,
    ) -> Result<()> {
        self.write_slot(table, key, Slot::Field(field.to_owned()), value.into())
    }

    /// Sets several fields of a record at once.
    pub fn set_fields(
        &mut self,
        table: &str,
        key: &str,
        fields: impl IntoIterator<Item = (String, Value)>,
    ) -> Result<()> {
        for (field, value) in fields {
            self.write_slot(table, key, Slot::Field(field), value)?;
        }
        Ok(())
    }

    /// Writes a host value: each top-level field becomes one register (see [`crate::mapping`]).
    pub fn put<T: Serialize + ?Sized>(&mut self, table: &str, key: &str, value: &T) -> Result<()> {
        let fields = mapping::to_fields(value)?;
        self.set_fields(table, key, fields)
    }

    /// Deletes a record (a tombstone, last-writer-wins against updates).
    pub fn delete(&mut self, table: &str, key: &str) -> Result<()> {
        if self.record(table, key)?.is_none() {
            return Err(Error::NotFound {
                table: table.to_owned(),
                key: key.to_owned(),
            });
        }
        self.write_slot(table, key, Slot::Tombstone, Value::Bool(true))
    }

    /// Reads a record, including this transaction's own writes.
    pub fn record(&self, table: &str, key: &str) -> Result<Option<Record>> {
        table_def(&self.store.schema, table)?;
        let prefix = keys::record_prefix(table, key);
        let raw = assemble(table, key, self.tables.record_cells(&prefix)?)?;
        Ok(raw.and_then(|r| r.visible()))
    }

    /// Reads a record as the host's type, including this transaction's own writes.
    pub fn get<T: DeserializeOwned>(&self, table: &str, key: &str) -> Result<Option<T>> {
        self.record(table, key)?
            .map(|r| mapping::from_fields(&r.fields))
            .transpose()
    }

    /// A new site-unique key for `table`, like `BSOC-000123`.
    pub fn new_key(&mut self, table: &str) -> Result<String> {
        table_def(&self.store.schema, table)?;
        let name = format!("{META_KEY_SEQ_PREFIX}{table}");
        let n = get_u64(self.tables, &name)?.unwrap_or(0) + 1;
        put_u64(self.tables, &name, n)?;
        Ok(format!("{}-{n:06}", self.store.site.code))
    }

    /// See [`Store::reserve`].
    pub fn reserve(&mut self, table: &str, key: &str, holder: &str) -> Result<()> {
        let prefix = self.document_prefix(table, key)?;
        match self.tables.reservation(&prefix)? {
            Some(h) if h != holder => Err(Refusal {
                rule: Rule::R7,
                writer: self.store.site.id,
                table: table.to_owned(),
                key: key.to_owned(),
                field: None,
                reason: format!("the document is already reserved by {h}"),
            }
            .into()),
            Some(_) => Ok(()),
            None => self.tables.set_reservation(&prefix, Some(holder)),
        }
    }

    /// See [`Store::release`].
    pub fn release(&mut self, table: &str, key: &str, holder: &str) -> Result<()> {
        let prefix = self.document_prefix(table, key)?;
        match self.tables.reservation(&prefix)? {
            Some(h) if h != holder => Err(Refusal {
                rule: Rule::R7,
                writer: self.store.site.id,
                table: table.to_owned(),
                key: key.to_owned(),
                field: None,
                reason: format!("the document is reserved by {h}, not {holder}"),
            }
            .into()),
            Some(_) => self.tables.set_reservation(&prefix, None),
            None => Ok(()),
        }
    }

    /// See [`Store::freeze`].
    pub fn freeze(&mut self, table: &str, key: &str) -> Result<bool> {
        let prefix = self.document_prefix(table, key)?;
        let freezes = matches!(
            table_def(&self.store.schema, table)?.policy(),
            Policy::Document {
                frozen_once_synced: true
            }
        );
        if freezes {
            self.tables.freeze(&prefix)?;
        }
        Ok(freezes)
    }

    /// See [`Store::add_site`].
    pub fn add_site(&mut self, site: Site) -> Result<()> {
        self.state.sites.add(site.clone())?;
        self.tables.put_site(&site)
    }

    /// See [`Store::set_denied_tables`].
    pub fn set_denied_tables(&mut self, site: SiteId, tables: BTreeSet<String>) -> Result<()> {
        if self.state.sites.get(site).is_none() {
            return Err(Error::UnknownSite(site));
        }
        if let Some(bad) = tables.iter().find(|t| self.store.schema.table(t).is_none()) {
            return Err(Error::Schema(format!("unknown table {bad}")));
        }
        self.tables.put_denied(site, &tables)?;
        if tables.is_empty() {
            self.state.denied.remove(&site);
        } else {
            self.state.denied.insert(site, tables);
        }
        Ok(())
    }

    /// The record prefix of an existing document.
    fn document_prefix(&self, table: &str, key: &str) -> Result<Vec<u8>> {
        if !table_def(&self.store.schema, table)?.is_document() {
            return Err(Error::NotReservable(table.to_owned()));
        }
        let prefix = keys::record_prefix(table, key);
        if self.tables.created(&prefix)?.is_none() {
            return Err(Error::NotFound {
                table: table.to_owned(),
                key: key.to_owned(),
            });
        }
        Ok(prefix)
    }

    fn write_slot(&mut self, table: &str, key: &str, slot: Slot, value: Value) -> Result<()> {
        let store = self.store;
        let def = table_def(&store.schema, table)?;
        check_slot(def, &slot, &value).map_err(Error::Schema)?;
        let prefix = keys::record_prefix(table, key);
        let created = self.tables.created(&prefix)?;
        let holder_of = if def.is_document() {
            self.tables.reservation(&prefix)?
        } else {
            None
        };
        guard::check(&guard::Write {
            table: def,
            key,
            slot: &slot,
            writer: &store.site,
            creator: created.map_or(store.site.id, |c| c.site()),
            frozen: def.freezes() && self.tables.is_frozen(&prefix)?,
            denied: self
                .state
                .denied
                .get(&store.site.id)
                .is_some_and(|d| d.contains(table)),
            reservation: holder_of.as_deref().map(|h| (h, self.holder)),
        })
        .or_else(|r| {
            if store.broken_rules.contains(&r.rule) {
                Ok(())
            } else {
                Err(r)
            }
        })?;
        let (dot, stamp) = self.dot();
        let created = match created {
            Some(c) => c,
            None => {
                let c = Creation { stamp, dot };
                let cell = keys::created_key(&prefix);
                self.tables.put_cell(&cell, None, &creation_register(c))?;
                self.track(
                    cell,
                    Change {
                        table: table.to_owned(),
                        key: key.to_owned(),
                        slot: Slot::Created,
                        value: Value::Null,
                        stamp,
                        dot,
                        created: c,
                    },
                );
                c
            }
        };
        let cell = keys::cell_key(&prefix, &slot);
        let old = self.tables.cell(&cell)?;
        let new = Register {
            value: value.clone(),
            stamp,
            dot,
        };
        // The clock is past every stamp stored, so a local write always wins (or rewrites its
        // own register within this transaction).
        debug_assert!(
            old.as_ref()
                .is_none_or(|o| o.dot == dot || o.marker() < new.marker())
        );
        self.tables.put_cell(&cell, old.as_ref(), &new)?;
        let change = Change {
            table: table.to_owned(),
            key: key.to_owned(),
            slot,
            value,
            stamp,
            dot,
            created,
        };
        self.track(cell, change);
        Ok(())
    }

    /// Adds a change to the commit's list, replacing an earlier one to the same register.
    fn track(&mut self, cell: Vec<u8>, change: Change) {
        match self.change_index.get(&cell) {
            Some(&i) => {
                if let Some(c) = self.changes.get_mut(i) {
                    *c = change;
                }
            }
            None => {
                self.change_index.insert(cell, self.changes.len());
                self.changes.push(change);
            }
        }
    }
}

/// The state of one [`Store::apply`].
struct Merge<'a, 't> {
    own: SiteId,
    schema: &'a Schema,
    broken_rules: &'a [Rule],
    t: &'a mut WriteTables<'t>,
    state: &'a mut State,
    /// The site the changes came from, and its role.
    source: SiteId,
    source_role: Role,
    now_ms: u64,
    skew_ms_max: u64,
    report: &'a mut MergeReport,
    /// Stamps ahead of the clock, with the index of their change (put in input order at the
    /// end of the batch).
    ahead: Vec<(usize, AheadReport)>,
}

/// The record a merge is working on: taken from the store once for all its changes of a batch.
struct MergedRecord {
    prefix: Vec<u8>,
    held: Held,
    /// Whether the document is frozen here (R6), read when first needed.
    frozen: Option<bool>,
}

impl Merge<'_, '_> {
    /// Merges one change into its record; its outcome goes to `index` of the report.
    fn one(&mut self, record: &mut MergedRecord, index: usize, change: Change) -> Result<()> {
        let outcome = self.judge_and_merge(record, index, change)?;
        if let Some(o) = self.report.outcomes.get_mut(index) {
            *o = outcome;
        }
        Ok(())
    }

    fn judge_and_merge(
        &mut self,
        record: &mut MergedRecord,
        index: usize,
        change: Change,
    ) -> Result<Outcome> {
        if self.state.knowledge.contains(change.dot) {
            return Ok(Outcome::AlreadyHad);
        }
        match self.judge(&change, record)? {
            Err(refusal) => {
                let cell = keys::cell_key(&record.prefix, &change.slot);
                let rule = refusal.rule;
                let rejection = Rejection {
                    source: self.source,
                    change,
                    refusal,
                    at_ms: self.now_ms,
                };
                self.t
                    .put_rejection(rejection.change.dot, &cell, &rejection)?;
                self.report.refusals.push((index, rejection));
                Ok(Outcome::Refused(rule))
            }
            Ok(Judged {
                created,
                is_document,
                adopt,
            }) => {
                let ahead_ms = hlc::ahead_ms(change.stamp, self.now_ms);
                if ahead_ms > self.skew_ms_max {
                    self.ahead.push((
                        index,
                        AheadReport {
                            dot: change.dot,
                            stamp: change.stamp,
                            ahead_ms,
                        },
                    ));
                }
                self.state.hlc.observe(change.stamp);
                let rec = &mut record.held.rec;
                // The creation merges as a minimum, whatever the field register's fate: every
                // change carries it, so a record's creator is known from any of its changes.
                let creation_outcome = match created {
                    None => {
                        if adopt && let Some((stamp, dot)) = rec.get(&keys::CREATED_SLOT) {
                            self.log_replaced_creation(&change, Creation { stamp, dot })?;
                        }
                        let c = change.created;
                        rec.put(&keys::CREATED_SLOT, c.stamp, c.dot, &Value::Null)?;
                        record.held.dirty = true;
                        Outcome::Applied
                    }
                    Some(c) if c == change.created => Outcome::AlreadyHad,
                    Some(c) if change.created < c && !is_document => {
                        let c = change.created;
                        rec.put(&keys::CREATED_SLOT, c.stamp, c.dot, &Value::Null)?;
                        record.held.dirty = true;
                        Outcome::Applied
                    }
                    Some(_) => Outcome::Superseded,
                };
                if change.slot == Slot::Created {
                    return Ok(creation_outcome);
                }
                let slot = keys::slot_bytes(&change.slot);
                let new_marker = change.marker();
                let old_marker = rec.get(&slot).map(|(stamp, dot)| Marker {
                    stamp,
                    site: dot.site,
                });
                match old_marker {
                    Some(m) if m == new_marker => Ok(Outcome::AlreadyHad),
                    Some(m) if m > new_marker => Ok(Outcome::Superseded),
                    _ => {
                        rec.put(&slot, change.stamp, change.dot, &change.value)?;
                        record.held.dirty = true;
                        Ok(Outcome::Applied)
                    }
                }
            }
        }
    }

    /// The creation of a document this site made under a number another site had already
    /// used, replaced by the one central received first (R1/R5): refused, into this site's
    /// rejection log, so that the write its host made is not lost from view. Its other writes to
    /// the document are refused at central and come back with a return.
    fn log_replaced_creation(&mut self, winner: &Change, old: Creation) -> Result<()> {
        let created = old;
        let cell = keys::created_key(&keys::record_prefix(&winner.table, &winner.key));
        let rejection = Rejection {
            source: self.own,
            change: Change {
                table: winner.table.clone(),
                key: winner.key.clone(),
                slot: Slot::Created,
                value: Value::Null,
                stamp: old.stamp,
                dot: old.dot,
                created,
            },
            refusal: Refusal {
                rule: Rule::R5,
                writer: old.dot.site,
                table: winner.table.clone(),
                key: winner.key.clone(),
                field: None,
                reason: format!(
                    "document {} was created under the same number by site {}, whose creation central received first; only that site (or central) may write it",
                    winner.key,
                    winner.created.site()
                ),
            },
            at_ms: self.now_ms,
        };
        self.t.put_rejection(old.dot, &cell, &rejection)
    }

    /// A change this site made and lost in a restore from a backup, coming back.
    fn is_lost_own(&self, change: &Change) -> bool {
        change.dot.site == self.own
            && self
                .state
                .lost_own
                .is_some_and(|(from, to)| (from..to).contains(&change.dot.seq))
    }

    /// Runs the guards on an incoming change to `record`.
    fn judge(&self, change: &Change, record: &mut MergedRecord) -> Result<Result<Judged, Refusal>> {
        let refuse = |rule: Rule, writer: SiteId, reason: String| Refusal {
            rule,
            writer,
            table: change.table.clone(),
            key: change.key.clone(),
            field: match &change.slot {
                Slot::Field(f) => Some(f.clone()),
                Slot::Created | Slot::Tombstone => None,
            },
            reason,
        };
        let origin = change.dot.site;
        let Some(writer) = self.state.sites.get(origin) else {
            return Ok(Err(refuse(
                Rule::R1,
                origin,
                format!("the change claims origin site {origin}, which is unknown here"),
            )));
        };
        if self.source_role == Role::Remote && origin != self.source && !self.is_lost_own(change) {
            let code = self
                .state
                .sites
                .get(self.source)
                .map_or_else(|| self.source.to_string(), |s| s.code.to_string());
            return Ok(Err(refuse(
                Rule::R1,
                origin,
                format!(
                    "remote {code} sent a change it claims site {origin} made; a remote sends only its own"
                ),
            )));
        }
        let Some(def) = self.schema.table(&change.table) else {
            return Ok(Err(refuse(
                Rule::Schema,
                origin,
                format!("unknown table {}", change.table),
            )));
        };
        if let Err(reason) = check_slot(def, &change.slot, &change.value) {
            return Ok(Err(refuse(Rule::Schema, origin, reason)));
        }
        if change.slot == Slot::Created
            && (change.stamp, change.dot) != (change.created.stamp, change.created.dot)
        {
            return Ok(Err(refuse(
                Rule::R1,
                origin,
                "a creation whose stamp and dot are not those it claims".to_owned(),
            )));
        }
        let mut created = record
            .held
            .rec
            .get(&keys::CREATED_SLOT)
            .map(|(stamp, dot)| Creation { stamp, dot });
        // Central's judgement is final. Two shops may pick the same document number; the
        // first creation central received is the document's, and central refuses the other
        // (R5) and tells its shop. What central sends has passed its guards, so a remote takes
        // its creation over its own rather than refuse it: refusing here, where the changes
        // are then known, would leave the remote without them for ever.
        let adopt = self.source_role == Role::Central
            && def.is_document()
            && created.is_some_and(|m| m != change.created);
        if adopt {
            created = None;
        }
        if let Some(m) = created
            && def.is_document()
            && m != change.created
        {
            return Ok(Err(refuse(
                Rule::R5,
                origin,
                format!(
                    "the change claims the document was created by site {}, but it was created by site {}",
                    change.created.site(),
                    m.site()
                ),
            )));
        }
        let verdict = guard::check(&guard::Write {
            table: def,
            key: &change.key,
            slot: &change.slot,
            writer,
            creator: created.map_or(change.created.site(), |m| m.site()),
            // R6 binds a remote's own writes, judged locally; central already judged its own.
            frozen: self.source_role != Role::Central
                && def.freezes()
                && match record.frozen {
                    Some(f) => f,
                    None => *record.frozen.insert(self.t.is_frozen(&record.prefix)?),
                },
            denied: self
                .state
                .denied
                .get(&origin)
                .is_some_and(|d| d.contains(&change.table)),
            reservation: None,
        })
        .or_else(|r| {
            if self.broken_rules.contains(&r.rule) {
                Ok(())
            } else {
                Err(r)
            }
        });
        Ok(verdict.map(|()| Judged {
            created,
            is_document: def.is_document(),
            adopt,
        }))
    }
}

/// An incoming change the guards let through.
struct Judged {
    /// Its stored creation (`None` when new, or when `adopt`).
    created: Option<Creation>,
    is_document: bool,
    /// A document this remote created under the same key as the one central holds: central's
    /// creation replaces the stored one.
    adopt: bool,
}

/// A register with its cell key.
type Cell = (Vec<u8>, Register);

fn creation_register(c: Creation) -> Register {
    Register {
        value: Value::Null,
        stamp: c.stamp,
        dot: c.dot,
    }
}

/// Builds a record from its registers (all of one record, `Created` first); `None` if empty.
fn assemble(table: &str, key: &str, cells: Vec<Cell>) -> Result<Option<RawRecord>> {
    let mut raw: Option<RawRecord> = None;
    for (cell, reg) in cells {
        let ck = keys::decode_cell_key(&cell)
            .ok_or_else(|| Error::Corrupt(format!("undecodable cell key {cell:?}")))?;
        match (ck.slot, raw.as_mut()) {
            (Slot::Created, None) => {
                raw = Some(RawRecord {
                    table: table.to_owned(),
                    key: key.to_owned(),
                    created: Creation {
                        stamp: reg.stamp,
                        dot: reg.dot,
                    },
                    tombstone: None,
                    fields: BTreeMap::new(),
                });
            }
            (Slot::Tombstone, Some(r)) => r.tombstone = Some(reg),
            (Slot::Field(name), Some(r)) => {
                r.fields.insert(name, reg);
            }
            _ => {
                return Err(Error::Corrupt(format!(
                    "record {table}/{key}: registers without a single creation"
                )));
            }
        }
    }
    Ok(raw)
}

/// A consistent, read-only view of a store at one moment.
#[derive(Debug)]
pub struct Snapshot {
    tables: ReadTables,
    schema: Arc<Schema>,
}

impl Snapshot {
    /// A record with all its registers, including those a deletion hides.
    pub fn raw_record(&self, table: &str, key: &str) -> Result<Option<RawRecord>> {
        table_def(&self.schema, table)?;
        let prefix = keys::record_prefix(table, key);
        let end = keys::prefix_end(&prefix);
        assemble(table, key, self.tables.cells_between(&prefix, &end, None)?)
    }

    /// A record as the application sees it.
    pub fn record(&self, table: &str, key: &str) -> Result<Option<Record>> {
        Ok(self.raw_record(table, key)?.and_then(|r| r.visible()))
    }

    /// A record as the host's type.
    pub fn get<T: DeserializeOwned>(&self, table: &str, key: &str) -> Result<Option<T>> {
        self.record(table, key)?
            .map(|r| mapping::from_fields(&r.fields))
            .transpose()
    }

    /// Visible records of a table in key order, from `start_key` (inclusive), at most `limit`.
    pub fn scan(
        &self,
        table: &str,
        start_key: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<Record>> {
        let raws = self.scan_raw(table, start_key, limit)?;
        Ok(raws.iter().filter_map(RawRecord::visible).collect())
    }

    /// Stored records (deleted ones too) of a table in key order, from `start_key`, at most
    /// `limit`.
    pub fn scan_raw(
        &self,
        table: &str,
        start_key: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<RawRecord>> {
        table_def(&self.schema, table)?;
        let (table_start, end) = keys::table_bounds(table);
        let mut start = match start_key {
            Some(k) => keys::record_prefix(table, k),
            None => table_start,
        };
        let mut out: Vec<RawRecord> = Vec::new();
        // The registers of the record being gathered: its key and cells.
        let mut current: Option<(String, Vec<Cell>)> = None;
        // Read in chunks of registers, grouping them by record.
        const CHUNK: usize = 1024;
        loop {
            let cells = self.tables.cells_between(&start, &end, Some(CHUNK))?;
            let Some((last, _)) = cells.last() else { break };
            let mut next_start = last.clone();
            next_start.push(0);
            let n = cells.len();
            for (cell, reg) in cells {
                let ck = keys::decode_cell_key(&cell)
                    .ok_or_else(|| Error::Corrupt(format!("undecodable cell key {cell:?}")))?;
                if current.as_ref().is_some_and(|(k, _)| *k != ck.key) {
                    if let Some((k, cs)) = current.take() {
                        out.extend(assemble(table, &k, cs)?);
                    }
                    if limit.is_some_and(|l| out.len() >= l) {
                        return Ok(out);
                    }
                }
                current
                    .get_or_insert_with(|| (ck.key.clone(), Vec::new()))
                    .1
                    .push((cell, reg));
            }
            if n < CHUNK {
                break;
            }
            start = next_start;
        }
        if let Some((k, cs)) = current.take() {
            out.extend(assemble(table, &k, cs)?);
        }
        Ok(out)
    }

    /// The rejection log, in the order of the refused changes' dots.
    pub fn rejections(&self) -> Result<Vec<Rejection>> {
        self.tables.rejections()
    }

    /// Current reservations: `(table, key, holder)`.
    pub fn reservations(&self) -> Result<Vec<(String, String, String)>> {
        let mut out = Vec::new();
        for (prefix, holder) in self.tables.reservations()? {
            // A record prefix followed by the creation slot byte decodes as a cell key.
            let mut probe = prefix;
            probe.push(0x00);
            let ck = keys::decode_cell_key(&probe)
                .ok_or_else(|| Error::Corrupt("undecodable reservation key".into()))?;
            out.push((ck.table, ck.key, holder));
        }
        Ok(out)
    }

    /// Whether a document is frozen (R6).
    pub fn is_frozen(&self, table: &str, key: &str) -> Result<bool> {
        self.tables.is_frozen(&keys::record_prefix(table, key))
    }

    /// The reservation holder of a document, if reserved (R7).
    pub fn reserved_by(&self, table: &str, key: &str) -> Result<Option<String>> {
        self.tables.reservation(&keys::record_prefix(table, key))
    }

    /// The replicated content as raw key/value bytes: registers, then creation markers. Two
    /// stores that received the same changes return identical bytes.
    pub fn replicated_content(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.tables.replicated_content()
    }

    /// A value of the local side table (see [`WriteTx::local_get`]).
    pub fn local_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.tables.local_get(key)
    }

    /// Entries of the local side table from `start` (inclusive) to `end` (exclusive).
    pub fn local_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.tables.local_range(start, end, limit)
    }

    /// Entries of the local side table from `start` (inclusive) to `end` (exclusive), the last
    /// first: the newest rows of an index keyed by time.
    pub fn local_range_rev(
        &self,
        start: &[u8],
        end: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.tables.local_range_rev(start, end, limit)
    }

    /// The knowledge persisted with this snapshot.
    pub fn knowledge(&self) -> Result<Knowledge> {
        match self.tables.meta(META_KNOWLEDGE)? {
            Some(bytes) => {
                postcard::from_bytes(&bytes).map_err(|e| Error::Corrupt(format!("knowledge: {e}")))
            }
            None => Ok(Knowledge::new()),
        }
    }
}

/// A stream of the changes a peer lacks, from one snapshot; see [`Store::changes_lacking`].
pub struct ChangesLacking {
    tables: ReadTables,
    schema: Arc<Schema>,
    ranges: VecDeque<(SiteId, u64, u64)>,
    current: Option<crate::storage::DotRange>,
    exclude_reserved: bool,
    knowledge: Knowledge,
    left_out: Knowledge,
    /// The changes of the dot-index entry being read, not handed out yet.
    pending: VecDeque<Change>,
}

impl std::fmt::Debug for ChangesLacking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangesLacking")
            .field("ranges_left", &self.ranges.len())
            .field("left_out", &self.left_out)
            .finish()
    }
}

impl ChangesLacking {
    /// The sender's knowledge at the snapshot.
    pub fn knowledge(&self) -> &Knowledge {
        &self.knowledge
    }

    /// The dots left out so far because their records were reserved (R7).
    pub fn left_out(&self) -> &Knowledge {
        &self.left_out
    }

    /// What a receiver of every change yielded can count as known: the sender's knowledge less
    /// the dots left out. Meaningful once the stream is exhausted.
    pub fn covered(&self) -> Knowledge {
        self.knowledge.difference(&self.left_out)
    }

    /// Every dot this stream will hold back because its record is reserved (R7), computed up
    /// front from the same snapshot — so a flow's header can state what it covers before its
    /// changes are written. Costs in proportion to the reserved documents' registers.
    pub fn held_back(&self) -> Result<Knowledge> {
        let mut out = Knowledge::new();
        if !self.exclude_reserved {
            return Ok(out);
        }
        for (prefix, _) in self.tables.reservations()? {
            let end = keys::prefix_end(&prefix);
            for (_, reg) in self.tables.cells_between(&prefix, &end, None)? {
                out.insert(reg.dot);
            }
        }
        Ok(out)
    }

    /// What a receiver of the whole stream can count as known, computed up front: the
    /// sender's knowledge less [`ChangesLacking::held_back`]. Never less safe than
    /// [`ChangesLacking::covered`]: it may leave out a few more dots, which are then simply sent
    /// again later.
    pub fn covered_up_front(&self) -> Result<Knowledge> {
        Ok(self.knowledge.difference(&self.held_back()?))
    }

    /// The changes of one dot-index entry: every register of the record that the dot holds,
    /// in slot order (none when the record is reserved and left out, R7).
    fn changes_at(&mut self, dot_key: &[u8]) -> Result<()> {
        let corrupt = || Error::Corrupt(format!("dot index entry {dot_key:?}"));
        let (dot, prefix) = keys::decode_dot_key(dot_key).ok_or_else(corrupt)?;
        let regs = self.tables.record(prefix)?.ok_or_else(corrupt)?;
        let created_cell = keys::created_key(prefix);
        let ck = keys::decode_cell_key(&created_cell).ok_or_else(corrupt)?;
        let creation = regs
            .get(created_cell.get(prefix.len()..).unwrap_or_default())
            .ok_or_else(corrupt)?;
        let created = Creation {
            stamp: creation.stamp,
            dot: creation.dot,
        };
        let reserved = self.exclude_reserved
            && self
                .schema
                .table(&ck.table)
                .is_some_and(TableDef::is_document)
            && self.tables.reservation(prefix)?.is_some();
        if reserved {
            self.left_out.insert(dot);
            return Ok(());
        }
        let before = self.pending.len();
        for (slot, reg) in regs {
            if reg.dot != dot {
                continue;
            }
            let mut cell = prefix.to_vec();
            cell.extend_from_slice(&slot);
            let slot = keys::decode_cell_key(&cell).ok_or_else(corrupt)?.slot;
            self.pending.push_back(Change {
                table: ck.table.clone(),
                key: ck.key.clone(),
                slot,
                value: reg.value,
                stamp: reg.stamp,
                dot,
                created,
            });
        }
        if self.pending.len() == before {
            return Err(corrupt());
        }
        Ok(())
    }
}

impl Iterator for ChangesLacking {
    type Item = Result<Change>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Some(Ok(change));
            }
            let Some(range) = self.current.as_mut() else {
                let (site, first, last) = self.ranges.pop_front()?;
                let (start, end) = keys::dot_bounds(site, first, last);
                match self.tables.dots_between(&start, &end) {
                    Ok(r) => self.current = Some(r),
                    Err(e) => return Some(Err(e)),
                }
                continue;
            };
            match range.next() {
                None => self.current = None,
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(key)) => {
                    if let Err(e) = self.changes_at(&key) {
                        return Some(Err(e));
                    }
                }
            }
        }
    }
}

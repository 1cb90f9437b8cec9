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
/// jump (see [`WriteTx::skip_sequence`]), as two big-endian u64.
const META_LOST_OWN: &str = "lost_own_seqs";
/// Set (`[1]`) when this store keeps the stamp of each of its own commits
/// ([`WriteTx::keep_own_stamps`]).
const META_KEEP_OWN_STAMPS: &str = "keep_own_stamps";
const META_KEY_SEQ_PREFIX: &str = "key_seq:";
/// The newest stamp other sites hold of what this store holds: see [`State::settled`].
const META_SETTLED: &str = "settled_high";
/// The own commits a restamp replaced, whose stamps are kept (`own_stamps`) but were never
/// taken by another site: postcard `Knowledge` (see [`Store::restamp_ahead`]).
const META_RESTAMPED: &str = "restamped";
/// Why this store writes nothing of its own for now, UTF-8 (empty or absent: it writes): see
/// [`WriteTx::hold_own_writes`].
const META_OWN_WRITES_HELD: &str = "own_writes_held";
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
    /// the open transaction together): [`CACHE_BYTES_DEFAULT`] unless set. Applying a large flow
    /// stays within it: pages beyond it are written out before the commit (and made durable by
    /// it). Ignored by in-memory stores.
    pub cache: CacheSize,
}

/// The size of a store file's page cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheSize {
    /// This many bytes.
    Bytes(usize),
    /// Sized from the file when the store opens ([`cache_bytes_for`]).
    FromFile,
}

/// The default bound of a store file's page cache: 24 MiB. A 1M-change flow (30 MB) merges as
/// fast with it as with 32 MiB or a cache holding the whole 68 MB store, and its peak memory
/// stays under twice the flow's size (docs/BENCHMARKS.md); reads beyond it come from the
/// operating system's file cache.
pub const CACHE_BYTES_DEFAULT: usize = 24 << 20;
/// The largest page cache [`CacheSize::FromFile`] gives: 256 MiB.
pub const CACHE_BYTES_MAX: usize = 256 << 20;

/// The page cache [`CacheSize::FromFile`] gives a store file of `file_bytes`: the file's size,
/// within [`CACHE_BYTES_DEFAULT`] and [`CACHE_BYTES_MAX`] — every page of a store that fits
/// read from disk once, at the price of that much memory while it is in use.
pub fn cache_bytes_for(file_bytes: u64) -> usize {
    usize::try_from(file_bytes)
        .unwrap_or(usize::MAX)
        .clamp(CACHE_BYTES_DEFAULT, CACHE_BYTES_MAX)
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
            cache: CacheSize::Bytes(CACHE_BYTES_DEFAULT),
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
    /// back (see [`WriteTx::skip_sequence`]).
    lost_own: Option<(u64, u64)>,
    /// Whether each own commit's stamp is kept ([`WriteTx::keep_own_stamps`]).
    keep_own_stamps: bool,
    /// Why this store takes no dot of its own for now ([`WriteTx::hold_own_writes`]).
    own_writes_held: Option<Arc<str>>,
    /// Commits since the store was opened that changed a register other than to a new dot
    /// ([`Store::rewrites`]); in memory only.
    rewrites: u64,
    /// The newest stamp known to be held elsewhere: of a change merged from another site, or
    /// of an own commit the peer confirmed, up to the peer's clock when it did
    /// ([`WriteTx::forget_own_stamps`]). A restamp never
    /// stamps below it ([`Store::restamp_ahead`]): a write it stamps again may have written
    /// over a value stamped that late, which the other sites keep.
    settled: Stamp,
    /// Whether `settled` moved since it was last written.
    settled_moved: bool,
    knowledge: Knowledge,
    // Shared with the copies each transaction stages: they change seldom, and a copy of a
    // hundred sites per transaction was a few per cent of a sync's time.
    sites: Arc<SiteDirectory>,
    denied: Arc<BTreeMap<SiteId, BTreeSet<String>>>,
}

impl State {
    /// Notes that another site holds a value stamped `stamp` (see [`State::settled`]).
    fn settle(&mut self, stamp: Stamp) {
        if stamp > self.settled {
            self.settled = stamp;
            self.settled_moved = true;
        }
    }
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
    /// The refused changes, whole, with their index in the input (those the merge refused are
    /// also in the rejection log; a caller may add others, as central does for rule R2).
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
        let cache = match config.cache {
            CacheSize::Bytes(bytes) => bytes,
            CacheSize::FromFile => cache_bytes_for(std::fs::metadata(&path).map_or(0, |m| m.len())),
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
        let db = Db::open_file(&path, CACHE_BYTES_DEFAULT)?;
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
                keep_own_stamps: t.meta(META_KEEP_OWN_STAMPS)?.is_some_and(|b| b == [1]),
                rewrites: 0,
                own_writes_held: t
                    .meta(META_OWN_WRITES_HELD)?
                    .filter(|b| !b.is_empty())
                    .map(|b| Arc::from(String::from_utf8_lossy(&b).as_ref())),
                settled: Stamp::from_u64(get_u64(t, META_SETTLED)?.unwrap_or(0)),
                settled_moved: false,
                knowledge,
                sites: Arc::new(sites),
                denied: Arc::new(t.all_denied()?.into_iter().collect()),
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
        SiteDirectory::clone(&lock(&self.state).sites)
    }

    /// What this store has, per origin site.
    pub fn knowledge(&self) -> Knowledge {
        lock(&self.state).knowledge.clone()
    }

    /// This site's own commits lost in a restore from a backup, `[from, to)`, while other sites
    /// may still send them back (see [`WriteTx::skip_sequence`]); `None` outside a restore.
    pub fn lost_own(&self) -> Option<(u64, u64)> {
        lock(&self.state).lost_own
    }

    /// How many changes since this store was opened put a register back or dropped it, or
    /// merged again a change under a dot it already knew ([`WriteTx::revert`], a document's
    /// creation adopted (R5), a return judged again after central's restore): changes a
    /// reader following the store by the dots it has seen (`changes_lacking` from its
    /// knowledge, as the site server's change feed does) cannot see. Such a reader reads again
    /// what it shows when this moves. In memory, from 0 at each open; may count a change that
    /// left the register as it was.
    pub fn rewrites(&self) -> u64 {
        lock(&self.state).rewrites
    }

    /// Why this store writes nothing of its own for now, if it does not
    /// ([`WriteTx::hold_own_writes`]).
    pub fn own_writes_held(&self) -> Option<String> {
        lock(&self.state)
            .own_writes_held
            .as_deref()
            .map(str::to_owned)
    }

    /// The highest stamp issued or observed (persisted: never goes back across a reopen).
    pub fn clock_high_water(&self) -> Stamp {
        lock(&self.state).hlc.last()
    }

    /// The newest stamp known to be held by another site of what this store holds — merged
    /// from another site, or of an own commit the peer confirmed, up to the peer's clock when it
    /// did (meta `settled_high`; a
    /// restamp never stamps below it, [`Store::restamp_ahead`]).
    pub fn settled_high(&self) -> Stamp {
        lock(&self.state).settled
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
                merge_known: false,
                merge_again: None,
                taken_before: None,
                by_value: None,
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
                    tx.apply_batch(source, &batch, &mut report)?;
                    batch.clear();
                }
            }
            tx.apply_batch(source, &batch, &mut report)?;
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
            site: self.site.id,
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
            site: self.site.id,
            ranges,
            current: None,
            exclude_reserved,
            knowledge,
            left_out: Knowledge::new(),
            pending: VecDeque::new(),
            held: None,
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

    /// Repairs a site whose clock ran ahead, once it has been set right: its own writes that
    /// `acknowledged` (what central holds of them) lacks and whose stamps are further ahead of
    /// the clock now than the skew bound are stamped again from the clock as it is, as one new
    /// local commit (same values, a new dot), and the clock's high-water mark comes back to
    /// now — or to the newest stamp that stays, or that another site holds (a value merged from
    /// it, an own commit it confirmed: the write stamped again may have written over such a
    /// value, and must still come after it everywhere); each old commit becomes a new one, in
    /// the same order. Central held the flows carrying the old stamps
    /// (clock-skew quarantine, with the same bound) without applying them, so no other site has
    /// those writes and nothing else changes. Returns how many registers were stamped again.
    pub fn restamp_ahead(&self, acknowledged: &Knowledge) -> Result<u64> {
        let own = self.site.id;
        self.with_write(|t, state| {
            if let Some(why) = &state.own_writes_held {
                return Err(Error::OwnWritesHeld(why.to_string()));
            }
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
                .max(Stamp::new(now, 0))
                .max(state.settled);
            state.hlc = Hlc::new(floor);
            // The own commits stamped ahead that central has not taken are marked: their
            // writes were held, so no other site has them, and central confirming their numbers
            // later (an emission covers them) must not count their stamps as held elsewhere.
            // Their stamps are kept: an emission still names them (`own_commits_unsent`), which
            // tells central a store put back from a backup that numbered them as lost ones.
            let replaced = t.own_stamps_where(|seq, stamp| {
                Stamp::from_u64(stamp).physical_ms() > now.saturating_add(self.skew_ms_max)
                    && !acknowledged.contains(Dot { site: own, seq })
            })?;
            if !replaced.is_empty() {
                let mut marked = restamped(t)?;
                for (seq, _) in replaced {
                    marked.insert(Dot { site: own, seq });
                }
                put_restamped(t, &marked)?;
            }
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
                if state.keep_own_stamps {
                    t.put_own_stamp(dot.seq, stamp.as_u64())?;
                }
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
        // The state and the snapshot of one same moment: a commit holds the state's lock from
        // its transaction to the state's swap, so the snapshot is taken under it.
        let (state, snap) = {
            let state = lock(&self.state);
            (state.clone(), self.db.read()?)
        };
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

/// The own commits a restamp replaced whose stamps are still kept ([`META_RESTAMPED`]).
fn restamped(t: &WriteTables<'_>) -> Result<Knowledge> {
    match t.meta(META_RESTAMPED)? {
        Some(bytes) => postcard::from_bytes(&bytes)
            .map_err(|e| Error::Corrupt(format!("restamped commits: {e}"))),
        None => Ok(Knowledge::new()),
    }
}

fn put_restamped(t: &mut WriteTables<'_>, marked: &Knowledge) -> Result<()> {
    let bytes =
        postcard::to_stdvec(marked).map_err(|e| Error::Corrupt(format!("restamped: {e}")))?;
    t.put_meta(META_RESTAMPED, &bytes)
}

fn persist_clock_and_knowledge(t: &mut WriteTables<'_>, state: &mut State) -> Result<()> {
    put_u64(t, META_HLC, state.hlc.last().as_u64())?;
    if state.settled_moved {
        put_u64(t, META_SETTLED, state.settled.as_u64())?;
        state.settled_moved = false;
    }
    let bytes = postcard::to_stdvec(&state.knowledge)
        .map_err(|e| Error::Corrupt(format!("knowledge: {e}")))?;
    t.put_meta(META_KNOWLEDGE, &bytes)
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

mod lacking;
mod merge;
mod snapshot;
mod write;

pub use lacking::ChangesLacking;
pub use snapshot::Snapshot;
pub use write::WriteTx;

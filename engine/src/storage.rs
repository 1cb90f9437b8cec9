//! Every access to redb lives here, so that another backend stays possible.
//!
//! The store is one redb database with these tables (byte layout in docs/storage-format.md):
//!
//! | table | key | value | replicated? |
//! |---|---|---|---|
//! | `records` | record prefix | one record: every register, sorted by slot (format 1) | yes |
//! | `by_dot` | dot + record prefix | () — the index of each dot that wins a register of the record | derived |
//! | `frozen` | record prefix | () — documents emitted to central (R6) | local |
//! | `reservations` | record prefix | holder (R7) | local |
//! | `rejections` | dot key | postcard [`Rejection`] | local |
//! | `meta` | name | bytes: identity, schema, clock, sequence, knowledge | local |
//! | `sites` | site id | postcard [`Site`] | local copy of configuration |
//! | `permissions` | site id | postcard list of denied tables (R4/R9) | local copy of configuration |
//! | `local` | bytes | bytes — the replicator's side table (sync table, journal, logs) | local |

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use redb::{
    Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, StorageBackend,
    Table, TableDefinition, WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::keys;
use crate::knowledge::Dot;
use crate::record::{Creation, Register};
use crate::rejection::Rejection;
use crate::site::{Site, SiteId};

type Bytes = &'static [u8];

const RECORDS: TableDefinition<Bytes, Bytes> = TableDefinition::new("records");
/// The layout before layout 2: one key per register, and the dot index per register. A store
/// written so is converted when it is opened ([`Db::convert_cells`]).
const CELLS_V1: TableDefinition<Bytes, Bytes> = TableDefinition::new("cells");
/// The layout of the replicated data this version reads and writes (docs/storage-format.md),
/// kept in `meta` under [`META_LAYOUT`].
/// Layout 3 is layout 2 with records in fixed-width format 2 ([`record_bytes`]); a layout-2
/// store's records are re-encoded when it is opened.
const LAYOUT: u8 = 3;
const META_LAYOUT: &str = "layout";
/// Records a write transaction keeps decoded; past it, the written ones go to redb.
const RECORD_CACHE_MAX: usize = 4096;
/// Dot-index changes a write transaction queues before it applies them (sorted); bounds the
/// queue's memory (about 80 bytes each) in a large merge.
const DOT_OPS_MAX: usize = 1 << 16;

pub(crate) use crate::record_bytes::Registers;
use crate::record_bytes::{self, StoredRecord};

fn encode_record(regs: &Registers) -> Result<Vec<u8>> {
    record_bytes::encode(regs)
}

fn decode_record(bytes: &[u8]) -> Result<Registers> {
    record_bytes::decode(bytes)
}

/// A cell key split into its record prefix and its slot.
fn split_cell(cell: &[u8]) -> Result<(&[u8], &[u8])> {
    let n = keys::prefix_len(cell)
        .ok_or_else(|| Error::Corrupt(format!("undecodable cell key {cell:?}")))?;
    Ok(cell.split_at(n))
}

fn cell_of(prefix: &[u8], slot: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(prefix.len() + slot.len());
    c.extend_from_slice(prefix);
    c.extend_from_slice(slot);
    c
}

/// The dots a record's registers hold.
fn dots_of(regs: &Registers) -> BTreeSet<Dot> {
    regs.values().map(|r| r.dot).collect()
}

/// A record taken out of the store by a merge ([`WriteTables::hold`]): its registers, and the
/// dots indexed for it when it was taken, so that [`WriteTables::release`] moves the index.
#[derive(Debug)]
pub(crate) struct Held {
    pub rec: StoredRecord,
    before: BTreeSet<Dot>,
    /// The record changed: [`WriteTables::release`] writes it.
    pub dirty: bool,
}

/// A record as a write transaction holds it: read once, written once.
struct Cached {
    regs: Registers,
    /// The dots indexed for it when it was read.
    before: BTreeSet<Dot>,
    dirty: bool,
}
const BY_DOT: TableDefinition<Bytes, ()> = TableDefinition::new("by_dot");
const FROZEN: TableDefinition<Bytes, ()> = TableDefinition::new("frozen");
const RESERVATIONS: TableDefinition<Bytes, &str> = TableDefinition::new("reservations");
const REJECTIONS: TableDefinition<Bytes, Bytes> = TableDefinition::new("rejections");
const META: TableDefinition<&str, Bytes> = TableDefinition::new("meta");
const SITES: TableDefinition<u16, Bytes> = TableDefinition::new("sites");
const PERMISSIONS: TableDefinition<u16, Bytes> = TableDefinition::new("permissions");
const LOCAL: TableDefinition<Bytes, Bytes> = TableDefinition::new("local");
/// The stamp of each of this site's own commits, by sequence number, while it is kept
/// ([`crate::WriteTx::keep_own_stamps`]): local, never replicated.
const OWN_STAMPS: TableDefinition<u64, u64> = TableDefinition::new("own_stamps");

/// redb's page cache for a database held in memory.
const IN_MEMORY_CACHE_BYTES: usize = 4 << 20;

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| Error::Corrupt(format!("cannot encode: {e}")))
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

/// Reads registers; shared by write and read transactions.
pub(crate) trait CellReader {
    /// The register stored under a cell key.
    fn cell(&self, cell: &[u8]) -> Result<Option<Register>>;

    /// A record's creation (its `Created` register), if the record exists.
    fn created(&self, prefix: &[u8]) -> Result<Option<Creation>> {
        Ok(self.cell(&keys::created_key(prefix))?.map(|r| Creation {
            stamp: r.stamp,
            dot: r.dot,
        }))
    }
}

impl CellReader for WriteTables<'_> {
    fn cell(&self, cell: &[u8]) -> Result<Option<Register>> {
        let (prefix, slot) = split_cell(cell)?;
        self.with_record(prefix, |regs| regs.get(slot).cloned())
    }
}

impl CellReader for ReadTables {
    fn cell(&self, cell: &[u8]) -> Result<Option<Register>> {
        let (prefix, slot) = split_cell(cell)?;
        Ok(self.record(prefix)?.and_then(|mut regs| regs.remove(slot)))
    }
}

/// The database file (or memory) under a store.
#[derive(Debug)]
pub(crate) struct Db {
    db: Database,
}

impl Db {
    /// Opens or creates the file; commits are durable (fsync) when they return. redb's page
    /// cache (its read cache and the write buffer of a transaction together) is held to
    /// `cache_bytes`: a transaction dirtying more pages writes them out early rather than
    /// holding them all until its commit.
    pub fn open_file(path: &Path, cache_bytes: usize) -> Result<Db> {
        Self::init(
            Database::builder()
                .set_cache_size(cache_bytes)
                .create(path)?,
        )
    }

    /// A database held in memory, through the same code path. Its page cache is kept small:
    /// the pages are in memory already, and a large cache would hold them twice.
    pub fn in_memory() -> Result<Db> {
        Self::init(
            Database::builder()
                .set_cache_size(IN_MEMORY_CACHE_BYTES)
                .create_with_backend(crate::memory::ChunkedMemory::default())?,
        )
    }

    /// A database on any storage backend (fault-injecting ones in tests).
    pub fn with_backend(backend: impl StorageBackend) -> Result<Db> {
        Self::init(Database::builder().create_with_backend(backend)?)
    }

    fn init(db: Database) -> Result<Db> {
        let db = Db { db };
        db.convert_cells()?;
        // Create every table so that read transactions can open them all, and say which
        // layout the store is in: a later version's store is refused, not misread.
        db.write(|t| {
            t.open_all()?;
            match t.meta(META_LAYOUT)? {
                Some(b) if b.as_slice() > [LAYOUT].as_slice() => {
                    return Err(Error::Corrupt(format!(
                        "this store is in layout {b:?}, written by a later version of outpost; \
                         this one reads layout {LAYOUT}"
                    )));
                }
                Some(b) if b.as_slice() == [LAYOUT].as_slice() => {}
                Some(b) if b.as_slice() == [2].as_slice() => {
                    t.reencode_records()?;
                    t.put_meta(META_LAYOUT, &[LAYOUT])?;
                }
                _ => t.put_meta(META_LAYOUT, &[LAYOUT])?,
            }
            Ok(())
        })?;
        Ok(db)
    }

    /// Converts a store written in layout 1 (a key per register) to layout 2 (a key per
    /// record), once, in one transaction: the records, then the dot index rebuilt per record.
    fn convert_cells(&self) -> Result<()> {
        let txn = self.db.begin_write()?;
        let has_cells = txn
            .list_tables()?
            .any(|t| redb::TableHandle::name(&t) == "cells");
        if !has_cells {
            txn.abort()?;
            return Ok(());
        }
        use redb::ReadableTableMetadata as _;
        let cells_empty = txn.open_table(CELLS_V1)?.is_empty()?;
        let records_empty = txn.open_table(RECORDS)?.is_empty()?;
        if cells_empty {
            // An empty table of the old layout (a version before this one opened the store):
            // nothing to convert.
            txn.delete_table(CELLS_V1)?;
            txn.commit()?;
            return Ok(());
        }
        if !records_empty {
            return Err(Error::Corrupt(
                "this store holds data in both layouts (it was written by this version and by \
                 an older one): open it with this version only, from a backup taken before the \
                 older one wrote to it"
                    .into(),
            ));
        }
        txn.delete_table(BY_DOT)?;
        {
            let cells = txn.open_table(CELLS_V1)?;
            let mut records = txn.open_table(RECORDS)?;
            let mut by_dot = txn.open_table(BY_DOT)?;
            let mut current: Option<(Vec<u8>, Registers)> = None;
            let mut put = |prefix: &[u8], regs: &Registers| -> Result<()> {
                records.insert(prefix, encode_record(regs)?.as_slice())?;
                for dot in dots_of(regs) {
                    by_dot.insert(keys::dot_key(dot, prefix).as_slice(), ())?;
                }
                Ok(())
            };
            for entry in cells.iter()? {
                let (k, v) = entry?;
                let (prefix, slot) = split_cell(k.value())?;
                let reg: Register = decode("register", v.value())?;
                if current
                    .as_ref()
                    .is_some_and(|(p, _)| p.as_slice() != prefix)
                    && let Some((p, regs)) = current.take()
                {
                    put(&p, &regs)?;
                }
                current
                    .get_or_insert_with(|| (prefix.to_vec(), Registers::new()))
                    .1
                    .insert(slot.to_vec(), reg);
            }
            if let Some((p, regs)) = current.take() {
                put(&p, &regs)?;
            }
        }
        txn.delete_table(CELLS_V1)?;
        txn.commit()?;
        Ok(())
    }

    /// Runs `f` in one write transaction and commits it if `f` succeeds.
    pub fn write<R>(&self, f: impl FnOnce(&mut WriteTables<'_>) -> Result<R>) -> Result<R> {
        let txn = self.db.begin_write()?;
        let out = {
            let mut tables = WriteTables::open(&txn)?;
            let out = f(&mut tables)?;
            // A flush that failed part-way lost records it had taken from the cache, even if
            // the closure went on: the transaction must not commit then.
            if tables.failed {
                return Err(Error::Corrupt(
                    "a write of this transaction failed; it was not committed".into(),
                ));
            }
            tables.flush()?;
            out
        };
        txn.commit()?;
        Ok(out)
    }

    /// Copies every table of this database, as one snapshot, into `to` (empty), in one
    /// transaction: a backup of the store taken now.
    pub fn copy_into(&self, to: &Db) -> Result<()> {
        let from = self.db.begin_read()?;
        let txn = to.db.begin_write()?;
        {
            for def in [RECORDS, REJECTIONS, LOCAL] {
                let mut t = txn.open_table(def)?;
                for row in from.open_table(def)?.iter()? {
                    let (k, v) = row?;
                    t.insert(k.value(), v.value())?;
                }
            }
            for def in [BY_DOT, FROZEN] {
                let mut t = txn.open_table(def)?;
                for row in from.open_table(def)?.iter()? {
                    let (k, _) = row?;
                    t.insert(k.value(), ())?;
                }
            }
            let mut t = txn.open_table(RESERVATIONS)?;
            for row in from.open_table(RESERVATIONS)?.iter()? {
                let (k, v) = row?;
                t.insert(k.value(), v.value())?;
            }
            let mut t = txn.open_table(META)?;
            for row in from.open_table(META)?.iter()? {
                let (k, v) = row?;
                t.insert(k.value(), v.value())?;
            }
            for def in [SITES, PERMISSIONS] {
                let mut t = txn.open_table(def)?;
                for row in from.open_table(def)?.iter()? {
                    let (k, v) = row?;
                    t.insert(k.value(), v.value())?;
                }
            }
            let mut t = txn.open_table(OWN_STAMPS)?;
            for row in from.open_table(OWN_STAMPS)?.iter()? {
                let (k, v) = row?;
                t.insert(k.value(), v.value())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// A consistent snapshot for reading.
    pub fn read(&self) -> Result<ReadTables> {
        ReadTables::open(self.db.begin_read()?)
    }
}

/// The tables, open for writing within one transaction.
pub(crate) struct WriteTables<'t> {
    txn: &'t WriteTransaction,
    records: Lazy<'t, Bytes, Bytes>,
    /// The records this transaction read or wrote, decoded; written ones go to redb at
    /// [`WriteTables::flush`] (the end of the transaction, or when there are too many).
    /// Kept in key order, so that a flush writes records in order (and always the same way).
    cache: RefCell<BTreeMap<Vec<u8>, Cached>>,
    /// The cache is full of written records: the next write flushes them (reads cannot).
    crowded: std::cell::Cell<bool>,
    /// A flush failed part-way: the transaction must not commit.
    failed: bool,
    /// Changes to the dot index not made yet: (dot key, whether it is added), in the order
    /// they were decided. Applied sorted at [`WriteTables::flush`], so that the index's
    /// B-tree is walked once in order rather than at random for each record.
    dot_ops: Vec<(Vec<u8>, bool)>,
    by_dot: Lazy<'t, Bytes, ()>,
    frozen: Lazy<'t, Bytes, ()>,
    reservations: Lazy<'t, Bytes, &'static str>,
    rejections: Lazy<'t, Bytes, Bytes>,
    meta: Lazy<'t, &'static str, Bytes>,
    sites: Lazy<'t, u16, Bytes>,
    permissions: Lazy<'t, u16, Bytes>,
    local: Lazy<'t, Bytes, Bytes>,
    own_stamps: Lazy<'t, u64, u64>,
}

/// A table of a write transaction, opened the first time it is used: a transaction opens only
/// the tables it touches, and its commit checks only those (a small transaction — a receipt, a
/// journal row — costs redb about a third less than with every table open).
struct Lazy<'t, K: redb::Key + 'static, V: redb::Value + 'static> {
    def: TableDefinition<'static, K, V>,
    table: std::cell::OnceCell<Table<'t, K, V>>,
}

impl<'t, K: redb::Key + 'static, V: redb::Value + 'static> Lazy<'t, K, V> {
    fn new(def: TableDefinition<'static, K, V>) -> Self {
        Lazy {
            def,
            table: std::cell::OnceCell::new(),
        }
    }

    /// The table, to read.
    fn at(&self, txn: &'t WriteTransaction) -> Result<&Table<'t, K, V>> {
        if let Some(t) = self.table.get() {
            return Ok(t);
        }
        let opened = txn.open_table(self.def)?;
        Ok(self.table.get_or_init(|| opened))
    }

    /// The table, to write.
    fn at_mut(&mut self, txn: &'t WriteTransaction) -> Result<&mut Table<'t, K, V>> {
        if self.table.get().is_none() {
            let opened = txn.open_table(self.def)?;
            let _ = self.table.set(opened);
        }
        self.table
            .get_mut()
            .ok_or_else(|| Error::Corrupt("a table could not be opened".into()))
    }
}

impl std::fmt::Debug for WriteTables<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteTables")
    }
}

impl<'t> WriteTables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self> {
        Ok(WriteTables {
            txn,
            records: Lazy::new(RECORDS),
            cache: RefCell::new(BTreeMap::new()),
            crowded: std::cell::Cell::new(false),
            failed: false,
            dot_ops: Vec::new(),
            by_dot: Lazy::new(BY_DOT),
            frozen: Lazy::new(FROZEN),
            reservations: Lazy::new(RESERVATIONS),
            rejections: Lazy::new(REJECTIONS),
            meta: Lazy::new(META),
            sites: Lazy::new(SITES),
            permissions: Lazy::new(PERMISSIONS),
            local: Lazy::new(LOCAL),
            own_stamps: Lazy::new(OWN_STAMPS),
        })
    }

    /// Opens every table (creating those a new store lacks, so that read transactions can
    /// open them all).
    fn open_all(&mut self) -> Result<()> {
        let txn = self.txn;
        self.records.at(txn)?;
        self.by_dot.at(txn)?;
        self.frozen.at(txn)?;
        self.reservations.at(txn)?;
        self.rejections.at(txn)?;
        self.meta.at(txn)?;
        self.sites.at(txn)?;
        self.permissions.at(txn)?;
        self.local.at(txn)?;
        self.own_stamps.at(txn)?;
        Ok(())
    }

    /// Reads a record into the cache (once per transaction while it stays there).
    fn load(&self, prefix: &[u8]) -> Result<()> {
        if self.cache.borrow().contains_key(prefix) {
            return Ok(());
        }
        let regs = match self.records.at(self.txn)?.get(prefix)? {
            Some(v) => decode_record(v.value())?,
            None => Registers::new(),
        };
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= RECORD_CACHE_MAX {
            // Only what was read can go; what was written waits for the next flush, which the
            // next write makes when few could go.
            cache.retain(|_, c| c.dirty);
            if cache.len() >= RECORD_CACHE_MAX * 3 / 4 {
                self.crowded.set(true);
            }
        }
        cache.insert(
            prefix.to_vec(),
            Cached {
                before: dots_of(&regs),
                regs,
                dirty: false,
            },
        );
        Ok(())
    }

    fn with_record<R>(&self, prefix: &[u8], f: impl FnOnce(&Registers) -> R) -> Result<R> {
        self.load(prefix)?;
        let cache = self.cache.borrow();
        let c = cache
            .get(prefix)
            .ok_or_else(|| Error::Corrupt("a record left the cache".into()))?;
        Ok(f(&c.regs))
    }

    fn change_record(&mut self, cell: &[u8], f: impl FnOnce(&mut Registers, &[u8])) -> Result<()> {
        self.relieve()?;
        let (prefix, slot) = split_cell(cell)?;
        self.load(prefix)?;
        {
            let cache = self.cache.get_mut();
            let c = cache
                .get_mut(prefix)
                .ok_or_else(|| Error::Corrupt("a record left the cache".into()))?;
            f(&mut c.regs, slot);
            c.dirty = true;
        }
        if self.cache.get_mut().len() >= RECORD_CACHE_MAX {
            self.flush()?;
        }
        Ok(())
    }

    /// Flushes when reads found the cache full of written records.
    fn relieve(&mut self) -> Result<()> {
        if self.crowded.get() {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the records this transaction changed, each once, and moves the dot index from
    /// the dots they held when read to those they hold now.
    pub fn flush(&mut self) -> Result<()> {
        self.failed = true;
        self.crowded.set(false);
        let cache = std::mem::take(self.cache.get_mut());
        for (prefix, c) in cache {
            if c.dirty {
                self.write_record(&prefix, &c.regs, &c.before)?;
            }
        }
        self.apply_dot_ops()?;
        self.failed = false;
        Ok(())
    }

    /// Writes one record (removes it when it has no register left) and queues the dot
    /// index's changes from `before` to the dots it holds now.
    fn write_record(
        &mut self,
        prefix: &[u8],
        regs: &Registers,
        before: &BTreeSet<Dot>,
    ) -> Result<()> {
        self.queue_dots(prefix, before, &dots_of(regs));
        if regs.is_empty() {
            self.records.at_mut(self.txn)?.remove(prefix)?;
        } else {
            self.records
                .at_mut(self.txn)?
                .insert(prefix, encode_record(regs)?.as_slice())?;
        }
        Ok(())
    }

    /// Queues the dot index's move from the dots a record held to those it holds.
    fn queue_dots(&mut self, prefix: &[u8], before: &BTreeSet<Dot>, after: &BTreeSet<Dot>) {
        for dot in before.difference(after) {
            self.dot_ops.push((keys::dot_key(*dot, prefix), false));
        }
        for dot in after.difference(before) {
            self.dot_ops.push((keys::dot_key(*dot, prefix), true));
        }
    }

    /// Applies the queued dot-index changes in key order; of several for one key, the last
    /// decided stands.
    fn apply_dot_ops(&mut self) -> Result<()> {
        let mut ops = std::mem::take(&mut self.dot_ops);
        // Stable: equal keys keep the order they were decided in.
        ops.sort_by(|a, b| a.0.cmp(&b.0));
        let mut ops = ops.into_iter().peekable();
        while let Some(mut op) = ops.next() {
            while let Some(later) = ops.next_if(|n| n.0 == op.0) {
                op = later;
            }
            let (key, add) = op;
            if add {
                self.by_dot.at_mut(self.txn)?.insert(key.as_slice(), ())?;
            } else {
                self.by_dot.at_mut(self.txn)?.remove(key.as_slice())?;
            }
        }
        Ok(())
    }

    /// Rewrites every record not in the current format (a layout-2 store's): same registers,
    /// same dots, so the dot index stands.
    fn reencode_records(&mut self) -> Result<()> {
        let mut old = Vec::new();
        for entry in self.records.at(self.txn)?.iter()? {
            let (k, v) = entry?;
            if !record_bytes::is_current(v.value()) {
                old.push(k.value().to_vec());
            }
        }
        for prefix in old {
            let regs = match self.records.at(self.txn)?.get(prefix.as_slice())? {
                Some(v) => decode_record(v.value())?,
                None => continue,
            };
            self.records
                .at_mut(self.txn)?
                .insert(prefix.as_slice(), encode_record(&regs)?.as_slice())?;
        }
        Ok(())
    }

    /// Takes a record out for a merge: from this transaction's cache if it is there (it
    /// leaves it), else read from the store. Give it back with [`WriteTables::release`].
    pub fn hold(&mut self, prefix: &[u8]) -> Result<Held> {
        if let Some(c) = self.cache.get_mut().remove(prefix) {
            return Ok(Held {
                rec: StoredRecord::from_registers(&c.regs)?,
                before: c.before,
                dirty: c.dirty,
            });
        }
        let rec = match self.records.at(self.txn)?.get(prefix)? {
            Some(v) => StoredRecord::from_stored(v.value().to_vec())?,
            None => StoredRecord::default(),
        };
        Ok(Held {
            before: rec.dots().into_iter().collect(),
            rec,
            dirty: false,
        })
    }

    /// Gives back a record taken by [`WriteTables::hold`]: written if it changed.
    pub fn release(&mut self, prefix: &[u8], held: Held) -> Result<()> {
        if !held.dirty {
            return Ok(());
        }
        self.failed = true;
        let after: BTreeSet<Dot> = held.rec.dots().into_iter().collect();
        self.queue_dots(prefix, &held.before, &after);
        if held.rec.is_empty() {
            self.records.at_mut(self.txn)?.remove(prefix)?;
        } else {
            self.records
                .at_mut(self.txn)?
                .insert(prefix, held.rec.encode()?.as_slice())?;
        }
        if self.dot_ops.len() >= DOT_OPS_MAX {
            self.apply_dot_ops()?;
        }
        self.failed = false;
        Ok(())
    }

    /// Stores the winning register of a cell (the dot index follows at the flush).
    pub fn put_cell(&mut self, cell: &[u8], _old: Option<&Register>, new: &Register) -> Result<()> {
        self.change_record(cell, |regs, slot| {
            regs.insert(slot.to_vec(), new.clone());
        })
    }

    /// Every register (for whole-store repairs; the merge path reads record by record).
    pub fn all_cells(&mut self) -> Result<Vec<(Vec<u8>, Register)>> {
        self.flush()?;
        let mut out = Vec::new();
        for entry in self.records.at(self.txn)?.range::<&[u8]>(..)? {
            let (k, v) = entry?;
            for (slot, reg) in decode_record(v.value())? {
                out.push((cell_of(k.value(), &slot), reg));
            }
        }
        Ok(out)
    }

    /// Removes a register (the dot index follows at the flush).
    pub fn remove_cell(&mut self, cell: &[u8], _old: &Register) -> Result<()> {
        self.change_record(cell, |regs, slot| {
            regs.remove(slot);
        })
    }

    pub fn local_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .local
            .at(self.txn)?
            .get(key)?
            .map(|g| g.value().to_vec()))
    }

    pub fn local_put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.local.at_mut(self.txn)?.insert(key, value)?;
        Ok(())
    }

    pub fn local_remove(&mut self, key: &[u8]) -> Result<()> {
        self.local.at_mut(self.txn)?.remove(key)?;
        Ok(())
    }

    /// Keeps the stamp of this site's own commit `seq`.
    pub fn put_own_stamp(&mut self, seq: u64, stamp: u64) -> Result<()> {
        self.own_stamps.at_mut(self.txn)?.insert(seq, stamp)?;
        Ok(())
    }

    /// The kept stamps of own commits (sequence number, stamp) for which `pick(seq, stamp)`
    /// holds.
    pub fn own_stamps_where(&mut self, pick: impl Fn(u64, u64) -> bool) -> Result<Vec<(u64, u64)>> {
        let table = self.own_stamps.at_mut(self.txn)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            if pick(k.value(), v.value()) {
                out.push((k.value(), v.value()));
            }
        }
        Ok(out)
    }

    /// Drops the kept stamps of own commits for which `forget(seq)` holds; those dropped
    /// (sequence number, stamp).
    pub fn forget_own_stamps(&mut self, forget: impl Fn(u64) -> bool) -> Result<Vec<(u64, u64)>> {
        let gone = self.own_stamps_where(|seq, _| forget(seq))?;
        let table = self.own_stamps.at_mut(self.txn)?;
        for (seq, _) in &gone {
            table.remove(*seq)?;
        }
        Ok(gone)
    }

    pub fn local_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        collect_raw(self.local.at(self.txn)?.range::<&[u8]>(start..end)?, limit)
    }

    pub fn is_frozen(&self, prefix: &[u8]) -> Result<bool> {
        Ok(self.frozen.at(self.txn)?.get(prefix)?.is_some())
    }

    pub fn freeze(&mut self, prefix: &[u8]) -> Result<()> {
        self.frozen.at_mut(self.txn)?.insert(prefix, ())?;
        Ok(())
    }

    pub fn reservation(&self, prefix: &[u8]) -> Result<Option<String>> {
        Ok(self
            .reservations
            .at(self.txn)?
            .get(prefix)?
            .map(|g| g.value().to_owned()))
    }

    pub fn set_reservation(&mut self, prefix: &[u8], holder: Option<&str>) -> Result<()> {
        match holder {
            Some(h) => {
                self.reservations.at_mut(self.txn)?.insert(prefix, h)?;
            }
            None => {
                self.reservations.at_mut(self.txn)?.remove(prefix)?;
            }
        }
        Ok(())
    }

    pub fn put_rejection(&mut self, dot: Dot, cell: &[u8], rejection: &Rejection) -> Result<()> {
        self.relieve()?;
        self.rejections.at_mut(self.txn)?.insert(
            keys::dot_key(dot, cell).as_slice(),
            encode(rejection)?.as_slice(),
        )?;
        Ok(())
    }

    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .meta
            .at(self.txn)?
            .get(name)?
            .map(|g| g.value().to_vec()))
    }

    pub fn put_meta(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        self.meta.at_mut(self.txn)?.insert(name, bytes)?;
        Ok(())
    }

    pub fn put_site(&mut self, site: &Site) -> Result<()> {
        self.sites
            .at_mut(self.txn)?
            .insert(site.id.0, encode(site)?.as_slice())?;
        Ok(())
    }

    pub fn sites(&self) -> Result<Vec<Site>> {
        let mut out = Vec::new();
        for entry in self.sites.at(self.txn)?.iter()? {
            let (_, v) = entry?;
            out.push(decode("site", v.value())?);
        }
        Ok(out)
    }

    pub fn put_denied(&mut self, site: SiteId, tables: &BTreeSet<String>) -> Result<()> {
        if tables.is_empty() {
            self.permissions.at_mut(self.txn)?.remove(site.0)?;
        } else {
            self.permissions
                .at_mut(self.txn)?
                .insert(site.0, encode(tables)?.as_slice())?;
        }
        Ok(())
    }

    pub fn all_denied(&self) -> Result<Vec<(SiteId, BTreeSet<String>)>> {
        let mut out = Vec::new();
        for entry in self.permissions.at(self.txn)?.iter()? {
            let (k, v) = entry?;
            out.push((SiteId(k.value()), decode("permissions", v.value())?));
        }
        Ok(out)
    }

    /// Every register of one record (read-your-writes inside a transaction).
    pub fn record_cells(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Register)>> {
        self.with_record(prefix, |regs| {
            regs.iter()
                .map(|(slot, reg)| (cell_of(prefix, slot), reg.clone()))
                .collect()
        })
    }
}

fn collect_raw(
    range: redb::Range<'_, Bytes, Bytes>,
    limit: Option<usize>,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    for entry in range {
        let (k, v) = entry?;
        out.push((k.value().to_vec(), v.value().to_vec()));
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
    }
    Ok(out)
}

/// The tables of one read snapshot.
pub(crate) struct ReadTables {
    records: ReadOnlyTable<Bytes, Bytes>,
    by_dot: ReadOnlyTable<Bytes, ()>,
    frozen: ReadOnlyTable<Bytes, ()>,
    reservations: ReadOnlyTable<Bytes, &'static str>,
    rejections: ReadOnlyTable<Bytes, Bytes>,
    meta: ReadOnlyTable<&'static str, Bytes>,
    local: ReadOnlyTable<Bytes, Bytes>,
    own_stamps: ReadOnlyTable<u64, u64>,
}

impl std::fmt::Debug for ReadTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadTables")
    }
}

impl ReadTables {
    fn open(txn: ReadTransaction) -> Result<Self> {
        Ok(ReadTables {
            records: txn.open_table(RECORDS)?,
            by_dot: txn.open_table(BY_DOT)?,
            frozen: txn.open_table(FROZEN)?,
            reservations: txn.open_table(RESERVATIONS)?,
            rejections: txn.open_table(REJECTIONS)?,
            meta: txn.open_table(META)?,
            local: txn.open_table(LOCAL)?,
            own_stamps: txn.open_table(OWN_STAMPS)?,
        })
    }

    pub fn local_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.local.get(key)?.map(|g| g.value().to_vec()))
    }

    pub fn local_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        collect_raw(self.local.range::<&[u8]>(start..end)?, limit)
    }

    /// Like `local_range`, from the last key down.
    pub fn local_range_rev(
        &self,
        start: &[u8],
        end: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for entry in self.local.range::<&[u8]>(start..end)?.rev() {
            let (k, v) = entry?;
            out.push((k.value().to_vec(), v.value().to_vec()));
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
        }
        Ok(out)
    }

    pub fn is_frozen(&self, prefix: &[u8]) -> Result<bool> {
        Ok(self.frozen.get(prefix)?.is_some())
    }

    pub fn reservation(&self, prefix: &[u8]) -> Result<Option<String>> {
        Ok(self.reservations.get(prefix)?.map(|g| g.value().to_owned()))
    }

    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.meta.get(name)?.map(|g| g.value().to_vec()))
    }

    /// A record's registers, if it exists.
    pub fn record(&self, prefix: &[u8]) -> Result<Option<Registers>> {
        self.records
            .get(prefix)?
            .map(|v| decode_record(v.value()))
            .transpose()
    }

    /// Records whose prefixes are from `start` (inclusive) to `end` (exclusive), at most
    /// `limit`, in key order, each with its registers.
    pub fn records_between(
        &self,
        start: &[u8],
        end: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Registers)>> {
        let mut out = Vec::new();
        for entry in self.records.range::<&[u8]>(start..end)? {
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            let (k, v) = entry?;
            out.push((k.value().to_vec(), decode_record(v.value())?));
        }
        Ok(out)
    }

    /// Registers whose cell keys are from `start` (inclusive) to `end` (exclusive), at most
    /// `limit`, in cell-key order.
    pub fn cells_between(
        &self,
        start: &[u8],
        end: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Register)>> {
        let mut out = Vec::new();
        let take = |prefix: &[u8], value: &[u8], out: &mut Vec<(Vec<u8>, Register)>| {
            for (slot, reg) in decode_record(value)? {
                if limit.is_some_and(|l| out.len() >= l) {
                    break;
                }
                let cell = cell_of(prefix, &slot);
                if cell.as_slice() >= start && cell.as_slice() < end {
                    out.push((cell, reg));
                }
            }
            Ok::<(), Error>(())
        };
        // The record `start` may fall within (its prefix sorts before it).
        if let Some(entry) = self.records.range::<&[u8]>(..start)?.next_back() {
            let (k, v) = entry?;
            if start.starts_with(k.value()) {
                take(k.value(), v.value(), &mut out)?;
            }
        }
        for entry in self.records.range::<&[u8]>(start..end)? {
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            let (k, v) = entry?;
            take(k.value(), v.value(), &mut out)?;
        }
        Ok(out)
    }

    /// A streaming walk over the dot index between two keys.
    pub fn dots_between(&self, start: &[u8], end: &[u8]) -> Result<DotRange> {
        Ok(DotRange {
            inner: self.by_dot.range::<&[u8]>(start..end)?,
        })
    }

    /// Every rejection, in dot order.
    pub fn rejections(&self) -> Result<Vec<Rejection>> {
        let mut out = Vec::new();
        for entry in self.rejections.iter()? {
            let (_, v) = entry?;
            out.push(decode("rejection", v.value())?);
        }
        Ok(out)
    }

    /// Every reservation: record prefix and holder.
    pub fn reservations(&self) -> Result<Vec<(Vec<u8>, String)>> {
        let mut out = Vec::new();
        for entry in self.reservations.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_vec(), v.value().to_owned()));
        }
        Ok(out)
    }

    /// The replicated content, entry by entry: `records` in key order. Two converged stores
    /// return the same bytes.
    pub fn replicated_content(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for entry in self.records.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The kept stamps of own commits (sequence number, stamp), in order.
    pub fn own_stamps(&self) -> Result<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        for entry in self.own_stamps.iter()? {
            let (k, v) = entry?;
            out.push((k.value(), v.value()));
        }
        Ok(out)
    }

    /// The own commits of `site` outside `known` whose stamps are kept and of which no change
    /// would travel: their dot in `held_back`, or held by no register; with their stamps.
    pub fn own_commits_unsent(
        &self,
        site: SiteId,
        known: &crate::Knowledge,
        held_back: &crate::Knowledge,
    ) -> Result<Vec<(u64, crate::Stamp)>> {
        let mut out = Vec::new();
        for (seq, stamp) in self.own_stamps()? {
            let dot = Dot { site, seq };
            if !known.contains(dot) && (held_back.contains(dot) || !self.dot_indexed(dot)?) {
                out.push((seq, crate::Stamp::from_u64(stamp)));
            }
        }
        Ok(out)
    }

    /// Whether the dot index holds `dot` for any record: some register still carries it.
    fn dot_indexed(&self, dot: Dot) -> Result<bool> {
        Ok(self.first_record_of(dot)?.is_some())
    }

    /// The prefix of the first record (in key order) with a register that `dot` carries.
    fn first_record_of(&self, dot: Dot) -> Result<Option<Vec<u8>>> {
        let (start, end) = keys::dot_bounds(dot.site, dot.seq, dot.seq);
        let Some(entry) = self
            .by_dot
            .range::<&[u8]>(start.as_slice()..end.as_slice())?
            .next()
        else {
            return Ok(None);
        };
        let (k, _) = entry?;
        let (_, prefix) = keys::decode_dot_key(k.value())
            .ok_or_else(|| Error::Corrupt(format!("dot index entry {:?}", k.value())))?;
        Ok(Some(prefix.to_vec()))
    }

    /// The stamp of commit `dot` as a register it still carries holds it; `None` when it
    /// carries none here (never taken, or every change of it written over).
    pub fn commit_stamp(&self, dot: Dot) -> Result<Option<crate::Stamp>> {
        let Some(prefix) = self.first_record_of(dot)? else {
            return Ok(None);
        };
        let regs = self
            .record(&prefix)?
            .ok_or_else(|| Error::Corrupt(format!("dot index entry for {dot} names no record")))?;
        Ok(regs.values().find(|r| r.dot == dot).map(|r| r.stamp))
    }

    /// Every dot-index key (for invariant checks).
    pub fn all_dot_keys(&self) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for entry in self.by_dot.iter()? {
            let (k, _) = entry?;
            out.push(k.value().to_vec());
        }
        Ok(out)
    }
}

/// A streaming walk over dot-index keys; holds its snapshot alive.
pub(crate) struct DotRange {
    inner: redb::Range<'static, Bytes, ()>,
}

impl Iterator for DotRange {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner
            .next()
            .map(|entry| entry.map(|(k, _)| k.value().to_vec()).map_err(Error::from))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::hlc::{ManualClock, Stamp};
    use crate::record::Slot;
    use crate::schema::{FieldKind, Schema, TableDef};
    use crate::store::{Store, StoreConfig};
    use crate::value::Value;

    fn reg(value: Value, stamp: u64, site: u16, seq: u64) -> Register {
        Register {
            value,
            stamp: Stamp::from_u64(stamp),
            dot: Dot {
                site: SiteId(site),
                seq,
            },
        }
    }

    #[test]
    fn a_store_written_one_key_per_register_is_converted_to_one_key_per_record_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::STORE_FILE_NAME);
        // Layout 1, as the version before wrote it: a key per register, the dot index per
        // register.
        let cells = [
            (
                keys::created_key(&keys::record_prefix("customers", "K1")),
                reg(Value::Null, 10 << 16, 2, 1),
            ),
            (
                keys::cell_key(
                    &keys::record_prefix("customers", "K1"),
                    &Slot::Field("name".into()),
                ),
                reg(Value::Text("Dupont".into()), 10 << 16, 2, 1),
            ),
            (
                keys::cell_key(
                    &keys::record_prefix("customers", "K1"),
                    &Slot::Field("city".into()),
                ),
                reg(Value::Text("Lyon".into()), 11 << 16, 3, 4),
            ),
            (
                keys::created_key(&keys::record_prefix("customers", "K2")),
                reg(Value::Null, 12 << 16, 3, 5),
            ),
            (
                keys::cell_key(
                    &keys::record_prefix("customers", "K2"),
                    &Slot::Field("name".into()),
                ),
                reg(Value::Text("Martin".into()), 12 << 16, 3, 5),
            ),
        ];
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(CELLS_V1).unwrap();
                let mut d = txn.open_table(BY_DOT).unwrap();
                for (cell, r) in &cells {
                    t.insert(cell.as_slice(), encode(r).unwrap().as_slice())
                        .unwrap();
                    d.insert(keys::dot_key(r.dot, cell).as_slice(), ()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let schema = Schema::new([TableDef::shared("customers")
            .field("name", FieldKind::Text)
            .field("city", FieldKind::Text)])
        .unwrap();
        let clock = ManualClock::new(20);
        let config = StoreConfig::new(crate::site::Site::remote(2, "BSOC").unwrap(), schema, clock);
        let store = Store::open(dir.path(), config).unwrap();
        let k1 = store.record("customers", "K1").unwrap().unwrap();
        assert_eq!(k1.fields["name"], Value::Text("Dupont".into()));
        assert_eq!(k1.fields["city"], Value::Text("Lyon".into()));
        assert_eq!(
            store
                .snapshot()
                .unwrap()
                .replicated_content()
                .unwrap()
                .len(),
            2,
            "one key per record"
        );
        drop(store);
        // The dot index is per record: one entry per dot a record's registers hold.
        let db = Db::open_file(&path, 1 << 20).unwrap();
        let indexed = db.read().unwrap().all_dot_keys().unwrap();
        let k1 = keys::record_prefix("customers", "K1");
        let k2 = keys::record_prefix("customers", "K2");
        let dot = |site, seq| Dot {
            site: SiteId(site),
            seq,
        };
        let mut expected = vec![
            keys::dot_key(dot(2, 1), &k1),
            keys::dot_key(dot(3, 4), &k1),
            keys::dot_key(dot(3, 5), &k2),
        ];
        expected.sort();
        assert_eq!(indexed, expected);
        drop(db);
        // Opened again: nothing left to convert, the same content.
        let again = Store::open_existing(
            dir.path(),
            Schema::new([TableDef::shared("customers")
                .field("name", FieldKind::Text)
                .field("city", FieldKind::Text)])
            .unwrap(),
            ManualClock::new(20),
        )
        .unwrap();
        assert_eq!(
            again.record("customers", "K2").unwrap().unwrap().fields["name"],
            Value::Text("Martin".into())
        );
    }

    #[test]
    fn a_store_of_layout_2_has_its_records_re_encoded_fixed_width_at_open_and_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::STORE_FILE_NAME);
        let schema = || {
            Schema::new([TableDef::shared("customers")
                .field("name", FieldKind::Text)
                .field("city", FieldKind::Text)])
            .unwrap()
        };
        let config = || {
            StoreConfig::new(
                crate::site::Site::remote(2, "BSOC").unwrap(),
                schema(),
                ManualClock::new(1_800_000_000_000),
            )
        };
        let store = Store::open(dir.path(), config()).unwrap();
        for i in 0..50 {
            store
                .write(|tx| {
                    tx.set("customers", &format!("K{i}"), "name", format!("n{i}"))?;
                    tx.set("customers", &format!("K{i}"), "city", "Lyon")
                })
                .unwrap();
        }
        let written = store.snapshot().unwrap().replicated_content().unwrap();
        drop(store);
        // As layout 2 wrote it: format 1 (postcard of the sorted register list), layout 2.
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(RECORDS).unwrap();
                for (k, v) in &written {
                    let regs = decode_record(v).unwrap();
                    let list: Vec<(&Vec<u8>, &Register)> = regs.iter().collect();
                    let mut old = vec![1u8];
                    old.extend(encode(&list).unwrap());
                    t.insert(k.as_slice(), old.as_slice()).unwrap();
                }
                txn.open_table(META)
                    .unwrap()
                    .insert(META_LAYOUT, [2u8].as_slice())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let store = Store::open(dir.path(), config()).unwrap();
        assert_eq!(
            store.snapshot().unwrap().replicated_content().unwrap(),
            written,
            "the same bytes as this version writes"
        );
        store.check_invariants().unwrap();
        assert_eq!(
            store.record("customers", "K7").unwrap().unwrap().fields["name"],
            Value::Text("n7".into())
        );
        drop(store);
        let db = Db::open_file(&path, 1 << 20).unwrap();
        assert_eq!(
            db.read().unwrap().meta(META_LAYOUT).unwrap(),
            Some(vec![LAYOUT])
        );
    }

    #[test]
    fn a_store_an_older_version_opened_is_left_as_it_was_or_refused_never_half_converted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::STORE_FILE_NAME);
        let schema =
            || Schema::new([TableDef::shared("customers").field("name", FieldKind::Text)]).unwrap();
        let config = || {
            StoreConfig::new(
                crate::site::Site::remote(2, "BSOC").unwrap(),
                schema(),
                ManualClock::new(1_800_000_000_000),
            )
        };
        let store = Store::open(dir.path(), config()).unwrap();
        store
            .write(|tx| tx.set("customers", "K1", "name", "Dupont"))
            .unwrap();
        drop(store);
        // An older version opened it: an empty table of the old layout appeared.
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(CELLS_V1).unwrap();
            txn.commit().unwrap();
        }
        let store = Store::open(dir.path(), config()).unwrap();
        assert!(store.record("customers", "K1").unwrap().is_some());
        store.check_invariants().unwrap();
        drop(store);
        // It also wrote there: both layouts hold data — refused, nothing changed.
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(CELLS_V1).unwrap();
                let cell = keys::created_key(&keys::record_prefix("customers", "K2"));
                t.insert(
                    cell.as_slice(),
                    encode(&reg(Value::Null, 10 << 16, 2, 9))
                        .unwrap()
                        .as_slice(),
                )
                .unwrap();
            }
            txn.commit().unwrap();
        }
        let err = Store::open(dir.path(), config()).unwrap_err();
        assert!(err.to_string().contains("both layouts"), "{err}");
        // A later layout is refused too.
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.delete_table(CELLS_V1).unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(META_LAYOUT, [9u8].as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let err = Store::open(dir.path(), config()).unwrap_err();
        assert!(err.to_string().contains("later version"), "{err}");
    }
}

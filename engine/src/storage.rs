//! Every access to redb lives here, so that another backend stays possible.
//!
//! The store is one redb database with these tables (byte layout in docs/storage-format.md):
//!
//! | table | key | value | replicated? |
//! |---|---|---|---|
//! | `cells` | cell key | postcard [`Register`]; a record's creation is its `Created` cell | yes |
//! | `by_dot` | dot key | () — the index of each cell's *winning* dot | derived |
//! | `frozen` | record prefix | () — documents emitted to central (R6) | local |
//! | `reservations` | record prefix | holder (R7) | local |
//! | `rejections` | dot key | postcard [`Rejection`] | local |
//! | `meta` | name | bytes: identity, schema, clock, sequence, knowledge | local |
//! | `sites` | site id | postcard [`Site`] | local copy of configuration |
//! | `permissions` | site id | postcard list of denied tables (R4/R9) | local copy of configuration |
//! | `local` | bytes | bytes — the replicator's side table (sync table, journal, logs) | local |

use std::cell::RefCell;
use std::collections::BTreeSet;
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

const CELLS: TableDefinition<Bytes, Bytes> = TableDefinition::new("cells");
const BY_DOT: TableDefinition<Bytes, ()> = TableDefinition::new("by_dot");
const FROZEN: TableDefinition<Bytes, ()> = TableDefinition::new("frozen");
const RESERVATIONS: TableDefinition<Bytes, &str> = TableDefinition::new("reservations");
const REJECTIONS: TableDefinition<Bytes, Bytes> = TableDefinition::new("rejections");
const META: TableDefinition<&str, Bytes> = TableDefinition::new("meta");
const SITES: TableDefinition<u16, Bytes> = TableDefinition::new("sites");
const PERMISSIONS: TableDefinition<u16, Bytes> = TableDefinition::new("permissions");
const LOCAL: TableDefinition<Bytes, Bytes> = TableDefinition::new("local");

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
        get_decoded(&self.cells, cell, "register")
    }

    /// A flow brings a record's changes one after another: the creation read for the first
    /// serves the others (a write to the creation forgets it).
    fn created(&self, prefix: &[u8]) -> Result<Option<Creation>> {
        if let Some((p, c)) = self.last_created.borrow().as_ref()
            && p.as_slice() == prefix
        {
            return Ok(*c);
        }
        let c = self.cell(&keys::created_key(prefix))?.map(|r| Creation {
            stamp: r.stamp,
            dot: r.dot,
        });
        *self.last_created.borrow_mut() = Some((prefix.to_vec(), c));
        Ok(c)
    }
}

impl CellReader for ReadTables {
    fn cell(&self, cell: &[u8]) -> Result<Option<Register>> {
        get_decoded(&self.cells, cell, "register")
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
        // Create every table so that read transactions can open them all.
        db.write(|_| Ok(()))?;
        Ok(db)
    }

    /// Runs `f` in one write transaction and commits it if `f` succeeds.
    pub fn write<R>(&self, f: impl FnOnce(&mut WriteTables<'_>) -> Result<R>) -> Result<R> {
        let txn = self.db.begin_write()?;
        let out = {
            let mut tables = WriteTables::open(&txn)?;
            f(&mut tables)?
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
            for def in [CELLS, REJECTIONS, LOCAL] {
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
    cells: Table<'t, Bytes, Bytes>,
    /// The creation read last, by record prefix (see `created`).
    last_created: RefCell<Option<(Vec<u8>, Option<Creation>)>>,
    by_dot: Table<'t, Bytes, ()>,
    frozen: Table<'t, Bytes, ()>,
    reservations: Table<'t, Bytes, &'static str>,
    rejections: Table<'t, Bytes, Bytes>,
    meta: Table<'t, &'static str, Bytes>,
    sites: Table<'t, u16, Bytes>,
    permissions: Table<'t, u16, Bytes>,
    local: Table<'t, Bytes, Bytes>,
}

impl std::fmt::Debug for WriteTables<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteTables")
    }
}

impl<'t> WriteTables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self> {
        Ok(WriteTables {
            cells: txn.open_table(CELLS)?,
            last_created: RefCell::new(None),
            by_dot: txn.open_table(BY_DOT)?,
            frozen: txn.open_table(FROZEN)?,
            reservations: txn.open_table(RESERVATIONS)?,
            rejections: txn.open_table(REJECTIONS)?,
            meta: txn.open_table(META)?,
            sites: txn.open_table(SITES)?,
            permissions: txn.open_table(PERMISSIONS)?,
            local: txn.open_table(LOCAL)?,
        })
    }

    /// Forgets the cached creation when `cell` is that record's creation.
    fn forget_created(&mut self, cell: &[u8]) {
        let last = self.last_created.get_mut();
        if last
            .as_ref()
            .is_some_and(|(p, _)| keys::is_created_of(cell, p))
        {
            *last = None;
        }
    }

    /// Stores the winning register of a cell and moves the dot index from the old winner.
    pub fn put_cell(&mut self, cell: &[u8], old: Option<&Register>, new: &Register) -> Result<()> {
        self.forget_created(cell);
        if let Some(old) = old {
            self.by_dot
                .remove(keys::dot_key(old.dot, cell).as_slice())?;
        }
        self.cells.insert(cell, encode(new)?.as_slice())?;
        self.by_dot
            .insert(keys::dot_key(new.dot, cell).as_slice(), ())?;
        Ok(())
    }

    /// Every register (for whole-store repairs; the merge path reads cell by cell).
    pub fn all_cells(&self) -> Result<Vec<(Vec<u8>, Register)>> {
        collect_cells(self.cells.range::<&[u8]>(..)?, None)
    }

    /// Removes a register and its dot-index entry.
    pub fn remove_cell(&mut self, cell: &[u8], old: &Register) -> Result<()> {
        self.forget_created(cell);
        self.by_dot
            .remove(keys::dot_key(old.dot, cell).as_slice())?;
        self.cells.remove(cell)?;
        Ok(())
    }

    pub fn local_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.local.get(key)?.map(|g| g.value().to_vec()))
    }

    pub fn local_put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.local.insert(key, value)?;
        Ok(())
    }

    pub fn local_remove(&mut self, key: &[u8]) -> Result<()> {
        self.local.remove(key)?;
        Ok(())
    }

    pub fn local_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        collect_raw(self.local.range::<&[u8]>(start..end)?, limit)
    }

    pub fn is_frozen(&self, prefix: &[u8]) -> Result<bool> {
        Ok(self.frozen.get(prefix)?.is_some())
    }

    pub fn freeze(&mut self, prefix: &[u8]) -> Result<()> {
        self.frozen.insert(prefix, ())?;
        Ok(())
    }

    pub fn reservation(&self, prefix: &[u8]) -> Result<Option<String>> {
        Ok(self.reservations.get(prefix)?.map(|g| g.value().to_owned()))
    }

    pub fn set_reservation(&mut self, prefix: &[u8], holder: Option<&str>) -> Result<()> {
        match holder {
            Some(h) => {
                self.reservations.insert(prefix, h)?;
            }
            None => {
                self.reservations.remove(prefix)?;
            }
        }
        Ok(())
    }

    pub fn put_rejection(&mut self, dot: Dot, cell: &[u8], rejection: &Rejection) -> Result<()> {
        self.rejections.insert(
            keys::dot_key(dot, cell).as_slice(),
            encode(rejection)?.as_slice(),
        )?;
        Ok(())
    }

    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.meta.get(name)?.map(|g| g.value().to_vec()))
    }

    pub fn put_meta(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        self.meta.insert(name, bytes)?;
        Ok(())
    }

    pub fn put_site(&mut self, site: &Site) -> Result<()> {
        self.sites.insert(site.id.0, encode(site)?.as_slice())?;
        Ok(())
    }

    pub fn sites(&self) -> Result<Vec<Site>> {
        let mut out = Vec::new();
        for entry in self.sites.iter()? {
            let (_, v) = entry?;
            out.push(decode("site", v.value())?);
        }
        Ok(out)
    }

    pub fn put_denied(&mut self, site: SiteId, tables: &BTreeSet<String>) -> Result<()> {
        if tables.is_empty() {
            self.permissions.remove(site.0)?;
        } else {
            self.permissions
                .insert(site.0, encode(tables)?.as_slice())?;
        }
        Ok(())
    }

    pub fn all_denied(&self) -> Result<Vec<(SiteId, BTreeSet<String>)>> {
        let mut out = Vec::new();
        for entry in self.permissions.iter()? {
            let (k, v) = entry?;
            out.push((SiteId(k.value()), decode("permissions", v.value())?));
        }
        Ok(out)
    }

    /// Every register of one record (read-your-writes inside a transaction).
    pub fn record_cells(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Register)>> {
        let end = keys::prefix_end(prefix);
        collect_cells(self.cells.range::<&[u8]>(prefix..end.as_slice())?, None)
    }
}

fn get_decoded<T: DeserializeOwned>(
    table: &impl ReadableTable<Bytes, Bytes>,
    key: &[u8],
    what: &str,
) -> Result<Option<T>> {
    match table.get(key)? {
        Some(guard) => Ok(Some(decode(what, guard.value())?)),
        None => Ok(None),
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

fn collect_cells(
    range: redb::Range<'_, Bytes, Bytes>,
    limit: Option<usize>,
) -> Result<Vec<(Vec<u8>, Register)>> {
    let mut out = Vec::new();
    for entry in range {
        let (k, v) = entry?;
        out.push((k.value().to_vec(), decode("register", v.value())?));
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
    }
    Ok(out)
}

/// The tables of one read snapshot.
pub(crate) struct ReadTables {
    cells: ReadOnlyTable<Bytes, Bytes>,
    by_dot: ReadOnlyTable<Bytes, ()>,
    frozen: ReadOnlyTable<Bytes, ()>,
    reservations: ReadOnlyTable<Bytes, &'static str>,
    rejections: ReadOnlyTable<Bytes, Bytes>,
    meta: ReadOnlyTable<&'static str, Bytes>,
    local: ReadOnlyTable<Bytes, Bytes>,
}

impl std::fmt::Debug for ReadTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadTables")
    }
}

impl ReadTables {
    fn open(txn: ReadTransaction) -> Result<Self> {
        Ok(ReadTables {
            cells: txn.open_table(CELLS)?,
            by_dot: txn.open_table(BY_DOT)?,
            frozen: txn.open_table(FROZEN)?,
            reservations: txn.open_table(RESERVATIONS)?,
            rejections: txn.open_table(REJECTIONS)?,
            meta: txn.open_table(META)?,
            local: txn.open_table(LOCAL)?,
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

    /// Registers from `start` (inclusive) to `end` (exclusive), at most `limit`.
    pub fn cells_between(
        &self,
        start: &[u8],
        end: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Register)>> {
        collect_cells(self.cells.range::<&[u8]>(start..end)?, limit)
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

    /// The replicated content, entry by entry: `cells` in key order. Two converged stores
    /// return the same bytes.
    pub fn replicated_content(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for entry in self.cells.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
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

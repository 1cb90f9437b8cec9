//! [`Snapshot`]: a consistent, read-only view of a store.

use super::*;

/// Builds a record from its registers (all of one record, `Created` first); `None` if empty.
pub(super) fn assemble(table: &str, key: &str, cells: Vec<Cell>) -> Result<Option<RawRecord>> {
    let mut slots = Vec::with_capacity(cells.len());
    for (cell, reg) in cells {
        let ck = keys::decode_cell_key(&cell)
            .ok_or_else(|| Error::Corrupt(format!("undecodable cell key {cell:?}")))?;
        slots.push((ck.slot, reg));
    }
    assemble_slots(table, key, slots)
}

/// Builds a record from its registers by slot (`Created` first); `None` if empty.
fn assemble_slots(
    table: &str,
    key: &str,
    slots: impl IntoIterator<Item = (Slot, Register)>,
) -> Result<Option<RawRecord>> {
    let mut raw: Option<RawRecord> = None;
    for (slot, reg) in slots {
        match (slot, raw.as_mut()) {
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
    pub(super) tables: ReadTables,
    pub(super) schema: Arc<Schema>,
    /// The store's own site.
    pub(super) site: SiteId,
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

    /// Visible records of a table in key order, from `start_key` (inclusive), at most `limit` —
    /// `limit` of them when there are as many: deleted records are skipped, not counted (a
    /// short answer would read as the end to a reader paging through).
    pub fn scan(
        &self,
        table: &str,
        start_key: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<Record>> {
        let Some(limit) = limit else {
            let raws = self.scan_raw(table, start_key, None)?;
            return Ok(raws.iter().filter_map(RawRecord::visible).collect());
        };
        let mut out = Vec::new();
        let mut from = start_key.map(str::to_owned);
        while out.len() < limit {
            let want = limit - out.len();
            let raws = self.scan_raw(table, from.as_deref(), Some(want))?;
            out.extend(raws.iter().filter_map(RawRecord::visible));
            if raws.len() < want {
                break;
            }
            // On from the smallest key after the last one read.
            from = raws.last().map(|r| format!("{}\u{0}", r.key));
        }
        Ok(out)
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
        let start = match start_key {
            Some(k) => keys::record_prefix(table, k),
            None => table_start,
        };
        let mut out: Vec<RawRecord> = Vec::new();
        for (prefix, regs) in self.tables.records_between(&start, &end, limit)? {
            let corrupt = || Error::Corrupt(format!("undecodable record key {prefix:?}"));
            let ck = keys::decode_cell_key(&keys::created_key(&prefix)).ok_or_else(corrupt)?;
            let mut slots = Vec::with_capacity(regs.len());
            for (slot, reg) in regs {
                slots.push((keys::decode_slot(&slot).ok_or_else(corrupt)?, reg));
            }
            out.extend(assemble_slots(table, &ck.key, slots)?);
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

    /// The own commits outside `known` whose stamps this store keeps
    /// ([`WriteTx::keep_own_stamps`]) and of which no change would travel to the peer that
    /// knows `known`: their dot is in `held_back` (R7: their documents are reserved), or no
    /// register holds it any more (every change of theirs was written over). With their
    /// stamps, in order.
    pub fn own_commits_unsent(
        &self,
        known: &Knowledge,
        held_back: &Knowledge,
    ) -> Result<Vec<(u64, Stamp)>> {
        self.tables.own_commits_unsent(self.site, known, held_back)
    }

    /// The stamp of commit `dot` as a register it still carries holds it; `None` when it
    /// carries none here (never taken, or every change of it written over). A commit has one
    /// stamp: two stores that give one number different stamps numbered different commits
    /// alike (R1).
    pub fn commit_stamp(&self, dot: Dot) -> Result<Option<Stamp>> {
        self.tables.commit_stamp(dot)
    }

    /// How many own commits' stamps this store keeps ([`WriteTx::keep_own_stamps`]).
    pub fn own_stamps_kept(&self) -> Result<usize> {
        Ok(self.tables.own_stamps()?.len())
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

//! [`WriteTx`]: one local write transaction — the host's writes, the merge's entry points.

use super::merge::{Merge, MergedRecord};
use super::snapshot::assemble;
use super::*;

/// One local write transaction. Obtained from [`Store::write`].
pub struct WriteTx<'a, 't> {
    pub(super) store: &'a Store,
    pub(super) tables: &'a mut WriteTables<'t>,
    pub(super) state: &'a mut State,
    pub(super) holder: Option<&'a str>,
    pub(super) dot: Option<(Dot, Stamp)>,
    pub(super) changes: Vec<Change>,
    pub(super) change_index: HashMap<Vec<u8>, usize>,
    /// Whether the clock or knowledge moved without a local dot (a merge).
    pub(super) state_moved: bool,
    /// Whether [`WriteTx::apply_batch`] judges changes whose dots this store knows too.
    pub(super) merge_known: bool,
    /// Dots whose changes [`WriteTx::apply_batch`] judges though this store knows them.
    pub(super) merge_again: Option<Knowledge>,
    /// Dots [`WriteTx::apply_batch`] does not judge again by the permissions.
    pub(super) taken_before: Option<Knowledge>,
    /// Known dots whose changes [`WriteTx::apply_batch`] merges again by the registers alone.
    pub(super) by_value: Option<Knowledge>,
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
    /// This transaction's dot and stamp, taken at its first register write; refused while
    /// the store's own writes are held ([`WriteTx::hold_own_writes`]).
    fn dot(&mut self) -> Result<(Dot, Stamp)> {
        if let Some(d) = self.dot {
            return Ok(d);
        }
        if let Some(why) = &self.state.own_writes_held {
            return Err(Error::OwnWritesHeld(why.to_string()));
        }
        let dot = Dot {
            site: self.store.site.id,
            seq: self.state.next_seq,
        };
        let stamp = self.state.hlc.tick(self.store.clock.now_ms());
        self.state.next_seq += 1;
        self.dot = Some((dot, stamp));
        Ok((dot, stamp))
    }

    pub(super) fn finish(self) -> Result<Commit> {
        if let Some((dot, stamp)) = self.dot {
            self.state.knowledge.insert(dot);
            put_u64(self.tables, META_NEXT_SEQ, self.state.next_seq)?;
            if self.state.keep_own_stamps {
                self.tables.put_own_stamp(dot.seq, stamp.as_u64())?;
            }
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
        self.apply_batch(source, &[Incoming::New(change)], report)?;
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
        batch: &[Incoming],
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
        // Each record's key bytes once: a flow's changes to one record come together.
        let mut prefixes: Vec<Vec<u8>> = Vec::new();
        let mut items: Vec<(usize, usize, &Change)> = Vec::with_capacity(batch.len());
        let mut last: Option<&Change> = None;
        for (i, incoming) in batch.iter().enumerate() {
            report.outcomes.push(Outcome::AlreadyHad);
            if let Incoming::New(c) = incoming {
                if !last.is_some_and(|l| l.key == c.key && l.table == c.table) {
                    prefixes.push(keys::record_prefix(&c.table, &c.key));
                }
                last = Some(c);
                items.push((prefixes.len() - 1, base + i, c));
            }
        }
        if items.is_empty() {
            return Ok(());
        }
        self.state_moved = true;
        // Stable, so that each record's changes keep their order; records in key order, so
        // that the B-tree is walked forwards. A sender writes them so: usually no work.
        let prefix = |item: &(usize, usize, &Change)| prefixes.get(item.0).map(Vec::as_slice);
        if !items.is_sorted_by(|x, y| prefix(x) <= prefix(y)) {
            items.sort_by(|x, y| prefix(x).cmp(&prefix(y)));
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
            merge_known: self.merge_known,
            merge_again: self.merge_again.as_ref(),
            taken_before: self.taken_before.as_ref(),
            by_value: self.by_value.as_ref(),
        };
        let mut items = items.into_iter().peekable();
        while let Some((p, index, change)) = items.next() {
            let key = prefixes.get(p).map_or(&[][..], Vec::as_slice);
            let mut record = MergedRecord {
                held: merge.t.hold(key)?,
                prefix: key.to_vec(),
                frozen: None,
            };
            merge.one(&mut record, index, change)?;
            while let Some((_, index, change)) =
                items.next_if(|n| prefixes.get(n.0).map(Vec::as_slice) == Some(key))
            {
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

    /// From now on in this transaction, [`WriteTx::apply_batch`] judges and merges the changes
    /// whose dots this store knows as any other (what it holds comes out already had, by the
    /// registers): for a return of central restored from a backup, which may have judged a
    /// change differently from the central that was lost.
    pub fn merge_known_dots(&mut self) {
        self.merge_known = true;
    }

    /// From now on in this transaction, [`WriteTx::apply_batch`] judges the changes whose dots
    /// `dots` holds as any other, though this store knows those dots: central restored from a
    /// backup knows a commit some of whose changes it took from a remote relaying them, perhaps
    /// not all, and merges it again when its own site sends it whole.
    pub fn merge_again(&mut self, dots: Knowledge) {
        self.merge_again = Some(dots);
    }

    /// From now on in this transaction, [`WriteTx::apply_batch`] merges again by the registers
    /// (last-writer-wins) the changes whose dots `dots` holds, though this store knows them; a
    /// rule refusing one makes it already had, logged nowhere: this store judged that dot when
    /// it first learnt it. Central restored from a backup may know a dot only from its site's
    /// word (a site that stamped the write again, below it, and no longer holds it), while the
    /// lost central took it and a remote holding it sends it back.
    pub fn merge_by_value(&mut self, dots: Knowledge) {
        self.by_value = Some(dots);
    }

    /// From now on in this transaction, [`WriteTx::apply_batch`] does not judge again by the
    /// permissions (R4/R9) the changes whose dots `dots` holds: central restored from a backup
    /// takes back from the remotes what the lost central had taken under the permissions in
    /// force then, which may have changed since (the other rules are judged as always).
    pub fn taken_before(&mut self, dots: Knowledge) {
        self.taken_before = Some(dots);
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

    /// For a store restored from a backup: the commits this site made after the backup are
    /// lost here, but other sites received them. Its sequence of commits moves `by` ahead, so
    /// that no new commit reuses the dot of a lost one, and the lost ones — own dots between
    /// the old and the new next number that this store does not know — are taken back from the
    /// other sites that send them, although a remote otherwise sends only its own changes (R1).
    /// The jump starts from `past` when that is higher than the next number: restoring the
    /// same backup twice must not land on the same numbers (the caller passes something that
    /// grows faster than the numbers it gives, like the time shifted left).
    pub fn skip_sequence(&mut self, by: u64, past: u64) -> Result<()> {
        let from = self.state.next_seq;
        self.state.next_seq = from.max(past).saturating_add(by);
        let lost = (
            self.state.lost_own.map_or(from, |(a, _)| a.min(from)),
            self.state.next_seq,
        );
        self.state.lost_own = Some(lost);
        let mut bytes = lost.0.to_be_bytes().to_vec();
        bytes.extend_from_slice(&lost.1.to_be_bytes());
        self.tables.put_meta(META_LOST_OWN, &bytes)?;
        put_u64(self.tables, META_NEXT_SEQ, self.state.next_seq)
    }

    /// Moves this store's clock past `stamp`, a stamp it is told another site holds without
    /// merging the change that carries it: a central put back from a backup learning what the
    /// lost central had sent or taken. Its next commits are stamped after it, as the lost
    /// central's were, and its clock's high-water mark, which a return states, passes it.
    pub fn observe_stamp(&mut self, stamp: Stamp) {
        if stamp > self.state.hlc.last() {
            self.state.hlc.observe(stamp);
            self.state_moved = true;
        }
    }

    /// Ends the taking back of this site's commits lost in a restore (see
    /// [`WriteTx::skip_sequence`]): from now on a remote sending one is refused (R1) like any
    /// change it did not make. Called once every remote has sent back what it had.
    pub fn forget_lost_own(&mut self) -> Result<()> {
        if self.state.lost_own.take().is_some() {
            self.tables.put_meta(META_LOST_OWN, &[])?;
        }
        Ok(())
    }

    /// From this transaction on, the store keeps the stamp of each of its own commits (this
    /// one's included), until [`WriteTx::forget_own_stamps`] drops it: a remote site's store
    /// can then say, of a commit of which no change is sent (written over, or held back), how
    /// it was stamped ([`Snapshot::own_commits_unsent`]). A central site's store keeps none:
    /// nothing would ever confirm them, so this does nothing there.
    pub fn keep_own_stamps(&mut self) -> Result<()> {
        if self.store.site.role == Role::Remote && !self.state.keep_own_stamps {
            self.state.keep_own_stamps = true;
            self.tables.put_meta(META_KEEP_OWN_STAMPS, &[1])?;
        }
        Ok(())
    }

    /// Drops the kept stamps of own commits that `known` holds (those the peer they were kept
    /// for has confirmed receiving); how many. The peer holds those stamps now: a restamp
    /// stamps after them ([`Store::restamp_ahead`]) — but for the commits a restamp replaced,
    /// and those stamped after `peer_clock`, the peer's clock (its high-water mark) when it
    /// confirmed them: the peer confirms numbers, and a commit of which no change reached it
    /// (written over by one held back with a reserved document, R7) left no stamp there, while
    /// every stamp the peer took moved its clock past it. `None`: the peer did not say (an
    /// earlier version), every confirmed stamp counts.
    pub fn forget_own_stamps(
        &mut self,
        known: &Knowledge,
        peer_clock: Option<Stamp>,
    ) -> Result<usize> {
        let own = self.store.site.id;
        let gone = self
            .tables
            .forget_own_stamps(|seq| known.contains(Dot { site: own, seq }))?;
        if gone.is_empty() {
            return Ok(0);
        }
        let replaced = super::restamped(self.tables)?;
        let newest = gone
            .iter()
            .filter(|(seq, stamp)| {
                !replaced.contains(Dot {
                    site: own,
                    seq: *seq,
                }) && peer_clock.is_none_or(|clock| Stamp::from_u64(*stamp) <= clock)
            })
            .map(|(_, stamp)| *stamp)
            .max();
        if let Some(stamp) = newest {
            self.state.settle(Stamp::from_u64(stamp));
            self.state_moved = true;
        }
        // Their kept stamps gone, they need no mark any more.
        let mut forgotten = Knowledge::new();
        for (seq, _) in &gone {
            forgotten.insert(Dot {
                site: own,
                seq: *seq,
            });
        }
        let left = replaced.difference(&forgotten);
        if left != replaced {
            super::put_restamped(self.tables, &left)?;
        }
        Ok(gone.len())
    }

    /// Holds this store's own writes (`Some(why)`) or lets them go again (`None`): while held,
    /// a write transaction that would write a register — a dot of this site's — fails with
    /// [`Error::OwnWritesHeld`] saying `why`, and nothing of it is written; merges, reads and
    /// local-only keys go on. Kept across a reopen. For a central found put back from a backup
    /// without its restore: every number it would give next may be one the lost central gave.
    pub fn hold_own_writes(&mut self, why: Option<&str>) -> Result<()> {
        // An empty reason would read as "not held" after a reopen.
        let why = why.map(|w| if w.is_empty() { "held" } else { w });
        let held: Option<Arc<str>> = why.map(Arc::from);
        if held == self.state.own_writes_held {
            return Ok(());
        }
        self.tables
            .put_meta(META_OWN_WRITES_HELD, why.unwrap_or_default().as_bytes())?;
        self.state.own_writes_held = held;
        Ok(())
    }

    /// The number this site's next commit will take: every own dot of this store is below it.
    pub fn next_own_seq(&self) -> u64 {
        self.state.next_seq
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

    /// Records as known the dots of the other sites' changes a remote relayed in a flow just
    /// merged (each a whole commit as that remote holds it), while a restore from a backup is
    /// under way — the only time they are taken ([`WriteTx::skip_sequence`]); outside one, nothing.
    /// Only what was carried: a remote may know a dot and no longer hold anything of it (its
    /// registers superseded, or a document's other creator's writes dropped), and central must
    /// still judge that change when its own site sends it again.
    pub fn add_relayed(&mut self, source: SiteId, carried: &Knowledge) -> Result<()> {
        if self.state.lost_own.is_none() {
            return Ok(());
        }
        if !carried.is_well_formed() {
            return Err(Error::Schema("malformed knowledge ranges".into()));
        }
        let own = self.store.site.id;
        for (site, set) in carried.iter() {
            if site != own && site != source {
                for (a, b) in set.ranges() {
                    self.state.knowledge.insert_range(site, *a, *b);
                }
            }
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
        let prefix = keys::record_prefix(table, key);
        let cell = keys::cell_key(&prefix, slot);
        let Some(old) = self.tables.cell(&cell)? else {
            return Ok(false);
        };
        if old.dot != expected {
            return Ok(false);
        }
        if *slot == Slot::Created && to.is_none() {
            // The record's creation refused, and central holds no such record: what this site
            // wrote to it since (not sent yet, or refused in turn) goes with it — a register
            // left without a creation would make every read of the table, and every emission,
            // fail. Another site's register here would be one central sent, of a record it
            // holds: not put back then.
            let own = self.store.site.id;
            let others = self.tables.record_cells(&prefix)?;
            if others.iter().any(|(_, r)| r.dot.site != own) {
                return Ok(false);
            }
            for (other, reg) in others {
                if other != cell {
                    self.tables.remove_cell(&other, &reg)?;
                }
            }
        }
        match to {
            Some(reg) => {
                self.state.hlc.observe(reg.stamp);
                self.state.settle(reg.stamp);
                self.state_moved = true;
                self.tables.put_cell(&cell, Some(&old), reg)?;
            }
            None => self.tables.remove_cell(&cell, &old)?,
        }
        self.state.rewrites += 1;
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

    /// The highest stamp issued or observed, as this transaction sees it (see
    /// [`Store::clock_high_water`]).
    pub fn clock_high_water(&self) -> Stamp {
        self.state.hlc.last()
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

    /// A new site-unique key for `table`, like `BSOC-000123`: the store's counter for the
    /// table, moved past every key of that form the store holds. A store set up again from a
    /// bootstrap holds what its lost predecessor created and sent, under numbers its own
    /// counter has not counted: given again, a key would merge a new record into an old one at
    /// every site, silently.
    ///
    /// Refused ([`Error::KeysAfterRestore`]) while this store takes back, from the other sites,
    /// what it made after the backup it was put back from ([`WriteTx::skip_sequence`]): a
    /// record it created then may be among it, under any number counted since the backup.
    pub fn new_key(&mut self, table: &str) -> Result<String> {
        table_def(&self.store.schema, table)?;
        if self.state.lost_own.is_some() {
            return Err(Error::KeysAfterRestore {
                table: table.to_owned(),
            });
        }
        let name = format!("{META_KEY_SEQ_PREFIX}{table}");
        let mut n = get_u64(self.tables, &name)?.unwrap_or(0);
        let key = loop {
            n += 1;
            let key = format!("{}-{n:06}", self.store.site.code);
            let prefix = keys::record_prefix(table, &key);
            if self.tables.record_cells(&prefix)?.is_empty() {
                break key;
            }
        };
        put_u64(self.tables, &name, n)?;
        Ok(key)
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
        // Every return names every site: one known as it is costs no write.
        if self.state.sites.get(site.id) == Some(&site) {
            return Ok(());
        }
        Arc::make_mut(&mut self.state.sites).add(site.clone())?;
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
        let unchanged = match self.state.denied.get(&site) {
            Some(now) => *now == tables,
            None => tables.is_empty(),
        };
        if unchanged {
            return Ok(());
        }
        self.tables.put_denied(site, &tables)?;
        if tables.is_empty() {
            Arc::make_mut(&mut self.state.denied).remove(&site);
        } else {
            Arc::make_mut(&mut self.state.denied).insert(site, tables);
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
        if matches!(slot, Slot::Field(_))
            && let Some((dot, _)) = self.dot
            && self
                .tables
                .cell(&keys::cell_key(&prefix, &Slot::Tombstone))?
                .is_some_and(|t| t.dot == dot && t.value == Value::Bool(true))
        {
            return Err(Error::WrittenAfterDelete {
                table: table.to_owned(),
                key: key.to_owned(),
            });
        }
        let (dot, stamp) = self.dot()?;
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

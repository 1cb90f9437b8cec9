//! [`ChangesLacking`]: the stream of changes a peer lacks, walked from the dot index.

use super::*;

/// A stream of the changes a peer lacks, from one snapshot; see [`Store::changes_lacking`].
pub struct ChangesLacking {
    pub(super) tables: ReadTables,
    /// The store's own site.
    pub(super) site: SiteId,
    pub(super) ranges: VecDeque<(SiteId, u64, u64)>,
    pub(super) current: Option<crate::storage::DotRange>,
    pub(super) exclude_reserved: bool,
    pub(super) knowledge: Knowledge,
    pub(super) left_out: Knowledge,
    /// The changes of the dot-index entry being read, not handed out yet.
    pub(super) pending: VecDeque<Change>,
    /// The dots held back (R7, [`ChangesLacking::held_back`]), read once at the first dot met.
    pub(super) held: Option<Knowledge>,
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

    /// [`Snapshot::own_commits_unsent`] read in this stream's snapshot, `held_back` being what
    /// [`ChangesLacking::held_back`] gave (the caller has it already for the flow's header):
    /// what a flow's header says of the commits of which no change travels agrees with the
    /// changes it carries, whatever was committed since.
    pub fn own_commits_unsent(
        &self,
        known: &Knowledge,
        held_back: &Knowledge,
    ) -> Result<Vec<(u64, Stamp)>> {
        self.tables.own_commits_unsent(self.site, known, held_back)
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

    /// Whether `dot` is held back (R7): a register of a reserved document carries it.
    fn is_held(&mut self, dot: crate::Dot) -> Result<bool> {
        if self.held.is_none() {
            self.held = Some(self.held_back()?);
        }
        Ok(self.held.as_ref().is_some_and(|h| h.contains(dot)))
    }

    /// The changes of one dot-index entry: every register of the record that the dot holds,
    /// in slot order — none when the dot is held back (R7): a commit that wrote a reserved
    /// document is held whole, the other records it wrote included, so that a receiver never
    /// holds part of a commit whose number it does not know.
    fn changes_at(&mut self, dot_key: &[u8]) -> Result<()> {
        let corrupt = || Error::Corrupt(format!("dot index entry {dot_key:?}"));
        let (dot, prefix) = keys::decode_dot_key(dot_key).ok_or_else(corrupt)?;
        if self.exclude_reserved && self.is_held(dot)? {
            self.left_out.insert(dot);
            return Ok(());
        }
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
        let before = self.pending.len();
        for (slot, reg) in regs {
            if reg.dot != dot {
                continue;
            }
            let slot = keys::decode_slot(&slot).ok_or_else(corrupt)?;
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

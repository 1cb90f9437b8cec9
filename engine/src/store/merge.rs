//! The merge of received changes: a frame's changes record by record, the guards, then
//! last-writer-wins on the record taken out whole.

use super::*;

/// The state of one [`Store::apply`].
pub(super) struct Merge<'a, 't> {
    pub(super) own: SiteId,
    pub(super) schema: &'a Schema,
    pub(super) broken_rules: &'a [Rule],
    pub(super) t: &'a mut WriteTables<'t>,
    pub(super) state: &'a mut State,
    /// The site the changes came from, and its role.
    pub(super) source: SiteId,
    pub(super) source_role: Role,
    pub(super) now_ms: u64,
    pub(super) skew_ms_max: u64,
    pub(super) report: &'a mut MergeReport,
    /// Stamps ahead of the clock, with the index of their change (put in input order at the
    /// end of the batch).
    pub(super) ahead: Vec<(usize, AheadReport)>,
    /// Judge changes whose dots the store knows too ([`super::WriteTx::merge_known_dots`]).
    pub(super) merge_known: bool,
    /// Judge changes whose dots are in this set, though the store knows them
    /// ([`super::WriteTx::merge_again`]).
    pub(super) merge_again: Option<&'a Knowledge>,
    /// Dots a central lost in a restore had taken: not judged again by the permissions
    /// ([`super::WriteTx::taken_before`]).
    pub(super) taken_before: Option<&'a Knowledge>,
    /// Known dots merged again by the registers alone ([`super::WriteTx::merge_by_value`]).
    pub(super) by_value: Option<&'a Knowledge>,
}

/// The record a merge is working on: taken from the store once for all its changes of a batch.
pub(super) struct MergedRecord {
    pub(super) prefix: Vec<u8>,
    pub(super) held: Held,
    /// Whether the document is frozen here (R6), read when first needed.
    pub(super) frozen: Option<bool>,
}

impl Merge<'_, '_> {
    /// Merges one change into its record; its outcome goes to `index` of the report.
    pub(super) fn one(
        &mut self,
        record: &mut MergedRecord,
        index: usize,
        change: &Change,
    ) -> Result<()> {
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
        change: &Change,
    ) -> Result<Outcome> {
        let known = self.state.knowledge.contains(change.dot);
        let by_value = known && self.by_value.is_some_and(|k| k.contains(change.dot));
        if !self.merge_known
            && known
            && !by_value
            && !self.merge_again.is_some_and(|k| k.contains(change.dot))
        {
            return Ok(Outcome::AlreadyHad);
        }
        match self.judge(change, record)? {
            // Judged when this store first learnt its dot.
            Err(_) if by_value => Ok(Outcome::AlreadyHad),
            Err(refusal) => {
                let cell = keys::cell_key(&record.prefix, &change.slot);
                let rule = refusal.rule;
                let rejection = Rejection {
                    source: self.source,
                    change: change.clone(),
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
                self.state.settle(change.stamp);
                let rec = &mut record.held.rec;
                // The creation merges as a minimum, whatever the field register's fate: every
                // change carries it, so a record's creator is known from any of its changes.
                let creation_outcome = match created {
                    None => {
                        if adopt && let Some((stamp, dot)) = rec.get(&keys::CREATED_SLOT) {
                            // Registers dropped below: no new dot shows it.
                            self.state.rewrites += 1;
                            let (own, central) = (self.own, self.source);
                            if dot.site == own {
                                self.log_replaced_creation(change, Creation { stamp, dot })?;
                            }
                            // What the other creator's site wrote to its document is not in
                            // central's (R5), so not here either: a store that took the other
                            // creation from central, before central was restored from a backup
                            // and judged again, would otherwise keep it for ever. This site's own
                            // writes stay until central's refusal of them comes back (reverted,
                            // into the rejection log, not lost from view).
                            let creator = change.created.site();
                            rec.drop_written_by(&keys::CREATED_SLOT, |s| {
                                s != own && s != central && s != creator
                            });
                        }
                        let c = change.created;
                        rec.put(&keys::CREATED_SLOT, c.stamp, c.dot, &Value::Null)?;
                        record.held.dirty = true;
                        self.rewritten(known);
                        Outcome::Applied
                    }
                    Some(c) if c == change.created => Outcome::AlreadyHad,
                    Some(c) if change.created < c && !is_document => {
                        let c = change.created;
                        rec.put(&keys::CREATED_SLOT, c.stamp, c.dot, &Value::Null)?;
                        record.held.dirty = true;
                        self.rewritten(known);
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
                    seq: dot.seq,
                });
                match old_marker {
                    Some(m) if m == new_marker => Ok(Outcome::AlreadyHad),
                    Some(m) if m > new_marker => Ok(Outcome::Superseded),
                    _ => {
                        rec.put(&slot, change.stamp, change.dot, &change.value)?;
                        record.held.dirty = true;
                        self.rewritten(known);
                        Ok(Outcome::Applied)
                    }
                }
            }
        }
    }

    /// A register written under a dot this store already knew (a change merged again): a
    /// reader following the store by the dots it has seen cannot see it ([`Store::rewrites`]).
    fn rewritten(&mut self, known: bool) {
        if known {
            self.state.rewrites += 1;
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

    /// A change a remote relays that central takes while a restore from a backup is under
    /// way: its own commits lost with the restore, and the other sites' changes it lacks —
    /// a site removed or reinstalled since the backup can no longer send them itself.
    fn is_relayed(&self, change: &Change) -> bool {
        self.is_lost_own(change) || (self.state.lost_own.is_some() && change.dot.site != self.own)
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
        if self.source_role == Role::Remote && origin != self.source && !self.is_relayed(change) {
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
            let reason = if change.created.site() == m.site() {
                // The same site created it twice: a creation stamped again (restamp) after
                // central took the first, which stays the document's.
                format!(
                    "the document was created already by site {} itself (commit {}); this later \
                     creation of it (commit {}) is not taken",
                    m.site(),
                    m.dot,
                    change.created.dot
                )
            } else {
                format!(
                    "the change claims the document was created by site {}, but it was created by site {}",
                    change.created.site(),
                    m.site()
                )
            };
            return Ok(Err(refuse(Rule::R5, origin, reason)));
        }
        let verdict = guard::check(&guard::Write {
            table: def,
            key: &change.key,
            slot: &change.slot,
            writer,
            creator: created.map_or(change.created.site(), |m| m.site()),
            // R6 binds a remote's own writes, judged locally; central already judged its own.
            // The document's creating commit is never a write after its sync (central merges
            // it again when it took it in part from a relay after a restore).
            frozen: self.source_role != Role::Central
                && def.freezes()
                && created.is_none_or(|m| m.dot != change.dot)
                && match record.frozen {
                    Some(f) => f,
                    None => *record.frozen.insert(self.t.is_frozen(&record.prefix)?),
                },
            // R4/R9 are central's to judge, by the permissions in force when it took the
            // change: what it sends passed them. A remote's copy of the permissions may be
            // older (a permission granted since reaches it with the same return): refusing
            // here would leave it without the change for ever. Nor does central judge again
            // what it had taken before a restore, under permissions that may have changed
            // since: the remotes that hold it would keep it for ever.
            denied: self.source_role != Role::Central
                && !self.taken_before.is_some_and(|k| k.contains(change.dot))
                && self
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

//! Processing emissions (A1): one transaction per emission applies it with the guards keyed on
//! the sender recorded at receipt, freezes what it created (R6), keeps refusals for the next
//! return and records the acknowledgements of returns; an emission stamped too far ahead is
//! held ([`crate::journal::Hold`]) instead.

use super::*;
use crate::frames::Frames;

/// What processing one emission did.
#[derive(Clone, Debug, PartialEq)]
pub struct Processed {
    /// The emission.
    pub id: FlowId,
    /// The merge's outcomes.
    pub report: MergeReport,
}

/// What central holds of `remote`'s own changes: the acknowledgement the network gives a remote
/// before each emission (`GET /v1/acknowledgement`), so that a remote that gets no return (M3)
/// stops re-sending what central has.
pub fn acknowledgement(store: &Store, remote: SiteId) -> Result<Acknowledgement> {
    // While a restore is under way, not its commits central took only from other remotes
    // relaying them: it sends them whole (`record_relayed_dots`).
    // The knowledge first: a dot relayed meanwhile is in the set read after it.
    let known = store.knowledge().only(remote);
    let ack = known.difference(&relayed_dots(&store.snapshot()?)?);
    // The clock after the knowledge: it has passed every stamp of what that holds.
    Ok(Acknowledgement {
        ack,
        clock: Some(store.clock_high_water()),
    })
}

/// Central's answer to a remote asking what it holds of the remote's own changes (M3;
/// `GET /v1/acknowledgement` sends it as JSON).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Acknowledgement {
    /// What central holds of the remote's own changes.
    pub ack: Knowledge,
    /// Central's clock (its high-water mark) when it answered: of the commits it confirms, the
    /// remote counts as held here only the stamps up to it
    /// ([`outpost_engine::WriteTx::forget_own_stamps`]). Absent from a central of an earlier
    /// version (every confirmed stamp counts).
    #[serde(default)]
    pub clock: Option<outpost_engine::Stamp>,
}

/// Marks the start of an emission's processing: execution start and count (J1). A processing
/// cut off after this (a crash) shows as a second execution when it is redone.
pub fn begin_processing(store: &Store, id: FlowId) -> Result<()> {
    let now = store.now_ms();
    local::write(store, |tx| {
        let mut row = crate::journal::get(tx, id)?.ok_or(Error::UnknownFlow(id))?;
        // A start after a start that never ended, and did not fail: the one before was cut off
        // (a stop or a crash). Retries of an emission whose processing fails are not that.
        let cut_off = row.exec_start_ms.is_some()
            && row.exec_end_ms.is_none()
            && !crate::monitor_records::failed(tx, id)?;
        row.executions += 1;
        row.exec_start_ms = Some(now);
        row.exec_end_ms = None;
        if cut_off {
            crate::monitor_records::record_event(
                tx,
                &crate::monitor_records::Event {
                    kind: crate::monitor_records::EventKind::ExecutedAgain,
                    at_ms: now,
                    site: row.site,
                    flow: id,
                    text: format!(
                        "processing of emission {id} started again (execution {}): the one \
                         before was cut off (a stop or a crash) and is redone whole",
                        row.executions
                    ),
                },
            )?;
        }
        crate::journal::put(tx, &row)
    })
}

/// Processes every file-ready emission not yet processed (including one whose processing was
/// cut off), in the order received. An emission that cannot be applied (its content is refused)
/// keeps its error in the journal and stays pending; the others are processed all the same. A
/// failure of the store itself stops the run.
pub fn process_ready(store: &Store) -> Result<Vec<Processed>> {
    check_central(store)?;
    let pending = pending_emissions(store)?;
    let mut out = Vec::new();
    for id in pending {
        match process(store, id) {
            Ok(p) => out.push(p),
            Err(e) if e.is_the_flows() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Processes one emission: one write transaction applies it with the guards keyed on the site
/// that sent it, freezes the documents received from their creator (R6), records refusals for
/// the next return, the acknowledgements of returns, and the journal's end of execution.
///
/// An emission with a change stamped further ahead of central's clock than the store's bound
/// (and not already known) is held instead: nothing of it is applied, it stays pending, and its
/// journal row says so — the alert for the person responsible. Being held is no execution: the
/// row's count and start are put back. A held emission is not tried again, even once time has
/// caught up with its stamps: its site may have stamped its changes again meanwhile
/// (`remote::restamp`), and the old stamps must then never be applied anywhere. It is
/// superseded instead by the next emission of its site that central processes, which carries
/// everything it did (emissions are cumulative) with the stamps as they are then.
pub fn process(store: &Store, id: FlowId) -> Result<Processed> {
    let before = crate::journal::row(store, id)?.ok_or(Error::UnknownFlow(id))?;
    if let Hold::Quarantined { reason } = &before.hold {
        return Err(Error::Quarantined(reason.clone()));
    }
    begin_processing(store, id)?;
    match finish_processing(store, id) {
        Ok(p) => Ok(p),
        Err(e) => {
            let text = e.to_string();
            let held = match &e {
                Error::Quarantined(reason) => Some(reason.clone()),
                _ => None,
            };
            local::write(store, |tx| {
                if let Some(mut row) = crate::journal::get(tx, id)? {
                    row.error = Some(text.clone());
                    if held.is_none() {
                        crate::monitor_records::set_failed(tx, id, true)?;
                    }
                    if let Some(reason) = held.clone() {
                        row.hold = Hold::Quarantined { reason };
                        row.executions = before.executions;
                        row.exec_start_ms = before.exec_start_ms;
                        row.exec_end_ms = before.exec_end_ms;
                        crate::monitor_records::record_event(
                            tx,
                            &crate::monitor_records::Event {
                                kind: crate::monitor_records::EventKind::Quarantined,
                                at_ms: store.now_ms(),
                                site: row.site,
                                flow: id,
                                text: format!("emission {id} {text}"),
                            },
                        )?;
                    }
                    crate::journal::put(tx, &row)?;
                }
                Ok(())
            })?;
            Err(e)
        }
    }
}

/// How the reason of an emission held for clock skew while central is restored from a backup
/// says so (it was made before its remote heard of the restore).
pub const HELD_IN_RESTORE: &str = "while central is restored from a backup";

/// Takes out of the pending list the emissions of `id`'s site, older than it, held for clock
/// skew: `id` carried everything they did.
pub(super) fn supersede_held(tx: &mut outpost_engine::WriteTx<'_, '_>, id: FlowId) -> Result<()> {
    for (key, held) in local::tx_all::<FlowId>(tx, local::PENDING)? {
        if held.site != id.site || held.seq >= id.seq {
            continue;
        }
        let Some(mut row) = crate::journal::get(tx, held)? else {
            continue;
        };
        let Hold::Quarantined { reason } = &row.hold else {
            continue;
        };
        let when = if reason.contains(HELD_IN_RESTORE) {
            format!(" {HELD_IN_RESTORE}")
        } else {
            String::new()
        };
        row.hold = Hold::Superseded;
        row.error = Some(format!(
            "superseded by emission {id} while held for clock skew{when}: never applied; its \
             changes came again in that emission"
        ));
        crate::journal::put(tx, &row)?;
        tx.local_remove(&key)?;
    }
    Ok(())
}

/// The reason to hold `change` from the site `code`, if it is stamped beyond the bound ahead of
/// central's clock at `arrived_ms` (when the emission reached central: a remote that restamped
/// since judged its writes by its own clock then, and one stamped again below an old stamp
/// must not see the old one taken later, when it is no longer as far ahead) and central does
/// not know it already (`rejudged`: it knows it, yet merges it again by value during its
/// restore — judged as new for its time). A stamp within the bound of
/// `vouched` is never held: `vouched` is the newest stamp central had when it last sent this
/// remote a return or its bootstrap (or of central's own changes this emission brings back): a
/// shop that took central's stamps while central's own clock ran ahead stamps its writes just
/// after them, whatever its own clock says (R2), and is not to blame for it.
pub(super) fn quarantine_reason(
    store: &Store,
    tx: &outpost_engine::WriteTx<'_, '_>,
    vouched: outpost_engine::Stamp,
    code: &str,
    change: &outpost_engine::Change,
    arrived_ms: u64,
    rejudged: bool,
) -> Option<String> {
    let ahead = outpost_engine::hlc::ahead_ms(change.stamp, arrived_ms);
    if ahead <= store.skew_ms_max()
        || change.stamp.physical_ms() <= beyond_vouched(store, vouched)
        || (tx.knowledge().contains(change.dot) && !rejudged)
    {
        return None;
    }
    Some(format!(
        "{code}'s changes are stamped {} ahead of central's clock (the bound is {}): its clock \
         is probably wrong (or was, when the backup its store was put back from was taken). \
         Nothing of this emission was applied; it is held until {code}'s clock is set right \
         and `outpost remote restamp` has run there",
        human_ms(ahead),
        human_ms(store.skew_ms_max())
    ))
}

/// R2: `change`, of the emission's site, lost at central to a write of that same site stamped
/// later, which the emission says its store knows — yet the store wrote `change` after it, so
/// it no longer holds it, and skips it as known in every return: a difference of values for
/// ever. Only a restamp does that (it stamps again, lower, a write central took from an
/// emission still on its way, or not yet confirmed). The change is returned refused, with
/// central's register, which the store takes ([`crate::remote`] reverts a refused change).
fn lost_to_its_own_write(
    tx: &outpost_engine::WriteTx<'_, '_>,
    header: &FlowHeader,
    change: &outpost_engine::Change,
    now: u64,
) -> Result<Option<Rejection>> {
    let Some(raw) = tx.raw_record(&change.table, &change.key)? else {
        return Ok(None);
    };
    // A record's creation is its earliest (a restamp of a creation central took stamps it
    // again after the old one, or with its stamp and a later number); any other register's
    // value its latest.
    let (winner, earliest) = match &change.slot {
        Slot::Created => (
            Some(outpost_engine::Register {
                value: outpost_engine::Value::Null,
                stamp: raw.created.stamp,
                dot: raw.created.dot,
            }),
            true,
        ),
        Slot::Tombstone => (raw.tombstone, false),
        Slot::Field(f) => (raw.fields.get(f).cloned(), false),
    };
    let Some(winner) = winner.filter(|w| {
        w.dot.site == change.dot.site
            && w.dot != change.dot
            && if earliest {
                // By stamp, then number, as the merge orders creations: a restamp far behind
                // may give the new creation the old one's stamp.
                (w.stamp, w.dot) < (change.stamp, change.dot)
            } else {
                w.stamp > change.stamp
            }
            && header.knowledge.contains(w.dot)
    }) else {
        return Ok(None);
    };
    Ok(Some(Rejection {
        source: header.source,
        change: change.clone(),
        refusal: outpost_engine::Refusal {
            rule: outpost_engine::Rule::R2,
            writer: change.dot.site,
            table: change.table.clone(),
            key: change.key.clone(),
            field: match &change.slot {
                Slot::Field(f) => Some(f.clone()),
                _ => None,
            },
            reason: if earliest {
                format!(
                    "this record's creation by this site, stamped {} earlier (commit {}), is \
                     at central: this site stamped it again, later (restamp), after an emission \
                     carrying it had left; a record's earliest creation is kept, and this site \
                     takes central's",
                    human_ms(
                        change
                            .stamp
                            .physical_ms()
                            .saturating_sub(winner.stamp.physical_ms())
                    ),
                    winner.dot
                )
            } else {
                format!(
                    "a write of this site stamped {} later (commit {}) holds this register at \
                     central: this site stamped it again, lower (restamp), after an emission \
                     carrying it had left; the latest by date/time is kept (R2), and this site \
                     takes central's value",
                    human_ms(
                        winner
                            .stamp
                            .physical_ms()
                            .saturating_sub(change.stamp.physical_ms())
                    ),
                    winner.dot
                )
            },
        },
        at_ms: now,
    }))
}

/// The newest stamp a central sent the emission's store or took from it, as the emission says
/// (`incarnation::SETTLED_SETTING`); zero when it says none, or nothing readable. A claim,
/// not checked: the hold guards against wrong clocks, whose stores never get such stamps
/// beyond what a central took.
fn settled_claim(header: &FlowHeader) -> outpost_engine::Stamp {
    header
        .config
        .as_ref()
        .and_then(|c| c.settings.get(crate::incarnation::SETTLED_SETTING))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(outpost_engine::Stamp::ZERO, outpost_engine::Stamp::from_u64)
}

/// The physical time up to which stamps are vouched for by `vouched`, with the clock-skew bound
/// as margin (a shop that made many commits on central's stamps carries its logical counter
/// into the milliseconds).
fn beyond_vouched(store: &Store, vouched: outpost_engine::Stamp) -> u64 {
    if vouched == outpost_engine::Stamp::ZERO {
        return 0;
    }
    vouched.physical_ms().saturating_add(store.skew_ms_max())
}

/// A duration for people: 3.0 d, 4.5 h, 5 min, 40 s.
pub(crate) fn human_ms(ms: u64) -> String {
    let f = ms as f64;
    match ms {
        86_400_000.. => format!("{:.1} d", f / 86_400_000.0),
        3_600_000.. => format!("{:.1} h", f / 3_600_000.0),
        60_000.. => format!("{} min", ms / 60_000),
        _ => format!("{} s", ms / 1_000),
    }
}

pub(super) fn finish_processing(store: &Store, id: FlowId) -> Result<Processed> {
    let row = crate::journal::row(store, id)?.ok_or(Error::UnknownFlow(id))?;
    let receipt = row.receipt.ok_or(Error::UnknownFlow(id))?;
    // The sender is the site the journal recorded at receipt (authenticated when the transport
    // could), never re-read from the file.
    let sender = row.site;
    let reader = FlowReader::open(StoredFlow::open(store, receipt)?)?;
    let header = reader.header().clone();
    let now = store.now_ms();
    // Stamps are judged by central's clock when the emission arrived (or now, if the clock was
    // set back since).
    let arrived_ms = row.file_ready_ms.unwrap_or(now).min(now);
    let schema = store.schema().clone();
    let sites = store.sites();
    let code = sites
        .get(sender)
        .map_or_else(|| sender.to_string(), |s| s.code.to_string());
    let remotes: Vec<SiteId> = sites
        .iter()
        .filter(|s| !s.is_central())
        .map(|s| s.id)
        .collect();
    let report = local::write(store, |tx| {
        let mut report = MergeReport::default();
        // Documents received from their creator, frozen once the whole flow is applied (a
        // document's creation and its fields arrive in the same flow).
        let mut to_freeze: BTreeSet<(String, String)> = BTreeSet::new();
        let trusted = trusts_coverage(tx, sender, &header.acks, Some(id.seq))?;
        let mut carried = Knowledge::new();
        // Other sites' changes it relays, taken while a restore is under way.
        let mut relayed = Knowledge::new();
        // Decoded beside the merge when the driver allows it; the knowledge does not move
        // until every frame is merged.
        // While a restore is under way, the commits central took only from relays, perhaps in
        // part, are merged again (`record_relayed_dots`).
        let again = local::get::<Knowledge>(tx, local::RESTORE_RELAYED_DOTS)?.unwrap_or_default();
        // And while it is under way, every change a remote relays of another site is merged
        // again by value (`WriteTx::merge_by_value`), though central knows its number: knowing
        // a number may come from its own site's word alone (a site that stamped a write again,
        // below the old one, says it knows the old write it no longer holds), while the lost
        // central took the old write and this remote holds it, stamped later than what central
        // holds. Those central holds, or holds later, come out already had or superseded; one
        // a rule refuses (judged when central first learnt it) comes out already had.
        let restoring = local::get::<u64>(tx, local::RESTORED)?.is_some();
        let rejudge = if restoring {
            let known = tx.knowledge();
            known
                .difference(&known.only(tx.site().id))
                .difference(&known.only(sender))
                .difference(&again)
        } else {
            Knowledge::new()
        };
        let skip = if again.is_empty() && rejudge.is_empty() {
            tx.knowledge().clone()
        } else {
            let skip = tx.knowledge().difference(&again).difference(&rejudge);
            if !again.is_empty() {
                tx.merge_again(again.clone());
            }
            if !rejudge.is_empty() {
                tx.merge_by_value(rejudge.clone());
            }
            skip
        };
        // Other sites' changes it relays, whatever became of them.
        let mut relay_dots = Knowledge::new();
        let mut frames = Frames::new(reader, skip);
        let mut completed_relayed = false;
        let mut took_relayed = false;
        // Its own changes taken that another remote reported knowing (only looked at while a
        // restore is under way): that remote may know them under the lost central's verdict —
        // whenever it reported them, before central began taking this site's new changes or
        // after (its first report may be a file from before it learnt them).
        let held_elsewhere = super::restore::known_by_remotes(tx, sender)?;
        // What the lost central took, under the permissions in force then (R4/R9), is not
        // judged again by the restored one's: the remotes that hold it keep it.
        let taken_before = held_by_any_remote(tx)?;
        if !taken_before.is_empty() {
            tx.taken_before(taken_before);
        }
        // Its own changes taken while a restore is under way (`restore::record_takes`).
        let mut own_taken = Knowledge::new();
        // While a restore is under way, an emission central does not trust may come after a
        // later one of its remote (a file carried by hand): what it has of the remote's own that
        // the later one said the remote knows, the remote may have written over since. Central
        // taking it restarts the confirmations, so the remote takes it back, judged anew. (The
        // newest emission's claim, which only grows: not what the last one processed said.)
        let sender_knew = if trusted {
            None
        } else {
            crate::incarnation::own_known_after(tx, sender, id.seq)?
        };
        let mut took_known_own = false;
        // After a restore: its own changes under numbers another remote knew when the restore
        // ended and central did not (`restore::took_late`).
        let late = if restoring {
            Knowledge::new()
        } else {
            super::restore::late_rejudge(tx)?
        };
        let mut took_late = Knowledge::new();
        // R2: a change stamped too far ahead of central's clock is held with the whole emission
        // — unless central's own changes stamped as late come with it (a remote sends back what
        // a restored central lost, stamped while its clock ran ahead): known once the whole
        // emission is read, so the verdict waits for its end (nothing is committed before).
        let own_site = tx.site().id;
        // While a restore is under way, what the lost central sent it or took from it vouches
        // too.
        let mut vouched = outpost_engine::Stamp::from_u64(
            local::get::<u64>(tx, &local::sent_high_key(sender))?.unwrap_or(0),
        )
        .max(super::restore::vouched(tx, sender, &header.knowledge)?)
        // What the remote says a central sent it or took from it (its store's own record,
        // which central's restore does not lose).
        .max(settled_claim(&header));
        let mut own_back = BTreeMap::new();
        let mut held: Option<(outpost_engine::Stamp, String)> = None;
        while let Some(item) = frames.next_frame()? {
            let IncomingItem::Changes(changes) = item else {
                return Err(Error::Refused("an emission carries no rejections".into()));
            };
            // Already merged changes (an emission carrying again what the remote sent before
            // its last return arrived) are only counted.
            let mut docs = Vec::new();
            let mut relays = Vec::new();
            for (i, incoming) in changes.iter().enumerate() {
                let Incoming::New(change) = incoming else {
                    continue;
                };
                if !trusted || (restoring && change.dot.site == sender) {
                    carried.insert(change.dot);
                }
                if change.dot.site != sender {
                    if restoring {
                        relay_dots.insert(change.dot);
                    }
                    relays.push((i, change.dot));
                }
                if change.dot.site != own_site
                    && let Some(reason) = quarantine_reason(
                        store,
                        tx,
                        vouched,
                        &code,
                        change,
                        arrived_ms,
                        rejudge.contains(change.dot),
                    )
                {
                    match &mut held {
                        Some((latest, _)) => *latest = (*latest).max(change.stamp),
                        None => held = Some((change.stamp, reason)),
                    }
                }
                // A document its creator sends — or, while a restore is under way, that another
                // remote sends back of it: it had reached central before the loss.
                let is_doc = schema.table(&change.table).is_some_and(|t| t.is_document());
                if is_doc
                    && (change.created.site() == sender || change.created.site() == change.dot.site)
                {
                    docs.push((i, change.table.clone(), change.key.clone()));
                }
            }
            let base = report.outcomes.len();
            tx.apply_batch(sender, &changes, &mut report)?;
            for (i, incoming) in changes.iter().enumerate() {
                if let Incoming::New(c) = incoming
                    && c.dot.site == sender
                    && matches!(report.outcomes.get(base + i), Some(Outcome::Applied))
                    && sender_knew.as_ref().is_some_and(|k| k.contains(c.dot))
                {
                    took_known_own = true;
                }
                if let Incoming::New(c) = incoming
                    && c.dot.site == sender
                    && late.contains(c.dot)
                    && matches!(
                        report.outcomes.get(base + i),
                        Some(Outcome::Applied | Outcome::Superseded)
                    )
                {
                    took_late.insert(c.dot);
                }
                if let Incoming::New(c) = incoming
                    && c.dot.site == sender
                    && matches!(report.outcomes.get(base + i), Some(Outcome::Superseded))
                    && let Some(rejection) = lost_to_its_own_write(tx, &header, c, now)?
                {
                    report.refusals.push((base + i, rejection));
                }
            }
            // Central's own changes taken back (what a restore lost) vouch for their time;
            // one refused (a remote may not write as central outside a restore) does not.
            for (i, incoming) in changes.iter().enumerate() {
                if let Incoming::New(c) = incoming
                    && c.dot.site == own_site
                    && !matches!(report.outcomes.get(base + i), Some(Outcome::Refused(_)))
                {
                    vouched = vouched.max(c.stamp);
                    let e = own_back.entry(c.dot.seq).or_insert(c.stamp);
                    *e = (*e).max(c.stamp);
                }
            }
            // Merged again, whole from its own site: did it bring what the relay lacked?
            if !again.is_empty() {
                completed_relayed |= changes.iter().enumerate().any(|(i, c)| {
                    matches!(c, Incoming::New(c) if again.contains(c.dot))
                        && matches!(report.outcomes.get(base + i), Some(Outcome::Applied))
                });
            }
            if restoring {
                for (i, c) in changes.iter().enumerate() {
                    if let Incoming::New(c) = c
                        && c.dot.site == sender
                        && matches!(report.outcomes.get(base + i), Some(Outcome::Applied))
                    {
                        own_taken.insert(c.dot);
                    }
                }
            }
            frames.recycle(changes);
            // What it relayed is received only if taken: a change refused here (a site this
            // central does not know, a rule) must still be judged when its own site sends it.
            for (i, dot) in relays {
                if rejudge.contains(dot) {
                    // Known before: received again only if it won over what central holds.
                    if matches!(report.outcomes.get(base + i), Some(Outcome::Applied)) {
                        took_relayed = true;
                        relayed.insert(dot);
                    }
                    continue;
                }
                match report.outcomes.get(base + i) {
                    Some(Outcome::Refused(_)) => {}
                    outcome => {
                        // Taken from a relay: a remote that knows the commit may hold it in
                        // part (a register put back after a refusal) and must take it again.
                        took_relayed |= matches!(outcome, Some(Outcome::Applied));
                        relayed.insert(dot);
                    }
                }
            }
            // Frozen when it first came, if it was accepted (a refused creation may be known
            // and have no document to freeze).
            for (i, table, key) in docs {
                if matches!(
                    report.outcomes.get(base + i),
                    Some(Outcome::Applied | Outcome::Superseded)
                ) {
                    to_freeze.insert((table, key));
                }
            }
        }
        if let Some((latest, reason)) = held
            && latest.physical_ms() > beyond_vouched(store, vouched)
        {
            // Central restored from a backup has lost its own latest changes, and with them the
            // time they were stamped at: a remote that made this emission before it heard of
            // the restore did not send them back, and its writes may follow them.
            if !trusted {
                return Err(Error::Quarantined(format!(
                    "{code}'s changes are stamped {} ahead of central's clock {HELD_IN_RESTORE}: \
                     they may follow changes central lost, stamped by \
                     its clock before the loss. Nothing of this emission was applied; {code}'s \
                     next emission, made once it has applied a return, carries central's lost \
                     changes back and supersedes it. Run `outpost remote restamp` there only if \
                     that one is held too",
                    human_ms(outpost_engine::hlc::ahead_ms(latest, arrived_ms)),
                )));
            }
            return Err(Error::Quarantined(reason));
        }
        if let Some(newest) = own_back.values().max() {
            super::restore::vouch(tx, sender, *newest)?;
        }
        super::restore::took_own_back(tx, &own_back)?;
        // R6: a document received from its creator is frozen for it here too.
        for (table, key) in &to_freeze {
            tx.freeze(table, key)?;
        }
        // Not trusted for what it covers, central knows what it carried — but not a commit
        // the emission holds back in part (R7: a reserved document written in the same commit
        // as a record sent): the rest comes once the document is released, under that number.
        let carried_whole;
        let own = if trusted {
            &header.covered
        } else {
            carried_whole = carried.difference(&header.knowledge.difference(&header.covered));
            &carried_whole
        };
        if restoring {
            // What central learns of the sender's own dots only by its word, and the relays
            // it judged by their value.
            let by_word = if trusted {
                own.only(sender)
                    .difference(&carried.only(sender))
                    .difference(tx.knowledge())
            } else {
                Knowledge::new()
            };
            super::restore::record_by_word(tx, &by_word, &relay_dots)?;
        }
        if !late.is_empty() {
            super::restore::took_late(tx, &late, sender, &took_late, own, &remotes)?;
        }
        tx.add_knowledge(sender, own)?;
        tx.add_relayed(sender, &relayed)?;
        record_relayed_dots(tx, sender, &relayed, own)?;
        // It brought back changes of its own another remote reported holding: that remote may
        // know them under the lost central's verdict (a document numbered twice, refused then).
        // Trusted or not: a remote trusted before central took them would otherwise see the
        // window close without a return carrying them again (`--sites 5 --days 3 --seed 54270`).
        // Each such change is taken once (at most one restart per emission taking any), so the
        // window still closes.
        let sent_back = !own_taken
            .difference(&own_taken.difference(&held_elsewhere))
            .is_empty();
        if completed_relayed || took_relayed || sent_back || took_known_own {
            restart_confirmations(tx)?;
        }
        super::restore::record_takes(tx, &own_taken)?;
        let rkey = remote_key(sender);
        let mut rec: RemoteRecord = local::get(tx, &rkey)?.unwrap_or_default();
        // What the site knows, for its next return — unless this emission's store was replaced
        // by a reprovisioning since it arrived: the new store knows only its bootstrap and its
        // own emissions, and must get these changes back (R1).
        if !crate::incarnation::is_superseded(tx, &header)? {
            rec.knowledge = header.knowledge.clone();
        }
        rec.unanswered.push(id);
        let reads_r2 = local::reads_r2_key(sender);
        match (
            crate::incarnation::reads_r2(&header),
            tx.local_get(&reads_r2)?.is_some(),
        ) {
            (true, false) => local::put(tx, &reads_r2, &())?,
            (false, true) => tx.local_remove(&reads_r2)?,
            _ => {}
        }
        rec.rejections
            .extend(report.refusals.iter().map(|(_, r)| (r.clone(), None)));
        apply_acks(tx, sender, &mut rec, &header.acks)?;
        local::put(tx, &rkey, &rec)?;
        // It knows a change central took during the restore that no return of the restored
        // central it applied carried (its acknowledgements just read): from the lost central,
        // perhaps under another verdict.
        let knew_early = restoring
            && super::restore::knew_a_take_from_the_lost_central(
                tx,
                sender,
                &header.knowledge,
                super::restore::applied_claim(&header),
            )?;
        if knew_early {
            restart_confirmations(tx)?;
        }
        // After its record: the restore's end reads what each remote reported knowing.
        if trusted && !knew_early {
            restore_relayed(tx, sender, &remotes)?;
        }
        let mut row = crate::journal::get(tx, id)?.ok_or(Error::UnknownFlow(id))?;
        row.exec_end_ms = Some(now);
        row.n_changes = frames.n_changes();
        row.n_rejections = report.refusals.len() as u64;
        crate::journal::put(tx, &row)?;
        crate::monitor_records::log_rejections(tx, id, &report.refusals)?;
        if !report.refusals.is_empty() {
            crate::monitor_records::record_event(
                tx,
                &crate::monitor_records::Event {
                    kind: crate::monitor_records::EventKind::Rejections,
                    at_ms: now,
                    site: sender,
                    flow: id,
                    text: rejections_text(&code, id, &report.refusals),
                },
            )?;
        }
        tx.local_remove(&pending_key(receipt))?;
        crate::monitor_records::set_failed(tx, id, false)?;
        supersede_held(tx, id)?;
        Ok(report)
    })?;
    Ok(Processed { id, report })
}

/// Records what a remote reported of the returns it received (J1: execution start and end,
/// refused by remote), and forgets the refusals that an applied return carried.
pub(super) fn apply_acks(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    remote: SiteId,
    rec: &mut RemoteRecord,
    acks: &[ReturnAck],
) -> Result<()> {
    for ack in acks {
        if !ack.refused {
            super::restore::redelivered(tx, remote, ack.id.seq)?;
        }
        if let Some(mut row) = crate::journal::get(tx, ack.id)? {
            // The same report can arrive twice (over the network right after applying, then
            // with the next emission): it counts once.
            if row.exec_start_ms == Some(ack.start_ms)
                && row.exec_end_ms == Some(ack.end_ms)
                && row.refused_by_remote == ack.refused
            {
                continue;
            }
            row.exec_start_ms = Some(ack.start_ms);
            row.exec_end_ms = Some(ack.end_ms);
            row.executions += 1;
            row.refused_by_remote = ack.refused;
            if let Some(reason) = &ack.reason {
                row.error = Some(reason.clone());
            }
            crate::journal::put(tx, &row)?;
            ack_events(tx, &row, ack)?;
        }
        if !ack.refused {
            rec.rejections
                .retain(|(_, sent)| sent.is_none_or(|s| s > ack.id.seq));
        }
    }
    Ok(())
}

/// What the monitor keeps of one report of a return: the remote's newest applied return, and
/// the events worth an alert.
pub(super) fn ack_events(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    row: &JournalRow,
    ack: &ReturnAck,
) -> Result<()> {
    use crate::monitor_records::{Event, EventKind, record_event};
    if !ack.refused {
        crate::monitor_records::saw_return_applied(
            tx,
            row.site,
            ack.id,
            row.file_ready_ms.unwrap_or(ack.start_ms),
            ack.end_ms,
        )?;
    }
    if ack.refused {
        record_event(
            tx,
            &Event {
                kind: EventKind::RefusedByRemote,
                at_ms: ack.end_ms,
                site: row.site,
                flow: ack.id,
                text: format!(
                    "return {} was refused by its remote: {}",
                    ack.id,
                    ack.reason.as_deref().unwrap_or("no reason given")
                ),
            },
        )?;
    }
    if row.executions > 1 {
        record_event(
            tx,
            &Event {
                kind: EventKind::ExecutedAgain,
                at_ms: ack.end_ms,
                site: row.site,
                flow: ack.id,
                text: format!(
                    "return {} was applied again by its remote (execution {})",
                    ack.id, row.executions
                ),
            },
        )?;
    }
    Ok(())
}

/// An emission's refused changes in one line: how many, by rule.
pub(super) fn rejections_text(code: &str, id: FlowId, refusals: &[(usize, Rejection)]) -> String {
    let mut by_rule: BTreeMap<String, usize> = BTreeMap::new();
    for (_, r) in refusals {
        *by_rule.entry(r.refusal.rule.to_string()).or_default() += 1;
    }
    let rules: Vec<String> = by_rule.iter().map(|(r, n)| format!("{r} ×{n}")).collect();
    format!(
        "{} change(s) of {code} refused in emission {id} ({}): they go back to {code} with \
         central's values in its next return",
        refusals.len(),
        rules.join(", ")
    )
}

/// Records a remote's reports of the returns it received, as soon as it made them (over the
/// network, right after applying) instead of with its next emission. Only reports of returns
/// addressed to `remote` are taken: a site cannot report on another's returns.
pub fn record_acks(store: &Store, remote: SiteId, acks: &[ReturnAck]) -> Result<()> {
    check_central(store)?;
    local::write(store, |tx| {
        let key = remote_key(remote);
        let mut rec: RemoteRecord = local::get(tx, &key)?
            .ok_or(Error::Engine(outpost_engine::Error::UnknownSite(remote)))?;
        for ack in acks {
            let row = crate::journal::get(tx, ack.id)?;
            match row {
                Some(r) if r.kind == FlowKind::Return && r.site == remote => {}
                _ => {
                    return Err(Error::Refused(format!(
                        "{} is not a return of {remote}",
                        ack.id
                    )));
                }
            }
        }
        trusts_coverage(tx, remote, acks, None)?;
        apply_acks(tx, remote, &mut rec, acks)?;
        local::put(tx, &key, &rec)
    })
}

//! Receiving a flow into the sync table (T1, T3): its bytes in chunks of the local side table,
//! "file ready" only once read through to its end with every checksum right; duplicates
//! recognised, gaps in a remote's numbering noted, another store's emission refused at receipt
//! (`crate::incarnation`).

use super::*;
use crate::incarnation::NotTaken;

/// A flow central refused at receipt: damaged, truncated, too large, of another deployment,
/// claiming another site… Nothing of it is kept but this entry (the journal has rows only for
/// flows it took).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RefusedFlow {
    /// When (central's clock, UTC ms).
    pub at_ms: u64,
    /// The site that sent it, when the transport knew (an authenticated connection).
    pub sender: Option<SiteId>,
    /// Its size as received.
    pub bytes: u64,
    /// Why it was refused.
    pub reason: String,
}

/// The flows refused at receipt, oldest first.
pub fn refused_flows(store: &Store) -> Result<Vec<RefusedFlow>> {
    local::snap_all(&store.snapshot()?, local::REFUSED_FLOWS)
}

/// The result of receiving a flow.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Received {
    /// Stored whole and checked: file ready.
    Ready {
        /// The flow.
        id: FlowId,
        /// Its size.
        bytes: u64,
        /// A gap or disorder in the remote's sequence, reported in the journal.
        note: Option<String>,
    },
    /// The sync table already has this flow: it is not stored or applied again.
    Duplicate(FlowId),
}

/// Receives an emission (from a file, later from the network) into the sync table. `sender` is
/// the site that actually sent it, when the transport knows it (an authenticated connection):
/// a flow claiming another site is refused. The flow is checked through to its end frame before
/// it is "file ready"; a damaged or truncated flow is refused and nothing is kept.
pub fn receive(store: &Store, mut input: impl Read, sender: Option<SiteId>) -> Result<Received> {
    check_central(store)?;
    // 1. The bytes: a flow of one chunk (a day's emission) is held here and stored in the
    // transaction that makes it file ready; a longer one is stored chunk by chunk, its receipt
    // taken with its first chunk.
    let mut keeping = Keeping::default();
    let mut bytes = 0u64;
    loop {
        // `read_to_end` retries an interrupted read itself.
        let read = (&mut input)
            .take(CHUNK_BYTES as u64)
            .read_to_end(&mut keeping.buf);
        if let Err(e) = read {
            if let Some(receipt) = keeping.stored {
                discard(store, receipt)?;
            }
            return Err(Error::Io(e));
        }
        let filled = keeping.buf.len();
        bytes += filled as u64;
        if filled < CHUNK_BYTES {
            break;
        }
        keeping.stored = Some(local::write(store, |tx| keeping.store_held(tx))?);
    }
    // 2. Check it whole: from what was stored, or from the bytes held when that is all of it.
    let checked = match keeping.receipt {
        None => check_flow(store, io::Cursor::new(keeping.buf.as_slice()), sender),
        Some(receipt) => {
            keeping.stored = Some(local::write(store, |tx| keeping.store_held(tx))?);
            check_stored(store, receipt, sender)
        }
    };
    let header = match checked {
        Ok(h) => h,
        Err(e) => {
            if let Some(receipt) = keeping.stored {
                discard(store, receipt)?;
            }
            if e.is_the_flows() {
                let refused = RefusedFlow {
                    at_ms: store.now_ms(),
                    sender,
                    bytes,
                    reason: e.to_string(),
                };
                local::write(store, |tx| {
                    let receipt = keeping.receipt(tx)?;
                    put_refused(tx, receipt, &refused)
                })?;
            }
            return Err(e);
        }
    };
    // 3. File ready — unless it comes from a store that does not speak for its site, or is a
    // duplicate.
    let now = store.now_ms();
    let id = header.id;
    let sites = store.sites();
    let code = sites
        .get(header.source)
        .map_or_else(|| header.source.to_string(), |s| s.code.to_string());
    let made_when = MadeWhen {
        now_ms: now,
        skew_ms: store.skew_ms_max(),
    };
    let behind = clock_behind(store, &header, &code)?;
    // A late file of a store lost since (in a snapshot: the store's own lock is not taken
    // inside its write transaction).
    let late = crate::incarnation::late_renumbered(&store.snapshot()?, &header, || {
        Ok(match keeping.receipt {
            None => Box::new(io::Cursor::new(keeping.buf.as_slice())) as Box<dyn Read + '_>,
            Some(receipt) => Box::new(StoredFlow::open(store, receipt)?),
        })
    })?;
    let outcome = local::write(store, |tx| {
        // While a restore is under way: a change carried under a number another remote holds
        // with another stamp (the flow read again, as `check` did; in this transaction, so that
        // a report received meanwhile counts).
        let renumbered = renumbered(tx, &header, || -> Result<Box<dyn Read + '_>> {
            Ok(match keeping.receipt {
                None => Box::new(io::Cursor::new(keeping.buf.as_slice())),
                Some(receipt) => Box::new(StoredFlow::open(store, receipt)?),
            })
        })?;
        let receipt = keeping.store_held(tx)?;
        let retired = retired_in(tx, header.source)?.map(|_| {
            format!(
                "remote {code} was removed from this deployment (outpost central \
                 remove-remote): its flows are refused"
            )
        });
        // Put back without `central restore`: nothing taken, not even its report.
        if retired.is_none()
            && let Some(reason) = put_back(tx, &header, &code, now)?
        {
            return Ok(Err(NotTaken::Wait(reason)));
        }
        let checked = match retired {
            Some(reason) => Err(NotTaken::WrongStore(reason)),
            None => {
                let elsewhere = held_by_remotes(tx, header.source)?;
                let waiting = waiting_for(tx, &sites, header.source)?;
                let claim = own_claim(tx, &header, made_when)?;
                crate::incarnation::check_emission(
                    tx,
                    &header,
                    &code,
                    crate::incarnation::Reports {
                        elsewhere: &elsewhere,
                        own_claim: claim.as_ref(),
                        waiting: &waiting,
                        renumbered,
                        late,
                    },
                )?
            }
        };
        let reason = match checked {
            Ok(()) => None,
            Err(NotTaken::WrongStore(reason)) => Some(reason),
            Err(NotTaken::Wait(reason)) => {
                // It waits, but its store has reported what it holds.
                record_report(tx, &header, made_when)?;
                return Ok(Err(NotTaken::Wait(reason)));
            }
        };
        if let Some(reason) = reason {
            // Refused, yet heard from: central does not wait for its report (its store's word
            // on what it holds is not counted; the stamps it holds move the clock all the same).
            heard_from(tx, header.source)?;
            super::restore::observe_tips(tx, &header)?;
            let refused = RefusedFlow {
                at_ms: now,
                sender,
                bytes,
                reason: reason.clone(),
            };
            put_refused(tx, receipt, &refused)?;
            flow_event(
                tx,
                crate::monitor_records::EventKind::WrongStore,
                now,
                &header,
                &reason,
            )?;
            return Ok(Err(NotTaken::WrongStore(reason)));
        }
        record_report(tx, &header, made_when)?;
        if !header
            .knowledge
            .only(header.source)
            .difference(&tx.knowledge().only(header.source))
            .is_empty()
        {
            taken_from(tx, header.source)?;
        }
        if crate::journal::get(tx, id)?.is_some() {
            return Ok(Ok(Received::Duplicate(id)));
        }
        let rkey = remote_key(header.source);
        let mut rec: RemoteRecord = local::get(tx, &rkey)?.unwrap_or_default();
        let note = if id.seq > rec.last_emission_seq + 1 {
            Some(format!(
                "emission(s) {}..{} of {} never received",
                rec.last_emission_seq + 1,
                id.seq - 1,
                header.source
            ))
        } else if id.seq <= rec.last_emission_seq {
            Some(format!(
                "received out of order, after emission {}",
                rec.last_emission_seq
            ))
        } else {
            None
        };
        rec.last_emission_seq = rec.last_emission_seq.max(id.seq);
        local::put(tx, &rkey, &rec)?;
        let mut row = JournalRow::new(id, FlowKind::Emission, header.source, header.mode);
        row.file_ready_ms = Some(now);
        row.bytes = bytes;
        row.receipt = Some(receipt);
        row.error = note.clone();
        crate::journal::put(tx, &row)?;
        crate::monitor_records::index_row(tx, now, id)?;
        crate::monitor_records::saw_emission(tx, id, now, Some(header.created_wall_ms))?;
        if let Some(text) = behind.clone() {
            crate::monitor_records::record_event(
                tx,
                &crate::monitor_records::Event {
                    kind: crate::monitor_records::EventKind::ClockBehind,
                    at_ms: now,
                    site: header.source,
                    flow: id,
                    text,
                },
            )?;
        }
        if let Some(count) = header
            .config
            .as_ref()
            .and_then(|c| c.settings.get(crate::monitor_records::RESERVED_SETTING))
            .and_then(|n| n.parse().ok())
        {
            crate::monitor_records::saw_reserved(tx, id, now, count)?;
        }
        local::put(tx, &pending_key(receipt), &id)?;
        Ok(Ok(Received::Ready { id, bytes, note }))
    })?;
    // Taken in the transaction above at the latest.
    let receipt = keeping.receipt.unwrap_or_default();
    let outcome = match outcome {
        Ok(o) => o,
        Err(not_taken) => {
            discard(store, receipt)?;
            return Err(match not_taken {
                NotTaken::WrongStore(reason) => Error::WrongStore(reason),
                NotTaken::Wait(reason) => Error::Deferred(reason),
            });
        }
    };
    if matches!(outcome, Received::Duplicate(_)) {
        discard(store, receipt)?;
    }
    Ok(outcome)
}

/// Records an event about `header`'s flow, at `now`.
fn flow_event(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    kind: crate::monitor_records::EventKind,
    now: u64,
    header: &FlowHeader,
    text: &str,
) -> Result<()> {
    let event = crate::monitor_records::Event {
        kind,
        at_ms: now,
        site: header.source,
        flow: header.id,
        text: text.to_owned(),
    };
    crate::monitor_records::record_event(tx, &event)
}

/// Why central takes no emission, if its store was put back from a backup or a snapshot
/// without `outpost central restore`: as `header`'s emission shows
/// ([`put_back_without_restore`]; recorded, with an alert), or an earlier one showed. Until the
/// restore it takes no emission and gives no return ([`put_back_reason`]): the numbers it would
/// give next are those the lost central gave.
fn put_back(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    header: &FlowHeader,
    code: &str,
    now: u64,
) -> Result<Option<String>> {
    if let Some(reason) = local::get::<String>(tx, local::PUT_BACK)? {
        // Latched by a version that did not hold central's own writes yet: held from now on.
        tx.hold_own_writes(Some(&reason))?;
        return Ok(Some(reason));
    }
    let Some(reason) = put_back_without_restore(tx, header, code)? else {
        return Ok(None);
    };
    local::put(tx, local::PUT_BACK, &reason)?;
    // Its own next commit would reuse the lost central's numbers too: none until the restore.
    tx.hold_own_writes(Some(&reason))?;
    flow_event(
        tx,
        crate::monitor_records::EventKind::PutBackWithoutRestore,
        now,
        header,
        &reason,
    )?;
    Ok(Some(reason))
}

/// Why central gives no return now, if its store was put back without `outpost central
/// restore` ([`put_back`]).
pub(super) fn put_back_reason(snap: &outpost_engine::Snapshot) -> Result<Option<String>> {
    local::snap_get(snap, local::PUT_BACK)
}

/// Why central takes no emission and gives no return or bootstrap until `outpost central
/// restore`, if a remote's emission showed its store was put back without it: the commands
/// that would give one (adding or reprovisioning a remote) check it before changing anything.
pub fn put_back_noticed(store: &Store) -> Result<Option<String>> {
    put_back_reason(&store.snapshot()?)
}

/// Whether `header`'s emission shows that central's store was put back from a backup or a disk
/// snapshot without `outpost central restore` ([`super::after_restore`]): its store applied a
/// return, or holds a change of central's, numbered past any this store gave. Central's next
/// returns and commits would take numbers the remotes already hold — a return skipped as
/// applied or stale, a change skipped as known, silently — so nothing is taken until the
/// restore has made the numbers jump. The reason, with what to do.
fn put_back_without_restore(
    tx: &outpost_engine::WriteTx<'_, '_>,
    header: &FlowHeader,
    code: &str,
) -> Result<Option<String>> {
    let central = tx.site().id;
    let issued: u64 = local::get(tx, local::RETURN_SEQ)?.unwrap_or(0);
    let applied = super::restore::applied_claim(header);
    let next = tx.next_own_seq();
    let held = header.knowledge.max_seq(central);
    let what = if applied > issued {
        format!("applied return {applied}, and this store's last is {issued}")
    } else if held >= next {
        format!("holds central's change {held}, and this store's next is {next}")
    } else {
        return Ok(None);
    };
    Ok(Some(format!(
        "{code} {what}: central's store was put back from a backup or a disk snapshot without \
         `outpost central restore` (or restored with its clock set back), and would give again \
         numbers the remotes hold (its returns and new writes skipped by them). Set the clock \
         right, stop the daemon, copy the data directory elsewhere and run `outpost central \
         restore --backup <that copy> --data <the data directory>` (docs/OPERATIONS.md); until \
         then central takes no emission, gives no return and writes nothing of its own"
    )))
}

/// The alert a refused upload raises.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RefusalAlert {
    /// The credential of one site sent a flow naming another (S2).
    Impersonation,
    /// Several uploads from one peer refused in a short time.
    Repeated,
}

/// Lists a flow refused before it reached [`receive`] — by the transport: too large, a body
/// that is no flow (bad magic, bad header checksum, empty), a credential sending another site's
/// flow — in the log of refused flows (`outpost journal --refused`, the monitor), with `alert`
/// raised as an event when given (impersonation, repeated refusals). Nothing of the flow is
/// kept.
pub fn record_refused(
    store: &Store,
    refused: &RefusedFlow,
    alert: Option<(RefusalAlert, FlowId)>,
) -> Result<()> {
    check_central(store)?;
    let receipt = new_receipt(store)?;
    local::write(store, |tx| {
        put_refused(tx, receipt, refused)?;
        if let (Some((alert, flow)), Some(site)) = (alert, refused.sender) {
            crate::monitor_records::record_event(
                tx,
                &crate::monitor_records::Event {
                    kind: match alert {
                        RefusalAlert::Impersonation => {
                            crate::monitor_records::EventKind::Impersonation
                        }
                        RefusalAlert::Repeated => {
                            crate::monitor_records::EventKind::RepeatedRefusals
                        }
                    },
                    at_ms: refused.at_ms,
                    site,
                    flow,
                    text: refused.reason.clone(),
                },
            )?;
        }
        Ok(())
    })
}

/// Lists a flow refused at receipt (`rf/` + receipt number), outside the journal.
pub(super) fn put_refused(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    receipt: u64,
    refused: &RefusedFlow,
) -> Result<()> {
    let mut key = local::REFUSED_FLOWS.to_vec();
    key.extend_from_slice(&receipt.to_be_bytes());
    local::put(tx, &key, refused)
}

pub(super) fn new_receipt(store: &Store) -> Result<u64> {
    local::write(store, allocate_receipt)
}

/// The next receipt number, taken in `tx`.
pub(super) fn allocate_receipt(tx: &mut outpost_engine::WriteTx<'_, '_>) -> Result<u64> {
    let n: u64 = local::get(tx, local::RECEIPT_SEQ)?.unwrap_or(0) + 1;
    local::put(tx, local::RECEIPT_SEQ, &n)?;
    Ok(n)
}

pub(super) fn check_stored(
    store: &Store,
    receipt: u64,
    sender: Option<SiteId>,
) -> Result<FlowHeader> {
    check_flow(store, StoredFlow::open(store, receipt)?, sender)
}

/// Reads an emission through to its end frame, every check made; gives its header.
pub(super) fn check_flow(
    store: &Store,
    input: impl Read,
    sender: Option<SiteId>,
) -> Result<FlowHeader> {
    let reader = FlowReader::open(input)?;
    check_emission_header(store, reader.header(), sender)?;
    Ok(reader.verify()?)
}

pub(super) fn check_emission_header(
    store: &Store,
    h: &FlowHeader,
    sender: Option<SiteId>,
) -> Result<()> {
    if h.kind != FlowKind::Emission {
        return Err(Error::Refused(format!(
            "flow {} is {}, not an emission",
            h.id, h.kind
        )));
    }
    if let Some(sender) = sender
        && (h.source != sender || h.id.site != sender)
    {
        return Err(Error::Refused(format!(
            "flow {} claims to come from site {} but was sent by site {sender}",
            h.id, h.source
        )));
    }
    if h.id.site != h.source {
        return Err(Error::Refused(format!(
            "flow {} claims source {} but its id names site {}",
            h.id, h.source, h.id.site
        )));
    }
    if h.target != store.site().id {
        return Err(Error::Refused(format!(
            "flow {} is addressed to site {}, not to this central site {}",
            h.id,
            h.target,
            store.site().id
        )));
    }
    match store.sites().get(h.source) {
        Some(s) if !s.is_central() => {}
        _ => {
            return Err(Error::Refused(format!(
                "flow {} comes from site {}, which is not a known remote",
                h.id, h.source
            )));
        }
    }
    let carried = h
        .config
        .as_ref()
        .and_then(|c| c.settings.get(DEPLOYMENT_SETTING));
    let ours = format!("{:016x}", deployment_id(store)?);
    if let Some(theirs) = carried
        && *theirs != ours
    {
        return Err(Error::Refused(format!(
            "flow {} belongs to another deployment ({theirs}; this central's is {ours})",
            h.id
        )));
    }
    let fingerprint = store.schema().fingerprint();
    if h.schema_fingerprint != fingerprint {
        return Err(Error::Refused(format!(
            "flow {} was made with schema {:016x}; this site's is {fingerprint:016x}",
            h.id, h.schema_fingerprint
        )));
    }
    Ok(())
}

/// R2: a remote whose emission says its store held changes stamped later than its clock said
/// it was when it made the emission, by more than the skew central tolerates, has a clock behind
/// — at least by that much, whatever the time the file took to come. Its writes are stamped just
/// after the newest change it has seen, not when they are made: they lose every conflict to
/// writes made earlier elsewhere. Nothing is refused or held for it; it is said (an alert).
/// Not when those later stamps may be central's own — no later than what central sent that
/// remote — while central's clock is behind them (it ran ahead and was set back): the monitor
/// names central's clock then. While central is restored from a backup it has lost the stamps
/// it sent, and the alert says that they may explain it.
fn clock_behind(store: &Store, header: &FlowHeader, code: &str) -> Result<Option<String>> {
    let skew = store.skew_ms_max();
    let behind = header
        .created_stamp
        .physical_ms()
        .saturating_sub(header.created_wall_ms);
    if behind <= skew {
        return Ok(None);
    }
    let snap = store.snapshot()?;
    let sent = local::snap_get::<u64>(&snap, &local::sent_high_key(header.source))?
        .map_or(0, |s| outpost_engine::Stamp::from_u64(s).physical_ms());
    let central_high = store.clock_high_water().physical_ms();
    if header.created_stamp.physical_ms() <= sent.saturating_add(skew)
        && central_high > store.now_ms().saturating_add(skew)
    {
        return Ok(None);
    }
    let restoring = local::snap_get::<u64>(&snap, local::RESTORED)?.is_some();
    Ok(Some(format!(
        "{code}'s clock is at least {} behind: when it made emission {} it already held changes \
         stamped that much later than its clock said. Until its clock is set right, its writes \
         lose every conflict to writes made earlier elsewhere (R2).{} If every remote says \
         so, central's own clock may have run ahead{}",
        super::process::human_ms(behind),
        header.id,
        // While a restore is under way the hold says when to restamp (only if held again).
        if restoring {
            ""
        } else {
            " If central holds its emissions for clock skew, its clock ran ahead and was set \
             back since: run `outpost remote restamp` there."
        },
        if restoring {
            ". Central is being restored from a backup: if its clock ran ahead before the \
             loss, these may be the stamps of central's own lost changes, and this remote's \
             clock right"
        } else {
            ""
        }
    )))
}

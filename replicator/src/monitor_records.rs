//! The monitor's records: what central's processing writes, in the same transactions as the
//! work, for the monitor ([`crate::monitor`]) to read — the write side of the monitor, which
//! `central` calls and which depends on nothing of `central`:
//! - an index of the journal by the time each flow became file ready (`jt/`);
//! - the refused changes, keyed by time, with the flow that carried them (`rj/`);
//! - per remote, its latest emission, the clock it showed, its newest applied return (`sw/`);
//! - notable events as they happen (`ev/`);
//! - the emissions whose processing fails (`fp/`).

use std::collections::BTreeMap;

use outpost_engine::{Rejection, SiteId, Store, WriteTx};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::flow::{FlowId, FlowKind};
use crate::local;
use crate::local::EVENT_SEQ;
pub(crate) use crate::local::{EVENTS, FAILED, JOURNAL_BY_TIME, REJECTIONS, SITE_SEEN};

/// A key: `prefix` and `parts` one after the other.
pub(crate) fn be_key(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

pub(crate) fn flow_bytes(id: FlowId) -> [u8; 10] {
    let mut b = [0u8; 10];
    b[..2].copy_from_slice(&id.site.0.to_be_bytes());
    b[2..].copy_from_slice(&id.seq.to_be_bytes());
    b
}

pub(crate) fn flow_from(bytes: &[u8]) -> Option<FlowId> {
    let site = u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?);
    let seq = u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?);
    Some(FlowId {
        site: SiteId(site),
        seq,
    })
}

/// Indexes a new journal row by its file-ready time.
pub(crate) fn index_row(tx: &mut WriteTx<'_, '_>, at_ms: u64, id: FlowId) -> Result<()> {
    let key = be_key(JOURNAL_BY_TIME, &[&at_ms.to_be_bytes(), &flow_bytes(id)]);
    Ok(tx.local_put(&key, &[])?)
}

/// Marks (or clears) an emission whose processing failed with an error: its next start is a
/// retry, not a redo after a cut.
pub(crate) fn set_failed(tx: &mut WriteTx<'_, '_>, id: FlowId, failed: bool) -> Result<()> {
    let key = be_key(FAILED, &[&flow_bytes(id)]);
    if failed {
        tx.local_put(&key, &[])?;
    } else {
        tx.local_remove(&key)?;
    }
    Ok(())
}

/// The emission's latest processing failed with an error.
pub(crate) fn failed(tx: &WriteTx<'_, '_>, id: FlowId) -> Result<bool> {
    Ok(tx.local_get(&be_key(FAILED, &[&flow_bytes(id)]))?.is_some())
}

/// Builds what the monitor reads for a journal written before it existed (the time index and
/// what central saw of each remote), once: does nothing when the index holds anything. Returns
/// the rows indexed.
pub fn ensure_indexed(store: &Store) -> Result<usize> {
    let snap = store.snapshot()?;
    let indexed = !snap
        .local_range(
            JOURNAL_BY_TIME,
            &local::prefix_end(JOURNAL_BY_TIME),
            Some(1),
        )?
        .is_empty();
    if indexed {
        return Ok(0);
    }
    let rows = crate::journal::snap_all(&snap)?;
    if rows.is_empty() {
        return Ok(0);
    }
    local::write(store, |tx| {
        for row in &rows {
            let Some(at) = row.file_ready_ms else {
                continue;
            };
            index_row(tx, at, row.id)?;
            match row.kind {
                FlowKind::Emission => saw_emission(tx, row.id, at, None)?,
                FlowKind::Bootstrap | FlowKind::Return => {
                    saw_made(tx, row.site, row.id, row.kind, at)?;
                }
            }
            if row.kind == FlowKind::Return
                && !row.refused_by_remote
                && let Some(end) = row.exec_end_ms
            {
                saw_return_applied(tx, row.site, row.id, at, end)?;
            }
        }
        Ok(rows.len())
    })
}

/// What central saw of one remote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteSeen {
    /// Its latest emission received, and when it became file ready.
    pub last_emission: Option<(FlowId, u64)>,
    /// Its wall clock minus central's when that emission arrived (ms): positive when the
    /// remote's clock is ahead. Includes the time between making the file and its arrival.
    pub clock_offset_ms: Option<i64>,
    /// Its newest return it reported applied: the return, when central made it, when the
    /// remote applied it.
    pub last_applied_return: Option<(FlowId, u64, u64)>,
    /// When central made its latest bootstrap.
    pub bootstrap_ms: Option<u64>,
    /// Its newest return central made, and when.
    pub last_return_made: Option<(FlowId, u64)>,
}

fn seen_key(site: SiteId) -> Vec<u8> {
    be_key(SITE_SEEN, &[&site.0.to_be_bytes()])
}

fn update_seen(
    tx: &mut WriteTx<'_, '_>,
    site: SiteId,
    f: impl FnOnce(&mut SiteSeen),
) -> Result<()> {
    let key = seen_key(site);
    let mut seen: SiteSeen = local::get(tx, &key)?.unwrap_or_default();
    f(&mut seen);
    local::put(tx, &key, &seen)
}

/// The number of the newest return of central's `site` reported applying, if any.
pub(crate) fn last_applied_return_seq(tx: &WriteTx<'_, '_>, site: SiteId) -> Result<Option<u64>> {
    let seen: Option<SiteSeen> = local::get(tx, &seen_key(site))?;
    Ok(seen
        .and_then(|s| s.last_applied_return)
        .map(|(id, _, _)| id.seq))
}

/// An emission became file ready at central; the remote's wall clock when it made it, if known.
pub(crate) fn saw_emission(
    tx: &mut WriteTx<'_, '_>,
    id: FlowId,
    at_ms: u64,
    remote_wall_ms: Option<u64>,
) -> Result<()> {
    update_seen(tx, id.site, |s| {
        if s.last_emission.is_none_or(|(last, _)| last.seq <= id.seq) {
            s.last_emission = Some((id, at_ms));
            s.clock_offset_ms = remote_wall_ms.map(|wall| {
                let offset = i128::from(wall) - i128::from(at_ms);
                offset.clamp(i64::MIN.into(), i64::MAX.into()) as i64
            });
        }
    })
}

/// The setting of an emission's header that says how many documents its remote holds
/// reserved (R7: held out of syncs until released), for central's monitor.
pub const RESERVED_SETTING: &str = "reserved";

/// The documents a remote holds reserved, as its newest emission reported them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reserved {
    /// How many.
    pub count: u64,
    /// The emission that said so.
    pub flow: FlowId,
    /// When it became file ready (central's clock, UTC ms).
    pub at_ms: u64,
}

fn reserved_key(site: SiteId) -> Vec<u8> {
    be_key(local::RESERVED_REPORTED, &[&site.0.to_be_bytes()])
}

/// An emission reported `count` documents reserved at its remote (kept from the newest
/// emission only).
pub(crate) fn saw_reserved(
    tx: &mut WriteTx<'_, '_>,
    id: FlowId,
    at_ms: u64,
    count: u64,
) -> Result<()> {
    let key = reserved_key(id.site);
    let kept: Option<Reserved> = local::get(tx, &key)?;
    if kept.is_none_or(|k| k.flow.seq <= id.seq) {
        local::put(
            tx,
            &key,
            &Reserved {
                count,
                flow: id,
                at_ms,
            },
        )?;
    }
    Ok(())
}

/// `site` is set up again from a new bootstrap (`central reprovision`): the documents its old
/// store held reserved are lost with that store, and the new one holds none until it says
/// otherwise.
pub(crate) fn forget_reserved(tx: &mut WriteTx<'_, '_>, site: SiteId) -> Result<()> {
    Ok(tx.local_remove(&reserved_key(site))?)
}

/// The documents `site` holds reserved, as its newest emission reported them (`None` before an
/// emission that reports them).
pub fn reserved(snap: &outpost_engine::Snapshot, site: SiteId) -> Result<Option<Reserved>> {
    local::snap_get(snap, &reserved_key(site))
}

/// [`reserved`], in a write transaction.
pub(crate) fn reserved_in(tx: &WriteTx<'_, '_>, site: SiteId) -> Result<Option<Reserved>> {
    local::get(tx, &reserved_key(site))
}

/// A bootstrap or a return was made for `site`.
pub(crate) fn saw_made(
    tx: &mut WriteTx<'_, '_>,
    site: SiteId,
    id: FlowId,
    kind: FlowKind,
    at_ms: u64,
) -> Result<()> {
    let unapplied = unapplied_key(site);
    match kind {
        // A store set up from it has applied nothing else yet.
        FlowKind::Bootstrap => tx.local_remove(&unapplied)?,
        _ => {
            if local::get::<(u64, u64)>(tx, &unapplied)?.is_none() {
                local::put(tx, &unapplied, &(id.seq, at_ms))?;
            }
        }
    }
    update_seen(tx, site, |s| match kind {
        FlowKind::Bootstrap => s.bootstrap_ms = Some(at_ms),
        _ => s.last_return_made = Some((id, at_ms)),
    })
}

fn unapplied_key(site: SiteId) -> Vec<u8> {
    be_key(local::UNAPPLIED_SINCE, &[&site.0.to_be_bytes()])
}

/// The first return made for `site` after the newest it reported applied: its number and when
/// it was made (`None`: none since, as far as central counts — a return made between the one
/// applied and the report of it is counted from the next made).
pub fn unapplied_since(store: &Store, site: SiteId) -> Result<Option<(u64, u64)>> {
    local::snap_get(&store.snapshot()?, &unapplied_key(site))
}

/// `site` reported return `id` (made at `made_ms`) applied at `applied_ms`.
pub(crate) fn saw_return_applied(
    tx: &mut WriteTx<'_, '_>,
    site: SiteId,
    id: FlowId,
    made_ms: u64,
    applied_ms: u64,
) -> Result<()> {
    let unapplied = unapplied_key(site);
    if local::get::<(u64, u64)>(tx, &unapplied)?.is_some_and(|(seq, _)| seq <= id.seq) {
        tx.local_remove(&unapplied)?;
    }
    update_seen(tx, site, |s| {
        if s.last_applied_return
            .is_none_or(|(last, _, _)| last.seq <= id.seq)
        {
            s.last_applied_return = Some((id, made_ms, applied_ms));
        }
    })
}

/// What central saw of each remote that it saw anything of.
pub fn sites_seen(store: &Store) -> Result<BTreeMap<SiteId, SiteSeen>> {
    let snap = store.snapshot()?;
    let mut out = BTreeMap::new();
    for (k, v) in snap.local_range(SITE_SEEN, &local::prefix_end(SITE_SEEN), None)? {
        let Some(id) = k
            .get(SITE_SEEN.len()..)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_be_bytes)
        else {
            continue;
        };
        let seen: SiteSeen = local::snap_decode(&v)?;
        out.insert(SiteId(id), seen);
    }
    Ok(out)
}

/// A refused change as the monitor lists it: the change, rule and reason, and the flow that
/// carried it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoggedRejection {
    /// The emission that carried it.
    pub flow: FlowId,
    /// The change, its source, its rule and reason.
    pub rejection: Rejection,
}

/// Logs the changes an emission had refused.
pub(crate) fn log_rejections(
    tx: &mut WriteTx<'_, '_>,
    flow: FlowId,
    refusals: &[(usize, Rejection)],
) -> Result<()> {
    for (i, (_, r)) in refusals.iter().enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        let key = be_key(
            REJECTIONS,
            &[
                &r.at_ms.to_be_bytes(),
                &flow_bytes(flow),
                &index.to_be_bytes(),
            ],
        );
        local::put(
            tx,
            &key,
            &LoggedRejection {
                flow,
                rejection: r.clone(),
            },
        )?;
    }
    Ok(())
}

/// What happened that the person responsible should hear of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A flow's execution started again: the one before was cut off (J1).
    ExecutedAgain,
    /// A remote refused a return.
    RefusedByRemote,
    /// Central refused changes of an emission.
    Rejections,
    /// An emission held: its changes are stamped too far ahead of central's clock.
    Quarantined,
    /// An emission refused at receipt: its store does not (or no longer) speak for its site —
    /// a second store set up from one bootstrap, a superseded one, or one restored from a
    /// backup (R1; `crate::incarnation`).
    WrongStore,
    /// An upload refused: the credential of one site sent a flow naming another (S2).
    Impersonation,
    /// Several uploads from one peer refused in a short time (a misconfigured or hostile
    /// sender).
    RepeatedRefusals,
    /// A remote removed from the deployment still syncs with its own credential: what its store
    /// takes reaches no other site.
    RemovedSiteSyncs,
    /// A remote's clock is behind: it held changes stamped later than its clock said it was
    /// (R2: its writes lose every conflict until it is set right).
    ClockBehind,
    /// A remote holds what central's store never gave — a return or a change of central's
    /// numbered past its own: the store was put back from a backup or a snapshot without
    /// `outpost central restore` (its emissions wait until it is).
    PutBackWithoutRestore,
}

/// One event, written in the transaction of what it reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// What.
    pub kind: EventKind,
    /// When (central's clock, UTC ms).
    pub at_ms: u64,
    /// The remote concerned.
    pub site: SiteId,
    /// The flow.
    pub flow: FlowId,
    /// In words.
    pub text: String,
}

pub(crate) fn record_event(tx: &mut WriteTx<'_, '_>, event: &Event) -> Result<()> {
    let n: u64 = local::get(tx, EVENT_SEQ)?.unwrap_or(0) + 1;
    local::put(tx, EVENT_SEQ, &n)?;
    local::put(tx, &be_key(EVENTS, &[&n.to_be_bytes()]), event)
}

//! What the person responsible for syncs follows (SPEC J1–J4, C3): the journal newest first by
//! pages, the changes central refused with the flow that carried them, what central has seen
//! of each remote, and alerts.
//!
//! Central's processing writes what this module reads, in the same transactions as the work
//! (the write side, [`crate::monitor_records`]):
//! - an index of the journal by the time each flow became file ready (`jt/`), so that the
//!   newest page of a journal of a million rows is read without reading the rest;
//! - the refused changes, keyed by time, with the flow that carried them (`rj/`);
//! - per remote, its latest emission, the clock it showed, its newest applied return (`sw/`);
//! - notable events as they happen (`ev/`): an execution started again, a return refused by
//!   its remote, refused changes, an emission held for clock skew.
//!
//! [`staleness_history`] draws each remote's staleness over time from the journal's returns
//! (the page's sparklines, and the simulator's picture through [`staleness_series`]).
//!
//! [`evaluate`] turns events and standing conditions (a remote silent past its schedule, an
//! emission waiting too long, the disk nearly full) into [`Alert`]s, kept in the store. It
//! takes the time as an argument: the daemon calls it on a timer and e-mails what is new.

use outpost_engine::{SiteId, Store};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::config::SyncType;
use crate::flow::{FlowId, FlowKind};
use crate::journal::{Hold, JournalRow};
use crate::local;
use crate::local::{ALERT_STATE, ALERTS};
use crate::monitor_records::{
    EVENTS, FAILED, JOURNAL_BY_TIME, REJECTIONS, be_key, flow_bytes, flow_from, index_row,
};
pub use crate::monitor_records::{
    Event, EventKind, LoggedRejection, RESERVED_SETTING, Reserved, SiteSeen, ensure_indexed,
    reserved, sites_seen,
};
pub use staleness::{
    STALENESS_LOOKBACK_MS, StalenessHistory, StalenessPoint, staleness_history, staleness_series,
};

mod staleness;

/// Alerts kept for the next e-mail, at most.
const UNMAILED_MAX: usize = 500;

/// Rows looked at, at most, to fill one page: a filter that matches few rows gives a short page
/// and a cursor to go on from, never a long wait.
pub const SCAN_MAX: usize = 50_000;

/// One page, newest first, and where the next one starts (`None`: nothing older).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass it back to get the next (older) page.
    pub next: Option<String>,
    /// Index entries looked at for this page.
    pub scanned: usize,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Walks an index newest first, between times `[from_ms, to_ms)` and below the cursor, giving
/// each entry to `take` until `limit` are taken or [`SCAN_MAX`] looked at.
fn walk_back<T>(
    store: &Store,
    prefix: &[u8],
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    cursor: Option<&str>,
    limit: usize,
    mut take: impl FnMut(&outpost_engine::Snapshot, &[u8], &[u8]) -> Result<Option<T>>,
) -> Result<Page<T>> {
    let snap = store.snapshot()?;
    let start = be_key(prefix, &[&from_ms.unwrap_or(0).to_be_bytes()]);
    let mut end = to_ms.map_or_else(
        || local::prefix_end(prefix),
        |t| be_key(prefix, &[&t.to_be_bytes()]),
    );
    if let Some(c) = cursor.and_then(unhex)
        && c.starts_with(prefix)
        && c < end
    {
        end = c;
    }
    let mut items = Vec::new();
    let mut scanned = 0;
    let limit = limit.max(1);
    loop {
        if start >= end {
            return Ok(Page {
                items,
                next: None,
                scanned,
            });
        }
        let batch = snap.local_range_rev(&start, &end, Some(256))?;
        if batch.is_empty() {
            return Ok(Page {
                items,
                next: None,
                scanned,
            });
        }
        for (k, v) in batch {
            scanned += 1;
            if let Some(item) = take(&snap, &k, &v)? {
                items.push(item);
            }
            end = k;
            if items.len() >= limit || scanned >= SCAN_MAX {
                return Ok(Page {
                    items,
                    next: Some(hex(&end)),
                    scanned,
                });
            }
        }
    }
}

/// A page of the journal, newest first (by file-ready time), of the rows `keep` accepts, with
/// file-ready time in `[from_ms, to_ms)`, older than `cursor`.
pub fn journal_page(
    store: &Store,
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    cursor: Option<&str>,
    limit: usize,
    keep: impl Fn(&JournalRow) -> bool,
) -> Result<Page<JournalRow>> {
    walk_back(
        store,
        JOURNAL_BY_TIME,
        from_ms,
        to_ms,
        cursor,
        limit,
        |snap, k, _| {
            let Some(id) = k.get(JOURNAL_BY_TIME.len() + 8..).and_then(flow_from) else {
                return Ok(None);
            };
            let row = crate::journal::snap_get(snap, id)?;
            Ok(row.filter(|r| keep(r)))
        },
    )
}

/// A page of refused changes, newest first, of those `keep` accepts.
pub fn rejections_page(
    store: &Store,
    cursor: Option<&str>,
    limit: usize,
    keep: impl Fn(&LoggedRejection) -> bool,
) -> Result<Page<LoggedRejection>> {
    walk_back(store, REJECTIONS, None, None, cursor, limit, |_, _, v| {
        let r: LoggedRejection = local::snap_decode(v)?;
        Ok(keep(&r).then_some(r))
    })
}

/// An alert: a standing condition (open until it no longer holds) or an event (closed when
/// raised).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Its number.
    pub id: u64,
    /// What it is about: one open alert per key (`silent/BSOC`, `pending/02-000007`, `disk`…).
    pub key: String,
    /// The remote concerned, if one is.
    pub site: Option<SiteId>,
    /// The flow concerned, if one is.
    pub flow: Option<FlowId>,
    /// When raised (central's clock, UTC ms).
    pub raised_ms: u64,
    /// When it stopped holding (an event: when raised).
    pub closed_ms: Option<u64>,
    /// In words, with what to do.
    pub text: String,
    /// When it went out by e-mail.
    pub mailed_ms: Option<u64>,
}

impl Alert {
    /// Still holds.
    pub fn is_open(&self) -> bool {
        self.closed_ms.is_none()
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct AlertState {
    next_id: u64,
    /// Events up to this number are turned into alerts.
    events_seen: u64,
    /// The open alerts' numbers: nothing reads the whole history of alerts.
    open: Vec<u64>,
    /// The alerts not yet e-mailed, oldest first.
    unmailed: Vec<u64>,
}

fn alert_key(id: u64) -> Vec<u8> {
    be_key(ALERTS, &[&id.to_be_bytes()])
}

/// The thresholds of the standing conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// A remote is silent once this long past its due emission with none received (ms).
    pub silent_margin_ms: u64,
    /// How often a remote without a fixed-time sync is expected to emit (ms); 0: never
    /// expected.
    pub expect_every_ms: u64,
    /// An emission file ready and not processed after this many automaton cycles.
    pub pending_cycles: u32,
    /// The automaton's cycle (its sweep, ms).
    pub cycle_ms: u64,
    /// Alert when the disk holding the store has less than this share free (percent).
    pub disk_free_min_pct: u8,
    /// A remote is stale once its newest emission (processed) came this long after the first
    /// return made for it that it has not reported applied (ms): it syncs, but central's data
    /// no longer reaches it. 0: never.
    pub stale_after_ms: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            silent_margin_ms: 30 * 60 * 1000,
            expect_every_ms: 24 * 3600 * 1000,
            pending_cycles: 3,
            cycle_ms: crate::config::SWEEP_MS_DEFAULT,
            disk_free_min_pct: 5,
            stale_after_ms: 36 * 3600 * 1000,
        }
    }
}

/// Space on the disk holding the store: available and total bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disk {
    /// Bytes available.
    pub available: u64,
    /// Bytes in all.
    pub total: u64,
}

/// A condition that holds now.
struct Condition {
    key: String,
    site: Option<SiteId>,
    flow: Option<FlowId>,
    text: String,
}

fn human(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// The standing conditions at `now_ms`.
fn conditions(
    store: &Store,
    now_ms: u64,
    t: &Thresholds,
    disk: Option<Disk>,
) -> Result<Vec<Condition>> {
    let mut out = silent_remotes(store, now_ms, t)?;
    out.extend(stale_remotes(store, t)?);
    out.extend(emissions_not_processed(store, now_ms, t)?);
    out.extend(disk_nearly_full(disk, t));
    out.extend(restore_under_way(store, now_ms)?);
    out.extend(central_clock_behind(store, now_ms));
    out.extend(put_back_without_restore(store)?);
    Ok(out)
}

/// Central's store known put back without `outpost central restore`: it takes no emission,
/// gives no return and writes nothing of its own until restored (the remotes then fall silent
/// too).
fn put_back_without_restore(store: &Store) -> Result<Option<Condition>> {
    Ok(
        crate::central::put_back_noticed(store)?.map(|why| Condition {
            key: "central/put-back".into(),
            site: Some(store.site().id),
            flow: None,
            text: format!(
                "{why}. Writes at central are refused meanwhile: they would take numbers the lost \
             central gave"
            ),
        }),
    )
}

/// Central's clock behind the newest stamp central issued or took, by more than the skew it
/// tolerates: it ran ahead and was set back (or was set back). What central wrote meanwhile wins
/// every conflict until its time comes; the shops that took those stamps stamp their writes just
/// after them (R2) and are not held for it.
fn central_clock_behind(store: &Store, now_ms: u64) -> Option<Condition> {
    let high = store.clock_high_water().physical_ms();
    if high <= now_ms.saturating_add(store.skew_ms_max()) {
        return None;
    }
    Some(Condition {
        key: "clock/central".into(),
        site: Some(store.site().id),
        flow: None,
        text: format!(
            "central's clock is {} behind the newest stamp it issued or took: it ran ahead and \
             was set back, or was set back. Until its time catches up, central's writes made \
             while it ran ahead win every conflict (R2), and every site's writes are stamped \
             after them; shops are not held for those stamps. Check that central's clock is \
             right (NTP)",
            crate::central::human_ms(high - now_ms)
        ),
    })
}

/// Up to ten codes, then how many more.
fn some_of(codes: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut text = codes
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if codes.len() > SHOWN {
        text.push_str(&format!(" and {} more", codes.len() - SHOWN));
    }
    text
}

/// While central's restore from a backup is under way: whom every remote's new changes wait
/// for, and who has still to sync after applying a return of the restored central (until then
/// the restore stays under way).
fn restore_under_way(store: &Store, now_ms: u64) -> Result<Vec<Condition>> {
    let Some(status) = crate::central::restore_status(store)? else {
        return Ok(Vec::new());
    };
    let ago = human(now_ms.saturating_sub(status.since_ms));
    let mut out = Vec::new();
    if !status.waiting_for.is_empty() {
        out.push(Condition {
            key: "restore/waiting".into(),
            site: None,
            flow: None,
            text: format!(
                "central was put back from a backup {ago} ago: no remote's new changes are \
                 taken until every remote has synced once since; {} still to: {}. Ask them \
                 for a sync; remove a shop that has closed (central remove-remote)",
                status.waiting_for.len(),
                some_of(&status.waiting_for)
            ),
        });
    }
    if !status.not_sent_back.is_empty() {
        out.push(Condition {
            key: "restore/open".into(),
            site: None,
            flow: None,
            text: format!(
                "central's restore from a backup ({ago} ago) is under way until every remote \
                 has synced after applying a return of the restored central; {} still to: {}. \
                 Until then every return carries again what central took since the restore. \
                 A no-return remote needs a return (central export-return, or one remote sync \
                 without --no-return)",
                status.not_sent_back.len(),
                some_of(&status.not_sent_back)
            ),
        });
    }
    Ok(out)
}

/// The remotes silent past their schedule (a fixed-time emission due and none come, or nothing
/// for longer than expected).
fn silent_remotes(store: &Store, now_ms: u64, t: &Thresholds) -> Result<Vec<Condition>> {
    let mut out = Vec::new();
    let seen = sites_seen(store)?;
    if let Some(config) = crate::central::config(store)? {
        for remote in &config.remotes {
            let Some(s) = seen.get(&remote.id) else {
                continue;
            };
            let heard = s.last_emission.map(|(_, at)| at);
            let Some(since) = heard.max(s.bootstrap_ms) else {
                continue;
            };
            let fixed = remote.sync_types.iter().find_map(|t| match t {
                SyncType::Fixed { emission, .. } => Some(*emission),
                _ => None,
            });
            let due = match (fixed, remote.time_zone.parse::<crate::schedule::Zone>()) {
                (Some(at), Ok(zone)) => {
                    let due =
                        zone.latest_at_or_before(at, now_ms.saturating_sub(t.silent_margin_ms));
                    // Due before we had heard of it at all (a new remote), or heard of since.
                    (due > 0 && since.saturating_add(t.silent_margin_ms) < due).then(|| {
                        format!(
                            "its emission was due at {at} ({}) and none has come",
                            remote.time_zone
                        )
                    })
                }
                _ if t.expect_every_ms > 0 => {
                    let due = since.saturating_add(t.expect_every_ms);
                    (now_ms >= due.saturating_add(t.silent_margin_ms)).then(|| {
                        format!(
                            "nothing for {}; it is expected to emit every {}",
                            human(now_ms - since),
                            human(t.expect_every_ms)
                        )
                    })
                }
                _ => None,
            };
            if let Some(why) = due {
                let last = match s.last_emission {
                    Some((id, _)) => format!("its last emission is {id}"),
                    None => "it has sent no emission since its bootstrap".to_owned(),
                };
                out.push(Condition {
                    key: format!("silent/{}", remote.code),
                    site: Some(remote.id),
                    flow: None,
                    text: format!(
                        "{} is silent: {why} ({last}). Check the site's connection and its \
                         scheduler, or ask it for a sync.",
                        remote.code
                    ),
                });
            }
        }
    }
    Ok(out)
}

/// The remotes that emit but apply no return: their newest emission came more than
/// `stale_after` after the first return made for them that they have not reported applied — a
/// machine asleep at its fetch time, a return its remote refuses. Their emissions keep coming,
/// so they are not silent; central's data and their refused changes no longer reach them.
fn stale_remotes(store: &Store, t: &Thresholds) -> Result<Vec<Condition>> {
    let mut out = Vec::new();
    if t.stale_after_ms == 0 {
        return Ok(out);
    }
    let seen = sites_seen(store)?;
    let Some(config) = crate::central::config(store)? else {
        return Ok(out);
    };
    for remote in &config.remotes {
        if remote.sync_types.iter().all(|s| *s == SyncType::NoReturn) {
            continue;
        }
        let Some(s) = seen.get(&remote.id) else {
            continue;
        };
        let Some((emission, emitted)) = s.last_emission else {
            continue;
        };
        // Counted from the first return made for it that it has not reported applied: a
        // remote that syncs seldom (by files, or on demand) applies each return it is given,
        // and reports it with its next emission, however late.
        let Some((_, base)) = crate::monitor_records::unapplied_since(store, remote.id)? else {
            continue;
        };
        // The emission's reports (the returns it applied) are taken when it is processed.
        let processed =
            crate::journal::row(store, emission)?.is_some_and(|r| r.exec_end_ms.is_some());
        if processed && emitted > base.saturating_add(t.stale_after_ms) {
            let newest = match s.last_applied_return {
                Some((id, _, _)) => format!("the newest it applied is {id}"),
                None => "it has applied none since its bootstrap".to_owned(),
            };
            out.push(Condition {
                key: format!("stale/{}", remote.code),
                site: Some(remote.id),
                flow: None,
                text: format!(
                    "{} applied no return made in the {} before its newest emission \
                     {emission} ({newest}): central's changes no longer reach it. Check that its \
                     machine is on and `outpost remote run` running at its fetch time, and that \
                     central prepares its returns, or ask it for a sync.",
                    remote.code,
                    human(emitted - base),
                ),
            });
        }
    }
    Ok(out)
}

/// The pending emissions whose processing fails, or that have waited more than the allowed
/// cycles (an emission held for clock skew has its own event instead).
fn emissions_not_processed(store: &Store, now_ms: u64, t: &Thresholds) -> Result<Vec<Condition>> {
    let mut out = Vec::new();
    let sites = store.sites();
    let code = |s: SiteId| {
        sites
            .get(s)
            .map_or_else(|| s.to_string(), |s| s.code.to_string())
    };
    let wait_max = t
        .cycle_ms
        .saturating_mul(u64::from(t.pending_cycles.max(1)));
    for id in crate::central::pending_emissions(store)? {
        let Some(row) = crate::journal::row(store, id)? else {
            continue;
        };
        if matches!(row.hold, Hold::Quarantined { .. }) {
            continue;
        }
        let snap_failed = store
            .snapshot()?
            .local_get(&be_key(FAILED, &[&flow_bytes(id)]))?
            .is_some();
        if snap_failed {
            out.push(Condition {
                key: format!("failing/{id}"),
                site: Some(row.site),
                flow: Some(id),
                text: format!(
                    "emission {id} of {} cannot be processed: {}. It is tried again at every \
                     cycle; the emissions after it are processed all the same",
                    code(row.site),
                    row.error.as_deref().unwrap_or("no reason recorded")
                ),
            });
            continue;
        }
        // Waiting since it became file ready, or since its processing (re)started.
        let ready = row.file_ready_ms.unwrap_or(now_ms);
        let since = row.exec_start_ms.map_or(ready, |s| s.max(ready));
        if now_ms.saturating_sub(since) > wait_max {
            out.push(Condition {
                key: format!("pending/{id}"),
                site: Some(row.site),
                flow: Some(id),
                text: format!(
                    "emission {id} of {} has been file ready for {} and is not processed \
                     ({} automaton cycles){}",
                    code(row.site),
                    human(now_ms.saturating_sub(ready)),
                    t.pending_cycles,
                    row.error
                        .as_deref()
                        .map_or_else(String::new, |e| format!(": {e}"))
                ),
            });
        }
    }
    Ok(out)
}

/// Central's disk below the free-space threshold.
fn disk_nearly_full(disk: Option<Disk>, t: &Thresholds) -> Option<Condition> {
    let d = disk?;
    (d.total > 0
        && d.available.saturating_mul(100) < d.total.saturating_mul(t.disk_free_min_pct.into()))
    .then(|| Condition {
        key: "disk".into(),
        site: None,
        flow: None,
        text: format!(
            "the disk of central's store is nearly full: {} MiB free of {} MiB (below {} %)",
            d.available >> 20,
            d.total >> 20,
            t.disk_free_min_pct
        ),
    })
}

/// Brings the alerts up to date at `now_ms`: new events become (closed) alerts, conditions that
/// now hold open one (once per key), open ones that no longer hold are closed. Returns the
/// alerts raised by this call.
pub fn evaluate(
    store: &Store,
    now_ms: u64,
    thresholds: &Thresholds,
    disk: Option<Disk>,
) -> Result<Vec<Alert>> {
    let holding = conditions(store, now_ms, thresholds, disk)?;
    local::write(store, |tx| {
        let mut state: AlertState = local::get(tx, ALERT_STATE)?.unwrap_or_default();
        let mut raised = Vec::new();
        let new_alert =
            |state: &mut AlertState, key: String, site, flow, closed: bool, text: String| {
                state.next_id += 1;
                Alert {
                    id: state.next_id,
                    key,
                    site,
                    flow,
                    raised_ms: now_ms,
                    closed_ms: closed.then_some(now_ms),
                    text,
                    mailed_ms: None,
                }
            };
        let start = be_key(EVENTS, &[&(state.events_seen + 1).to_be_bytes()]);
        for (k, v) in tx.local_range(&start, &local::prefix_end(EVENTS), None)? {
            let event: Event = local::snap_decode(&v)?;
            if let Some(n) = k
                .get(EVENTS.len()..)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
            {
                state.events_seen = state.events_seen.max(n);
            }
            let key = format!("{:?}/{}", event.kind, event.flow).to_lowercase();
            let mut alert = new_alert(
                &mut state,
                key,
                Some(event.site),
                Some(event.flow),
                true,
                event.text,
            );
            alert.raised_ms = event.at_ms;
            alert.closed_ms = Some(event.at_ms);
            raised.push(alert);
        }
        let mut open = Vec::new();
        for id in &state.open {
            if let Some(a) = local::get::<Alert>(tx, &alert_key(*id))? {
                open.push(a);
            }
        }
        for a in &mut open {
            if !holding.iter().any(|c| c.key == a.key) {
                a.closed_ms = Some(now_ms);
                local::put(tx, &alert_key(a.id), a)?;
            }
        }
        for c in holding {
            if let Some(a) = open.iter_mut().find(|a| a.is_open() && a.key == c.key) {
                // Still holds: it says how things stand now (who is still waited for), without
                // being mailed again.
                if a.text != c.text {
                    a.text = c.text;
                    local::put(tx, &alert_key(a.id), a)?;
                }
                continue;
            }
            raised.push(new_alert(&mut state, c.key, c.site, c.flow, false, c.text));
        }
        state.open = open
            .iter()
            .chain(&raised)
            .filter(|a| a.is_open())
            .map(|a| a.id)
            .collect();
        for a in &raised {
            local::put(tx, &alert_key(a.id), a)?;
            state.unmailed.push(a.id);
        }
        // Without e-mail nothing takes them: the backlog is bounded, the oldest closed ones
        // (events) left out first — an open one (a silent shop, a full disk) stays until
        // mailed — and counted, for the next digest to say.
        let mut excess = state.unmailed.len().saturating_sub(UNMAILED_MAX);
        if excess > 0 {
            let open: std::collections::BTreeSet<u64> = state.open.iter().copied().collect();
            let mut left_out = 0u64;
            state.unmailed.retain(|id| {
                if excess > 0 && !open.contains(id) {
                    excess -= 1;
                    left_out += 1;
                    false
                } else {
                    true
                }
            });
            let before: u64 = local::get(tx, local::MAIL_LEFT_OUT)?.unwrap_or(0);
            local::put(tx, local::MAIL_LEFT_OUT, &(before + left_out))?;
        }
        local::put(tx, ALERT_STATE, &state)?;
        Ok(raised)
    })
}

/// The alerts, newest first: every open one, then up to `recent` closed ones.
pub fn alerts(store: &Store, recent: usize) -> Result<Vec<Alert>> {
    let snap = store.snapshot()?;
    let state: AlertState = local::snap_get(&snap, ALERT_STATE)?.unwrap_or_default();
    let mut out = Vec::new();
    for id in state.open.iter().rev() {
        if let Some(a) = local::snap_get::<Alert>(&snap, &alert_key(*id))? {
            out.push(a);
        }
    }
    let mut end = local::prefix_end(ALERTS);
    let mut closed = 0;
    while closed < recent {
        let batch = snap.local_range_rev(ALERTS, &end, Some(256))?;
        let Some((last, _)) = batch.last() else {
            break;
        };
        end = last.clone();
        for (_, v) in &batch {
            let a: Alert = local::snap_decode(v)?;
            if !a.is_open() && closed < recent {
                out.push(a);
                closed += 1;
            }
        }
    }
    Ok(out)
}

/// Alerts not yet e-mailed, oldest first.
pub fn unmailed(store: &Store) -> Result<Vec<Alert>> {
    let snap = store.snapshot()?;
    let state: AlertState = local::snap_get(&snap, ALERT_STATE)?.unwrap_or_default();
    let mut out = Vec::new();
    for id in &state.unmailed {
        if let Some(a) = local::snap_get::<Alert>(&snap, &alert_key(*id))? {
            out.push(a);
        }
    }
    Ok(out)
}

/// How many alerts were left out of the e-mail since the last one sent: while e-mail fails, the
/// alerts kept for it are bounded, and the oldest closed ones go first. The digest says so.
pub fn unmailed_left_out(store: &Store) -> Result<u64> {
    Ok(local::snap_get(&store.snapshot()?, local::MAIL_LEFT_OUT)?.unwrap_or(0))
}

/// Marks alerts as e-mailed at `at_ms` (and the count of those left out before as told).
pub fn mark_mailed(store: &Store, ids: &[u64], at_ms: u64) -> Result<()> {
    local::write(store, |tx| {
        tx.local_remove(local::MAIL_LEFT_OUT)?;
        for id in ids {
            let key = alert_key(*id);
            if let Some(mut a) = local::get::<Alert>(tx, &key)? {
                a.mailed_ms = Some(at_ms);
                local::put(tx, &key, &a)?;
            }
        }
        let mut state: AlertState = local::get(tx, ALERT_STATE)?.unwrap_or_default();
        state.unmailed.retain(|id| !ids.contains(id));
        local::put(tx, ALERT_STATE, &state)
    })
}

/// The state of a journal row, as the monitor filters and shows it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowState {
    /// An emission file ready, not yet processed; a return not yet applied.
    Waiting,
    /// Processed (an emission) or applied by its remote (a return).
    Done,
    /// An emission held for clock skew.
    Quarantined,
    /// An emission held, then superseded by a later one.
    Superseded,
    /// An error: processing failed, or the remote refused the return.
    Failed,
}

/// A row's state.
pub fn row_state(row: &JournalRow) -> RowState {
    match row.hold {
        Hold::Quarantined { .. } => return RowState::Quarantined,
        Hold::Superseded => return RowState::Superseded,
        Hold::None => {}
    }
    let error = row.error.as_deref().unwrap_or("");
    if row.refused_by_remote {
        return RowState::Failed;
    }
    match (row.kind, row.exec_end_ms) {
        (FlowKind::Bootstrap, _) => RowState::Done,
        (FlowKind::Emission, None) if !error.is_empty() && row.executions > 0 => RowState::Failed,
        (_, Some(_)) => RowState::Done,
        (_, None) => RowState::Waiting,
    }
}

/// Benchmarks only: `n` synthetic emissions in the journal, with their index, as if the remotes
/// `sites` had sent one each second from `start_ms` in turn; one in a thousand failed. Written
/// 10,000 per transaction.
#[doc(hidden)]
pub fn fill_synthetic_journal(
    store: &Store,
    sites: &[SiteId],
    n: u64,
    start_ms: u64,
) -> Result<()> {
    let mut done = 0u64;
    let count = sites.len().max(1) as u64;
    while done < n {
        let upto = (done + 10_000).min(n);
        local::write(store, |tx| {
            for i in done..upto {
                let site = sites
                    .get(usize::try_from(i % count).unwrap_or(0))
                    .copied()
                    .unwrap_or(SiteId(2));
                let id = FlowId {
                    site,
                    seq: i / count + 1,
                };
                let at = start_ms + i * 1000;
                let mut row =
                    JournalRow::new(id, FlowKind::Emission, site, crate::SyncMode::Immediate);
                row.file_ready_ms = Some(at);
                row.exec_start_ms = Some(at + 10);
                row.executions = 1;
                row.n_changes = 40;
                row.bytes = 2_000;
                if i % 1000 == 999 {
                    row.error = Some("flow refused: synthetic".into());
                } else {
                    row.exec_end_ms = Some(at + 50);
                }
                crate::journal::put(tx, &row)?;
                index_row(tx, at, id)?;
            }
            Ok(())
        })?;
        done = upto;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_engine::{FieldKind, ManualClock, Schema, Site, StoreConfig, TableDef};

    /// C3 while e-mail is down: alerts not yet mailed are kept up to a bound, and the oldest
    /// went first — a standing one (a disk nearly full, a silent shop) raised before a flood of
    /// events was never mailed, and the digest did not say anything was left out. Open alerts
    /// now stay until mailed; what is left out is counted for the digest to say.
    #[test]
    fn c3_an_open_alert_outlives_a_flood_of_events_while_e_mail_is_down()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let schema = Schema::new([TableDef::shared("t").field("f", FieldKind::Text)])?;
        let site = Site::central(1, "ASOC")?;
        let store = Store::in_memory(StoreConfig::new(site, schema, ManualClock::new(1_000)))?;
        let full = Disk {
            available: 1,
            total: 100,
        };
        evaluate(&store, 1_000, &Thresholds::default(), Some(full))?;
        let flood = UNMAILED_MAX + 20;
        local::write(&store, |tx| {
            for n in 0..flood {
                crate::monitor_records::record_event(
                    tx,
                    &crate::monitor_records::Event {
                        kind: crate::monitor_records::EventKind::ClockBehind,
                        at_ms: 2_000,
                        site: SiteId(2),
                        flow: FlowId {
                            site: SiteId(2),
                            seq: n as u64 + 1,
                        },
                        text: format!("event {n}"),
                    },
                )?;
            }
            Ok(())
        })?;
        evaluate(&store, 3_000, &Thresholds::default(), Some(full))?;
        let kept = unmailed(&store)?;
        assert_eq!(kept.len(), UNMAILED_MAX);
        assert!(
            kept.iter().any(|a| a.key == "disk"),
            "the disk alert was dropped"
        );
        assert_eq!(unmailed_left_out(&store)?, 21);
        mark_mailed(
            &store,
            &kept.iter().map(|a| a.id).collect::<Vec<_>>(),
            4_000,
        )?;
        assert_eq!(unmailed_left_out(&store)?, 0);
        Ok(())
    }

    #[test]
    fn j1_a_journal_written_before_the_index_is_indexed_once_at_start()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let schema = Schema::new([TableDef::shared("t").field("f", FieldKind::Text)])?;
        let site = Site::central(1, "ASOC")?;
        let store = Store::in_memory(StoreConfig::new(site, schema, ManualClock::new(1_000)))?;
        let sites = [SiteId(2), SiteId(3)];
        fill_synthetic_journal(&store, &sites, 120, 5_000)?;
        // As a store of before the monitor: no index, nothing seen.
        local::write(&store, |tx| {
            local::remove_all(tx, JOURNAL_BY_TIME)?;
            local::remove_all(tx, crate::monitor_records::SITE_SEEN)
        })?;
        assert!(
            journal_page(&store, None, None, None, 500, |_| true)?
                .items
                .is_empty()
        );
        assert_eq!(ensure_indexed(&store)?, 120);
        assert_eq!(ensure_indexed(&store)?, 0, "once");
        let page = journal_page(&store, None, None, None, 500, |_| true)?;
        assert_eq!(page.items.len(), 120);
        assert!(
            page.items
                .windows(2)
                .all(|w| w[0].file_ready_ms > w[1].file_ready_ms)
        );
        let seen = sites_seen(&store)?;
        assert_eq!(
            seen[&SiteId(3)].last_emission.map(|(id, _)| id.seq),
            Some(60)
        );
        assert_eq!(
            seen[&SiteId(3)].clock_offset_ms,
            None,
            "not known: not made up"
        );
        Ok(())
    }
}

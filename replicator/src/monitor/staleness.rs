//! Each remote's staleness over time, from central's journal: how old the newest information
//! from central that the remote had was, at each instant — the time since central made the
//! newest return (or bootstrap) the remote had applied. The monitor's sites list shows its
//! value now; this is its history, drawn as a sawtooth (rising one millisecond a millisecond,
//! dropping when a return is applied) by the monitor page and by the simulator's picture, from
//! the same function.
//!
//! A return counts from the end of its execution as the remote reported it (J1), never before
//! central made it; a return refused by its remote does not count; a bootstrap counts from when
//! central made it (the remote is set up from it). The remote's report of a return applied
//! reaches central with the remote's next exchange (at once over the network, with the next
//! emission over files): until then the history does not know of it.

use std::collections::BTreeMap;

use outpost_engine::{SiteId, Store};

use crate::Result;
use crate::flow::FlowKind;
use crate::journal::JournalRow;
use crate::monitor_records::sites_seen;

/// One instant of a remote's staleness: `(UTC ms, staleness ms)`.
pub type StalenessPoint = (u64, u64);

/// How far before the start of a history the journal is read, for what the remote had then.
pub const STALENESS_LOOKBACK_MS: u64 = 7 * 24 * 3600 * 1000;

/// Each remote's staleness over `[from_ms, to_ms]`, from the returns and bootstraps in `rows`
/// (any order; other rows are left aside): points in time order, two at each return applied
/// (just before and just after). A remote appears once it has information from central by
/// `to_ms`; its first point is `from_ms` when it had some then, its last is `to_ms`.
pub fn staleness_series<'a>(
    rows: impl IntoIterator<Item = &'a JournalRow>,
    from_ms: u64,
    to_ms: u64,
) -> BTreeMap<SiteId, Vec<StalenessPoint>> {
    // Per remote: (when it had the information, when central made it).
    let mut events: BTreeMap<SiteId, Vec<(u64, u64)>> = BTreeMap::new();
    for row in rows {
        let Some(made) = row.file_ready_ms else {
            continue;
        };
        let at = match row.kind {
            FlowKind::Bootstrap => made,
            FlowKind::Return if !row.refused_by_remote => match row.exec_end_ms {
                // A remote's clock may be behind central's: never before it was made.
                Some(end) => end.max(made),
                None => continue,
            },
            FlowKind::Return | FlowKind::Emission => continue,
        };
        events.entry(row.site).or_default().push((at, made));
    }
    let mut out = BTreeMap::new();
    for (site, mut list) in events {
        list.sort_unstable();
        let mut points = Vec::new();
        // The newest information it had: when central made it.
        let mut since: Option<u64> = None;
        let mut started = false;
        for (at, made) in list {
            if at > to_ms {
                break;
            }
            if since.is_some_and(|s| s >= made) {
                continue; // an older return applied late adds nothing
            }
            if at < from_ms {
                since = Some(made);
                continue;
            }
            if let Some(s) = since {
                if !started {
                    points.push((from_ms, from_ms.saturating_sub(s)));
                }
                points.push((at, at.saturating_sub(s)));
            }
            started = true;
            points.push((at, at.saturating_sub(made)));
            since = Some(made);
        }
        let Some(s) = since else {
            continue;
        };
        if !started {
            points.push((from_ms, from_ms.saturating_sub(s)));
        }
        points.push((to_ms, to_ms.saturating_sub(s)));
        out.insert(site, points);
    }
    out
}

/// Each remote's staleness over `[from_ms, to_ms]` as [`staleness_series`] draws it, from the
/// journal of central's `store`: the returns and bootstraps made from
/// [`STALENESS_LOOKBACK_MS`] before `from_ms` on, newest first, at most `rows_max` of them (and
/// at most [`crate::monitor::SCAN_MAX`] journal rows looked at). A remote with nothing in that
/// stretch of the journal counts from what central last saw of it.
pub fn staleness_history(
    store: &Store,
    from_ms: u64,
    to_ms: u64,
    rows_max: usize,
) -> Result<StalenessHistory> {
    let page = crate::monitor::journal_page(
        store,
        Some(from_ms.saturating_sub(STALENESS_LOOKBACK_MS)),
        Some(to_ms.saturating_add(1)),
        None,
        rows_max,
        |r| matches!(r.kind, FlowKind::Return | FlowKind::Bootstrap),
    )?;
    let mut sites = staleness_series(&page.items, from_ms, to_ms);
    for (site, seen) in sites_seen(store)? {
        let since = seen
            .last_applied_return
            .map(|(_, made, _)| made)
            .max(seen.bootstrap_ms);
        if let Some(s) = since.filter(|s| *s <= from_ms) {
            sites
                .entry(site)
                .or_insert_with(|| vec![(from_ms, from_ms - s), (to_ms, to_ms.saturating_sub(s))]);
        }
    }
    Ok(StalenessHistory {
        sites,
        complete: page.next.is_none(),
    })
}

/// What [`staleness_history`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StalenessHistory {
    /// Each remote's points, in time order.
    pub sites: BTreeMap<SiteId, Vec<StalenessPoint>>,
    /// `false`: the journal held more returns than were read; the oldest part of some remote's
    /// history may be missing.
    pub complete: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SyncMode;
    use crate::flow::FlowId;

    const H: u64 = 3_600_000;

    fn row(kind: FlowKind, seq: u64, made: u64, applied: Option<u64>) -> JournalRow {
        let id = FlowId {
            site: SiteId(1),
            seq,
        };
        let mut r = JournalRow::new(id, kind, SiteId(2), SyncMode::Deferred);
        r.file_ready_ms = Some(made);
        r.exec_end_ms = applied;
        r
    }

    #[test]
    fn j4_staleness_rises_until_a_return_is_applied_and_drops_to_its_age() {
        let rows = [
            row(FlowKind::Bootstrap, 1, 0, None),
            // Made at 23:00, applied at 23:20 (C5).
            row(FlowKind::Return, 2, 23 * H, Some(23 * H + H / 3)),
            // Made the next day, never applied: it does not count.
            row(FlowKind::Return, 3, 47 * H, None),
            row(FlowKind::Emission, 4, 21 * H, Some(21 * H)),
        ];
        let s = staleness_series(&rows, 0, 48 * H);
        assert_eq!(
            s[&SiteId(2)],
            vec![
                (0, 0),
                (23 * H + H / 3, 23 * H + H / 3),
                (23 * H + H / 3, H / 3),
                (48 * H, 25 * H),
            ]
        );
    }

    #[test]
    fn j4_staleness_from_before_the_window_a_refused_return_and_an_older_one_applied_late() {
        let mut refused = row(FlowKind::Return, 3, 30 * H, Some(31 * H));
        refused.refused_by_remote = true;
        let rows = [
            row(FlowKind::Return, 2, 10 * H, Some(11 * H)),
            refused,
            // Applied after a newer one: adds nothing.
            row(FlowKind::Return, 4, 20 * H, Some(40 * H)),
            row(FlowKind::Return, 5, 35 * H, Some(36 * H)),
        ];
        let s = staleness_series(&rows, 24 * H, 48 * H);
        assert_eq!(
            s[&SiteId(2)],
            vec![
                (24 * H, 14 * H),
                (36 * H, 26 * H),
                (36 * H, H),
                (48 * H, 13 * H),
            ]
        );
        // A remote with nothing from central yet has no series.
        assert!(staleness_series(&rows, 0, 5 * H).is_empty());
    }
}

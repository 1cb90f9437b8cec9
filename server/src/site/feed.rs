//! The change feed for watchers: committed changes computed O(Δ) with `changes_lacking` from
//! the knowledge last fed, kept in memory, long-polled.

use super::*;

/// The changes committed since the server started, for watchers.
#[derive(Debug)]
pub(super) struct Feed {
    pub(super) knowledge: Knowledge,
    /// This run's first number ([`run_start`]): a cursor below it is an earlier run's.
    pub(super) start: u64,
    pub(super) next: u64,
    pub(super) events: VecDeque<ChangeEvent>,
    /// The store's [`Store::rewrites`] when last fed.
    pub(super) rewrites: u64,
}

/// The first number of a run of the server that starts at `now_ms`: the time in milliseconds
/// times 1,024, so that a cursor of an earlier run (which numbered fewer than 1,024 changes a
/// millisecond) is below it and told it missed changes — numbering from 1 at every start, a
/// cursor of an earlier run read as this run's and skipped its first changes silently. Below
/// 2⁵³ (exact in a JavaScript number) until the year 2248.
pub(super) fn run_start(now_ms: u64) -> u64 {
    now_ms.saturating_mul(1024).max(1)
}

/// Events kept for watchers that fall behind.
pub(super) const FEED_MAX: usize = 100_000;

/// Brings the watchers' feed up to date with what the store committed (O(Δ)).
pub(super) fn refresh_feed(state: &SiteState) {
    let mut feed = lock(&state.feed);
    // A register put back or dropped, or merged again under a dot already fed (a refused
    // write reverted by a return, R5's adopted creation): no new dot shows it, so every
    // watcher is told it missed changes — the kept events dropped and a number skipped — and
    // reads again what it shows.
    let rewrites = state.store.rewrites();
    if rewrites != feed.rewrites {
        feed.rewrites = rewrites;
        feed.events.clear();
        feed.next += 1;
        let next = feed.next;
        state.feed_bumped.send_replace(next);
    }
    let lacking = match state.store.changes_lacking(&feed.knowledge, false) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("the change feed: {e}");
            return;
        }
    };
    let knowledge = lacking.knowledge().clone();
    let sites = state.store.sites();
    let mut batch = Vec::new();
    for change in lacking {
        let change = match change {
            Ok(c) => c,
            Err(e) => {
                // Nothing of this pass is fed: the next pass starts from the same knowledge.
                tracing::error!("the change feed: {e}");
                return;
            }
        };
        batch.push(change);
    }
    let mut added = false;
    for change in batch {
        let (field, value) = match &change.slot {
            Slot::Created => continue,
            Slot::Tombstone => (None, serde_json::Value::Bool(true)),
            Slot::Field(f) => (Some(f.clone()), outpost_api::to_json(&change.value)),
        };
        let seq = feed.next;
        feed.next += 1;
        feed.events.push_back(ChangeEvent {
            seq,
            table: change.table,
            key: change.key,
            field,
            value,
            site: sites
                .get(change.dot.site)
                .map_or_else(|| change.dot.site.to_string(), |s| s.code.to_string()),
        });
        added = true;
        if feed.events.len() > FEED_MAX {
            feed.events.pop_front();
        }
    }
    feed.knowledge = knowledge;
    let next = feed.next;
    drop(feed);
    if added {
        state.feed_bumped.send_replace(next);
    }
}

#[derive(Deserialize, Debug)]
pub(super) struct ChangesQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait_ms: u64,
}

pub(super) fn changes_after(state: &SiteState, after: u64) -> Changes {
    let feed = lock(&state.feed);
    let first = feed.events.front().map_or(feed.next, |e| e.seq);
    // A cursor from an earlier run of the server (below this run's start, or beyond what it
    // has numbered: a clock set back), or one older than what is kept: changes were missed;
    // start again from what is kept.
    let lost = after >= feed.next || after.saturating_add(1) < first;
    let from = if lost { first } else { after.saturating_add(1) };
    let skip = usize::try_from(from.saturating_sub(first)).unwrap_or(usize::MAX);
    let changes: Vec<ChangeEvent> = feed.events.iter().skip(skip).take(5_000).cloned().collect();
    let seq = changes
        .last()
        .map_or(if lost { first.saturating_sub(1) } else { after }, |e| {
            e.seq
        });
    Changes {
        seq,
        gap: lost && !(after == 0 && first == feed.start),
        changes,
    }
}

pub(super) async fn changes(
    State(state): State<Shared>,
    _w: Workstation,
    Query(q): Query<ChangesQuery>,
) -> Response {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(q.wait_ms.min(300_000));
    let mut bumped = state.feed_bumped.subscribe();
    loop {
        bumped.mark_unchanged();
        let view = changes_after(&state, q.after);
        if !view.changes.is_empty() || view.gap {
            return Json(view).into_response();
        }
        tokio::select! {
            r = bumped.changed() => if r.is_err() { return Json(view).into_response(); },
            () = tokio::time::sleep_until(deadline) => return Json(view).into_response(),
        }
    }
}

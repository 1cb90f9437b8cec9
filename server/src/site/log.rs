//! The workstation log: who wrote what from which workstation, refused writes included; pruned
//! past its retention.

use super::*;

/// One line of the workstation log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogEntry {
    /// Its number.
    pub seq: u64,
    /// When (UTC ms, the site's clock).
    pub at_ms: u64,
    /// The workstation user.
    pub user: String,
    /// `put`, `create`, `delete`, `reserve`, `release`, `release (lease ran out)`, `setting`.
    pub op: String,
    /// The table (empty for a setting).
    pub table: String,
    /// The record's key (a setting's name).
    pub key: String,
    /// What was written, as JSON.
    pub fields: Option<serde_json::Value>,
    /// Why it was refused (the rule and reason), if it was.
    pub refused: Option<String>,
}

/// Appends an entry to the workstation log inside a write transaction. Its number follows the
/// last and is at least its time in milliseconds times 1,024: a store put back from a backup (or
/// set up again) numbers past the entries the lost store gave, which a reader's cursor may
/// hold — numbered on from the backup's last, they were skipped by that reader, silently.
pub(super) fn log_put(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    entry: &mut LogEntry,
) -> outpost_engine::Result<()> {
    let n = tx
        .local_get(LOG_SEQ)?
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
        .saturating_add(1)
        .max(entry.at_ms.saturating_mul(1024));
    tx.local_put(LOG_SEQ, &n.to_be_bytes())?;
    entry.seq = n;
    let bytes =
        serde_json::to_vec(&entry).map_err(|e| outpost_engine::Error::Mapping(e.to_string()))?;
    let mut key = LOG.to_vec();
    key.extend_from_slice(&n.to_be_bytes());
    tx.local_put(&key, &bytes)
}

pub(super) const DAY_MS: u64 = 86_400_000;

pub(super) fn log_end() -> Vec<u8> {
    let mut end = LOG.to_vec();
    end.extend_from_slice(&u64::MAX.to_be_bytes());
    end
}

pub(super) fn read_entry(v: &[u8]) -> Option<LogEntry> {
    serde_json::from_slice(v).ok()
}

/// The time before which the workstation log's entries go in one pruning run (hourly), or
/// `None` when the log is kept whole. Entries older than `keep_days` go, age counted from
/// `now_ms` or the newest entry, whichever is earlier; and one run takes at most a day's worth
/// of entries from the oldest on. So a clock set far ahead does not wipe the log at once: it
/// loses it no faster than 24 days of entries a day, while central's clock-skew quarantine
/// reports the clock. A log that is behind (a year of entries at the first start of this
/// version) catches up at the same pace.
pub(super) fn prune_cutoff(
    store: &Store,
    now_ms: u64,
    keep_days: u64,
) -> outpost_engine::Result<Option<u64>> {
    if keep_days == 0 {
        return Ok(None);
    }
    let snap = store.snapshot()?;
    let end = log_end();
    let newest = snap
        .local_range_rev(LOG, &end, Some(1))?
        .first()
        .and_then(|(_, v)| read_entry(v))
        .map_or(now_ms, |e| e.at_ms);
    let Some(oldest) = snap
        .local_range(LOG, &end, Some(1))?
        .first()
        .map(|(_, v)| read_entry(v).map_or(0, |e| e.at_ms))
    else {
        return Ok(None);
    };
    let by_age = now_ms
        .min(newest)
        .saturating_sub(keep_days.saturating_mul(DAY_MS));
    Ok(Some(by_age.min(oldest.saturating_add(DAY_MS))))
}

/// Removes up to `max` of the workstation log's entries written before `cutoff`, oldest first,
/// in one transaction; returns how many went and whether more may be due (the limit was
/// reached). Entries are numbered in the order they were written, so the pruning stops at the
/// first one young enough. An entry that cannot be read is kept (and reported), and the scan
/// goes on past it.
pub(super) fn prune_log(
    store: &Store,
    cutoff: u64,
    max: usize,
) -> outpost_engine::Result<(usize, bool)> {
    let snap = store.snapshot()?;
    let end = log_end();
    let mut start = LOG.to_vec();
    let mut doomed = Vec::new();
    let mut unreadable = 0;
    let mut young = false;
    'pages: while doomed.len() < max && !young {
        let page = snap.local_range(&start, &end, Some(max))?;
        let Some((last, _)) = page.last() else { break };
        start = last.clone();
        start.push(0);
        let full = page.len() == max;
        for (k, v) in page {
            match read_entry(&v) {
                Some(e) if e.at_ms < cutoff => {
                    doomed.push(k);
                    if doomed.len() == max {
                        break 'pages;
                    }
                }
                Some(_) => {
                    young = true;
                    break;
                }
                None => unreadable += 1,
            }
        }
        if !full {
            break;
        }
    }
    if unreadable > 0 {
        tracing::warn!(
            entries = unreadable,
            "workstation log entries that cannot be read are kept"
        );
    }
    if doomed.is_empty() {
        return Ok((0, false));
    }
    store.write(|tx| {
        for k in &doomed {
            tx.local_remove(k)?;
        }
        Ok(())
    })?;
    Ok((doomed.len(), doomed.len() == max))
}

/// Entries the log pruning removes in one transaction (one per housekeeping tick).
pub(super) const PRUNE_BATCH: usize = 10_000;

/// One batch of a pruning run up to `cutoff`; whether more may be due.
pub(super) fn prune_log_batch(state: &SiteState, cutoff: u64) -> bool {
    match prune_log(&state.store, cutoff, PRUNE_BATCH) {
        Ok((0, _)) => false,
        Ok((n, more)) => {
            tracing::info!(
                entries = n,
                keep_days = state.config.log_keep_days,
                "workstation log pruned"
            );
            more
        }
        Err(e) => {
            tracing::warn!("cannot prune the workstation log: {e}");
            false
        }
    }
}

/// Appends an entry to the workstation log in a transaction of its own.
pub(super) fn log_write(store: &Store, mut entry: LogEntry) {
    if let Err(e) = store.write(|tx| log_put(tx, &mut entry)) {
        tracing::error!("cannot write the workstation log: {e}");
    }
}

pub(super) fn entry(user: &str, op: &str, table: &str, key: &str) -> LogEntry {
    LogEntry {
        seq: 0,
        at_ms: SystemClock.now_ms(),
        user: user.to_owned(),
        op: op.to_owned(),
        table: table.to_owned(),
        key: key.to_owned(),
        fields: None,
        refused: None,
    }
}

/// A write as `user`, logged with its outcome, then the feed brought up to date.
pub(super) fn logged_write<R>(
    state: &SiteState,
    mut log: LogEntry,
    f: impl FnOnce(&mut outpost_engine::WriteTx<'_, '_>, &mut LogEntry) -> outpost_engine::Result<R>,
) -> Result<R, Response> {
    // The write and its log entry commit together; a refused write is logged on its own.
    let user = log.user.clone();
    let done = state.store.write_as(&user, |tx| {
        let mut entry = log.clone();
        let r = f(tx, &mut entry)?;
        log_put(tx, &mut entry)?;
        Ok(r)
    });
    if let Err(e) = &done {
        log.refused = Some(e.to_string());
        log_write(&state.store, log);
    }
    refresh_feed(state);
    done.map_err(|e| engine_error(&e))
}

/// The workstation log after entry `after`, at most 10,000 entries.
pub fn log_entries(store: &Store, after: u64) -> outpost_engine::Result<Vec<LogEntry>> {
    let snap = store.snapshot()?;
    let mut start = LOG.to_vec();
    start.extend_from_slice(&(after + 1).to_be_bytes());
    let mut end = LOG.to_vec();
    end.extend_from_slice(&u64::MAX.to_be_bytes());
    Ok(snap
        .local_range(&start, &end, Some(10_000))?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect())
}

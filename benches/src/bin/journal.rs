//! The sync monitor's journal pages on a big journal: how long a page takes as the journal grows.
//!
//! `cargo run --release -p outpost-benches --bin journal -- [--rows N]` (default 1,000,000)
//!
//! Fills a durable central store with N synthetic emissions of ten remotes (one per second, one
//! in a thousand failed), then times, each the median of 21 runs on a warm cache:
//! - the newest page of 50 rows, unfiltered (what the page loads every two seconds);
//! - the newest page of one site's rows (one row in ten matches);
//! - the newest page of failed rows (one in a thousand);
//! - a filter nothing matches (the scan stops at `SCAN_MAX` entries, with a cursor);
//! - a page 10,000 pages deep, from its cursor;
//! - for comparison, reading the whole journal (`journal::rows`, what `outpost journal` does).

use std::error::Error;
use std::time::{Duration, Instant};

use outpost_engine::{ManualClock, Site, SiteId, Store, StoreConfig};
use outpost_replicator::journal;
use outpost_replicator::monitor::{self, RowState};

type Res<T> = Result<T, Box<dyn Error>>;

const T0_MS: u64 = outpost_benches::T0_MS;

fn median(mut f: impl FnMut() -> Res<usize>) -> Res<(Duration, usize)> {
    let mut times = Vec::new();
    let mut n = 0;
    for _ in 0..21 {
        let t = Instant::now();
        n = f()?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok((times[times.len() / 2], n))
}

fn main() -> Res<()> {
    let mut rows: u64 = 1_000_000;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rows" => rows = it.next().ok_or("--rows needs a number")?.parse()?,
            other => return Err(format!("unknown argument {other}: --rows N").into()),
        }
    }
    let dir = tempfile::tempdir()?;
    let clock = ManualClock::new(T0_MS);
    let store = Store::open(
        dir.path().join("ASOC"),
        StoreConfig::new(Site::central(1, "ASOC")?, outpost_benches::schema(), clock),
    )?;
    let sites: Vec<SiteId> = (2..12).map(SiteId).collect();
    let t = Instant::now();
    monitor::fill_synthetic_journal(&store, &sites, rows, T0_MS)?;
    let fill = t.elapsed();
    let bytes = std::fs::metadata(dir.path().join("ASOC").join("outpost.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "journal of {rows} rows written in {:.1} s; store file {:.0} MiB",
        fill.as_secs_f64(),
        bytes as f64 / (1 << 20) as f64
    );

    let page = |keep: &dyn Fn(&journal::JournalRow) -> bool, cursor: Option<&str>| {
        monitor::journal_page(&store, None, None, cursor, 50, keep)
    };
    let mut report = Vec::new();
    let (d, n) = median(|| Ok(page(&|_| true, None)?.items.len()))?;
    report.push(("newest page, unfiltered", d, n));
    let (d, n) = median(|| Ok(page(&|r| r.site == SiteId(5), None)?.items.len()))?;
    report.push(("newest page of one site (1 row in 10)", d, n));
    let (d, n) = median(|| {
        Ok(page(&|r| monitor::row_state(r) == RowState::Failed, None)?
            .items
            .len())
    })?;
    report.push(("newest page of failed rows (1 in 1,000)", d, n));
    let (d, n) = median(|| Ok(page(&|_| false, None)?.items.len()))?;
    report.push(("a filter nothing matches (bounded scan)", d, n));
    // A cursor 10,000 pages deep: the key of row N − 500,000 (or the oldest half).
    let deep = page(&|_| true, None)?;
    let mut cursor = deep.next;
    let skip = (rows / 2).min(500_000);
    if skip > 0 {
        // Jump straight to that depth: a time-range bound gives the same cursor a user reaches
        // by paging.
        let to = T0_MS + (rows - skip) * 1000;
        cursor = monitor::journal_page(&store, None, Some(to), None, 1, |_| true)?.next;
    }
    let (d, n) = median(|| Ok(page(&|_| true, cursor.as_deref())?.items.len()))?;
    report.push(("a page 10,000 pages deep, from its cursor", d, n));
    let t = Instant::now();
    let all = journal::rows(&store, None, None, None)?;
    report.push((
        "the whole journal (outpost journal)",
        t.elapsed(),
        all.len(),
    ));

    println!("\n| query | rows returned | time |\n|---|---|---|");
    for (what, d, n) in report {
        println!("| {what} | {n} | {:.2} ms |", d.as_secs_f64() * 1000.0);
    }
    Ok(())
}

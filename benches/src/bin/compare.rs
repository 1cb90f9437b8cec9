//! The side-by-side comparison: outpost's merge against what a user would pick instead, on the
//! same generated data (fixed seed), in one process, each with one fsync'd commit per flow.
//!
//! `cargo run --release -p outpost-benches --bin compare -- [--changes N] [--json FILE]`
//!
//! 1. outpost: a flow of N field changes (N/4 records × 4 fields; the even records newer than
//!    what the store has, the odd ones older) decoded from its bytes and applied through the
//!    guards and last-writer-wins into a durable store that already holds the records.
//! 2. SQLite (bundled): WAL, `synchronous=FULL`, one transaction, a prepared
//!    `INSERT … ON CONFLICT DO UPDATE … WHERE (excluded.stamp, excluded.site) > (stamp, site)` on a
//!    `WITHOUT ROWID` table keyed by (record, field): the same merge, without decoding anything.
//! 3. Raw inserts of N key/value pairs into redb (one transaction) and sled (one flush).
//! 4. Re-merge: the same flow applied again (everything already known).
//! 5. Return build: Δ = 1k changes a peer lacks, on a 10k-cell and on the N-cell store.
//! 6. Flow size: bytes per change beyond its value and its record's key (counted once per
//!    record); plain and zstd.
//! 7. Peak memory of applying the flow, streamed from a file, in a child process (VmHWM).
//!
//! Two floors, for the analysis of where the merge's time goes: decoding the flow alone (no
//! store), and the redb operations a layout with one key per record (its registers together)
//! and a dot index per commit and record would cost for the same merge, straight in redb.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use outpost_benches::{
    FIELDS, HOUR_MS, Res, T0_MS, apply_flow, creations, fill, flow_bytes, flow_header, incoming,
    key_of, open, shared, sites,
};
use outpost_engine::{Change, Dot, ManualClock, Outcome, SiteId, Slot, Stamp, Store, Value};
use outpost_replicator::{FlowReader, FlowWriter, Item};
use redb::ReadableTable;

struct Args {
    changes: usize,
    json: Option<PathBuf>,
    quick: bool,
    one_thread: bool,
    cache_mib: Option<usize>,
    child: Option<(PathBuf, PathBuf)>,
}

fn args() -> Res<Args> {
    let mut out = Args {
        changes: 1_000_000,
        json: None,
        quick: false,
        one_thread: false,
        cache_mib: None,
        child: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--changes" => {
                let n: usize = it.next().ok_or("--changes needs a number")?.parse()?;
                if n < 4_000 {
                    return Err("--changes must be at least 4000".into());
                }
                out.changes = n - n % 4;
            }
            "--json" => out.json = Some(it.next().ok_or("--json needs a file")?.into()),
            "--quick" => out.quick = true,
            "--one-thread" => out.one_thread = true,
            "--cache-mib" => {
                let n: usize = it.next().ok_or("--cache-mib needs a number")?.parse()?;
                out.cache_mib = Some(n.max(1));
            }
            "--child-apply" => {
                let flow = it.next().ok_or("--child-apply FLOW DIR")?;
                let dir = it.next().ok_or("--child-apply FLOW DIR")?;
                out.child = Some((flow.into(), dir.into()));
            }
            "-h" | "--help" => {
                println!(
                    "compare [--changes N] [--json FILE] [--quick] [--one-thread] [--cache-mib N]\n\nRuns outpost's merge, SQLite's LWW upsert and raw redb/sled inserts side by side (see the file's header).\n--quick: outpost's merge and re-merge only, in memory, three times — to compare two versions of the code without the disk's noise.\n--one-thread: outpost decodes the flow in turn with the merge instead of on a second thread (as the outpost binary does).\n--cache-mib N: outpost's store files get an N MiB page cache instead of the default 24 MiB (the memory trade-off; the benchmark's store file is 68 MiB)."
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    Ok(out)
}

// As the `outpost` binary: outpost's side runs on the allocator it ships with (SQLite's C code
// keeps the C library's).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    if let Err(e) = run() {
        eprintln!("compare: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let args = args()?;
    if !args.one_thread {
        outpost_benches::decode_beside();
    }
    if let Some(mib) = args.cache_mib {
        outpost_benches::set_cache_bytes(mib << 20);
    }
    if let Some((flow, dir)) = &args.child {
        return child_apply(flow, dir);
    }
    let n = args.changes;
    if args.quick {
        return quick(n);
    }
    let records = n / 4;
    let [central, _] = sites();
    let work = tempfile::tempdir()?;
    println!("outpost comparison: {n} field changes ({records} records × 4 fields)");

    // The store that already holds the records, written by central at T0.
    let clock = ManualClock::new(T0_MS);
    let store_dir = work.path().join("outpost");
    let store = open(&central, Some(&store_dir), &clock);
    fill(&store, &clock, records, 10_000);
    let creations = creations(&store, records)?;
    drop(store);
    // A copy for the child that measures memory.
    let child_dir = work.path().join("outpost-child");
    std::fs::create_dir_all(&child_dir)?;
    for entry in std::fs::read_dir(&store_dir)? {
        let entry = entry?;
        std::fs::copy(entry.path(), child_dir.join(entry.file_name()))?;
    }
    clock.set(T0_MS + 2 * HOUR_MS);
    // The page cache the store gets, the floor's too.
    let store_bytes = std::fs::metadata(store_dir.join(outpost_engine::STORE_FILE_NAME))?.len();
    let cache_bytes = args
        .cache_mib
        .map_or(outpost_engine::CACHE_BYTES_DEFAULT, |m| m << 20);
    println!(
        "store file {:.1} MiB, page cache {} MiB",
        store_bytes as f64 / f64::from(1 << 20),
        cache_bytes >> 20
    );
    let store = open(&central, Some(&store_dir), &clock);

    // The incoming flow.
    let changes = incoming(records, &creations);
    // Each record's key once (a flow writes it once for the record's changes), each value.
    let payload: u64 = (0..records).map(|r| key_of(r).len() as u64).sum::<u64>()
        + changes
            .iter()
            .map(|c| value_len(&c.value) as u64)
            .sum::<u64>();
    let plain: std::sync::Arc<[u8]> = flow_bytes(&changes, records, false)?.into();
    let packed = flow_bytes(&changes, records, true)?;
    let flow_file = work.path().join("flow.outpost");
    std::fs::write(&flow_file, &*plain)?;

    // 1. outpost merge.
    let (merge_time, report) = timed(|| apply_flow(&store, shared(&plain)))?;
    let applied = report.count(Outcome::Applied);
    let superseded = report.count(Outcome::Superseded);
    if applied != n / 2 || superseded != n / 2 || report.refused() != 0 {
        return Err(format!(
            "merge outcome off: {applied} applied, {superseded} superseded, {} refused",
            report.refused()
        )
        .into());
    }
    // 4. re-merge.
    let (remerge_time, again) = timed(|| apply_flow(&store, shared(&plain)))?;
    if again.count(Outcome::AlreadyHad) != n {
        return Err("the re-merge applied something".into());
    }
    // 2. SQLite.
    let sqlite_time = sqlite_lww(&work.path().join("sqlite.db"), &changes, records)?;
    // 3. raw stores.
    let kv: Vec<(Vec<u8>, Vec<u8>)> = changes.iter().map(raw_pair).collect();
    let redb_time = redb_raw(&work.path().join("raw.redb"), &kv)?;
    let sled_time = sled_raw(&work.path().join("raw.sled"), &kv)?;
    drop(kv);
    let decode_time = timed(|| decode_only(&*plain))?.0;
    let per_record_time =
        redb_per_record_floor(&work.path().join("per-record.redb"), &changes, cache_bytes)?;
    // 5. return build.
    let small_dir = work.path().join("small");
    let small_clock = ManualClock::new(T0_MS);
    let small = open(&central, Some(&small_dir), &small_clock);
    fill(&small, &small_clock, 2_500, 2_500);
    let build_10k = return_build(&small, &small_clock, 2_500)?;
    let build_big = return_build(&store, &clock, records)?;
    // 7. peak memory, in a child.
    let peak = child_peak(&flow_file, &child_dir, &args)?;

    let per_s = |d: Duration| n as f64 / d.as_secs_f64();
    let r = Results {
        outpost_merge_per_s: per_s(merge_time),
        sqlite_lww_per_s: per_s(sqlite_time),
        redb_raw_per_s: per_s(redb_time),
        sled_raw_per_s: per_s(sled_time),
        decode_per_s: per_s(decode_time),
        redb_per_record_floor_per_s: per_s(per_record_time),
        outpost_remerge_per_s: per_s(remerge_time),
        return_build_ms_10k: build_10k.as_secs_f64() * 1e3,
        return_build_ms_1m: build_big.as_secs_f64() * 1e3,
        flow_overhead_bytes_per_change: (plain.len() as f64 - payload as f64) / n as f64,
        // Negative when compression saves more than the framing costs.
        flow_overhead_bytes_per_change_zstd: (packed.len() as f64 - payload as f64) / n as f64,
        apply_peak_rss_bytes: peak,
        flow_bytes: plain.len() as u64,
        flow_bytes_zstd: packed.len() as u64,
        payload_bytes: payload,
    };
    r.print(n);
    if let Some(path) = &args.json {
        std::fs::write(path, r.json())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Merge and re-merge only, on in-memory stores, three times each.
fn quick(n: usize) -> Res<()> {
    let records = n / 4;
    let [central, _] = sites();
    for round in 1..=3 {
        let clock = ManualClock::new(T0_MS);
        let store = open(&central, None, &clock);
        fill(&store, &clock, records, 10_000);
        let creations = creations(&store, records)?;
        clock.set(T0_MS + 2 * HOUR_MS);
        let plain: std::sync::Arc<[u8]> =
            flow_bytes(&incoming(records, &creations), records, false)?.into();
        let (merge, _) = timed(|| apply_flow(&store, shared(&plain)))?;
        let (remerge, _) = timed(|| apply_flow(&store, shared(&plain)))?;
        println!(
            "round {round}: merge {:.0}k/s, re-merge {:.0}k/s (in memory)",
            n as f64 / merge.as_secs_f64() / 1e3,
            n as f64 / remerge.as_secs_f64() / 1e3
        );
    }
    Ok(())
}

fn timed<T>(f: impl FnOnce() -> Res<T>) -> Res<(Duration, T)> {
    let start = Instant::now();
    let out = f()?;
    Ok((start.elapsed(), out))
}

fn value_len(v: &Value) -> usize {
    match v {
        Value::Text(s) => s.len(),
        _ => 8,
    }
}

fn sqlite_lww(path: &Path, changes: &[Change], records: usize) -> Res<Duration> {
    let mut db = rusqlite::Connection::open(path)?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "FULL")?;
    db.execute_batch(
        "CREATE TABLE cells (record TEXT NOT NULL, field TEXT NOT NULL, value TEXT,
           stamp INTEGER NOT NULL, site INTEGER NOT NULL, PRIMARY KEY (record, field)) WITHOUT ROWID;",
    )?;
    // The same starting content: every record written by central at T0.
    let tx = db.transaction()?;
    {
        let mut put = tx.prepare("INSERT INTO cells VALUES (?1, ?2, ?3, ?4, 1)")?;
        for r in 0..records {
            for f in FIELDS {
                put.execute(rusqlite::params![
                    key_of(r),
                    f,
                    format!("{f}-{r}"),
                    Stamp::new(T0_MS, 0).as_u64() as i64
                ])?;
            }
        }
    }
    tx.commit()?;
    let start = Instant::now();
    let tx = db.transaction()?;
    let mut changed = 0usize;
    {
        let mut upsert = tx.prepare(
            "INSERT INTO cells (record, field, value, stamp, site) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (record, field) DO UPDATE SET value = excluded.value,
               stamp = excluded.stamp, site = excluded.site
             WHERE (excluded.stamp, excluded.site) > (cells.stamp, cells.site)",
        )?;
        for c in changes {
            let Slot::Field(f) = &c.slot else { continue };
            let Value::Text(v) = &c.value else { continue };
            changed += upsert.execute(rusqlite::params![
                c.key,
                f,
                v,
                c.stamp.as_u64() as i64,
                c.dot.site.0
            ])?;
        }
    }
    tx.commit()?;
    let took = start.elapsed();
    if changed != changes.len() / 2 {
        return Err(format!("SQLite changed {changed} rows, not {}", changes.len() / 2).into());
    }
    Ok(took)
}

/// A key and value of about the engine's size: record, field; value, stamp, site.
fn raw_pair(c: &Change) -> (Vec<u8>, Vec<u8>) {
    let mut k = c.key.as_bytes().to_vec();
    k.push(0);
    if let Slot::Field(f) = &c.slot {
        k.extend_from_slice(f.as_bytes());
    }
    let mut v = match &c.value {
        Value::Text(s) => s.as_bytes().to_vec(),
        _ => Vec::new(),
    };
    v.extend_from_slice(&c.stamp.as_u64().to_be_bytes());
    v.extend_from_slice(&c.dot.site.0.to_be_bytes());
    (k, v)
}

fn redb_raw(path: &Path, kv: &[(Vec<u8>, Vec<u8>)]) -> Res<Duration> {
    const T: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("raw");
    let db = redb::Database::create(path)?;
    let start = Instant::now();
    let tx = db.begin_write()?;
    {
        let mut t = tx.open_table(T)?;
        for (k, v) in kv {
            t.insert(k.as_slice(), v.as_slice())?;
        }
    }
    tx.commit()?;
    Ok(start.elapsed())
}

/// Decodes every change of a flow and drops it: the floor the flow format puts on a merge.
fn decode_only(input: impl Read) -> Res<usize> {
    let mut reader = FlowReader::open(input)?;
    let mut n = 0;
    while let Some(item) = reader.next_item()? {
        if let Item::Changes(changes) = item {
            n += changes.len();
        }
    }
    Ok(n)
}

/// One record's registers as one value: per field, stamp (8 B), dot (10 B), value length
/// (2 B), value.
fn record_blob(fields: &[(u64, Dot, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (stamp, dot, value) in fields {
        out.extend_from_slice(&stamp.to_be_bytes());
        out.extend_from_slice(&dot.site.0.to_be_bytes());
        out.extend_from_slice(&dot.seq.to_be_bytes());
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

fn dot_entry(dot: Dot, record: &str) -> Vec<u8> {
    let mut k = dot.site.0.to_be_bytes().to_vec();
    k.extend_from_slice(&dot.seq.to_be_bytes());
    k.extend_from_slice(record.as_bytes());
    k
}

/// The storage floor of a layout with one key per record and a dot index per commit and record:
/// for the same merge (the flow's records, four changes each), one get per record and, where
/// the incoming registers win, one insert of the record, the removal of its old dot entry and
/// the insert of the new one — straight in redb, one fsync'd transaction, no decoding and no
/// guards. The store is prepared first with the records as the outpost store holds them.
fn redb_per_record_floor(path: &Path, changes: &[Change], cache_bytes: usize) -> Res<Duration> {
    const RECORDS: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("records");
    const DOTS: redb::TableDefinition<&[u8], ()> = redb::TableDefinition::new("dots");
    let old_dot = |r: usize| Dot {
        site: SiteId(1),
        seq: (r / 10_000) as u64 + 1,
    };
    let db = redb::Database::builder()
        .set_cache_size(cache_bytes)
        .create(path)?;
    let tx = db.begin_write()?;
    {
        let mut records = tx.open_table(RECORDS)?;
        let mut dots = tx.open_table(DOTS)?;
        for (r, record) in changes.chunks(4).enumerate() {
            let fields: Vec<(u64, Dot, &[u8])> = record
                .iter()
                .map(|_| {
                    (
                        Stamp::new(T0_MS, 0).as_u64(),
                        old_dot(r),
                        &b"old value, as long"[..],
                    )
                })
                .collect();
            records.insert(record[0].key.as_bytes(), record_blob(&fields).as_slice())?;
            dots.insert(dot_entry(old_dot(r), &record[0].key).as_slice(), ())?;
        }
    }
    tx.commit()?;
    let start = Instant::now();
    let mut updated = 0;
    let tx = db.begin_write()?;
    {
        let mut records = tx.open_table(RECORDS)?;
        let mut dots = tx.open_table(DOTS)?;
        for record in changes.chunks(4) {
            let key = record[0].key.as_bytes();
            let old = records
                .get(key)?
                .map(|g| g.value().to_vec())
                .ok_or("no record")?;
            let stored_stamp = u64::from_be_bytes(old[..8].try_into()?);
            let stored_dot = Dot {
                site: SiteId(u16::from_be_bytes(old[8..10].try_into()?)),
                seq: u64::from_be_bytes(old[10..18].try_into()?),
            };
            let incoming = record[0].stamp.as_u64();
            if incoming <= stored_stamp {
                continue;
            }
            updated += 1;
            let fields: Vec<(u64, Dot, &[u8])> = record
                .iter()
                .map(|c| {
                    let v = match &c.value {
                        Value::Text(t) => t.as_bytes(),
                        _ => &[][..],
                    };
                    (c.stamp.as_u64(), c.dot, v)
                })
                .collect();
            records.insert(key, record_blob(&fields).as_slice())?;
            dots.remove(dot_entry(stored_dot, &record[0].key).as_slice())?;
            dots.insert(dot_entry(record[0].dot, &record[0].key).as_slice(), ())?;
        }
    }
    tx.commit()?;
    let elapsed = start.elapsed();
    if updated != changes.len() / 8 {
        return Err(format!("the per-record floor updated {updated} records, not half").into());
    }
    Ok(elapsed)
}

fn sled_raw(path: &Path, kv: &[(Vec<u8>, Vec<u8>)]) -> Res<Duration> {
    let db = sled::open(path)?;
    let start = Instant::now();
    for (k, v) in kv {
        db.insert(k.as_slice(), v.as_slice())?;
    }
    db.flush()?;
    Ok(start.elapsed())
}

/// The median time to build a return of the 1k changes a peer lacks (250 records × 4 fields
/// written after what it knows), compressed as returns are.
fn return_build(store: &Store, clock: &ManualClock, records: usize) -> Res<Duration> {
    let peer = store.knowledge();
    clock.advance(HOUR_MS);
    store.write(|tx| {
        for r in 0..250 {
            let key = key_of(r * (records / 250));
            for f in FIELDS {
                tx.set("customers", &key, f, Value::Text(format!("{f}-late")))?;
            }
        }
        Ok(())
    })?;
    let mut times = Vec::new();
    for _ in 0..21 {
        let start = Instant::now();
        let mut lacking = store.changes_lacking(&peer, true)?;
        let mut h = flow_header(0);
        h.covered = lacking.covered_up_front()?;
        let mut w = FlowWriter::new(Vec::new(), &h, true)?;
        let mut n = 0;
        for c in lacking.by_ref() {
            w.push_change(c?)?;
            n += 1;
        }
        let (bytes, _, _) = w.finish()?;
        times.push(start.elapsed());
        if n != 1_000 || bytes.is_empty() {
            return Err(format!("the return holds {n} changes, not 1000").into());
        }
    }
    times.sort();
    Ok(times[times.len() / 2])
}

fn child_peak(flow: &Path, dir: &Path, args: &Args) -> Res<u64> {
    let out = Command::new(std::env::current_exe()?)
        .args(args.one_thread.then_some("--one-thread"))
        .args(
            args.cache_mib
                .map(|m| ["--cache-mib".to_owned(), m.to_string()])
                .into_iter()
                .flatten(),
        )
        .arg("--child-apply")
        .arg(flow)
        .arg(dir)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "the memory child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let text = String::from_utf8(out.stdout)?;
    Ok(text.trim().parse()?)
}

/// In the child: open the copy of the store, stream the flow from its file, print VmHWM.
fn child_apply(flow: &Path, dir: &Path) -> Res<()> {
    let [central, _] = sites();
    let clock = ManualClock::new(T0_MS + 2 * HOUR_MS);
    let store = open(&central, Some(dir), &clock);
    let report = apply_flow(&store, BufReader::new(std::fs::File::open(flow)?))?;
    if report.count(Outcome::Applied) == 0 {
        return Err("the child applied nothing".into());
    }
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .ok_or("no VmHWM in /proc/self/status")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    println!("{}", kb * 1024);
    Ok(())
}

struct Results {
    outpost_merge_per_s: f64,
    sqlite_lww_per_s: f64,
    redb_raw_per_s: f64,
    sled_raw_per_s: f64,
    decode_per_s: f64,
    redb_per_record_floor_per_s: f64,
    outpost_remerge_per_s: f64,
    return_build_ms_10k: f64,
    return_build_ms_1m: f64,
    flow_overhead_bytes_per_change: f64,
    flow_overhead_bytes_per_change_zstd: f64,
    apply_peak_rss_bytes: u64,
    flow_bytes: u64,
    flow_bytes_zstd: u64,
    payload_bytes: u64,
}

impl Results {
    fn print(&self, n: usize) {
        let k = |x: f64| format!("{:.0}k/s", x / 1e3);
        println!("| measure | value |");
        println!("|---|---|");
        println!(
            "| outpost merge ({n} changes, from flow bytes) | {} |",
            k(self.outpost_merge_per_s)
        );
        println!(
            "| SQLite LWW upsert (WAL, synchronous=FULL) | {} |",
            k(self.sqlite_lww_per_s)
        );
        println!("| redb raw insert | {} |", k(self.redb_raw_per_s));
        println!("| sled raw insert + flush | {} |", k(self.sled_raw_per_s));
        println!(
            "| floor: decoding the flow alone | {} |",
            k(self.decode_per_s)
        );
        println!(
            "| floor: redb ops of one key per record + a dot index per commit | {} |",
            k(self.redb_per_record_floor_per_s)
        );
        println!(
            "| outpost re-merge (all known) | {} |",
            k(self.outpost_remerge_per_s)
        );
        println!(
            "| merge vs SQLite | {:.2}× |",
            self.outpost_merge_per_s / self.sqlite_lww_per_s
        );
        println!(
            "| merge vs redb raw | {:.2}× |",
            self.outpost_merge_per_s / self.redb_raw_per_s
        );
        println!(
            "| return build Δ=1k, 10k-cell store | {:.2} ms |",
            self.return_build_ms_10k
        );
        println!(
            "| return build Δ=1k, {n}-cell store | {:.2} ms |",
            self.return_build_ms_1m
        );
        println!(
            "| flow overhead per change beyond key and value | {:.1} B plain, {:.1} B zstd |",
            self.flow_overhead_bytes_per_change, self.flow_overhead_bytes_per_change_zstd
        );
        println!(
            "| flow size | {} B plain ({} B payload), {} B zstd |",
            self.flow_bytes, self.payload_bytes, self.flow_bytes_zstd
        );
        println!(
            "| peak RSS applying the flow (child) | {:.1} MiB ({:.2}× the flow) |",
            self.apply_peak_rss_bytes as f64 / (1 << 20) as f64,
            self.apply_peak_rss_bytes as f64 / self.flow_bytes as f64
        );
    }

    fn json(&self) -> String {
        let fields: [(&str, f64); 17] = [
            ("outpost_merge_per_s", self.outpost_merge_per_s),
            ("sqlite_lww_per_s", self.sqlite_lww_per_s),
            ("redb_raw_per_s", self.redb_raw_per_s),
            ("sled_raw_per_s", self.sled_raw_per_s),
            ("decode_per_s", self.decode_per_s),
            (
                "redb_per_record_floor_per_s",
                self.redb_per_record_floor_per_s,
            ),
            ("outpost_remerge_per_s", self.outpost_remerge_per_s),
            ("return_build_ms_10k", self.return_build_ms_10k),
            ("return_build_ms_1m", self.return_build_ms_1m),
            (
                "flow_overhead_bytes_per_change",
                self.flow_overhead_bytes_per_change,
            ),
            (
                "flow_overhead_bytes_per_change_zstd",
                self.flow_overhead_bytes_per_change_zstd,
            ),
            ("apply_peak_rss_bytes", self.apply_peak_rss_bytes as f64),
            ("flow_bytes", self.flow_bytes as f64),
            ("flow_bytes_zstd", self.flow_bytes_zstd as f64),
            ("payload_bytes", self.payload_bytes as f64),
            (
                "merge_vs_sqlite",
                self.outpost_merge_per_s / self.sqlite_lww_per_s,
            ),
            (
                "merge_vs_redb_raw",
                self.outpost_merge_per_s / self.redb_raw_per_s,
            ),
        ];
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("  \"{k}\": {v:.3}"))
            .collect();
        format!("{{\n{}\n}}\n", body.join(",\n"))
    }
}

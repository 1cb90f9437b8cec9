//! Workloads shared by outpost's benches: a four-field shared table, stores filled with a given
//! number of cells, and batches of incoming changes. Fixed seeds; no wall clock in the workload.

use std::io::Read;

use outpost_engine::{
    Change, Creation, Dot, FieldKind, Knowledge, ManualClock, MergeReport, Schema, Site, SiteId,
    Slot, Stamp, Store, StoreConfig, TableDef, Value,
};
use outpost_replicator::frames::Frames;
use outpost_replicator::{
    FlowHeader, FlowId, FlowKind, FlowReader, FlowWriter, IncomingItem, SyncMode,
};

/// What the flow helpers return: their errors are the benchmark's.
pub type Res<T> = Result<T, Box<dyn std::error::Error>>;
/// The remote whose flows the benches apply.
pub const REMOTE: SiteId = SiteId(2);
/// An hour.
pub const HOUR_MS: u64 = 3_600_000;

/// Fields per record.
pub const FIELDS: [&str; 4] = ["name", "address", "city", "phone"];
/// 2026-11-25 00:00 UTC.
pub const T0_MS: u64 = 1_795_564_800_000;

/// One shared table of four text fields.
pub fn schema() -> Schema {
    let mut t = TableDef::shared("customers");
    for f in FIELDS {
        t = t.field(f, FieldKind::Text);
    }
    match Schema::new([t]) {
        Ok(s) => s,
        Err(e) => panic!("bench schema: {e}"),
    }
}

/// The sites: central 1, remote 2.
pub fn sites() -> [Site; 2] {
    match (Site::central(1, "ASOC"), Site::remote(2, "BSOC")) {
        (Ok(a), Ok(b)) => [a, b],
        _ => panic!("bench sites"),
    }
}

/// A page cache every store [`open`] opens gets instead of the default (0: the default).
static CACHE_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Makes [`open`] give store files a page cache of `bytes` (to measure the memory trade-off).
pub fn set_cache_bytes(bytes: usize) {
    CACHE_BYTES.store(bytes, std::sync::atomic::Ordering::Relaxed);
}

/// Opens a store for `site` in `dir` (durable file) or in memory, knowing both sites.
pub fn open(site: &Site, dir: Option<&std::path::Path>, clock: &ManualClock) -> Store {
    let mut config = StoreConfig::new(site.clone(), schema(), clock.clone());
    let cache = CACHE_BYTES.load(std::sync::atomic::Ordering::Relaxed);
    if cache > 0 {
        config.cache = outpost_engine::CacheSize::Bytes(cache);
    }
    let store = match dir {
        Some(d) => Store::open(d, config),
        None => Store::in_memory(config),
    };
    let store = store.unwrap_or_else(|e| panic!("open bench store: {e}"));
    for s in sites() {
        store
            .add_site(s)
            .unwrap_or_else(|e| panic!("add site: {e}"));
    }
    store
}

/// Writes `n_records` records of four fields into `store`, `per_commit` records per commit.
pub fn fill(store: &Store, clock: &ManualClock, n_records: usize, per_commit: usize) {
    let mut i = 0;
    while i < n_records {
        let end = (i + per_commit).min(n_records);
        clock.advance(1);
        store
            .write(|tx| {
                for r in i..end {
                    let key = format!("C{r:08}");
                    for f in FIELDS {
                        tx.set("customers", &key, f, Value::Text(format!("{f}-{r}")))?;
                    }
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("fill: {e}"));
        i = end;
    }
}

/// Every change `store` has, and the knowledge that covers them.
pub fn all_changes(store: &Store) -> (Vec<Change>, Knowledge) {
    let mut lacking = store
        .changes_lacking(&Knowledge::new(), false)
        .unwrap_or_else(|e| panic!("changes: {e}"));
    let changes: Vec<Change> = lacking
        .by_ref()
        .map(|c| c.unwrap_or_else(|e| panic!("change: {e}")))
        .collect();
    (changes, lacking.covered())
}

/// The key of the benchmark's record `r`.
pub fn key_of(r: usize) -> String {
    format!("C{r:08}")
}

/// Each record's creation, as the store holds it (the flow's changes carry it, R1).
pub fn creations(store: &Store, records: usize) -> Res<Vec<Creation>> {
    let snap = store.snapshot()?;
    (0..records)
        .map(|r| {
            snap.raw_record("customers", &key_of(r))?
                .map(|raw| raw.created)
                .ok_or_else(|| format!("record {r} missing").into())
        })
        .collect()
}

/// The remote's edits: one commit (dot) per record, its four fields; even records an hour
/// newer than the store's values, odd records an hour older.
pub fn incoming(records: usize, creations: &[Creation]) -> Vec<Change> {
    let mut out = Vec::with_capacity(records * 4);
    for (r, created) in creations.iter().enumerate().take(records) {
        let ms = if r % 2 == 0 {
            T0_MS + HOUR_MS
        } else {
            T0_MS - HOUR_MS
        };
        for f in FIELDS {
            out.push(Change {
                table: "customers".into(),
                key: key_of(r),
                slot: Slot::Field(f.into()),
                value: Value::Text(format!("{f}-{r}-remote")),
                stamp: Stamp::new(ms, 0),
                dot: Dot {
                    site: REMOTE,
                    seq: r as u64 + 1,
                },
                created: *created,
            });
        }
    }
    out
}

/// The header of the remote's emission of `records` commits (one per record).
pub fn flow_header(records: usize) -> FlowHeader {
    let mut covered = Knowledge::new();
    covered.insert_range(REMOTE, 1, records as u64);
    FlowHeader {
        id: FlowId {
            site: REMOTE,
            seq: 1,
        },
        kind: FlowKind::Emission,
        source: REMOTE,
        target: SiteId(1),
        mode: SyncMode::Immediate,
        link: None,
        knowledge: covered.clone(),
        covered,
        schema_fingerprint: schema().fingerprint(),
        created_stamp: Stamp::new(T0_MS + HOUR_MS, 0),
        created_wall_ms: T0_MS + HOUR_MS,
        acks: Vec::new(),
        config: None,
    }
}

/// The flow of `changes` as the remote writes it (packed frames; zstd when `compress`).
pub fn flow_bytes(changes: &[Change], records: usize, compress: bool) -> Res<Vec<u8>> {
    let mut w = FlowWriter::new(Vec::new(), &flow_header(records), compress)?;
    for c in changes {
        w.push_change(c.clone())?;
    }
    Ok(w.finish()?.0)
}

/// Flow bytes shared without a copy, to hand to [`apply_flow`].
pub fn shared(bytes: &std::sync::Arc<[u8]>) -> std::io::Cursor<std::sync::Arc<[u8]>> {
    std::io::Cursor::new(std::sync::Arc::clone(bytes))
}

/// Lets flows be decoded on a second thread while they merge, as the `outpost` binary does.
pub fn decode_beside() {
    outpost_replicator::frames::decode_beside(|job| {
        std::thread::spawn(job);
    });
}

/// Decodes a flow and applies it in one transaction: guards, last-writer-wins, knowledge.
pub fn apply_flow(store: &Store, input: impl Read + Send + 'static) -> Res<MergeReport> {
    let reader = FlowReader::open(input)?;
    let header = reader.header().clone();
    let report = store.write(|tx| {
        let mut report = MergeReport::default();
        // As central does: decoded beside the merge when the driver allows it.
        let mut frames = Frames::new(reader, tx.knowledge().clone());
        while let Some(item) = frames
            .next_frame()
            .map_err(|e| outpost_engine::Error::Input(Box::new(e)))?
        {
            if let IncomingItem::Changes(changes) = item {
                tx.apply_batch(header.source, &changes, &mut report)?;
                frames.recycle(changes);
            }
        }
        tx.add_knowledge(header.source, &header.covered)?;
        Ok(report)
    })?;
    Ok(report)
}

//! Workloads shared by outpost's benches: a four-field shared table, stores filled with a given
//! number of cells, and batches of incoming changes. Fixed seeds; no wall clock in the workload.

use outpost_engine::{
    Change, FieldKind, Knowledge, ManualClock, Schema, Site, Store, StoreConfig, TableDef, Value,
};

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

/// Opens a store for `site` in `dir` (durable file) or in memory, knowing both sites.
pub fn open(site: &Site, dir: Option<&std::path::Path>, clock: &ManualClock) -> Store {
    let config = StoreConfig::new(site.clone(), schema(), clock.clone());
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

//! Helpers shared by the engine's integration tests: a small retail schema and the three sites
//! of the SPEC's example (C1): central ASOC, remotes BSOC and CSOC.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;

use outpost_engine::{
    Change, FieldKind, Knowledge, ManualClock, MergeReport, Policy, Schema, Site, Store,
    StoreConfig, TableDef,
};
use proptest::test_runner::{Config as ProptestConfig, RngSeed};

pub const ASOC: u16 = 1;
pub const BSOC: u16 = 2;
pub const CSOC: u16 = 3;

/// 2026-11-25 09:00 UTC.
pub const T0_MS: u64 = 1_795_597_200_000;

pub fn schema() -> Schema {
    Schema::new([
        TableDef::shared("customers")
            .field("name", FieldKind::Text)
            .field("address", FieldKind::Text)
            .field("city", FieldKind::Text),
        TableDef::central_only("articles")
            .field("name", FieldKind::Text)
            .field("price", FieldKind::Decimal),
        TableDef::document("sales_documents")
            .field("customer", FieldKind::Text)
            .field("total", FieldKind::Decimal)
            .field("status", FieldKind::Text),
        TableDef::document("stock_documents")
            .field("article", FieldKind::Text)
            .field("quantity", FieldKind::Integer),
        TableDef::new(
            "cash_registers",
            Policy::Document {
                frozen_once_synced: false,
            },
        )
        .field("opened_at", FieldKind::Text)
        .owner_exclusive_field("closed_at", FieldKind::Text),
    ])
    .unwrap()
}

pub fn all_sites() -> Vec<Site> {
    vec![
        Site::central(ASOC, "ASOC").unwrap(),
        Site::remote(BSOC, "BSOC").unwrap(),
        Site::remote(CSOC, "CSOC").unwrap(),
    ]
}

pub fn site(id: u16) -> Site {
    all_sites().into_iter().find(|s| s.id.0 == id).unwrap()
}

/// A store for `id` in memory, knowing every site; CSOC may not write stock documents (R4/R9).
pub fn store(id: u16, clock: &ManualClock) -> Store {
    let s = Store::in_memory(StoreConfig::new(site(id), schema(), clock.clone())).unwrap();
    setup_directory(&s);
    s
}

pub fn setup_directory(s: &Store) {
    for site in all_sites() {
        s.add_site(site).unwrap();
    }
    s.set_denied_tables(
        outpost_engine::SiteId(CSOC),
        BTreeSet::from(["stock_documents".to_owned()]),
    )
    .unwrap();
}

/// Sends everything `to` lacks from `from` (as a sync would), and returns the report.
pub fn sync(from: &Store, to: &Store) -> MergeReport {
    let mut lacking = from.changes_lacking(&to.knowledge(), false).unwrap();
    let changes: Vec<Change> = lacking.by_ref().map(|c| c.unwrap()).collect();
    let covered: Knowledge = lacking.covered();
    to.apply(from.site().id, changes, &covered).unwrap()
}

/// Proptest configuration with a fixed default seed; `PROPTEST_RNG_SEED` overrides it.
pub fn proptest_config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(0x0u64.wrapping_add(20261125));
    }
    config.cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(cases);
    config
}

/// The seed in use, for a failure's reproduce line.
pub fn proptest_seed(config: &ProptestConfig) -> String {
    match config.rng_seed {
        RngSeed::Fixed(s) => s.to_string(),
        RngSeed::Random => "random".to_owned(),
    }
}

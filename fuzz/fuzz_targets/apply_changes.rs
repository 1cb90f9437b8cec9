//! Arbitrary bytes decoded as a batch of changes and applied at central: never a panic, and
//! the store's invariants hold afterwards (guards refuse what they must, into the log).
//!
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run apply_changes`
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_engine::{
    Change, FieldKind, Knowledge, ManualClock, Schema, Site, SiteId, Store, StoreConfig, TableDef,
};

fuzz_target!(|data: &[u8]| {
    let Ok((changes, covers)) = postcard::from_bytes::<(Vec<Change>, Knowledge)>(data) else {
        return;
    };
    let schema = Schema::new([
        TableDef::shared("customers").field("name", FieldKind::Text),
        TableDef::central_only("articles").field("price", FieldKind::Decimal),
        TableDef::document("sales_documents").field("total", FieldKind::Decimal),
    ])
    .expect("schema");
    let clock = ManualClock::new(1_795_564_800_000);
    let store = Store::in_memory(StoreConfig::new(
        Site::central(1, "ASOC").expect("site"),
        schema,
        clock,
    ))
    .expect("store");
    store.add_site(Site::remote(2, "BSOC").expect("site")).expect("add");
    let _ = store.apply(SiteId(2), changes, &covers);
    store.check_invariants().expect("invariants hold after any input");
});

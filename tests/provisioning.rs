//! Provisioning a new remote (the replicator issue): central creates the establishment and
//! writes its bootstrap file — the full copy it needs and its configuration — streamed from a
//! store of 100,000 records; the remote is initialised from the file and holds exactly
//! central's data.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufReader;

use outpost::replicator::{central, files, remote};
use outpost::{ManualClock, Site, SiteId, Store, StoreConfig, Value};

const N_RECORDS: usize = 100_000;

#[test]
fn a_remote_is_provisioned_from_a_bootstrap_of_100k_records() {
    let root = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_795_564_800_000);
    let asoc = Store::open(
        root.path().join("ASOC"),
        StoreConfig::new(
            Site::central(1, "ASOC").unwrap(),
            outpost::retail::schema(),
            clock.clone(),
        ),
    )
    .unwrap();
    for batch in 0..(N_RECORDS / 10_000) {
        clock.advance(1);
        asoc.write(|tx| {
            for i in batch * 10_000..(batch + 1) * 10_000 {
                let key = format!("ASOC-{i:06}");
                tx.set("customers", &key, "name", format!("customer {i}"))?;
                tx.set("customers", &key, "city", "Lyon")?;
            }
            Ok(())
        })
        .unwrap();
    }
    central::create_remote(
        &asoc,
        Site::remote(4, "DSOC").unwrap(),
        BTreeSet::from(["stock_documents".to_owned()]),
        BTreeMap::from([("sync".to_owned(), "immediate".to_owned())]),
    )
    .unwrap();
    let (path, built) = files::bootstrap_to(&asoc, SiteId(4), root.path()).unwrap();
    assert_eq!(
        built.n_changes,
        3 * N_RECORDS as u64,
        "creation, name and city of each"
    );
    let file_bytes = std::fs::metadata(&path).unwrap().len();
    assert!(
        file_bytes < built.bytes / 2,
        "compressed: {file_bytes} of {}",
        built.bytes
    );
    let dsoc = remote::bootstrap(
        BufReader::new(std::fs::File::open(&path).unwrap()),
        |site| {
            assert_eq!(site.code.as_str(), "DSOC");
            Store::open(
                root.path().join("DSOC"),
                StoreConfig::new(site.clone(), outpost::retail::schema(), clock.clone()),
            )
        },
    )
    .unwrap();
    assert_eq!(
        dsoc.snapshot().unwrap().replicated_content().unwrap(),
        asoc.snapshot().unwrap().replicated_content().unwrap()
    );
    assert_eq!(dsoc.knowledge(), asoc.knowledge());
    assert_eq!(remote::settings(&dsoc).unwrap()["sync"], "immediate");
    assert_eq!(
        dsoc.denied_tables(SiteId(4)),
        BTreeSet::from(["stock_documents".to_owned()])
    );
    assert_eq!(
        dsoc.record("customers", "ASOC-099999")
            .unwrap()
            .unwrap()
            .get("name"),
        Some(&Value::from("customer 99999"))
    );
    // Provisioned once: a second bootstrap into the same store is refused, and changes nothing.
    let before = dsoc.snapshot().unwrap().replicated_content().unwrap();
    drop(dsoc);
    let again = remote::bootstrap(
        BufReader::new(std::fs::File::open(&path).unwrap()),
        |site| {
            Store::open(
                root.path().join("DSOC"),
                StoreConfig::new(site.clone(), outpost::retail::schema(), clock.clone()),
            )
        },
    );
    let err = again.expect_err("a second bootstrap is refused");
    assert!(err.to_string().contains("already provisioned"), "{err}");
    let dsoc = Store::open(
        root.path().join("DSOC"),
        StoreConfig::new(
            Site::remote(4, "DSOC").unwrap(),
            outpost::retail::schema(),
            clock,
        ),
    )
    .unwrap();
    assert_eq!(
        dsoc.snapshot().unwrap().replicated_content().unwrap(),
        before
    );
}

//! Reliability (issue 8) through the command line's administration: central restored from an
//! old backup (`outpost central backup | restore`) is repaired by its remotes and nothing is
//! lost. The skew and hostile-file cases are the root's `tests/reliability.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use crate::common::{Deployment, content, hhmm, name};
use outpost::replicator::{SyncMode, remote};
use outpost::{ManualClock, Store, Value};

#[test]
fn restore_central_from_an_old_backup_is_repaired_by_its_remotes_and_nothing_is_lost() {
    let Deployment {
        root,
        clock,
        asoc,
        bsoc,
        csoc,
    } = Deployment::new();
    let central_dir = root.path().join("ASOC");
    let backup_dir = root.path().join("backup");
    let reopen = || {
        Store::open(
            &central_dir,
            outpost::StoreConfig::new(
                outpost::Site::central(1, "ASOC").unwrap(),
                outpost::retail::schema(),
                clock.clone(),
            ),
        )
        .unwrap()
    };
    let mut d = Deployment {
        root,
        clock: clock.clone(),
        asoc,
        bsoc,
        csoc,
    };
    d.bsoc
        .write(|tx| tx.set("customers", "BSOC-1", "name", "before the backup"))
        .unwrap();
    d.emit_and_process(&d.bsoc, SyncMode::Deferred);
    d.return_and_apply(&d.bsoc);
    d.return_and_apply(&d.csoc);

    // The backup (central stopped), then a day of work central will lose.
    drop(std::mem::replace(
        &mut d.asoc,
        Store::in_memory(scratch()).unwrap(),
    ));
    outpost_cli::admin::central_backup(&central_dir, &backup_dir).unwrap();
    d.asoc = reopen();
    d.at(10, 0);
    d.asoc
        .write(|tx| {
            tx.set(
                "articles",
                "ART-CHAIR",
                "price",
                crate::common::dec("59.90"),
            )
        })
        .unwrap();
    // A commit of several changes: a creation and two fields under one dot.
    d.asoc
        .write(|tx| {
            tx.set("articles", "ART-LAMP", "name", "Lamp")?;
            tx.set("articles", "ART-LAMP", "price", crate::common::dec("19.90"))
        })
        .unwrap();
    d.bsoc
        .write(|tx| {
            tx.set("customers", "BSOC-2", "name", "after the backup")?;
            tx.set("sales_documents", "BSOC-D1", "status", "draft")
        })
        .unwrap();
    d.csoc
        .write(|tx| tx.set("customers", "CSOC-2", "name", "after the backup too"))
        .unwrap();
    for _ in 0..2 {
        d.emit_and_process(&d.bsoc, SyncMode::Deferred);
        d.emit_and_process(&d.csoc, SyncMode::Deferred);
        d.return_and_apply(&d.bsoc);
        d.return_and_apply(&d.csoc);
    }
    let everything = content(&d.asoc);
    assert_eq!(content(&d.bsoc), everything);
    assert_eq!(content(&d.csoc), everything);

    // Central's disk is lost; it is restored from the backup.
    drop(std::mem::replace(
        &mut d.asoc,
        Store::in_memory(scratch()).unwrap(),
    ));
    outpost_cli::admin::central_restore(&backup_dir, &central_dir).unwrap();
    d.asoc = reopen();
    assert_eq!(name(&d.asoc, "BSOC-2"), None, "the backup is older");
    assert_ne!(content(&d.asoc), everything);

    // The remotes' next two syncs bring back everything central lost — its own price too —
    // and a third closes the restore (each takes a return made since central took back what
    // the others sent, which a remote may hold in part).
    d.at(11, 0);
    for _ in 0..3 {
        d.emit_and_process(&d.bsoc, SyncMode::Deferred);
        d.emit_and_process(&d.csoc, SyncMode::Deferred);
        for r in [&d.bsoc, &d.csoc] {
            let (_, applied) = d.return_and_apply(r);
            assert!(
                matches!(applied, remote::Applied::Applied { .. }),
                "a return of the restored central is applied, not refused as stale: {applied:?}"
            );
        }
    }
    assert_eq!(content(&d.asoc), everything);
    assert_eq!(
        name(&d.asoc, "BSOC-2"),
        Some(Value::from("after the backup"))
    );
    assert!(
        d.asoc
            .record("sales_documents", "BSOC-D1")
            .unwrap()
            .is_some()
    );

    let lamp = d.asoc.record("articles", "ART-LAMP").unwrap().unwrap();
    assert_eq!(lamp.get("name"), Some(&Value::from("Lamp")));
    assert_eq!(lamp.get("price"), Some(&crate::common::dec("19.90")));

    // Every remote has sent back what it had: the restore is over, and a remote sending a
    // change it claims central made is refused again (R1), even one numbered where central's
    // lost commits were.
    let lost = outpost::Dot {
        site: crate::common::ASOC,
        seq: 1 << 20,
    };
    let stamp = outpost::Stamp::new(hhmm(11, 30), 0);
    let forged = outpost::Change {
        table: "articles".into(),
        key: "ART-CHAIR".into(),
        slot: outpost::Slot::Field("price".into()),
        value: crate::common::dec("0.01"),
        stamp,
        dot: lost,
        created: d
            .asoc
            .snapshot()
            .unwrap()
            .raw_record("articles", "ART-CHAIR")
            .unwrap()
            .unwrap()
            .created,
    };
    let report = d
        .asoc
        .apply(
            crate::common::BSOC,
            vec![forged],
            &outpost::Knowledge::new(),
        )
        .unwrap();
    assert_eq!(report.refused(), 1, "{report:?}");
    assert_eq!(report.refusals[0].1.refusal.rule, outpost::Rule::R1);

    // Central's new commits do not reuse the dots of those it lost: they reach the remotes.
    d.at(12, 0);
    d.asoc
        .write(|tx| {
            tx.set(
                "articles",
                "ART-CHAIR",
                "price",
                crate::common::dec("64.90"),
            )
        })
        .unwrap();
    d.return_and_apply(&d.bsoc);
    d.return_and_apply(&d.csoc);
    for s in [&d.bsoc, &d.csoc] {
        let price = s.record("articles", "ART-CHAIR").unwrap().unwrap();
        assert_eq!(price.get("price"), Some(&crate::common::dec("64.90")));
        s.check_invariants().unwrap();
    }
    assert_eq!(content(&d.bsoc), content(&d.asoc));
    assert_eq!(content(&d.csoc), content(&d.asoc));
    d.asoc.check_invariants().unwrap();
}

/// A throwaway store to hold a place while central's is closed.
fn scratch() -> outpost::StoreConfig {
    outpost::StoreConfig::new(
        outpost::Site::central(9, "TMP").unwrap(),
        outpost::retail::schema(),
        ManualClock::new(0),
    )
}

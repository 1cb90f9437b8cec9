//! The ownership and merge rules of SPEC.md, one test per rule. Each refused write shows the
//! typed error naming its rule and that nothing was written — through the API (a local write)
//! and through a merge (an incoming change, into the rejection log).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::*;
use outpost_engine::{
    Change, Creation, Dot, Error, Knowledge, ManualClock, Outcome, Rule, SiteId, Slot, Stamp,
    Store, Value,
};

fn rule_of(err: &Error) -> Rule {
    err.refusal()
        .unwrap_or_else(|| panic!("expected a refusal, got {err}"))
        .rule
}

fn content(s: &Store) -> Vec<(Vec<u8>, Vec<u8>)> {
    s.snapshot().unwrap().replicated_content().unwrap()
}

#[test]
fn r1_every_record_knows_its_creator_site() {
    let clock = ManualClock::new(T0_MS);
    let (a, b) = (store(ASOC, &clock), store(BSOC, &clock));
    let key = b
        .write(|tx| {
            let k = tx.new_key("customers")?;
            tx.set("customers", &k, "name", "Dupont")?;
            Ok(k)
        })
        .unwrap();
    assert_eq!(key, "BSOC-000001");
    sync(&b, &a);
    // Central edits the record: it stays BSOC's.
    a.write(|tx| tx.set("customers", &key, "city", "Lyon"))
        .unwrap();
    sync(&a, &b);
    for s in [&a, &b] {
        let r = s.record("customers", &key).unwrap().unwrap();
        assert_eq!(r.creator, SiteId(BSOC));
        assert_eq!(r.get("city"), Some(&Value::from("Lyon")));
    }
}

#[test]
fn r1_a_remote_cannot_send_changes_claiming_another_origin() {
    let clock = ManualClock::new(T0_MS);
    let a = store(ASOC, &clock);
    // BSOC sends a change that claims CSOC made it.
    let forged = Change {
        table: "customers".into(),
        key: "CSOC-000009".into(),
        slot: Slot::Field("name".into()),
        value: Value::from("forged"),
        stamp: Stamp::new(T0_MS, 0),
        dot: Dot {
            site: SiteId(CSOC),
            seq: 1,
        },
        created: Creation {
            stamp: Stamp::new(T0_MS, 0),
            dot: Dot {
                site: SiteId(CSOC),
                seq: 1,
            },
        },
    };
    let before = content(&a);
    let report = a
        .apply(SiteId(BSOC), vec![forged.clone()], &Knowledge::new())
        .unwrap();
    assert_eq!(report.outcomes, vec![Outcome::Refused(Rule::R1)]);
    assert_eq!(content(&a), before, "nothing written");
    let log = a.rejections().unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].change, forged);
    assert_eq!(log[0].source, SiteId(BSOC));
    assert_eq!(log[0].refusal.rule, Rule::R1);
}

#[test]
fn r2_the_latest_write_wins_field_by_field() {
    let clock_a = ManualClock::new(T0_MS);
    let clock_b = ManualClock::new(T0_MS);
    let (a, b) = (store(ASOC, &clock_a), store(BSOC, &clock_b));
    b.write(|tx| {
        tx.set("customers", "C1", "name", "Dupont")?;
        tx.set("customers", "C1", "city", "Lyon")
    })
    .unwrap();
    sync(&b, &a);
    // Concurrent edits: BSOC changes the city at 10:00, central the address at 10:05 and the city
    // at 10:01. Field-level: BSOC's address is untouched, central's later city wins.
    clock_b.set(T0_MS + 3_600_000);
    b.write(|tx| tx.set("customers", "C1", "city", "Lille"))
        .unwrap();
    clock_a.set(T0_MS + 3_660_000);
    a.write(|tx| tx.set("customers", "C1", "city", "Nantes"))
        .unwrap();
    clock_a.set(T0_MS + 3_900_000);
    a.write(|tx| tx.set("customers", "C1", "address", "1 rue Haute"))
        .unwrap();
    sync(&a, &b);
    sync(&b, &a);
    for s in [&a, &b] {
        let r = s.record("customers", "C1").unwrap().unwrap();
        assert_eq!(r.get("city"), Some(&Value::from("Nantes")));
        assert_eq!(r.get("address"), Some(&Value::from("1 rue Haute")));
        assert_eq!(r.get("name"), Some(&Value::from("Dupont")));
    }
    assert_eq!(content(&a), content(&b));
}

#[test]
fn r2_concurrent_same_field_writes_at_equal_physical_times_pick_one_winner_everywhere() {
    // All three sites write the same field at the same millisecond: the stamps are equal, the
    // site id breaks the tie, and every site keeps the same value whatever the arrival order.
    let clock = ManualClock::new(T0_MS);
    let stores = [
        store(ASOC, &clock),
        store(BSOC, &clock),
        store(CSOC, &clock),
    ];
    for s in &stores {
        let who = s.site().code.to_string();
        s.write(|tx| tx.set("customers", "SHARED-1", "city", who.as_str()))
            .unwrap();
    }
    // Deliver in different orders.
    sync(&stores[2], &stores[0]);
    sync(&stores[1], &stores[0]);
    sync(&stores[0], &stores[1]);
    sync(&stores[0], &stores[2]);
    let expected = Value::from("CSOC"); // highest site id at the equal stamp
    for s in &stores {
        let raw = s
            .snapshot()
            .unwrap()
            .raw_record("customers", "SHARED-1")
            .unwrap()
            .unwrap();
        assert_eq!(raw.fields["city"].value, expected);
        assert_eq!(raw.fields["city"].stamp, Stamp::new(T0_MS, 0));
    }
    assert_eq!(content(&stores[0]), content(&stores[1]));
    assert_eq!(content(&stores[1]), content(&stores[2]));
}

#[test]
fn r2_a_deletion_is_last_writer_wins_against_updates() {
    let clock = ManualClock::new(T0_MS);
    let (a, b) = (store(ASOC, &clock), store(BSOC, &clock));
    b.write(|tx| tx.set("customers", "C1", "name", "Dupont"))
        .unwrap();
    sync(&b, &a);
    clock.advance(1_000);
    a.write(|tx| tx.delete("customers", "C1")).unwrap();
    // An older concurrent update (stamp before the deletion) does not revive it.
    let b_late = ManualClock::new(T0_MS + 500);
    let b2 = Store::in_memory(outpost_engine::StoreConfig::new(
        site(CSOC),
        schema(),
        b_late,
    ))
    .unwrap();
    setup_directory(&b2);
    sync(&b, &b2);
    b2.write(|tx| tx.set("customers", "C1", "city", "Old"))
        .unwrap();
    sync(&b2, &a);
    assert!(a.record("customers", "C1").unwrap().is_none());
    // A later update does revive it, with only the fields written after the deletion.
    clock.advance(1_000);
    b.write(|tx| tx.set("customers", "C1", "city", "New"))
        .unwrap();
    sync(&b, &a);
    let r = a.record("customers", "C1").unwrap().unwrap();
    assert_eq!(r.get("city"), Some(&Value::from("New")));
    assert_eq!(r.get("name"), None);
    assert!(matches!(
        b.write(|tx| tx.delete("customers", "NOPE")),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn r3_a_remote_cannot_modify_an_article() {
    let clock = ManualClock::new(T0_MS);
    let (a, b) = (store(ASOC, &clock), store(BSOC, &clock));
    a.write(|tx| {
        tx.set("articles", "ART-1", "name", "Chair")?;
        tx.set(
            "articles",
            "ART-1",
            "price",
            Value::Decimal("49.90".parse().unwrap()),
        )
    })
    .unwrap();
    sync(&a, &b);
    let before = content(&b);
    let err = b
        .write(|tx| {
            tx.set(
                "articles",
                "ART-1",
                "price",
                Value::Decimal("1.00".parse().unwrap()),
            )
        })
        .unwrap_err();
    assert_eq!(rule_of(&err), Rule::R3);
    assert!(err.to_string().contains("R3"), "{err}");
    assert_eq!(content(&b), before, "nothing written");
    let err = b
        .write(|tx| tx.set("articles", "ART-2", "name", "New"))
        .unwrap_err();
    assert_eq!(rule_of(&err), Rule::R3, "nor create one");
    // Defence in depth: the same change arriving at central from an old or hostile remote.
    let forged = Change {
        table: "articles".into(),
        key: "ART-1".into(),
        slot: Slot::Field("price".into()),
        value: Value::Decimal("0.01".parse().unwrap()),
        stamp: Stamp::new(T0_MS + 1, 0),
        dot: Dot {
            site: SiteId(BSOC),
            seq: 99,
        },
        created: Creation {
            stamp: Stamp::new(T0_MS, 0),
            dot: Dot {
                site: SiteId(ASOC),
                seq: 1,
            },
        },
    };
    let before = content(&a);
    let report = a
        .apply(SiteId(BSOC), vec![forged], &Knowledge::new())
        .unwrap();
    assert_eq!(report.outcomes, vec![Outcome::Refused(Rule::R3)]);
    assert_eq!(content(&a), before);
    let log = a.rejections().unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].change.value, Value::Decimal("0.01".parse().unwrap()));
    assert_eq!(log[0].refusal.rule, Rule::R3);
}

#[test]
fn r4_r9_establishment_permissions_forbid_stock_documents_to_csoc() {
    let clock = ManualClock::new(T0_MS);
    let (a, b, c) = (
        store(ASOC, &clock),
        store(BSOC, &clock),
        store(CSOC, &clock),
    );
    // BSOC is allowed.
    b.write(|tx| tx.set("stock_documents", "BSOC-000001", "quantity", 5))
        .unwrap();
    // CSOC is not.
    let before = content(&c);
    let err = c
        .write(|tx| tx.set("stock_documents", "CSOC-000001", "quantity", 5))
        .unwrap_err();
    assert_eq!(rule_of(&err), Rule::R4);
    assert!(err.to_string().contains("R4/R9"), "{err}");
    assert_eq!(content(&c), before);
    // But CSOC may write customers and sales documents (R4).
    c.write(|tx| {
        tx.set("customers", "CSOC-000001", "name", "Martin")?;
        tx.set("sales_documents", "CSOC-000001", "status", "draft")
    })
    .unwrap();
    // At central, a stock document from CSOC is refused too.
    let forged = Change {
        table: "stock_documents".into(),
        key: "CSOC-000002".into(),
        slot: Slot::Field("quantity".into()),
        value: Value::Int(3),
        stamp: Stamp::new(T0_MS, 5),
        dot: Dot {
            site: SiteId(CSOC),
            seq: 50,
        },
        created: Creation {
            stamp: Stamp::new(T0_MS, 5),
            dot: Dot {
                site: SiteId(CSOC),
                seq: 1,
            },
        },
    };
    let report = a
        .apply(SiteId(CSOC), vec![forged], &Knowledge::new())
        .unwrap();
    assert_eq!(report.outcomes, vec![Outcome::Refused(Rule::R4)]);
    assert!(
        a.record("stock_documents", "CSOC-000002")
            .unwrap()
            .is_none()
    );
}

/// R4 and a refused creation put back: central stops CSOC writing customers; CSOC, not told
/// yet, creates one, emits it (refused: central has no such record), then writes another field
/// of it. The return puts the refused creation back to nothing — and left the later field in a
/// record without a creation: every read of the table and every later emission failed
/// ("registers without a single creation"), for good. The record's creation refused, what the
/// site wrote to it since goes with it.
#[test]
fn r4_a_refused_creation_put_back_takes_the_record_s_later_own_writes_with_it() {
    let clock = ManualClock::new(T0_MS);
    let (a, c) = (store(ASOC, &clock), store(CSOC, &clock));
    c.write(|tx| tx.set("customers", "CSOC-000009", "name", "Dupont"))
        .unwrap();
    a.set_denied_tables(SiteId(CSOC), ["customers".to_owned()].into())
        .unwrap();
    assert_eq!(sync(&c, &a).refused(), 2, "its creation and its name");
    clock.advance(1);
    c.write(|tx| tx.set("customers", "CSOC-000009", "city", "Lyon"))
        .unwrap();
    // The return: central has no such record, so each refused change goes back to nothing.
    let refused = a.rejections().unwrap();
    let reverted = c
        .write(|tx| {
            let mut n = 0;
            for r in &refused {
                let ch = &r.change;
                n += usize::from(tx.revert(&ch.table, &ch.key, &ch.slot, ch.dot, None)?);
            }
            Ok(n)
        })
        .unwrap();
    assert!(
        reverted >= 1,
        "the creation (the name goes with it, if not before)"
    );
    c.check_invariants().unwrap();
    assert_eq!(c.record("customers", "CSOC-000009").unwrap(), None);
    assert!(c.scan("customers").unwrap().is_empty());
    sync(&c, &a);
    assert_eq!(content(&c), content(&a));
}

/// R2 within one transaction: its writes share one stamp, and a record's fields show only when
/// written after its deletion — so a field set after a deletion in the same transaction was
/// kept hidden, at every site, though the write returned Ok (a host "replacing" a record). It
/// is now refused with the reason, and nothing of the transaction is written.
#[test]
fn r2_a_record_deleted_in_a_transaction_is_not_written_again_in_it() {
    let clock = ManualClock::new(T0_MS);
    let a = store(ASOC, &clock);
    a.write(|tx| tx.set("customers", "K", "name", "old"))
        .unwrap();
    clock.advance(1);
    let before = content(&a);
    let err = a
        .write(|tx| {
            tx.delete("customers", "K")?;
            tx.set("customers", "K", "name", "new")
        })
        .unwrap_err();
    assert!(matches!(err, Error::WrittenAfterDelete { .. }), "{err}");
    assert!(
        err.to_string().contains("deleted in this transaction"),
        "{err}"
    );
    assert_eq!(content(&a), before);
    // In two transactions, the record is replaced.
    a.write(|tx| tx.delete("customers", "K")).unwrap();
    clock.advance(1);
    a.write(|tx| tx.set("customers", "K", "name", "new"))
        .unwrap();
    let name = a
        .record("customers", "K")
        .unwrap()
        .and_then(|r| r.get("name").cloned());
    assert_eq!(name, Some(Value::from("new")));
}

/// A scan's `limit` counts the records it returns: deleted records were counted and then left
/// out, so a page came back short — and a reader paging by "fewer than asked means no more"
/// (the client library) stopped early, silently.
#[test]
fn r2_a_scan_returns_limit_records_whatever_was_deleted_among_them() {
    let clock = ManualClock::new(T0_MS);
    let a = store(ASOC, &clock);
    a.write(|tx| {
        for i in 1..=6 {
            tx.set("customers", &format!("K{i}"), "name", format!("n{i}"))?;
        }
        Ok(())
    })
    .unwrap();
    clock.advance(1);
    a.write(|tx| {
        tx.delete("customers", "K2")?;
        tx.delete("customers", "K3")
    })
    .unwrap();
    let keys = |from: Option<&str>, limit| -> Vec<String> {
        a.snapshot()
            .unwrap()
            .scan("customers", from, Some(limit))
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect()
    };
    assert_eq!(keys(None, 3), ["K1", "K4", "K5"]);
    assert_eq!(keys(Some("K2"), 2), ["K4", "K5"]);
    assert_eq!(keys(None, 10), ["K1", "K4", "K5", "K6"]);
}

#[test]
fn r5_only_the_creator_or_central_modifies_a_document() {
    let clock = ManualClock::new(T0_MS);
    let (a, b, c) = (
        store(ASOC, &clock),
        store(BSOC, &clock),
        store(CSOC, &clock),
    );
    b.write(|tx| {
        tx.set("sales_documents", "BSOC-000001", "customer", "C1")?;
        tx.set("sales_documents", "BSOC-000001", "status", "draft")
    })
    .unwrap();
    sync(&b, &a);
    sync(&a, &c);
    // CSOC may not touch BSOC's document.
    let before = content(&c);
    let err = c
        .write(|tx| tx.set("sales_documents", "BSOC-000001", "status", "cancelled"))
        .unwrap_err();
    assert_eq!(rule_of(&err), Rule::R5);
    assert_eq!(content(&c), before);
    let err = c
        .write(|tx| tx.delete("sales_documents", "BSOC-000001"))
        .unwrap_err();
    assert_eq!(rule_of(&err), Rule::R5, "nor delete it");
    // Central may.
    a.write(|tx| tx.set("sales_documents", "BSOC-000001", "status", "confirmed"))
        .unwrap();
    sync(&a, &b);
    assert_eq!(
        b.record("sales_documents", "BSOC-000001")
            .unwrap()
            .unwrap()
            .get("status"),
        Some(&Value::from("confirmed"))
    );
    // A change from CSOC to BSOC's document arriving at central is refused and logged.
    let c_change = Change {
        table: "sales_documents".into(),
        key: "BSOC-000001".into(),
        slot: Slot::Field("status".into()),
        value: Value::from("stolen"),
        stamp: Stamp::new(T0_MS + 10, 0),
        dot: Dot {
            site: SiteId(CSOC),
            seq: 7,
        },
        created: a
            .snapshot()
            .unwrap()
            .raw_record("sales_documents", "BSOC-000001")
            .unwrap()
            .unwrap()
            .created,
    };
    let report = a
        .apply(SiteId(CSOC), vec![c_change], &Knowledge::new())
        .unwrap();
    assert_eq!(report.outcomes, vec![Outcome::Refused(Rule::R5)]);
    assert_eq!(
        a.record("sales_documents", "BSOC-000001")
            .unwrap()
            .unwrap()
            .get("status"),
        Some(&Value::from("confirmed"))
    );
}

#[test]
fn r5_a_change_claiming_another_creator_for_an_existing_document_is_refused() {
    let clock = ManualClock::new(T0_MS);
    let (a, b) = (store(ASOC, &clock), store(BSOC, &clock));
    a.write(|tx| tx.set("sales_documents", "ASOC-000001", "status", "draft"))
        .unwrap();
    // BSOC claims it created central's document (an earlier marker), to take it over.
    let steal = Change {
        table: "sales_documents".into(),
        key: "ASOC-000001".into(),
        slot: Slot::Field("status".into()),
        value: Value::from("mine"),
        stamp: Stamp::new(T0_MS + 5, 0),
        dot: Dot {
            site: SiteId(BSOC),
            seq: 1,
        },
        created: Creation {
            stamp: Stamp::new(1, 0),
            dot: Dot {
                site: SiteId(BSOC),
                seq: 1,
            },
        },
    };
    let report = a
        .apply(SiteId(BSOC), vec![steal], &Knowledge::new())
        .unwrap();
    assert_eq!(report.outcomes, vec![Outcome::Refused(Rule::R5)]);
    let raw = a
        .snapshot()
        .unwrap()
        .raw_record("sales_documents", "ASOC-000001")
        .unwrap()
        .unwrap();
    assert_eq!(raw.creator(), SiteId(ASOC));
    drop(b);
}

#[test]
fn r6_a_document_synchronised_to_central_is_frozen_for_its_remote_creator() {
    let clock = ManualClock::new(T0_MS);
    let (a, b) = (store(ASOC, &clock), store(BSOC, &clock));
    b.write(|tx| tx.set("sales_documents", "BSOC-000001", "status", "draft"))
        .unwrap();
    // Emission: the replicator freezes what it emits.
    sync(&b, &a);
    assert!(b.freeze("sales_documents", "BSOC-000001").unwrap());
    let before = content(&b);
    let err = b
        .write(|tx| tx.set("sales_documents", "BSOC-000001", "status", "changed"))
        .unwrap_err();
    assert_eq!(rule_of(&err), Rule::R6);
    assert_eq!(content(&b), before, "nothing written");
    let err = b
        .write(|tx| tx.delete("sales_documents", "BSOC-000001"))
        .unwrap_err();
    assert_eq!(rule_of(&err), Rule::R6);
    // Central still may (R5), and its change reaches the frozen document.
    a.write(|tx| tx.set("sales_documents", "BSOC-000001", "status", "invoiced"))
        .unwrap();
    let report = sync(&a, &b);
    assert_eq!(report.count(Outcome::Applied), 1);
    // At central, frozen on receipt: a later change from BSOC to it is refused and logged.
    assert!(a.freeze("sales_documents", "BSOC-000001").unwrap());
    let created = a
        .snapshot()
        .unwrap()
        .raw_record("sales_documents", "BSOC-000001")
        .unwrap()
        .unwrap()
        .created;
    let late = Change {
        table: "sales_documents".into(),
        key: "BSOC-000001".into(),
        slot: Slot::Field("total".into()),
        value: Value::Decimal("10.00".parse().unwrap()),
        stamp: Stamp::new(T0_MS + 60_000, 0),
        dot: Dot {
            site: SiteId(BSOC),
            seq: 40,
        },
        created,
    };
    let report = a
        .apply(SiteId(BSOC), vec![late], &Knowledge::new())
        .unwrap();
    assert_eq!(report.outcomes, vec![Outcome::Refused(Rule::R6)]);
    // A cash register opts out: it stays open across syncs.
    b.write(|tx| tx.set("cash_registers", "BSOC-REG-1", "opened_at", "09:00"))
        .unwrap();
    assert!(!b.freeze("cash_registers", "BSOC-REG-1").unwrap());
    b.write(|tx| tx.set("cash_registers", "BSOC-REG-1", "closed_at", "19:00"))
        .unwrap();
    // Freezing is for documents only.
    b.write(|tx| tx.set("customers", "C1", "name", "x"))
        .unwrap();
    assert!(matches!(
        b.freeze("customers", "C1"),
        Err(Error::NotReservable(_))
    ));
}

#[test]
fn r7_a_reserved_document_is_written_only_by_its_holder_and_left_out_of_emissions() {
    let clock = ManualClock::new(T0_MS);
    let (a, b) = (store(ASOC, &clock), store(BSOC, &clock));
    b.write(|tx| tx.set("sales_documents", "BSOC-000001", "status", "draft"))
        .unwrap();
    b.write(|tx| tx.set("sales_documents", "BSOC-000002", "status", "draft"))
        .unwrap();
    b.reserve("sales_documents", "BSOC-000001", "till-1")
        .unwrap();
    // Another holder cannot take or write it.
    let err = b
        .reserve("sales_documents", "BSOC-000001", "till-2")
        .unwrap_err();
    assert_eq!(rule_of(&err), Rule::R7);
    assert!(
        err.to_string().contains("till-1"),
        "names the holder: {err}"
    );
    let before = content(&b);
    let err = b
        .write_as("till-2", |tx| {
            tx.set("sales_documents", "BSOC-000001", "status", "paid")
        })
        .unwrap_err();
    assert_eq!(rule_of(&err), Rule::R7);
    let err = b
        .write(|tx| tx.set("sales_documents", "BSOC-000001", "status", "paid"))
        .unwrap_err();
    assert_eq!(
        rule_of(&err),
        Rule::R7,
        "an anonymous writer is not the holder"
    );
    assert_eq!(content(&b), before, "nothing written");
    // The holder can.
    b.write_as("till-1", |tx| {
        tx.set(
            "sales_documents",
            "BSOC-000001",
            "total",
            Value::Decimal("12.50".parse().unwrap()),
        )
    })
    .unwrap();
    // A sync leaves the reserved document out and reports which dots it left out.
    let mut lacking = b.changes_lacking(&a.knowledge(), true).unwrap();
    let changes: Vec<Change> = lacking.by_ref().map(Result::unwrap).collect();
    assert!(
        changes.iter().all(|c| c.key == "BSOC-000002"),
        "{changes:?}"
    );
    assert_eq!(changes.len(), 2, "its creation and its status");
    let left_out = lacking.left_out().clone();
    assert_eq!(
        left_out.count(),
        2,
        "the first commit and the holder's commit"
    );
    a.apply(SiteId(BSOC), changes, &lacking.covered()).unwrap();
    assert!(
        a.record("sales_documents", "BSOC-000001")
            .unwrap()
            .is_none()
    );
    assert!(
        a.record("sales_documents", "BSOC-000002")
            .unwrap()
            .is_some()
    );
    // Released, it goes with the next sync: the left-out dots are lacked again.
    b.release("sales_documents", "BSOC-000001", "till-1")
        .unwrap();
    let report = sync(&b, &a);
    assert_eq!(
        report.count(Outcome::Applied),
        3,
        "creation, status, total: {report:?}"
    );
    let doc = a.record("sales_documents", "BSOC-000001").unwrap().unwrap();
    assert_eq!(
        doc.get("total"),
        Some(&Value::Decimal("12.50".parse().unwrap()))
    );
    assert_eq!(b.knowledge(), a.knowledge());
    // Only documents are reservable.
    b.write(|tx| tx.set("customers", "C1", "name", "x"))
        .unwrap();
    assert!(matches!(
        b.reserve("customers", "C1", "till-1"),
        Err(Error::NotReservable(_))
    ));
}

/// A commit that wrote a document a till then reserves is held whole, the other records it
/// wrote included: a receiver holding part of a commit whose number it does not know would
/// relay that part to no one (central's returns walk the numbers it knows) — and lose it for
/// good if the shop's store were lost before the release.
#[test]
fn r7_a_commit_that_wrote_a_reserved_document_is_held_whole() {
    let clock = ManualClock::new(T0_MS);
    let (a, b) = (store(ASOC, &clock), store(BSOC, &clock));
    b.write(|tx| {
        tx.set("sales_documents", "BSOC-000001", "status", "draft")?;
        tx.set("customers", "BSOC-C1", "name", "keyed in with the document")
    })
    .unwrap();
    b.reserve("sales_documents", "BSOC-000001", "till-1")
        .unwrap();
    let mut lacking = b.changes_lacking(&a.knowledge(), true).unwrap();
    let changes: Vec<Change> = lacking.by_ref().map(Result::unwrap).collect();
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(lacking.left_out().count(), 1, "the commit");
    b.release("sales_documents", "BSOC-000001", "till-1")
        .unwrap();
    let report = sync(&b, &a);
    assert_eq!(report.count(Outcome::Applied), 4, "{report:?}");
    assert!(a.record("customers", "BSOC-C1").unwrap().is_some());
    assert_eq!(b.knowledge(), a.knowledge());
}

#[test]
fn r8_only_the_creating_establishment_closes_its_cash_register_not_even_central() {
    let clock = ManualClock::new(T0_MS);
    let (a, b) = (store(ASOC, &clock), store(BSOC, &clock));
    b.write(|tx| tx.set("cash_registers", "BSOC-REG-1", "opened_at", "09:00"))
        .unwrap();
    sync(&b, &a);
    let before = content(&a);
    let err = a
        .write(|tx| tx.set("cash_registers", "BSOC-REG-1", "closed_at", "18:00"))
        .unwrap_err();
    assert_eq!(rule_of(&err), Rule::R8);
    assert!(err.to_string().contains("not even central"), "{err}");
    assert_eq!(content(&a), before);
    // Central may still write the register's other fields (R5).
    a.write(|tx| tx.set("cash_registers", "BSOC-REG-1", "opened_at", "09:01"))
        .unwrap();
    // The creator closes it.
    b.write(|tx| tx.set("cash_registers", "BSOC-REG-1", "closed_at", "19:00"))
        .unwrap();
    sync(&b, &a);
    assert_eq!(
        a.record("cash_registers", "BSOC-REG-1")
            .unwrap()
            .unwrap()
            .get("closed_at"),
        Some(&Value::from("19:00"))
    );
    // Central's own register: BSOC could never close it, even relayed.
    a.write(|tx| tx.set("cash_registers", "ASOC-REG-1", "opened_at", "08:00"))
        .unwrap();
    sync(&a, &b);
    let err = b
        .write(|tx| tx.set("cash_registers", "ASOC-REG-1", "closed_at", "20:00"))
        .unwrap_err();
    // R5 comes first for a document not ours; either way it is refused and names its rule.
    assert!(matches!(rule_of(&err), Rule::R5 | Rule::R8));
}

#[test]
fn schema_violations_are_typed_errors_locally_and_rejections_at_merge() {
    let clock = ManualClock::new(T0_MS);
    let (a, b) = (store(ASOC, &clock), store(BSOC, &clock));
    assert!(matches!(
        b.write(|tx| tx.set("customers", "C1", "nope", "x")),
        Err(Error::Schema(_))
    ));
    assert!(matches!(
        b.write(|tx| tx.set("customers", "C1", "name", 5)),
        Err(Error::Schema(_))
    ));
    assert!(matches!(
        b.write(|tx| tx.set("nope", "C1", "name", "x")),
        Err(Error::Schema(_))
    ));
    let bad = Change {
        table: "unknown_table".into(),
        key: "K".into(),
        slot: Slot::Field("x".into()),
        value: Value::Null,
        stamp: Stamp::new(T0_MS, 0),
        dot: Dot {
            site: SiteId(BSOC),
            seq: 1,
        },
        created: Creation {
            stamp: Stamp::new(T0_MS, 0),
            dot: Dot {
                site: SiteId(BSOC),
                seq: 1,
            },
        },
    };
    let report = a.apply(SiteId(BSOC), vec![bad], &Knowledge::new()).unwrap();
    assert_eq!(report.outcomes, vec![Outcome::Refused(Rule::Schema)]);
    assert!(matches!(
        a.apply(SiteId(77), vec![], &Knowledge::new()),
        Err(Error::UnknownSite(SiteId(77)))
    ));
}

#[test]
fn merge_is_idempotent_and_reports_each_outcome() {
    let clock = ManualClock::new(T0_MS);
    let (a, b) = (store(ASOC, &clock), store(BSOC, &clock));
    let (_, commit) = b
        .write_commit(|tx| {
            tx.set("customers", "C1", "name", "A")?;
            tx.set("customers", "C1", "city", "B")
        })
        .unwrap();
    let dot = commit.dot.unwrap();
    let mut covers = Knowledge::new();
    covers.insert(dot);
    let r1 = a
        .apply(SiteId(BSOC), commit.changes.clone(), &Knowledge::new())
        .unwrap();
    // The record's creation, then its two fields.
    assert_eq!(commit.changes[0].slot, Slot::Created);
    assert_eq!(r1.outcomes, vec![Outcome::Applied; 3]);
    // Same again, before it is counted as known: the registers already hold it.
    let r2 = a
        .apply(SiteId(BSOC), commit.changes.clone(), &covers)
        .unwrap();
    assert_eq!(r2.outcomes, vec![Outcome::AlreadyHad; 3]);
    // Known now: recognised at once.
    let r3 = a
        .apply(SiteId(BSOC), commit.changes.clone(), &covers)
        .unwrap();
    assert_eq!(r3.outcomes, vec![Outcome::AlreadyHad; 3]);
    // An older write to the same field is superseded.
    let mut old = commit.changes[1].clone();
    old.stamp = Stamp::new(T0_MS - 10, 0);
    old.dot.seq = 999;
    old.value = Value::from("older");
    let r4 = a.apply(SiteId(BSOC), vec![old], &Knowledge::new()).unwrap();
    assert_eq!(r4.outcomes, vec![Outcome::Superseded]);
    assert_eq!(
        a.record("customers", "C1").unwrap().unwrap().get("name"),
        Some(&Value::from("A"))
    );
    a.check_invariants().unwrap();
}

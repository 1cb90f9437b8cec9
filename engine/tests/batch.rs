//! A batch merged record by record ([`WriteTx::apply_batch`]: grouped and sorted by record,
//! each record read once and written once) gives exactly what merging its changes one at a
//! time in input order gives: the same outcome for every change, the same refusals in the same
//! order, the same stamps reported ahead, the same stored bytes and rejection log (R2, R1, R4,
//! R5, R6 guards included).
//!
//! Fixed default seed; `PROPTEST_RNG_SEED=<n>` and `PROPTEST_CASES=<n>` change the run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{ASOC, BSOC, CSOC, T0_MS, proptest_config, proptest_seed, store};
use outpost_engine::{
    Change, Creation, Dot, Incoming, ManualClock, MergeReport, SiteId, Slot, Stamp, Store, Value,
};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

const TABLES: [&str; 3] = ["customers", "sales_documents", "no_such_table"];
const FIELDS: [&str; 4] = ["name", "city", "status", "total"];

/// One generated change; numbers are reduced modulo what they index.
#[derive(Clone, Debug)]
struct Gen {
    table: u8,
    key: u8,
    slot: u8,
    origin: u8,
    seq: u8,
    stamp: u8,
    creator: u8,
    value: u8,
    known: bool,
}

fn a_change() -> impl Strategy<Value = Gen> {
    (
        (any::<u8>(), 0u8..5, any::<u8>(), any::<u8>()),
        (
            1u8..12,
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            proptest::bool::weighted(0.1),
        ),
    )
        .prop_map(
            |((table, key, slot, origin), (seq, stamp, creator, value, known))| Gen {
                table,
                key,
                slot,
                origin,
                seq,
                stamp,
                creator,
                value,
                known,
            },
        )
}

fn change(g: &Gen, source: u16) -> Change {
    // Mostly the two known tables; sometimes one the schema lacks (refused).
    let table = TABLES[usize::from(g.table % 7).min(2) % 3];
    // Mostly the source's own changes; some relayed from CSOC (a remote may not, R1).
    let origin = SiteId([source, CSOC, source][usize::from(g.origin % 3)]);
    let creator = SiteId([BSOC, CSOC][usize::from(g.creator % 2)]);
    let slot = match g.slot % 6 {
        0 => Slot::Created,
        1 => Slot::Tombstone,
        n => Slot::Field(FIELDS[usize::from(n - 2)].to_owned()),
    };
    let stamp = Stamp::new(T0_MS - 60_000 + u64::from(g.stamp % 16) * 1_000, 0);
    let dot = Dot {
        site: origin,
        seq: u64::from(g.seq),
    };
    let created = Creation {
        stamp: Stamp::new(T0_MS - 120_000 + u64::from(g.creator % 3) * 1_000, 0),
        dot: Dot {
            site: creator,
            seq: 1,
        },
    };
    let (stamp, dot) = if slot == Slot::Created {
        (created.stamp, created.dot)
    } else {
        (stamp, dot)
    };
    let value = match &slot {
        Slot::Created => Value::Null,
        Slot::Tombstone => Value::Bool(true),
        Slot::Field(f) if f == "total" => Value::Int(i64::from(g.value)),
        Slot::Field(_) => Value::Text(format!("v{}", g.value % 5)),
    };
    Change {
        table: table.to_owned(),
        key: format!("K{}", g.key),
        slot,
        value,
        stamp,
        dot,
        created,
    }
}

fn outcome_of(store: &Store, source: SiteId, batch: &[(Change, bool)], whole: bool) -> MergeReport {
    store
        .write(|tx| {
            let mut report = MergeReport::default();
            let items: Vec<Incoming> = batch
                .iter()
                .map(|(c, known)| {
                    if *known {
                        Incoming::Known(c.dot)
                    } else {
                        Incoming::New(c.clone())
                    }
                })
                .collect();
            if whole {
                tx.apply_batch(source, &items, &mut report)?;
            } else {
                for item in items {
                    tx.apply_batch(source, &[item], &mut report)?;
                }
            }
            Ok(report)
        })
        .unwrap()
}

fn run(receiver: u16, source: u16, gens: &[Gen]) -> Result<(), TestCaseError> {
    let batch: Vec<(Change, bool)> = gens.iter().map(|g| (change(g, source), g.known)).collect();
    let clock = ManualClock::new(T0_MS);
    let (a, b) = (store(receiver, &clock), store(receiver, &clock));
    // Both hold the same record first, written by the receiver, so that some changes lose.
    for s in [&a, &b] {
        s.write(|tx| tx.set("customers", "K1", "name", "stored"))
            .unwrap();
    }
    let source = SiteId(source);
    let whole = outcome_of(&a, source, &batch, true);
    let alone = outcome_of(&b, source, &batch, false);
    prop_assert_eq!(&whole, &alone);
    let (sa, sb) = (a.snapshot().unwrap(), b.snapshot().unwrap());
    prop_assert_eq!(
        sa.replicated_content().unwrap(),
        sb.replicated_content().unwrap()
    );
    prop_assert_eq!(sa.rejections().unwrap(), sb.rejections().unwrap());
    a.check_invariants().unwrap();
    Ok(())
}

#[test]
fn r2_a_batch_merged_record_by_record_gives_what_merging_each_change_alone_gives() {
    let config = proptest_config(200);
    let seed = proptest_seed(&config);
    let mut runner = TestRunner::new(config);
    // Central receiving from a remote (R1 refuses what it relays), a remote receiving from
    // central (central's creations adopted, R6 not applied).
    let strategy = (
        prop_oneof![Just((ASOC, BSOC)), Just((BSOC, ASOC))],
        proptest::collection::vec(a_change(), 1..120),
    );
    let result = runner.run(&strategy, |((receiver, source), gens)| {
        run(receiver, source, &gens)
    });
    if let Err(e) = result {
        panic!(
            "{e}\nreproduce: PROPTEST_RNG_SEED={seed} cargo test -p outpost-engine --test batch"
        );
    }
}

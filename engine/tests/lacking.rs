//! "What does a peer lack": a range scan per origin over the winning-dot index.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::*;
use outpost_engine::{Change, Dot, Knowledge, ManualClock, SiteId, Slot};

#[test]
fn changes_lacking_yields_exactly_the_delta_and_only_winning_registers() {
    let clock = ManualClock::new(T0_MS);
    let (a, b) = (store(ASOC, &clock), store(BSOC, &clock));
    for i in 0..200 {
        clock.advance(1);
        b.write(|tx| tx.set("customers", &format!("C{i:04}"), "name", format!("v{i}")))
            .unwrap();
    }
    sync(&b, &a);
    assert_eq!(b.changes_lacking(&a.knowledge(), false).unwrap().count(), 0);
    // Ten more commits; the first record's name is rewritten three times.
    for i in 0..10 {
        clock.advance(1);
        b.write(|tx| tx.set("customers", "C0000", "name", format!("again{i}")))
            .unwrap();
    }
    let lacking: Vec<Change> = b
        .changes_lacking(&a.knowledge(), false)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // Only the winning register is sent: the nine superseded rewrites are not.
    assert_eq!(lacking.len(), 1, "{lacking:?}");
    assert_eq!(
        lacking[0].dot,
        Dot {
            site: SiteId(BSOC),
            seq: 210
        }
    );
    assert_eq!(lacking[0].slot, Slot::Field("name".into()));
    // A peer with a hole in its knowledge gets the hole.
    let mut peer = b.knowledge();
    let mut hole = Knowledge::new();
    hole.insert(Dot {
        site: SiteId(BSOC),
        seq: 50,
    });
    peer = peer.difference(&hole);
    let lacking: Vec<Change> = b
        .changes_lacking(&peer, false)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(lacking.len(), 2, "creation and name of C0049: {lacking:?}");
    assert!(lacking.iter().all(|c| c.key == "C0049" && c.dot.seq == 50));
}

//! "Changes a peer lacks": Δ = 1k field changes on a 10k-cell and a 1M-cell store. The cost
//! should follow Δ, not the size of the store.
//!
//! `cargo bench -p outpost-benches --bench lacking`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use outpost_benches::{FIELDS, T0_MS, fill, open, sites};
use outpost_engine::{ManualClock, Value};

const DELTA_CELLS: usize = 1_000;

fn lacking(c: &mut Criterion) {
    let [_, remote] = sites();
    let mut group = c.benchmark_group("changes_lacking");
    group.sample_size(20);
    for n_cells in [10_000usize, 1_000_000] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let clock = ManualClock::new(T0_MS);
        let store = open(&remote, Some(dir.path()), &clock);
        fill(&store, &clock, n_cells / FIELDS.len(), 5_000);
        // What the peer knows: everything so far.
        let peer = store.knowledge();
        // Then Δ = 1k cells change: 250 records, four fields each, 10 records per commit.
        for commit in 0..(DELTA_CELLS / FIELDS.len() / 10) {
            clock.advance(1);
            store
                .write(|tx| {
                    for r in 0..10 {
                        let key = format!("C{:08}", (commit * 10 + r) * 37 % (n_cells / 4));
                        for f in FIELDS {
                            tx.set("customers", &key, f, Value::Text(format!("new-{commit}")))?;
                        }
                    }
                    Ok(())
                })
                .unwrap_or_else(|e| panic!("delta: {e}"));
        }
        group.throughput(Throughput::Elements(DELTA_CELLS as u64));
        group.bench_function(format!("delta_1k/store_{n_cells}_cells"), |b| {
            b.iter(|| {
                let n = store
                    .changes_lacking(&peer, true)
                    .unwrap_or_else(|e| panic!("lacking: {e}"))
                    .count();
                assert_eq!(n, DELTA_CELLS);
                n
            });
        });
    }
    group.finish();
}

criterion_group!(benches, lacking);
criterion_main!(benches);

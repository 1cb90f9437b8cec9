//! A flow received: decoded from its bytes and applied through the guards and last-writer-wins
//! into a durable store that holds the records (half the incoming changes newer, half older),
//! and the same flow received again (every change already known: left out by the reader).
//! The comparison harness's merge and re-merge, at a size criterion can repeat.
//!
//! `cargo bench -p outpost-benches --bench flow`

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use outpost_benches::{
    HOUR_MS, T0_MS, apply_flow, creations, fill, flow_bytes, incoming, open, sites,
};
use outpost_engine::{ManualClock, Outcome};

fn flow(c: &mut Criterion) {
    let [central, _] = sites();
    let mut group = c.benchmark_group("flow");
    group.sample_size(10);
    let records = 10_000;
    let clock = ManualClock::new(T0_MS);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let store = open(&central, Some(dir.path()), &clock);
    fill(&store, &clock, records, 10_000);
    let created = creations(&store, records).unwrap_or_else(|e| panic!("{e}"));
    drop(store);
    clock.set(T0_MS + 2 * HOUR_MS);
    let changes = incoming(records, &created);
    let n = changes.len();
    let bytes: std::sync::Arc<[u8]> = flow_bytes(&changes, records, false)
        .unwrap_or_else(|e| panic!("{e}"))
        .into();
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(format!("apply_durable/{n}_changes"), |b| {
        b.iter_batched(
            || {
                // A copy of the filled store for each run.
                let copy = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
                for entry in std::fs::read_dir(dir.path()).unwrap_or_else(|e| panic!("{e}")) {
                    let entry = entry.unwrap_or_else(|e| panic!("{e}"));
                    std::fs::copy(entry.path(), copy.path().join(entry.file_name()))
                        .unwrap_or_else(|e| panic!("{e}"));
                }
                let store = open(&central, Some(copy.path()), &clock);
                (copy, store)
            },
            |(copy, store)| {
                let report = apply_flow(&store, outpost_benches::shared(&bytes))
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(report.count(Outcome::Applied), n / 2);
                (copy, store)
            },
            BatchSize::PerIteration,
        );
    });
    let store = open(&central, Some(dir.path()), &clock);
    apply_flow(&store, outpost_benches::shared(&bytes)).unwrap_or_else(|e| panic!("{e}"));
    group.bench_function(format!("again_durable/{n}_changes"), |b| {
        b.iter(|| {
            let report = apply_flow(&store, outpost_benches::shared(&bytes))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(report.count(Outcome::AlreadyHad), n);
        });
    });
    group.finish();
}

criterion_group!(benches, flow);
criterion_main!(benches);

//! Merge throughput: field changes from a remote applied into a durable store (one fsync'd
//! commit per batch), through the real guards and last-writer-wins.
//!
//! `cargo bench -p outpost-benches --bench merge`

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use outpost_benches::{T0_MS, all_changes, fill, open, sites};
use outpost_engine::{ManualClock, SiteId};

fn merge(c: &mut Criterion) {
    let [central, remote] = sites();
    let mut group = c.benchmark_group("merge");
    group.sample_size(10);
    for n_records in [2_500usize, 25_000] {
        let clock = ManualClock::new(T0_MS);
        let source = open(&remote, None, &clock);
        fill(&source, &clock, n_records, 1_000);
        let (changes, covered) = all_changes(&source);
        let n_changes = changes.len();
        group.throughput(Throughput::Elements(n_changes as u64));
        group.bench_function(format!("into_empty_durable/{n_changes}_changes"), |b| {
            b.iter_batched(
                || {
                    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
                    let store = open(&central, Some(dir.path()), &clock);
                    (dir, store, changes.clone())
                },
                |(dir, store, batch)| {
                    let report = store
                        .apply(SiteId(2), batch, &covered)
                        .unwrap_or_else(|e| panic!("apply: {e}"));
                    assert_eq!(report.refused(), 0);
                    (dir, store)
                },
                BatchSize::PerIteration,
            );
        });
        // Re-merge: the same batch again, everything already known.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let store = open(&central, Some(dir.path()), &clock);
        store
            .apply(
                SiteId(2),
                changes.clone(),
                &outpost_engine::Knowledge::new(),
            )
            .unwrap_or_else(|e| panic!("apply: {e}"));
        group.bench_function(format!("remerge_durable/{n_changes}_changes"), |b| {
            b.iter_batched(
                || changes.clone(),
                |batch| {
                    store
                        .apply(SiteId(2), batch, &outpost_engine::Knowledge::new())
                        .unwrap_or_else(|e| panic!("apply: {e}"))
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, merge);
criterion_main!(benches);

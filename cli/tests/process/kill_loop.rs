//! Kill loops with real processes (issue 8): `outpost central serve` and `outpost remote sync`
//! killed with SIGKILL at random points while they upload, apply and answer large flows, again
//! and again. After every restart: the stores are sound, nothing is lost, nothing is applied
//! twice, and the journal's execution count tells the truth (J1).
//!
//! `OUTPOST_KILL_ITERATIONS` (default 20), `OUTPOST_KILL_BATCH` (records per site and
//! iteration, default 300) and `OUTPOST_KILL_SEED` (default 1) scale and vary it:
//! `OUTPOST_KILL_ITERATIONS=200 OUTPOST_KILL_BATCH=1000 cargo test --test kill_loop -- --nocapture`
//! (run it as its own package's test: `cargo test --workspace` turns on the engine's O(n)
//! invariant walk after every write, which makes large stores slow).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::net::*;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: the kill points, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// `outpost remote sync`, retried while central is busy or restarting.
fn sync_until_done(dir: &Path, data: &str, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = outpost(dir, &["remote", "sync", "--data", data, "--central", url]);
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{data} cannot sync: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Opens a store the test owns for a moment (no process holds it) and checks its invariants.
fn sound(dir: &Path, data: &str) -> std::sync::Arc<outpost::Store> {
    let store = outpost_server::data_dir::open(&dir.join(data)).unwrap();
    store
        .check_invariants()
        .unwrap_or_else(|e| panic!("{data}: {e}"));
    store
}

fn customers_with(store: &outpost::Store, prefix: &str) -> usize {
    store
        .scan("customers")
        .unwrap()
        .iter()
        .filter(|r| r.key.starts_with(prefix))
        .count()
}

#[test]
fn j1_kill_loop_central_and_remote_killed_at_random_points_lose_nothing_and_count_true() {
    let iterations = env_u64("OUTPOST_KILL_ITERATIONS", 20);
    let batch = env_u64("OUTPOST_KILL_BATCH", 300) as usize;
    let seed = env_u64("OUTPOST_KILL_SEED", 1);
    let reproduce = format!(
        "reproduce: OUTPOST_KILL_ITERATIONS={iterations} OUTPOST_KILL_BATCH={batch} \
         OUTPOST_KILL_SEED={seed} cargo test --test kill_loop"
    );
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(
        dir,
        &[],
        &[
            ("BSOC", "bsoc", &["immediate 60"]),
            ("CSOC", "csoc", &["immediate 60"]),
        ],
    );
    let serve = ["--data", "asoc", "--listen", "127.0.0.1:0"];
    let mut central = Daemon::start(dir, &serve);
    let mut kills: BTreeMap<&str, u64> = BTreeMap::new();
    // Emissions whose processing a kill cut off, with their execution count then.
    let mut cut: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..iterations {
        // CSOC's batch reaches central: BSOC's next return carries it (a large apply there).
        bulk(dir, "csoc", &format!("C{i:04}-"), batch);
        sync_until_done(dir, "csoc", &central.url);
        bulk(dir, "bsoc", &format!("B{i:04}-"), batch);
        let mut remote = Command::new(env!("CARGO_BIN_EXE_outpost"))
            .current_dir(dir)
            .args([
                "remote",
                "sync",
                "--data",
                "bsoc",
                "--central",
                &central.url,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(250)));
        if rng.below(2) == 0 {
            // The remote dies: mid-upload, mid-wait or mid-apply of its return.
            let finished = remote.try_wait().unwrap().is_some();
            let _ = remote.kill();
            remote.wait().unwrap();
            *kills
                .entry(if finished {
                    "remote (already done)"
                } else {
                    "remote"
                })
                .or_default() += 1;
            // The invariant walk is O(store): every tenth time, and at the end.
            if i % 10 == 0 {
                sound(dir, "bsoc");
            }
        } else {
            // Central dies: mid-receive, mid-apply or mid-return.
            central.kill();
            *kills.entry("central").or_default() += 1;
            let _ = remote.kill();
            remote.wait().unwrap();
            // What the journal says was cut off: started, not ended.
            let store = outpost_server::data_dir::open(&dir.join("asoc")).unwrap();
            if i % 10 == 1 {
                store.check_invariants().unwrap();
            }
            for r in outpost::replicator::journal::rows(&store, None, None, None).unwrap() {
                if r.exec_start_ms.is_some() && r.exec_end_ms.is_none() {
                    cut.insert(r.id.to_string(), r.executions);
                }
            }
            drop(store);
            central = Daemon::start(dir, &serve);
        }
        // The next sync completes, and with it everything left over.
        sync_until_done(dir, "bsoc", &central.url);
        let rows = admin_get(dir, &central, "/v1/journal");
        let emissions: Vec<&serde_json::Value> = rows
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kind"] == "Emission")
            .collect();
        // Every emission processed; run twice exactly when a kill cut its processing off.
        for r in &emissions {
            assert!(r["exec_end_ms"].is_u64(), "not processed: {r}\n{reproduce}");
            let id = format!(
                "{:02}-{:06}",
                r["id"]["site"].as_u64().unwrap(),
                r["id"]["seq"].as_u64().unwrap()
            );
            let want = cut.get(&id).map_or(1, |n| u64::from(*n) + 1);
            assert_eq!(
                r["executions"].as_u64(),
                Some(want),
                "{id}: {r}\n{reproduce}"
            );
        }
    }
    central.kill();
    // Nothing lost: every record of both remotes is at central and at the other remote.
    sync_until_done(dir, "csoc", &Daemon::start(dir, &serve).url);
    let central_daemon = Daemon::start(dir, &serve);
    sync_until_done(dir, "bsoc", &central_daemon.url);
    sync_until_done(dir, "csoc", &central_daemon.url);
    let rows = admin_get(dir, &central_daemon, "/v1/journal");
    central_daemon.kill();
    let want = iterations as usize * batch;
    for data in ["asoc", "bsoc", "csoc"] {
        let store = sound(dir, data);
        assert_eq!(customers_with(&store, "B"), want, "{data}\n{reproduce}");
        assert_eq!(customers_with(&store, "C"), want, "{data}\n{reproduce}");
    }
    // Nothing applied twice: each return BSOC applied is logged applied once.
    let bsoc = sound(dir, "bsoc");
    let mut applied: BTreeMap<String, u32> = BTreeMap::new();
    for row in outpost::replicator::remote::log_rows(&bsoc).unwrap() {
        if row.outcome.starts_with("applied") {
            *applied.entry(row.id.to_string()).or_default() += 1;
        }
    }
    assert!(
        applied.values().all(|n| *n == 1),
        "a return applied twice: {applied:?}\n{reproduce}"
    );
    // Each emission applied at most twice (once, plus once per processing cut off).
    let emissions = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "Emission")
        .count();
    eprintln!(
        "{iterations} iterations, {want} customers per site, kills {kills:?}, {emissions} emissions, \
         {} processings cut off and run again; {reproduce}",
        cut.len()
    );
}

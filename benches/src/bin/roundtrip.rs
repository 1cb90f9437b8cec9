//! The immediate-sync round trip on loopback (issue: network transport): a remote writes one
//! customer and syncs immediately (A3, M2) — emission written, uploaded over HTTP, processed
//! by central's automaton, the immediate return prepared, downloaded, applied and reported.
//!
//! `cargo run --release -p outpost-benches --bin roundtrip -- [--syncs N]`
//!
//! Central's daemon runs in this process on its own threads (the same code as
//! `outpost central serve`), on real stores in a temporary directory, durable commits.

use std::time::{Duration, Instant};

use outpost_cli::admin;
use outpost_server::serve::ServeConfig;
use outpost_server::sync::{Link, SyncRequest, sync_now};

fn main() -> Result<(), String> {
    let mut syncs = 200usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--syncs" => {
                syncs = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--syncs takes a number")?;
            }
            other => {
                return Err(format!(
                    "unknown argument {other}; usage: roundtrip [--syncs N]"
                ));
            }
        }
    }
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let central = tmp.path().join("asoc");
    let remote = tmp.path().join("bsoc");
    let boot = tmp.path().join("bsoc.boot");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let url = format!("http://127.0.0.1:{port}");
    admin::central_init(&central, "ASOC", 1, "UTC", "23:00")?;
    admin::add_remote(
        &central,
        &admin::NewRemote {
            id: 2,
            code: "BSOC",
            tz: "UTC",
            sync: &["immediate 60".to_owned()],
            deny: &[],
            url: Some(&url),
        },
        &boot,
    )?;
    admin::remote_init(&remote, &boot)?;
    let config = ServeConfig {
        listen: format!("127.0.0.1:{port}"),
        log: "warn".into(),
        ..ServeConfig::default()
    };
    let served = central.clone();
    std::thread::spawn(move || outpost_server::serve::serve(&served, config));
    let started = Instant::now();
    while ureq::get(format!("{url}/v1/health")).call().is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            return Err("central did not start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let store = admin::open(&remote)?;
    let link = Link::new(&remote, None, None)?;
    let warmup = 10;
    let mut times = Vec::with_capacity(syncs);
    for i in 0..warmup + syncs {
        store
            .write(|tx| tx.set("customers", &format!("K{i:06}"), "name", "Dupont"))
            .map_err(|e| e.to_string())?;
        let t = Instant::now();
        let summary = sync_now(
            &store,
            &link,
            &remote,
            SyncRequest {
                no_return: false,
                wait: Some(Duration::from_secs(10)),
            },
        )
        .map_err(|e| e.to_string())?;
        let took = t.elapsed();
        if summary.received.is_empty() {
            return Err(format!("sync {i} came back without its return: {summary}"));
        }
        if i >= warmup {
            times.push(took);
        }
    }
    times.sort();
    let at = |q: f64| {
        let i = ((times.len() as f64 - 1.0) * q).round() as usize;
        times.get(i).copied().unwrap_or_default().as_secs_f64() * 1000.0
    };
    let mean = times.iter().map(Duration::as_secs_f64).sum::<f64>() / times.len().max(1) as f64;
    println!(
        "immediate-sync round trip, {} syncs of one new customer (2 changes) on loopback:",
        times.len()
    );
    println!(
        "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms, mean {:.1} ms",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0),
        mean * 1000.0
    );
    std::process::exit(0);
}

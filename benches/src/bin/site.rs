//! A site server's throughput (S3): requests per second with N workstations at once on
//! loopback, each a thread with its own connection (the client library), against
//! `outpost site serve`'s code running in this process on a real, durable store.
//!
//! `cargo run --release -p outpost-benches --bin site -- [--requests N] [--clients 1,2,4,8,16]`
//!
//! For each number of clients: every client writes `N / clients` customers (one `PUT` each: one
//! durable commit each), then reads them back (`GET`), then the clients scan 100 records at a
//! time.

use std::time::{Duration, Instant};

use outpost_cli::admin;
use outpost_client::{Client, Records};

fn main() -> Result<(), String> {
    let mut requests = 4_000usize;
    let mut clients = vec![1usize, 2, 4, 8, 16];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--requests" => {
                requests = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--requests takes a number")?;
            }
            "--clients" => {
                clients = args
                    .next()
                    .ok_or("--clients takes a list: 1,2,4")?
                    .split(',')
                    .map(|n| {
                        n.trim()
                            .parse()
                            .map_err(|_| format!("{n:?} is not a number"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            other => {
                return Err(format!(
                    "unknown argument {other}; usage: site [--requests N] [--clients 1,2,4]"
                ));
            }
        }
    }
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let central = tmp.path().join("asoc");
    let remote = tmp.path().join("bsoc");
    let boot = tmp.path().join("bsoc.boot");
    admin::central_init(&central, "ASOC", 1, "UTC", "23:00")?;
    admin::add_remote(
        &central,
        &admin::NewRemote {
            id: 2,
            code: "BSOC",
            tz: "UTC",
            sync: &["immediate 60".to_owned()],
            deny: &[],
            url: None,
        },
        &boot,
    )?;
    admin::remote_init(&remote, &boot)?;
    let credential = outpost_server::site::add_user(&remote, "BENCH", false)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let url = format!("http://127.0.0.1:{port}");
    {
        let remote = remote.clone();
        let config = outpost_server::site::SiteServeConfig {
            listen: format!("127.0.0.1:{port}"),
            scheduler: false,
            ..outpost_server::site::SiteServeConfig::default()
        };
        std::thread::spawn(move || {
            if let Err(e) = outpost_server::site::serve(&remote, config) {
                eprintln!("site serve: {e}");
            }
        });
    }
    let probe = Client::new(&url, &credential).map_err(|e| e.to_string())?;
    let started = Instant::now();
    while probe.scan("customers", None, None, 1).is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the site server did not start".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "site server on loopback, durable store; {requests} requests per phase; 2 cores shared by server and clients\n"
    );
    println!("| clients | PUT (one commit each) | GET | scan of 100 records |");
    println!("|---|---|---|---|");
    for (round, &n) in clients.iter().enumerate() {
        let per = (requests / n).max(1);
        let phase = |what: &'static str| -> Result<f64, String> {
            let started = Instant::now();
            let workers: Vec<_> = (0..n)
                .map(|w| {
                    let c = Client::new(&url, &credential).map_err(|e| e.to_string());
                    std::thread::spawn(move || -> Result<(), String> {
                        let c = c?;
                        for i in 0..per {
                            let key = format!("R{round}-W{w:02}-{i:06}");
                            match what {
                                "put" => c
                                    .put(
                                        "customers",
                                        &key,
                                        &serde_json::json!({ "name": key, "city": "Lyon" }),
                                    )
                                    .map_err(|e| e.to_string())?,
                                "get" => {
                                    let got: Option<serde_json::Value> =
                                        c.get("customers", &key).map_err(|e| e.to_string())?;
                                    if got.is_none() {
                                        return Err(format!("{key} missing"));
                                    }
                                }
                                _ => {
                                    let rows = c
                                        .scan("customers", Some(&key), None, 100)
                                        .map_err(|e| e.to_string())?;
                                    if rows.is_empty() {
                                        return Err("empty scan".into());
                                    }
                                }
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            for w in workers {
                w.join().map_err(|_| "a client panicked".to_owned())??;
            }
            Ok((per * n) as f64 / started.elapsed().as_secs_f64())
        };
        let put = phase("put")?;
        let get = phase("get")?;
        let scan = phase("scan")?;
        println!("| {n} | {put:.0}/s | {get:.0}/s | {scan:.0}/s |");
    }
    Ok(())
}

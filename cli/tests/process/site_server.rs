//! A multi-workstation site (S3), end to end with real processes: `outpost site serve` owns
//! BSOC's store; workstations (`outpost client …` processes and the client library) write to it
//! at once, hold a reservation (R7), ask for syncs with central's daemon, and watch changes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::net::*;
use outpost_client::{Client, Records};

/// `outpost site serve`, killed when dropped.
struct SiteServer {
    child: Child,
    url: String,
    log: PathBuf,
}

impl SiteServer {
    fn start(dir: &Path, args: &[&str]) -> SiteServer {
        let log = dir.join("site-serve.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_outpost"))
            .current_dir(dir)
            .args(["site", "serve"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some((_, url)) = line.split_once(" listening on ") {
                        break url.to_owned();
                    }
                }
                _ => panic!(
                    "site serve did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ),
            }
        };
        std::thread::spawn(move || for _ in lines {});
        SiteServer { child, url, log }
    }
}

impl Drop for SiteServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed if the test ends before it does (a failed assertion).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn add_user(dir: &Path, user: &str, admin: bool) -> String {
    let mut args = vec!["site", "add-user", "--data", "bsoc", "--user", user];
    if admin {
        args.push("--admin");
    }
    ok(dir, &args).trim().to_owned()
}

/// An `outpost client` process as `credential`.
fn client_cmd(dir: &Path, server: &SiteServer, credential: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_outpost"));
    c.current_dir(dir)
        .args(["client", "--server", &server.url])
        .args(args)
        .env("OUTPOST_CREDENTIAL", credential);
    c
}

/// The same, from a named workstation.
fn till_cmd(
    dir: &Path,
    server: &SiteServer,
    credential: &str,
    till: &str,
    args: &[&str],
) -> Command {
    let mut all = vec!["--workstation", till];
    all.extend(args);
    client_cmd(dir, server, credential, &all)
}

fn run(mut c: Command) -> Output {
    c.output().unwrap()
}

fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn s3_three_workstations_write_at_once_a_sync_in_the_middle_a_reservation_outlives_no_dead_till() {
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
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", "127.0.0.1:0"]);
    let anne = add_user(dir, "ANNE", false);
    let bob = add_user(dir, "BOB", false);
    let carl = add_user(dir, "CARL", true);
    let server = SiteServer::start(
        dir,
        &[
            "--data",
            "bsoc",
            "--listen",
            "127.0.0.1:0",
            "--central",
            &central.url,
            "--lease-s",
            "5",
        ],
    );

    // A till watching changes from the start (the client library).
    let watcher = {
        let c = Client::new(&server.url, &bob).unwrap();
        std::thread::spawn(move || {
            let mut after = 0;
            let mut seen = Vec::new();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(120) {
                let got = c.changes(after, Duration::from_secs(5)).unwrap();
                assert!(!got.gap, "nothing missed");
                after = got.seq;
                let done = got
                    .changes
                    .iter()
                    .any(|ch| ch.key == "K-CSOC" && ch.site == "CSOC");
                seen.extend(got.changes);
                if done {
                    break;
                }
            }
            seen
        })
    };

    // CARL's document, reserved by CARL's till-3 (a process holding it, renewing its lease).
    succeeded(&run(client_cmd(
        dir,
        &server,
        &carl,
        &[
            "put",
            "--table",
            "sales_documents",
            "--key",
            "BSOC-D1",
            "--fields",
            r#"{"customer": "W1-000001", "status": "draft"}"#,
        ],
    )));
    let mut hold = till_cmd(
        dir,
        &server,
        &carl,
        "till-3",
        &[
            "hold",
            "--table",
            "sales_documents",
            "--key",
            "BSOC-D1",
            "--lease-s",
            "5",
        ],
    );
    let mut holder = KillOnDrop(hold.stdout(Stdio::piped()).spawn().unwrap());
    let mut held = String::new();
    BufReader::new(holder.0.stdout.as_mut().unwrap())
        .read_line(&mut held)
        .unwrap();
    assert!(
        held.starts_with("holding sales_documents/BSOC-D1"),
        "{held}"
    );

    // Three workstations at once: customers (ANNE), receipts (BOB), the reserved document
    // (CARL on till-3, its holder), and a sync asked in the middle.
    let n = 300;
    let n_text = n.to_string();
    let spawn = |mut c: Command| {
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let load = |cred: &str, till: &str, table: &str, prefix: &str, fields: &str, key: &[&str]| {
        let mut args = vec![
            "load", "--table", table, "--prefix", prefix, "--n", &n_text, "--fields", fields,
        ];
        args.extend(key);
        spawn(till_cmd(dir, &server, cred, till, &args))
    };
    let w1 = load(
        &anne,
        "till-1",
        "customers",
        "W1-",
        r#"{"name": "customer {i}", "city": "Lyon"}"#,
        &[],
    );
    let w2 = load(
        &bob,
        "till-2",
        "pos_receipts",
        "BSOC-R",
        r#"{"register": "till-2", "total": "12.{i}", "paid_with": "card"}"#,
        &[],
    );
    let w3 = load(
        &carl,
        "till-3",
        "sales_documents",
        "",
        r#"{"total": "{i}.00"}"#,
        &["--key", "BSOC-D1"],
    );
    // The sync in the middle: once the tills have begun writing.
    let lib = Client::new(&server.url, &anne).unwrap();
    let started = Instant::now();
    while lib
        .scan("customers", Some("W1-"), Some("W1-~"), 100)
        .unwrap()
        .len()
        < 20
    {
        assert!(started.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(20));
    }
    let summary = succeeded(&run(client_cmd(dir, &server, &carl, &["sync"])));
    assert!(summary.contains("sent 1 emission(s)"), "{summary}");
    // ANNE may not write CARL's reserved document: the error names who holds it.
    let refused = run(till_cmd(
        dir,
        &server,
        &anne,
        "till-1",
        &[
            "put",
            "--table",
            "sales_documents",
            "--key",
            "BSOC-D1",
            "--fields",
            r#"{"status": "paid"}"#,
        ],
    ));
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("R7") && why.contains("reserved by CARL@till-3"),
        "{why}"
    );
    // Nor may CARL from another till.
    let other_till = run(till_cmd(
        dir,
        &server,
        &carl,
        "till-9",
        &[
            "put",
            "--table",
            "sales_documents",
            "--key",
            "BSOC-D1",
            "--fields",
            r#"{"status": "paid"}"#,
        ],
    ));
    assert!(!other_till.status.success());
    for w in [w1, w2, w3] {
        let out = w.wait_with_output().unwrap();
        assert!(succeeded(&out).contains(&format!("{n} records written")));
    }

    // The same typed errors as the embedded API: a remote writing a central-only table (R3).
    match lib.put("articles", "A-1", &serde_json::json!({ "price": "1.00" })) {
        Err(outpost::Error::Refused(r)) => assert_eq!(r.rule, outpost::Rule::R3),
        other => panic!("expected R3, got {other:?}"),
    }
    match lib.set_setting("emission_time", "20:00") {
        Err(outpost::Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied),
        other => panic!("only an admin: {other:?}"),
    }

    // CARL's workstation dies holding the reservation: refused while the lease runs, then the
    // server releases it and ANNE can write.
    holder.0.kill().unwrap();
    holder.0.wait().unwrap();
    let write_d1 = || {
        lib.put(
            "sales_documents",
            "BSOC-D1",
            &serde_json::json!({ "status": "paid" }),
        )
    };
    let started = Instant::now();
    loop {
        match write_d1() {
            Ok(()) => break,
            Err(outpost::Error::Refused(r)) if r.rule == outpost::Rule::R7 => {
                assert!(r.reason.contains("CARL@till-3"), "{}", r.reason);
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "the lease never ran out; the server's log: {}",
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("{e}"),
        }
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2),
        "released after {waited:?}"
    );

    // CSOC writes and syncs; BSOC's next sync brings it, and the watching till sees it.
    put(
        dir,
        "csoc",
        "K-CSOC",
        r#"{"name": "from CSOC", "city": "Nice"}"#,
    );
    sync(dir, "csoc", &central, &[]);
    succeeded(&run(client_cmd(dir, &server, &anne, &["sync"])));
    sync(dir, "csoc", &central, &[]);
    let seen = watcher.join().unwrap();
    assert!(seen.iter().any(|c| c.key == "K-CSOC" && c.site == "CSOC"));
    assert!(
        seen.iter()
            .any(|c| c.key == "W1-000149" && c.site == "BSOC")
    );

    // A till stopped cleanly (SIGTERM) releases its reservation at once, not at the lease's end.
    succeeded(&run(client_cmd(
        dir,
        &server,
        &carl,
        &[
            "put",
            "--table",
            "sales_documents",
            "--key",
            "BSOC-D2",
            "--fields",
            r#"{"status": "draft"}"#,
        ],
    )));
    let mut h = KillOnDrop(
        till_cmd(
            dir,
            &server,
            &carl,
            "till-5",
            &[
                "hold",
                "--table",
                "sales_documents",
                "--key",
                "BSOC-D2",
                "--lease-s",
                "600",
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let mut out = BufReader::new(h.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("holding sales_documents/BSOC-D2"),
        "{line}"
    );
    let d2 = || {
        lib.put(
            "sales_documents",
            "BSOC-D2",
            &serde_json::json!({ "status": "paid" }),
        )
    };
    assert!(matches!(d2(), Err(outpost::Error::Refused(_))), "held");
    let sent = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", h.0.id())])
        .status()
        .unwrap();
    assert!(sent.success());
    assert!(h.0.wait().unwrap().success());
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "released sales_documents/BSOC-D2");
    d2().unwrap();

    // Everything converged: no write lost at BSOC, at central or at CSOC.
    let count = |table: &str, from: &str, to: &str| {
        lib.scan(table, Some(from), Some(to), 10_000).unwrap().len()
    };
    assert_eq!(count("customers", "W1-", "W1-~"), n);
    assert_eq!(count("pos_receipts", "BSOC-R", "BSOC-R~"), n);
    assert_eq!(
        lib.get::<serde_json::Value>("customers", "K-CSOC")
            .unwrap()
            .unwrap()["city"],
        "Nice"
    );
    // BSOC sent at least two emissions with changes: the sync in the middle did not carry
    // everything.
    let bsoc_emissions: Vec<u64> = admin_get(dir, &central, "/v1/journal")
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["site"] == 2 && r["kind"] == "Emission")
        .map(|r| r["n_changes"].as_u64().unwrap())
        .collect();
    assert!(
        bsoc_emissions.iter().filter(|c| **c > 0).count() >= 2,
        "{bsoc_emissions:?}"
    );
    drop(server);
    assert!(central.terminate().success());
    let at = |data: &str| outpost_server::data_dir::open(&dir.join(data)).unwrap();
    for data in ["asoc", "csoc"] {
        let store = at(data);
        let snap = store.snapshot().unwrap();
        let customers = snap.scan("customers", Some("W1-"), None).unwrap();
        assert_eq!(
            customers
                .iter()
                .filter(|r| r.key.starts_with("W1-"))
                .count(),
            n,
            "{data}"
        );
        let receipts = snap.scan("pos_receipts", Some("BSOC-R"), None).unwrap();
        assert_eq!(
            receipts
                .iter()
                .filter(|r| r.key.starts_with("BSOC-R"))
                .count(),
            n,
            "{data}"
        );
        let d1 = store.record("sales_documents", "BSOC-D1").unwrap().unwrap();
        assert_eq!(
            d1.fields["status"],
            outpost::Value::Text("paid".into()),
            "{data}: ANNE's write after the lease ran out"
        );
        assert_eq!(
            d1.fields["total"].to_string(),
            format!("{}.00", n - 1),
            "{data}: CARL's last write while holding it"
        );
    }
    // The workstation log: who wrote what, the refusal included.
    let log = outpost_server::site::log_entries(
        &outpost_server::data_dir::open(&dir.join("bsoc")).unwrap(),
        0,
    )
    .unwrap();
    assert!(log.iter().any(|e| {
        e.user == "ANNE"
            && e.key == "BSOC-D1"
            && e.refused
                .as_deref()
                .is_some_and(|r| r.contains("reserved by CARL"))
    }));
    assert!(
        log.iter()
            .any(|e| e.op == "release (lease ran out)" && e.user == "CARL@till-3")
    );
    assert_eq!(
        log.iter()
            .filter(|e| e.user == "BOB@till-2" && e.table == "pos_receipts" && e.refused.is_none())
            .count(),
        n
    );
}

/// A sales document as a host application types it.
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
struct Doc {
    customer: String,
    status: String,
}

/// A till program's code, written once for any [`Records`]: PAUL creates and reserves a
/// document, ZOE tries to write it.
fn till<R: Records>(paul: &R, zoe: &R, key: &str) -> (Option<Doc>, outpost::Error) {
    let doc = Doc {
        customer: "K-1".into(),
        status: "draft".into(),
    };
    paul.put("sales_documents", key, &doc).unwrap();
    paul.reserve("sales_documents", key).unwrap();
    let refused = zoe
        .put(
            "sales_documents",
            key,
            &serde_json::json!({ "status": "paid" }),
        )
        .unwrap_err();
    paul.release("sales_documents", key).unwrap();
    (paul.get("sales_documents", key).unwrap(), refused)
}

#[test]
fn s3_central_s_own_workstations_and_one_program_embedded_or_client_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(dir, &[], &[("BSOC", "bsoc", &["immediate 60"])]);
    let user = |u: &str| {
        ok(dir, &["site", "add-user", "--data", "asoc", "--user", u])
            .trim()
            .to_owned()
    };
    let (paul, zoe) = (user("PAUL"), user("ZOE"));

    // Embedded: the program opens central's store itself.
    let (embedded_doc, embedded_err) = {
        let store = std::sync::Arc::new(outpost_server::data_dir::open(&dir.join("asoc")).unwrap());
        let e = |u: &str| outpost_client::Embedded::new(std::sync::Arc::clone(&store), u);
        till(&e("PAUL"), &e("ZOE"), "ASOC-D1")
    };
    // Client-server: the same code against central's daemon, which serves its own
    // workstations under /ws.
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", "127.0.0.1:0"]);
    let ws = format!("{}/ws", central.url);
    let c = |cred: &str| Client::new(&ws, cred).unwrap();
    let (client_doc, client_err) = till(&c(&paul), &c(&zoe), "ASOC-D2");

    assert_eq!(embedded_doc, client_doc);
    assert_eq!(
        client_doc,
        Some(Doc {
            customer: "K-1".into(),
            status: "draft".into()
        })
    );
    let (outpost::Error::Refused(a), outpost::Error::Refused(b)) = (&embedded_err, &client_err)
    else {
        panic!("both refused: {embedded_err:?} / {client_err:?}");
    };
    assert_eq!(a.rule, outpost::Rule::R7);
    assert_eq!(
        (a.rule, &a.table, &a.field, &a.reason),
        (b.rule, &b.table, &b.field, &b.reason)
    );
    assert!(a.reason.contains("PAUL"), "{}", a.reason);
    assert_eq!(
        embedded_err.to_string().replace("D1", "D2"),
        client_err.to_string()
    );

    // The async client, from a tokio program.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got: Option<Doc> = runtime.block_on(async {
        let a = outpost_client::AsyncClient::new(&ws, &paul).unwrap();
        a.put(
            "customers",
            "ASOC-K9",
            &serde_json::json!({ "name": "async" }),
        )
        .await
        .unwrap();
        // Two async tills signed in as PAUL, each naming its workstation: the first's
        // reservation holds the second off (R7), as with the blocking client.
        let till_1 = a.clone().workstation("till-1");
        let till_2 = outpost_client::AsyncClient::from(
            outpost_client::Client::new(&ws, &paul)
                .unwrap()
                .workstation("till-2"),
        );
        till_1
            .reserve_for("sales_documents", "ASOC-D2", Duration::from_secs(60))
            .await
            .unwrap();
        let held = till_2
            .put(
                "sales_documents",
                "ASOC-D2",
                &serde_json::json!({ "status": "paid" }),
            )
            .await;
        assert!(matches!(held, Err(outpost::Error::Refused(_))), "{held:?}");
        till_1.release("sales_documents", "ASOC-D2").await.unwrap();
        a.get("sales_documents", "ASOC-D2").await.unwrap()
    });
    assert_eq!(got, client_doc);
    // Central syncs with no one: a workstation asking for a sync is told so.
    let err = c(&paul).sync().unwrap_err().to_string();
    assert!(err.contains("no central"), "{err}");
    // A remote's credential is no workstation user's.
    let remote = credential(&dir.join("bsoc/remote.toml"));
    let err = c(&remote)
        .get::<Doc>("sales_documents", "ASOC-D2")
        .unwrap_err();
    assert!(
        matches!(&err, outpost::Error::Io(e) if e.kind() == std::io::ErrorKind::PermissionDenied),
        "{err:?}"
    );
}

#[test]
fn s3_a_site_server_over_https_and_never_plain_http_on_the_network_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(dir, &[], &[("BSOC", "bsoc", &["immediate 60"])]);
    let anne = add_user(dir, "ANNE", false);
    // Plain HTTP on an address other than loopback: refused with what to do.
    let out = outpost(
        dir,
        &["site", "serve", "--data", "bsoc", "--listen", "0.0.0.0:0"],
    );
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        why.contains("--tls-cert") && why.contains("--allow-plain-http"),
        "{why}"
    );
    // HTTPS with a self-signed certificate the workstation trusts.
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let server = SiteServer::start(
        dir,
        &[
            "--data",
            "bsoc",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "cert.pem",
            "--tls-key",
            "key.pem",
        ],
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let url = server.url.replace("127.0.0.1", "localhost");
    let c = Client::with_ca(&url, &anne, &dir.join("cert.pem")).unwrap();
    c.put(
        "customers",
        "BSOC-K1",
        &serde_json::json!({ "name": "over TLS" }),
    )
    .unwrap();
    let got: serde_json::Value = c.get("customers", "BSOC-K1").unwrap().unwrap();
    assert_eq!(got["name"], "over TLS");
    // Without trusting the certificate: refused by the client, nothing sent.
    let untrusting = Client::new(&url, &anne).unwrap();
    let err = untrusting
        .put("customers", "BSOC-K2", &serde_json::json!({ "name": "x" }))
        .unwrap_err();
    assert!(matches!(err, outpost::Error::Io(_)), "{err:?}");
    assert!(
        c.get::<serde_json::Value>("customers", "BSOC-K2")
            .unwrap()
            .is_none()
    );
}

#[test]
fn s3_an_admin_adds_renews_and_removes_workstation_users_while_the_server_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(dir, &[], &[("BSOC", "bsoc", &["immediate 60"])]);
    let boss = add_user(dir, "BOSS", true);
    let anne = add_user(dir, "ANNE", false);
    let server = SiteServer::start(
        dir,
        &[
            "--data",
            "bsoc",
            "--listen",
            "127.0.0.1:0",
            "--no-scheduler",
        ],
    );
    let denied = |r: outpost::Result<()>| matches!(&r, Err(outpost::Error::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied);
    let write = |cred: &str, key: &str| {
        Client::new(&server.url, cred).unwrap().put(
            "customers",
            key,
            &serde_json::json!({ "name": "n" }),
        )
    };

    // The list, for an admin only.
    let listed = succeeded(&run(client_cmd(dir, &server, &boss, &["users"])));
    assert_eq!(listed.lines().collect::<Vec<_>>(), ["ANNE", "BOSS (admin)"]);
    let out = run(client_cmd(dir, &server, &anne, &["users"]));
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("ANNE is not an administrator"), "{why}");
    assert!(denied(
        Client::new(&server.url, &anne)
            .unwrap()
            .add_user("EVE", true)
            .map(drop)
    ));

    // An admin adds CARL while the server runs: CARL writes at once.
    let carl = succeeded(&run(client_cmd(
        dir,
        &server,
        &boss,
        &["add-user", "--user", "CARL"],
    )));
    let carl = carl.trim();
    assert!(carl.starts_with("CARL."), "{carl}");
    write(carl, "BSOC-K1").unwrap();
    // ANNE's lost credential is replaced: the old one stops working, the new one works.
    let boss_client = Client::new(&server.url, &boss).unwrap();
    write(&anne, "BSOC-K2").unwrap();
    let anne_new = boss_client.add_user("ANNE", false).unwrap();
    assert!(denied(write(&anne, "BSOC-K3")));
    write(&anne_new, "BSOC-K3").unwrap();
    // A bad code is a clear error.
    let err = boss_client.add_user("no spaces", false).unwrap_err();
    assert!(err.to_string().contains("is not a user code"), "{err}");

    // CARL removed: refused from the next request on.
    succeeded(&run(client_cmd(
        dir,
        &server,
        &boss,
        &["remove-user", "--user", "CARL"],
    )));
    assert!(denied(write(carl, "BSOC-K4")));
    let err = boss_client.remove_user("CARL").unwrap_err();
    assert!(
        matches!(&err, outpost::Error::Io(e) if e.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("CARL is not a workstation user"),
        "{err}"
    );
    let err = boss_client.remove_user("no spaces").unwrap_err();
    assert!(err.to_string().contains("is not a user code"), "{err}");
    // Nobody removes themselves, nor takes away their own admin right: the site keeps an
    // administrator who can reach it.
    let err = boss_client.remove_user("BOSS").unwrap_err();
    assert!(err.to_string().contains("cannot remove itself"), "{err}");
    let err = boss_client.add_user("BOSS", false).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot take away its own admin right"),
        "{err}"
    );
    write(&boss, "BSOC-K5").unwrap();
    assert_eq!(
        boss_client
            .users()
            .unwrap()
            .into_iter()
            .map(|u| (u.user, u.admin))
            .collect::<Vec<_>>(),
        [("ANNE".to_owned(), false), ("BOSS".to_owned(), true)]
    );

    // The workstation log says who managed whom.
    let log = boss_client.log(0).unwrap();
    let ops: Vec<(String, String, String)> = log
        .iter()
        .filter(|e| e["op"].as_str().unwrap_or("").starts_with("user"))
        .map(|e| {
            (
                e["user"].as_str().unwrap().to_owned(),
                e["op"].as_str().unwrap().to_owned(),
                e["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let op = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    let offline = "(outpost site, on the data directory)";
    assert_eq!(
        ops,
        [
            op(offline, "user added", "BOSS"),
            op(offline, "user added", "ANNE"),
            op("BOSS", "user added", "CARL"),
            op("BOSS", "user given a new credential", "ANNE"),
            op("BOSS", "user removed", "CARL"),
        ]
    );

    // C4, M1: a setting is checked as central checks its configuration; a refused one
    // changes nothing and says why (issue 21 item 8).
    let set = |name: &str, value: &str| {
        run(client_cmd(
            dir,
            &server,
            &boss,
            &["set-setting", "--name", name, "--value", value],
        ))
    };
    let before = succeeded(&run(client_cmd(dir, &server, &boss, &["settings"])));
    for (name, value, why) in [
        ("sync_types", "garbage schedule", "is not a sync type"),
        (
            "sync_types",
            "fixed 21:00 23:20;fixed 08:00 09:00",
            "only one fixed-time sync",
        ),
        ("time_zone", "Europe/Atlantis", "Atlantis"),
        ("return_time", "25:00", "25:00"),
        ("central_port", "0", "port number"),
        ("central_host", "a host", "host name"),
        (
            "emission_time",
            "20:00",
            "not a setting of this site; the settings are: time_zone",
        ),
        ("deployment", "0000000000000001", "kept by outpost itself"),
    ] {
        let out = set(name, value);
        assert!(!out.status.success(), "{name} = {value} was taken");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{name} = {value}: {err}");
    }
    assert_eq!(
        succeeded(&run(client_cmd(dir, &server, &boss, &["settings"]))),
        before,
        "refused settings changed nothing"
    );
    assert!(set("sync_types", "immediate 30").status.success());

    // While it runs, from the site's data directory too: the command runs in the server
    // (issue 21 item 1), and the credential it prints works at once.
    let dana = ok(
        dir,
        &["site", "add-user", "--data", "bsoc", "--user", "DANA"],
    )
    .trim()
    .to_owned();
    write(&dana, "K-DANA").unwrap();
    assert_eq!(
        ok(dir, &["site", "users", "--data", "bsoc"])
            .lines()
            .collect::<Vec<_>>(),
        ["ANNE", "BOSS (admin)", "DANA"]
    );
    ok(
        dir,
        &["site", "remove-user", "--data", "bsoc", "--user", "DANA"],
    );
    assert!(denied(write(&dana, "K-DANA2")));

    // With the server stopped, the same from the site's data directory.
    drop(server);
    assert_eq!(
        ok(dir, &["site", "users", "--data", "bsoc"])
            .lines()
            .collect::<Vec<_>>(),
        ["ANNE", "BOSS (admin)"]
    );
    ok(
        dir,
        &["site", "remove-user", "--data", "bsoc", "--user", "ANNE"],
    );
    assert_eq!(
        ok(dir, &["site", "users", "--data", "bsoc"]).trim(),
        "BOSS (admin)"
    );
    let out = outpost(
        dir,
        &["site", "remove-user", "--data", "bsoc", "--user", "ANNE"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ANNE is not a workstation user"));
}

/// `outpost client scan | head -1`: the reader stops after one line; the client stops writing
/// and exits 0 rather than panic on the closed pipe (exit 101).
/// BSOC's site server with an admin user CARL (its credential) and `n` customers `K…` with
/// `fields` (`{i}` numbered), loaded through the client.
fn site_with_customers(dir: &Path, n: usize, fields: &str) -> (SiteServer, String) {
    deployment(dir, &[], &[("BSOC", "bsoc", &["immediate 60"])]);
    let carl = add_user(dir, "CARL", true);
    let server = SiteServer::start(dir, &["--data", "bsoc", "--listen", "127.0.0.1:0"]);
    let n = n.to_string();
    succeeded(&run(client_cmd(
        dir,
        &server,
        &carl,
        &[
            "load",
            "--table",
            "customers",
            "--prefix",
            "K",
            "--n",
            &n,
            "--fields",
            fields,
        ],
    )));
    (server, carl)
}

#[test]
fn s3_a_client_scan_read_by_a_reader_that_stops_early_ends_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // More than a pipe holds (64 KiB): the writer meets the closed pipe.
    let (server, carl) = site_with_customers(
        dir,
        1500,
        r#"{"name": "a customer with a name long enough to fill lines {i}", "city": "Lyon"}"#,
    );
    let mut scan = client_cmd(dir, &server, &carl, &["scan", "--table", "customers"]);
    let mut child = scan
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("\"key\""), "{first}");
    // The reader is gone (its end of the pipe closed with it).
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client scan asking more than one request returns (10,000 records) got the first 10,000
/// and no word: a program reading "fewer than asked means done" missed the rest. The client
/// now pages, and the server refuses a request above its bound instead of cutting it short.
#[test]
fn s3_a_client_scan_beyond_one_request_s_bound_returns_every_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (server, carl) = site_with_customers(dir, 10_050, r#"{"name": "n{i}"}"#);
    let client = Client::new(&server.url, &carl).unwrap();
    let all = client.scan("customers", None, None, 20_000).unwrap();
    assert_eq!(all.len(), 10_050);
    assert!(
        all.windows(2).all(|w| w[0].0 < w[1].0),
        "in key order, once each"
    );
    let some = client.scan("customers", None, None, 10_020).unwrap();
    assert_eq!(some.len(), 10_020);
    // Over raw HTTP, a request above the bound is refused, not cut short.
    let r = agent()
        .get(format!("{}/v1/records/customers?limit=20000", server.url))
        .header("authorization", format!("Bearer {carl}"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// R7 when a till sleeps past its lease: its `hold` renews every third of the lease; paused
/// longer than the lease (a laptop's lid closed), the server released the document and another
/// user wrote it. The late renewal reserved it again, answered like any renewal: the till went
/// on "holding" a document written by someone else meanwhile. A renewal that comes too late is
/// now refused, and the hold ends saying the reservation was lost.
#[test]
fn r7_a_hold_renewed_after_its_lease_ran_out_is_lost_not_taken_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(dir, &[], &[("BSOC", "bsoc", &["immediate 60"])]);
    let anne = add_user(dir, "ANNE", false);
    let zoe = add_user(dir, "ZOE", false);
    let server = SiteServer::start(dir, &["--data", "bsoc", "--listen", "127.0.0.1:0"]);
    let put = |who: &str, status: &str| {
        run(client_cmd(
            dir,
            &server,
            who,
            &[
                "put",
                "--table",
                "sales_documents",
                "--key",
                "BSOC-D1",
                "--fields",
                &format!(r#"{{"status": "{status}"}}"#),
            ],
        ))
    };
    succeeded(&put(&anne, "draft"));
    let mut hold = KillOnDrop(
        till_cmd(
            dir,
            &server,
            &anne,
            "till-1",
            &[
                "hold",
                "--table",
                "sales_documents",
                "--key",
                "BSOC-D1",
                "--lease-s",
                "2",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(hold.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("holding"), "{line}");
    let signal = |sig: &str| {
        let sent = Command::new("kill")
            .args([sig, &hold.0.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    // The till sleeps past its lease; the document is released and ZOE writes it.
    signal("-STOP");
    let started = Instant::now();
    while !put(&zoe, "ZOE's").status.success() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never released"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    signal("-CONT");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = hold.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the till still holds the document ZOE wrote"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    let mut err = String::new();
    hold.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("was lost") && err.contains("no longer held"),
        "{err}"
    );
}

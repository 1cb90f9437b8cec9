//! The network end to end, with real processes: `outpost central serve` on a loopback port,
//! remotes provisioned from their bootstrap files syncing with `outpost remote sync` over HTTP
//! (and HTTPS with a certificate made here), checked with `outpost get` and the journal.
//! Rules: T1–T3, S2, S4, A3, M1, M2, J1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::net::*;

#[test]
fn t2_m2_two_remotes_sync_immediately_over_http_and_converge() {
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
    assert!(central.url.starts_with("http://127.0.0.1:"));

    put(
        dir,
        "bsoc",
        "K-B",
        r#"{"name": "Bertrand", "city": "Lyon"}"#,
    );
    put(dir, "csoc", "K-C", r#"{"name": "Camille", "city": "Nice"}"#);
    let summary = sync(dir, "bsoc", &central, &[]);
    assert!(
        summary.contains("sent 1 emission(s), 3 changes"),
        "{summary}"
    );
    assert!(summary.contains("received 1 return(s)"), "{summary}");
    // CSOC's immediate return carries BSOC's customer; BSOC gets CSOC's at its next sync.
    let summary = sync(dir, "csoc", &central, &[]);
    assert!(
        summary.contains("received 1 return(s), 3 changes"),
        "{summary}"
    );
    sync(dir, "bsoc", &central, &[]);
    for data in ["bsoc", "csoc"] {
        assert_eq!(get(dir, data, "K-B")["name"], "Bertrand", "{data}");
        assert_eq!(get(dir, data, "K-C")["name"], "Camille", "{data}");
    }
    // A concurrent edit of the same field converges on both (the later write wins).
    put(dir, "bsoc", "K-C", r#"{"city": "Grasse"}"#);
    std::thread::sleep(Duration::from_millis(5));
    put(dir, "csoc", "K-C", r#"{"city": "Antibes"}"#);
    sync(dir, "bsoc", &central, &[]);
    sync(dir, "csoc", &central, &[]);
    sync(dir, "bsoc", &central, &[]);
    assert_eq!(get(dir, "bsoc", "K-C")["city"], "Antibes");
    assert_eq!(get(dir, "csoc", "K-C")["city"], "Antibes");

    // J1: every emission executed once and answered by its immediate return, whose execution
    // at the remote was reported right after it was applied.
    let journal = admin_get(dir, &central, "/v1/journal");
    let rows = journal.as_array().unwrap();
    let emissions: Vec<_> = rows.iter().filter(|r| r["kind"] == "Emission").collect();
    assert_eq!(emissions.len(), 6);
    for e in &emissions {
        assert_eq!(e["mode"], "Immediate");
        assert_eq!(e["executions"], 1);
        assert!(e["link"].is_object(), "answered: {e}");
    }
    let returns: Vec<_> = rows.iter().filter(|r| r["kind"] == "Return").collect();
    assert_eq!(returns.len(), 6);
    for r in &returns {
        assert_eq!(
            r["executions"], 1,
            "reported once, though it also rides the next emission: {r}"
        );
        assert!(r["exec_end_ms"].is_u64(), "{r}");
    }
    let status = admin_get(dir, &central, "/v1/status");
    assert_eq!(status["activity"], "Att Dep");
    assert_eq!(status["pending_emissions"].as_array().unwrap().len(), 0);
    assert!(
        status["restore"].is_null(),
        "no restore under way: {status}"
    );

    // Graceful stop: SIGTERM ends it cleanly, and the store reopens with everything.
    #[cfg(unix)]
    {
        let status = central.terminate();
        assert!(status.success(), "{status:?}");
        let journal = ok(dir, &["journal", "--data", "asoc", "--json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&journal).unwrap();
        assert_eq!(rows.iter().filter(|r| r["kind"] == "Emission").count(), 6);
    }
}

/// The seed's plan (C5) over the network, in real time: BSOC runs its fixed-time schedule
/// (`outpost remote run`: emission at E, fetch at E + 2 min), central's daemon prepares the
/// common deferred return at E + 1 min (M1), CSOC syncs immediately (M2). The times are set
/// in a fixed-offset zone where it is about noon, a minute ahead, so the test sees them pass.
#[test]
fn m1_the_seed_plan_in_real_time_fixed_emission_common_return_then_fetch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let utc_hour = i64::try_from((now_s / 3600) % 24).unwrap();
    let k = 12 - utc_hour; // hours east of UTC
    let zone = match k {
        0 => "Etc/GMT".to_owned(),
        k if k > 0 => format!("Etc/GMT-{k}"),
        k => format!("Etc/GMT+{}", -k),
    };
    let local = |s: u64| {
        let l = i64::try_from(s).unwrap() + k * 3600;
        format!(
            "{:02}:{:02}",
            l.rem_euclid(86_400) / 3600,
            (l.rem_euclid(3600)) / 60
        )
    };
    // E: the next minute at least 20 s away (time to set everything up).
    let e = (now_s + 20).div_ceil(60) * 60;
    let bsoc_fixed = format!("fixed {} {}", local(e), local(e + 120));
    let csoc_fixed = format!("fixed {} {}", local(e), local(e + 180));
    deployment_with(
        dir,
        &["--tz", &zone, "--return-at", &local(e + 60)],
        &[
            ("BSOC", "bsoc", &[&bsoc_fixed]),
            ("CSOC", "csoc", &[&csoc_fixed, "immediate 60"]),
        ],
        &["--tz", &zone],
    );
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", "127.0.0.1:0"]);
    put(dir, "bsoc", "K-B", r#"{"name": "Bertrand"}"#);
    let (bsoc_run, bsoc_log) = remote_run(dir, "bsoc", &central.url);
    // CSOC, immediate: its customer reaches central now, BSOC's only after E.
    put(dir, "csoc", "K-C", r#"{"name": "Camille"}"#);
    let summary = sync(dir, "csoc", &central, &[]);
    assert!(summary.contains("received 1 return(s)"), "{summary}");

    // E: BSOC's scheduler connects and emits (deferred); link 0 until the common return.
    wait_for(90, "BSOC's fixed-time emission", || {
        !journal_of(dir, &central, 2).is_empty()
    });
    let emission = journal_of(dir, &central, 2)[0].clone();
    assert_eq!(emission["mode"], "Deferred");
    assert!(get(dir, "csoc", "K-B").is_null());
    // E + 1 min: central's automaton prepares the common return.
    let bsoc_return = || {
        admin_get(dir, &central, "/v1/journal?site=BSOC")
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == "Return")
            .cloned()
    };
    wait_for(90, "the common deferred return", || bsoc_return().is_some());
    let ret = bsoc_return().unwrap();
    assert_eq!(ret["mode"], "Deferred");
    assert_eq!(
        ret["link"], emission["id"],
        "the return answers the emission"
    );
    assert!(ret["exec_end_ms"].is_null(), "not fetched before E + 2 min");
    // E + 2 min: BSOC fetches and applies it, and reports it at once.
    wait_for(90, "BSOC's fixed-time fetch", || {
        bsoc_return().is_some_and(|r| r["exec_end_ms"].is_u64())
    });
    drop(bsoc_run);
    assert_eq!(get(dir, "bsoc", "K-C")["name"], "Camille");
    let printed = std::fs::read_to_string(&bsoc_log).unwrap();
    assert!(
        printed.contains("sent 1 emission(s), 2 changes"),
        "{printed}"
    );
    assert!(
        printed.contains("received 1 return(s), 2 changes"),
        "{printed}"
    );
    // At start it said when it would emit and fetch; each summary line has its time, and the
    // bytes are those that travelled (issue 21 item 6).
    let first = printed.lines().next().unwrap();
    assert!(first.starts_with("site BSOC ("), "{first}");
    let part = |name: &str| {
        first
            .split("; ")
            .find_map(|p| p.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name}: {first}"))
            .to_owned()
    };
    assert!(part("next emission ").ends_with(&local(e)), "{first}");
    assert!(part("next fetch ").ends_with(&local(e + 120)), "{first}");
    let timed = |what: &str| {
        printed
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what}: {printed}"))
            .to_owned()
    };
    let sent = timed("sent 1 emission(s)");
    let (day, rest) = sent.split_once(' ').unwrap();
    assert!(day.len() == 10 && day.as_bytes()[4] == b'-', "{sent}");
    assert!(
        rest.as_bytes()[2] == b':' && rest.as_bytes()[5] == b':',
        "{sent}"
    );
    let bytes_of = |line: &str, after: &str| -> u64 {
        let tail = &line[line.find(after).unwrap() + after.len()..];
        let field = tail.split(';').next().unwrap();
        field
            .trim()
            .trim_end_matches(" bytes")
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(bytes_of(&sent, "2 changes,") > 0, "{sent}");
    let received = timed("received 1 return(s)");
    assert!(
        bytes_of(&received, "received 1 return(s), 2 changes,") > 0,
        "{received}"
    );
    // CSOC's next sync brings BSOC's customer: everyone converged.
    sync(dir, "csoc", &central, &[]);
    assert_eq!(get(dir, "csoc", "K-B")["name"], "Bertrand");
    assert_eq!(journal_of(dir, &central, 2)[0]["link"], ret["id"]);
}

/// `remote run` while central is down: it retries with growing pauses, then catches up (the
/// emission waiting in its outbox goes through) once central is back.
#[test]
fn s2_remote_run_retries_while_central_is_unreachable_then_catches_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(dir, &[], &[("BSOC", "bsoc", &["fixed 21:00 23:20"])]);
    put(dir, "bsoc", "K-B", r#"{"name": "Bertrand"}"#);
    std::fs::create_dir_all(dir.join("bsoc/outbox")).unwrap();
    ok(
        dir,
        &["remote", "export", "--data", "bsoc", "--out", "bsoc/outbox"],
    );
    // A port nobody listens on, for now.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let (run, _) = remote_run(dir, "bsoc", &url);
    let err = dir.join("bsoc-run.err");
    let text = two_attempts_noted(&err, "unreachable");
    assert!(text.contains("retrying in 1 s"), "{text}");
    assert!(text.contains("retrying in 2 s"), "{text}");
    let listen = format!("127.0.0.1:{port}");
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", &listen]);
    wait_for(30, "the outbox emission at central", || {
        !journal_of(dir, &central, 2).is_empty()
    });
    wait_for(30, "the outbox emptied", || {
        !dir.join("bsoc/outbox").read_dir().unwrap().any(|_| true)
    });
    // Central processes what it received on its own thread, after the upload's answer.
    wait_for(30, "the emission processed at central", || {
        journal_of(dir, &central, 2)
            .first()
            .is_some_and(|r| r["exec_end_ms"].is_u64())
    });
    drop(run);
    assert_eq!(journal_of(dir, &central, 2)[0]["n_changes"], 2);
}

/// Sends the first `half` bytes of a flow with a Content-Length for all of it, then drops the
/// connection: a client cut mid-upload.
fn cut_upload(url: &str, credential: &str, seq: u64, flow: &[u8], half: usize) {
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "PUT /v1/emissions/{seq} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {credential}\r\nUpload-Offset: 0\r\nUpload-Length: {}\r\nContent-Length: {}\r\n\r\n",
        flow.len(),
        flow.len()
    )
    .unwrap();
    s.write_all(&flow[..half]).unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    s.shutdown(std::net::Shutdown::Both).unwrap();
}

/// BSOC's emission, written into its outbox as `remote sync` does before sending: its bytes.
fn emission_in_outbox(dir: &Path) -> Vec<u8> {
    std::fs::create_dir_all(dir.join("bsoc/outbox")).unwrap();
    ok(
        dir,
        &["remote", "export", "--data", "bsoc", "--out", "bsoc/outbox"],
    );
    let file = std::fs::read_dir(dir.join("bsoc/outbox"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::read(&file).unwrap()
}

#[test]
fn t3_an_upload_cut_midway_resumes_where_it_stopped_and_the_journal_shows_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(dir, &[], &[("BSOC", "bsoc", &["immediate 60"])]);
    bulk(dir, "bsoc", "K", 3_000);
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", "127.0.0.1:0"]);
    let flow = emission_in_outbox(dir);
    assert!(flow.len() > 4_000, "{} bytes", flow.len());
    let cred = credential(&dir.join("bsoc/remote.toml"));
    cut_upload(&central.url, &cred, 1, &flow, flow.len() / 2);

    // Central holds part of it, not as a flow: nothing in the journal yet.
    let mut r = agent()
        .get(format!("{}/v1/emissions/1", central.url))
        .header("authorization", format!("Bearer {cred}"))
        .call()
        .unwrap();
    let at: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    let held = at["offset"].as_u64().unwrap();
    assert!(held > 0 && held < flow.len() as u64, "{at}");
    assert_eq!(at["received"], false);
    assert!(journal_of(dir, &central, 2).is_empty());

    // The next sync sends the rest of it (then its own, newer emission).
    let summary = sync(dir, "bsoc", &central, &[]);
    assert!(summary.contains("sent 2 emission(s)"), "{summary}");
    assert!(
        central
            .log()
            .contains(&format!("upload resumed at offset {held}")),
        "{}",
        central.log()
    );
    let rows = journal_of(dir, &central, 2);
    assert_eq!(rows.len(), 2, "each emission once: {rows:?}");
    assert_eq!(rows[0]["id"]["seq"], 1);
    assert_eq!(rows[0]["bytes"], flow.len() as u64);
    assert_eq!(rows[0]["executions"], 1);
    assert_eq!(
        rows[0]["n_changes"], 12_000,
        "3,000 records: a creation and 3 fields each"
    );
    assert!(
        !dir.join("bsoc/outbox").read_dir().unwrap().any(|_| true),
        "outbox emptied"
    );
    assert!(
        !dir.join("asoc/uploads").read_dir().unwrap().any(|_| true),
        "part file gone"
    );
}

#[test]
fn j1_a_processing_cut_by_killing_the_daemon_runs_again_after_restart_with_execution_count_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(dir, &[], &[("BSOC", "bsoc", &["fixed 21:00 23:20"])]);
    bulk(dir, "bsoc", "K", 40_000);
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", "127.0.0.1:0"]);
    // Emit only: an immediate sync would wait for its return while central processes (M4).
    sync(dir, "bsoc", &central, &["--no-return"]);
    // Kill it while it applies the emission: started, not finished.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = journal_of(dir, &central, 2);
        let row = &rows[0];
        if row["exec_start_ms"].is_u64() {
            assert!(
                row["exec_end_ms"].is_null(),
                "processing ended before the test could cut it: make the emission larger\n{}",
                central.log()
            );
            break;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    central.kill();
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", "127.0.0.1:0"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let row = loop {
        let rows = journal_of(dir, &central, 2);
        if rows[0]["exec_end_ms"].is_u64() {
            break rows[0].clone();
        }
        assert!(Instant::now() < deadline, "not processed after restart");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(row["executions"], 2, "{row}");
    assert_eq!(row["n_changes"], 160_000);
    drop(central);
    // Everything applied, once: the records are at central.
    let out = ok(
        dir,
        &[
            "get",
            "--data",
            "asoc",
            "--table",
            "customers",
            "--key",
            "K039999",
        ],
    );
    assert!(out.contains("customer 39999"), "{out}");
}

#[test]
fn s2_a_site_acts_only_for_itself_wrong_or_missing_credentials_get_401_and_nothing_is_stored() {
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
    // Alerts evaluated every second; flows above 100 kB refused.
    std::fs::write(
        dir.join("s2.toml"),
        "listen = \"127.0.0.1:0\"\nmax_flow_bytes = 100000\n[alerts]\ncheck_s = 1\n",
    )
    .unwrap();
    let central = Daemon::start(dir, &["--data", "asoc", "--config", "s2.toml"]);
    put(dir, "csoc", "K-C", r#"{"name": "Camille"}"#);
    let out = ok(dir, &["remote", "export", "--data", "csoc", "--out", "."]);
    assert!(out.contains("emission"), "{out}");
    let file = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("emission-"))
        .unwrap();
    let flow = std::fs::read(&file).unwrap();
    let upload = |credential: Option<&str>| {
        let mut req = agent()
            .put(format!("{}/v1/emissions/1", central.url))
            .header("upload-offset", "0")
            .header("upload-length", flow.len().to_string());
        if let Some(c) = credential {
            req = req.header("authorization", format!("Bearer {c}"));
        }
        let mut r = req.send(&flow[..]).unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    let bsoc = credential(&dir.join("bsoc/remote.toml"));
    let csoc = credential(&dir.join("csoc/remote.toml"));

    // BSOC's credential sending CSOC's emission: refused, logged, nothing kept.
    let (status, body) = upload(Some(&bsoc));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("claims to come from site 03"), "{body}");
    assert!(
        central.log().contains("refused, nothing kept"),
        "{}",
        central.log()
    );
    // No credential, a wrong secret, an unknown site: 401, logged.
    assert_eq!(upload(None).0, 401);
    let wrong = format!("CSOC.{}", "0".repeat(64));
    assert_eq!(upload(Some(&wrong)).0, 401);
    assert_eq!(upload(Some(&format!("ZSOC.{}", "0".repeat(64)))).0, 401);
    let log = central.log();
    assert!(log.contains("refused: no credential"), "{log}");
    assert!(
        log.contains("refused: a wrong secret for site CSOC"),
        "{log}"
    );
    assert!(
        log.contains("refused: a credential for unknown site ZSOC"),
        "{log}"
    );
    // A remote's credential does not open the administrator's routes.
    let r = agent()
        .get(format!("{}/v1/journal", central.url))
        .header("authorization", format!("Bearer {bsoc}"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 403);

    // Every refused upload leaves a lasting trace with the peer's address (issue 21 item 7):
    // the impersonation, a body that is no flow, an empty one, one above the size limit.
    let raw = |seq: u64, length: u64, body: &[u8]| {
        let mut r = agent()
            .put(format!("{}/v1/emissions/{seq}", central.url))
            .header("authorization", format!("Bearer {bsoc}"))
            .header("upload-offset", "0")
            .header("upload-length", length.to_string())
            .send(body)
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    assert_eq!(raw(7, 11, b"not a flow!").0, 422);
    assert_eq!(raw(8, 0, b"").0, 422);
    assert_eq!(raw(9, 200_000, b"").0, 413);
    let refused = ok(dir, &["journal", "--data", "asoc", "--refused"]);
    for why in [
        "claims to come from site 03",
        "not a flow",
        "an empty body",
        "above this central's limit",
    ] {
        assert!(refused.contains(why), "{why}: {refused}");
    }
    assert!(refused.contains("from 127.0.0.1:"), "{refused}");
    // The impersonation and the repeated refusals from one peer are alerts.
    wait_for(30, "the alerts of the refused uploads", || {
        let alerts = ok(dir, &["journal", "--data", "asoc", "--alerts"]);
        alerts.contains("claims to come from site 03") && alerts.contains("uploads from 127.0.0.1")
    });
    // Nothing of CSOC reached central.
    assert!(journal_of(dir, &central, 3).is_empty());
    assert!(journal_of(dir, &central, 2).is_empty());
    assert!(
        !dir.join("asoc/uploads").read_dir().unwrap().any(|_| true),
        "no part file left by the refused uploads"
    );

    // With its own credential, the same flow goes through.
    let (status, body) = upload(Some(&csoc));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ready\""), "{body}");
    assert_eq!(journal_of(dir, &central, 3).len(), 1);

    // A report on another site's return is refused, and the return's row stays as it was.
    sync(dir, "csoc", &central, &[]);
    let csoc_return = || {
        admin_get(dir, &central, "/v1/journal?site=CSOC")
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == "Return")
            .cloned()
            .unwrap()
    };
    let before = csoc_return();
    assert_eq!(before["executions"], 1);
    let forged = serde_json::json!([{
        "id": before["id"], "start_ms": 1, "end_ms": 2, "refused": true, "reason": "forged"
    }]);
    let r = agent()
        .post(format!("{}/v1/acks", central.url))
        .header("authorization", format!("Bearer {bsoc}"))
        .header("content-type", "application/json")
        .send(forged.to_string().as_bytes())
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(csoc_return(), before);
    // CSOC's own report of the same return is taken (its execution was already reported: the
    // numbers are its own, so it counts as a new report).
    let r = agent()
        .post(format!("{}/v1/acks", central.url))
        .header("authorization", format!("Bearer {csoc}"))
        .header("content-type", "application/json")
        .send(forged.to_string().as_bytes())
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(csoc_return()["refused_by_remote"], true);
    assert_eq!(journal_of(dir, &central, 3).len(), 2);
}

#[test]
fn t2_tls_with_a_certificate_made_at_test_time_and_plain_http_only_on_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(dir, &[], &[("BSOC", "bsoc", &["immediate 60"])]);
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    // The settings file names its certificate relative to its own folder (issue 21 item 5),
    // and the daemon starts elsewhere.
    std::fs::create_dir(dir.join("conf")).unwrap();
    std::fs::write(dir.join("conf/cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("conf/key.pem"), cert.signing_key.serialize_pem()).unwrap();
    std::fs::write(
        dir.join("conf/outpost.toml"),
        "listen = \"127.0.0.1:0\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\nlog = \"info\"\n",
    )
    .unwrap();
    let central = Daemon::start(dir, &["--data", "asoc", "--config", "conf/outpost.toml"]);
    assert!(central.url.starts_with("https://"), "{}", central.url);
    let url = central.url.replace("127.0.0.1", "localhost");

    put(dir, "bsoc", "K-B", r#"{"name": "Bertrand"}"#);
    let summary = ok(
        dir,
        &[
            "remote",
            "sync",
            "--data",
            "bsoc",
            "--central",
            &url,
            "--ca",
            "cert.pem",
        ],
    );
    assert!(
        summary.contains("sent 1 emission(s), 2 changes"),
        "{summary}"
    );
    assert!(summary.contains("received 1 return(s)"), "{summary}");
    // Without trusting the certificate, the remote refuses to talk.
    let out = outpost(
        dir,
        &["remote", "sync", "--data", "bsoc", "--central", &url],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unreachable"), "{err}");
    assert!(err.contains("--ca"), "the error names the way out: {err}");
    // `ca_cert` in remote.toml, relative: read from the data directory, not from where the
    // command runs.
    std::fs::write(dir.join("bsoc/ca.pem"), cert.cert.pem()).unwrap();
    let mut net = std::fs::read_to_string(dir.join("bsoc/remote.toml")).unwrap();
    net.push_str("\nca_cert = \"ca.pem\"\n");
    std::fs::write(dir.join("bsoc/remote.toml"), net).unwrap();
    let summary = ok(
        dir,
        &["remote", "sync", "--data", "bsoc", "--central", &url],
    );
    assert!(summary.contains("sent 1 emission(s)"), "{summary}");
    // Plain HTTP to the TLS port gets nowhere, and the remote says why.
    let plain = url.replace("https://", "http://");
    assert!(agent().get(format!("{plain}/v1/health")).call().is_err());
    let out = outpost(
        dir,
        &["remote", "sync", "--data", "bsoc", "--central", &plain],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must start with https://"), "{err}");
    drop(central);

    // Plain HTTP beyond loopback is refused unless forced.
    let err = serve_refused(dir, "asoc", "0.0.0.0:0");
    assert!(err.contains("not a loopback address"), "{err}");
}

/// T2: whatever is wrong with a request — a path or query that does not parse, an unknown
/// route, a wrong method — the answer is the one JSON error body, as docs/network.md says.
#[test]
fn t2_bad_urls_get_the_json_error_body_with_their_status() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(dir, &[], &[("BSOC", "bsoc", &["immediate 60"])]);
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", "127.0.0.1:0"]);
    let cred = credential(&dir.join("bsoc/remote.toml"));
    let cases = [
        ("GET", "/v1/emissions/not-a-number", 400, "bad_request"),
        ("GET", "/v1/returns?wait_ms=soon", 400, "bad_request"),
        ("GET", "/v1/no-such-route", 404, "missing"),
        ("POST", "/v1/health", 405, "bad_request"),
        ("GET", "/ws/v1/no-such-route", 404, "missing"),
    ];
    for (method, route, status, kind) in cases {
        let url = format!("{}{route}", central.url);
        let request = match method {
            "GET" => agent()
                .get(&url)
                .header("authorization", format!("Bearer {cred}"))
                .call(),
            _ => agent()
                .post(&url)
                .header("authorization", format!("Bearer {cred}"))
                .send_empty(),
        };
        let mut r = request.unwrap();
        assert_eq!(r.status(), status, "{method} {route}");
        let text = r.body_mut().read_to_string().unwrap();
        let body: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {route}: not JSON ({e}): {text}"));
        assert_eq!(body["kind"], kind, "{method} {route}: {body}");
        assert!(!body["error"].as_str().unwrap().is_empty(), "{body}");
    }
}

/// Limits: a flow above the configured size is refused before a byte is stored; an upload that
/// stalls holds its slot only until the request timeout (what arrived is kept for resuming);
/// beyond the configured number of requests in flight the answer is 503, not a queue.
#[test]
fn limits_oversized_flows_stalled_uploads_and_too_many_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(dir, &[], &[("BSOC", "bsoc", &["immediate 60"])]);
    std::fs::write(
        dir.join("limits.toml"),
        "listen = \"127.0.0.1:0\"\nmax_flow_bytes = 1000\nrequest_timeout_s = 1\nmax_concurrent_requests = 1\n",
    )
    .unwrap();
    let central = Daemon::start(dir, &["--data", "asoc", "--config", "limits.toml"]);
    let cred = credential(&dir.join("bsoc/remote.toml"));
    let r = agent()
        .put(format!("{}/v1/emissions/1", central.url))
        .header("authorization", format!("Bearer {cred}"))
        .header("upload-length", "5000")
        .send(&[0u8; 16][..])
        .unwrap();
    assert_eq!(r.status(), 413);
    let log = central.log();
    assert!(
        log.contains("upload refused: a flow of") && log.contains("above this central's limit"),
        "{log}"
    );

    // A client that sends 10 of 500 bytes and then nothing.
    let addr = central.url.strip_prefix("http://").unwrap().to_owned();
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        slow,
        "PUT /v1/emissions/1 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {cred}\r\nUpload-Length: 500\r\nContent-Length: 500\r\n\r\n0123456789"
    )
    .unwrap();
    slow.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let health = || {
        agent()
            .get(format!("{}/v1/health", central.url))
            .call()
            .unwrap()
            .status()
    };
    assert_eq!(health(), 503, "the one slot is taken by the stalled upload");
    // After the timeout the slot is free again, and the 10 bytes are kept for a resume.
    wait_for(10, "the stalled upload's slot freed", || health() == 200);
    let mut r = agent()
        .get(format!("{}/v1/emissions/1", central.url))
        .header("authorization", format!("Bearer {cred}"))
        .call()
        .unwrap();
    let at: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(at["offset"], 10, "{at}");
    assert!(
        central.log().contains("nothing came for 1 s"),
        "{}",
        central.log()
    );
    drop(slow);
}

#[test]
fn t3_concurrent_uploads_of_the_same_flow_one_at_a_time_and_the_journal_shows_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(dir, &[], &[("BSOC", "bsoc", &["immediate 60"])]);
    bulk(dir, "bsoc", "K", 500);
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", "127.0.0.1:0"]);
    let flow = emission_in_outbox(dir);
    let cred = credential(&dir.join("bsoc/remote.toml"));
    // One upload of emission 1 is under way (half sent, the connection kept open)...
    let addr = central.url.strip_prefix("http://").unwrap().to_owned();
    let mut first = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        first,
        "PUT /v1/emissions/1 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {cred}\r\nUpload-Offset: 0\r\nUpload-Length: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        flow.len(),
        flow.len()
    )
    .unwrap();
    first.write_all(&flow[..flow.len() / 2]).unwrap();
    first.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // ...so a second one of the same flow is told to wait, and writes nothing.
    let r = agent()
        .put(format!("{}/v1/emissions/1", central.url))
        .header("authorization", format!("Bearer {cred}"))
        .header("upload-offset", "0")
        .header("upload-length", flow.len().to_string())
        .send(&flow[..])
        .unwrap();
    assert_eq!(r.status(), 409, "a second upload of the same flow at once");
    // The first one finishes; the flow is in the journal once, processed once.
    first.write_all(&flow[flow.len() / 2..]).unwrap();
    first.flush().unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut first, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A third, after it: a duplicate, nothing more.
    let mut r = agent()
        .put(format!("{}/v1/emissions/1", central.url))
        .header("authorization", format!("Bearer {cred}"))
        .header("upload-offset", "0")
        .header("upload-length", flow.len().to_string())
        .send(&flow[..])
        .unwrap();
    let body = r.body_mut().read_to_string().unwrap();
    assert!(r.status() == 200 && body.contains("duplicate"), "{body}");
    wait_for(30, "emission 1 processed", || {
        journal_of(dir, &central, 2)
            .first()
            .is_some_and(|r| r["exec_end_ms"].is_u64())
    });
    let rows = journal_of(dir, &central, 2);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["executions"], 1);
    assert_eq!(rows[0]["bytes"], flow.len() as u64);
}

/// M4: `outpost remote sync` at a site configured for fixed times only is still an immediate
/// sync: it emits in immediate mode and waits (the default wait) for its return, which central
/// prepares at once — never a silent sync without return.
#[test]
fn m4_remote_sync_at_a_fixed_time_site_still_gets_its_immediate_return() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(dir, &[], &[("BSOC", "bsoc", &["fixed 21:00 23:20"])]);
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", "127.0.0.1:0"]);
    put(dir, "bsoc", "K-B", r#"{"name": "Bertrand"}"#);
    let summary = sync(dir, "bsoc", &central, &[]);
    assert!(summary.contains("received 1 return(s)"), "{summary}");
    let rows = journal_of(dir, &central, 2);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["mode"], "Immediate", "{rows:?}");
    assert!(rows[0]["link"].is_object(), "answered: {rows:?}");
}

/// A3/S2: an emission central refuses (here a remote set up with another site's credential:
/// 403) is a failed sync: `outpost remote sync` exits non-zero at once with central's reason,
/// without waiting for a return that cannot come, and sets the emission aside.
#[test]
fn a3_a_refused_emission_fails_the_sync_at_once_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    bsoc_given_csoc_s_credential(dir);
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", "127.0.0.1:0"]);
    refused_at_once(dir, &central, 1);
}

/// The same when the refused emission is one an earlier sync left in the outbox (central was
/// unreachable then) and nothing was written since: it must not count as the sync's emission —
/// the sync wrote none, the one it sent was refused. A new emission is written and sent, refused
/// in turn, and the sync fails at once with the reason (before, it succeeded with a note and
/// waited for a return that could not come).
#[test]
fn a3_a_refused_emission_left_in_the_outbox_fails_the_next_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    bsoc_given_csoc_s_credential(dir);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    assert!(!try_sync(dir, "bsoc", &url, &[]).status.success());
    let listen = format!("127.0.0.1:{port}");
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", &listen]);
    refused_at_once(dir, &central, 2);
}

/// BSOC and CSOC (immediate syncs), BSOC's machine given CSOC's credential by mistake; BSOC
/// keys in a customer.
fn bsoc_given_csoc_s_credential(dir: &Path) {
    deployment(
        dir,
        &[],
        &[
            ("BSOC", "bsoc", &["immediate 30"]),
            ("CSOC", "csoc", &["immediate 30"]),
        ],
    );
    let bsoc_toml = dir.join("bsoc/remote.toml");
    let text = std::fs::read_to_string(&bsoc_toml).unwrap();
    let mixed = text.replace(
        &credential(&bsoc_toml),
        &credential(&dir.join("csoc/remote.toml")),
    );
    assert_ne!(text, mixed);
    std::fs::write(&bsoc_toml, mixed).unwrap();
    put(dir, "bsoc", "K-B", r#"{"name": "Bertrand"}"#);
}

/// BSOC syncs: refused at once with central's reason, `set_aside` emissions in
/// `outbox/refused`, nothing in central's journal.
fn refused_at_once(dir: &Path, central: &Daemon, set_aside: usize) {
    let started = Instant::now();
    let out = try_sync(dir, "bsoc", &central.url, &[]);
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit 0: {stdout}{stderr}");
    assert!(
        stderr.contains("refused") && stderr.contains("claims to come from site 02"),
        "the reason: {stdout}{stderr}"
    );
    assert!(took < Duration::from_secs(10), "waited {took:?}: {stderr}");
    assert_eq!(
        dir.join("bsoc/outbox/refused").read_dir().unwrap().count(),
        set_aside,
        "set aside"
    );
    assert!(journal_of(dir, central, 2).is_empty());
}

/// Syncs that fail (central unreachable) leave one emission waiting to be resumed, not one more
/// per attempt; once central answers, what waited goes through and central has every change once.
#[test]
fn t3_failed_syncs_leave_one_emission_waiting_not_one_per_attempt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(dir, &[], &[("BSOC", "bsoc", &["immediate 60"])]);
    put(dir, "bsoc", "K-B", r#"{"name": "Bertrand"}"#);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..3 {
        let out = outpost(
            dir,
            &["remote", "sync", "--data", "bsoc", "--central", &url],
        );
        assert!(!out.status.success());
    }
    let waiting = || {
        std::fs::read_dir(dir.join("bsoc/outbox"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().is_file())
            .count()
    };
    assert_eq!(waiting(), 1, "one emission waits, whatever the attempts");
    let listen = format!("127.0.0.1:{port}");
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", &listen]);
    let summary = ok(
        dir,
        &[
            "remote",
            "sync",
            "--data",
            "bsoc",
            "--central",
            &central.url,
        ],
    );
    assert!(summary.contains("2 changes"), "{summary}");
    assert_eq!(waiting(), 0);
    // Central processed BSOC's changes once.
    wait_for(30, "the emissions processed at central", || {
        let rows = journal_of(dir, &central, 2);
        !rows.is_empty() && rows.iter().all(|r| r["exec_end_ms"].is_u64())
    });
    let rows = journal_of(dir, &central, 2);
    let changes: u64 = rows.iter().map(|r| r["n_changes"].as_u64().unwrap()).sum();
    assert_eq!(changes, 2, "{rows:?}");
}

/// BSOC and CSOC (immediate syncs), central's backup, BSOC's customer K-B1 synced to both; then
/// central's disk is lost, its backup (older than K-B1) put back and its daemon started again,
/// and BSOC writes K-B2.
fn central_restored_then_bsoc_writes(dir: &Path) -> Daemon {
    deployment(
        dir,
        &[],
        &[
            ("BSOC", "bsoc", &["immediate 30"]),
            ("CSOC", "csoc", &["immediate 30"]),
        ],
    );
    ok(
        dir,
        &["central", "backup", "--data", "asoc", "--to", "saved"],
    );
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", "127.0.0.1:0"]);
    put(dir, "bsoc", "K-B1", r#"{"name": "before the loss"}"#);
    sync(dir, "bsoc", &central, &[]);
    sync(dir, "csoc", &central, &[]);
    assert_eq!(get(dir, "csoc", "K-B1")["name"], "before the loss");
    central.kill();
    ok(
        dir,
        &["central", "restore", "--backup", "saved", "--data", "asoc"],
    );
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", "127.0.0.1:0"]);
    put(dir, "bsoc", "K-B2", r#"{"name": "after the restore"}"#);
    central
}

/// R1 after central's restore: `outpost remote run` keeps trying an emission central does not
/// take yet, with backoff, and sends it once every remote has reported.
#[test]
fn r1_remote_run_retries_an_emission_central_does_not_take_yet() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let central = central_restored_then_bsoc_writes(dir);
    std::fs::create_dir_all(dir.join("bsoc/outbox")).unwrap();
    ok(
        dir,
        &["remote", "export", "--data", "bsoc", "--out", "bsoc/outbox"],
    );
    let (run, log) = remote_run(dir, "bsoc", &central.url);
    let err = dir.join("bsoc-run.err");
    let text = two_attempts_noted(&err, "emission not sent yet");
    assert!(text.contains("waiting for CSOC"), "{text}");
    assert!(text.contains("retrying in 1 s"), "{text}");
    assert!(text.contains("retrying in 2 s"), "{text}");
    // CSOC reports; a later attempt sends what waited.
    sync(dir, "csoc", &central, &[]);
    wait_for(60, "the outbox emptied", || {
        !dir.join("bsoc/outbox")
            .read_dir()
            .unwrap()
            .any(|e| e.unwrap().path().is_file())
    });
    // The file leaves the outbox before the line that says so is written: wait for the line.
    wait_for(60, "the sync said it sent the emission", || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.contains("sent 1 emission(s)"))
    });
    drop(run);
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("sent 1 emission(s)"), "{said}\n{text}");
}

/// R1 after central's restore, over the network: while central waits for every remote's report,
/// an emission carrying a remote's new changes is answered 503 `not_yet` and stays in its
/// outbox; `outpost remote sync` is not a failure then: it says why and for whom central waits,
/// and does not wait for a return that cannot come. Once the other remote has synced, the next
/// sync sends what waited, and nothing is lost.
#[test]
fn r1_a_remote_sync_whose_emission_waits_for_central_s_restore_says_so_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let central = central_restored_then_bsoc_writes(dir);
    let outbox = || {
        std::fs::read_dir(dir.join("bsoc/outbox"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().is_file())
            .count()
    };
    // The daemon says where the restore stands (the monitor shows it).
    let status = admin_get(dir, &central, "/v1/status");
    assert_eq!(
        status["restore"]["waiting_for"],
        serde_json::json!(["BSOC", "CSOC"]),
        "{status}"
    );
    let summary = sync(dir, "bsoc", &central, &[]);
    assert!(
        summary.contains("note: emission not sent yet:") && summary.contains("waiting for CSOC"),
        "{summary}"
    );
    assert!(summary.contains("sent 0 emission(s)"), "{summary}");
    assert!(
        !summary.contains("no return within"),
        "no return answers an emission central did not take: {summary}"
    );
    assert_eq!(outbox(), 1, "the emission waits in the outbox: {summary}");
    // CSOC reports; BSOC's next sync sends what waited and gets its return.
    sync(dir, "csoc", &central, &[]);
    let summary = sync(dir, "bsoc", &central, &[]);
    assert!(summary.contains("sent 1 emission(s)"), "{summary}");
    assert!(summary.contains("received 1 return(s)"), "{summary}");
    assert_eq!(outbox(), 0, "{summary}");
    sync(dir, "csoc", &central, &[]);
    assert_eq!(get(dir, "csoc", "K-B2")["name"], "after the restore");
    assert_eq!(get(dir, "csoc", "K-B1")["name"], "before the loss");
}

/// R1 after central's restore: a fixed-time emission carried out through
/// `outpost_server::sync::scheduled` (what `remote run` does at its times; the fleet harness's
/// driver) that central does not take yet is not a failure: the summary says why and for whom
/// central waits, the emission stays in the outbox, and the next time sends it.
#[test]
fn r1_a_scheduled_emission_central_does_not_take_yet_is_a_note_and_waits_in_the_outbox() {
    use outpost_replicator::automaton::RemoteCommand;
    use outpost_replicator::flow::SyncMode;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let central = central_restored_then_bsoc_writes(dir);
    let bsoc = dir.join("bsoc");
    let outbox = || {
        std::fs::read_dir(bsoc.join("outbox"))
            .map(|d| d.filter(|e| e.as_ref().unwrap().path().is_file()).count())
            .unwrap_or(0)
    };
    let emit_now = || {
        let store = outpost_server::data_dir::open(&bsoc).unwrap();
        let link = outpost_server::sync::Link::new(&bsoc, Some(&central.url), None).unwrap();
        outpost_server::sync::scheduled(
            &store,
            &link,
            &bsoc,
            vec![RemoteCommand::Emit(SyncMode::Deferred)],
        )
    };
    let summary = emit_now().unwrap_or_else(|e| panic!("not a failure: {e}"));
    assert!(summary.sent.is_empty(), "{summary}");
    assert!(
        summary
            .notes
            .iter()
            .any(|n| n.contains("emission not sent yet") && n.contains("waiting for CSOC")),
        "{:?}",
        summary.notes
    );
    assert_eq!(outbox(), 1, "the emission waits in the outbox");
    // CSOC reports; the next fixed time sends what waited (and no second emission is made
    // while one waits unsent, or it is sent with it).
    sync(dir, "csoc", &central, &[]);
    let summary = emit_now().unwrap();
    assert!(!summary.sent.is_empty(), "{summary}");
    assert_eq!(outbox(), 0, "{summary}");
    sync(dir, "csoc", &central, &[]);
    assert_eq!(get(dir, "csoc", "K-B2")["name"], "after the restore");
}

/// M1 and T3: a shop's sync on demand failed in the afternoon (central unreachable) and left its
/// emission in the outbox; the evening's fixed-time emission fails too. It stopped before
/// writing its emission, and the retries (fetches, which send the outbox) sent the afternoon's
/// alone: the day's later sales missed the night's common return, without a word. It now writes
/// the day's emission into the outbox before it gives up, and the retry sends both.
#[test]
fn m1_t3_a_fixed_time_emission_failing_behind_an_older_one_still_goes_with_the_retry() {
    use outpost_replicator::automaton::RemoteCommand;
    use outpost_replicator::flow::SyncMode;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(
        dir,
        &[],
        &[("BSOC", "bsoc", &["fixed 21:00 23:20", "immediate 60"])],
    );
    put(dir, "bsoc", "K-B1", r#"{"name": "in the afternoon"}"#);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    assert!(!try_sync(dir, "bsoc", &url, &[]).status.success());
    put(dir, "bsoc", "K-B2", r#"{"name": "in the evening"}"#);
    let bsoc = dir.join("bsoc");
    let scheduled = |url: &str, command: RemoteCommand| {
        let store = outpost_server::data_dir::open(&bsoc).unwrap();
        let link = outpost_server::sync::Link::new(&bsoc, Some(url), None).unwrap();
        outpost_server::sync::scheduled(&store, &link, &bsoc, vec![command])
    };
    let failed = scheduled(&url, RemoteCommand::Emit(SyncMode::Deferred));
    assert!(failed.is_err(), "{failed:?}");
    // Central is back; the executor's retry fetches (and sends what waits).
    let listen = format!("127.0.0.1:{port}");
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", &listen]);
    scheduled(&central.url, RemoteCommand::FetchReturn).unwrap();
    wait_for(30, "BSOC's evening customer at central", || {
        get(dir, "asoc", "K-B2")["name"] == "in the evening"
    });
    assert_eq!(get(dir, "asoc", "K-B1")["name"], "in the afternoon");
}

/// M3 over the network: a remote that gets no return learns, before each emission, what central
/// holds of its changes (`GET /v1/acknowledgement`), and does not send them again.
#[test]
fn m3_a_no_return_remote_does_not_send_again_what_central_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(dir, &[], &[("BSOC", "bsoc", &["no-return"])]);
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", "127.0.0.1:0"]);
    let changes_sent = |summary: &str| -> u64 {
        let (_, rest) = summary.split_once("sent 1 emission(s), ").expect(summary);
        rest.split_once(' ').unwrap().0.parse().unwrap()
    };
    put(dir, "bsoc", "K-1", r#"{"name": "first", "city": "Lyon"}"#);
    let first = changes_sent(&sync(dir, "bsoc", &central, &["--no-return"]));
    assert!(first >= 2, "a creation and its fields: {first}");
    // Central processes it (file ready wakes the automaton).
    let processed = || {
        wait_for(30, "the emission processed", || {
            admin_get(dir, &central, "/v1/status")["pending_emissions"]
                .as_array()
                .is_some_and(|p| p.is_empty())
        })
    };
    processed();
    // The next emission carries the new customer only, though no return came.
    put(dir, "bsoc", "K-2", r#"{"name": "second", "city": "Lyon"}"#);
    let second = changes_sent(&sync(dir, "bsoc", &central, &["--no-return"]));
    assert_eq!(second, first, "K-1 not sent again");
    processed();
    assert_eq!(get(dir, "asoc", "K-2")["name"], "second");
}

/// Waits until `remote run`'s error log `err` notes two attempts that failed with `why`; gives
/// the log.
fn two_attempts_noted(err: &Path, why: &str) -> String {
    wait_for(30, &format!("two attempts: {why}"), || {
        std::fs::read_to_string(err).unwrap().matches(why).count() >= 2
    });
    std::fs::read_to_string(err).unwrap()
}

/// R2/A3: an emission central holds for clock skew is a failed sync: `outpost remote sync`
/// says so with central's reason (set the clock right, `outpost remote restamp`) and exits
/// non-zero, rather than wait for a return that cannot come and exit 0 ("no return within …").
/// After the restamp the next sync goes through.
#[test]
fn r2_a3_a_sync_whose_emission_central_holds_for_clock_skew_fails_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(dir, &[], &[("BSOC", "bsoc", &["immediate 30"])]);
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", "127.0.0.1:0"]);
    // BSOC's clock ran a day ahead when it wrote this customer.
    {
        let ahead = outpost::ManualClock::new(
            outpost::Clock::now_ms(&outpost::SystemClock) + 24 * 3_600_000,
        );
        let store = outpost::Store::open(
            dir.join("bsoc"),
            outpost::StoreConfig::new(
                outpost::Site::remote(2, "BSOC").unwrap(),
                outpost::retail::schema(),
                ahead,
            ),
        )
        .unwrap();
        store
            .write(|tx| tx.set("customers", "K-AHEAD", "name", "stamped a day ahead"))
            .unwrap();
    }
    let sync = || try_sync(dir, "bsoc", &central.url, &["--wait", "3s"]);
    let out = sync();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit 0: {stderr}");
    assert!(
        stderr.contains("central holds this site's emission") && stderr.contains("restamp"),
        "the reason: {stderr}"
    );
    let restamped = outpost(dir, &["remote", "restamp", "--data", "bsoc"]);
    assert!(restamped.status.success());
    let out = sync();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get(dir, "asoc", "K-AHEAD")["name"], "stamped a day ahead");
}

/// A loopback port nobody listens on, for now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

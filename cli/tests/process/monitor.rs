//! The sync monitor (J1–J4, C3): alerts and the monitor's queries in process with an injected
//! clock; the page in headless Chromium against a real daemon; an alert e-mailed through a
//! local SMTP sink.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::net::*;
use crate::common::*;
use outpost::replicator::config::seed_example;
use outpost::replicator::monitor::{self, Disk, Thresholds};
use outpost::replicator::{SyncMode, central, journal};

fn thresholds() -> Thresholds {
    Thresholds::default()
}

fn open_keys(d: &Deployment) -> Vec<String> {
    monitor::alerts(&d.asoc, 100)
        .unwrap()
        .into_iter()
        .filter(|a| a.is_open())
        .map(|a| a.key)
        .collect()
}

/// A remote's store where a local admin removed the table denials (C6 puts them back with the
/// next return): its writes to the denied table reach central, which refuses them (R4).
fn write_denied_stock(store: &outpost::Store, key: &str) {
    write_denied_stock_kind(store, key, "receipt");
}

fn write_denied_stock_kind(store: &outpost::Store, key: &str, kind: &str) {
    store
        .set_denied_tables(store.site().id, BTreeSet::new())
        .unwrap();
    store
        .write(|tx| {
            tx.set("stock_documents", key, "quantity", 5)?;
            tx.set("stock_documents", key, "kind", kind)
        })
        .unwrap();
}

#[test]
fn c3_silent_remote_past_its_fixed_time_is_alerted_once_and_closed_when_it_emits() {
    let d = Deployment::new(); // 2026-11-25 08:00 UTC; bootstraps made now
    central::set_config(&d.asoc, &seed_example()).unwrap();
    // BSOC emits at 21:00 Paris (20:00 UTC), CSOC at 22:00 Paris; margin 30 min.
    assert!(
        monitor::evaluate(&d.asoc, hhmm(8, 0), &thresholds(), None)
            .unwrap()
            .is_empty()
    );
    d.at(20, 20);
    let raised = monitor::evaluate(&d.asoc, hhmm(20, 20), &thresholds(), None).unwrap();
    assert!(raised.is_empty(), "within the margin: {raised:?}");
    d.at(20, 40);
    let raised = monitor::evaluate(&d.asoc, hhmm(20, 40), &thresholds(), None).unwrap();
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].key, "silent/BSOC");
    assert!(
        raised[0]
            .text
            .contains("BSOC is silent: its emission was due at 21:00 (Europe/Paris)"),
        "{}",
        raised[0].text
    );
    // Evaluated again: still one open alert, not a second.
    assert!(
        monitor::evaluate(&d.asoc, hhmm(20, 45), &thresholds(), None)
            .unwrap()
            .is_empty()
    );
    assert_eq!(open_keys(&d), vec!["silent/BSOC"]);
    // BSOC emits: the alert closes.
    d.at(20, 50);
    d.emit_and_process(&d.bsoc, SyncMode::Deferred);
    assert!(
        monitor::evaluate(&d.asoc, hhmm(20, 51), &thresholds(), None)
            .unwrap()
            .is_empty()
    );
    assert!(open_keys(&d).is_empty());
    // CSOC's emission was due at 22:00 Paris: silent at 21:31 UTC, BSOC not.
    d.at(21, 31);
    let raised = monitor::evaluate(&d.asoc, hhmm(21, 31), &thresholds(), None).unwrap();
    let keys: Vec<_> = raised.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(keys, vec!["silent/CSOC"]);
    // A remote without a fixed time is expected every `expect_every_ms`.
    let mut config = seed_example();
    config.remotes[1].sync_types = vec![outpost::replicator::config::SyncType::NoReturn];
    central::set_config(&d.asoc, &config).unwrap();
    let t = Thresholds {
        expect_every_ms: 3_600_000,
        silent_margin_ms: 60_000,
        ..thresholds()
    };
    monitor::evaluate(&d.asoc, hhmm(8, 59), &t, None).unwrap();
    assert!(!open_keys(&d).contains(&"silent/CSOC".to_owned()));
    let raised = monitor::evaluate(&d.asoc, hhmm(9, 2), &t, None).unwrap();
    assert!(
        raised
            .iter()
            .any(|a| a.key == "silent/CSOC" && a.text.contains("expected to emit every 60 min")),
        "{raised:?}"
    );
}

#[test]
fn c3_rejections_quarantine_pending_and_disk_raise_alerts_and_rejections_are_searchable() {
    let d = Deployment::new();
    // CSOC may not write stock documents (R4): central refuses them.
    write_denied_stock(&d.csoc, "CSOC-S1");
    let (_, flow) = d.emit_and_process(&d.csoc, SyncMode::Deferred);
    let raised = monitor::evaluate(&d.asoc, hhmm(8, 1), &thresholds(), None).unwrap();
    assert_eq!(raised.len(), 1, "{raised:?}");
    let a = &raised[0];
    assert!(!a.is_open(), "an event is closed when raised");
    assert_eq!(a.flow, Some(flow));
    assert!(
        a.text.contains("change(s) of CSOC refused in emission") && a.text.contains("R4/R9"),
        "{}",
        a.text
    );
    // Every refused change, with its flow; searchable.
    let all = monitor::rejections_page(&d.asoc, None, 50, |_| true).unwrap();
    assert!(!all.items.is_empty());
    assert!(all.items.iter().all(|r| r.flow == flow));
    assert!(
        all.items
            .iter()
            .all(|r| r.rejection.change.key == "CSOC-S1")
    );
    let none =
        monitor::rejections_page(&d.asoc, None, 50, |r| r.rejection.change.key == "X").unwrap();
    assert!(none.items.is_empty());

    // Disk nearly full: one open alert, closed once there is room.
    let full = Disk {
        available: 1 << 20,
        total: 100 << 20,
    };
    let raised = monitor::evaluate(&d.asoc, hhmm(8, 2), &thresholds(), Some(full)).unwrap();
    assert_eq!(raised.len(), 1);
    assert!(
        raised[0]
            .text
            .contains("nearly full: 1 MiB free of 100 MiB")
    );
    assert!(
        monitor::evaluate(&d.asoc, hhmm(8, 3), &thresholds(), Some(full))
            .unwrap()
            .is_empty()
    );
    let roomy = Disk {
        available: 50 << 20,
        total: 100 << 20,
    };
    monitor::evaluate(&d.asoc, hhmm(8, 4), &thresholds(), Some(roomy)).unwrap();
    assert!(open_keys(&d).is_empty());

    // An emission file ready but not processed after 3 cycles (of 20 s).
    d.bsoc
        .write(|tx| tx.set("customers", "K1", "name", "Anne"))
        .unwrap();
    let (path, emitted) =
        outpost::replicator::files::emit_to(&d.bsoc, &d.usb(), SyncMode::Deferred).unwrap();
    outpost::replicator::files::receive_from(&d.asoc, &path, Some(BSOC)).unwrap();
    let ready = hhmm(8, 0);
    assert!(
        monitor::evaluate(&d.asoc, ready + 59_000, &thresholds(), None)
            .unwrap()
            .is_empty()
    );
    let raised = monitor::evaluate(&d.asoc, ready + 61_000, &thresholds(), None).unwrap();
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].key, format!("pending/{}", emitted.id));
    // Its processing cut off (started, never ended) and redone: executions 2, an alert.
    central::begin_processing(&d.asoc, emitted.id).unwrap();
    central::process_ready(&d.asoc).unwrap();
    assert_eq!(
        journal::row(&d.asoc, emitted.id)
            .unwrap()
            .unwrap()
            .executions,
        2
    );
    let raised = monitor::evaluate(&d.asoc, ready + 62_000, &thresholds(), None).unwrap();
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert!(
        raised[0].text.contains("started again (execution 2)"),
        "{}",
        raised[0].text
    );
    assert!(
        open_keys(&d).is_empty(),
        "processed: the pending alert closed"
    );

    // Alerts are e-mailed once: unmailed until marked.
    let unmailed = monitor::unmailed(&d.asoc).unwrap();
    assert_eq!(unmailed.len(), 4);
    let ids: Vec<u64> = unmailed.iter().map(|a| a.id).collect();
    monitor::mark_mailed(&d.asoc, &ids, hhmm(8, 5)).unwrap();
    assert!(monitor::unmailed(&d.asoc).unwrap().is_empty());
}

#[test]
fn c3_an_emission_held_for_clock_skew_raises_an_alert() {
    let clock = outpost::ManualClock::new(hhmm(8, 0));
    let bsoc_clock = outpost::ManualClock::new(hhmm(8, 0) + 3 * 86_400_000);
    let d = Deployment::with_clocks(clock, bsoc_clock, 300_000);
    d.bsoc
        .write(|tx| tx.set("customers", "K1", "name", "Anne"))
        .unwrap();
    let (path, emitted) =
        outpost::replicator::files::emit_to(&d.bsoc, &d.usb(), SyncMode::Deferred).unwrap();
    outpost::replicator::files::receive_from(&d.asoc, &path, Some(BSOC)).unwrap();
    central::process_ready(&d.asoc).unwrap();
    let raised = monitor::evaluate(&d.asoc, hhmm(8, 1), &thresholds(), None).unwrap();
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].flow, Some(emitted.id));
    assert!(raised[0].text.contains("quarantined"), "{}", raised[0].text);
    // The site as the monitor sees it: the clock 3 days ahead.
    let seen = monitor::sites_seen(&d.asoc).unwrap();
    let offset = seen[&BSOC].clock_offset_ms.unwrap();
    assert!(offset > 2 * 86_400_000, "{offset}");
    assert_eq!(
        monitor::row_state(&journal::row(&d.asoc, emitted.id).unwrap().unwrap()),
        monitor::RowState::Quarantined
    );
}

#[test]
fn c3_a_return_refused_by_its_remote_raises_an_alert_and_its_site_shows_the_applied_one() {
    let d = Deployment::new();
    d.emit_and_process(&d.bsoc, SyncMode::Deferred);
    let (older, built_older) =
        outpost::replicator::files::return_to(&d.asoc, BSOC, &d.usb()).unwrap();
    d.at(8, 5);
    d.asoc
        .write(|tx| tx.set("articles", "ART-CHAIR", "price", dec("55.00")))
        .unwrap();
    let (newer, built_newer) =
        outpost::replicator::files::return_to(&d.asoc, BSOC, &d.usb()).unwrap();
    outpost::replicator::files::apply_return_from(&d.bsoc, &newer).unwrap();
    outpost::replicator::files::apply_return_from(&d.bsoc, &older).unwrap(); // stale: refused
    d.at(8, 10);
    d.emit_and_process(&d.bsoc, SyncMode::NoReturn);
    let raised = monitor::evaluate(&d.asoc, hhmm(8, 10), &thresholds(), None).unwrap();
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].flow, Some(built_older.id));
    assert!(
        raised[0].text.contains("was refused by its remote"),
        "{}",
        raised[0].text
    );
    // Staleness counts from when central made the newest return BSOC applied.
    let seen = &monitor::sites_seen(&d.asoc).unwrap()[&BSOC];
    let (id, made, _) = seen.last_applied_return.unwrap();
    assert_eq!(id, built_newer.id);
    assert_eq!(made, hhmm(8, 5));
}

#[test]
fn j4_staleness_history_rises_with_time_and_drops_when_a_return_is_applied() {
    let d = Deployment::new(); // 08:00: the bootstraps are made
    d.at(9, 0);
    d.emit_and_process(&d.bsoc, SyncMode::Deferred);
    d.return_and_apply(&d.bsoc); // made and applied at 09:00
    // Over files, BSOC's report of the return applied comes with its next emission.
    d.at(12, 0);
    d.emit_and_process(&d.bsoc, SyncMode::NoReturn);
    let h = monitor::staleness_history(&d.asoc, hhmm(8, 0), hhmm(14, 0), 100).unwrap();
    assert!(h.complete);
    let hour = 3_600_000;
    assert_eq!(
        h.sites[&BSOC],
        vec![
            (hhmm(8, 0), 0),
            (hhmm(9, 0), hour),
            (hhmm(9, 0), 0),
            (hhmm(14, 0), 5 * hour)
        ]
    );
    // CSOC has applied nothing since its bootstrap.
    assert_eq!(
        h.sites[&CSOC],
        vec![(hhmm(8, 0), 0), (hhmm(14, 0), 6 * hour)]
    );
    // From 10:00 on: what BSOC had then (the 09:00 return), with no return in the window.
    let later = monitor::staleness_history(&d.asoc, hhmm(10, 0), hhmm(14, 0), 100).unwrap();
    assert_eq!(
        later.sites[&BSOC],
        vec![(hhmm(10, 0), hour), (hhmm(14, 0), 5 * hour)]
    );
}

#[test]
fn j1_journal_pages_newest_first_cover_every_row_once() {
    let d = Deployment::new();
    for i in 0..7u64 {
        d.at(9, i);
        d.bsoc
            .write(|tx| tx.set("customers", &format!("B{i}"), "name", "x"))
            .unwrap();
        d.emit_and_process(&d.bsoc, SyncMode::Immediate);
        d.return_and_apply(&d.bsoc);
        if i % 2 == 0 {
            d.csoc
                .write(|tx| tx.set("customers", &format!("C{i}"), "name", "x"))
                .unwrap();
            d.emit_and_process(&d.csoc, SyncMode::Immediate);
        }
    }
    let all = journal::rows(&d.asoc, None, None, None).unwrap();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page =
            monitor::journal_page(&d.asoc, None, None, cursor.as_deref(), 4, |_| true).unwrap();
        assert!(page.items.len() <= 4);
        seen.extend(page.items);
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), all.len());
    let times: Vec<_> = seen.iter().map(|r| r.file_ready_ms).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let ids: BTreeSet<_> = seen.iter().map(|r| r.id).collect();
    assert_eq!(ids, all.iter().map(|r| r.id).collect());
    // Filtered by site and by a time range.
    let csoc = monitor::journal_page(&d.asoc, None, None, None, 50, |r| r.site == CSOC).unwrap();
    assert_eq!(
        csoc.items.len(),
        all.iter().filter(|r| r.site == CSOC).count()
    );
    let range = monitor::journal_page(
        &d.asoc,
        Some(hhmm(9, 2)),
        Some(hhmm(9, 4)),
        None,
        50,
        |_| true,
    )
    .unwrap();
    assert!(!range.items.is_empty());
    assert!(range.items.iter().all(|r| {
        let t = r.file_ready_ms.unwrap();
        (hhmm(9, 2)..hhmm(9, 4)).contains(&t)
    }));
}

// ---- The page in headless Chromium, and e-mail, against a real daemon -------------------

/// A program on the PATH.
fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A WebDriver session on headless Chromium through chromedriver.
struct Browser {
    driver: Child,
    base: String,
    session: String,
}

impl Browser {
    fn start() -> Browser {
        let (Some(chromium), Some(chromedriver)) = (
            which(&["chromium", "chromium-browser", "google-chrome"]),
            which(&["chromedriver"]),
        ) else {
            panic!(
                "the monitor's browser test needs Chromium and chromedriver: run the README's \
                 test command (`bash test.sh`), which installs them (Debian: apt-get install \
                 chromium chromium-driver)"
            );
        };
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while agent().get(format!("{base}/status")).call().is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = serde_json::json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1500,1300"]
            }
        }}});
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
        };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().unwrap().to_owned();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let url = format!("{}{path}", self.base);
        let mut r = match (method, body) {
            ("GET", _) => agent().get(&url).call().unwrap(),
            ("DELETE", _) => agent().delete(&url).call().unwrap(),
            (_, b) => agent()
                .post(&url)
                .header("content-type", "application/json")
                .send(b.unwrap_or(serde_json::json!({})).to_string())
                .unwrap(),
        };
        let text = r.body_mut().read_to_string().unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(r.status(), 200, "{method} {path}: {text}");
        v["value"].clone()
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    fn go(&self, url: &str) {
        self.call(
            "POST",
            &self.s("/url"),
            Some(serde_json::json!({ "url": url })),
        );
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &self.s("/element"),
            Some(serde_json::json!({ "using": "css selector", "value": css })),
        );
        v.as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.call("POST", &self.s(&format!("/element/{e}/click")), None);
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/value")),
            Some(serde_json::json!({ "text": text })),
        );
    }

    fn js(&self, script: &str) -> serde_json::Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(serde_json::json!({ "script": script, "args": [] })),
        )
    }

    /// Runs `script` until it returns something truthy (not null, false, or an empty list).
    fn wait_for(&self, what: &str, script: &str) -> serde_json::Value {
        let started = Instant::now();
        loop {
            let v = self.js(script);
            let truthy = match &v {
                serde_json::Value::Null | serde_json::Value::Bool(false) => false,
                serde_json::Value::Array(a) => !a.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "waited 30 s for {what}; the page reads: {}",
                self.js("return document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn screenshot(&self, to: &Path) {
        let v = self.call("GET", &self.s("/screenshot"), None);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, base64_decode(v.as_str().unwrap())).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = agent()
                .delete(format!("{}/session/{}", self.base, self.session))
                .call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter_map(value) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Where test artifacts go: `target/test-artifacts/`.
fn artifacts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts")
}

/// The journal's rows as the page shows them.
const ROWS_DEF: &str =
    "const rows = [...document.querySelectorAll('#journal tbody tr[data-id]')].map(tr => ({
    id: tr.dataset.id, kind: tr.dataset.kind, site: tr.dataset.site,
    link: tr.querySelector('td.link').innerText.split('\\n')[0],
    followed: tr.classList.contains('followed') }));";

fn rows_where(condition: &str) -> String {
    format!("{ROWS_DEF} return {condition} ? rows : null;")
}

#[test]
fn j1_monitor_page_in_headless_chromium_shows_the_journal_follows_a_link_and_filters_by_site() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Central keeps UTC, the shops Paris time: the page shows both.
    deployment_with(
        dir,
        &["--tz", "UTC"],
        &[
            ("BSOC", "bsoc", &["immediate 60"]),
            ("CSOC", "csoc", &["immediate 60"]),
        ],
        &["--deny", "stock_documents"],
    );
    // CSOC's local admin lifted its denial of stock documents: central refuses them (R4). The
    // value is markup: the page must show it as text, never run it.
    {
        let csoc = outpost_server::data_dir::open(&dir.join("csoc")).unwrap();
        write_denied_stock_kind(&csoc, "CSOC-S1", "<img src=x onerror=\"window.pwned=1\">");
    }
    std::fs::write(dir.join("asoc/outpost.toml"), "[alerts]\ncheck_s = 1\n").unwrap();
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", "127.0.0.1:0"]);
    for (i, data) in ["bsoc", "csoc", "bsoc", "csoc", "bsoc"].iter().enumerate() {
        put(
            dir,
            data,
            &format!("K{i}"),
            r#"{"name": "Anne", "city": "Lyon"}"#,
        );
        sync(dir, data, &central, &[]);
    }
    let journal = admin_get(dir, &central, "/v1/journal");
    let expected: BTreeSet<String> = journal
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let (site, seq) = (r["id"]["site"].as_u64(), r["id"]["seq"].as_u64());
            format!("{:02}-{:06}", site.unwrap(), seq.unwrap())
        })
        .collect();
    assert!(expected.len() >= 12, "{expected:?}"); // 2 bootstraps, 5 emissions, 5 returns

    let browser = Browser::start();
    let monitor_url = format!("{}/monitor", central.url);
    browser.go(&monitor_url);
    // Without a session: the sign-in form; a wrong credential is refused.
    browser.type_into("#credential", "ASOC.0000");
    browser.click("#sign-in");
    browser.wait_for(
        "the refusal",
        "return document.querySelector('#login-error')?.innerText",
    );
    browser.type_into(
        "#credential",
        &credential(&dir.join("asoc/admin.credential")),
    );
    browser.click("#sign-in");
    let rows = browser.wait_for("the journal", &rows_where("rows.length > 0"));
    let shown: BTreeSet<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(shown, expected, "the page lists the whole journal");
    let sites = browser.wait_for(
        "the sites",
        "return [...document.querySelectorAll('#sites tbody tr')].map(tr => tr.dataset.site)",
    );
    assert_eq!(sites, serde_json::json!(["BSOC", "CSOC"]));
    // Each site's staleness over the last days, drawn as a line in its row (J4).
    let lines = browser.wait_for(
        "the staleness lines",
        "const n = [...document.querySelectorAll('#sites tbody tr')].map(tr => tr.querySelector('svg.sparkline polyline')?.getAttribute('points').split(' ').length || 0); return n.length === 2 && n.every(k => k >= 4) ? n : null",
    );
    assert_eq!(lines.as_array().unwrap().len(), 2, "{lines}");
    let activity = browser.wait_for(
        "the automaton's activity",
        "const a = document.querySelector('#activity').innerText; return a === '…' ? null : a",
    );
    assert!(activity.as_str().unwrap().starts_with("Att"), "{activity}");
    let refused = browser.wait_for(
        "the refused change",
        "return [...document.querySelectorAll('#rejections tbody tr')].map(tr => tr.innerText).filter(t => t.includes('CSOC-S1'))",
    );
    assert!(refused[0].as_str().unwrap().contains("R4/R9"), "{refused}");
    let markup = browser.js(
        "return [window.pwned === undefined, document.querySelectorAll('#rejections img').length, \
         [...document.querySelectorAll('#rejections td')].some(td => td.innerText.includes('<img src=x'))]",
    );
    assert_eq!(
        markup,
        serde_json::json!([true, 0, true]),
        "shown as text, not run"
    );
    // The refusal is an alert on the page too.
    browser.wait_for(
        "the alert",
        "return [...document.querySelectorAll('#alerts li')].map(li => li.innerText).filter(t => t.includes('change(s) of CSOC refused'))",
    );
    // Times in central's zone (UTC here), and the site's (Paris) below.
    let times = browser.js(
        "const td = document.querySelector('#journal tbody tr td:nth-child(6)'); return [td.firstChild.textContent, td.querySelector('small').innerText]",
    );
    let (utc, paris) = (times[0].as_str().unwrap(), times[1].as_str().unwrap());
    assert_ne!(utc, paris, "two zones: {times}");
    browser.screenshot(&artifacts().join("monitor.png"));
    if let Some(to) = std::env::var_os("OUTPOST_SCREENSHOT_TO") {
        browser.screenshot(Path::new(&to));
    }

    // Follow an emission's link to its return.
    let emission = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "emission" && r["link"] != "0")
        .expect("an answered emission")
        .clone();
    let link = emission["link"].as_str().unwrap();
    browser.click(&format!(
        "#journal tr[data-id='{}'] a.flow-link",
        emission["id"].as_str().unwrap()
    ));
    let followed = browser.wait_for(
        "the linked return",
        &rows_where(&format!("rows.length === 1 && rows[0].id === '{link}'")),
    );
    assert_eq!(followed[0]["kind"], "return");
    assert_eq!(followed[0]["followed"], true);
    assert_eq!(followed[0]["link"], emission["id"], "the return links back");
    browser.click("#back");

    // Filter by site.
    browser.click("#f-site option[value='BSOC']");
    browser.click("#f-apply");
    let bsoc = browser.wait_for(
        "BSOC's rows only",
        &rows_where("rows.length > 0 && rows.every(r => r.site === 'BSOC')"),
    );
    let n_bsoc = journal
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["site"] == 2)
        .count();
    assert_eq!(bsoc.as_array().unwrap().len(), n_bsoc);
    browser.screenshot(&artifacts().join("monitor-bsoc.png"));
}

/// A message the sink received: its `RCPT TO` lines and its data.
type Mail = (Vec<String>, String);

/// A minimal SMTP server: accepts every message and keeps it.
struct SmtpSink {
    port: u16,
    messages: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpSink {
    fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&messages);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let kept = Arc::clone(&kept);
                std::thread::spawn(move || {
                    let _ = serve_smtp(conn, &kept);
                });
            }
        });
        SmtpSink { port, messages }
    }
}

fn serve_smtp(conn: TcpStream, kept: &Mutex<Vec<(Vec<String>, String)>>) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut lines = BufReader::new(conn);
    out.write_all(b"220 sink ESMTP\r\n")?;
    let mut rcpt = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            out.write_all(b"250-sink\r\n250 8BITMIME\r\n")?;
        } else if upper.starts_with("MAIL FROM") {
            rcpt.clear();
            out.write_all(b"250 OK\r\n")?;
        } else if upper.starts_with("RCPT TO") {
            rcpt.push(line.trim().to_owned());
            out.write_all(b"250 OK\r\n")?;
        } else if upper.starts_with("DATA") {
            out.write_all(b"354 go on\r\n")?;
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(&line);
            }
            kept.lock().unwrap().push((rcpt.clone(), data));
            out.write_all(b"250 OK queued\r\n")?;
        } else if upper.starts_with("QUIT") {
            out.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else {
            out.write_all(b"250 OK\r\n")?;
        }
    }
}

#[test]
fn c3_a_silent_remote_is_e_mailed_in_one_digest_never_to_a_placeholder_address() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // BSOC emits at a fixed time of day (not due since its bootstrap); CSOC syncs when it
    // decides, and is expected at least every 3 s here.
    // BSOC's emission time: about twelve hours from now, whatever the time zone: never due here.
    let hour = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600
        + 12)
        % 24;
    // (Fetching after central's 23:00 return time, as the configuration requires.)
    let fixed = format!("fixed {:02}:00 23:30", hour.min(22));
    deployment(
        dir,
        &[],
        &[
            ("BSOC", "bsoc", &[fixed.as_str()]),
            ("CSOC", "csoc", &["immediate 60"]),
        ],
    );
    let sink = SmtpSink::start();
    let alerts = |to: &str| {
        std::fs::write(
            dir.join("asoc/outpost.toml"),
            format!(
                "[alerts]\nsmtp_url = \"smtp://127.0.0.1:{}\"\nfrom = \"outpost@asoc.example\"\n\
                 {to}check_s = 1\ndigest_s = 3600\nexpect_every_s = 3\nsilent_margin_s = 1\n",
                sink.port
            ),
        )
        .unwrap();
    };
    // The responsible collaborator's address (C3) in the configuration `central init` wrote is
    // the seed's placeholder: the mails would go nowhere, so the daemon does not start.
    alerts("");
    let err = serve_refused(dir, "asoc", "127.0.0.1:0");
    assert!(
        err.contains("rsyn@asoc.example") && err.contains("to = ["),
        "{err}"
    );
    alerts("to = [\"ops@asoc.fr\"]\n");
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", "127.0.0.1:0"]);
    let started = Instant::now();
    while sink.messages.lock().unwrap().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no e-mail in 60 s; the daemon's log: {}",
            central.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (rcpt, data) = sink.messages.lock().unwrap()[0].clone();
    assert_eq!(rcpt, vec!["RCPT TO:<ops@asoc.fr>"]);
    assert!(data.contains("Subject: [outpost ASOC]"), "{data}");
    assert!(data.contains("CSOC is silent: nothing for"), "{data}");
    assert!(!data.contains("BSOC is silent"), "{data}");
    // The page's route shows it e-mailed.
    let silent_alerts = || -> Vec<serde_json::Value> {
        admin_get(dir, &central, "/v1/alerts")["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["text"].as_str().unwrap().contains("CSOC is silent"))
            .cloned()
            .collect()
    };
    let first = silent_alerts();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["open"], true);
    assert!(first[0]["mailed"].is_string(), "{first:?}");
    // CSOC syncs (the alert closes), then falls silent again: a second alert, which waits for
    // the next digest (an hour here) instead of a second e-mail now.
    sync(dir, "csoc", &central, &[]);
    let started = Instant::now();
    let second = loop {
        let all = silent_alerts();
        if let Some(new) = all
            .iter()
            .find(|a| a["open"] == true && a["id"] != first[0]["id"])
        {
            assert!(
                all.iter()
                    .any(|a| a["id"] == first[0]["id"] && a["open"] == false)
            );
            break new.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{all:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        second["mailed"].is_null(),
        "held for the next digest: {second}"
    );
    assert_eq!(
        sink.messages.lock().unwrap().len(),
        1,
        "a digest, not a flood"
    );
    let alerts = admin_get(dir, &central, "/v1/alerts");
    assert_eq!(alerts["mail"]["sent"], 1);
    assert!(central.terminate().success());
    // And `outpost journal --alerts` once the daemon is stopped.
    let listed = ok(dir, &["journal", "--data", "asoc", "--alerts"]);
    assert!(listed.contains("OPEN"), "{listed}");
    assert!(listed.contains("CSOC is silent"), "{listed}");
    assert!(listed.contains("e-mailed"), "{listed}");
    assert!(listed.contains("not e-mailed"), "the second: {listed}");
}

/// An agent that shows redirects instead of following them.
fn no_redirects() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

#[test]
fn j1_monitor_routes_take_central_s_credential_or_a_session_and_refuse_bad_queries() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    deployment(
        dir,
        &["--tz", "UTC"],
        &[("BSOC", "bsoc", &["immediate 60"])],
    );
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", "127.0.0.1:0"]);
    let url = |route: &str| format!("{}{route}", central.url);
    let admin = credential(&dir.join("asoc/admin.credential"));
    let bsoc = credential(&dir.join("bsoc/remote.toml"));
    let get = |route: &str, auth: Option<&str>, cookie: Option<&str>| {
        let mut req = no_redirects().get(url(route));
        if let Some(a) = auth {
            req = req.header("authorization", format!("Bearer {a}"));
        }
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let mut r = req.call().unwrap();
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().unwrap())
    };
    // Without a credential: 401; a remote's: 403; central's: 200.
    assert_eq!(get("/v1/monitor/journal", None, None).0, 401);
    assert_eq!(get("/v1/monitor/journal", Some(&bsoc), None).0, 403);
    assert_eq!(get("/v1/alerts", Some(&bsoc), None).0, 403);
    assert_eq!(get("/v1/monitor/journal", Some(&admin), None).0, 200);
    // The page without a session is the sign-in form, with a strict content policy.
    let r = no_redirects().get(url("/monitor")).call().unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    let (_, page) = get("/monitor", None, None);
    assert!(page.contains("name=\"credential\""), "{page}");
    // Sign-in: a remote's credential gets no session.
    let login = |cred: &str| {
        no_redirects()
            .post(url("/monitor/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .send(format!("credential={cred}"))
            .unwrap()
    };
    let r = login(&bsoc);
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    // The refusal is logged with who asked (issue 21 item 7).
    let log = central.log();
    let line = log
        .lines()
        .find(|l| l.contains("monitor sign-in refused"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    let r = login(&admin);
    assert_eq!(r.status(), 303);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    assert_eq!(get("/v1/monitor/journal", None, Some(&cookie)).0, 200);
    let (status, page) = get("/monitor", None, Some(&cookie));
    assert_eq!(status, 200);
    assert!(page.contains("id=\"journal\""));
    // A cookie of no live session: told to sign in again.
    let (status, body) = get("/v1/monitor/journal", None, Some("outpost_session=00ff"));
    assert_eq!(status, 401);
    assert!(body.contains("sign in again"), "{body}");
    // Bad queries: JSON 400s that say what to write.
    for (query, says) in [
        ("from=yesterday", "is not a date"),
        ("to=2026-13-01", "is not a date"),
        ("limit=abc", "limit"),
        ("limit=0", "from 1 to 500"),
        ("before=zz", "pass back a page's `next`"),
        ("kind=foo", "emission, return or bootstrap"),
        ("state=lost", "waiting, done"),
        ("flow=x", "is not a SynID"),
    ] {
        let (status, body) = get(&format!("/v1/monitor/journal?{query}"), Some(&admin), None);
        assert_eq!(status, 400, "{query}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["error"].as_str().unwrap().contains(says),
            "{query}: {body}"
        );
    }
    assert_eq!(
        get("/v1/monitor/journal?site=ZSOC", Some(&admin), None).0,
        404
    );
    // "to" includes the day and the minute named (central keeps UTC here).
    let journal = admin_get(dir, &central, "/v1/journal");
    let ready = journal[0]["file_ready_ms"].as_i64().unwrap();
    let at = chrono::DateTime::from_timestamp_millis(ready).unwrap();
    let count = |query: String| {
        let (status, body) = get(&format!("/v1/monitor/journal?{query}"), Some(&admin), None);
        assert_eq!(status, 200, "{query}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["items"].as_array().unwrap().len()
    };
    let day = at.format("%Y-%m-%d").to_string();
    let minute = at.format("%Y-%m-%d%%20%H:%M").to_string();
    let next_day = (at + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    assert_eq!(count(format!("to={day}")), 1, "the day named is in");
    assert_eq!(
        count(format!("from={day}&to={minute}")),
        1,
        "the minute named is in"
    );
    assert_eq!(
        count(format!("from={minute}")),
        1,
        "from the minute, inclusive"
    );
    assert_eq!(count(format!("from={next_day}")), 0);
    // Each remote's staleness over the last days (the page's sparklines): after a sync, BSOC's
    // rises from its bootstrap, drops when it applies the return, and rises again until now.
    sync(dir, "bsoc", &central, &[]);
    let history = admin_get(dir, &central, "/v1/monitor/staleness");
    let (from, to) = (
        history["from_ms"].as_u64().unwrap(),
        history["to_ms"].as_u64().unwrap(),
    );
    assert_eq!(to - from, 7 * 24 * 3_600_000, "7 days by default");
    assert_eq!(history["sites"][0]["code"], "BSOC");
    let points: Vec<(u64, u64)> =
        serde_json::from_value(history["sites"][0]["points"].clone()).unwrap();
    assert_eq!(points.len(), 4, "{points:?}");
    assert!(points.windows(2).all(|w| w[0].0 <= w[1].0), "{points:?}");
    assert!(
        points.iter().all(|p| (from..=to).contains(&p.0)),
        "{points:?}"
    );
    assert_eq!(points[0].1, 0, "from its bootstrap: {points:?}");
    assert!(
        points[1].0 == points[2].0 && points[2].1 < points[1].1,
        "a drop at the return applied: {points:?}"
    );
    assert_eq!(points[3].0, to);
    for (query, says) in [
        ("days=0", "from 1 to 31"),
        ("days=32", "from 1 to 31"),
        ("days=x", "days"),
    ] {
        let (status, body) = get(
            &format!("/v1/monitor/staleness?{query}"),
            Some(&admin),
            None,
        );
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(says), "{query}: {body}");
    }
    assert_eq!(get("/v1/monitor/staleness", Some(&bsoc), None).0, 403);
}

/// R7, J1: the monitor's sites show how many documents each remote holds reserved (out of
/// syncs until released), as its newest emission reported them (issue 21 item 10).
#[test]
fn r7_the_monitor_shows_the_documents_each_remote_holds_reserved() {
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
    let doc = |key: &str| {
        ok(
            dir,
            &[
                "put",
                "--data",
                "bsoc",
                "--table",
                "sales_documents",
                "--key",
                key,
                "--fields",
                r#"{"status": "draft"}"#,
            ],
        );
    };
    let reserved = || -> Vec<(String, serde_json::Value)> {
        admin_get(dir, &central, "/v1/monitor/sites")
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["code"].as_str().unwrap().to_owned(),
                    s["reserved"].clone(),
                )
            })
            .collect()
    };
    // Before any emission: not known.
    assert!(
        reserved().iter().all(|(_, r)| r.is_null()),
        "{:?}",
        reserved()
    );
    for key in ["BSOC-D1", "BSOC-D2", "BSOC-D3"] {
        doc(key);
    }
    for key in ["BSOC-D1", "BSOC-D2"] {
        ok(
            dir,
            &[
                "reserve",
                "--data",
                "bsoc",
                "--table",
                "sales_documents",
                "--key",
                key,
                "--user",
                "PAUL",
            ],
        );
    }
    sync(dir, "bsoc", &central, &[]);
    sync(dir, "csoc", &central, &[]);
    let got = reserved();
    assert!(
        got.contains(&("BSOC".into(), serde_json::json!(2))),
        "{got:?}"
    );
    assert!(
        got.contains(&("CSOC".into(), serde_json::json!(0))),
        "{got:?}"
    );
    // Released: the next emission says so.
    ok(
        dir,
        &[
            "release",
            "--data",
            "bsoc",
            "--table",
            "sales_documents",
            "--key",
            "BSOC-D1",
            "--user",
            "PAUL",
        ],
    );
    sync(dir, "bsoc", &central, &[]);
    assert!(reserved().contains(&("BSOC".into(), serde_json::json!(1))));
    // BSOC's store is lost and the site reprovisioned: what it held reserved is lost with it,
    // said once, and the count forgotten (the new store holds none).
    drop(central);
    let said = reprovision(dir, "BSOC", "bsoc-new.boot");
    assert!(
        said.contains("old store held 1 document(s) reserved"),
        "{said}"
    );
    let central = Daemon::start(dir, &["--data", "asoc", "--listen", "127.0.0.1:0"]);
    let got = admin_get(dir, &central, "/v1/monitor/sites");
    let bsoc = got
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["code"] == "BSOC")
        .unwrap();
    assert!(bsoc["reserved"].is_null(), "{got}");
}

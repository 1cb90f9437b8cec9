//! `outpost demo`: the SPEC's example plan (C1, C5) played on real stores on disk.
//!
//! Central ASOC and remotes BSOC and CSOC each open their own durable store. During the day the
//! remotes work alone (S2); forbidden writes are refused with their rule (R3, R4/R9, R6, R7,
//! R8). At 21:00 BSOC emits, at 22:00 CSOC emits, at 23:00 central prepares one return per
//! remote, and BSOC and CSOC fetch theirs at 23:20 and 23:40 (C5) — all through sync files in a
//! directory standing for the USB stick (S4), the same bytes the network will carry. The next
//! morning the remotes' emissions report their returns, and the journal (J1) is printed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use outpost_engine::{ManualClock, Schema, Site, SiteId, Store, StoreConfig, Value};
use outpost_replicator::central::{self, Received};
use outpost_replicator::remote::{self, Applied};
use outpost_replicator::{SyncMode, files, journal};

/// 2026-11-25 00:00 UTC.
const DAY_MS: u64 = 1_795_564_800_000;
const HOUR_MS: u64 = 3_600_000;
const MINUTE_MS: u64 = 60_000;

/// The retail schema (the simulator's workload; see [`outpost_sim::retail`]).
pub fn retail_schema() -> Schema {
    outpost_sim::retail::schema()
}

fn dec(s: &str) -> Value {
    s.parse().map(Value::Decimal).unwrap_or(Value::Null)
}

struct Demo {
    clock: ManualClock,
    usb: PathBuf,
    out: String,
}

/// The demo's errors: the engine's and the replicator's.
pub type DemoResult<T> = Result<T, outpost_replicator::Error>;

fn hhmm(ms: u64) -> String {
    let minutes = (ms % 86_400_000) / MINUTE_MS;
    let day = if ms >= DAY_MS + 86_400_000 { "+1 " } else { "" };
    format!("{day}{:02}:{:02}", minutes / 60, minutes % 60)
}

impl Demo {
    fn at(&mut self, day: u64, hh: u64, mm: u64, what: &str) {
        self.clock
            .set(DAY_MS + day * 86_400_000 + hh * HOUR_MS + mm * MINUTE_MS);
        let _ = writeln!(self.out, "\n{}  {what}", hhmm(self.clock_ms()));
    }

    fn clock_ms(&self) -> u64 {
        use outpost_engine::Clock as _;
        self.clock.now_ms()
    }

    fn say(&mut self, line: impl AsRef<str>) {
        let _ = writeln!(self.out, "       {}", line.as_ref());
    }

    fn refused(&mut self, who: &str, what: &str, result: outpost_engine::Result<()>) {
        match result {
            Err(e) => {
                let line = format!("{who} {what}: {e}");
                self.say(line);
            }
            Ok(()) => self.say(format!(
                "{who} {what}: ACCEPTED — this should have been refused"
            )),
        }
    }

    /// A remote writes an emission file; central receives it into its sync table and, a minute
    /// later, processes it.
    fn emit(&mut self, from: &Store, asoc: &Store, mode: SyncMode) -> DemoResult<()> {
        let (path, emitted) = files::emit_to(from, &self.usb, mode)?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let mut line = format!(
            "{} writes {} ({} changes, {} bytes on the stick)",
            from.site().code,
            name.unwrap_or_default(),
            emitted.n_changes,
            std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
        );
        if emitted.frozen > 0 {
            line += &format!(", {} documents now frozen (R6)", emitted.frozen);
        }
        if emitted.held_back > 0 {
            line += &format!(
                ", {} commits of reserved documents held back (R7)",
                emitted.held_back
            );
        }
        self.say(line);
        let received = central::receive(
            asoc,
            std::io::BufReader::new(std::fs::File::open(&path)?),
            Some(from.site().id),
        )?;
        if let Received::Ready { id, .. } = received {
            self.say(format!("ASOC: {id} file ready in the sync table"));
        }
        self.clock.advance(MINUTE_MS);
        for p in central::process_ready(asoc)? {
            let line = format!(
                "ASOC processes {}: {} applied, {} refused",
                p.id,
                p.report.count(outpost_engine::Outcome::Applied),
                p.report.refused()
            );
            self.say(line);
        }
        Ok(())
    }
}

/// Runs the example plan with stores under `dir` and returns the transcript.
pub fn run(dir: &Path) -> DemoResult<String> {
    let clock = ManualClock::new(DAY_MS + 8 * HOUR_MS);
    let usb = dir.join("usb");
    std::fs::create_dir_all(&usb)?;
    let open = |site: &Site| -> outpost_engine::Result<Store> {
        Store::open(
            dir.join(site.code.as_str()),
            StoreConfig::new(site.clone(), retail_schema(), clock.clone()),
        )
    };
    let mut d = Demo {
        clock: clock.clone(),
        usb: usb.clone(),
        out: String::new(),
    };
    let _ = writeln!(
        d.out,
        "outpost demo — the example plan of SPEC C5, stores in {}, sync files in {}",
        dir.display(),
        usb.display()
    );

    d.at(
        0,
        8,
        0,
        "central ASOC sets the catalogue and creates its remotes BSOC and CSOC",
    );
    let asoc = open(&Site::central(1, "ASOC").map_err(outpost_engine::Error::from)?)?;
    asoc.write(|tx| {
        tx.set("articles", "ART-CHAIR", "name", "Chair")?;
        tx.set("articles", "ART-CHAIR", "price", dec("49.90"))?;
        tx.set("articles", "ART-TABLE", "name", "Table")?;
        tx.set("articles", "ART-TABLE", "price", dec("189.00"))
    })?;
    let settings = |t: &str| BTreeMap::from([("emission_time".to_owned(), t.to_owned())]);
    let bsoc_site = Site::remote(2, "BSOC").map_err(outpost_engine::Error::from)?;
    let csoc_site = Site::remote(3, "CSOC").map_err(outpost_engine::Error::from)?;
    central::create_remote(&asoc, bsoc_site, BTreeSet::new(), settings("21:00"))?;
    // R4/R9: CSOC's establishment may not write stock documents.
    central::create_remote(
        &asoc,
        csoc_site,
        BTreeSet::from(["stock_documents".to_owned()]),
        settings("22:00"),
    )?;
    let mut remotes = Vec::new();
    for id in [2, 3] {
        let (path, built) = files::bootstrap_to(&asoc, SiteId(id), &usb)?;
        let store = remote::bootstrap(std::io::BufReader::new(std::fs::File::open(&path)?), open)?;
        d.say(format!(
            "{} initialised from its bootstrap file ({} changes)",
            store.site().code,
            built.n_changes
        ));
        remotes.push(store);
    }
    let csoc = remotes
        .pop()
        .ok_or_else(|| outpost_replicator::Error::Refused("no CSOC".into()))?;
    let bsoc = remotes
        .pop()
        .ok_or_else(|| outpost_replicator::Error::Refused("no BSOC".into()))?;

    d.at(
        0,
        10,
        15,
        "BSOC works offline: a customer, a sale, a cash register, a stock receipt",
    );
    let (customer, sale) = bsoc.write(|tx| {
        let c = tx.new_key("customers")?;
        tx.set("customers", &c, "name", "Dupont SARL")?;
        tx.set("customers", &c, "city", "Lyon")?;
        let s = tx.new_key("sales_documents")?;
        tx.set("sales_documents", &s, "customer", c.as_str())?;
        tx.set("sales_documents", &s, "total", dec("239.90"))?;
        tx.set("sales_documents", &s, "status", "confirmed")?;
        tx.set("cash_registers", "BSOC-REG1", "opened_at", "09:00")?;
        tx.set("stock_documents", "BSOC-STK1", "article", "ART-CHAIR")?;
        tx.set("stock_documents", "BSOC-STK1", "quantity", 12)?;
        Ok((c, s))
    })?;
    d.say(format!("BSOC created customer {customer} and sale {sale}"));
    d.refused(
        "BSOC",
        "lowers the price of a chair",
        bsoc.write(|tx| tx.set("articles", "ART-CHAIR", "price", dec("1.00"))),
    );

    d.at(0, 11, 30, "CSOC works offline too");
    csoc.write(|tx| {
        tx.set("customers", "CSOC-000001", "name", "Martin & fils")?;
        tx.set("sales_documents", "CSOC-000001", "total", dec("49.90"))?;
        tx.set("sales_documents", "CSOC-000001", "status", "draft")
    })?;
    d.refused(
        "CSOC",
        "records a stock receipt",
        csoc.write(|tx| tx.set("stock_documents", "CSOC-STK1", "quantity", 3)),
    );

    d.at(
        0,
        20,
        45,
        "a BSOC user opens a second sale for editing (reserved) and leaves it open",
    );
    let open_sale = bsoc.write(|tx| {
        let s = tx.new_key("sales_documents")?;
        tx.set("sales_documents", &s, "status", "being edited")?;
        Ok(s)
    })?;
    bsoc.reserve("sales_documents", &open_sale, "till-1")?;
    d.say(format!("{open_sale} reserved by till-1"));

    d.at(
        0,
        21,
        0,
        "BSOC connects and emits (fixed time, deferred return)",
    );
    d.emit(&bsoc, &asoc, SyncMode::Deferred)?;
    d.refused(
        "BSOC",
        &format!("edits {sale}, already synchronised"),
        bsoc.write(|tx| tx.set("sales_documents", &sale, "status", "cancelled")),
    );

    d.at(
        0,
        21,
        30,
        "central edits BSOC's customer; central tries to close BSOC's register",
    );
    asoc.write(|tx| tx.set("customers", &customer, "address", "12 quai Perrache"))?;
    d.refused(
        "ASOC",
        "closes BSOC-REG1",
        asoc.write(|tx| tx.set("cash_registers", "BSOC-REG1", "closed_at", "21:30")),
    );

    d.at(0, 22, 0, "CSOC connects and emits");
    d.emit(&csoc, &asoc, SyncMode::Deferred)?;

    d.at(
        0,
        23,
        0,
        "central prepares one return per remote (common deferred return time)",
    );
    let mut returns = Vec::new();
    for remote_id in [2u16, 3] {
        let (path, built) = files::return_to(&asoc, SiteId(remote_id), &usb)?;
        let line = format!(
            "Ret D{remote_id:02}: {} written, {} changes, answers {}",
            built.id,
            built.n_changes,
            built
                .link
                .map(|l| l.to_string())
                .unwrap_or_else(|| "-".into())
        );
        d.say(line);
        returns.push(path);
    }

    for (store, path, (hh, mm)) in [
        (&bsoc, &returns[0], (23, 20)),
        (&csoc, &returns[1], (23, 40)),
    ] {
        let code = store.site().code.to_string();
        d.at(0, hh, mm, &format!("{code} fetches and applies its return"));
        match files::apply_return_from(store, path)? {
            Applied::Applied { report, .. } => {
                let line = format!(
                    "{code}: {} changes applied",
                    report.count(outpost_engine::Outcome::Applied)
                );
                d.say(line);
            }
            other => d.say(format!("{code}: {other:?}")),
        }
    }

    d.at(
        1,
        7,
        30,
        "next morning: each remote's first emission reports the return it applied",
    );
    d.emit(&bsoc, &asoc, SyncMode::NoReturn)?;
    d.emit(&csoc, &asoc, SyncMode::NoReturn)?;

    d.at(1, 7, 45, "the journal at central (J1)");
    d.say("SynID      kind       site  link       ready     start     end       runs refused");
    for row in journal::rows(&asoc, None, None, None)? {
        let t = |ms: Option<u64>| ms.map(hhmm).unwrap_or_else(|| "-".into());
        let line = format!(
            "{:<10} {:<10} {:<5} {:<10} {:<9} {:<9} {:<9} {:<4} {}",
            row.id.to_string(),
            format!("{:?}", row.kind),
            row.site.to_string(),
            row.link
                .map(|l| l.to_string())
                .unwrap_or_else(|| "0".into()),
            t(row.file_ready_ms),
            t(row.exec_start_ms),
            t(row.exec_end_ms),
            row.executions,
            if row.refused_by_remote { "yes" } else { "no" }
        );
        d.say(line);
    }

    d.at(1, 7, 50, "where everyone stands");
    for store in [&asoc, &bsoc, &csoc] {
        let customers = store.scan("customers")?;
        let sales = store.scan("sales_documents")?;
        let names: Vec<String> = customers
            .iter()
            .map(|r| {
                let name = r.get("name").and_then(Value::as_text).unwrap_or("?");
                let addr = r.get("address").and_then(Value::as_text).unwrap_or("-");
                format!("{} {name} ({addr})", r.key)
            })
            .collect();
        let line = format!(
            "{}: {} customers [{}], {} sales documents",
            store.site().code,
            customers.len(),
            names.join("; "),
            sales.len()
        );
        d.say(line);
    }
    let same = |x: &Store, y: &Store| -> outpost_engine::Result<bool> {
        Ok(x.snapshot()?.replicated_content()? == y.snapshot()?.replicated_content()?)
    };
    let held = bsoc.knowledge().difference(&asoc.knowledge());
    let line = format!(
        "CSOC holds exactly central's data: {}. BSOC holds {} commit(s) central has not: \
         its reserved {open_sale} (R7), which goes with its first sync after release.",
        same(&asoc, &csoc)?,
        held.count()
    );
    d.say(line);
    Ok(d.out)
}

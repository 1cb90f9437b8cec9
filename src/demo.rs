//! `outpost demo`: the SPEC's example plan (C1, C5) played on real stores on disk.
//!
//! Central ASOC and remotes BSOC and CSOC each open their own durable store. During the day the
//! remotes work alone (S2); forbidden writes are refused with their rule (R3, R4/R9, R6, R7,
//! R8). At 21:00 BSOC emits, at 22:00 CSOC emits, at 23:00 central prepares one return per
//! remote, and BSOC and CSOC fetch theirs at 23:20 and 23:40 (C5). Until the replicator lands,
//! the exchange is the engine's own primitives — "changes a peer lacks" and "apply" — moved in
//! memory rather than in flow files.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use outpost_engine::{
    Change, FieldKind, ManualClock, Policy, Schema, Site, SiteId, Store, StoreConfig, TableDef,
    Value,
};

/// 2026-11-25 00:00 UTC.
const DAY_MS: u64 = 1_795_564_800_000;
const HOUR_MS: u64 = 3_600_000;
const MINUTE_MS: u64 = 60_000;

/// The retail schema of the demo (a subset of the simulator's).
pub fn retail_schema() -> Schema {
    let text = FieldKind::Text;
    let schema = Schema::new([
        TableDef::central_only("articles")
            .field("name", text)
            .field("price", FieldKind::Decimal),
        TableDef::shared("customers")
            .field("name", text)
            .field("address", text)
            .field("city", text),
        TableDef::document("sales_documents")
            .field("customer", text)
            .field("date", text)
            .field("total", FieldKind::Decimal)
            .field("status", text),
        TableDef::document("stock_documents")
            .field("article", text)
            .field("quantity", FieldKind::Integer)
            .field("kind", text),
        TableDef::new(
            "cash_registers",
            Policy::Document {
                frozen_once_synced: false,
            },
        )
        .field("opened_at", text)
        .owner_exclusive_field("closed_at", text),
    ]);
    // The declaration above is fixed and valid; a failure here is a bug in this file.
    #[expect(clippy::expect_used, reason = "a constant, valid schema")]
    schema.expect("the retail schema is valid")
}

fn dec(s: &str) -> Value {
    s.parse().map(Value::Decimal).unwrap_or(Value::Null)
}

struct Demo {
    clock: ManualClock,
    out: String,
}

impl Demo {
    fn at(&mut self, hh: u64, mm: u64, what: &str) {
        self.clock.set(DAY_MS + hh * HOUR_MS + mm * MINUTE_MS);
        let _ = writeln!(self.out, "\n{hh:02}:{mm:02}  {what}");
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

    /// Sends what `to` lacks from `from`; an emission leaves reserved documents out (R7) and
    /// freezes the documents it carries (R6).
    fn send(&mut self, from: &Store, to: &Store, emission: bool) -> outpost_engine::Result<()> {
        let mut lacking = from.changes_lacking(&to.knowledge(), emission)?;
        let changes: Vec<Change> = lacking.by_ref().collect::<Result<_, _>>()?;
        let covered = lacking.covered();
        let left_out = lacking.left_out().count();
        let report = to.apply(from.site().id, changes.clone(), &covered)?;
        if emission {
            let docs: BTreeSet<(String, String)> = changes
                .iter()
                .filter(|c| {
                    from.schema()
                        .table(&c.table)
                        .is_some_and(|t| t.is_document())
                })
                .map(|c| (c.table.clone(), c.key.clone()))
                .collect();
            for (table, key) in &docs {
                from.freeze(table, key)?;
            }
        }
        let line = format!(
            "{} → {}: {} changes, {} applied, {} already known or superseded, {} refused{}",
            from.site().code,
            to.site().code,
            changes.len(),
            report.count(outpost_engine::Outcome::Applied),
            report.count(outpost_engine::Outcome::AlreadyHad)
                + report.count(outpost_engine::Outcome::Superseded),
            report.refused(),
            if left_out > 0 {
                format!(", {left_out} commits of reserved documents held back (R7)")
            } else {
                String::new()
            }
        );
        self.say(line);
        Ok(())
    }
}

/// Runs the example plan with stores under `dir` and returns the transcript.
pub fn run(dir: &Path) -> outpost_engine::Result<String> {
    let clock = ManualClock::new(DAY_MS + 8 * HOUR_MS);
    let sites = [
        Site::central(1, "ASOC")?,
        Site::remote(2, "BSOC")?,
        Site::remote(3, "CSOC")?,
    ];
    let open = |site: &Site| -> outpost_engine::Result<Store> {
        let store = Store::open(
            dir.join(site.code.as_str()),
            StoreConfig::new(site.clone(), retail_schema(), clock.clone()),
        )?;
        for s in &sites {
            store.add_site(s.clone())?;
        }
        // R4/R9: CSOC's establishment may not write stock documents.
        store.set_denied_tables(SiteId(3), BTreeSet::from(["stock_documents".to_owned()]))?;
        Ok(store)
    };
    let [asoc, bsoc, csoc] = [open(&sites[0])?, open(&sites[1])?, open(&sites[2])?];
    let mut d = Demo {
        clock: clock.clone(),
        out: String::new(),
    };
    let _ = writeln!(
        d.out,
        "outpost demo — the example plan of SPEC C5, stores in {}",
        dir.display()
    );

    d.at(
        8,
        0,
        "central ASOC sets the catalogue; the remotes start the day with it",
    );
    asoc.write(|tx| {
        tx.set("articles", "ART-CHAIR", "name", "Chair")?;
        tx.set("articles", "ART-CHAIR", "price", dec("49.90"))?;
        tx.set("articles", "ART-TABLE", "name", "Table")?;
        tx.set("articles", "ART-TABLE", "price", dec("189.00"))
    })?;
    d.send(&asoc, &bsoc, false)?;
    d.send(&asoc, &csoc, false)?;

    d.at(
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

    d.at(11, 30, "CSOC works offline too");
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
        21,
        0,
        "BSOC connects and emits (fixed time, deferred return)",
    );
    d.send(&bsoc, &asoc, true)?;
    d.refused(
        "BSOC",
        &format!("edits {sale}, already synchronised"),
        bsoc.write(|tx| tx.set("sales_documents", &sale, "status", "cancelled")),
    );

    d.at(
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

    d.at(22, 0, "CSOC connects and emits");
    d.send(&csoc, &asoc, true)?;

    d.at(
        23,
        0,
        "central prepares one return per remote (common deferred return time)",
    );
    let return_b: Vec<Change> = asoc
        .changes_lacking(&bsoc.knowledge(), false)?
        .collect::<Result<_, _>>()?;
    let return_c: Vec<Change> = asoc
        .changes_lacking(&csoc.knowledge(), false)?
        .collect::<Result<_, _>>()?;
    d.say(format!(
        "Ret D02: {} changes for BSOC; Ret D03: {} changes for CSOC",
        return_b.len(),
        return_c.len()
    ));

    d.at(23, 20, "BSOC fetches and applies its return");
    d.send(&asoc, &bsoc, false)?;
    d.at(23, 40, "CSOC fetches and applies its return");
    d.send(&asoc, &csoc, false)?;

    d.at(23, 50, "where everyone stands");
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

//! The workload: what the shops and central write each day, reservations, writes the rules
//! forbid, and how stale each remote's view of central is.

use super::*;

impl World {
    pub(super) fn workload(&mut self, i: usize) -> Result<(), SimError> {
        let roll = self.rng.below(100);
        if roll < 10 {
            return self.forbidden(i);
        }
        self.remotes[i].key_seq += 1;
        let stock_allowed = self.stock_allowed(i);
        let key = format!("{}-{:06}", self.remotes[i].code, self.remotes[i].key_seq);
        let store = &self.remotes[i].store;
        let city = ["Lyon", "Lille", "Nantes", "Osaka", "Quito", "Perth"];
        let city = self.rng.pick(&city).copied().unwrap_or("Lyon");
        let result = match roll {
            10..=29 => store.write_commit(|tx| {
                tx.set("customers", &key, "name", format!("customer {key}"))?;
                tx.set("customers", &key, "city", city)
            }),
            30..=44 => {
                // Edit a customer this site knows — others' included (R2 conflicts).
                let customers = store.snapshot()?.scan("customers", None, Some(200))?;
                match self.rng.pick(&customers).map(|c| c.key.clone()) {
                    Some(k) => store.write_commit(|tx| tx.set("customers", &k, "city", city)),
                    None => return Ok(()),
                }
            }
            45..=49 => {
                // A till's `create`: the engine numbers the record (`new_key`), as the site
                // server and the client library do; the key must be new to the deployment.
                let created = store.write_commit(|tx| {
                    let key = tx.new_key("prospects")?;
                    let held = tx.raw_record("prospects", &key)?.is_some();
                    tx.set("prospects", &key, "name", "prospect")?;
                    Ok((key, held))
                });
                match created {
                    Ok(((key, held), commit)) => {
                        self.record(&commit.changes);
                        self.note_new_key(Some(i), "prospects", &key, held, &commit.changes);
                        return Ok(());
                    }
                    Err(e) => Err(e),
                }
            }
            50..=54 => {
                // Shops pick the same document number (R1/R5): the first creation central
                // receives is the document's; the others' writes are refused and returned.
                let key = format!("DOC-{}-{}", self.now / DAY, self.rng.below(3));
                // A number it holds is taken, even by a deleted document (R5: another shop's
                // stays that shop's).
                if store
                    .snapshot()?
                    .raw_record("sales_documents", &key)?
                    .is_some()
                {
                    return Ok(());
                }
                let total = price(&mut self.rng);
                store.write_commit(|tx| {
                    tx.set("sales_documents", &key, "status", "confirmed")?;
                    tx.set("sales_documents", &key, "total", total)
                })
            }
            55..=64 => {
                let total = price(&mut self.rng);
                let res = store.write_commit(|tx| {
                    tx.set("sales_documents", &key, "status", "confirmed")?;
                    tx.set("sales_documents", &key, "total", total)
                });
                if res.is_ok() {
                    self.remotes[i]
                        .own_docs
                        .push(("sales_documents".into(), key.clone()));
                }
                res
            }
            65..=74 => {
                let total = price(&mut self.rng);
                store.write_commit(|tx| {
                    tx.set("pos_receipts", &key, "total", total)?;
                    tx.set("pos_receipts", &key, "paid_with", "card")
                })
            }
            75..=79 if stock_allowed => store.write_commit(|tx| {
                tx.set("stock_documents", &key, "quantity", 5)?;
                tx.set("stock_documents", &key, "kind", "receipt")
            }),
            80..=84 => {
                let res =
                    store.write_commit(|tx| tx.set("cash_registers", &key, "opened_at", "09:00"));
                if res.is_ok() {
                    self.remotes[i].registers.push(key.clone());
                }
                res
            }
            85..=89 => match self.remotes[i].registers.pop() {
                Some(reg) => self.remotes[i]
                    .store
                    .write_commit(|tx| tx.set("cash_registers", &reg, "closed_at", "19:00")),
                None => return Ok(()),
            },
            90..=94 => return self.reserve_or_release(i),
            _ => {
                // Edit one of its documents not yet synced (an unfrozen, unreserved one).
                let snap = self.remotes[i].store.snapshot()?;
                let candidates: Vec<(String, String)> = self.remotes[i]
                    .own_docs
                    .iter()
                    .filter(|(t, k)| {
                        !snap.is_frozen(t, k).unwrap_or(true)
                            && snap.reserved_by(t, k).ok().flatten().is_none()
                    })
                    .cloned()
                    .collect();
                match self.rng.pick(&candidates).cloned() {
                    Some((t, k)) => self.remotes[i]
                        .store
                        .write_commit(|tx| tx.set(&t, &k, "status", "amended")),
                    None => return Ok(()),
                }
            }
        };
        self.legitimate(i, "a legitimate write", result);
        Ok(())
    }

    /// A key the engine gave (`new_key`) at remote `writer` (central: `None`) to the record
    /// written by `changes`, noted with the commit's marker and the writer's store, so that the
    /// end of the run can tell a key given to two records that both stand (see `check`); if
    /// the writer's store held a record under it already (`held`), the new one was written into
    /// it — a merge as well.
    pub(super) fn note_new_key(
        &mut self,
        writer: Option<usize>,
        table: &str,
        key: &str,
        held: bool,
        changes: &[outpost_engine::Change],
    ) {
        let Some(marker) = changes.first().map(outpost_engine::Change::marker) else {
            return;
        };
        let given = GivenKey {
            table: table.to_owned(),
            key: key.to_owned(),
            marker,
            store: writer.map(|i| (i, self.remotes[i].instance)),
            held,
        };
        self.new_keys.push(given);
    }

    /// Records remote `i`'s write `what` (one the rules allow), or its refusal as a violation.
    pub(super) fn legitimate(
        &mut self,
        i: usize,
        what: &str,
        result: outpost_engine::Result<((), outpost_engine::Commit)>,
    ) {
        match result {
            Ok(((), commit)) => self.record(&commit.changes),
            Err(e) => {
                let code = self.remotes[i].code.clone();
                self.violation(format!("{what} at {code} was refused: {e}"));
            }
        }
    }

    pub(super) fn reserve_or_release(&mut self, i: usize) -> Result<(), SimError> {
        let holder = format!("till-{i}");
        if let Some((t, k)) = self.remotes[i].reserved.pop() {
            self.remotes[i].store.release(&t, &k, &holder)?;
            return Ok(());
        }
        let snap = self.remotes[i].store.snapshot()?;
        let candidates: Vec<(String, String)> = self.remotes[i]
            .own_docs
            .iter()
            .filter(|(t, k)| !snap.is_frozen(t, k).unwrap_or(true))
            .cloned()
            .collect();
        if let Some((t, k)) = self.rng.pick(&candidates).cloned() {
            self.remotes[i].store.reserve(&t, &k, &holder)?;
            // The holder finishes the document while it is reserved.
            let ((), commit) = self.remotes[i]
                .store
                .write_commit_as(&holder, |tx| tx.set(&t, &k, "status", "being edited"))?;
            self.record(&commit.changes);
            self.remotes[i].reserved.push((t, k));
        }
        Ok(())
    }

    /// A till opens a sales document, writes it and holds it reserved (R7): the commit is held
    /// back from emissions until released (by a later reservation event, or at the end). Draws
    /// nothing from the run's generator.
    pub(super) fn held_edit(&mut self, i: usize) -> Result<(), SimError> {
        let holder = format!("till-{i}");
        self.remotes[i].key_seq += 1;
        let key = format!("{}-{:06}", self.remotes[i].code, self.remotes[i].key_seq);
        let store = &self.remotes[i].store;
        // Every other one with a new customer in the same commit: the emissions carry the
        // customer and hold the document back, the commit in part (R7).
        let with_customer = self.remotes[i].key_seq.is_multiple_of(2);
        let ((), commit) = store.write_commit(|tx| {
            tx.set("sales_documents", &key, "status", "held at the till")?;
            let total = outpost_engine::Decimal::new(100, 2).map_or(Value::Null, Value::Decimal);
            tx.set("sales_documents", &key, "total", total)?;
            if with_customer {
                tx.set(
                    "customers",
                    &format!("{key}-C"),
                    "name",
                    "keyed in at the till",
                )?;
            }
            Ok(())
        })?;
        store.reserve("sales_documents", &key, &holder)?;
        self.record(&commit.changes);
        let doc = ("sales_documents".to_owned(), key);
        self.remotes[i].own_docs.push(doc.clone());
        self.remotes[i].reserved.push(doc);
        Ok(())
    }

    /// The shop corrects what it has just keyed in: each field its last commit wrote gets a
    /// new value in one commit, so that nothing of the last commit is left to travel — written
    /// over before its next sync (central knows it by its stamp, setting `unsent`). Only a
    /// commit that wrote fields alone, of a record it may still edit (a creation stays with its
    /// record). Draws nothing from the run's generator.
    pub(super) fn retype(&mut self, i: usize) -> Result<(), SimError> {
        let store = &self.remotes[i].store;
        let Some(places) = self.last_commit.get(&store.site().id) else {
            return Ok(());
        };
        let snap = store.snapshot()?;
        let mut again = Vec::new();
        for (table, key, slot) in places {
            let Slot::Field(field) = slot else {
                return Ok(());
            };
            if snap.is_frozen(table, key)? || snap.reserved_by(table, key)?.is_some() {
                return Ok(());
            }
            let now = snap
                .record(table, key)?
                .and_then(|r| r.fields.get(field).cloned());
            let corrected = match now {
                Some(Value::Text(s)) => Value::Text(format!("{s} (corrected)")),
                Some(Value::Int(n)) => Value::Int(n.wrapping_add(1)),
                _ => return Ok(()),
            };
            again.push((table.clone(), key.clone(), field.clone(), corrected));
        }
        if again.is_empty() {
            return Ok(());
        }
        let result = store.write_commit(|tx| {
            for (table, key, field, value) in &again {
                tx.set(table, key, field, value.clone())?;
            }
            Ok(())
        });
        self.legitimate(i, "a correction", result);
        Ok(())
    }

    /// The shop deletes a record ([`Event::Delete`]): mostly a customer or prospect it knows,
    /// whoever created it (another shop may be editing it: last-writer-wins against the
    /// tombstone, R2), or one of its own documents not yet synced (neither frozen nor
    /// reserved); now and then a document it may not delete — another shop's (R5) or one of
    /// its own already synced (R6) — which must be refused with that rule. Draws from the
    /// deletes' own generator only.
    pub(super) fn delete(&mut self, i: usize) -> Result<(), SimError> {
        let code = self.remotes[i].code.clone();
        let store = &self.remotes[i].store;
        let own = store.site().id;
        let snap = store.snapshot()?;
        let roll = self.deletes_rng.below(10);
        let (table, key, forbidden): (String, String, Option<(&str, Rule)>) = match roll {
            0..=5 => {
                let table = if roll < 4 { "customers" } else { "prospects" };
                let known = snap.scan(table, None, Some(200))?;
                match self.deletes_rng.pick(&known) {
                    Some(r) => (table.to_owned(), r.key.clone(), None),
                    None => return Ok(()),
                }
            }
            6 | 7 => {
                // Its own documents, those numbered as another shop's too (`DOC-…`: central
                // refuses this shop's writes to them, its delete included, and returns them).
                let mut places: BTreeSet<(String, String)> =
                    self.remotes[i].own_docs.iter().cloned().collect();
                for d in snap.scan("sales_documents", None, Some(200))? {
                    if d.creator == own {
                        places.insert(("sales_documents".to_owned(), d.key));
                    }
                }
                let mut mine = Vec::new();
                for (t, k) in places {
                    if !snap.is_frozen(&t, &k)?
                        && snap.reserved_by(&t, &k)?.is_none()
                        && snap.record(&t, &k)?.is_some()
                    {
                        mine.push((t, k));
                    }
                }
                match self.deletes_rng.pick(&mine) {
                    Some((t, k)) => (t.clone(), k.clone(), None),
                    None => return Ok(()),
                }
            }
            8 => {
                let docs = snap.scan("sales_documents", None, Some(200))?;
                let others: Vec<String> = docs
                    .iter()
                    .filter(|d| d.creator != own)
                    .map(|d| d.key.clone())
                    .collect();
                match self.deletes_rng.pick(&others) {
                    Some(k) => (
                        "sales_documents".to_owned(),
                        k.clone(),
                        Some(("R5 delete of another site's document", Rule::R5)),
                    ),
                    None => return Ok(()),
                }
            }
            _ => {
                let mut frozen = Vec::new();
                for (t, k) in &self.remotes[i].own_docs {
                    if snap.is_frozen(t, k)? && snap.record(t, k)?.is_some() {
                        frozen.push((t.clone(), k.clone()));
                    }
                }
                match self.deletes_rng.pick(&frozen) {
                    Some((t, k)) => (
                        t.clone(),
                        k.clone(),
                        Some(("R6 delete of a synced document", Rule::R6)),
                    ),
                    None => return Ok(()),
                }
            }
        };
        let result = store.write_commit(|tx| tx.delete(&table, &key));
        match forbidden {
            None => self.legitimate(i, "a delete", result),
            Some((what, rule)) => match result {
                Err(e) if e.refusal().is_some_and(|r| r.rule == rule) => {
                    self.report.forbidden_refused += 1;
                }
                Err(e) => self.violation(format!("{what} at {code} failed otherwise: {e}")),
                Ok(_) => self.violation(format!("{what} at {code} was accepted")),
            },
        }
        Ok(())
    }

    /// Whether shop `i` may write stock documents as far as its store knows (R4/R9: central's
    /// change of its permissions reaches it with its next return).
    fn stock_allowed(&self, i: usize) -> bool {
        let store = &self.remotes[i].store;
        !store
            .denied_tables(store.site().id)
            .contains("stock_documents")
    }

    /// A forbidden attempt, which must be refused with its rule.
    pub(super) fn forbidden(&mut self, i: usize) -> Result<(), SimError> {
        let code = self.remotes[i].code.clone();
        let store = &self.remotes[i].store;
        let snap = store.snapshot()?;
        let pick = self.rng.below(4);
        let attempt: Option<(&str, Vec<Rule>, outpost_engine::Result<()>)> = match pick {
            0 => {
                let articles = snap.scan("articles", None, Some(50))?;
                self.rng.pick(&articles).map(|a| {
                    let k = a.key.clone();
                    (
                        "R3 article edit",
                        vec![Rule::R3],
                        store.write(|tx| tx.set("articles", &k, "price", price(&mut Rng::new(0)))),
                    )
                })
            }
            1 if !self.stock_allowed(i) => Some((
                "R4 stock document",
                vec![Rule::R4],
                store.write(|tx| tx.set("stock_documents", &format!("{code}-X"), "quantity", 1)),
            )),
            2 => {
                let docs = snap.scan_raw("sales_documents", None, Some(200))?;
                let others: Vec<String> = docs
                    .iter()
                    .filter(|d| d.creator() != store.site().id)
                    .map(|d| d.key.clone())
                    .collect();
                self.rng.pick(&others).map(|k| {
                    let k = k.clone();
                    (
                        "R5 another site's document",
                        vec![Rule::R5],
                        store.write(|tx| tx.set("sales_documents", &k, "status", "hijacked")),
                    )
                })
            }
            _ => {
                let frozen: Vec<(String, String)> = self.remotes[i]
                    .own_docs
                    .iter()
                    .filter(|(t, k)| snap.is_frozen(t, k).unwrap_or(false))
                    .cloned()
                    .collect();
                self.rng.pick(&frozen).cloned().map(|(t, k)| {
                    (
                        "R6 synced document",
                        vec![Rule::R6],
                        store.write(|tx| tx.set(&t, &k, "status", "changed after sync")),
                    )
                })
            }
        };
        if let Some((what, rules, result)) = attempt {
            match result {
                Err(e) if e.refusal().is_some_and(|r| rules.contains(&r.rule)) => {
                    self.report.forbidden_refused += 1;
                }
                Err(e) => self.violation(format!("{what} at {code} failed otherwise: {e}")),
                Ok(()) => self.violation(format!("{what} at {code} was accepted")),
            }
        }
        Ok(())
    }

    pub(super) fn sample_staleness(&mut self, i: usize) {
        let knowledge: Knowledge = self.remotes[i].store.knowledge();
        let me = self.remotes[i].store.site().id;
        for other in &self.remotes {
            let o = other.store.site().id;
            if o == me {
                continue;
            }
            let newest_known = knowledge.max_seq(o);
            let newest_made = self.newest_own.get(&o).copied().unwrap_or(0);
            let age = if newest_known >= newest_made {
                0
            } else {
                // The oldest information it lacks: the commit after the newest it has.
                let lacking = Dot {
                    site: o,
                    seq: newest_known + 1,
                };
                self.commit_time
                    .get(&lacking)
                    .map_or(0, |t| self.now.saturating_sub(*t))
            };
            self.staleness.entry(i).or_default().push(age / MINUTE);
        }
    }
}

pub(super) fn price(rng: &mut Rng) -> Value {
    let cents = i128::from(100 + rng.below(99_900));
    outpost_engine::Decimal::new(cents, 2).map_or(Value::Null, Value::Decimal)
}

//! The end of a run: a quiet round, then the invariants — every site equals central, the rules
//! hold in the data, every acknowledged write is at central or in a rejection log, the journal's
//! links are consistent, central's sync table counts the readers of each common part of the
//! returns.

use super::*;

/// `t` as the run's day and UTC time, like `day 3 21:00 UTC`.
fn run_time(t: u64) -> String {
    let since = t.saturating_sub(START_MS);
    let (day, rest) = (since / DAY, since % DAY);
    format!(
        "day {day} {:02}:{:02} UTC",
        rest / HOUR,
        rest % HOUR / MINUTE
    )
}

/// How long a remote in service may be owed a return it has not applied (liveness).
const OWED_FOR_AT_MOST: u64 = 3 * DAY;

impl World {
    /// Liveness, at remote `i`'s local noon: a remote that central owes a return (it processed
    /// an emission of it that a return answers, or made a return for it) applies one within
    /// [`OWED_FOR_AT_MOST`] — a shop that emits every day and never hears back is stuck, the
    /// end's quiet round would hide it. Not checked at shops syncing without return, nor at a
    /// shop that syncs only when someone asks. A return applied settles what was owed when it
    /// was made.
    pub(super) fn check_liveness(&mut self, i: usize) -> Result<(), SimError> {
        let site = self.remotes[i].store.site().id;
        let applied = remote::last_return_seq(&self.remotes[i].store)?;
        let live = &mut self.liveness;
        let seen = live.applied_seen.insert(i, applied);
        // A shop syncing without return asks for one now and then (M4); a request held with
        // its emission (its clock ahead) is superseded by its next emission, without return.
        // A shop that syncs only when someone asks (no fixed time, no host program asking
        // daily) fetches a return its wait missed at the next ask, days later (A3).
        let on_demand = self.remotes[i].host_sync.is_none()
            && !self.remotes[i]
                .executor
                .schedule()
                .sync_types
                .iter()
                .any(|t| matches!(t, SyncType::Fixed { .. }));
        if self.remotes[i].kind == Kind::NoReturn || on_demand {
            live.owed.remove(&site);
            return Ok(());
        }
        if seen != Some(applied) {
            // A newer return applied settles what was owed when it was made (a return made by
            // a path not watched here settles everything).
            let made = live.made.get(&(site, applied)).copied();
            if made.is_none_or(|m| live.owed.get(&site).is_none_or(|(since, _)| m >= *since)) {
                live.owed.remove(&site);
            }
            let settled: Vec<(SiteId, u64)> = live
                .made
                .range((site, 0)..=(site, applied))
                .map(|(k, _)| *k)
                .collect();
            for k in settled {
                live.made.remove(&k);
            }
        }
        if let Some((since, count_from)) = live.owed.get(&site).copied()
            && self.now.saturating_sub(count_from) > OWED_FOR_AT_MOST
        {
            live.owed.remove(&site);
            self.violation(format!(
                "{} has applied no return for {} h although central owed it one since {} \
                 (liveness)",
                self.remotes[i].code,
                (self.now - since) / HOUR,
                run_time(since),
            ));
        }
        Ok(())
    }

    /// The quiet round, then the invariants.
    pub(super) fn finish(mut self) -> Result<Report, SimError> {
        // Users release what they hold; every site syncs twice with no fault.
        for i in 0..self.remotes.len() {
            let holder = format!("till-{i}");
            while let Some((t, k)) = self.remotes[i].reserved.pop() {
                self.remotes[i].store.release(&t, &k, &holder)?;
            }
        }
        self.cfg.faults = false;
        let sweep = self.automaton.on_time(self.now + DAY);
        let sweeps: Vec<Command> = sweep.into_iter().filter(|c| *c == Command::Sweep).collect();
        self.run_central(sweeps)?;
        // Two rounds after the last clock found wrong (its emission held) was set right; more
        // while an emission is still held (one made before its remote heard of central's
        // restore is superseded by the next, which may be held in turn), up to eight.
        for round in 0..8 {
            let holding = self.set_quarantined_clocks_right(false)?;
            if round >= 3 && !holding {
                break;
            }
            let open: Vec<usize> = (0..self.remotes.len())
                .filter(|i| !self.remotes[*i].closed)
                .collect();
            for &i in &open {
                self.execute(i, vec![RemoteCommand::Emit(SyncMode::NoReturn)])?;
            }
            // A shop closed since central's backup still waits to be removed again, once
            // central has heard from every remote (its restore).
            for i in 0..self.remotes.len() {
                if self.remotes[i].closed {
                    self.remove_again(i)?;
                }
            }
            for &i in &open {
                let site = self.remotes[i].store.site().id;
                central::prepare_return(&self.central, site)?;
                self.execute(i, vec![RemoteCommand::FetchReturn])?;
            }
        }
        self.check()?;
        let mut report = self.report;
        for (i, samples) in &mut self.staleness {
            samples.sort_unstable();
            let at = |q: usize| {
                samples
                    .get((samples.len().saturating_sub(1)) * q / 100)
                    .copied()
                    .unwrap_or(0)
            };
            if let Some(r) = self.remotes.get(*i) {
                report.staleness_minutes.insert(
                    r.code.clone(),
                    Staleness {
                        p50: at(50),
                        p99: at(99),
                    },
                );
            }
        }
        Ok(report)
    }

    pub(super) fn check(&mut self) -> Result<(), SimError> {
        // A key the engine gave twice (`new_key`) to records that both stand (neither lost
        // with a disk nor refused with its store), or to a new record its store wrote into one
        // it held under that key: two records merged into one, silently.
        // One pass over the accepted writes (a year's run keeps millions).
        let mut given: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
        for (n, g) in self.new_keys.iter().enumerate() {
            given.entry((&g.table, &g.key)).or_default().push(n);
        }
        let mut found = vec![false; self.new_keys.len()];
        for w in &self.accepted {
            let Some(ns) = given.get(&(w.table.as_str(), w.key.as_str())) else {
                continue;
            };
            for &n in ns {
                let g = &self.new_keys[n];
                if w.marker == g.marker && (g.held || w.slot == Slot::Created) {
                    found[n] = true;
                }
            }
        }
        let mut standing: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (g, found) in self.new_keys.iter().zip(found) {
            let stands = found && g.store.is_none_or(|s| !self.refused_instances.contains(&s));
            if !stands {
                continue;
            }
            if g.held {
                self.report.violations.push(format!(
                    "the key {}/{} was given to a new record while the store held a record \
                     under it: written into the old one",
                    g.table, g.key
                ));
            }
            *standing.entry((&g.table, &g.key)).or_insert(0) += 1;
        }
        for ((table, key), n) in standing {
            if n >= 2 {
                self.report.violations.push(format!(
                    "the key {table}/{key} was given to {n} new records, which merged into one"
                ));
            }
        }
        for problem in central::sync_table_problems(&self.central)? {
            self.report
                .violations
                .push(format!("central's sync table: {problem}"));
        }
        let central_content = self.central.snapshot()?.replicated_content()?;
        let mut converged = true;
        // A closed shop's store stopped at its last sync.
        for r in self.remotes.iter().filter(|r| !r.closed) {
            let content = r.store.snapshot()?.replicated_content()?;
            if content != central_content {
                converged = false;
                // The first record that differs, in key order: missing here, extra here, or
                // another value.
                let here: BTreeMap<&[u8], &[u8]> = content
                    .iter()
                    .map(|(k, v)| (k.as_slice(), v.as_slice()))
                    .collect();
                let there: BTreeMap<&[u8], &[u8]> = central_content
                    .iter()
                    .map(|(k, v)| (k.as_slice(), v.as_slice()))
                    .collect();
                let first = here
                    .keys()
                    .chain(there.keys())
                    .filter(|k| here.get(*k) != there.get(*k))
                    .min()
                    .map(|k| {
                        let what = match (here.get(k), there.get(k)) {
                            (Some(_), None) => "held here, not at central",
                            (None, Some(_)) => "held at central, not here",
                            _ => "held both, differently",
                        };
                        format!(
                            "; first difference: record {} {what}",
                            String::from_utf8_lossy(k).replace('\0', "/")
                        )
                    })
                    .unwrap_or_default();
                self.report.violations.push(format!(
                    "{} differs from central after the quiet round ({} vs {} records){first}",
                    r.code,
                    content.len(),
                    central_content.len()
                ));
            }
        }
        self.report.converged = converged;
        // No register breaks a rule, in central's store (the others equal it).
        let snap = self.central.snapshot()?;
        let central_id = self.central.site().id;
        let schema = retail::schema();
        for def in schema.tables() {
            for rec in snap.scan_raw(def.name(), None, None)? {
                let creator = rec.creator();
                let mut registers: Vec<(&str, &outpost_engine::Register)> =
                    rec.fields.iter().map(|(f, r)| (f.as_str(), r)).collect();
                if let Some(t) = &rec.tombstone {
                    registers.push(("<deleted>", t));
                }
                for (field, reg) in registers {
                    let writer = reg.dot.site;
                    let broken = match def.policy() {
                        Policy::CentralOnly => (writer != central_id).then_some("R3"),
                        Policy::Document { .. } => {
                            (writer != creator && writer != central_id).then_some("R5")
                        }
                        Policy::Shared => None,
                    }
                    .or((def.is_owner_exclusive(field) && writer != creator).then_some("R8"));
                    if let Some(rule) = broken {
                        self.report.violations.push(format!(
                            "{rule} broken in the data: {}/{}.{field} written by site {writer}",
                            def.name(),
                            rec.key
                        ));
                    }
                }
            }
        }
        // Central's refusals as its monitor logs them, by rule (those decided by the
        // replicator, R2's, included).
        let mut cursor: Option<String> = None;
        loop {
            let page = outpost_replicator::monitor::rejections_page(
                &self.central,
                cursor.as_deref(),
                500,
                |_| true,
            )?;
            for r in &page.items {
                *self
                    .report
                    .rejections_by_rule
                    .entry(format!("{:?}", r.rejection.refusal.rule))
                    .or_insert(0) += 1;
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        // No write lost.
        let mut rejected: BTreeSet<(Dot, String, String)> = self
            .central
            .rejections()?
            .into_iter()
            .map(|r| (r.change.dot, r.change.table, r.change.key))
            .collect();
        self.report.rejections = rejected.len() as u64;
        // A shop's creation of a document number another shop's took first, replaced at the
        // shop before it left: refused there (R5), in its own rejection log.
        for r in &self.remotes {
            for rej in r.store.rejections()? {
                rejected.insert((rej.change.dot, rej.change.table, rej.change.key));
            }
        }
        let mut writers: BTreeMap<(String, String, Slot), BTreeSet<SiteId>> = BTreeMap::new();
        let mut lost = 0u64;
        for w in &self.accepted {
            writers
                .entry((w.table.clone(), w.key.clone(), w.slot.clone()))
                .or_default()
                .insert(w.marker.site);
            if !w.kept_in(&snap)? && !rejected.contains(&(w.dot, w.table.clone(), w.key.clone())) {
                lost += 1;
                if lost <= 5 {
                    self.report.violations.push(format!(
                        "write lost: {}/{}.{} by {} at stamp {}",
                        w.table, w.key, w.slot, w.dot, w.marker.stamp
                    ));
                }
            }
        }
        self.report.conflicts = writers.values().filter(|s| s.len() > 1).count() as u64;
        // The journal.
        let rows = journal::rows(&self.central, None, None, None)?;
        self.draw(&rows);
        let by_id: BTreeMap<_, _> = rows.iter().map(|r| (r.id, r)).collect();
        for r in &rows {
            match r.kind {
                FlowKind::Emission => {
                    self.report.emissions += 1;
                    self.report.changes += r.n_changes;
                    // Held for clock skew, then superseded by a later emission of its site
                    // that carried its changes again: never applied, and rightly so.
                    let superseded = r.hold == Hold::Superseded;
                    if r.exec_end_ms.is_none() && !superseded {
                        self.report
                            .violations
                            .push(format!("emission {} never processed", r.id));
                    }
                    if let Some(ret) = r.link
                        && by_id.get(&ret).and_then(|x| x.link) != Some(r.id)
                    {
                        self.report.violations.push(format!(
                            "emission {} and return {ret} do not link each other",
                            r.id
                        ));
                    }
                }
                FlowKind::Return => self.report.returns += 1,
                FlowKind::Bootstrap => {}
            }
            self.report.bytes += r.bytes;
            if r.executions > 1 {
                self.report.executions_over_1 += 1;
            }
        }
        Ok(())
    }
}

//! The world: central and the remotes in in-memory stores, the event queue and its clock, the
//! schedules, and the faults the simulator injects (reinstalls, restores, schedule changes).

use super::*;

impl World {
    pub(super) fn new(cfg: &SimConfig) -> Result<Self, SimError> {
        let mut rng = Rng::new(cfg.seed);
        let central_clock = ManualClock::new(START_MS);
        let mut central_config = StoreConfig::new(
            Site::central(1, "ASOC").map_err(outpost_engine::Error::from)?,
            retail::schema(),
            central_clock.clone(),
        );
        central_config.broken_rules = cfg.broken_rules.clone();
        let central = Store::in_memory(central_config)?;
        let mut config = outpost_replicator::config::seed_example();
        config.remotes.clear();
        let paris: Zone = "Europe/Paris".parse().map_err(|_| bad("zone"))?;
        let day0 = paris.date_at(START_MS);
        let mut kinds = Vec::new();
        for i in 0..cfg.sites {
            let id = u16::try_from(i + 2).map_err(|_| bad("too many sites"))?;
            let zone_name = rng.pick(&ZONES).copied().unwrap_or("UTC");
            let zone: Zone = zone_name.parse().map_err(|_| bad("zone"))?;
            let kind = match rng.below(4) {
                0 => Kind::Fixed,
                1 => Kind::Immediate,
                2 => Kind::NoReturn,
                _ => Kind::Manual,
            };
            let code = format!("S{id:03}");
            let emission = at_of(
                zone,
                paris.instant(day0, hhmm(19 + rng.below(3), rng.below(60))),
            );
            let fetch = at_of(zone, paris.instant(day0, hhmm(0, 30 + rng.below(30))) + DAY);
            // Or the far-away shop's way (M1 across zones): emit in the small hours and fetch
            // the next morning, local time — after central's return of the evening before.
            let (emission, fetch) = if rng.chance(400) {
                (
                    hhmm(1 + rng.below(3), rng.below(60)),
                    hhmm(6 + rng.below(3), rng.below(60)),
                )
            } else {
                (emission, fetch)
            };
            let mut settings = RemoteSettings {
                id: SiteId(id),
                code: code.clone(),
                time_zone: zone_name.to_owned(),
                sync_types: match kind {
                    Kind::Fixed => vec![
                        SyncType::Fixed { emission, fetch },
                        SyncType::Immediate { wait_ms: MINUTE },
                    ],
                    Kind::Immediate | Kind::Manual => vec![SyncType::Immediate { wait_ms: MINUTE }],
                    Kind::NoReturn => vec![SyncType::NoReturn],
                },
                denied_tables: BTreeSet::new(),
            };
            if rng.chance(300) {
                settings.denied_tables.insert("stock_documents".to_owned());
            }
            config.remotes.push(settings);
            // A fixed time that cannot see the common return in this zone: sync immediately.
            let kind = if kind == Kind::Fixed && config.validate().is_err() {
                if let Some(last) = config.remotes.last_mut() {
                    last.sync_types = vec![SyncType::Immediate { wait_ms: MINUTE }];
                }
                Kind::Immediate
            } else {
                kind
            };
            kinds.push((zone, kind));
        }
        config.validate().map_err(|e| bad(&e.to_string()))?;
        central::set_config(&central, &config)?;
        for _ in 0..3 {
            let key = format!("ART-{:04}", rng.below(10_000));
            central.write(|tx| {
                tx.set("articles", &key, "name", format!("article {key}"))?;
                tx.set("articles", &key, "price", price(&mut rng))
            })?;
        }
        let mut remotes = Vec::new();
        let mut report = Report {
            seed: cfg.seed,
            sites: cfg.sites,
            days: cfg.days,
            faults: cfg.faults,
            ..Report::default()
        };
        for (settings, (zone, kind)) in config.remotes.iter().zip(kinds) {
            let skew_ms = skew_of(&mut rng, cfg.faults);
            let clock = ManualClock::new(START_MS.saturating_add_signed(skew_ms));
            let mut remote = set_up_remote(&central, settings, clock, cfg, zone, kind)?;
            remote.skew_ms = skew_ms;
            // M4: an immediate sync can be asked whatever the sync type (fixed-time sites too).
            remote.host_sync = (kind != Kind::Fixed || rng.chance(300))
                .then(|| Daily::new(hhmm(17 + rng.below(3), rng.below(60))));
            report.remotes.push(RemoteSummary {
                code: settings.code.clone(),
                time_zone: settings.time_zone.clone(),
                sync: format!("{kind:?}").to_lowercase(),
                skew_minutes: skew_ms / MINUTE as i64,
            });
            remotes.push(remote);
        }
        let mut automaton =
            CentralAutomaton::new(&config, START_MS).map_err(|e| bad(&e.to_string()))?;
        // Events reach the automaton reliably here; the sweep is only a net for crashes.
        automaton.set_sweep_ms(HOUR);
        let mut world = World {
            cfg: cfg.clone(),
            rng,
            deletes_rng: crate::rng::Rng::new(cfg.seed ^ 0xde1e7e),
            opens_rng: crate::rng::Rng::new(cfg.seed ^ 0x0be4),
            files_rng: crate::rng::Rng::new(cfg.seed ^ 0xf11e),
            imports_rng: crate::rng::Rng::new(cfg.seed ^ 0x1b0a),
            keys_rng: crate::rng::Rng::new(cfg.seed ^ 0x6e3e),
            new_keys: Vec::new(),
            refused_instances: BTreeSet::new(),
            next_instance: 1,
            sticks: HashMap::new(),
            stick_race: None,
            reserved_ahead: None,
            now: START_MS,
            central,
            central_clock,
            central_skew_ms: 0,
            central_was_ahead: false,
            automaton,
            remotes,
            queue: BinaryHeap::new(),
            seq: 0,
            accepted: Vec::new(),
            commit_time: HashMap::new(),
            newest_own: HashMap::new(),
            liveness: Liveness::default(),
            last_commit: HashMap::new(),
            staleness: BTreeMap::new(),
            report,
            central_wake: u64::MAX,
            central_backup: None,
            central_restored_backups: Vec::new(),
        };
        world.plan_days();
        for i in 0..world.remotes.len() {
            world.reschedule_remote(i);
        }
        world.reschedule_central();
        Ok(world)
    }

    /// Shop `i`'s workload, staleness samples and deletes, from `from` to the end of the run.
    fn plan_shop_days(&mut self, i: usize, from: u64, rng: &mut Rng, deletes: &mut Rng) {
        let end = START_MS + u64::from(self.cfg.days) * DAY;
        let zone = self.remotes[i].zone;
        let mut day = zone.date_at(from);
        loop {
            let noon = zone.instant(day, hhmm(12, 0));
            if noon >= end {
                break;
            }
            let n_ops = 3 + rng.below(6);
            for _ in 0..n_ops {
                let t = zone.instant(day, hhmm(9 + rng.below(10), rng.below(60)));
                if t >= from && t < end {
                    self.push(t, Event::Workload(i));
                }
            }
            if noon >= from {
                self.push(noon, Event::Noon(i));
            }
            // About one shop day in seven, a delete.
            if deletes.chance(150) {
                let hour = 9 + deletes.below(10);
                let t = zone.instant(day, hhmm(hour, deletes.below(60)));
                if t >= from && t < end {
                    self.push(t, Event::Delete(i));
                }
            }
            day = match day.succ_opt() {
                Some(d) => d,
                None => break,
            };
        }
    }

    /// A shop opens (`central add-remote`): central adds it to its configuration and writes its
    /// bootstrap, the shop is set up from it, and works from now on like the others — in
    /// Paris, syncing immediately after each commit and at the end of the day.
    pub(super) fn open(&mut self) -> Result<(), SimError> {
        let i = self.remotes.len();
        let id = u16::try_from(i + 2).map_err(|_| bad("too many sites"))?;
        let code = format!("S{id:03}");
        let zone_name = "Europe/Paris";
        let zone: Zone = zone_name.parse().map_err(|_| bad("zone"))?;
        let mut config =
            central::config(&self.central)?.ok_or_else(|| bad("central lost its configuration"))?;
        let settings = RemoteSettings {
            id: SiteId(id),
            code: code.clone(),
            time_zone: zone_name.to_owned(),
            sync_types: vec![SyncType::Immediate { wait_ms: MINUTE }],
            denied_tables: BTreeSet::new(),
        };
        config.remotes.push(settings.clone());
        central::set_config(&self.central, &config)?;
        self.automaton
            .reconfigure(&config)
            .map_err(|e| bad(&e.to_string()))?;
        let clock = ManualClock::new(self.now);
        let mut remote = set_up_remote(
            &self.central,
            &settings,
            clock,
            &self.cfg,
            zone,
            Kind::Immediate,
        )?;
        let close = self.opens_rng.below(6);
        remote.host_sync = Some(Daily::new(hhmm(17 + self.opens_rng.below(3), close * 10)));
        self.report.remotes.push(RemoteSummary {
            code,
            time_zone: zone_name.to_owned(),
            sync: "immediate".to_owned(),
            skew_minutes: 0,
        });
        self.remotes.push(remote);
        let mut rng = std::mem::replace(&mut self.opens_rng, Rng::new(0));
        let mut deletes = Rng::new(rng.next_u64());
        self.plan_shop_days(i, self.now, &mut rng, &mut deletes);
        self.opens_rng = rng;
        self.reschedule_remote(i);
        *self
            .report
            .faults_injected
            .entry("shop_opened".to_owned())
            .or_insert(0) += 1;
        Ok(())
    }

    pub(super) fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, event)));
    }

    /// Each remote's workload, its host syncs and a staleness sample, day by day; central's
    /// price edits.
    pub(super) fn plan_days(&mut self) {
        let end = START_MS + u64::from(self.cfg.days) * DAY;
        for i in 0..self.remotes.len() {
            let mut rng = std::mem::replace(&mut self.rng, Rng::new(0));
            let mut deletes = std::mem::replace(&mut self.deletes_rng, Rng::new(0));
            self.plan_shop_days(i, START_MS, &mut rng, &mut deletes);
            self.rng = rng;
            self.deletes_rng = deletes;
        }
        // Now and then a shop opens during the run: a generator of its own.
        if self.opens_rng.chance(150) && self.cfg.days > 1 {
            let t = START_MS + DAY / 2 + self.opens_rng.below(end - START_MS - DAY);
            self.push(t, Event::Open);
        }
        let mut t = START_MS + 9 * HOUR;
        while t < end {
            self.push(t, Event::CentralPrices);
            t += DAY;
        }
        let span = end - START_MS;
        // Central changes a shop's permissions now and then: a generator of its own.
        let mut grants = crate::rng::Rng::new(self.cfg.seed ^ 0x9e41);
        for i in 0..self.remotes.len() {
            if grants.chance(150) {
                self.push(START_MS + grants.below(span), Event::Permissions(i));
            }
        }
        // Now and then central's clock runs a day ahead from early one morning (central's
        // price edit of 9:00 is stamped with it) for some hours, and is set right: a generator
        // of its own.
        let mut ahead = crate::rng::Rng::new(self.cfg.seed ^ 0xc10c);
        if self.cfg.faults && ahead.chance(150) {
            let day = ahead.below(u64::from(self.cfg.days));
            let from = START_MS + day * DAY + 6 * HOUR + ahead.below(3 * HOUR);
            let until = from + 3 * HOUR + ahead.below(12 * HOUR);
            if until < end {
                self.push(from, Event::CentralClock(i64::try_from(DAY).unwrap_or(0)));
                self.push(until, Event::CentralClock(0));
                // Half the time a shop's clock follows it (the same wrong time server), and
                // stays ahead after central's is set right: a generator of its own.
                let mut follows = crate::rng::Rng::new(self.cfg.seed ^ 0x5e1f);
                if follows.chance(500) && !self.remotes.is_empty() {
                    let i = usize::try_from(follows.below(self.remotes.len() as u64)).unwrap_or(0);
                    let at = from + follows.below(until - from);
                    self.push(at, Event::ShopClock(i, i64::try_from(DAY).unwrap_or(0)));
                    // The shop corrects what it keyed in while both clocks ran ahead (central
                    // takes it), and once central's clock is right again, corrects it again,
                    // its own clock still ahead (R2: held, restamped; the second correction
                    // must still win over the first, which the other sites hold).
                    let first = at + 10 * MINUTE;
                    let again = until + 10 * MINUTE + follows.below(3 * HOUR);
                    if first < until && again < end {
                        self.push(first, Event::Retype(i));
                        self.push(again, Event::Retype(i));
                    }
                }
            }
        }
        for i in 0..self.remotes.len() {
            if self.remotes[i].kind == Kind::Fixed && self.rng.chance(400) {
                let t = START_MS + self.rng.below(span);
                self.push(t, Event::ScheduleChange(i));
            }
            if self.cfg.faults && self.rng.chance(60) {
                let t = START_MS + self.rng.below(span);
                self.push(t, Event::Reinstall(i));
            }
            if self.cfg.faults && self.rng.chance(60) {
                let backup = START_MS + self.rng.below(span);
                let restore = backup + self.rng.below(START_MS + span - backup);
                self.push(backup, Event::Backup(i));
                self.push(restore, Event::Restore(i));
            }
            if self.cfg.faults && self.rng.chance(80) {
                let t = START_MS + self.rng.below(span);
                self.push(t, Event::Close(i));
            }
        }
        // Now and then a shop's machine is switched off every night from some day on, asleep at
        // its fixed fetch time ([`Remote::asleep`]): a generator of its own.
        let mut night = crate::rng::Rng::new(self.cfg.seed ^ 0x51ee);
        if self.cfg.faults && night.chance(100) {
            let fixed: Vec<usize> = (0..self.remotes.len())
                .filter(|&i| self.remotes[i].kind == Kind::Fixed)
                .collect();
            let from = START_MS + night.below(span);
            if let Some(&i) = night.pick(&fixed) {
                self.remotes[i].asleep = Some(from);
                *self
                    .report
                    .faults_injected
                    .entry("machine_asleep_at_its_fetch_time".to_owned())
                    .or_insert(0) += 1;
            }
        }
        // Central's disk dies once in a while; the backup put back is up to three days old.
        let mut central_restore = None;
        if self.cfg.faults && self.rng.chance(250) {
            let backup = START_MS + self.rng.below(span);
            let restore = backup + self.rng.below((START_MS + span - backup).min(3 * DAY));
            self.push(backup, Event::CentralBackup);
            // Now and then central is lost twice more (a generator of its own): the restored
            // central is backed up within weeks, lost again within days and that backup put
            // back, then a day later (the machine it was restored to failed too) the same
            // backup put back a second time, or, half the time, the older backup of the first
            // restore. The newer backup's numbers are already past the time (the first restore
            // jumped them there): the last restore must still number past what the central
            // restored from it issued.
            let mut twice = crate::rng::Rng::new(self.cfg.seed ^ 0x2e57);
            let again = twice.chance(300);
            // Put back early in the morning, lost again the next morning: central's price write
            // of 9:00 and the shops' syncs of a day fall in between.
            let backup2 = restore + HOUR + twice.below(20 * DAY);
            let day = (backup2 + twice.below(3 * DAY) - START_MS) / DAY;
            let mut restore2 = START_MS + day * DAY + 7 * HOUR + twice.below(2 * HOUR);
            if restore2 <= backup2 {
                restore2 += DAY;
            }
            let restore3 = restore2 + DAY + twice.below(3 * HOUR);
            let older = twice.chance(500);
            let again = again && restore3 < end;
            self.push(restore, Event::CentralRestore(again && older));
            if again {
                self.push(backup2, Event::CentralBackup);
                self.push(restore2, Event::CentralRestore(!older));
                self.push(restore3, Event::CentralRestoreAgain(older));
            }
            central_restore = Some(restore);
            // Half the time the same trouble takes a shop's disk too, preferably a shop that
            // syncs at a fixed time: its store is put back from a backup up to a day older
            // than central's loss, a few hours after central's restore, and it keys in again
            // what it remembers — before its next sync it may number more new changes than it
            // had lost, as the lost ones (R1).
            if !self.remotes.is_empty() && self.rng.chance(500) {
                let fixed: Vec<usize> = (0..self.remotes.len())
                    .filter(|&i| self.remotes[i].kind == Kind::Fixed)
                    .collect();
                let shop = match self.rng.pick(&fixed) {
                    Some(&i) => i,
                    None => usize::try_from(self.rng.below(self.remotes.len() as u64)).unwrap_or(0),
                };
                let shop_backup = restore.saturating_sub(self.rng.below(DAY)).max(backup);
                let shop_restore = restore + self.rng.below(6 * HOUR);
                if shop_restore < end {
                    self.push(shop_backup, Event::Backup(shop));
                    self.push(shop_restore, Event::Restore(shop));
                    // The shop keys in again what it remembers of the lost work; now and then a
                    // till holds one of those documents reserved (R7), so that its writes are
                    // held back from the shop's next emission. Drawn from a generator of its
                    // own: the rest of the run draws as before.
                    let mut tills = crate::rng::Rng::new(self.cfg.seed ^ 0x5237);
                    // Now and then it corrects what it has just keyed in ([`Event::Retype`]):
                    // its own generator too.
                    let mut typos = crate::rng::Rng::new(self.cfg.seed ^ 0x7e7e);
                    for k in 1..=4 + self.rng.below(12) {
                        let t = shop_restore + k * 5 * MINUTE;
                        if t < end {
                            self.push(t, Event::Workload(shop));
                            if tills.chance(500) {
                                self.push(t + 2 * MINUTE, Event::HeldEdit(shop));
                            }
                            if typos.chance(300) {
                                self.push(t + MINUTE, Event::Retype(shop));
                            }
                        }
                    }
                }
            }
        }
        // Now and then a shop's clock runs a day ahead just after it numbers a document, which a
        // till reserves ([`Event::ReservedAhead`]): a generator of its own.
        let mut ahead = crate::rng::Rng::new(self.cfg.seed ^ 0x4e5d);
        if self.cfg.faults && ahead.chance(300) && !self.remotes.is_empty() {
            let i = usize::try_from(ahead.below(self.remotes.len() as u64)).unwrap_or(0);
            let day = ahead.below(u64::from(self.cfg.days));
            let t0 = START_MS + day * DAY + 10 * HOUR + ahead.below(6 * HOUR);
            if t0 + 10 * MINUTE < end {
                self.push(t0, Event::ReservedAhead(i, 0));
                self.push(t0 + 2 * MINUTE, Event::ReservedAhead(i, 1));
            }
        }
        // Now and then a manual shop's clock runs two minutes past the bound, and its next
        // emission is on the stick while it is restamped ([`Event::StickRace`]): half the time
        // the stick reaches central before the shop's edit, half the time after; when central
        // is put back from a backup in the run, half the time while its restore is under way.
        // The same at a network shop, its next emission in its outbox while central is out of
        // its reach. Each a generator of its own.
        for (salt, manual) in [(0x571c, true), (0x0b0c, false)] {
            let mut race = crate::rng::Rng::new(self.cfg.seed ^ salt);
            if !self.cfg.faults || !race.chance(300) {
                continue;
            }
            let shops: Vec<usize> = (0..self.remotes.len())
                .filter(|&i| (self.remotes[i].kind == Kind::Manual) == manual)
                .collect();
            let day = race.below(u64::from(self.cfg.days));
            let mut t0 = START_MS + day * DAY + 10 * HOUR + race.below(6 * HOUR);
            let shop = race.pick(&shops).copied();
            let after_restore = race.chance(500);
            let later = race.below(2 * HOUR);
            let edit_first = race.chance(500);
            if let Some(restore) = central_restore
                && after_restore
            {
                t0 = restore + 5 * MINUTE + later;
            }
            if let Some(i) = shop
                && t0 + 10 * MINUTE < end
            {
                let offsets = [
                    0,
                    MINUTE,
                    MINUTE + MINUTE / 2,
                    2 * MINUTE + MINUTE / 2,
                    4 * MINUTE,
                ];
                for (step, offset) in (0u8..).zip(offsets) {
                    self.push(t0 + offset, Event::StickRace(i, step, edit_first));
                }
            }
        }
    }

    pub(super) fn set_time(&mut self, t: u64) {
        self.now = t;
        self.central_clock
            .set(t.saturating_add_signed(self.central_skew_ms));
        for r in &self.remotes {
            r.clock.set(t.saturating_add_signed(r.skew_ms));
        }
    }

    pub(super) fn reschedule_remote(&mut self, i: usize) {
        let r = &self.remotes[i];
        let local_now = self.now.saturating_add_signed(r.skew_ms);
        let mut next_local = r.executor.next_wakeup_ms(local_now);
        if let Some(job) = &r.host_sync {
            next_local = next_local.min(job.next_due(r.zone, local_now));
        }
        let next = self.awake_at(
            i,
            next_local
                .saturating_add_signed(-r.skew_ms)
                .max(self.now + 1),
        );
        if next != self.remotes[i].next_wake {
            self.remotes[i].next_wake = next;
            self.push(next, Event::RemoteWake(i));
        }
    }

    /// When remote `i`'s machine is awake at or after `t` (UTC ms): `t`, unless it is switched
    /// off for the night then ([`Remote::asleep`]).
    fn awake_at(&self, i: usize, t: u64) -> u64 {
        let r = &self.remotes[i];
        let fetch = r
            .executor
            .schedule()
            .sync_types
            .iter()
            .find_map(|t| match t {
                SyncType::Fixed { fetch, .. } => Some(*fetch),
                _ => None,
            });
        let (Some(from), Some(fetch)) = (r.asleep, fetch) else {
            return t;
        };
        if t < from {
            return t;
        }
        let zone = r.executor.schedule().zone;
        let local = t.saturating_add_signed(r.skew_ms);
        let today = zone.date_at(local);
        // The night before a fetch just after midnight starts the day before.
        for day in [today.pred_opt(), Some(today), today.succ_opt()]
            .into_iter()
            .flatten()
        {
            let off = zone.instant(day, fetch).saturating_sub(HOUR);
            if (off..off + 10 * HOUR).contains(&local) {
                return (off + 10 * HOUR).saturating_add_signed(-r.skew_ms);
            }
        }
        t
    }

    pub(super) fn reschedule_central(&mut self) {
        let next = self.automaton.next_wakeup_ms(self.now).max(self.now + 1);
        if next != self.central_wake {
            self.central_wake = next;
            self.push(next, Event::CentralWake);
        }
    }

    pub(super) fn run(&mut self, progress: &mut dyn FnMut(u32)) -> Result<(), SimError> {
        let end = START_MS + u64::from(self.cfg.days) * DAY;
        let mut days_done = 0u32;
        while let Some(Reverse((t, _, event))) = self.queue.pop() {
            if t >= end {
                break;
            }
            let day = u32::try_from((t - START_MS) / DAY).unwrap_or(u32::MAX);
            if day > days_done {
                days_done = day;
                progress(day);
            }
            self.set_time(t);
            if event.remote().is_some_and(|i| self.remotes[i].closed) {
                continue;
            }
            match event {
                Event::Workload(i) => self.workload(i)?,
                Event::RemoteWake(i) => {
                    if self.remotes[i].next_wake != t {
                        continue;
                    }
                    self.remotes[i].next_wake = u64::MAX;
                    self.wake_remote(i)?;
                    self.reschedule_remote(i);
                }
                Event::CentralWake => {
                    if self.central_wake != t {
                        continue;
                    }
                    self.central_wake = u64::MAX;
                    let cmds = self.automaton.on_time(t);
                    self.run_central(cmds)?;
                }
                Event::Noon(i) => {
                    self.sample_staleness(i);
                    self.check_liveness(i)?;
                }
                Event::CentralPrices => self.central_prices()?,
                Event::ScheduleChange(i) => self.schedule_change(i)?,
                Event::Reinstall(i) => self.reinstall(i)?,
                Event::Backup(i) => {
                    let config = self.remote_config(i);
                    let copy = self.remotes[i].store.copy_in_memory(config)?;
                    self.remotes[i].backup = Some(copy);
                }
                Event::Restore(i) => self.restore(i)?,
                Event::Close(i) => self.close(i)?,
                Event::HeldEdit(i) => self.held_edit(i)?,
                Event::Retype(i) => self.retype(i)?,
                Event::Delete(i) => self.delete(i)?,
                Event::Permissions(i) => self.permissions(i)?,
                Event::CentralBackup => {
                    let copy = self.central.copy_in_memory(self.central_config())?;
                    self.central_backup = Some(copy);
                }
                Event::CentralRestore(keep) => {
                    if keep && let Some(backup) = &self.central_backup {
                        let config = self.central_config();
                        let copy = backup.copy_in_memory(config)?;
                        self.central_restored_backups.push(copy);
                    }
                    self.restore_central()?;
                }
                Event::CentralRestoreAgain(older) => {
                    if let Some(backup) = self.central_restored_backups.pop() {
                        self.central_backup = Some(backup);
                        self.restore_central()?;
                        let fault = if older {
                            "central_restored_from_an_older_backup_after_a_newer"
                        } else {
                            "central_restored_twice_from_one_backup"
                        };
                        *self
                            .report
                            .faults_injected
                            .entry(fault.to_owned())
                            .or_insert(0) += 1;
                    }
                }
                Event::Open => self.open()?,
                Event::CentralClock(skew_ms) => {
                    self.central_skew_ms = skew_ms;
                    self.central_was_ahead |= skew_ms > 0;
                    self.set_time(t);
                    if skew_ms != 0 {
                        *self
                            .report
                            .faults_injected
                            .entry("central_clock_ahead".to_owned())
                            .or_insert(0) += 1;
                    }
                }
                Event::RemoveAgain(i) => self.remove_again(i)?,
                Event::StickRace(i, step, edit_first) => self.stick_race(i, step, edit_first)?,
                Event::ReservedAhead(i, step) => self.reserved_ahead(i, step)?,
                Event::AskSync(i) => {
                    let (r, mut net) = self.net(i);
                    let run = r.executor.request_sync(
                        &r.store,
                        &mut net,
                        SyncAsk::Immediate { wait_ms: None },
                    )?;
                    if let Some(why) = carried(run)? {
                        self.reprovision_refused(i, &why)?;
                    }
                    self.reschedule_remote(i);
                }
                Event::ShopClock(i, skew_ms) => {
                    self.shop_clock_ahead(i, skew_ms, "shop_clock_follows_central_ahead");
                    self.reschedule_remote(i);
                }
            }
            self.reschedule_central();
        }
        self.set_time(end);
        Ok(())
    }

    pub(super) fn wake_remote(&mut self, i: usize) -> Result<(), SimError> {
        let local_now = self.remotes[i].clock.now_ms();
        let zone = self.remotes[i].zone;
        let host_due = self.remotes[i]
            .host_sync
            .as_mut()
            .is_some_and(|j| j.take_due(zone, local_now));
        let (r, mut net) = self.net(i);
        let mut run = r.executor.on_time(&r.store, &mut net)?;
        if host_due {
            // A no-return site sometimes asks for an immediate sync too (M4): it gets a return.
            let ask = if r.kind == Kind::NoReturn && r.key_seq % 2 == 0 {
                SyncAsk::NoReturn
            } else {
                SyncAsk::Immediate { wait_ms: None }
            };
            run.extend(r.executor.request_sync(&r.store, &mut net, ask)?);
        }
        if let Some(why) = carried(run)? {
            self.reprovision_refused(i, &why)?;
        }
        Ok(())
    }

    /// Remote `i` and the in-memory network to central.
    pub(super) fn net(&mut self, i: usize) -> (&mut Remote, SimNet<'_>) {
        let World {
            remotes,
            central,
            automaton,
            rng,
            report,
            cfg,
            files_rng,
            imports_rng,
            sticks,
            central_clock,
            central_was_ahead,
            now,
            liveness,
            ..
        } = self;
        let r = &mut remotes[i];
        let stick = sticks.entry(i).or_default();
        let net = SimNet {
            central,
            automaton,
            rng,
            report,
            faults: cfg.faults,
            manual: r.kind == Kind::Manual,
            code: r.code.clone(),
            files_rng,
            imports_rng,
            offline: stick.offline_until > *now,
            stick,
            central_now_ms: central_clock.now_ms(),
            watch_ahead: !*central_was_ahead,
            not_yet: false,
            liveness,
            now: *now,
        };
        (r, net)
    }

    pub(super) fn execute(
        &mut self,
        i: usize,
        commands: Vec<RemoteCommand>,
    ) -> Result<(), SimError> {
        let (r, mut net) = self.net(i);
        let run = r.executor.carry_out(&r.store, &mut net, commands)?;
        if let Some(why) = carried(run)? {
            self.reprovision_refused(i, &why)?;
        }
        Ok(())
    }

    /// Central refused remote `i`'s store (restored from a backup whose first emission since was
    /// the same as one central had): the person responsible reprovisions the site and sets it up
    /// again from the new bootstrap (docs/OPERATIONS.md). What the refused store made and central
    /// does not hold is in the refused store only (listed refused at central, with why).
    pub(super) fn reprovision_refused(&mut self, i: usize, why: &str) -> Result<(), SimError> {
        let site = self.remotes[i].store.site().id;
        self.note_refused(i, why);
        // Its writes central did not take were refused with it, loudly.
        self.refused_instances.insert((i, self.remotes[i].instance));
        if !central::refused_flows(&self.central)?
            .iter()
            .any(|f| f.sender == Some(site))
        {
            self.violation(format!(
                "{}'s store was refused with no refused flow listed",
                self.remotes[i].code
            ));
        }
        self.forget_what_central_lacks(site)?;
        let store = self.reprovisioned(i)?;
        self.put_in_place(i, store)?;
        *self
            .report
            .faults_injected
            .entry("reprovisioned_after_refusal".to_owned())
            .or_insert(0) += 1;
        Ok(())
    }

    pub(super) fn run_central(&mut self, commands: Vec<Command>) -> Result<(), SimError> {
        if !commands.is_empty() {
            let run = run_central(&self.central, &mut self.automaton, commands)?;
            self.liveness.returns_made(&run, self.now);
            // M2: an immediate emission the sweep processed (cut off by a crash before) is
            // answered at once too.
            for id in &run.processed {
                let Some(row) = journal::row(&self.central, *id)? else {
                    continue;
                };
                if row.mode == SyncMode::Immediate
                    && matches!(row.hold, Hold::None)
                    && !run.returns.iter().any(|(site, _)| *site == id.site)
                {
                    self.violation(format!(
                        "immediate emission {id} was processed by the sweep and answered by \
                         no return (M2)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Central refused remote `i`'s store for `why` (R1).
    pub(super) fn note_refused(&mut self, i: usize, why: &str) {
        let code = &self.remotes[i].code;
        self.report.refused_stores.push(format!("{code}: {why}"));
    }

    pub(super) fn violation(&mut self, what: String) {
        self.report.violations.push(what);
    }

    pub(super) fn record(&mut self, changes: &[outpost_engine::Change]) {
        if let Some(first) = changes.first() {
            let places = changes
                .iter()
                .map(|c| (c.table.clone(), c.key.clone(), c.slot.clone()))
                .collect();
            self.last_commit.insert(first.dot.site, places);
        }
        for c in changes {
            self.commit_time.entry(c.dot).or_insert(self.now);
            let newest = self.newest_own.entry(c.dot.site).or_insert(0);
            *newest = (*newest).max(c.dot.seq);
            self.accepted.push(Accepted {
                table: c.table.clone(),
                key: c.key.clone(),
                slot: c.slot.clone(),
                marker: c.marker(),
                dot: c.dot,
                at_central: false,
            });
        }
        self.report.writes += 1;
        if changes.iter().any(|c| c.slot == Slot::Tombstone) {
            self.report.deletes += 1;
        }
    }

    /// The person responsible reads the journal: a remote whose emissions central holds for
    /// clock skew ("quarantined") has its clock set right, and its unacknowledged writes are
    /// stamped again (`outpost remote restamp`).
    /// `recent`: the person responsible reads the last [`JOURNAL_LOOK_BACK`] of the journal (a
    /// remote whose clock is wrong has each of its emissions held, a new one every day), on the
    /// monitor's time index; otherwise the whole journal (the quiet round at the end).
    /// Whether an emission is held (from before its clock was set right, or until the next
    /// one of its remote supersedes it).
    pub(super) fn set_quarantined_clocks_right(&mut self, recent: bool) -> Result<bool, SimError> {
        // Held, then perhaps superseded since. While central is restored from a backup, an
        // emission made before its remote heard of the restore may be held (its changes may
        // follow central's lost ones): the next one supersedes it, and no clock is set right.
        let quarantined = |r: &journal::JournalRow| !matches!(r.hold, Hold::None);
        let restoring = |r: &journal::JournalRow| {
            r.error
                .as_deref()
                .is_some_and(|e| e.contains(central::HELD_IN_RESTORE))
        };
        let mut held_once = BTreeSet::new();
        let mut held = BTreeSet::new();
        let mut holding = false;
        let mut note = |r: &journal::JournalRow| {
            holding |= matches!(r.hold, Hold::Quarantined { .. });
            if restoring(r) {
                return;
            }
            held_once.insert(r.site);
            if matches!(r.hold, Hold::Quarantined { .. }) {
                held.insert(r.site);
            }
        };
        if recent {
            let from = self.now.saturating_sub(JOURNAL_LOOK_BACK);
            let mut cursor: Option<String> = None;
            loop {
                let page = outpost_replicator::monitor::journal_page(
                    &self.central,
                    Some(from),
                    None,
                    cursor.as_deref(),
                    500,
                    quarantined,
                )?;
                page.items.iter().for_each(&mut note);
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        } else {
            journal::rows(&self.central, None, None, None)?
                .iter()
                .filter(|r| quarantined(r))
                .for_each(&mut note);
        }
        for i in 0..self.remotes.len() {
            // R2: a shop whose clock was never ahead beyond the bound is never held, whatever
            // central's own clock did (a shop that took central's stamps while central's clock
            // ran ahead stamps its writes after them).
            let bound_min = self.central.skew_ms_max() / MINUTE;
            if held_once.contains(&self.remotes[i].store.site().id)
                && self
                    .report
                    .remotes
                    .get(i)
                    .is_some_and(|r| r.skew_minutes <= i64::try_from(bound_min).unwrap_or(0))
            {
                let code = self.remotes[i].code.clone();
                self.violation(format!(
                    "central held an emission of {code} for clock skew, though {code}'s clock \
                     was never ahead"
                ));
            }
            if !held.contains(&self.remotes[i].store.site().id) || self.remotes[i].closed {
                continue;
            }
            // The procedure (docs/OPERATIONS.md): the clock set right if it is not, then
            // `restamp` — also when the clock is right already: a store put back from a backup
            // taken while its clock ran ahead holds writes stamped ahead of it.
            let fault = if self.remotes[i].skew_ms == 0 {
                "restamped_after_quarantine_clock_right"
            } else {
                "clock_set_right_after_quarantine"
            };
            self.remotes[i].skew_ms = 0;
            self.remotes[i].clock.set(self.now);
            let before = self.remotes[i].store.knowledge();
            if outpost_replicator::remote::restamp(&self.remotes[i].store)? == 0
                && fault == "restamped_after_quarantine_clock_right"
            {
                continue;
            }
            self.follow_restamp(i, &before)?;
            *self
                .report
                .faults_injected
                .entry(fault.to_owned())
                .or_insert(0) += 1;
            self.reschedule_remote(i);
        }
        Ok(holding)
    }

    /// The writes of remote `i` that its restamp stamped again (their dots new to `before`, its
    /// knowledge before the restamp) are checked against their new stamps from here on.
    fn follow_restamp(
        &mut self,
        i: usize,
        before: &outpost_engine::Knowledge,
    ) -> Result<(), SimError> {
        // The writes stamped again are checked against their new stamps.
        let store = &self.remotes[i].store;
        let site = store.site().id;
        for w in self.accepted.iter_mut().filter(|w| w.dot.site == site) {
            let Some(raw) = store.snapshot()?.raw_record(&w.table, &w.key)? else {
                continue;
            };
            let now = match &w.slot {
                Slot::Created => Some((
                    Marker {
                        stamp: raw.created.stamp,
                        site: raw.created.site(),
                        seq: raw.created.dot.seq,
                    },
                    raw.created.dot,
                )),
                Slot::Tombstone => raw.tombstone.map(|r| (r.marker(), r.dot)),
                Slot::Field(f) => raw.fields.get(f).map(|r| (r.marker(), r.dot)),
            };
            // Its new dot too: a change central refuses is logged under the dot it came with.
            // Stamped again from the clock as it is, its stamp may be later than before:
            // after central's stamps from a clock ahead, a remote's clock reads after them.
            // Only the commit the restamp made: not a later write of the shop's own.
            if let Some((m, dot)) = now
                && m.site == site
                && !before.contains(dot)
            {
                w.marker = m;
                w.dot = dot;
                w.at_central = false;
            }
        }
        Ok(())
    }

    /// Remote `i`'s clock runs `skew_ms` ahead of the time from now on (the report keeps the
    /// largest skew each remote had, for the check of emissions held though a clock was never
    /// ahead), counted as the fault `fault`.
    fn shop_clock_ahead(&mut self, i: usize, skew_ms: i64, fault: &str) {
        self.remotes[i].skew_ms = skew_ms;
        self.set_time(self.now);
        if let Some(r) = self.report.remotes.get_mut(i) {
            r.skew_minutes = r.skew_minutes.max(skew_ms / MINUTE as i64);
        }
        *self
            .report
            .faults_injected
            .entry(fault.to_owned())
            .or_insert(0) += 1;
    }

    /// One step of [`Event::StickRace`] at manual remote `i`, after the reliability test
    /// `r2_an_emission_on_its_way_when_its_shop_restamps_leaves_no_difference_of_values`:
    /// 0. its clock runs two minutes past central's bound; it edits a customer's city and
    ///    emits: central holds the emission (quarantined);
    /// 1. a minute on, the person responsible sets its clock right; the shop writes its next
    ///    emission, carrying the held write, to the stick (a network shop: central is out of
    ///    its reach for two minutes, and the emission waits in its outbox);
    /// 2. half a minute on, the shop is restamped (the held write, half a minute past the bound
    ///    now, stamped anew);
    /// 3. a minute on, the stick reaches central (a network shop: central is back and the shop
    ///    syncs, its outbox first): the old write is within the bound now, taken;
    /// 4. a minute and a half on, the shop edits the same city again, stamped before the old
    ///    write: central keeps the old write and must return the edit refused (R2).
    ///
    /// With `edit_first`, steps 3 and 4 the other way round: at step 3 the shop edits and emits,
    /// and the stick comes in right after that emission (as a late file does); step 4 brings it
    /// if that emission did not reach central. Central learns from the edit's emission that the
    /// shop knows the old write and takes nothing of the stick — unless central is being put
    /// back from a backup and does not trust that yet: then the old write wins at central and
    /// its returns, judged anew, carry it to the shop too
    /// (`r1_r2_an_old_write_carried_in_after_its_site_s_later_edit_leaves_no_difference_of_values`).
    /// At a network shop the outbox always goes first: step 3 sends it, then the edit's
    /// emission, and step 4 has nothing left to bring. An emission of step 0 still in its outbox
    /// at step 1 (cut, or deferred by central's restore) is the one that waits there.
    ///
    /// A step that cannot be played as planned (a shop whose clock is off already, one with no
    /// customer, one busy with another file on its stick) ends the sequence; what the random
    /// faults make of its emissions is part of the run — lost, cut or deferred (central's
    /// restore), step 0's emission may not be held, and the shop is restamped all the same.
    pub(super) fn stick_race(
        &mut self,
        i: usize,
        step: u8,
        edit_first: bool,
    ) -> Result<(), SimError> {
        if step > 0 && self.stick_race.as_ref().is_none_or(|(r, _)| *r != i) {
            return Ok(());
        }
        match step {
            // A shop whose clock is off already (another fault) is left to that one.
            0 if self.remotes[i].skew_ms != 0 => {}
            0 => {
                let customers =
                    self.remotes[i]
                        .store
                        .snapshot()?
                        .scan("customers", None, Some(200))?;
                let n = customers.len().max(1) as u64;
                let pick = usize::try_from((self.now / MINUTE) % n).unwrap_or(0);
                let Some(key) = customers.get(pick).map(|c| c.key.clone()) else {
                    return Ok(());
                };
                let skew = self.central.skew_ms_max() + 2 * MINUTE;
                let skew = i64::try_from(skew).unwrap_or(i64::MAX);
                self.shop_clock_ahead(i, skew, "clock_just_past_the_bound");
                let city = format!("stamped ahead at {}", self.remotes[i].code);
                let result = self.remotes[i]
                    .store
                    .write_commit(|tx| tx.set("customers", &key, "city", city.as_str()));
                self.legitimate(i, "an edit two minutes past the bound", result);
                self.stick_race = Some((i, key));
                self.execute(i, vec![RemoteCommand::Emit(SyncMode::NoReturn)])?;
            }
            1 => {
                // Set right — unless another fault moved it meanwhile (left to that one).
                let skew = self.central.skew_ms_max() + 2 * MINUTE;
                if self.remotes[i].skew_ms == i64::try_from(skew).unwrap_or(i64::MAX) {
                    self.remotes[i].skew_ms = 0;
                    self.set_time(self.now);
                }
                let manual = self.remotes[i].kind == Kind::Manual;
                let stick = self.sticks.entry(i).or_default();
                if stick.emission.is_some() {
                    self.stick_race = None;
                } else {
                    if manual {
                        stick.carry_next = true;
                    } else {
                        // Central out of the shop's reach until step 3.
                        stick.offline_until = self.now + 2 * MINUTE;
                    }
                    self.execute(i, vec![RemoteCommand::Emit(SyncMode::NoReturn)])?;
                    let stick = self.sticks.entry(i).or_default();
                    let on_its_way = if manual {
                        !std::mem::take(&mut stick.carry_next) && stick.emission.is_some()
                    } else {
                        !stick.outbox.is_empty()
                    };
                    if !on_its_way {
                        self.stick_race = None;
                    }
                }
            }
            2 => {
                let before = self.remotes[i].store.knowledge();
                if outpost_replicator::remote::restamp(&self.remotes[i].store)? > 0 {
                    self.follow_restamp(i, &before)?;
                    let fault = if self.remotes[i].kind == Kind::Manual {
                        "restamped_with_an_emission_on_the_stick"
                    } else {
                        "restamped_with_an_emission_in_the_outbox"
                    };
                    *self
                        .report
                        .faults_injected
                        .entry(fault.to_owned())
                        .or_insert(0) += 1;
                }
            }
            3 if edit_first => {
                // The edit, and its emission: the stick comes in right after it. At a network
                // shop the outbox goes first.
                self.edit_after_the_restamp(i)?;
                self.sticks.entry(i).or_default().offline_until = 0;
                self.execute(i, vec![RemoteCommand::Emit(SyncMode::NoReturn)])?;
            }
            3 => self.bring_the_stick(i)?,
            _ if edit_first => {
                // The stick, if the emission before it did not reach central (cut, lost).
                self.stick_race = None;
                if self.remotes[i].kind == Kind::Manual {
                    self.bring_the_stick(i)?;
                }
            }
            _ => {
                self.edit_after_the_restamp(i)?;
                self.stick_race = None;
            }
        }
        self.reschedule_remote(i);
        Ok(())
    }

    /// One step of [`Event::ReservedAhead`] at remote `i`, after the reliability test
    /// `r2_r7_a_shop_s_commit_written_over_in_a_reserved_document_vouches_for_no_stamp_ahead`.
    /// Step 0 is skipped for a shop whose clock is off already (another fault), and step 1
    /// then too. What the random faults make of the emissions is part of the run; the shop's
    /// clock is set right and it is restamped once central holds an emission of it (the
    /// person responsible's daily round).
    pub(super) fn reserved_ahead(&mut self, i: usize, step: u8) -> Result<(), SimError> {
        let code = self.remotes[i].code.clone();
        if step == 0 {
            if self.remotes[i].skew_ms != 0 {
                return Ok(());
            }
            self.remotes[i].key_seq += 1;
            let key = format!("{code}-{:06}", self.remotes[i].key_seq);
            let result = self.remotes[i]
                .store
                .write_commit(|tx| tx.set("sales_documents", &key, "status", "open"));
            self.legitimate(i, "a document numbered", result);
            let doc = ("sales_documents".to_owned(), key.clone());
            self.remotes[i].own_docs.push(doc.clone());
            let day = i64::try_from(DAY).unwrap_or(i64::MAX);
            self.shop_clock_ahead(i, day, "clock_a_day_ahead_with_a_reserved_document");
            for status in ["paid", "delivered"] {
                let result = self.remotes[i]
                    .store
                    .write_commit(|tx| tx.set("sales_documents", &key, "status", status));
                self.legitimate(i, "a document written a day ahead", result);
            }
            self.remotes[i]
                .store
                .reserve("sales_documents", &key, &format!("till-{i}"))?;
            self.remotes[i].reserved.push(doc);
            self.reserved_ahead = Some(i);
            self.execute(
                i,
                vec![
                    RemoteCommand::Emit(SyncMode::Immediate),
                    RemoteCommand::FetchReturn,
                ],
            )?;
        } else if self.reserved_ahead.take() == Some(i) {
            self.remotes[i].key_seq += 1;
            let key = format!("{code}-{:06}", self.remotes[i].key_seq);
            let result = self.remotes[i]
                .store
                .write_commit(|tx| tx.set("customers", &key, "name", "keyed in a day ahead"));
            self.legitimate(i, "a customer keyed in a day ahead", result);
            self.execute(i, vec![RemoteCommand::Emit(SyncMode::Immediate)])?;
        }
        self.reschedule_remote(i);
        Ok(())
    }

    /// [`Event::StickRace`]: the shop edits again the city it wrote with its clock ahead.
    fn edit_after_the_restamp(&mut self, i: usize) -> Result<(), SimError> {
        let Some((_, key)) = self.stick_race.clone() else {
            return Ok(());
        };
        let city = format!("edited after the restamp at {}", self.remotes[i].code);
        let result = self.remotes[i]
            .store
            .write_commit(|tx| tx.set("customers", &key, "city", city.as_str()));
        self.legitimate(i, "an edit after the restamp", result);
        Ok(())
    }

    /// The emission left on remote `i`'s stick reaches central. At a network shop, central is
    /// within its reach again and it syncs: its outbox goes first.
    fn bring_the_stick(&mut self, i: usize) -> Result<(), SimError> {
        if self.remotes[i].kind != Kind::Manual {
            self.sticks.entry(i).or_default().offline_until = 0;
            return self.execute(i, vec![RemoteCommand::Emit(SyncMode::NoReturn)]);
        }
        let site = self.remotes[i].store.site().id;
        let (_, mut net) = self.net(i);
        match net.deliver_late_emission(site) {
            Ok(()) => Ok(()),
            Err(Carry::Failed(e)) => Err(e),
            Err(other) => Err(bad(&other.to_string())),
        }
    }

    /// An admin moves a fixed-time remote's emission and fetch (C4/C6) while its executor runs:
    /// at central (the next return carries it) or locally at the remote (until the next
    /// return puts central's back). The executor must follow without a restart, and never emit
    /// twice at a fixed time on one day (M1) — the fixed-time check at the end counts.
    pub(super) fn schedule_change(&mut self, i: usize) -> Result<(), SimError> {
        let paris: Zone = "Europe/Paris".parse().map_err(|_| bad("zone"))?;
        let zone = self.remotes[i].zone;
        let day = paris.date_at(self.now);
        let emission = at_of(
            zone,
            paris.instant(day, hhmm(18 + self.rng.below(4), self.rng.below(60))),
        );
        let fetch = at_of(
            zone,
            paris.instant(day, hhmm(0, 30 + self.rng.below(30))) + DAY,
        );
        // Now and then central switches the shop to syncs on demand only (C6): a generator of
        // its own.
        let mut demand = crate::rng::Rng::new(self.cfg.seed ^ 0x0dd0 ^ self.now);
        let on_demand = self.cfg.faults && demand.chance(300);
        let types = vec![
            SyncType::Fixed { emission, fetch },
            SyncType::Immediate { wait_ms: MINUTE },
        ];
        let Some(mut config) = central::config(&self.central)? else {
            return Ok(());
        };
        let site = self.remotes[i].store.site().id;
        let Some(pos) = config.remotes.iter().position(|r| r.id == site) else {
            return Ok(());
        };
        if let Some(r) = config.remotes.get_mut(pos) {
            r.sync_types = types.clone();
        }
        if config.validate().is_err() {
            return Ok(());
        }
        if self.rng.chance(500) {
            if on_demand && let Some(r) = config.remotes.get_mut(pos) {
                r.sync_types = vec![SyncType::Immediate { wait_ms: MINUTE }];
            }
            central::set_config(&self.central, &config)?;
            if on_demand {
                self.automaton
                    .reconfigure(&config)
                    .map_err(|e| bad(&e.to_string()))?;
                let r = &mut self.remotes[i];
                r.kind = Kind::Immediate;
                // Half the time its host program asks for a sync every day; otherwise someone
                // asks for one every five days.
                if r.host_sync.is_none() {
                    if demand.chance(500) {
                        r.host_sync =
                            Some(Daily::new(hhmm(17 + demand.below(3), demand.below(60))));
                    } else {
                        let end = START_MS + u64::from(self.cfg.days) * DAY;
                        let mut t = self.now + 5 * DAY + demand.below(HOUR);
                        while t < end {
                            self.push(t, Event::AskSync(i));
                            t += 5 * DAY;
                        }
                    }
                }
                *self
                    .report
                    .faults_injected
                    .entry("switched_to_syncs_on_demand".to_owned())
                    .or_insert(0) += 1;
            }
        } else {
            // C6: a local admin's edit, overwritten by the next return.
            let text = types
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(";");
            remote::set_setting(&self.remotes[i].store, "sync_types", &text)?;
        }
        *self
            .report
            .faults_injected
            .entry("schedule_changed".to_owned())
            .or_insert(0) += 1;
        Ok(())
    }

    /// Central withdraws shop `i`'s permission to write stock documents, or grants it (R4/R9):
    /// in its configuration, which the shop receives with its next return.
    pub(super) fn permissions(&mut self, i: usize) -> Result<(), SimError> {
        let Some(mut config) = central::config(&self.central)? else {
            return Ok(());
        };
        let site = self.remotes[i].store.site().id;
        let Some(r) = config.remotes.iter_mut().find(|r| r.id == site) else {
            return Ok(());
        };
        if !r.denied_tables.remove("stock_documents") {
            r.denied_tables.insert("stock_documents".to_owned());
        }
        central::set_config(&self.central, &config)?;
        *self
            .report
            .faults_injected
            .entry("permissions_changed".to_owned())
            .or_insert(0) += 1;
        Ok(())
    }

    /// A shop's disk dies and its PC is set up again from the bootstrap file it was first set
    /// up from (R1; see [`World::replace_store`]).
    pub(super) fn reinstall(&mut self, i: usize) -> Result<(), SimError> {
        let open = self.remote_config(i);
        let id = self.rng.next_u64();
        let store = remote::bootstrap_as(
            self.remotes[i].bootstrap.as_slice(),
            |_| Store::in_memory(open),
            Some(id),
        )?;
        self.replace_store(i, store, "reinstalled_from_old_bootstrap")
    }

    /// A shop closes (C4): it syncs a last time, then the person responsible removes it at
    /// central (`outpost central remove-remote`, docs/OPERATIONS.md); its store is not used
    /// again, and its newest return's bytes go from central's sync table. Refused while an
    /// emission of it waits (held for clock skew), or while central is being restored from a
    /// backup and the shop has not yet sent back what central lost: tried again the next day.
    pub(super) fn close(&mut self, i: usize) -> Result<(), SimError> {
        // Its tills finish what they hold reserved (R7: not sent until released).
        let holder = format!("till-{i}");
        while let Some((t, k)) = self.remotes[i].reserved.pop() {
            self.remotes[i].store.release(&t, &k, &holder)?;
        }
        let faults = std::mem::replace(&mut self.cfg.faults, false);
        let last = self.execute(i, vec![RemoteCommand::Emit(SyncMode::NoReturn)]);
        self.cfg.faults = faults;
        last?;
        let code = self.remotes[i].code.clone();
        match central::remove_remote(&self.central, &code, self.now, central::Removal::default()) {
            Ok(_) => {}
            Err(outpost_replicator::Error::Refused(why)) => {
                // Its tills released everything: a refusal for reservations means central
                // and the shop disagree on what it holds back.
                let site = self.remotes[i].store.site().id;
                let snap = self.central.snapshot()?;
                // While central waits for every remote's report after its restore, the shop's
                // last emission is not taken yet.
                let waits = central::restore_waiting_for(&self.central)?
                    .iter()
                    .any(|c| *c != code);
                if !waits
                    && outpost_replicator::monitor::reserved(&snap, site)?
                        .is_some_and(|r| r.count > 0)
                {
                    self.violation(format!(
                        "{code} released its reservations and synced, yet its removal was refused: {why}"
                    ));
                } else {
                    // An emission of it held for clock skew or not taken yet, or what a
                    // restore of central lost not yet sent back: the next day.
                    self.push(self.now + DAY, Event::Close(i));
                }
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        let config =
            central::config(&self.central)?.ok_or_else(|| bad("central lost its configuration"))?;
        self.automaton
            .reconfigure(&config)
            .map_err(|e| bad(&e.to_string()))?;
        self.remotes[i].closed = true;
        *self
            .report
            .faults_injected
            .entry("shop_closed_and_removed".to_owned())
            .or_insert(0) += 1;
        Ok(())
    }

    /// A shop's disk dies and it puts back the last backup of its store (R1): the same store
    /// identity, numbering its emissions and changes again from the backup's point.
    pub(super) fn restore(&mut self, i: usize) -> Result<(), SimError> {
        let Some(backup) = self.remotes[i].backup.take() else {
            return Ok(());
        };
        self.replace_store(i, backup, "restored_from_old_backup")
    }

    /// Central's disk dies and its last backup is put back in place (`outpost central
    /// restore`, docs/OPERATIONS.md), and its daemon started again: a new automaton. What
    /// central received and made since the backup is gone from it; the remotes send back what
    /// they hold of it with their next syncs. A write no store holds any more is lost with the
    /// disk — central's own since the backup that no remote received, or a remote's that only
    /// central held (its store was itself replaced by a backup since): no longer checked.
    pub(super) fn restore_central(&mut self) -> Result<(), SimError> {
        let Some(backup) = self.central_backup.take() else {
            return Ok(());
        };
        let snap = backup.snapshot()?;
        // A closed shop's store is kept until the restore (it may sync again, below).
        let mut held = vec![snap];
        for r in &self.remotes {
            held.push(r.store.snapshot()?);
        }
        let mut keep = Vec::with_capacity(self.accepted.len());
        for mut w in std::mem::take(&mut self.accepted) {
            // Central's store is replaced: what it held is checked again.
            w.at_central = false;
            let mut kept = false;
            for snap in &held {
                kept = kept || w.kept_in(snap)?;
            }
            if kept {
                keep.push(w);
            }
        }
        self.accepted = keep;
        let before =
            central::config(&self.central)?.ok_or_else(|| bad("central lost its configuration"))?;
        self.central = backup;
        central::after_restore(&self.central)?;
        let mut config =
            central::config(&self.central)?.ok_or_else(|| bad("central lost its configuration"))?;
        // A shop opened since the backup is unknown to the restored central: the person
        // responsible adds it again with its id and code (`central add-remote`); the shop keeps
        // its store (docs/OPERATIONS.md). One closed since is removed again below.
        let opened: Vec<RemoteSettings> = before
            .remotes
            .iter()
            .filter(|r| !config.remotes.iter().any(|k| k.id == r.id))
            .cloned()
            .collect();
        if !opened.is_empty() {
            for settings in opened {
                let id = settings.id;
                config.remotes.push(settings);
                central::set_config(&self.central, &config)?;
                central::write_bootstrap(&self.central, id, Vec::new(), false)?;
            }
            *self
                .report
                .faults_injected
                .entry("shop_opened_since_backup_added_again".to_owned())
                .or_insert(0) += 1;
        }
        let mut automaton =
            CentralAutomaton::new(&config, self.now).map_err(|e| bad(&e.to_string()))?;
        automaton.set_sweep_ms(HOUR);
        self.automaton = automaton;
        self.central_wake = u64::MAX;
        // The backup may predate a shop's closing: the person responsible has its store (kept
        // until then) sync once more and removes it again ([`World::remove_again`]).
        for i in 0..self.remotes.len() {
            let code = self.remotes[i].code.clone();
            if self.remotes[i].closed && config.remotes.iter().any(|r| r.code == code) {
                self.push(self.now, Event::RemoveAgain(i));
            }
        }
        *self
            .report
            .faults_injected
            .entry("central_restored_from_old_backup".to_owned())
            .or_insert(0) += 1;
        Ok(())
    }

    /// After central's restore, shop `i`, closed since the backup, is back in the restored
    /// configuration: its store (kept until then) syncs once more — a return of the restored
    /// central, then an emission of what central lost of it — and the person responsible removes
    /// it again (docs/OPERATIONS.md). Central takes no remote's new changes before every remote
    /// has reported what it holds: until then the shop only reports (an emission, not taken),
    /// and the person responsible tries again an hour later.
    pub(super) fn remove_again(&mut self, i: usize) -> Result<(), SimError> {
        let code = self.remotes[i].code.clone();
        let config =
            central::config(&self.central)?.ok_or_else(|| bad("central lost its configuration"))?;
        if !self.remotes[i].closed || !config.remotes.iter().any(|r| r.code == code) {
            return Ok(());
        }
        let others_silent = central::restore_waiting_for(&self.central)?
            .iter()
            .any(|c| *c != code);
        let reprovisioned = self.reprovisioned_count();
        let faults = std::mem::replace(&mut self.cfg.faults, false);
        let synced = if others_silent {
            self.execute(i, vec![RemoteCommand::Emit(SyncMode::NoReturn)])
        } else {
            self.execute(
                i,
                vec![
                    RemoteCommand::Emit(SyncMode::Immediate),
                    RemoteCommand::FetchReturn,
                ],
            )
            .and_then(|()| self.execute(i, vec![RemoteCommand::Emit(SyncMode::NoReturn)]))
        };
        self.cfg.faults = faults;
        synced?;
        if others_silent {
            self.push(self.now + HOUR, Event::RemoveAgain(i));
            return Ok(());
        }
        // A store the restored central does not know (set up again since the backup) is
        // refused: what only it held is lost, the rest comes back from the others.
        let removal = central::Removal {
            drop_unsent: self.reprovisioned_count() > reprovisioned,
            ..central::Removal::default()
        };
        central::remove_remote(&self.central, &code, self.now, removal)?;
        let config =
            central::config(&self.central)?.ok_or_else(|| bad("central lost its configuration"))?;
        self.automaton
            .reconfigure(&config)
            .map_err(|e| bad(&e.to_string()))
    }

    /// How many stores were refused and set up again so far.
    fn reprovisioned_count(&self) -> u64 {
        self.report
            .faults_injected
            .get("reprovisioned_after_refusal")
            .copied()
            .unwrap_or(0)
    }

    /// Central's store configuration.
    pub(super) fn central_config(&self) -> StoreConfig {
        let mut c = StoreConfig::new(
            self.central.site().clone(),
            retail::schema(),
            self.central_clock.clone(),
        );
        c.broken_rules = self.cfg.broken_rules.clone();
        c
    }

    /// The configuration of remote `i`'s store (a new one: set up again, or restored).
    pub(super) fn remote_config(&self, i: usize) -> StoreConfig {
        let r = &self.remotes[i];
        let mut c = StoreConfig::new(r.store.site().clone(), retail::schema(), r.clock.clone());
        c.broken_rules = self.cfg.broken_rules.clone();
        c
    }

    /// Remote `i`'s store is replaced by `store`, which does not hold what the lost one made
    /// since (its disk died). The writes the lost store had not sent are lost with the disk. The
    /// new store emits at once; if central refuses it (it is not the store central takes the
    /// site's changes from, or it numbers again what central holds), the person responsible
    /// reprovisions the site (`central reprovision`) and sets it up once more from the new
    /// bootstrap (docs/OPERATIONS.md). Refused later instead, the same happens then
    /// ([`World::reprovision_refused`]); never refused while a write of it is taken for one
    /// central holds, the end-of-run check finds that write lost.
    pub(super) fn replace_store(
        &mut self,
        i: usize,
        store: Store,
        what: &str,
    ) -> Result<(), SimError> {
        let site = self.remotes[i].store.site().id;
        self.forget_what_central_lacks(site)?;
        let (bytes, _) = remote::emit(&store, Vec::new(), SyncMode::NoReturn, false)?;
        let mut waits = None;
        let store = match central::receive(&self.central, bytes.as_slice(), Some(site)) {
            // The operator's procedure (docs/OPERATIONS.md).
            Err(outpost_replicator::Error::WrongStore(why)) => {
                self.note_refused(i, &why);
                self.reprovisioned(i)?
            }
            // Not judged yet (central's restore waits for every remote's report): the emission
            // waits where production's would — a network shop's outbox, sent again whole at its
            // next sync; a manual shop's file on the stick, brought again — and is judged then.
            Err(outpost_replicator::Error::Deferred(_)) => {
                waits = Some(bytes);
                store
            }
            Err(e) => return Err(e.into()),
            // Taken: the same as an emission central had (a backup holding no change since), or
            // nothing central holds under its numbers. Its later emissions are judged as they
            // come; a write of it taken for one central holds would show as lost at the end.
            Ok(received) => {
                if let Received::Ready { id, .. } = received {
                    let cmds = self.automaton.on_flow_ready(id);
                    self.run_central(cmds)?;
                }
                store
            }
        };
        self.put_in_place(i, store)?;
        if let Some(bytes) = waits {
            let stick = self.sticks.entry(i).or_default();
            if self.remotes[i].kind == Kind::Manual {
                // The stick holds one file: a late one of the lost store, already on it, goes
                // first and this one is not brought again (the shop's next file follows).
                stick.emission.get_or_insert(bytes);
            } else {
                stick.outbox.push(bytes);
            }
        }
        *self
            .report
            .faults_injected
            .entry(what.to_owned())
            .or_insert(0) += 1;
        Ok(())
    }

    /// What a lost (or refused) store of `site` made and central does not hold — nor a later
    /// write of it to the same place — is in that store only: no longer checked (an emission
    /// central has not processed yet may still bring it).
    ///
    /// While central is being restored from a backup, the lost store may also have been the
    /// last to hold other sites' writes central lost (they come back only from the remotes):
    /// those no other open remote holds — none when it was the only one — are lost with it too.
    pub(super) fn forget_what_central_lacks(&mut self, site: SiteId) -> Result<(), SimError> {
        let snap = self.central.snapshot()?;
        let restoring = central::restore_under_way(&self.central)?;
        let mut others = Vec::new();
        if restoring {
            for r in self.remotes.iter().filter(|r| !r.closed) {
                if r.store.site().id != site {
                    others.push(r.store.snapshot()?);
                }
            }
        }
        let mut keep = Vec::with_capacity(self.accepted.len());
        for mut w in std::mem::take(&mut self.accepted) {
            w.at_central = w.at_central || w.kept_in(&snap)?;
            let mut kept = w.at_central;
            if !kept && w.dot.site != site {
                kept = !restoring;
                for other in &others {
                    kept = kept || w.kept_in(other)?;
                }
            }
            if kept {
                keep.push(w);
            }
        }
        self.accepted = keep;
        Ok(())
    }

    /// `central reprovision` for remote `i`'s site, and a store set up from the new bootstrap.
    pub(super) fn reprovisioned(&mut self, i: usize) -> Result<Store, SimError> {
        let site = self.remotes[i].store.site().id;
        central::reprovision(&self.central, site)?;
        let (boot, _) = central::write_bootstrap(&self.central, site, Vec::new(), false)?;
        let id = self.rng.next_u64();
        let config = self.remote_config(i);
        Ok(remote::bootstrap_as(
            boot.as_slice(),
            |_| Store::in_memory(config),
            Some(id),
        )?)
    }

    /// `store` takes the place of remote `i`'s, with a new executor (a new process).
    pub(super) fn put_in_place(&mut self, i: usize, store: Store) -> Result<(), SimError> {
        // A restored backup holds the reservations of its day: their tills release them.
        let reserved = store
            .snapshot()?
            .reservations()?
            .into_iter()
            .map(|(t, k, _)| (t, k))
            .collect();
        // What it keys in next is what its new store makes: nothing to correct before that.
        self.last_commit.remove(&store.site().id);
        // The outbox went with the store it was made from.
        if let Some(stick) = self.sticks.get_mut(&i) {
            stick.outbox.clear();
        }
        let r = &mut self.remotes[i];
        r.executor = RemoteExecutor::new(&store)?;
        r.store = store;
        r.instance = self.next_instance;
        self.next_instance += 1;
        r.own_docs.clear();
        r.registers.clear();
        r.reserved = reserved;
        Ok(())
    }

    pub(super) fn central_prices(&mut self) -> Result<(), SimError> {
        self.set_quarantined_clocks_right(true)?;
        let articles = self.central.scan("articles")?;
        let Some(a) = self.rng.pick(&articles).map(|r| r.key.clone()) else {
            return Ok(());
        };
        let p = price(&mut self.rng);
        let (_, commit) = self
            .central
            .write_commit(|tx| tx.set("articles", &a, "price", p))?;
        self.record(&commit.changes);
        // Now and then central's stock office records a transfer, numbered by the engine
        // (`new_key`): from a generator of its own, so the rest of a run draws as before.
        // While central is restored from a backup, what it numbered since comes back from the
        // shops: no new key is given until then (the transfer is recorded later).
        if self.keys_rng.chance(300) {
            let created = self.central.write_commit(|tx| {
                let key = tx.new_key("stock_documents")?;
                let held = tx.raw_record("stock_documents", &key)?.is_some();
                tx.set("stock_documents", &key, "quantity", 12)?;
                tx.set("stock_documents", &key, "kind", "transfer")?;
                Ok((key, held))
            });
            match created {
                Ok(((key, held), commit)) => {
                    self.record(&commit.changes);
                    self.note_new_key(None, "stock_documents", &key, held, &commit.changes);
                }
                Err(outpost_engine::Error::KeysAfterRestore { .. }) => {
                    *self
                        .report
                        .faults_injected
                        .entry("no_new_key_while_central_is_restored".to_owned())
                        .or_insert(0) += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Now and then central deletes a customer (a duplicate merged by hand): the shops may
        // be editing it (R2 against a tombstone).
        if self.deletes_rng.chance(100) {
            let customers = self.central.scan("customers")?;
            if let Some(c) = self.deletes_rng.pick(&customers).map(|r| r.key.clone()) {
                let ((), commit) = self.central.write_commit(|tx| tx.delete("customers", &c))?;
                self.record(&commit.changes);
            }
        }
        Ok(())
    }
}

/// A remote `central` adds (its bootstrap written) and set up from its bootstrap on `clock`: no
/// skew, no host sync, nothing done yet.
fn set_up_remote(
    central: &Store,
    settings: &RemoteSettings,
    clock: ManualClock,
    cfg: &SimConfig,
    zone: Zone,
    kind: Kind,
) -> Result<Remote, SimError> {
    let (bytes, _) = central::write_bootstrap(central, settings.id, Vec::new(), false)?;
    let broken = cfg.broken_rules.clone();
    let store = remote::bootstrap(bytes.as_slice(), |site| {
        let mut c = StoreConfig::new(site.clone(), retail::schema(), clock.clone());
        c.broken_rules = broken;
        Store::in_memory(c)
    })?;
    let executor = RemoteExecutor::new(&store)?;
    Ok(Remote {
        store,
        clock,
        skew_ms: 0,
        zone,
        code: settings.code.clone(),
        kind,
        executor,
        host_sync: None,
        next_wake: u64::MAX,
        own_docs: Vec::new(),
        registers: Vec::new(),
        reserved: Vec::new(),
        key_seq: 0,
        bootstrap: bytes,
        backup: None,
        closed: false,
        asleep: None,
        instance: 0,
    })
}

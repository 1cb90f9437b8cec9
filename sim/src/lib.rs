//! outpost-sim: the deterministic multi-site simulator.
//!
//! It drives the **same** engine, replicator and automatons as production — in-memory stores
//! through redb's in-memory backend, a virtual clock per site (with skew), a seeded RNG, and an
//! in-memory transport that can fail. One seed reproduces a run exactly: the [`Report`] is a
//! function of the [`SimConfig`] alone.
//!
//! A run: central (Europe/Paris, common return at 23:00) and N remotes in time zones of both
//! hemispheres, each with a sync type drawn by the seed (fixed time with deferred return,
//! immediate, no-return, manual files). Users create and edit customers and prospects, sales
//! documents, POS receipts, stock documents (where permitted), open and close cash registers,
//! reserve and release documents; central edits prices; now and then a user tries something
//! forbidden (R3–R8), which must be refused. With faults: uploads cut, files duplicated, returns
//! lost, central crashing mid-apply, clocks skewed by minutes to a day. At the end a quiet round
//! of syncs, then the invariants: every site equals central; no register breaks a rule; no
//! accepted write is lost (present, superseded by a later stamp, or in the rejection log); the
//! journal is consistent (J1–J2).

mod rng;
pub mod scenario;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use outpost::retail;
use outpost_engine::{
    Clock, Dot, Knowledge, ManualClock, Marker, Policy, Rule, Site, SiteId, Slot, Store,
    StoreConfig, Value,
};
use outpost_replicator::automaton::{CentralAutomaton, Command, RemoteCommand, run_central};
use outpost_replicator::central::{self, Received};
use outpost_replicator::config::{RemoteSettings, SyncType};
use outpost_replicator::executor::{
    Failure, Fetched, RemoteExecutor, RemoteRun, RemoteTransport, SyncAsk,
};
use outpost_replicator::journal::Hold;
use outpost_replicator::remote;
use outpost_replicator::schedule::{Daily, HhMm, Zone};
use outpost_replicator::{FlowKind, SyncMode, journal};
use serde::Serialize;

pub use rng::Rng;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of remote sites.
    pub sites: usize,
    /// Number of days.
    pub days: u32,
    /// The seed: the same seed gives the same run.
    pub seed: u64,
    /// Inject faults the system must survive.
    pub faults: bool,
    /// Fault injection into the stores themselves: rules they do not enforce — to show the
    /// invariant checker catches a broken guard. Empty in real runs.
    pub broken_rules: Vec<Rule>,
}

impl SimConfig {
    /// The command that reproduces this run.
    pub fn reproduce(&self) -> String {
        format!(
            "outpost sim --sites {} --days {} --seed {}{}",
            self.sites,
            self.days,
            self.seed,
            if self.faults { " --faults" } else { "" }
        )
    }
}

/// The outcome of a run. Deterministic: no wall-clock value in it.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Remote sites.
    pub sites: usize,
    /// Days simulated.
    pub days: u32,
    /// Faults injected?
    pub faults: bool,
    /// Each remote: code, time zone, sync type, clock skew.
    pub remotes: Vec<RemoteSummary>,
    /// Emissions central received.
    pub emissions: u64,
    /// Returns central prepared.
    pub returns: u64,
    /// Bytes of all flows.
    pub bytes: u64,
    /// Changes carried by emissions.
    pub changes: u64,
    /// Local writes accepted.
    pub writes: u64,
    /// Forbidden attempts, all refused with their rule.
    pub forbidden_refused: u64,
    /// Changes refused at central (rejection log).
    pub rejections: u64,
    /// Fields written by two or more sites (conflicts resolved by last-writer-wins).
    pub conflicts: u64,
    /// Journal rows executed more than once (processing cut off and redone, J1).
    pub executions_over_1: u64,
    /// Faults injected, by kind.
    pub faults_injected: BTreeMap<String, u64>,
    /// Staleness per site, in minutes: how old the newest information it holds from each other
    /// remote is, sampled at its local noon (M5 quantified).
    pub staleness_minutes: BTreeMap<String, Staleness>,
    /// Whether every site equals central after the quiet round.
    pub converged: bool,
    /// Invariants violated (empty in a good run).
    pub violations: Vec<String>,
    /// The sync schedule as it happened, for drawing (`--svg`); not in the JSON report.
    #[serde(skip)]
    pub timeline: Timeline,
}

/// The sync schedule of a run, in virtual UTC milliseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timeline {
    /// Start and end of the run.
    pub span_ms: (u64, u64),
    /// Central's common return time, each day.
    pub common_returns_ms: Vec<u64>,
    /// Sites, central first: code and time zone.
    pub lanes: Vec<(String, String)>,
    /// Flows: lane index, kind (`emission`, `return`, `applied`), time.
    pub marks: Vec<(usize, &'static str, u64)>,
}

/// One remote of a run.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RemoteSummary {
    /// Establishment code.
    pub code: String,
    /// IANA time zone.
    pub time_zone: String,
    /// Sync type.
    pub sync: String,
    /// Clock skew, in minutes.
    pub skew_minutes: i64,
}

/// Percentiles of a site's staleness samples.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Staleness {
    /// Median, minutes.
    pub p50: u64,
    /// 99th percentile, minutes.
    pub p99: u64,
}

/// A run that could not be carried out (a store or flow failed outright).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] outpost_engine::Error),
    /// The replicator failed.
    #[error(transparent)]
    Replicator(#[from] outpost_replicator::Error),
}

const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
/// 2026-03-02 00:00 UTC: daylight saving starts inside runs of a few weeks (US 03-08, EU 03-29).
const START_MS: u64 = 1_772_409_600_000;

const ZONES: [&str; 12] = [
    "Europe/Paris",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Australia/Sydney",
    "America/Sao_Paulo",
    "Africa/Johannesburg",
    "Asia/Kolkata",
    "Pacific/Auckland",
    "Europe/London",
    "America/Mexico_City",
    "Asia/Singapore",
];

/// How a remote's users sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Fixed,
    Immediate,
    NoReturn,
    Manual,
}

struct Remote {
    store: Store,
    clock: ManualClock,
    skew_ms: i64,
    zone: Zone,
    code: String,
    kind: Kind,
    /// The same executor as `outpost remote run`, over the in-memory transport.
    executor: RemoteExecutor,
    /// The host's daily immediate sync (immediate, no-return, manual kinds).
    host_sync: Option<Daily>,
    next_wake: u64,
    stock_allowed: bool,
    own_docs: Vec<(String, String)>,
    registers: Vec<String>,
    reserved: Vec<(String, String)>,
    key_seq: u64,
    /// The bootstrap file it was first set up from, kept on a shelf (R1: a reinstall).
    bootstrap: Vec<u8>,
    /// Its last backup (R1: a restore).
    backup: Option<Store>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Event {
    Workload(usize),
    RemoteWake(usize),
    CentralWake,
    Noon(usize),
    CentralPrices,
    /// An admin changes a fixed-time remote's schedule: at central (sent with the next return)
    /// or locally at the remote (C6: until the next return), while its executor runs.
    ScheduleChange(usize),
    /// A shop's disk is lost and its PC set up again from its old bootstrap file (R1).
    Reinstall(usize),
    /// A shop backs up its store (a copy kept aside).
    Backup(usize),
    /// A shop's disk is lost and its last backup put back in place (R1).
    Restore(usize),
}

impl Accepted {
    /// Whether the store `snap` reads holds this write or a later one to the same place.
    fn kept_in(&self, snap: &outpost_engine::Snapshot) -> Result<bool, SimError> {
        let held = snap
            .raw_record(&self.table, &self.key)?
            .and_then(|raw| match &self.slot {
                Slot::Created => Some(Marker {
                    stamp: raw.created.stamp,
                    site: raw.created.site(),
                }),
                Slot::Tombstone => raw.tombstone.map(|r| r.marker()),
                Slot::Field(f) => raw.fields.get(f).map(|r| r.marker()),
            });
        let is_document = retail::schema()
            .table(&self.table)
            .is_some_and(outpost_engine::TableDef::is_document);
        Ok(match (&self.slot, held) {
            // A document's creation is the first central received (R1/R5): another one is
            // kept only if it is that one (else it is refused, in a rejection log).
            (Slot::Created, Some(m)) if is_document => m == self.marker,
            // A shared record's creation is kept when the earliest is at least as early.
            (Slot::Created, Some(m)) => m <= self.marker,
            (_, Some(m)) => m >= self.marker,
            (_, None) => false,
        })
    }
}

/// One write accepted somewhere, kept to check that none is lost.
struct Accepted {
    table: String,
    key: String,
    slot: Slot,
    marker: Marker,
    dot: Dot,
}

struct World {
    cfg: SimConfig,
    rng: Rng,
    now: u64,
    central: Store,
    central_clock: ManualClock,
    automaton: CentralAutomaton,
    remotes: Vec<Remote>,
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    accepted: Vec<Accepted>,
    commit_time: HashMap<Dot, u64>,
    /// Each site's newest own commit.
    newest_own: HashMap<SiteId, u64>,
    staleness: BTreeMap<usize, Vec<u64>>,
    report: Report,
    central_wake: u64,
}

/// What went wrong between a remote and central in the simulator.
#[derive(Debug)]
enum Carry {
    /// The upload was cut (a fault): the remote tries again later.
    Cut,
    /// Central refused the emission: its store does not (or no longer) speak for its site
    /// (R1). The person responsible reprovisions the site.
    WrongStore(String),
    /// A real error: the run fails.
    Failed(SimError),
}

impl std::fmt::Display for Carry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Carry::Cut => f.write_str("upload cut"),
            Carry::WrongStore(why) => write!(f, "refused: {why}"),
            Carry::Failed(e) => write!(f, "{e}"),
        }
    }
}

impl<E: Into<SimError>> From<E> for Carry {
    fn from(e: E) -> Self {
        Carry::Failed(e.into())
    }
}

/// A remote executor's run: a failure is the simulation's error (the simulated network only
/// cuts, duplicates and loses; it never refuses).
/// What became of a remote's run: `Ok(true)` when central refused its store (R1).
fn carried(run: RemoteRun<Carry>) -> Result<bool, SimError> {
    match run.failed.into_iter().next() {
        None => Ok(false),
        Some(Failure::Transport(Carry::WrongStore(_))) => Ok(true),
        Some(Failure::Transport(Carry::Failed(e))) => Err(e),
        Some(Failure::Transport(Carry::Cut)) => Err(bad("a cut upload counted as a failure")),
        Some(Failure::Return(e)) => Err(e.into()),
    }
}

/// The in-memory network between one remote and central, with its faults: uploads cut, files
/// duplicated, central crashing mid-apply, acknowledgements and returns lost. Central processes
/// an emission as soon as it is file ready, through its automaton.
struct SimNet<'a> {
    central: &'a Store,
    automaton: &'a mut CentralAutomaton,
    rng: &'a mut Rng,
    report: &'a mut Report,
    faults: bool,
    /// Files on physical media: no acknowledgement comes back with an upload.
    manual: bool,
    code: String,
}

impl SimNet<'_> {
    fn fault(&mut self, kind: &str, permille: u64) -> bool {
        if self.faults && self.rng.chance(permille) {
            *self
                .report
                .faults_injected
                .entry(kind.to_owned())
                .or_insert(0) += 1;
            true
        } else {
            false
        }
    }
}

impl RemoteTransport for SimNet<'_> {
    type Error = Carry;

    fn is_transient(error: &Carry) -> bool {
        matches!(error, Carry::Cut)
    }

    fn emit(&mut self, store: &Store, mode: SyncMode) -> Result<outpost_replicator::FlowId, Carry> {
        let site = store.site().id;
        let (bytes, emitted) = remote::emit(store, Vec::new(), mode, false)?;
        if self.fault("upload_cut", 40) {
            let cut = bytes.len() / 2;
            let refused = central::receive(
                self.central,
                bytes.get(..cut).unwrap_or_default(),
                Some(site),
            );
            if refused.is_ok() {
                self.report.violations.push(format!(
                    "a truncated emission of {} was accepted",
                    self.code
                ));
            }
            return Err(Carry::Cut);
        }
        let received = match central::receive(self.central, bytes.as_slice(), Some(site)) {
            Err(outpost_replicator::Error::WrongStore(why)) => return Err(Carry::WrongStore(why)),
            other => other?,
        };
        if self.fault("file_duplicated", 30) {
            let again = central::receive(self.central, bytes.as_slice(), Some(site))?;
            if !matches!(again, Received::Duplicate(_)) {
                self.report
                    .violations
                    .push("a duplicated emission was not recognised".into());
            }
        }
        if let Received::Ready { id, .. } = received {
            if self.fault("central_crash_mid_apply", 20) {
                // Processing starts and the process dies before it commits; the restarted
                // automaton's sweep redoes it.
                central::begin_processing(self.central, id)?;
            } else {
                let cmds = self.automaton.on_flow_ready(id);
                if !cmds.is_empty() {
                    run_central(self.central, self.automaton, cmds)?;
                }
            }
        }
        // Over the network the upload's reply carries central's acknowledgement; files on
        // physical media do not.
        if !self.manual && !self.fault("ack_lost", 30) {
            let ack = central::acknowledgement(self.central, site);
            remote::record_acknowledgement(store, &ack)?;
        }
        Ok(emitted.id)
    }

    fn fetch_return(
        &mut self,
        store: &Store,
        after: u64,
        _wait_ms: u64,
    ) -> Result<Option<Fetched<'_>>, Carry> {
        let Some((id, reader)) = central::fetch_return(self.central, store.site().id, after)?
        else {
            return Ok(None);
        };
        if self.fault("return_lost", 40) {
            return Ok(None);
        }
        let answers = journal::row(self.central, id)?
            .and_then(|r| r.link)
            .map(|l| l.seq);
        Ok(Some(Fetched {
            answers,
            reader: Box::new(reader),
        }))
    }
}

fn skew_of(rng: &mut Rng, faults: bool) -> i64 {
    if !faults || !rng.chance(300) {
        return 0;
    }
    let choices: [i64; 6] = [
        5 * MINUTE as i64,
        -7 * MINUTE as i64,
        3 * HOUR as i64,
        -3 * HOUR as i64,
        DAY as i64,
        -(DAY as i64),
    ];
    rng.pick(&choices).copied().unwrap_or(0)
}

fn hhmm(h: u64, m: u64) -> HhMm {
    HhMm::new(
        u8::try_from(h % 24).unwrap_or(0),
        u8::try_from(m % 60).unwrap_or(0),
    )
    .unwrap_or(HhMm::MIDNIGHT)
}

fn at_of(zone: Zone, ms: u64) -> HhMm {
    zone.hhmm_at(ms).parse().unwrap_or(HhMm::MIDNIGHT)
}

/// Runs one simulation.
pub fn run(cfg: &SimConfig) -> Result<Report, SimError> {
    run_with_progress(cfg, &mut |_| {})
}

/// Runs one simulation, calling `progress` with the number of days simulated so far.
pub fn run_with_progress(
    cfg: &SimConfig,
    progress: &mut dyn FnMut(u32),
) -> Result<Report, SimError> {
    let mut world = World::new(cfg)?;
    world.run(progress)?;
    world.finish()
}

impl World {
    fn new(cfg: &SimConfig) -> Result<Self, SimError> {
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
            let (bytes, _) = central::write_bootstrap(&central, settings.id, Vec::new(), false)?;
            let broken = cfg.broken_rules.clone();
            let store = remote::bootstrap(bytes.as_slice(), |site| {
                let mut c = StoreConfig::new(site.clone(), retail::schema(), clock.clone());
                c.broken_rules = broken;
                Store::in_memory(c)
            })?;
            let executor = RemoteExecutor::new(&store)?;
            // M4: an immediate sync can be asked whatever the sync type (fixed-time sites too).
            let host_sync = (kind != Kind::Fixed || rng.chance(300))
                .then(|| Daily::new(hhmm(17 + rng.below(3), rng.below(60))));
            report.remotes.push(RemoteSummary {
                code: settings.code.clone(),
                time_zone: settings.time_zone.clone(),
                sync: format!("{kind:?}").to_lowercase(),
                skew_minutes: skew_ms / MINUTE as i64,
            });
            remotes.push(Remote {
                store,
                clock,
                skew_ms,
                zone,
                code: settings.code.clone(),
                kind,
                executor,
                host_sync,
                next_wake: u64::MAX,
                stock_allowed: !settings.denied_tables.contains("stock_documents"),
                own_docs: Vec::new(),
                registers: Vec::new(),
                reserved: Vec::new(),
                key_seq: 0,
                bootstrap: bytes,
                backup: None,
            });
        }
        let mut automaton =
            CentralAutomaton::new(&config, START_MS).map_err(|e| bad(&e.to_string()))?;
        // Events reach the automaton reliably here; the sweep is only a net for crashes.
        automaton.set_sweep_ms(HOUR);
        let mut world = World {
            cfg: cfg.clone(),
            rng,
            now: START_MS,
            central,
            central_clock,
            automaton,
            remotes,
            queue: BinaryHeap::new(),
            seq: 0,
            accepted: Vec::new(),
            commit_time: HashMap::new(),
            newest_own: HashMap::new(),
            staleness: BTreeMap::new(),
            report,
            central_wake: u64::MAX,
        };
        world.plan_days();
        for i in 0..world.remotes.len() {
            world.reschedule_remote(i);
        }
        world.reschedule_central();
        Ok(world)
    }

    fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, event)));
    }

    /// Each remote's workload, its host syncs and a staleness sample, day by day; central's
    /// price edits.
    fn plan_days(&mut self) {
        let end = START_MS + u64::from(self.cfg.days) * DAY;
        for i in 0..self.remotes.len() {
            let zone = self.remotes[i].zone;
            let mut day = zone.date_at(START_MS);
            loop {
                let noon = zone.instant(day, hhmm(12, 0));
                if noon >= end {
                    break;
                }
                let n_ops = 3 + self.rng.below(6);
                for _ in 0..n_ops {
                    let t = zone.instant(day, hhmm(9 + self.rng.below(10), self.rng.below(60)));
                    if t >= START_MS && t < end {
                        self.push(t, Event::Workload(i));
                    }
                }
                if noon >= START_MS {
                    self.push(noon, Event::Noon(i));
                }
                day = match day.succ_opt() {
                    Some(d) => d,
                    None => break,
                };
            }
        }
        let mut t = START_MS + 9 * HOUR;
        while t < end {
            self.push(t, Event::CentralPrices);
            t += DAY;
        }
        let span = end - START_MS;
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
        }
    }

    fn set_time(&mut self, t: u64) {
        self.now = t;
        self.central_clock.set(t);
        for r in &self.remotes {
            r.clock.set(t.saturating_add_signed(r.skew_ms));
        }
    }

    fn reschedule_remote(&mut self, i: usize) {
        let r = &self.remotes[i];
        let local_now = self.now.saturating_add_signed(r.skew_ms);
        let mut next_local = r.executor.next_wakeup_ms(local_now);
        if let Some(job) = &r.host_sync {
            next_local = next_local.min(job.next_due(r.zone, local_now));
        }
        let next = next_local
            .saturating_add_signed(-r.skew_ms)
            .max(self.now + 1);
        if next != self.remotes[i].next_wake {
            self.remotes[i].next_wake = next;
            self.push(next, Event::RemoteWake(i));
        }
    }

    fn reschedule_central(&mut self) {
        let next = self.automaton.next_wakeup_ms(self.now).max(self.now + 1);
        if next != self.central_wake {
            self.central_wake = next;
            self.push(next, Event::CentralWake);
        }
    }

    fn run(&mut self, progress: &mut dyn FnMut(u32)) -> Result<(), SimError> {
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
                Event::Noon(i) => self.sample_staleness(i),
                Event::CentralPrices => self.central_prices()?,
                Event::ScheduleChange(i) => self.schedule_change(i)?,
                Event::Reinstall(i) => self.reinstall(i)?,
                Event::Backup(i) => {
                    let config = self.remote_config(i);
                    let copy = self.remotes[i].store.copy_in_memory(config)?;
                    self.remotes[i].backup = Some(copy);
                }
                Event::Restore(i) => self.restore(i)?,
            }
            self.reschedule_central();
        }
        self.set_time(end);
        Ok(())
    }

    fn wake_remote(&mut self, i: usize) -> Result<(), SimError> {
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
        if carried(run)? {
            self.reprovision_refused(i)?;
        }
        Ok(())
    }

    /// Remote `i` and the in-memory network to central.
    fn net(&mut self, i: usize) -> (&mut Remote, SimNet<'_>) {
        let World {
            remotes,
            central,
            automaton,
            rng,
            report,
            cfg,
            ..
        } = self;
        let r = &mut remotes[i];
        let net = SimNet {
            central,
            automaton,
            rng,
            report,
            faults: cfg.faults,
            manual: r.kind == Kind::Manual,
            code: r.code.clone(),
        };
        (r, net)
    }

    fn execute(&mut self, i: usize, commands: Vec<RemoteCommand>) -> Result<(), SimError> {
        let (r, mut net) = self.net(i);
        let run = r.executor.carry_out(&r.store, &mut net, commands)?;
        if carried(run)? {
            self.reprovision_refused(i)?;
        }
        Ok(())
    }

    /// Central refused remote `i`'s store (restored from a backup whose first emission since was
    /// the same as one central had): the person responsible reprovisions the site and sets it up
    /// again from the new bootstrap (docs/OPERATIONS.md). What the refused store made and central
    /// does not hold is in the refused store only (listed refused at central, with why).
    fn reprovision_refused(&mut self, i: usize) -> Result<(), SimError> {
        let site = self.remotes[i].store.site().id;
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

    fn run_central(&mut self, commands: Vec<Command>) -> Result<(), SimError> {
        if !commands.is_empty() {
            run_central(&self.central, &mut self.automaton, commands)?;
        }
        Ok(())
    }

    fn violation(&mut self, what: String) {
        self.report.violations.push(what);
    }

    fn record(&mut self, changes: &[outpost_engine::Change]) {
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
            });
        }
        self.report.writes += 1;
    }

    /// The person responsible reads the journal: a remote whose emissions central holds for
    /// clock skew ("quarantined") has its clock set right, and its unacknowledged writes are
    /// stamped again (`outpost remote restamp`).
    fn set_quarantined_clocks_right(&mut self) -> Result<(), SimError> {
        let held: BTreeSet<SiteId> =
            outpost_replicator::journal::rows(&self.central, None, None, None)?
                .into_iter()
                .filter(|r| matches!(r.hold, Hold::Quarantined { .. }))
                .map(|r| r.site)
                .collect();
        for i in 0..self.remotes.len() {
            if !held.contains(&self.remotes[i].store.site().id) || self.remotes[i].skew_ms == 0 {
                continue;
            }
            self.remotes[i].skew_ms = 0;
            self.remotes[i].clock.set(self.now);
            outpost_replicator::remote::restamp(&self.remotes[i].store)?;
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
                        },
                        raw.created.dot,
                    )),
                    Slot::Tombstone => raw.tombstone.map(|r| (r.marker(), r.dot)),
                    Slot::Field(f) => raw.fields.get(f).map(|r| (r.marker(), r.dot)),
                };
                // Its new dot too: a change central refuses is logged under the dot it came with.
                if let Some((m, dot)) = now
                    && m.site == site
                    && m.stamp < w.marker.stamp
                {
                    w.marker = m;
                    w.dot = dot;
                }
            }
            *self
                .report
                .faults_injected
                .entry("clock_set_right_after_quarantine".to_owned())
                .or_insert(0) += 1;
            self.reschedule_remote(i);
        }
        Ok(())
    }

    /// An admin moves a fixed-time remote's emission and fetch (C4/C6) while its executor runs:
    /// at central (the next return carries it) or locally at the remote (until the next
    /// return puts central's back). The executor must follow without a restart, and never emit
    /// twice at a fixed time on one day (M1) — the fixed-time check at the end counts.
    fn schedule_change(&mut self, i: usize) -> Result<(), SimError> {
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
            central::set_config(&self.central, &config)?;
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

    /// A shop's disk dies and its PC is set up again from the bootstrap file it was first set
    /// up from (R1; see [`World::replace_store`]).
    fn reinstall(&mut self, i: usize) -> Result<(), SimError> {
        let open = self.remote_config(i);
        let id = self.rng.next_u64();
        let store = remote::bootstrap_as(
            self.remotes[i].bootstrap.as_slice(),
            |_| Store::in_memory(open),
            Some(id),
        )?;
        self.replace_store(i, store, "reinstalled_from_old_bootstrap")
    }

    /// A shop's disk dies and it puts back the last backup of its store (R1): the same store
    /// identity, numbering its emissions and changes again from the backup's point.
    fn restore(&mut self, i: usize) -> Result<(), SimError> {
        let Some(backup) = self.remotes[i].backup.take() else {
            return Ok(());
        };
        self.replace_store(i, backup, "restored_from_old_backup")
    }

    /// The configuration of remote `i`'s store (a new one: set up again, or restored).
    fn remote_config(&self, i: usize) -> StoreConfig {
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
    fn replace_store(&mut self, i: usize, store: Store, what: &str) -> Result<(), SimError> {
        let site = self.remotes[i].store.site().id;
        self.forget_what_central_lacks(site)?;
        let (bytes, _) = remote::emit(&store, Vec::new(), SyncMode::NoReturn, false)?;
        let store = match central::receive(&self.central, bytes.as_slice(), Some(site)) {
            // The operator's procedure (docs/OPERATIONS.md).
            Err(outpost_replicator::Error::WrongStore(_)) => self.reprovisioned(i)?,
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
    fn forget_what_central_lacks(&mut self, site: SiteId) -> Result<(), SimError> {
        let snap = self.central.snapshot()?;
        let mut keep = Vec::with_capacity(self.accepted.len());
        for w in std::mem::take(&mut self.accepted) {
            if w.dot.site != site || w.kept_in(&snap)? {
                keep.push(w);
            }
        }
        self.accepted = keep;
        Ok(())
    }

    /// `central reprovision` for remote `i`'s site, and a store set up from the new bootstrap.
    fn reprovisioned(&mut self, i: usize) -> Result<Store, SimError> {
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
    fn put_in_place(&mut self, i: usize, store: Store) -> Result<(), SimError> {
        // A restored backup holds the reservations of its day: their tills release them.
        let reserved = store
            .snapshot()?
            .reservations()?
            .into_iter()
            .map(|(t, k, _)| (t, k))
            .collect();
        let r = &mut self.remotes[i];
        r.executor = RemoteExecutor::new(&store)?;
        r.store = store;
        r.own_docs.clear();
        r.registers.clear();
        r.reserved = reserved;
        Ok(())
    }

    fn central_prices(&mut self) -> Result<(), SimError> {
        self.set_quarantined_clocks_right()?;
        let articles = self.central.scan("articles")?;
        let Some(a) = self.rng.pick(&articles).map(|r| r.key.clone()) else {
            return Ok(());
        };
        let p = price(&mut self.rng);
        let (_, commit) = self
            .central
            .write_commit(|tx| tx.set("articles", &a, "price", p))?;
        self.record(&commit.changes);
        Ok(())
    }

    fn workload(&mut self, i: usize) -> Result<(), SimError> {
        let roll = self.rng.below(100);
        if roll < 10 {
            return self.forbidden(i);
        }
        self.remotes[i].key_seq += 1;
        let stock_allowed = self.remotes[i].stock_allowed;
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
            45..=49 => store.write_commit(|tx| tx.set("prospects", &key, "name", "prospect")),
            50..=54 => {
                // Shops pick the same document number (R1/R5): the first creation central
                // receives is the document's; the others' writes are refused and returned.
                let key = format!("DOC-{}-{}", self.now / DAY, self.rng.below(3));
                if store.record("sales_documents", &key)?.is_some() {
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
        match result {
            Ok(((), commit)) => self.record(&commit.changes),
            Err(e) => {
                let code = self.remotes[i].code.clone();
                self.violation(format!("a legitimate write at {code} was refused: {e}"));
            }
        }
        Ok(())
    }

    fn reserve_or_release(&mut self, i: usize) -> Result<(), SimError> {
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

    /// A forbidden attempt, which must be refused with its rule.
    fn forbidden(&mut self, i: usize) -> Result<(), SimError> {
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
            1 if !self.remotes[i].stock_allowed => Some((
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

    fn sample_staleness(&mut self, i: usize) {
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

    /// The quiet round, then the invariants.
    fn finish(mut self) -> Result<Report, SimError> {
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
        // Two rounds after the last clock found wrong (its emission held) was set right.
        for _ in 0..3 {
            self.set_quarantined_clocks_right()?;
            for i in 0..self.remotes.len() {
                self.execute(i, vec![RemoteCommand::Emit(SyncMode::NoReturn)])?;
            }
            for i in 0..self.remotes.len() {
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

    fn check(&mut self) -> Result<(), SimError> {
        let central_content = self.central.snapshot()?.replicated_content()?;
        let mut converged = true;
        for r in &self.remotes {
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

impl World {
    /// Fills the report's timeline from the journal.
    fn draw(&mut self, rows: &[outpost_replicator::journal::JournalRow]) {
        let end = START_MS + u64::from(self.cfg.days) * DAY;
        let mut t = Timeline {
            span_ms: (START_MS, end),
            ..Timeline::default()
        };
        t.lanes.push(("ASOC".into(), "Europe/Paris".into()));
        let mut lane_of = HashMap::new();
        for (i, r) in self.remotes.iter().enumerate() {
            lane_of.insert(r.store.site().id, i + 1);
            t.lanes.push((r.code.clone(), r.zone.to_string()));
        }
        if let Ok(paris) = "Europe/Paris".parse::<Zone>() {
            let mut day = paris.date_at(START_MS);
            loop {
                let at = paris.instant(day, hhmm(23, 0));
                if at >= end {
                    break;
                }
                t.common_returns_ms.push(at);
                match day.succ_opt() {
                    Some(d) => day = d,
                    None => break,
                }
            }
        }
        for r in rows {
            let Some(&lane) = lane_of.get(&r.site) else {
                continue;
            };
            let in_run = |ms: Option<u64>| ms.filter(|m| *m < end);
            match r.kind {
                FlowKind::Emission => {
                    if let Some(at) = in_run(r.file_ready_ms) {
                        t.marks.push((lane, "emission", at));
                    }
                }
                FlowKind::Return => {
                    if let Some(at) = in_run(r.file_ready_ms) {
                        t.marks.push((0, "return", at));
                    }
                    if let Some(at) = in_run(r.exec_start_ms) {
                        t.marks.push((lane, "applied", at));
                    }
                }
                FlowKind::Bootstrap => {}
            }
        }
        self.report.timeline = t;
    }
}

/// Draws a run's sync schedule as SVG: one lane per site (central first, each remote with its
/// time zone), emissions, returns made at central, returns applied at each remote, and the
/// common return time.
pub fn svg(report: &Report) -> String {
    let t = &report.timeline;
    let (start, end) = t.span_ms;
    let width = 1200.0_f64;
    let left = 190.0_f64;
    let lane_h = 22.0_f64;
    let height = 40.0 + lane_h * t.lanes.len() as f64 + 30.0;
    let span = (end.saturating_sub(start)).max(1) as f64;
    let x = |ms: u64| left + (width - left - 20.0) * (ms.saturating_sub(start) as f64 / span);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"18\" font-size=\"13\">outpost sim — seed {} — {} remotes, {} days (UTC axis)</text>\n",
        report.seed, report.sites, report.days
    );
    let mut day = start;
    while day <= end {
        out += &format!(
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"30\" y2=\"{1:.1}\" stroke=\"#ddd\"/>\n",
            x(day),
            height - 20.0
        );
        day += DAY;
    }
    for at in &t.common_returns_ms {
        out += &format!(
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"30\" y2=\"{1:.1}\" stroke=\"#c33\" stroke-dasharray=\"3,3\"/>\n",
            x(*at),
            height - 20.0
        );
    }
    for (i, (code, zone)) in t.lanes.iter().enumerate() {
        let y = 40.0 + lane_h * i as f64;
        out += &format!(
            "<text x=\"10\" y=\"{:.1}\">{code} {zone}</text>\n<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#999\"/>\n",
            y + 4.0,
            width - 20.0,
            y,
            y
        );
    }
    for (lane, kind, at) in &t.marks {
        let y = 40.0 + lane_h * *lane as f64;
        let (color, dy) = match *kind {
            "emission" => ("#2a6", -5.0),
            "return" => ("#c33", 0.0),
            _ => ("#36c", 5.0),
        };
        out += &format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"><title>{kind}</title></circle>\n",
            x(*at),
            y + dy
        );
    }
    out += &format!(
        "<text x=\"10\" y=\"{:.1}\"><tspan fill=\"#2a6\">● emission</tspan>  <tspan fill=\"#c33\">● return made at central, - - common return time</tspan>  <tspan fill=\"#36c\">● return applied</tspan></text>\n</svg>\n",
        height - 6.0
    );
    out
}

fn price(rng: &mut Rng) -> Value {
    let cents = i128::from(100 + rng.below(99_900));
    outpost_engine::Decimal::new(cents, 2).map_or(Value::Null, Value::Decimal)
}

fn bad(what: &str) -> SimError {
    SimError::Replicator(outpost_replicator::Error::Refused(format!(
        "simulation setup: {what}"
    )))
}

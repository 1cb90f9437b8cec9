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
//! lost, files carried by hand late or lost, central crashing mid-apply, clocks skewed by
//! minutes to a day. At the end a quiet round
//! of syncs, then the invariants: every site equals central; no register breaks a rule; no
//! accepted write is lost (present, superseded by a later stamp, or in the rejection log); the
//! journal is consistent (J1–J2).

mod invariants;
mod rng;
pub mod scenario;
mod svg;
mod workload;
mod world;

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
pub use svg::{svg, timeline_svg};
use workload::price;

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
    /// Of those, deletes (a record's tombstone), at the remotes and at central.
    pub deletes: u64,
    /// Forbidden attempts, all refused with their rule.
    pub forbidden_refused: u64,
    /// Changes refused at central (rejection log).
    pub rejections: u64,
    /// Central's refusals as its monitor logs them, by rule (the rule's name), those decided
    /// by the replicator included (`R2`: a change lost at central to a later write of its own
    /// site that the site knew, returned with central's value).
    pub rejections_by_rule: BTreeMap<String, u64>,
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
    /// Each remote store central refused to take its site's changes from (R1), in order: the
    /// remote's code and central's reason. The person responsible reprovisioned the site.
    pub refused_stores: Vec<String>,
    /// The sync schedule as it happened and each remote's staleness, for drawing (`--svg`);
    /// not in the JSON report.
    #[serde(skip)]
    pub timeline: Timeline,
}

/// The sync schedule of a run and each remote's staleness, in virtual UTC milliseconds: what
/// [`svg`] draws.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timeline {
    /// What the drawing is of (the seed, or the scenario).
    pub title: String,
    /// Start and end of the run.
    pub span_ms: (u64, u64),
    /// Central's common return time, each day.
    pub common_returns_ms: Vec<u64>,
    /// Sites, central first: code and time zone.
    pub lanes: Vec<(String, String)>,
    /// Flows: lane index, kind (`emission`, `return`, `applied`), time.
    pub marks: Vec<(usize, &'static str, u64)>,
    /// Each lane's staleness over the run, as the monitor computes it
    /// (`outpost_replicator::monitor::staleness_series`): `(time, staleness)` points, both in
    /// ms. Central's lane (the first) is empty: it is where the information comes from.
    pub staleness_ms: Vec<Vec<(u64, u64)>>,
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
/// How far back the person responsible reads the journal each day for held emissions.
const JOURNAL_LOOK_BACK: u64 = 7 * DAY;
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
    own_docs: Vec<(String, String)>,
    registers: Vec<String>,
    reserved: Vec<(String, String)>,
    key_seq: u64,
    /// The bootstrap file it was first set up from, kept on a shelf (R1: a reinstall).
    bootstrap: Vec<u8>,
    /// Its last backup (R1: a restore).
    backup: Option<Store>,
    /// The shop closed and was removed from the deployment (C4): nothing happens to it any more.
    closed: bool,
    /// From this time on (UTC ms), the shop's machine is switched off every night from an hour
    /// before its fixed fetch time (local, as its executor follows it) for ten hours: it wakes
    /// more than six hours after the fetch time ([`World::awake_at`]).
    asleep: Option<u64>,
    /// Which store this is, of those the shop had (a new one at each restore, reinstall or
    /// reprovisioning): 0 for the first, then numbered across the run.
    instance: u64,
}

/// A key the engine gave (`new_key`) to a new record.
struct GivenKey {
    table: String,
    key: String,
    /// The commit that wrote the new record (its stamp tells it from a commit a store put back
    /// from a backup numbered alike).
    marker: Marker,
    /// The writer's store (remote index, instance); `None` for central's.
    store: Option<(usize, u64)>,
    /// The writer's store held a record under that key already: the new one was written into it.
    held: bool,
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
    /// A shop closes: it syncs a last time and is removed from the deployment (C4).
    Close(usize),
    /// A till of the shop opens a sales document and holds it reserved: the write is held back
    /// from emissions until released (R7).
    HeldEdit(usize),
    /// The shop corrects what it has just keyed in: every field its last commit wrote is
    /// written again, so that nothing of that commit is left to travel (R1: written over before
    /// its next sync).
    Retype(usize),
    /// The shop deletes a record: a customer or prospect it knows (whoever created it: R2
    /// against the others' edits), or a document of its own not yet synced; now and then one it
    /// may not delete (R5, R6), which must be refused with its rule.
    Delete(usize),
    /// Central withdraws or grants the shop's permission to write stock documents (R4/R9): the
    /// shop learns it with its next return; what it wrote meanwhile under the old permission
    /// central refuses with its rule and returns.
    Permissions(usize),
    /// A shop opens: central adds it (`central add-remote`), it is set up from its bootstrap
    /// and works from then on like the others.
    Open,
    /// Central's clock is set this far ahead of the time (0: set right again): what central
    /// writes meanwhile is stamped ahead, the shops take those stamps and stamp their writes
    /// after them — and must not be held for it once central's clock is right (R2).
    CentralClock(i64),
    /// A shop's clock follows central's running ahead (both take their time from the same wrong
    /// server): it runs this far ahead from then on, until central holds its emissions and the
    /// person responsible sets it right and restamps (R2).
    ShopClock(usize, i64),
    /// Central's store is backed up (`outpost central backup`).
    CentralBackup,
    /// Central's disk is lost and its last backup put back in place (`outpost central
    /// restore`), its daemon started again. With `true`, a copy of that backup is kept for
    /// [`Event::CentralRestoreAgain`].
    CentralRestore(bool),
    /// The restored central's disk is lost too, a day later, and a backup put back again: the
    /// same as the restore before (`false`), or the older one of the restore before that
    /// (`true`; the copies the restores kept).
    CentralRestoreAgain(bool),
    /// After central's restore, a shop closed since the backup (back in the restored
    /// configuration) is synced once more and removed again, once central has heard from every
    /// remote (docs/OPERATIONS.md). Happens to a closed shop: not skipped for it.
    RemoveAgain(usize),
    /// A manual shop's clock runs two minutes past the bound and its emission is held; the person
    /// responsible sets the clock right, the shop writes its next emission to the stick, is
    /// restamped, and the stick reaches central minutes later, its write now within the bound;
    /// the shop then edits the same field again (R2: the edit loses at central to the old write
    /// stamped later, and must be returned refused, or the shop keeps it alone). The step of
    /// the sequence, 0 to 4 ([`World::stick_race`]), and whether the edit's emission reaches
    /// central before the stick (the stick then comes in after it, as a late file does). At a
    /// network shop the same with central out of its reach from the clock's setting right to
    /// step 3: its emission waits in the outbox while it is restamped, and goes first when
    /// central is back (so before the edit's emission either way).
    StickRace(usize, u8, bool),
    /// A shop numbers a sales document, its clock then runs a day ahead, it writes the document
    /// twice and a till reserves it (R7), and it syncs: nothing stamped ahead travels (the
    /// document is held back), so central takes the emission, and its return confirms the
    /// number of the first write, which travelled in none. Two minutes later the shop keys in a
    /// customer, stamped a day ahead, and syncs: central must hold that emission (R2) — the
    /// confirmed number vouches for no stamp central never saw. The step, 0 or 1
    /// ([`World::reserved_ahead`]).
    ReservedAhead(usize, u8),
    /// Someone at a shop syncing on demand without a host program asking every day asks for a
    /// sync (every few days).
    AskSync(usize),
}

impl Event {
    /// The remote it happens to, if one.
    fn remote(self) -> Option<usize> {
        match self {
            Event::Workload(i)
            | Event::RemoteWake(i)
            | Event::Noon(i)
            | Event::ScheduleChange(i)
            | Event::Reinstall(i)
            | Event::Backup(i)
            | Event::Restore(i)
            | Event::Close(i)
            | Event::HeldEdit(i)
            | Event::Retype(i)
            | Event::Delete(i)
            | Event::Permissions(i)
            | Event::ShopClock(i, _)
            | Event::StickRace(i, _, _)
            | Event::ReservedAhead(i, _)
            | Event::AskSync(i) => Some(i),
            Event::CentralWake
            | Event::CentralPrices
            | Event::CentralClock(_)
            | Event::Open
            | Event::CentralBackup
            | Event::CentralRestore(_)
            | Event::CentralRestoreAgain(_)
            | Event::RemoveAgain(_) => None,
        }
    }
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
                    seq: raw.created.dot.seq,
                }),
                Slot::Tombstone => raw.tombstone.map(|r| r.marker()),
                Slot::Field(f) => raw.fields.get(f).map(|r| r.marker()),
            });
        // The schema is built only for a creation (the checks ask for many fields).
        let is_document = || {
            retail::schema()
                .table(&self.table)
                .is_some_and(outpost_engine::TableDef::is_document)
        };
        Ok(match (&self.slot, held) {
            // A document's creation is the first central received (R1/R5): another one is
            // kept only if it is that one (else it is refused, in a rejection log).
            (Slot::Created, Some(m)) if is_document() => m == self.marker,
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
    /// Known kept at central (this write or a later one to the same place) since central's
    /// last restore: that stays true until central's store is replaced or the write is stamped
    /// again, so the checks after a lost store need not look it up again.
    at_central: bool,
}

struct World {
    cfg: SimConfig,
    rng: Rng,
    /// The deletes' own generator ([`Event::Delete`], central's deletes): the rest of the run
    /// draws from `rng` as it did before deletes were simulated.
    deletes_rng: Rng,
    /// The generator of the shops that open during the run ([`Event::Open`]) and of their days.
    opens_rng: Rng,
    now: u64,
    central: Store,
    central_clock: ManualClock,
    /// How far central's clock is ahead of the time ([`Event::CentralClock`]).
    central_skew_ms: i64,
    /// Central's clock has run ahead in this run ([`Event::CentralClock`]): stamps ahead of the
    /// time are then legitimate, and [`SimNet`] stops watching for changes taken too far ahead.
    central_was_ahead: bool,
    automaton: CentralAutomaton,
    remotes: Vec<Remote>,
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    accepted: Vec<Accepted>,
    commit_time: HashMap<Dot, u64>,
    /// Each site's newest own commit.
    newest_own: HashMap<SiteId, u64>,
    /// Each site's last commit: the places it wrote (for [`Event::Retype`]).
    last_commit: HashMap<SiteId, Vec<(String, String, Slot)>>,
    staleness: BTreeMap<usize, Vec<u64>>,
    report: Report,
    central_wake: u64,
    /// Central's last backup, if one was taken.
    central_backup: Option<Store>,
    /// Copies of the backups central was restored from, oldest first, to restore one again
    /// ([`Event::CentralRestoreAgain`]).
    central_restored_backups: Vec<Store>,
    /// The generator of the faults of files carried by hand (late files): the rest of the run
    /// draws from `rng` as it did before they were simulated.
    files_rng: Rng,
    /// The generator of the operator's imports at central ([`SimNet::upload`]).
    imports_rng: Rng,
    /// Each manual remote's files on their way by hand, late (by remote index).
    sticks: HashMap<usize, Stick>,
    /// The shop and the customer of the sequence under way ([`Event::StickRace`]); `None` once
    /// a step could not be played as planned (the rest is skipped).
    stick_race: Option<(usize, String)>,
    /// The shop of the sequence under way ([`Event::ReservedAhead`]).
    reserved_ahead: Option<usize>,
    /// The generator of central's records numbered by the engine (`new_key`).
    keys_rng: Rng,
    /// Every key the engine gave (`new_key`).
    new_keys: Vec<GivenKey>,
    /// The stores central refused (remote index, instance): their writes it did not take were
    /// refused with them.
    refused_instances: BTreeSet<(usize, u64)>,
    /// The next store instance number ([`Remote::instance`]).
    next_instance: u64,
    /// What the liveness check keeps ([`World::check_liveness`]).
    liveness: Liveness,
}

/// The liveness check's bookkeeping.
#[derive(Default)]
struct Liveness {
    /// Since when each remote has been owed a return it has not applied (an emission of it that
    /// a return answers was processed, or a return was made for it), by site; and from when the
    /// count runs (later when the network lost a return meanwhile).
    owed: BTreeMap<SiteId, (u64, u64)>,
    /// When each return was made: (remote, the return's number) → time; those a remote has
    /// applied, or that an applied one follows, are forgotten.
    made: BTreeMap<(SiteId, u64), u64>,
    /// Each remote's newest return applied, as its last check saw it.
    applied_seen: HashMap<usize, u64>,
}

impl Liveness {
    /// The returns `run` made, owed to their remotes since `now`.
    fn returns_made(&mut self, run: &outpost_replicator::automaton::CentralRun, now: u64) {
        for (site, id) in &run.returns {
            self.owed.entry(*site).or_insert((now, now));
            self.made.insert((*site, id.seq), now);
        }
    }
}

/// A remote's flows on their way. Of a remote syncing on physical media, the files left on the
/// stick: delivered after later ones (an emission at central after the next emission; a return
/// at the shop after the next return, or once nothing newer is at central). Of a network
/// shop, its outbox.
#[derive(Default)]
struct Stick {
    emission: Option<Vec<u8>>,
    /// The next emission is carried by hand later ([`Event::StickRace`]): it stays on the stick
    /// until brought, with nothing drawn from the files' generator.
    carry_next: bool,
    /// A return's bytes and the emission it answers.
    ret: Option<(Option<u64>, Vec<u8>)>,
    /// A network shop's emissions written and not yet held by central, oldest first: its
    /// `outbox/` in production (`outpost remote sync`), sent again whole, before anything
    /// else, at its next sync. Gone with the store it was made from (the same disk).
    outbox: Vec<Vec<u8>>,
    /// Central is out of the network shop's reach until this time (simulated UTC ms,
    /// [`Event::StickRace`] at a network shop): its uploads and fetches fail, with nothing drawn
    /// from the run's generator, and what it emits stays in the outbox.
    offline_until: u64,
}

/// What went wrong between a remote and central in the simulator.
#[derive(Debug)]
enum Carry {
    /// The upload was cut (a fault): the remote tries again later.
    Cut,
    /// Central does not take the emission yet (its restore waits for every remote's report).
    Deferred,
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
            Carry::Deferred => f.write_str("emission not taken yet"),
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

/// What became of a remote executor's run: `Ok(Some(why))` when central refused its store (R1).
/// Any other failure is the simulation's error (the simulated network only cuts, duplicates and
/// loses; it never refuses).
fn carried(run: RemoteRun<Carry>) -> Result<Option<String>, SimError> {
    match run.failed.into_iter().next() {
        None => Ok(None),
        Some(Failure::Transport(Carry::WrongStore(why))) => Ok(Some(why)),
        Some(Failure::Transport(Carry::Failed(e))) => Err(e),
        Some(Failure::Transport(Carry::Cut | Carry::Deferred)) => {
            Err(bad("a transient upload failure counted as a failure"))
        }
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
    files_rng: &'a mut Rng,
    imports_rng: &'a mut Rng,
    stick: &'a mut Stick,
    /// Central's clock now (UTC ms), and whether to watch that central takes no change stamped
    /// beyond its bound ahead of it (R2): not once central's own clock has run ahead in the run.
    central_now_ms: u64,
    watch_ahead: bool,
    /// Central is out of reach ([`Stick::offline_until`]).
    offline: bool,
    /// Central said it does not take this site's emissions yet (its restore waits for other
    /// remotes' reports): the rest of this sync does not send the outbox again (as production).
    not_yet: bool,
    /// The returns owed to the remotes ([`World::check_liveness`]), and the time.
    liveness: &'a mut Liveness,
    now: u64,
}

impl SimNet<'_> {
    fn count(&mut self, kind: &str) {
        *self
            .report
            .faults_injected
            .entry(kind.to_owned())
            .or_insert(0) += 1;
    }

    fn fault(&mut self, kind: &str, permille: u64) -> bool {
        let hit = self.faults && self.rng.chance(permille);
        if hit {
            self.count(kind);
        }
        hit
    }

    /// A file carried by hand is left on the stick, or lost on the way (manual remotes only),
    /// drawn from the files' own generator.
    fn left_on_stick(&mut self, kind: &str, permille: u64) -> bool {
        let hit = self.faults && self.manual && self.files_rng.chance(permille);
        if hit {
            self.count(kind);
        }
        hit
    }

    /// Central's automaton processes a file-ready emission, whose bytes are `bytes`.
    fn process(&mut self, id: outpost_replicator::FlowId, bytes: &[u8]) -> Result<(), Carry> {
        let ahead = if self.watch_ahead {
            self.stamped_ahead(bytes)
        } else {
            Vec::new()
        };
        let cmds = self.automaton.on_flow_ready(id);
        let mut answered = false;
        if !cmds.is_empty() {
            let run = run_central(self.central, self.automaton, cmds)?;
            self.liveness.returns_made(&run, self.now);
            answered = run.returns.iter().any(|(site, _)| *site == id.site);
        }
        // Owed a return unless it asked for none, or central holds it (a clock ahead: its
        // next emission supersedes it) or refused it.
        let row = journal::row(self.central, id)?;
        let held = row
            .as_ref()
            .is_none_or(|r| !matches!(r.hold, Hold::None) || r.exec_end_ms.is_none());
        let mode = outpost_replicator::flow::FlowReader::open(bytes).map(|r| r.header().mode);
        if !held && mode.as_ref().is_ok_and(|m| *m != SyncMode::NoReturn) {
            self.liveness
                .owed
                .entry(id.site)
                .or_insert((self.now, self.now));
        }
        // M2, A3: an immediate sync's emission is answered at once.
        if !held && mode.is_ok_and(|m| m == SyncMode::Immediate) && !answered {
            self.report.violations.push(format!(
                "{}'s immediate emission {id} was processed and answered by no return (M2)",
                self.code
            ));
        }
        // R2: a change stamped beyond the bound ahead of central's clock is held with its
        // emission, never taken — central's own clock never ran ahead in this run, so no site
        // holds stamps as late that could vouch for it.
        let snap = self.central.snapshot()?;
        for c in ahead {
            let Some(raw) = snap.raw_record(&c.table, &c.key)? else {
                continue;
            };
            let taken = match &c.slot {
                Slot::Created => raw.created.dot == c.dot && raw.created.stamp == c.stamp,
                Slot::Tombstone => raw.tombstone.is_some_and(|r| r.dot == c.dot),
                Slot::Field(f) => raw.fields.get(f).is_some_and(|r| r.dot == c.dot),
            };
            if taken {
                self.report.violations.push(format!(
                    "central took {}'s change {}/{}.{} stamped {} min ahead of its clock \
                     (the bound is {} min)",
                    self.code,
                    c.table,
                    c.key,
                    c.slot,
                    (c.stamp.physical_ms() - self.central_now_ms) / MINUTE,
                    self.central.skew_ms_max() / MINUTE
                ));
            }
        }
        Ok(())
    }

    /// The changes of the flow `bytes` stamped beyond central's bound ahead of its clock.
    fn stamped_ahead(&self, bytes: &[u8]) -> Vec<outpost_engine::Change> {
        let limit = self.central_now_ms + self.central.skew_ms_max();
        let mut ahead = Vec::new();
        let Ok(mut reader) = outpost_replicator::flow::FlowReader::open(bytes) else {
            return ahead;
        };
        while let Ok(Some(item)) = reader.next_item() {
            if let outpost_replicator::flow::Item::Changes(changes) = item {
                ahead.extend(
                    changes
                        .into_iter()
                        .filter(|c| c.stamp.physical_ms() > limit),
                );
            }
        }
        ahead
    }

    /// A network shop's sync as production's (`emit_and_send`): what waits in the outbox is
    /// sent first; if the newest of it already carries everything of this mode, it is this
    /// sync's emission; otherwise a new one is written to the outbox and sent.
    fn emit_and_send(
        &mut self,
        store: &Store,
        mode: SyncMode,
    ) -> Result<outpost_replicator::FlowId, Carry> {
        let newest = match self.stick.outbox.last() {
            Some(bytes) => Some(
                outpost_replicator::flow::FlowReader::open(bytes.as_slice())
                    .map_err(|e| bad(&format!("an emission in the outbox: {e}")))?
                    .header()
                    .clone(),
            ),
            None => None,
        };
        self.send_outbox(store, false)?;
        if let Some(h) = newest {
            let own = store.site().id;
            if h.mode == mode
                && store
                    .knowledge()
                    .only(own)
                    .difference(&h.covered)
                    .is_empty()
            {
                return Ok(h.id);
            }
        }
        let (bytes, emitted) = remote::emit(store, Vec::new(), mode, false)?;
        self.stick.outbox.push(bytes);
        let sent = self.send_outbox(store, true);
        if matches!(sent, Err(Carry::Cut | Carry::Deferred)) {
            self.count("emission_left_in_the_outbox");
        }
        sent.map(|()| emitted.id)
    }

    /// Sends a network shop's outbox, oldest first; an emission leaves it once central holds
    /// it. A cut or a deferral stops the sending (tried again at the next sync); an emission
    /// central refuses (R1: the store does not speak for its site) is set aside. `fresh`: the
    /// outbox holds only the emission this sync has just written.
    fn send_outbox(&mut self, store: &Store, fresh: bool) -> Result<(), Carry> {
        let site = store.site().id;
        while let Some(bytes) = self.stick.outbox.first().cloned() {
            match self.upload(site, &bytes) {
                Ok(()) => {}
                Err(e @ Carry::WrongStore(_)) => {
                    self.stick.outbox.remove(0);
                    if !fresh {
                        self.count("outbox_emission_refused");
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
            self.stick.outbox.remove(0);
            // Over the network the remote learns central's acknowledgement (production asks
            // for it before its next emission, `GET /v1/acknowledgement`; here it comes once
            // this one is processed, earlier than production would ask); files on physical
            // media do not.
            if !self.fault("ack_lost", 30) {
                let ack = central::acknowledgement(self.central, site)?;
                remote::record_acknowledgement(store, &ack)?;
            }
        }
        Ok(())
    }

    /// An emission's bytes reach central (uploaded, or a file brought by hand), with the
    /// faults of the way: cut, duplicated, central crashing before it commits its processing.
    fn upload(&mut self, site: SiteId, bytes: &[u8]) -> Result<(), Carry> {
        if self.offline {
            return Err(Carry::Cut);
        }
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
        let received = match central::receive(self.central, bytes, Some(site)) {
            Err(outpost_replicator::Error::WrongStore(why)) => return Err(Carry::WrongStore(why)),
            // Not yet (central's restore waits for every remote's report): sent again later.
            Err(outpost_replicator::Error::Deferred(_)) => {
                self.count("emission_put_off");
                return Err(Carry::Deferred);
            }
            other => other?,
        };
        if self.fault("file_duplicated", 30) {
            let again = central::receive(self.central, bytes, Some(site))?;
            if !matches!(again, Received::Duplicate(_)) {
                self.report
                    .violations
                    .push("a duplicated emission was not recognised".into());
            }
        }
        if let Received::Ready { id, .. } = received {
            // Now and then the operator's `central import`, run inside the daemon, processes
            // every emission waiting before the automaton gets to this one: a generator of its
            // own.
            // Not while an emission cut off by a crash waits: production's daemon sweeps it
            // first when it starts again, and an import waits for the daemon's work.
            let imported = self.faults
                && self.imports_rng.chance(30)
                && central::pending_emissions(self.central)? == [id];
            if imported {
                central::process_ready(self.central)?;
                self.count("emission_processed_by_an_import");
            }
            // (Drawn either way, so that an import changes no other draw.)
            let crash = self.faults && self.rng.chance(20);
            if crash && !imported {
                self.count("central_crash_mid_apply");
                // Processing starts and the process dies before it commits; the restarted
                // automaton's sweep redoes it.
                central::begin_processing(self.central, id)?;
            } else {
                self.process(id, bytes)?;
            }
        }
        Ok(())
    }

    /// The emission left on the stick reaches central at last, after a later one. Nothing of it
    /// may be lost or condemn the store: a refusal is counted, and looked at by the run's checks
    /// (the remote's later emissions carry again what central lacks).
    fn deliver_late_emission(&mut self, site: SiteId) -> Result<(), Carry> {
        let Some(bytes) = self.stick.emission.take() else {
            return Ok(());
        };
        let outcome = match central::receive(self.central, bytes.as_slice(), Some(site)) {
            Ok(Received::Ready { id, .. }) => {
                self.process(id, &bytes)?;
                "late_emission_taken"
            }
            Ok(Received::Duplicate(_)) => "late_emission_duplicate",
            Err(outpost_replicator::Error::WrongStore(_)) => "late_emission_refused",
            Err(outpost_replicator::Error::Deferred(_)) => {
                // Central's restore waits for every remote's report: brought again next time.
                self.stick.emission = Some(bytes);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        self.count(outcome);
        Ok(())
    }
}

impl RemoteTransport for SimNet<'_> {
    type Error = Carry;

    fn is_transient(error: &Carry) -> bool {
        matches!(error, Carry::Cut | Carry::Deferred)
    }

    fn emit(&mut self, store: &Store, mode: SyncMode) -> Result<outpost_replicator::FlowId, Carry> {
        if !self.manual {
            let sent = self.emit_and_send(store, mode);
            if matches!(sent, Err(Carry::Deferred)) {
                self.not_yet = true;
            }
            return sent;
        }
        let site = store.site().id;
        let (bytes, emitted) = remote::emit(store, Vec::new(), mode, false)?;
        if std::mem::take(&mut self.stick.carry_next) {
            self.stick.emission = Some(bytes);
            return Ok(emitted.id);
        }
        if self.left_on_stick("emission_file_lost", 20) {
            // The shop believes it handed the file over; it never reaches central.
            return Ok(emitted.id);
        }
        if self.stick.emission.is_none() && self.left_on_stick("emission_file_late", 60) {
            // The shop believes it handed the file over; it reaches central after the next.
            self.stick.emission = Some(bytes);
            return Ok(emitted.id);
        }
        self.upload(site, &bytes)?;
        self.deliver_late_emission(site)?;
        Ok(emitted.id)
    }

    fn fetch_return(
        &mut self,
        store: &Store,
        after: u64,
        _wait_ms: u64,
    ) -> Result<Option<Fetched<'_>>, Carry> {
        // A network shop sends its outbox first (as production). Once central has said it does
        // not take this site's emissions yet, only a return already prepared is fetched.
        if self.offline {
            return Err(Carry::Cut);
        }
        let mut deferred = false;
        if !self.manual && !self.not_yet {
            match self.send_outbox(store, false) {
                Ok(()) => {}
                Err(Carry::Deferred) => {
                    self.not_yet = true;
                    deferred = true;
                }
                Err(e) => return Err(e),
            }
        }
        let Some((id, mut reader)) = central::fetch_return(self.central, store.site().id, after)?
        else {
            if deferred {
                return Err(Carry::Deferred);
            }
            // Nothing newer at central: the return left on the stick is brought now, older
            // than (or the same as) what the shop applied since.
            return Ok(self.stick.ret.take().map(|(answers, bytes)| Fetched {
                answers,
                reader: Box::new(std::io::Cursor::new(bytes)),
            }));
        };
        if self.fault("return_lost", 40) {
            // The network's doing, not the system's: the liveness count starts again.
            if let Some((_, count_from)) = self.liveness.owed.get_mut(&store.site().id) {
                *count_from = self.now;
            }
            return Ok(None);
        }
        let answers = journal::row(self.central, id)?
            .and_then(|r| r.link)
            .map(|l| l.seq);
        if self.stick.ret.is_none() && self.left_on_stick("return_file_late", 60) {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut bytes)
                .map_err(outpost_replicator::Error::Io)?;
            self.stick.ret = Some((answers, bytes));
            return Ok(None);
        }
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

fn bad(what: &str) -> SimError {
    SimError::Replicator(outpost_replicator::Error::Refused(format!(
        "simulation setup: {what}"
    )))
}

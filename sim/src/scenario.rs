//! Scripted scenarios: a TOML file of sites and timed steps, run through the same stores,
//! replicator and automatons as the random runs (format in docs/scenarios.md). The stores are
//! real files in a directory, so a `crash` restarts a site from its durable state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use outpost_engine::{Clock, FieldKind, ManualClock, Site, SiteId, Store, StoreConfig, Value};
use outpost_replicator::automaton::{
    Activity, CentralAutomaton, Command, RemoteCommand, run_central,
};
use outpost_replicator::central::{self, Received};
use outpost_replicator::config::{RemoteSchedule, RemoteSettings, SyncConfig, SyncType};
use outpost_replicator::executor::{Fetched, RemoteExecutor, RemoteTransport, SyncAsk};
use outpost_replicator::remote;
use outpost_replicator::schedule::{HhMm, Zone};
use outpost_replicator::{SyncMode, journal};
use serde::{Deserialize, Serialize};

use crate::{Carry, SimError, carried};
use outpost::retail;

/// A scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// `YYYY-MM-DDTHH:MM` in central's time zone.
    pub start: String,
    /// How many days to run.
    pub days: u32,
    /// Central.
    pub central: CentralDecl,
    /// The remotes.
    #[serde(default)]
    pub remote: Vec<RemoteDecl>,
    /// The steps, in file order.
    #[serde(default)]
    pub step: Vec<Step>,
}

/// `[central]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CentralDecl {
    /// Establishment code.
    pub code: String,
    /// Site id.
    pub id: u16,
    /// IANA time zone.
    pub tz: String,
    /// The common deferred-return time, `HH:MM`.
    pub deferred_return_at: String,
}

/// `[[remote]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteDecl {
    /// Establishment code.
    pub code: String,
    /// Site id.
    pub id: u16,
    /// IANA time zone.
    pub tz: String,
    /// `fixed`, `immediate`, `no-return` or `manual`.
    pub sync: String,
    /// Fixed: local emission time.
    pub emit_at: Option<String>,
    /// Fixed: local return-fetch time.
    pub fetch_return_at: Option<String>,
    /// Immediate: how long to wait for the return, like `60s` or `5m`.
    pub wait: Option<String>,
    /// `false`: may not write stock documents (R4/R9).
    pub stock_documents: Option<bool>,
}

/// A record reference.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordRef {
    /// Table.
    pub table: String,
    /// Key.
    pub key: String,
}

/// `put = { table, key, fields }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Put {
    /// Table.
    pub table: String,
    /// Key.
    pub key: String,
    /// Field values.
    pub fields: BTreeMap<String, toml::Value>,
}

/// `export`/`import = { file, for }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    /// The file's name on the "USB stick".
    pub file: String,
    /// At central: the remote whose return to export.
    #[serde(rename = "for")]
    pub for_site: Option<String>,
}

/// `close_register = { key }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    /// Key.
    pub key: String,
}

/// `admin_config = { setting, value }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `emit_at`, `fetch_return_at`, or a raw setting name.
    pub setting: String,
    /// The value.
    pub value: String,
}

/// `expect = { table, key, field, equals }` or `{ table, key, absent = true }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Table.
    pub table: String,
    /// Key.
    pub key: String,
    /// Field.
    pub field: Option<String>,
    /// Expected value.
    pub equals: Option<toml::Value>,
    /// The record must not be there.
    pub absent: Option<bool>,
    /// The establishment that created the record (R1).
    pub creator: Option<String>,
}

/// One step: the site acts at its local time; at most one operation ([`Op`]). Read from the
/// file's `[[step]]` table, whose keys name the operation (`put = {…}`, `cut = true`…).
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "RawStep")]
pub struct Step {
    /// `YYYY-MM-DDTHH:MM`, local to the acting site.
    pub at: String,
    /// The acting site's code.
    pub site: String,
    /// The workstation user acting at that site (S3: several users share one site's store);
    /// `user` by default. Reservations are held by a user.
    pub user: Option<String>,
    /// What the step does; `None`: nothing (a step that only marks a time).
    pub op: Option<Op>,
    /// The operation must fail with this rule (`R6`, `R4/R9`…).
    pub expect_error: Option<String>,
}

/// A step's operation.
#[derive(Clone, Debug)]
pub enum Op {
    /// Write fields.
    Put(Put),
    /// Delete a record.
    Delete(RecordRef),
    /// Reserve a document (R7).
    Reserve(RecordRef),
    /// Release it.
    Release(RecordRef),
    /// Close a cash register (R8).
    CloseRegister(KeyRef),
    /// Ask for a sync now: `immediate` or `no-return`.
    Sync(String),
    /// Write a flow file (a remote's emission; at central, a return `for` a remote).
    Export(FileRef),
    /// Read a flow file.
    Import(FileRef),
    /// Cut a flow file to half its length (a copy interrupted half-way).
    Damage(FileRef),
    /// Network down for the site.
    Cut,
    /// Network back.
    Heal,
    /// Crash and restart from durable state.
    Crash,
    /// The site's program stops.
    Down,
    /// It starts again.
    Up,
    /// Clock offset, like `+3h`, `-2d`, `+15m`.
    Skew(String),
    /// A remote admin's local settings edit (C6).
    AdminConfig(AdminConfig),
    /// A check.
    Expect(Expect),
}

impl TryFrom<RawStep> for Step {
    type Error = String;

    /// The step with its one operation; two operations in one step are refused (the file says
    /// which step).
    fn try_from(raw: RawStep) -> Result<Self, String> {
        let flag = |set: Option<bool>, op: Op| set.unwrap_or(false).then_some(op);
        let ops: Vec<Op> = [
            raw.put.map(Op::Put),
            raw.delete.map(Op::Delete),
            raw.reserve.map(Op::Reserve),
            raw.release.map(Op::Release),
            raw.close_register.map(Op::CloseRegister),
            raw.sync.map(Op::Sync),
            raw.export.map(Op::Export),
            raw.import.map(Op::Import),
            raw.damage.map(Op::Damage),
            flag(raw.cut, Op::Cut),
            flag(raw.heal, Op::Heal),
            flag(raw.crash, Op::Crash),
            flag(raw.down, Op::Down),
            flag(raw.up, Op::Up),
            raw.skew.map(Op::Skew),
            raw.admin_config.map(Op::AdminConfig),
            raw.expect.map(Op::Expect),
        ]
        .into_iter()
        .flatten()
        .collect();
        if ops.len() > 1 {
            return Err(format!(
                "the step at {} for {} has {} operations: give each its own step",
                raw.at,
                raw.site,
                ops.len()
            ));
        }
        Ok(Step {
            at: raw.at,
            site: raw.site,
            user: raw.user,
            op: ops.into_iter().next(),
            expect_error: raw.expect_error,
        })
    }
}

/// A `[[step]]` table as the file writes it: one key per operation.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    /// `YYYY-MM-DDTHH:MM`, local to the acting site.
    pub at: String,
    /// The acting site's code.
    pub site: String,
    /// The workstation user acting at that site (S3: several users share one site's store);
    /// `user` by default. Reservations are held by a user.
    pub user: Option<String>,
    /// Write fields.
    pub put: Option<Put>,
    /// Delete a record.
    pub delete: Option<RecordRef>,
    /// Reserve a document (R7).
    pub reserve: Option<RecordRef>,
    /// Release it.
    pub release: Option<RecordRef>,
    /// Close a cash register (R8).
    pub close_register: Option<KeyRef>,
    /// Ask for a sync now: `immediate` or `no-return`.
    pub sync: Option<String>,
    /// Write a flow file (a remote's emission; at central, a return `for` a remote).
    pub export: Option<FileRef>,
    /// Read a flow file.
    pub import: Option<FileRef>,
    /// Cut a flow file to half its length (a copy interrupted half-way).
    pub damage: Option<FileRef>,
    /// Network down for the site.
    pub cut: Option<bool>,
    /// Network back.
    pub heal: Option<bool>,
    /// Crash and restart from durable state.
    pub crash: Option<bool>,
    /// The site's program stops.
    pub down: Option<bool>,
    /// It starts again.
    pub up: Option<bool>,
    /// Clock offset, like `+3h`, `-2d`, `+15m`.
    pub skew: Option<String>,
    /// A remote admin's local settings edit (C6).
    pub admin_config: Option<AdminConfig>,
    /// A check.
    pub expect: Option<Expect>,
    /// The operation must fail with this rule (`R6`, `R4/R9`…).
    pub expect_error: Option<String>,
}

/// One step's outcome, in file order.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StepOutcome {
    /// The step's `at`.
    pub at: String,
    /// The acting site.
    pub site: String,
    /// Whether the operation did what the step says (an `expect_error` step is ok when refused).
    pub ok: bool,
    /// The error, if the operation failed.
    pub error: Option<String>,
}

/// A journal row in the report.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct JournalEntry {
    /// SynID.
    pub syn_id: String,
    /// Emission, return, bootstrap.
    pub kind: String,
    /// The remote.
    pub site: String,
    /// Sync mode.
    pub mode: String,
    /// Link (0 = none).
    pub link: String,
    /// File ready, central local time.
    pub file_ready: Option<String>,
    /// Execution start.
    pub exec_start: Option<String>,
    /// Execution end.
    pub exec_end: Option<String>,
    /// Executions.
    pub exec_count: u32,
    /// Refused by remote.
    pub refused: bool,
}

/// A rejection in the report.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RejectionEntry {
    /// The site that sent it.
    pub site: String,
    /// Table.
    pub table: String,
    /// Key.
    pub key: String,
    /// Field.
    pub field: Option<String>,
    /// Rule.
    pub rule: String,
}

/// One thing central's automaton did.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ActivityEntry {
    /// Central's local time, `YYYY-MM-DD HH:MM`.
    pub at: String,
    /// `Tra Dnn` or `Ret Dnn`, as the automaton shows it.
    pub activity: String,
}

/// One site's data: table → key → field → value (as text).
pub type SiteData = BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>;

/// A scenario's report.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ScenarioReport {
    /// code → table → key → field → value (as text).
    pub sites: BTreeMap<String, SiteData>,
    /// Central's journal.
    pub journal: Vec<JournalEntry>,
    /// Central's rejection log.
    pub rejections: Vec<RejectionEntry>,
    /// What central's automaton did (A1, A2), in time order: `Tra D02` (processing remote 2's
    /// emission), `Ret D02` (building its return), at central's local time.
    pub activities: Vec<ActivityEntry>,
    /// Each step, in file order.
    pub steps: Vec<StepOutcome>,
    /// Every site equals central at the end (after a quiet round).
    pub converged: bool,
    /// Failed expectations and broken invariants.
    pub violations: Vec<String>,
    /// The schedule as it happened and each remote's staleness, for drawing
    /// ([`crate::timeline_svg`], `outpost sim --scenario FILE --svg OUT`); not in the JSON report.
    #[serde(skip)]
    pub timeline: crate::Timeline,
}

/// A scenario that cannot be run as written.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The TOML does not parse or does not fit the format.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A value that does not fit.
    #[error("{0}")]
    Invalid(String),
    /// Running it failed.
    #[error(transparent)]
    Sim(#[from] SimError),
}

/// Reads a scenario file.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError::Parse {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses a scenario's text; `name` names it in errors.
pub fn parse(text: &str, name: &str) -> Result<Scenario, ScenarioError> {
    toml::from_str(text).map_err(|e| ScenarioError::Parse {
        path: name.to_owned(),
        message: e.to_string(),
    })
}

impl Step {
    /// The step's operation in a few words.
    pub fn describe(&self) -> String {
        let rec = |verb: &str, r: &RecordRef| format!("{verb} {}/{}", r.table, r.key);
        let mut out = match &self.op {
            Some(Op::Put(p)) => {
                let fields: Vec<String> = p
                    .fields
                    .iter()
                    .map(|(f, v)| format!("{f}={}", toml_text(v)))
                    .collect();
                format!("writes {}/{} {}", p.table, p.key, fields.join(" "))
            }
            Some(Op::Delete(r)) => rec("deletes", r),
            Some(Op::Reserve(r)) => rec("reserves", r),
            Some(Op::Release(r)) => rec("releases", r),
            Some(Op::CloseRegister(k)) => format!("closes cash register {}", k.key),
            Some(Op::Sync(m)) => format!("asks for a {m} sync"),
            Some(Op::Export(f)) => format!("exports {}", f.file),
            Some(Op::Import(f)) => format!("imports {}", f.file),
            Some(Op::Damage(f)) => format!("damages {}", f.file),
            Some(Op::Expect(e)) => match (&e.field, e.absent) {
                (_, Some(true)) => format!("checks {}/{} is absent", e.table, e.key),
                (None, _) if e.creator.is_some() => format!(
                    "checks {}/{} was created by {}",
                    e.table,
                    e.key,
                    e.creator.as_deref().unwrap_or_default()
                ),
                (Some(f), _) => format!(
                    "checks {}/{}.{f} = {}",
                    e.table,
                    e.key,
                    e.equals.as_ref().map(toml_text).unwrap_or_default()
                ),
                _ => "checks".to_owned(),
            },
            Some(Op::AdminConfig(a)) => format!("admin sets {} = {}", a.setting, a.value),
            Some(Op::Skew(k)) => format!("clock moves {k}"),
            Some(Op::Cut) => "network cut".into(),
            Some(Op::Heal) => "network back".into(),
            Some(Op::Crash) => "crashes and restarts".into(),
            Some(Op::Down) => "stops".into(),
            Some(Op::Up) => "starts".into(),
            None => "does nothing".into(),
        };
        if let Some(rule) = &self.expect_error {
            out += &format!(" (must be refused: {rule})");
        }
        out
    }
}

fn invalid(msg: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid(msg.into())
}

fn zone(name: &str) -> Result<Zone, ScenarioError> {
    name.parse()
        .map_err(|e: outpost_replicator::schedule::UnknownZone| invalid(e.to_string()))
}

fn hhmm(s: &str) -> Result<HhMm, ScenarioError> {
    s.parse()
        .map_err(|e: outpost_replicator::schedule::BadTime| invalid(e.to_string()))
}

/// `YYYY-MM-DDTHH:MM` local to `zone`, as UTC ms.
fn instant(zone: Zone, at: &str) -> Result<u64, ScenarioError> {
    let (d, t) = at
        .split_once('T')
        .ok_or_else(|| invalid(format!("{at:?}: write YYYY-MM-DDTHH:MM")))?;
    let date = NaiveDate::parse_from_str(d, "%Y-%m-%d")
        .map_err(|_| invalid(format!("{at:?}: bad date")))?;
    Ok(zone.instant(date, hhmm(t)?))
}

fn duration_ms(s: &str) -> Result<i64, ScenarioError> {
    let bad = || {
        invalid(format!(
            "{s:?}: write a duration like 60s, 15m, 3h, 2d (with + or - for a skew)"
        ))
    };
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'-') => (-1, s.get(1..).ok_or_else(bad)?),
        Some(b'+') => (1, s.get(1..).ok_or_else(bad)?),
        _ => (1, s),
    };
    let unit = rest.chars().last().ok_or_else(bad)?;
    let n: i64 = rest
        .get(..rest.len() - 1)
        .ok_or_else(bad)?
        .parse()
        .map_err(|_| bad())?;
    let ms = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        _ => return Err(bad()),
    };
    Ok(sign * n * ms)
}

struct SRemote {
    code: String,
    zone: Zone,
    site: Site,
    store: Store,
    clock: ManualClock,
    skew_ms: i64,
    /// The same executor as `outpost remote run`, over the in-memory transport.
    executor: RemoteExecutor,
    up: bool,
    net: bool,
}

struct Runner {
    dir: PathBuf,
    central: Store,
    central_site: Site,
    central_zone: Zone,
    clock: ManualClock,
    automaton: CentralAutomaton,
    remotes: Vec<SRemote>,
    files: BTreeMap<String, Vec<u8>>,
    violations: Vec<String>,
    activities: Vec<ActivityEntry>,
}

fn open(dir: &Path, site: &Site, clock: &ManualClock) -> outpost_engine::Result<Store> {
    Store::open(
        dir.join(site.code.as_str()),
        StoreConfig::new(site.clone(), retail::schema(), clock.clone()),
    )
}

fn executor_of(store: &Store) -> Result<RemoteExecutor, ScenarioError> {
    RemoteExecutor::new(store).map_err(|e| invalid(e.to_string()))
}

/// Runs central's automaton on `cmds`, noting what it did (`Tra Dnn`, `Ret Dnn`).
fn run_central_noted(
    central: &Store,
    automaton: &mut CentralAutomaton,
    at: String,
    activities: &mut Vec<ActivityEntry>,
    cmds: Vec<Command>,
) -> Result<(), SimError> {
    if cmds.is_empty() {
        return Ok(());
    }
    let run = run_central(central, automaton, cmds)?;
    for id in &run.processed {
        if let Some(row) = journal::row(central, *id)? {
            activities.push(ActivityEntry {
                at: at.clone(),
                activity: Activity::Processing(row.site).to_string(),
            });
        }
    }
    for (site, _) in &run.returns {
        activities.push(ActivityEntry {
            at: at.clone(),
            activity: Activity::Returning(*site).to_string(),
        });
    }
    Ok(())
}

/// The in-memory network between a remote and central (cut by a `cut` step).
struct ScenarioNet<'a> {
    central: &'a Store,
    automaton: &'a mut CentralAutomaton,
    /// Central's local time, for the activities.
    at: String,
    activities: &'a mut Vec<ActivityEntry>,
    up: bool,
}

impl RemoteTransport for ScenarioNet<'_> {
    type Error = Carry;

    fn is_transient(error: &Carry) -> bool {
        matches!(error, Carry::Cut)
    }

    fn emit(&mut self, store: &Store, mode: SyncMode) -> Result<outpost_replicator::FlowId, Carry> {
        if !self.up {
            return Err(Carry::Cut);
        }
        let site = store.site().id;
        let (bytes, emitted) = remote::emit(store, Vec::new(), mode, true)?;
        if let Received::Ready { id, .. } =
            central::receive(self.central, bytes.as_slice(), Some(site))?
        {
            let cmds = self.automaton.on_flow_ready(id);
            run_central_noted(
                self.central,
                self.automaton,
                self.at.clone(),
                self.activities,
                cmds,
            )?;
        }
        let ack = central::acknowledgement(self.central, site)?;
        remote::record_acknowledgement(store, &ack)?;
        Ok(emitted.id)
    }

    fn fetch_return(
        &mut self,
        store: &Store,
        after: u64,
        _wait_ms: u64,
    ) -> Result<Option<Fetched<'_>>, Carry> {
        if !self.up {
            return Err(Carry::Cut);
        }
        let Some((id, reader)) = central::fetch_return(self.central, store.site().id, after)?
        else {
            return Ok(None);
        };
        let answers = journal::row(self.central, id)?
            .and_then(|r| r.link)
            .map(|l| l.seq);
        Ok(Some(Fetched {
            answers,
            reader: Box::new(reader),
        }))
    }
}

/// Runs a scenario with its stores under `dir`.
pub fn run(s: &Scenario, dir: &Path) -> Result<ScenarioReport, ScenarioError> {
    let central_zone = zone(&s.central.tz)?;
    let start = instant(central_zone, &s.start)?;
    let end = start + u64::from(s.days) * 86_400_000;
    let mut config: SyncConfig = outpost_replicator::config::seed_example();
    config.central.time_zone = s.central.tz.clone();
    config.central.return_time = hhmm(&s.central.deferred_return_at)?;
    config.remotes =
        s.remote
            .iter()
            .map(|r| {
                let wait_ms = r
                    .wait
                    .as_deref()
                    .map(duration_ms)
                    .transpose()?
                    .unwrap_or(60_000);
                let wait = SyncType::Immediate {
                    wait_ms: u64::try_from(wait_ms).map_err(|_| invalid("a negative wait"))?,
                };
                let sync_types = match r.sync.as_str() {
                    "fixed" => vec![
                        SyncType::Fixed {
                            emission: hhmm(r.emit_at.as_deref().ok_or_else(|| {
                                invalid(format!("{}: fixed needs emit_at", r.code))
                            })?)?,
                            fetch: hhmm(r.fetch_return_at.as_deref().ok_or_else(|| {
                                invalid(format!("{}: fixed needs fetch_return_at", r.code))
                            })?)?,
                        },
                        wait,
                    ],
                    "immediate" => vec![wait],
                    "no-return" => vec![SyncType::NoReturn],
                    "manual" => Vec::new(),
                    other => {
                        return Err(invalid(format!(
                            "{}: sync {other:?} is not fixed, immediate, no-return or manual",
                            r.code
                        )));
                    }
                };
                Ok(RemoteSettings {
                    id: SiteId(r.id),
                    code: r.code.clone(),
                    time_zone: r.tz.clone(),
                    sync_types,
                    denied_tables: if r.stock_documents == Some(false) {
                        ["stock_documents".to_owned()].into()
                    } else {
                        Default::default()
                    },
                })
            })
            .collect::<Result<_, ScenarioError>>()?;
    config.validate().map_err(|e| invalid(e.to_string()))?;
    let clock = ManualClock::new(start);
    let central_site =
        Site::central(s.central.id, &s.central.code).map_err(|e| invalid(e.to_string()))?;
    let central = open(dir, &central_site, &clock).map_err(SimError::from)?;
    central::set_config(&central, &config).map_err(SimError::from)?;
    let mut remotes = Vec::new();
    for r in &s.remote {
        let (bytes, _) = central::write_bootstrap(&central, SiteId(r.id), Vec::new(), true)
            .map_err(SimError::from)?;
        let rclock = ManualClock::new(start);
        let store = remote::bootstrap(bytes.as_slice(), |site| open(dir, site, &rclock))
            .map_err(SimError::from)?;
        remotes.push(SRemote {
            code: r.code.clone(),
            zone: zone(&r.tz)?,
            site: store.site().clone(),
            executor: executor_of(&store)?,
            store,
            clock: rclock,
            skew_ms: 0,
            up: true,
            net: true,
        });
    }
    let automaton = CentralAutomaton::new(&config, start).map_err(|e| invalid(e.to_string()))?;
    let mut runner = Runner {
        dir: dir.to_path_buf(),
        central,
        central_site,
        central_zone,
        clock,
        automaton,
        remotes,
        files: BTreeMap::new(),
        violations: Vec::new(),
        activities: Vec::new(),
    };
    // Each step's instant, local to its site.
    let mut timed: Vec<(u64, usize)> = Vec::new();
    for (i, step) in s.step.iter().enumerate() {
        let z = if step.site == s.central.code {
            central_zone
        } else {
            runner
                .remote_index(&step.site)
                .map(|r| runner.remotes[r].zone)?
        };
        timed.push((instant(z, &step.at)?, i));
    }
    timed.sort();
    let mut outcomes: Vec<Option<StepOutcome>> = vec![None; s.step.len()];
    let mut next = timed.into_iter().peekable();
    let mut t = start;
    while t < end {
        runner.set_time(t);
        while let Some((_, i)) = next.next_if(|(at, _)| *at <= t) {
            let step = &s.step[i];
            outcomes[i] = Some(runner.step(step)?);
        }
        runner.tick()?;
        t += 60_000;
    }
    let steps: Vec<StepOutcome> = outcomes
        .into_iter()
        .zip(&s.step)
        .map(|(o, st)| {
            o.unwrap_or(StepOutcome {
                at: st.at.clone(),
                site: st.site.clone(),
                ok: false,
                error: Some("after the end of the scenario".into()),
            })
        })
        .collect();
    runner.finish(steps, (start, end), config.central.return_time)
}

/// A step's operation that failed: its words, and the rule when a guard refused it.
#[derive(Debug)]
struct Failed {
    text: String,
    rule: Option<outpost_engine::Rule>,
}

impl From<String> for Failed {
    fn from(text: String) -> Self {
        Failed { text, rule: None }
    }
}

impl From<&str> for Failed {
    fn from(text: &str) -> Self {
        Failed::from(text.to_owned())
    }
}

impl From<outpost_engine::Error> for Failed {
    fn from(e: outpost_engine::Error) -> Self {
        Failed {
            rule: e.refusal().map(|r| r.rule),
            text: e.to_string(),
        }
    }
}

impl From<outpost_replicator::Error> for Failed {
    fn from(e: outpost_replicator::Error) -> Self {
        match e {
            outpost_replicator::Error::Engine(e) => Failed::from(e),
            e => Failed::from(e.to_string()),
        }
    }
}

impl From<SimError> for Failed {
    fn from(e: SimError) -> Self {
        match e {
            SimError::Engine(e) => Failed::from(e),
            SimError::Replicator(e) => Failed::from(e),
        }
    }
}

impl From<ScenarioError> for Failed {
    fn from(e: ScenarioError) -> Self {
        Failed::from(e.to_string())
    }
}

fn value_for(kind: Option<FieldKind>, v: &toml::Value) -> Result<Value, String> {
    Ok(match (kind, v) {
        (Some(FieldKind::Decimal), toml::Value::String(s)) => {
            Value::Decimal(s.parse().map_err(|e| format!("{e}"))?)
        }
        (Some(FieldKind::Float), toml::Value::Float(f)) => Value::Float(*f),
        (_, toml::Value::String(s)) => Value::Text(s.clone()),
        (_, toml::Value::Integer(i)) => Value::Int(*i),
        (_, toml::Value::Float(f)) => Value::Float(*f),
        (_, toml::Value::Boolean(b)) => Value::Bool(*b),
        (_, other) => return Err(format!("unsupported value {other:?}")),
    })
}

fn toml_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::Text(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Runner {
    fn remote_index(&self, code: &str) -> Result<usize, ScenarioError> {
        self.remotes
            .iter()
            .position(|r| r.code == code)
            .ok_or_else(|| invalid(format!("unknown site {code:?}")))
    }

    fn set_time(&mut self, t: u64) {
        self.clock.set(t);
        for r in &self.remotes {
            r.clock.set(t.saturating_add_signed(r.skew_ms));
        }
    }

    fn tick(&mut self) -> Result<(), SimError> {
        let now = self.clock.now_ms();
        for i in 0..self.remotes.len() {
            if !self.remotes[i].up {
                continue;
            }
            let (r, mut net) = self.net(i);
            let run = r.executor.on_time(&r.store, &mut net)?;
            carried(run)?;
        }
        let cmds = self.automaton.on_time(now);
        self.run_central(cmds)
    }

    /// Central's local time now, for the activities.
    fn central_at(&self) -> String {
        let now = self.clock.now_ms();
        format!(
            "{} {}",
            self.central_zone.date_at(now),
            self.central_zone.hhmm_at(now)
        )
    }

    /// Runs central's automaton on `cmds`, noting what it did.
    fn run_central(&mut self, cmds: Vec<Command>) -> Result<(), SimError> {
        let at = self.central_at();
        run_central_noted(
            &self.central,
            &mut self.automaton,
            at,
            &mut self.activities,
            cmds,
        )
    }

    /// Remote `i` and its in-memory network to central.
    fn net(&mut self, i: usize) -> (&mut SRemote, ScenarioNet<'_>) {
        let at = self.central_at();
        let Runner {
            central,
            automaton,
            activities,
            remotes,
            ..
        } = self;
        let r = &mut remotes[i];
        let net = ScenarioNet {
            central,
            automaton,
            at,
            activities,
            up: r.net,
        };
        (r, net)
    }

    /// Carries out a remote's commands over the (in-memory) network.
    fn carry(&mut self, i: usize, cmds: Vec<RemoteCommand>) -> Result<(), SimError> {
        let (r, mut net) = self.net(i);
        let run = r.executor.carry_out(&r.store, &mut net, cmds)?;
        carried(run).map(drop)
    }

    fn deliver(&mut self, bytes: &[u8], sender: Option<SiteId>) -> Result<(), SimError> {
        if let Received::Ready { id, .. } = central::receive(&self.central, bytes, sender)? {
            let cmds = self.automaton.on_flow_ready(id);
            self.run_central(cmds)?;
        }
        Ok(())
    }

    /// A return that came on a file (S4): the executor applies it and follows its schedule.
    fn apply(&mut self, i: usize, reader: impl std::io::Read) -> Result<(), SimError> {
        let r = &mut self.remotes[i];
        r.executor.apply_return(&r.store, reader)?;
        Ok(())
    }

    fn store_of(&self, code: &str) -> Result<&Store, ScenarioError> {
        if code == self.central_site.code.as_str() {
            return Ok(&self.central);
        }
        let i = self.remote_index(code)?;
        if !self.remotes[i].up {
            return Err(invalid(format!("{code} is down")));
        }
        Ok(&self.remotes[i].store)
    }

    /// Runs one step: `Ok` carries its outcome (an operation's failure is an outcome, not an
    /// error of the run).
    fn step(&mut self, step: &Step) -> Result<StepOutcome, ScenarioError> {
        let result = self.operate(step);
        let (ok, error) = match (&step.expect_error, result) {
            (None, Ok(())) => (true, None),
            (None, Err(e)) => (false, Some(e.text)),
            (Some(rule), Err(e)) => {
                // A rule (`R6`, `R4/R9`) must be the refusal's (its type, not its words); other
                // words must appear in the error.
                let matches = match e.rule {
                    Some(r) => r.to_string() == *rule,
                    None => false,
                } || (!rule.starts_with('R') && e.text.contains(rule.as_str()));
                let e = e.text;
                if !matches {
                    self.violations.push(format!(
                        "{} at {}: expected a refusal by {rule}, got: {e}",
                        step.site, step.at
                    ));
                }
                (matches, Some(e))
            }
            (Some(rule), Ok(())) => {
                self.violations.push(format!(
                    "{} at {}: expected a refusal by {rule}, but it succeeded",
                    step.site, step.at
                ));
                (false, None)
            }
        };
        if matches!(step.op, Some(Op::Expect(_))) && !ok {
            self.violations.push(format!(
                "{} at {}: {}",
                step.site,
                step.at,
                error.clone().unwrap_or_default()
            ));
        }
        Ok(StepOutcome {
            at: step.at.clone(),
            site: step.site.clone(),
            ok,
            error,
        })
    }

    fn operate(&mut self, step: &Step) -> Result<(), Failed> {
        let code = step.site.as_str();
        let user = step.user.as_deref().unwrap_or("user");
        let is_central = code == self.central_site.code.as_str();
        let Some(op) = &step.op else {
            return Err(if is_central {
                "this operation is for a remote"
            } else {
                "a step needs one operation"
            }
            .into());
        };
        match op {
            Op::Put(p) => {
                let store = self.store_of(code).map_err(Failed::from)?;
                let def = store
                    .schema()
                    .table(&p.table)
                    .ok_or_else(|| format!("unknown table {}", p.table))?;
                let fields = p
                    .fields
                    .iter()
                    .map(|(f, v)| value_for(def.field_kind(f), v).map(|v| (f.clone(), v)))
                    .collect::<Result<Vec<_>, _>>()?;
                store
                    .write_as(user, |tx| tx.set_fields(&p.table, &p.key, fields))
                    .map_err(Failed::from)
            }
            Op::Delete(r) => {
                let store = self.store_of(code).map_err(Failed::from)?;
                store
                    .write_as(user, |tx| tx.delete(&r.table, &r.key))
                    .map_err(Failed::from)
            }
            Op::Reserve(r) => self
                .store_of(code)
                .map_err(Failed::from)?
                .reserve(&r.table, &r.key, user)
                .map_err(Failed::from),
            Op::Release(r) => self
                .store_of(code)
                .map_err(Failed::from)?
                .release(&r.table, &r.key, user)
                .map_err(Failed::from),
            Op::CloseRegister(k) => {
                let store = self.store_of(code).map_err(Failed::from)?;
                let zone = if is_central {
                    self.central_zone
                } else {
                    self.remotes[self.remote_index(code).map_err(Failed::from)?].zone
                };
                let at = zone.hhmm_at(self.clock.now_ms());
                store
                    .write_as(user, |tx| {
                        tx.set("cash_registers", &k.key, "closed_at", at.as_str())
                    })
                    .map_err(Failed::from)
            }
            Op::Expect(e) => {
                let store = self.store_of(code).map_err(Failed::from)?;
                let record = store.record(&e.table, &e.key).map_err(Failed::from)?;
                if e.absent == Some(true) {
                    return match record {
                        None => Ok(()),
                        Some(_) => Err(format!(
                            "expected {}/{} absent at {code}, but it is there",
                            e.table, e.key
                        )
                        .into()),
                    };
                }
                if let Some(want) = &e.creator {
                    let raw = store
                        .snapshot()
                        .and_then(|snap| snap.raw_record(&e.table, &e.key))
                        .map_err(Failed::from)?;
                    let got = raw
                        .map(|r| r.creator())
                        .and_then(|id| store.sites().get(id).map(|s| s.code.to_string()));
                    if got.as_deref() != Some(want.as_str()) {
                        return Err(format!(
                            "expected {}/{} created by {want} at {code}, found {}",
                            e.table,
                            e.key,
                            got.as_deref().unwrap_or("no record")
                        )
                        .into());
                    }
                    if e.field.is_none() {
                        return Ok(());
                    }
                }
                let field = e
                    .field
                    .as_deref()
                    .ok_or("expect needs a field (or absent = true, or creator)")?;
                let want = e.equals.as_ref().ok_or("expect needs equals")?;
                let kind = store
                    .schema()
                    .table(&e.table)
                    .and_then(|t| t.field_kind(field));
                let want = value_for(kind, want)?;
                let got = record.as_ref().and_then(|r| r.get(field)).cloned();
                if got.as_ref() == Some(&want) {
                    Ok(())
                } else {
                    Err(format!(
                        "expected {}/{}.{field} = {} at {code}, found {}",
                        e.table,
                        e.key,
                        text_of(&want),
                        got.map_or_else(|| "nothing".to_owned(), |v| text_of(&v))
                    )
                    .into())
                }
            }
            Op::Damage(f) => {
                let bytes = self
                    .files
                    .get_mut(&f.file)
                    .ok_or_else(|| format!("no file {:?}", f.file))?;
                bytes.truncate(bytes.len() / 2);
                Ok(())
            }
            Op::Export(f) if is_central => {
                let remote_code = f
                    .for_site
                    .as_deref()
                    .ok_or("at central, export needs for = \"<remote>\"")?;
                let i = self.remote_index(remote_code).map_err(Failed::from)?;
                let (bytes, _) =
                    central::build_return(&self.central, self.remotes[i].site.id, Vec::new(), true)
                        .map_err(Failed::from)?;
                self.files.insert(f.file.clone(), bytes);
                Ok(())
            }
            Op::Import(f) if is_central => {
                let bytes = self
                    .files
                    .get(&f.file)
                    .cloned()
                    .ok_or_else(|| format!("no file {:?}", f.file))?;
                self.deliver(&bytes, None).map_err(Failed::from)
            }
            _ if is_central => Err("this operation is for a remote".into()),
            Op::Sync(mode) => {
                let i = self.remote_index(code).map_err(Failed::from)?;
                if !self.remotes[i].up {
                    return Err(format!("{code} is down").into());
                }
                if !self.remotes[i].net {
                    return Err(format!("{code}: network down, central unreachable").into());
                }
                let ask = if mode == "no-return" {
                    SyncAsk::NoReturn
                } else {
                    SyncAsk::Immediate { wait_ms: None }
                };
                let (r, mut net) = self.net(i);
                let run = r
                    .executor
                    .request_sync(&r.store, &mut net, ask)
                    .map_err(Failed::from)?;
                carried(run).map(drop).map_err(Failed::from)
            }
            Op::Export(f) => {
                let i = self.remote_index(code).map_err(Failed::from)?;
                let (bytes, _) =
                    remote::emit(&self.remotes[i].store, Vec::new(), SyncMode::NoReturn, true)
                        .map_err(Failed::from)?;
                self.files.insert(f.file.clone(), bytes);
                Ok(())
            }
            Op::Import(f) => {
                let i = self.remote_index(code).map_err(Failed::from)?;
                let bytes = self
                    .files
                    .get(&f.file)
                    .cloned()
                    .ok_or_else(|| format!("no file {:?}", f.file))?;
                self.apply(i, bytes.as_slice()).map_err(Failed::from)
            }
            Op::Cut | Op::Heal | Op::Down | Op::Up => {
                let i = self.remote_index(code).map_err(Failed::from)?;
                let r = &mut self.remotes[i];
                match op {
                    Op::Cut => r.net = false,
                    Op::Heal => r.net = true,
                    Op::Down => r.up = false,
                    _ => r.up = true,
                }
                Ok(())
            }
            Op::Skew(skew) => {
                let i = self.remote_index(code).map_err(Failed::from)?;
                let r = &mut self.remotes[i];
                r.skew_ms += duration_ms(skew).map_err(Failed::from)?;
                let now = self.clock.now_ms();
                r.clock.set(now.saturating_add_signed(r.skew_ms));

                Ok(())
            }
            Op::Crash => {
                let i = self.remote_index(code).map_err(Failed::from)?;
                let r = &mut self.remotes[i];
                // Restart from the durable state: close the store and open it again.
                let site = r.site.clone();
                let placeholder = Store::in_memory(StoreConfig::new(
                    site.clone(),
                    retail::schema(),
                    r.clock.clone(),
                ))
                .map_err(Failed::from)?;
                drop(std::mem::replace(&mut r.store, placeholder));
                r.store = open(&self.dir, &site, &r.clock).map_err(Failed::from)?;
                // A new process: a new executor, reading the day's fixed-time emission back.
                r.executor = executor_of(&r.store).map_err(Failed::from)?;

                Ok(())
            }
            Op::AdminConfig(a) => {
                let i = self.remote_index(code).map_err(Failed::from)?;
                let r = &mut self.remotes[i];
                let mut settings = remote::settings(&r.store).map_err(Failed::from)?;
                let schedule = RemoteSchedule::from_settings(&settings)
                    .map_err(|e| Failed::from(e.to_string()))?;
                let (name, value) = match a.setting.as_str() {
                    "emit_at" | "fetch_return_at" => {
                        let at = hhmm(&a.value).map_err(Failed::from)?;
                        let types: Vec<String> = schedule
                            .sync_types
                            .iter()
                            .map(|t| match (*t, a.setting.as_str()) {
                                (SyncType::Fixed { fetch, .. }, "emit_at") => SyncType::Fixed {
                                    emission: at,
                                    fetch,
                                },
                                (SyncType::Fixed { emission, .. }, _) => SyncType::Fixed {
                                    emission,
                                    fetch: at,
                                },
                                (other, _) => other,
                            })
                            .map(|t| t.to_string())
                            .collect();
                        ("sync_types".to_owned(), types.join(";"))
                    }
                    other => (other.to_owned(), a.value.clone()),
                };
                settings.insert(name.clone(), value.clone());
                remote::set_setting(&r.store, &name, &value).map_err(Failed::from)?;
                // The running executor follows the local admin's edit (C6).
                r.executor.refresh(&r.store).map_err(Failed::from)?;

                Ok(())
            }
        }
    }

    fn finish(
        mut self,
        steps: Vec<StepOutcome>,
        span_ms: (u64, u64),
        return_at: HhMm,
    ) -> Result<ScenarioReport, ScenarioError> {
        // Quiet round: every site up and connected, twice emit and fetch.
        for r in &mut self.remotes {
            r.up = true;
            r.net = true;
        }
        for _ in 0..2 {
            for i in 0..self.remotes.len() {
                self.carry(i, vec![RemoteCommand::Emit(SyncMode::NoReturn)])?;
            }
            for i in 0..self.remotes.len() {
                central::prepare_return(&self.central, self.remotes[i].site.id)
                    .map_err(SimError::from)?;
                self.carry(i, vec![RemoteCommand::FetchReturn])?;
            }
        }
        let central_content = self
            .central
            .snapshot()
            .map_err(SimError::from)?
            .replicated_content()
            .map_err(SimError::from)?;
        let mut converged = true;
        let mut sites = BTreeMap::new();
        let mut all: Vec<(&str, &Store)> = vec![(self.central_site.code.as_str(), &self.central)];
        all.extend(self.remotes.iter().map(|r| (r.code.as_str(), &r.store)));
        for (code, store) in &all {
            let snap = store.snapshot().map_err(SimError::from)?;
            if snap.replicated_content().map_err(SimError::from)? != central_content {
                converged = false;
                self.violations
                    .push(format!("{code} differs from central after the quiet round"));
            }
            let mut tables = BTreeMap::new();
            for def in store.schema().tables() {
                let mut rows = BTreeMap::new();
                for rec in snap.scan(def.name(), None, None).map_err(SimError::from)? {
                    rows.insert(
                        rec.key.clone(),
                        rec.fields
                            .iter()
                            .map(|(f, v)| (f.clone(), text_of(v)))
                            .collect(),
                    );
                }
                if !rows.is_empty() {
                    tables.insert(def.name().to_owned(), rows);
                }
            }
            sites.insert((*code).to_owned(), tables);
        }
        let tz = self.central_zone;
        let fmt = |ms: Option<u64>| ms.map(|m| format!("{} {}", tz.date_at(m), tz.hhmm_at(m)));
        let names: BTreeMap<SiteId, String> = self
            .central
            .sites()
            .iter()
            .map(|s| (s.id, s.code.to_string()))
            .collect();
        let rows = journal::rows(&self.central, None, None, None).map_err(SimError::from)?;
        let remotes: Vec<_> = self
            .remotes
            .iter()
            .map(|r| (r.site.id, r.code.clone(), r.zone))
            .collect();
        let timeline = crate::Timeline::from_journal(
            format!(
                "{} remotes, {} days from {} {} central time",
                remotes.len(),
                span_ms.1.saturating_sub(span_ms.0) / 86_400_000,
                tz.date_at(span_ms.0),
                tz.hhmm_at(span_ms.0)
            ),
            span_ms,
            (self.central_site.code.as_str(), tz, return_at),
            &remotes,
            &rows,
        );
        let journal = rows
            .into_iter()
            .map(|r| JournalEntry {
                syn_id: r.id.to_string(),
                kind: format!("{:?}", r.kind).to_lowercase(),
                site: names.get(&r.site).cloned().unwrap_or_default(),
                mode: format!("{:?}", r.mode).to_lowercase(),
                link: r.link.map_or_else(|| "0".to_owned(), |l| l.to_string()),
                file_ready: fmt(r.file_ready_ms),
                exec_start: fmt(r.exec_start_ms),
                exec_end: fmt(r.exec_end_ms),
                exec_count: r.executions,
                refused: r.refused_by_remote,
            })
            .collect();
        let rejections = self
            .central
            .rejections()
            .map_err(SimError::from)?
            .into_iter()
            .map(|r| RejectionEntry {
                site: names.get(&r.source).cloned().unwrap_or_default(),
                table: r.change.table,
                key: r.change.key,
                field: r.refusal.field,
                rule: r.refusal.rule.to_string(),
            })
            .collect();
        Ok(ScenarioReport {
            sites,
            journal,
            rejections,
            activities: self.activities,
            steps,
            converged,
            violations: self.violations,
            timeline,
        })
    }
}

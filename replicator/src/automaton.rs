//! The automatons (SPEC A1–A3, M1–M4): deterministic, sans-IO state machines. Given the time
//! and events, they say what to do next; a driver does it. The real daemon and the simulator
//! drive these same machines.
//!
//! - [`CentralAutomaton`] processes each emission as soon as it is file ready (an event, not a
//!   poll; a periodic sweep remains only as a safety net), returns an immediate emission right
//!   after processing (`Ret Dnn`), and at the common return time prepares one return per
//!   deferred remote (M1).
//! - [`RemoteScheduler`] emits and fetches at a fixed-time remote's local times (at most once a
//!   day each), runs immediate syncs when asked (M2, M4) and waits for their return up to the
//!   configured duration (A3); a return not fetched in time is fetched at the next connection.
//! - [`run_central`] executes central's commands on a store — the one place that turns the
//!   automaton's decisions into replicator calls, for the daemon and the simulator alike.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;

use outpost_engine::{SiteId, Store};

use crate::config::{ConfigError, RemoteSchedule, SyncConfig, SyncType};
use crate::flow::{FlowId, SyncMode};
use crate::schedule::{Daily, HhMm, Zone};
use crate::{Result, central};

use crate::config::SWEEP_MS_DEFAULT;

/// How long an immediate sync waits for its return when the site has no wait configured (a
/// site set up for fixed times or for syncs without return may still ask for one, M4).
pub const DEFAULT_IMMEDIATE_WAIT_MS: u64 = 60_000;

/// What central is doing, shown the way the original does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Activity {
    /// `Att Dep`: waiting for emissions.
    Waiting,
    /// `Tra Dnn`: processing an emission of remote nn.
    Processing(SiteId),
    /// `Ret Dnn`: building the return of remote nn.
    Returning(SiteId),
}

impl fmt::Display for Activity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Activity::Waiting => f.write_str("Att Dep"),
            Activity::Processing(s) => write!(f, "Tra D{s}"),
            Activity::Returning(s) => write!(f, "Ret D{s}"),
        }
    }
}

/// What central's automaton asks its driver to do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Command {
    /// Process this file-ready emission.
    Process(FlowId),
    /// Prepare the return of this remote.
    PrepareReturn(SiteId),
    /// Look for file-ready emissions that no event announced.
    Sweep,
}

/// Central's automaton.
#[derive(Clone, Debug)]
pub struct CentralAutomaton {
    zone: Zone,
    return_job: Daily,
    deferred: BTreeSet<SiteId>,
    sweep_ms: u64,
    next_sweep_ms: u64,
    activity: Activity,
}

impl CentralAutomaton {
    /// An automaton for a validated configuration, starting at `now_ms`.
    pub fn new(config: &SyncConfig, now_ms: u64) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(CentralAutomaton {
            zone: config.central.time_zone.parse()?,
            return_job: Daily::new(config.central.return_time),
            deferred: deferred_of(config),
            sweep_ms: SWEEP_MS_DEFAULT,
            next_sweep_ms: now_ms + SWEEP_MS_DEFAULT,
            activity: Activity::Waiting,
        })
    }

    /// Follows a changed configuration (a remote added, a schedule or central's return time
    /// changed) without losing what it has done: a common return already prepared today is
    /// not prepared again.
    pub fn reconfigure(&mut self, config: &SyncConfig) -> Result<(), ConfigError> {
        config.validate()?;
        self.zone = config.central.time_zone.parse()?;
        self.return_job.retime(config.central.return_time);
        self.deferred = deferred_of(config);
        Ok(())
    }

    /// Changes the safety-net sweep's period.
    pub fn set_sweep_ms(&mut self, sweep_ms: u64) {
        self.next_sweep_ms = self.next_sweep_ms - self.sweep_ms + sweep_ms;
        self.sweep_ms = sweep_ms;
    }

    /// What it is doing now (`Att Dep`, `Ret D02`…).
    pub fn status(&self) -> Activity {
        self.activity
    }

    /// A flow became file ready: process it now.
    pub fn on_flow_ready(&mut self, id: FlowId) -> Vec<Command> {
        vec![Command::Process(id)]
    }

    /// An emission was processed: an immediate one gets its return right away (A2, M2); so
    /// does a fixed-time one from a remote no longer on a fixed schedule (C6: switched to syncs
    /// on demand, it keeps its old schedule until a return tells it, and the common return no
    /// longer counts it — without one now it would never hear from central again).
    pub fn on_processed(&mut self, site: SiteId, mode: SyncMode) -> Vec<Command> {
        match mode {
            SyncMode::Immediate => vec![Command::PrepareReturn(site)],
            SyncMode::Deferred if !self.deferred.contains(&site) => {
                vec![Command::PrepareReturn(site)]
            }
            _ => Vec::new(),
        }
    }

    /// Time passes: the common return time (M1) and the safety-net sweep.
    pub fn on_time(&mut self, now_ms: u64) -> Vec<Command> {
        let mut out = Vec::new();
        if now_ms >= self.next_sweep_ms {
            out.push(Command::Sweep);
            self.next_sweep_ms = now_ms + self.sweep_ms;
        }
        if self.return_job.take_due(self.zone, now_ms) {
            out.extend(self.deferred.iter().map(|s| Command::PrepareReturn(*s)));
        }
        out
    }

    /// When it next needs [`CentralAutomaton::on_time`].
    pub fn next_wakeup_ms(&self, now_ms: u64) -> u64 {
        self.next_sweep_ms
            .min(self.return_job.next_due(self.zone, now_ms))
    }

    /// The driver reports what it is doing.
    pub fn set_activity(&mut self, activity: Activity) {
        self.activity = activity;
    }
}

/// The remotes that sync at fixed times: they get the common return (M1).
fn deferred_of(config: &SyncConfig) -> BTreeSet<SiteId> {
    config
        .remotes
        .iter()
        .filter(|r| {
            r.sync_types
                .iter()
                .any(|t| matches!(t, SyncType::Fixed { .. }))
        })
        .map(|r| r.id)
        .collect()
}

/// What one run of central's commands did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CentralRun {
    /// Emissions processed.
    pub processed: Vec<FlowId>,
    /// Returns prepared, per remote.
    pub returns: Vec<(SiteId, FlowId)>,
    /// Emissions refused while processing, with the reason (also in their journal rows).
    pub failed: Vec<(FlowId, String)>,
}

/// Executes `commands` on central's store, feeding the outcomes back to the automaton until it
/// has nothing more to ask.
pub fn run_central(
    store: &Store,
    automaton: &mut CentralAutomaton,
    commands: Vec<Command>,
) -> Result<CentralRun> {
    let mut queue: VecDeque<Command> = commands.into();
    let mut run = CentralRun::default();
    while let Some(cmd) = queue.pop_front() {
        match cmd {
            Command::Process(id) => {
                let Some(row) = crate::journal::row(store, id)? else {
                    continue;
                };
                if row.exec_end_ms.is_some() {
                    // Processed meanwhile by another hand (an operator's `central import`, run
                    // between two of the automaton's runs, processes every emission waiting):
                    // one not answered yet still gets the return its mode asks for — whatever
                    // its receipt noted in its row (an emission before it never received): a
                    // processing that failed leaves no end of execution.
                    if row.link.is_none() {
                        queue.extend(automaton.on_processed(row.site, row.mode));
                    }
                    continue;
                }
                automaton.set_activity(Activity::Processing(row.site));
                match central::process(store, id) {
                    Ok(_) => {
                        run.processed.push(id);
                        queue.extend(automaton.on_processed(row.site, row.mode));
                    }
                    // Its error is in the journal; the other flows go on.
                    Err(e) if e.is_the_flows() => {
                        // Held while central is restored from a backup: its remote made it
                        // before it heard of the restore. It gets its return all the same (the
                        // restored central's), so that its next emission carries central's lost
                        // changes back and supersedes this one.
                        if matches!(&e, crate::Error::Quarantined(why) if why.contains(central::HELD_IN_RESTORE))
                        {
                            queue.extend(automaton.on_processed(row.site, row.mode));
                        }
                        run.failed.push((id, e.to_string()));
                    }
                    Err(e) => return Err(e),
                }
            }
            Command::PrepareReturn(site) => {
                // The common return time asks for many at once: prepared together, their
                // common part encoded once.
                let mut sites = vec![site];
                while let Some(Command::PrepareReturn(next)) = queue.front().copied() {
                    queue.pop_front();
                    sites.push(next);
                }
                automaton.set_activity(Activity::Returning(site));
                let built = central::prepare_returns(store, &sites)?;
                for (site, b) in sites.iter().zip(built) {
                    run.returns.push((*site, b.id));
                }
            }
            Command::Sweep => {
                let pending = central::pending_emissions(store)?;
                for id in pending {
                    queue.extend(automaton.on_flow_ready(id));
                }
            }
        }
    }
    automaton.set_activity(Activity::Waiting);
    Ok(run)
}

/// What a remote's scheduler asks its driver to do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RemoteCommand {
    /// Connect and emit, with this sync mode.
    Emit(SyncMode),
    /// Connect and fetch the newest return, if central has one.
    FetchReturn,
}

/// A remote's scheduler.
#[derive(Clone, Debug)]
pub struct RemoteScheduler {
    zone: Zone,
    emit_job: Option<Daily>,
    fetch_job: Option<Daily>,
    wait_ms: Option<u64>,
    /// Whether fixed times are configured (the jobs outlive a schedule without them, M1).
    fixed: bool,
    /// While waiting for an immediate return: until when.
    waiting_until: Option<u64>,
    /// A return was expected and not fetched in time: fetch it at the next connection.
    fetch_pending: bool,
}

impl RemoteScheduler {
    /// A scheduler for a remote's schedule (from its settings).
    pub fn new(schedule: &RemoteSchedule) -> Self {
        let mut s = RemoteScheduler {
            zone: schedule.zone,
            emit_job: None,
            fetch_job: None,
            wait_ms: None,
            fixed: false,
            waiting_until: None,
            fetch_pending: false,
        };
        s.reschedule(schedule);
        s
    }

    /// When the next fixed-time emission and fetch are due (UTC ms), if fixed times are
    /// configured (M1): what `outpost remote run` tells its operator.
    pub fn next_fixed(&self, now_ms: u64) -> Option<(u64, u64)> {
        if !self.fixed {
            return None;
        }
        let emit = self.emit_job.as_ref()?.next_due(self.zone, now_ms);
        let fetch = self.fetch_job.as_ref()?.next_due(self.zone, now_ms);
        Some((emit, fetch))
    }

    /// Follows a new schedule (C4, C6: a return or a local admin changed it) without starting
    /// over: the daily jobs are re-timed and keep the local date they last ran, so a day's
    /// fixed-time emission is not made again under the new time (M1); an immediate sync's wait
    /// and a pending fetch go on.
    pub fn reschedule(&mut self, schedule: &RemoteSchedule) {
        self.zone = schedule.zone;
        let mut fixed = None;
        self.wait_ms = None;
        for t in &schedule.sync_types {
            match t {
                SyncType::Fixed { emission, fetch } => fixed = Some((*emission, *fetch)),
                SyncType::Immediate { wait_ms } => self.wait_ms = Some(*wait_ms),
                SyncType::NoReturn => {}
            }
        }
        let retime = |job: &mut Option<Daily>, at: Option<HhMm>| match (job.as_mut(), at) {
            (Some(j), Some(at)) => j.retime(at),
            (None, Some(at)) => *job = Some(Daily::new(at)),
            // Kept, not dropped: a fixed time configured again later the same day does not
            // run a second time.
            (Some(_), None) | (None, None) => {}
        };
        retime(&mut self.emit_job, fixed.map(|f| f.0));
        retime(&mut self.fetch_job, fixed.map(|f| f.1));
        self.fixed = fixed.is_some();
    }

    /// Marks today's fixed-time emission as made on local `date` (by the process before a
    /// restart, as the remote's log shows): it is not made again that day (M1).
    pub fn emitted_on(&mut self, date: chrono::NaiveDate) {
        if let Some(j) = self.emit_job.as_mut() {
            j.ran_on(date);
        }
    }

    fn connect(&mut self, cmd: RemoteCommand) -> Vec<RemoteCommand> {
        let mut out = Vec::new();
        if self.fetch_pending && cmd != RemoteCommand::FetchReturn {
            out.push(RemoteCommand::FetchReturn);
        }
        out.push(cmd);
        out
    }

    /// Time passes: the fixed-time emission and fetch (M1), an immediate sync's wait.
    pub fn on_time(&mut self, now_ms: u64) -> Vec<RemoteCommand> {
        let mut out = Vec::new();
        if let Some(until) = self.waiting_until {
            if now_ms >= until {
                // A3: the wait expired; the return is fetched at the next connection.
                self.waiting_until = None;
                self.fetch_pending = true;
            } else {
                out.push(RemoteCommand::FetchReturn);
            }
        }
        if self.fixed
            && self
                .emit_job
                .as_mut()
                .is_some_and(|j| j.take_due(self.zone, now_ms))
        {
            out.extend(self.connect(RemoteCommand::Emit(SyncMode::Deferred)));
        }
        // A fetch missed while the machine slept is made on waking: the return waits for it.
        if self.fixed
            && self
                .fetch_job
                .as_mut()
                .is_some_and(|j| j.take_due_late(self.zone, now_ms))
        {
            out.extend(self.connect(RemoteCommand::FetchReturn));
        }
        out.dedup();
        out
    }

    /// An immediate sync asked for now (M2, M4 — even with a fixed-time sync configured): emit,
    /// then wait for the return up to the configured duration, or
    /// [`DEFAULT_IMMEDIATE_WAIT_MS`] where none is configured — never silently without a
    /// return. With `no_return`, only emits (M3).
    pub fn request_sync(&mut self, now_ms: u64, no_return: bool) -> Vec<RemoteCommand> {
        if no_return {
            return self.connect(RemoteCommand::Emit(SyncMode::NoReturn));
        }
        let wait = self.wait_ms.unwrap_or(DEFAULT_IMMEDIATE_WAIT_MS);
        self.request_sync_waiting(now_ms, wait)
    }

    /// An immediate sync asked for now with its own wait (`outpost remote sync --wait`).
    pub fn request_sync_waiting(&mut self, now_ms: u64, wait_ms: u64) -> Vec<RemoteCommand> {
        self.waiting_until = Some(now_ms.saturating_add(wait_ms));
        self.connect(RemoteCommand::Emit(SyncMode::Immediate))
    }

    /// The wait configured for immediate syncs, if any.
    pub fn configured_wait_ms(&self) -> Option<u64> {
        self.wait_ms
    }

    /// The emission an immediate sync waits for was refused: no return will come, stop
    /// waiting (a failed sync, A3).
    pub fn cancel_wait(&mut self) {
        self.waiting_until = None;
    }

    /// Until when an immediate sync waits for its return.
    pub fn waiting_until(&self) -> Option<u64> {
        self.waiting_until
    }

    /// A return was applied: no more waiting, nothing pending.
    pub fn on_return_applied(&mut self) {
        self.waiting_until = None;
        self.fetch_pending = false;
    }

    /// Whether an immediate sync is waiting for its return.
    pub fn is_waiting(&self) -> bool {
        self.waiting_until.is_some()
    }

    /// When it next needs [`RemoteScheduler::on_time`].
    pub fn next_wakeup_ms(&self, now_ms: u64) -> u64 {
        [
            self.waiting_until.map(|_| now_ms + 1_000),
            self.emit_job
                .as_ref()
                .filter(|_| self.fixed)
                .map(|j| j.next_due(self.zone, now_ms)),
            self.fetch_job
                .as_ref()
                .filter(|_| self.fixed)
                .map(|j| j.next_due(self.zone, now_ms)),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now_ms + 86_400_000)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn a1_att_dep_sweeps_on_a_fixed_20_second_cycle() {
        let t0 = 1_800_000_000_000;
        let mut a = CentralAutomaton::new(&crate::config::seed_example(), t0).unwrap();
        assert_eq!(a.status().to_string(), "Att Dep");
        assert_eq!(a.next_wakeup_ms(t0), t0 + 20_000);
        assert!(!a.on_time(t0 + 19_999).contains(&Command::Sweep));
        assert!(a.on_time(t0 + 20_000).contains(&Command::Sweep));
        assert_eq!(a.next_wakeup_ms(t0 + 20_000), t0 + 40_000);
        // A late wake-up does not make it sweep twice to catch up.
        let late = a.on_time(t0 + 95_000);
        assert_eq!(late.iter().filter(|c| **c == Command::Sweep).count(), 1);
        assert_eq!(a.next_wakeup_ms(t0 + 95_000), t0 + 115_000);
    }

    /// M4: an immediate sync asked by a remote configured for fixed times only (or for syncs
    /// without return) still gets its return, with the default wait: never a silent no-return.
    #[test]
    fn m4_an_immediate_sync_asked_without_a_configured_wait_still_waits_for_its_return() {
        let t0 = 1_800_000_000_000;
        for types in ["fixed 21:00 23:20", "no-return"] {
            let schedule = RemoteSchedule {
                zone: Zone::UTC,
                sync_types: vec![types.parse().unwrap()],
            };
            let mut s = RemoteScheduler::new(&schedule);
            assert_eq!(
                s.request_sync(t0, false),
                vec![RemoteCommand::Emit(SyncMode::Immediate)],
                "{types}"
            );
            assert!(s.is_waiting(), "{types}");
            assert!(s.on_time(t0 + 1_000).contains(&RemoteCommand::FetchReturn));
            assert!(s.on_time(t0 + DEFAULT_IMMEDIATE_WAIT_MS).is_empty());
            assert!(!s.is_waiting(), "{types}: the default wait is over");
            // Asked explicitly without a return: only then an emission alone (M3).
            assert_eq!(
                s.request_sync(t0, true),
                vec![
                    RemoteCommand::FetchReturn,
                    RemoteCommand::Emit(SyncMode::NoReturn)
                ]
            );
        }
    }

    /// M1: a fixed-time remote added while central runs gets the next common return; the
    /// common return already prepared today is not prepared again for the others.
    #[test]
    fn m1_a_remote_added_while_central_runs_gets_the_next_common_return() {
        let mut config = crate::config::seed_example();
        let added = config.remotes.pop().unwrap();
        let zone: Zone = config.central.time_zone.parse().unwrap();
        let day = chrono::NaiveDate::from_ymd_opt(2027, 3, 10).unwrap();
        let at = |d: chrono::NaiveDate, h, m| zone.instant(d, HhMm::new(h, m).unwrap());
        let mut a = CentralAutomaton::new(&config, at(day, 12, 0)).unwrap();
        let returns = |cmds: Vec<Command>| -> BTreeSet<SiteId> {
            cmds.into_iter()
                .filter_map(|c| match c {
                    Command::PrepareReturn(s) => Some(s),
                    _ => None,
                })
                .collect()
        };
        let first = returns(a.on_time(at(day, 23, 0)));
        assert!(!first.is_empty() && !first.contains(&added.id), "{first:?}");
        config.remotes.push(added.clone());
        a.reconfigure(&config).unwrap();
        assert!(
            returns(a.on_time(at(day, 23, 30))).is_empty(),
            "today's common return is done"
        );
        let next = returns(a.on_time(at(day.succ_opt().unwrap(), 23, 0)));
        assert!(next.contains(&added.id), "{next:?}");
        assert!(first.is_subset(&next));
        // A configuration that does not validate is refused and changes nothing.
        let mut bad = config.clone();
        bad.central.time_zone = "Mars/Olympus".into();
        assert!(a.reconfigure(&bad).is_err());
        assert_eq!(a.zone, zone);
    }

    #[test]
    fn a2_the_return_job_shows_as_ret_dnn() {
        assert_eq!(Activity::Returning(SiteId(2)).to_string(), "Ret D02");
        assert_eq!(Activity::Processing(SiteId(3)).to_string(), "Tra D03");
    }
}

//! A remote's executor (A3, M1–M4, C4, C6): the one loop that carries out a remote's
//! [`RemoteScheduler`] — the counterpart of [`crate::automaton::run_central`] on central's side.
//! `outpost remote sync | run`, the site server, the random simulator and the scenario runner
//! all drive this executor; they differ only in their [`RemoteTransport`] (HTTP, or bytes
//! handed over in memory with faults) and in how they let time pass.
//!
//! Sans-IO like the rest of the crate: time is the store's injected clock, the transport is
//! given, nothing here sleeps, spawns or connects. A driver calls [`RemoteExecutor::on_time`]
//! whenever [`RemoteExecutor::next_wakeup_ms`] comes (or sooner), and
//! [`RemoteExecutor::request_sync`] when someone asks for a sync.
//!
//! The executor follows the site's settings: whenever they changed — a return applied (C6:
//! central's configuration), a local admin's `set-setting` — it re-times its scheduler without
//! starting over, so a running site picks the new times up at once and a day's fixed-time
//! emission is never made twice (M1). A restarted site reads the day's fixed-time emission back
//! from its log.

use std::fmt;
use std::io::Read;

use outpost_engine::Store;

use crate::automaton::{RemoteCommand, RemoteScheduler};
use crate::config::{RemoteSchedule, SyncType};
use crate::flow::{FlowId, FlowKind, SyncMode};
use crate::remote::{self, Applied};
use crate::{Error, Result};

/// The first wait before trying again after central was unreachable; doubled at each failure.
pub const RETRY_FIRST_MS: u64 = 1_000;
/// The longest wait between two tries while central is unreachable.
pub const RETRY_MAX_MS: u64 = 300_000;

/// A return a transport fetched, to be applied by the executor.
pub struct Fetched<'a> {
    /// The sequence number of the emission it answers (its link, J1), where the transport
    /// knows it; `None` counts as answering.
    pub answers: Option<u64>,
    /// The return's bytes.
    pub reader: Box<dyn Read + 'a>,
}

impl fmt::Debug for Fetched<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetched")
            .field("answers", &self.answers)
            .finish_non_exhaustive()
    }
}

/// How a remote's flows reach central and come back: the network, or the simulator's memory.
pub trait RemoteTransport {
    /// What can go wrong on the way.
    type Error: fmt::Display;

    /// Whether trying again later may help (central unreachable, busy): the executor retries
    /// with backoff. Anything else is a failure of that command, reported.
    fn is_transient(error: &Self::Error) -> bool;

    /// Makes an emission of `mode` from `store` and carries it to central (with whatever an
    /// earlier sync left unsent); gives its id once central holds it. An emission central
    /// refuses is an error, not transient.
    fn emit(&mut self, store: &Store, mode: SyncMode) -> Result<FlowId, Self::Error>;

    /// Asks central for its newest return to this site after return `after`, waiting up to
    /// `wait_ms` for one (sending first whatever an earlier sync left unsent); `None` if
    /// there is none (yet).
    fn fetch_return(
        &mut self,
        store: &Store,
        after: u64,
        wait_ms: u64,
    ) -> Result<Option<Fetched<'_>>, Self::Error>;

    /// A return was just applied: tell central at once where the transport can (J1); the
    /// reports also ride the next emission.
    fn returns_applied(&mut self, _store: &Store) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Something one command could not do; the executor went on with the others.
#[derive(Debug)]
pub enum Failure<E> {
    /// The transport failed for good (an emission refused by central…).
    Transport(E),
    /// A fetched return could not be applied (damaged, not this site's…); nothing of it was.
    Return(Error),
}

impl<E: fmt::Display> fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Transport(e) => write!(f, "{e}"),
            Failure::Return(e) => write!(f, "the return was not applied: {e}"),
        }
    }
}

/// What one call of the executor did.
#[derive(Debug)]
pub struct RemoteRun<E> {
    /// Emissions central now holds.
    pub emitted: Vec<FlowId>,
    /// Returns fetched and what applying them did.
    pub applied: Vec<Applied>,
    /// Commands that failed for good.
    pub failed: Vec<Failure<E>>,
    /// Central could not be reached (the last such error): tried again at `retry_at`.
    pub unreachable: Option<E>,
    /// When it tries again, after `unreachable`.
    pub retry_at: Option<u64>,
    /// What is worth telling: a new schedule followed, settings that hold no valid one.
    pub notes: Vec<String>,
}

impl<E> Default for RemoteRun<E> {
    fn default() -> Self {
        RemoteRun {
            emitted: Vec::new(),
            applied: Vec::new(),
            failed: Vec::new(),
            unreachable: None,
            retry_at: None,
            notes: Vec::new(),
        }
    }
}

impl<E> RemoteRun<E> {
    /// Adds what `other` did.
    pub fn extend(&mut self, other: RemoteRun<E>) {
        self.emitted.extend(other.emitted);
        self.applied.extend(other.applied);
        self.failed.extend(other.failed);
        if other.unreachable.is_some() {
            self.unreachable = other.unreachable;
            self.retry_at = other.retry_at;
        }
        self.notes.extend(other.notes);
    }
}

/// What a sync asked for now is (M2–M4).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SyncAsk {
    /// Emit and wait for the return: up to this wait, or the site's configured one, or
    /// [`crate::automaton::DEFAULT_IMMEDIATE_WAIT_MS`].
    Immediate {
        /// The wait asked for, if any.
        wait_ms: Option<u64>,
    },
    /// Emit only (M3).
    NoReturn,
}

/// A remote's executor: its scheduler, kept in step with its settings, and the commands
/// carried out through a [`RemoteTransport`].
#[derive(Clone, Debug)]
pub struct RemoteExecutor {
    scheduler: RemoteScheduler,
    schedule: RemoteSchedule,
    /// The last invalid settings reported, so as to say it once.
    bad_settings: Option<String>,
    /// The immediate emission waited for.
    awaiting: Option<FlowId>,
    /// Central was unreachable: send and fetch again at this time.
    retry_at: Option<u64>,
    backoff_ms: u64,
}

fn schedule_of(store: &Store) -> Result<std::result::Result<RemoteSchedule, String>> {
    let settings = remote::settings(store)?;
    Ok(RemoteSchedule::from_settings(&settings).map_err(|e| e.to_string()))
}

impl RemoteExecutor {
    /// The executor of a remote store, on the schedule its settings hold. The day's
    /// fixed-time emission made before a restart is read back from the remote's log, so it is
    /// not made again (M1).
    pub fn new(store: &Store) -> Result<Self> {
        // Settings it cannot read (a newer central's): it follows what of them it can, and
        // keeps syncing — the return that sets them right comes only so.
        let schedule = match schedule_of(store)? {
            Ok(s) => s,
            Err(_) => RemoteSchedule::readable(&remote::settings(store)?).0,
        };
        let mut scheduler = RemoteScheduler::new(&schedule);
        // What the executor recorded; a store from before it did reads its log, where any
        // deferred emission (a manual one too) stands for it.
        let last_fixed = match remote::last_fixed_emission(store)? {
            Some(0) => None,
            Some(at) => Some(at),
            None => remote::log_rows(store)?
                .into_iter()
                .filter(|r| r.kind == FlowKind::Emission && r.mode == SyncMode::Deferred)
                .map(|r| r.at_ms)
                .max(),
        };
        if let Some(at) = last_fixed {
            scheduler.emitted_on(schedule.zone.date_at(at));
        }
        Ok(RemoteExecutor {
            scheduler,
            schedule,
            bad_settings: None,
            awaiting: None,
            retry_at: None,
            backoff_ms: RETRY_FIRST_MS,
        })
    }

    /// At the next [`RemoteExecutor::on_time`], first send what an earlier run left unsent and
    /// fetch a return waiting at central (a process starting).
    pub fn catch_up(&mut self) {
        self.retry_at = Some(0);
    }

    /// The scheduler it drives.
    pub fn scheduler(&self) -> &RemoteScheduler {
        &self.scheduler
    }

    /// The schedule it follows.
    pub fn schedule(&self) -> &RemoteSchedule {
        &self.schedule
    }

    /// Whether an immediate sync waits for its return.
    pub fn is_waiting(&self) -> bool {
        self.scheduler.is_waiting()
    }

    /// Until when an immediate sync waits for its return.
    pub fn waiting_until(&self) -> Option<u64> {
        self.scheduler.waiting_until()
    }

    /// When it next needs [`RemoteExecutor::on_time`].
    pub fn next_wakeup_ms(&self, now_ms: u64) -> u64 {
        let next = self.scheduler.next_wakeup_ms(now_ms);
        self.retry_at.map_or(next, |r| next.min(r.max(now_ms)))
    }

    /// Reads the site's settings again and follows a schedule that changed (C4, C6). Returns
    /// the notes worth telling. Called by the executor itself after each return applied and at
    /// each [`RemoteExecutor::on_time`]; a driver calls it after a local `set-setting`.
    pub fn refresh(&mut self, store: &Store) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        match schedule_of(store)? {
            Ok(s) if s == self.schedule => {}
            Ok(s) => {
                self.scheduler.reschedule(&s);
                let types: Vec<String> = s.sync_types.iter().map(SyncType::to_string).collect();
                notes.push(format!(
                    "new schedule followed: {} ({})",
                    types.join("; "),
                    s.zone
                ));
                self.schedule = s;
                self.bad_settings = None;
            }
            Err(e) => {
                if self.bad_settings.as_ref() != Some(&e) {
                    let (_, unread) = RemoteSchedule::readable(&remote::settings(store)?);
                    let types: Vec<String> = self
                        .schedule
                        .sync_types
                        .iter()
                        .map(SyncType::to_string)
                        .collect();
                    notes.push(format!(
                        "this site's settings hold what it cannot read ({}): it follows {} ({}) \
                         until they are set right, by central's next return or `outpost remote \
                         set-setting`",
                        unread.join("; "),
                        if types.is_empty() {
                            "syncs asked for only".to_owned()
                        } else {
                            types.join("; ")
                        },
                        self.schedule.zone
                    ));
                    self.bad_settings = Some(e);
                }
            }
        }
        Ok(notes)
    }

    /// Time passes: the fixed-time emission and fetch (M1), an immediate sync's wait (A3), a
    /// retry after central was unreachable. `Err` only for a failure of the store itself.
    pub fn on_time<T: RemoteTransport>(
        &mut self,
        store: &Store,
        transport: &mut T,
    ) -> Result<RemoteRun<T::Error>> {
        let notes = self.refresh(store)?;
        let now = store.now_ms();
        let mut commands = Vec::new();
        if self.retry_at.is_some_and(|at| now >= at) {
            self.retry_at = None;
            commands.push(RemoteCommand::FetchReturn);
        }
        for c in self.scheduler.on_time(now) {
            if !commands.contains(&c) {
                commands.push(c);
            }
        }
        if !self.scheduler.is_waiting() {
            self.awaiting = None;
        }
        let mut run = self.carry_out(store, transport, commands)?;
        run.notes.splice(0..0, notes);
        Ok(run)
    }

    /// A sync asked for now (M2–M4): emit and, unless asked without return, wait for the
    /// return — polling once right away; a driver whose transport waits in real time goes on
    /// with [`RemoteExecutor::wait_for_return`]. An emission central refuses ends the wait at
    /// once: the sync failed (in `failed`).
    pub fn request_sync<T: RemoteTransport>(
        &mut self,
        store: &Store,
        transport: &mut T,
        ask: SyncAsk,
    ) -> Result<RemoteRun<T::Error>> {
        let notes = self.refresh(store)?;
        let now = store.now_ms();
        let commands = match ask {
            SyncAsk::NoReturn => self.scheduler.request_sync(now, true),
            SyncAsk::Immediate { wait_ms: Some(w) } => self.scheduler.request_sync_waiting(now, w),
            SyncAsk::Immediate { wait_ms: None } => self.scheduler.request_sync(now, false),
        };
        let mut run = self.carry_out(store, transport, commands)?;
        run.notes.splice(0..0, notes);
        if self.scheduler.is_waiting() {
            run.extend(self.carry_out(store, transport, vec![RemoteCommand::FetchReturn])?);
        }
        Ok(run)
    }

    /// Polls for the awaited immediate return once more, if the wait is not over.
    pub fn wait_for_return<T: RemoteTransport>(
        &mut self,
        store: &Store,
        transport: &mut T,
    ) -> Result<RemoteRun<T::Error>> {
        match self.scheduler.waiting_until() {
            Some(until) if store.now_ms() < until => {
                self.carry_out(store, transport, vec![RemoteCommand::FetchReturn])
            }
            _ => Ok(RemoteRun::default()),
        }
    }

    /// A return that came by other means (a file, S4): applied, and the schedule followed.
    pub fn apply_return(&mut self, store: &Store, input: impl Read) -> Result<Applied> {
        let applied = remote::apply_return(store, input)?;
        if matches!(applied, Applied::Applied { .. }) {
            self.scheduler.on_return_applied();
            self.awaiting = None;
        }
        self.refresh(store)?;
        Ok(applied)
    }

    /// Carries out `commands` through `transport` (the scheduler's, or a driver's own such as
    /// a final round). `Err` only for a failure of the store itself; everything else is in the
    /// run.
    pub fn carry_out<T: RemoteTransport>(
        &mut self,
        store: &Store,
        transport: &mut T,
        commands: Vec<RemoteCommand>,
    ) -> Result<RemoteRun<T::Error>> {
        let mut run = RemoteRun::default();
        for cmd in commands {
            match cmd {
                RemoteCommand::Emit(mode) => {
                    // The scheduler's deferred emission is the day's fixed-time one (M1).
                    if mode == SyncMode::Deferred {
                        remote::note_fixed_emission(store, store.now_ms())?;
                    }
                    match transport.emit(store, mode) {
                        Ok(id) => {
                            self.reached();
                            if mode == SyncMode::Immediate {
                                self.awaiting = Some(id);
                            }
                            run.emitted.push(id);
                        }
                        Err(e) if T::is_transient(&e) => self.unreachable(store, e, &mut run),
                        Err(e) => {
                            // A3: no return can come for a refused emission; no waiting for
                            // one.
                            if mode == SyncMode::Immediate {
                                self.scheduler.cancel_wait();
                                self.awaiting = None;
                            }
                            run.failed.push(Failure::Transport(e));
                        }
                    }
                }
                RemoteCommand::FetchReturn => self.fetch(store, transport, &mut run)?,
            }
        }
        Ok(run)
    }

    fn reached(&mut self) {
        self.backoff_ms = RETRY_FIRST_MS;
    }

    /// Central could not be reached: try again after the pause, which doubles once per failed
    /// attempt — a run that both emits and fetches fails twice and waits as one attempt does.
    fn unreachable<E>(&mut self, store: &Store, e: E, run: &mut RemoteRun<E>) {
        run.unreachable = Some(e);
        if run.retry_at.is_some() {
            return;
        }
        let at = store.now_ms().saturating_add(self.backoff_ms);
        self.retry_at = Some(at);
        self.backoff_ms = self.backoff_ms.saturating_mul(2).min(RETRY_MAX_MS);
        run.retry_at = Some(at);
    }

    /// Fetches and applies the newest return; while an immediate sync waits, until the return
    /// that answers it has come or the transport has nothing more within the wait.
    fn fetch<T: RemoteTransport>(
        &mut self,
        store: &Store,
        transport: &mut T,
        run: &mut RemoteRun<T::Error>,
    ) -> Result<()> {
        // Central keeps one return per remote: a few rounds cover a return superseded while
        // it was being fetched.
        for _ in 0..8 {
            let wait = self
                .scheduler
                .waiting_until()
                .map_or(0, |u| u.saturating_sub(store.now_ms()));
            let after = remote::last_return_seq(store)?;
            let (answers, applied) = match fetch_and_apply(transport, store, after, wait) {
                Ok(Some(got)) => got,
                Ok(None) => {
                    self.reached();
                    return Ok(());
                }
                Err(e) if T::is_transient(&e) => {
                    self.unreachable(store, e, run);
                    return Ok(());
                }
                Err(e) => {
                    run.failed.push(Failure::Transport(e));
                    return Ok(());
                }
            };
            self.reached();
            let applied = match applied {
                Ok(a) => a,
                Err(e) if e.is_the_flows() => {
                    run.failed.push(Failure::Return(e));
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            let answered = match (self.awaiting, answers) {
                (Some(awaited), Some(seq)) => awaited.seq == seq,
                _ => true,
            };
            if answered
                && !matches!(
                    applied,
                    Applied::RefusedStale { .. } | Applied::RefusedOtherStore { .. }
                )
            {
                self.scheduler.on_return_applied();
                self.awaiting = None;
            }
            run.applied.push(applied);
            // C6: the return may carry a new schedule; follow it now.
            run.notes.extend(self.refresh(store)?);
            if let Err(e) = transport.returns_applied(store) {
                if T::is_transient(&e) {
                    self.unreachable(store, e, run);
                } else {
                    run.failed.push(Failure::Transport(e));
                }
                return Ok(());
            }
            if !self.scheduler.is_waiting() {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// One return fetched and applied: the emission it answers and what applying it did.
type FetchedAndApplied = (Option<u64>, Result<Applied>);

fn fetch_and_apply<T: RemoteTransport>(
    transport: &mut T,
    store: &Store,
    after: u64,
    wait_ms: u64,
) -> std::result::Result<Option<FetchedAndApplied>, T::Error> {
    Ok(transport
        .fetch_return(store, after, wait_ms)?
        .map(|Fetched { answers, reader }| (answers, remote::apply_return(store, reader))))
}

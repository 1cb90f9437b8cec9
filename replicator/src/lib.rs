//! outpost-replicator: flows, central processing, returns, the journal, sync files and
//! provisioning (SPEC T1, T3, S4, R6, R7, J1–J4, C6).
//!
//! The core is sans-IO: functions take a [`Store`](outpost_engine::Store), a byte stream
//! ([`std::io::Read`] or [`std::io::Write`]) and the store's injected clock, and return results.
//! The file transport ([`files`]) is a thin adapter; the network one comes later.
//!
//! One exchange, the deferred cycle of SPEC J3:
//! 1. 22:00, the remote: [`remote::emit`] writes every change central lacks (by central's
//!    knowledge as last reported), leaves reserved documents out (R7), freezes the documents
//!    it emitted (R6) and logs the emission.
//! 2. Central: [`central::receive`] stores the flow whole in its sync table ("file ready",
//!    T3); [`central::process_ready`] applies it with the guards keyed on the site that sent it,
//!    recording start, end and executions in the [`journal`] (J1).
//! 3. 23:00, central: [`central::build_return`] writes everything that remote lacks, central's
//!    knowledge, the remote's configuration, and its refused changes with central's values.
//! 4. 23:01, the remote: [`remote::apply_return`] applies it atomically, refuses a stale one,
//!    puts back what central refused, takes the configuration (C6), and reports all of it with
//!    its next emission.

pub mod automaton;
pub mod central;
pub mod config;
pub mod executor;
pub mod files;
pub mod flow;
pub mod frames;
pub mod incarnation;
pub mod journal;
pub mod local;
pub mod monitor;
mod monitor_records;
pub mod remote;
pub mod schedule;

pub use flow::{
    ConfigSnapshot, DecodeError, FlowHeader, FlowId, FlowKind, FlowReader, FlowWriter, Incoming,
    IncomingItem, Item, ReturnAck, ReturnedRejection, SyncMode,
};

/// What can go wrong while replicating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed or refused.
    #[error(transparent)]
    Engine(#[from] outpost_engine::Error),
    /// A flow that cannot be read; nothing was applied.
    #[error("{0}")]
    Decode(#[from] DecodeError),
    /// Reading or writing a flow or a file failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A flow that decodes but does not belong here (wrong target, kind, schema, sender…).
    #[error("flow refused: {0}")]
    Refused(String),
    /// A sync configuration that does not hold together (an unknown time zone, a remote's
    /// schedule central cannot serve…): nothing was changed.
    #[error("the sync configuration is refused: {0}")]
    Config(String),
    /// No flow with that id.
    #[error("no flow {0} in the sync table")]
    UnknownFlow(FlowId),
    /// An emission stamped too far ahead of central's clock: held, not applied (clock-skew
    /// quarantine). It goes through once its site's clock is set right and restamped.
    #[error("quarantined: {0}")]
    // the journal row's text starts the same way (central::QUARANTINED)
    Quarantined(String),
    /// An emission from a store that does not (or no longer) speak for its site: a second store
    /// set up from one bootstrap, a superseded one, one restored from a backup. Nothing of it
    /// is taken; the reason names the fix (`outpost central reprovision`).
    #[error("flow refused: {0}")]
    WrongStore(String),
    /// An emission central does not take yet, through no fault of it or its store: while
    /// central is being restored from a backup, a remote's new changes wait until every remote
    /// has said what it holds (`central::restore_waiting_for`); or central's store was put back
    /// without `outpost central restore` (`central::put_back_noticed`: no return or bootstrap
    /// is given either, until the restore). Nothing of it is kept; the next sync sends its
    /// changes again.
    #[error("not taken yet: {0}")]
    Deferred(String),
    /// A flow built while another of the same site took its number (a host program building
    /// returns or bootstraps at central, or emissions at a remote, on several threads at once):
    /// nothing of it was kept; build it again.
    #[error(
        "flow number {0} was given meanwhile to another flow of this site (built at the same \
         time): nothing of this one was kept; build it again"
    )]
    NumberTaken(u64),
}

impl Error {
    /// Whether the fault is in a flow (it cannot be read, or does not belong here) rather than
    /// in the store or the file system: the flow is refused, and work on others goes on.
    pub fn is_the_flows(&self) -> bool {
        matches!(
            self,
            Error::Decode(_)
                | Error::Refused(_)
                | Error::UnknownFlow(_)
                | Error::Quarantined(_)
                | Error::WrongStore(_)
        )
    }
}

/// The replicator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! outpost: an embedded, replicated, local-first storage engine for businesses whose shops,
//! travelling salespeople and trade-fair stands work on a full local copy of the business data
//! and sync with a central site now and then.
//!
//! This facade re-exports the public API of the engine ([`engine`]) and of the replicator
//! ([`replicator`]), and holds what the core crates deliberately lack: the real wall clock
//! ([`SystemClock`]); and the built-in retail schema ([`retail`]), the example a host
//! application starts from and the one the command line, the daemons and the simulator use.
//!
//! The other crates of outpost, by what a user needs:
//! - `outpost-client`: a workstation program's connection to a site server (blocking and async),
//!   with nothing of the server in it;
//! - `outpost-server`: central's daemon, the site server, the sync monitor and a remote's
//!   network sync;
//! - `outpost-cli`: the `outpost` program;
//! - `outpost-sim`: the deterministic simulator.

pub use outpost_engine as engine;
pub use outpost_engine::{
    Change, ChangesLacking, Clock, Commit, Creation, Decimal, Dot, Error, FieldKind, Knowledge,
    ManualClock, MergeReport, Outcome, Policy, Record, Refusal, Rejection, Result, Role, Rule,
    Schema, Site, SiteId, Slot, Stamp, Store, StoreConfig, TableDef, Value,
};
pub use outpost_replicator as replicator;

pub mod retail;

/// The machine's clock: UTC milliseconds since the Unix epoch. The engine never reads the wall
/// clock itself; a host application hands it this (or its own) [`Clock`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

//! outpost's servers and network sync — everything of outpost that listens on a socket or
//! talks to central over HTTP:
//!
//! - [`serve`]: central's daemon (`outpost central serve`): the `/v1/` routes remotes sync
//!   through, the sync monitor ([`serve::monitor`]) and its alerts;
//! - [`site`]: a site server (`outpost site serve`, S3): a remote's store served to its
//!   workstations, which use `outpost-client`;
//! - [`sync`]: a remote's side of a network sync (`outpost remote sync | run`);
//! - [`auth`]: credentials and their digests;
//! - [`control`]: a daemon's control socket, through which the command line's commands on
//!   its data directory run while it holds the store;
//! - [`data_dir`]: opening a site's data directory, its private files.
//!
//! The answers' shapes are in `outpost-api`, shared with the client library.

pub mod auth;
pub mod control;
pub mod data_dir;
mod http;
pub mod serve;
pub mod site;
pub mod sync;

use std::path::PathBuf;

/// What fails in the servers, the network sync and a data directory, for the program that
/// runs them to show (the command line prints it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store of a data directory is open in another process.
    #[error(
        "{}: the store is in use by another process that takes no commands (a program \
         embedding outpost, or a daemon whose control socket is missing): stop it first. \
         The daemons `central serve`, `site serve` and `remote run` run the commands on their \
         data directory themselves",
        .0.display()
    )]
    Locked(PathBuf),
    /// A data directory's store failed to open.
    #[error("{}: {source}", dir.display())]
    Open {
        /// The data directory.
        dir: PathBuf,
        /// Why.
        source: outpost_engine::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Engine(#[from] outpost_engine::Error),
    /// The replicator failed.
    #[error(transparent)]
    Replicator(#[from] outpost_replicator::Error),
    /// A network sync failed.
    #[error(transparent)]
    Net(#[from] sync::NetError),
    /// The system's random number generator failed (making a credential or an identity).
    #[error("the system's random number generator failed")]
    Random,
    /// Anything else, in words for the operator: a setting, a file, an address, a user code.
    #[error("{0}")]
    Message(String),
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::Message(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::Message(message.to_owned())
    }
}

/// The command line's errors are messages.
impl From<Error> for String {
    fn from(e: Error) -> Self {
        e.to_string()
    }
}

/// The result of the servers' and the network sync's functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! The engine's error type.

use crate::guard::Refusal;
use crate::site::{SiteError, SiteId};

/// Everything that can go wrong in the engine. Guard refusals name their rule.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A write refused by a rule (R3–R8); nothing was written.
    #[error("{0}")]
    Refused(Box<Refusal>),
    /// The write does not fit the declared schema (unknown table or field, wrong type).
    #[error("schema: {0}")]
    Schema(String),
    /// A site the store does not know.
    #[error("unknown site {0}")]
    UnknownSite(SiteId),
    /// A site declaration that contradicts the directory (a second central, a duplicate id…).
    #[error(transparent)]
    Site(#[from] SiteError),
    /// The record does not exist.
    #[error("no record {table}/{key}")]
    NotFound {
        /// The table.
        table: String,
        /// The key.
        key: String,
    },
    /// Reservation asked on a table whose records are not documents.
    #[error("table {0} does not hold documents: only documents can be reserved (R7)")]
    NotReservable(String),
    /// A host type that cannot be mapped to or from a record's fields.
    #[error("record mapping: {0}")]
    Mapping(String),
    /// The store was opened with another site identity than the one it was created for.
    #[error("this store belongs to site {stored}, not {given}")]
    IdentityMismatch {
        /// The identity recorded in the store.
        stored: String,
        /// The identity given to open it.
        given: String,
    },
    /// The store was created with another schema.
    #[error(
        "the store's schema fingerprint is {stored:016x} but the declared schema's is {declared:016x}"
    )]
    SchemaMismatch {
        /// Recorded in the store.
        stored: u64,
        /// Declared now.
        declared: u64,
    },
    /// A previous write to disk failed; the store refuses writes until it is reopened.
    #[error("the store is poisoned by an earlier failed write to disk ({0}); reopen it")]
    Poisoned(String),
    /// Stored bytes that do not decode (a damaged file).
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The store is open in another process (or another `Store` of this one): one process owns
    /// a store.
    #[error("the store is already open in another process")]
    Locked,
    /// No new key can be given yet (`new_key`): the store was put back from a backup and is
    /// still taking back, from the other sites, what it made after the backup — records among
    /// them may hold any number it would give now.
    #[error(
        "no new key for table {table} yet: this store was put back from a backup and is still \
         taking back, from the other sites, what it made after the backup, where a key given now \
         may already be used; new keys are given again once every remote has synced (until then, \
         write under a key chosen otherwise)"
    )]
    KeysAfterRestore {
        /// The table a key was asked for.
        table: String,
    },
    /// The store writes nothing of its own for now ([`crate::WriteTx::hold_own_writes`]): a
    /// central put back from a backup without its restore, whose next numbers may be those the
    /// lost central gave. Nothing was written.
    #[error("this store writes nothing of its own for now: {0}")]
    OwnWritesHeld(String),
    /// A field written to a record deleted earlier in the same transaction: its writes share
    /// one stamp, and a field shows only when written after the deletion. Nothing was written.
    #[error(
        "record {table}/{key} was deleted in this transaction: write it again in another one \
         (written with its deletion, a field would stay hidden)"
    )]
    WrittenAfterDelete {
        /// The table.
        table: String,
        /// The key.
        key: String,
    },
    /// The storage layer failed.
    #[error("storage: {0}")]
    Storage(StorageError),
    /// The input stream being applied failed (a flow that does not decode); the transaction
    /// was aborted and the store is unchanged.
    #[error("input: {0}")]
    Input(Box<dyn std::error::Error + Send + Sync>),
    /// A file-system error outside the store file.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The refusal, if this is one.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Error::Refused(r) => Some(r),
            _ => None,
        }
    }

    /// Whether the error came from the storage layer (and so poisons a write).
    pub(crate) fn is_storage(&self) -> bool {
        matches!(self, Error::Storage(_))
    }
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Self {
        Error::Refused(Box::new(r))
    }
}

/// A failure of the storage layer, kept opaque: the engine's API does not expose the storage
/// library's error type, so that another backend stays possible.
#[derive(Debug)]
pub struct StorageError(redb::Error);

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<redb::Error> for StorageError {
    fn from(e: redb::Error) -> Self {
        StorageError(e)
    }
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::DatabaseAlreadyOpen => Error::Locked,
            e => Error::Storage(StorageError(e)),
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::from(redb::Error::from(e))
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

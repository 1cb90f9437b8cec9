//! outpost-engine: one site's local-first store.
//!
//! A [`Store`] holds a full local copy of the business data of one site (central or remote) in
//! a redb file. Tables are declared by the host application with ownership [`Policy`]s (SPEC
//! R2–R9). Each field is a last-writer-wins [`Register`] ordered by `(stamp, site, seq)` under a hybrid
//! logical clock ([`hlc`]), so every site picks the same winner whatever the order of arrival.
//! Every local commit takes a [`Dot`]; a store indexes each field's winning dot, so what a peer
//! lacks ([`Store::changes_lacking`]) costs in proportion to the changes, not to the database.
//!
//! The engine never reads the wall clock, never spawns threads and never touches the network:
//! time comes from an injected [`Clock`].
//!
//! ```
//! use outpost_engine::{FieldKind, ManualClock, Schema, Site, Store, StoreConfig, TableDef};
//!
//! let schema = Schema::new([TableDef::shared("customers")
//!     .field("name", FieldKind::Text)
//!     .field("city", FieldKind::Text)])?;
//! let site = Site::remote(2, "BSOC")?;
//! let store = Store::in_memory(StoreConfig::new(site, schema, ManualClock::new(1_000)))?;
//! let key = store.write(|tx| {
//!     let key = tx.new_key("customers")?;
//!     tx.set("customers", &key, "name", "Dupont")?;
//!     tx.set("customers", &key, "city", "Lyon")?;
//!     Ok(key)
//! })?;
//! assert_eq!(key, "BSOC-000001");
//! let record = store.record("customers", &key)?.expect("just written");
//! assert_eq!(record.get("city").and_then(|v| v.as_text()), Some("Lyon"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod guard;
pub mod hlc;
mod keys;
pub mod knowledge;
pub mod mapping;
mod memory;
mod record;
mod record_bytes;
mod rejection;
mod schema;
mod site;
mod storage;
mod store;
mod value;

pub use error::{Error, Result, StorageError};
pub use guard::{Refusal, Rule};
pub use hlc::{Clock, ManualClock, Stamp};
pub use knowledge::{Dot, Knowledge, RangeSet};
pub use record::{Change, Creation, Incoming, Marker, RawRecord, Record, Register, Slot};
pub use rejection::Rejection;
pub use schema::{FieldKind, NAME_LEN_MAX, Policy, Schema, SchemaError, TableDef};
pub use site::{EstablishmentCode, Role, Site, SiteDirectory, SiteError, SiteId};
pub use store::{
    AheadReport, CACHE_BYTES_DEFAULT, CACHE_BYTES_MAX, CacheSize, ChangesLacking, Commit,
    MergeReport, Outcome, SKEW_MS_MAX_DEFAULT, STORE_FILE_NAME, Snapshot, Store, StoreConfig,
    WriteTx, cache_bytes_for,
};
pub use value::{DECIMAL_SCALE_MAX, Decimal, DecimalParseError, Value};

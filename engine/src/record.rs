//! Records, registers and changes: the replicated data model.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::hlc::Stamp;
use crate::knowledge::Dot;
use crate::site::SiteId;
use crate::value::Value;

/// Which register of a record a change writes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Slot {
    /// The record's creation: the earliest creating write wins (R1). Its value is always null.
    Created,
    /// The record's tombstone: `Bool(true)` when deleted. Last-writer-wins against the fields.
    Tombstone,
    /// A named field.
    Field(String),
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slot::Created => f.write_str("<created>"),
            Slot::Tombstone => f.write_str("<deleted>"),
            Slot::Field(name) => f.write_str(name),
        }
    }
}

/// The order of last-writer-wins: `(stamp, site, seq)`, a total order on distinct writes, so
/// every site picks the same winner whatever the order of arrival. Also the creation marker of a
/// record (R1).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Marker {
    /// When.
    pub stamp: Stamp,
    /// Which site; breaks ties between equal stamps.
    pub site: SiteId,
    /// The commit's sequence at that site; breaks ties between equal stamps of one site. A site
    /// stamps each of its writes later than the one before, but a site put back from a backup,
    /// whose clock had run ahead before the loss, can stamp a write exactly as a lost one was:
    /// the order stays total, so every site picks the same one (for central restored from a
    /// backup, whose numbers jump past the lost ones, the later commit).
    pub seq: u64,
}

/// The creation of a record: the stamp and dot of the write that created it. When two sites
/// create the same key concurrently, the earliest `(stamp, dot)` is the creation everywhere.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Creation {
    /// When the record was created.
    pub stamp: Stamp,
    /// The creating commit; `dot.site` is the creator site (R1).
    pub dot: Dot,
}

impl Creation {
    /// The creator site (R1).
    pub fn site(&self) -> SiteId {
        self.dot.site
    }
}

/// A change of a batch to merge ([`crate::WriteTx::apply_batch`]), as a flow reader hands it
/// over.
#[derive(Clone, Debug, PartialEq)]
pub enum Incoming {
    /// A change the receiver lacks.
    New(Change),
    /// A change whose dot the receiver already holds: read and checked, not built.
    Known(Dot),
}

/// One field's last-writer-wins register.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Register {
    /// The winning value.
    pub value: Value,
    /// The winning write's stamp.
    pub stamp: Stamp,
    /// The winning write's commit; `dot.site` is the origin site.
    pub dot: Dot,
}

impl Register {
    /// The register's position in the last-writer-wins order.
    pub fn marker(&self) -> Marker {
        Marker {
            stamp: self.stamp,
            site: self.dot.site,
            seq: self.dot.seq,
        }
    }
}

/// One field change, as a local commit makes it and as sites exchange it.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Change {
    /// The table.
    pub table: String,
    /// The record's application key.
    pub key: String,
    /// The register written.
    pub slot: Slot,
    /// The new value.
    pub value: Value,
    /// When (hybrid logical clock of the origin site).
    pub stamp: Stamp,
    /// The origin commit.
    pub dot: Dot,
    /// The record's creation as the origin knew it (R1): the creator is `created.site()`.
    pub created: Creation,
}

impl Change {
    /// The change's position in the last-writer-wins order.
    pub fn marker(&self) -> Marker {
        Marker {
            stamp: self.stamp,
            site: self.dot.site,
            seq: self.dot.seq,
        }
    }
}

/// A record as stored: every register, including those hidden by a later deletion.
#[derive(Clone, PartialEq, Debug)]
pub struct RawRecord {
    /// The table.
    pub table: String,
    /// The application key.
    pub key: String,
    /// The creation: `created.site()` is the creator site (R1).
    pub created: Creation,
    /// The tombstone register, if the record was ever deleted.
    pub tombstone: Option<Register>,
    /// The field registers.
    pub fields: BTreeMap<String, Register>,
}

impl RawRecord {
    /// The creator site (R1).
    pub fn creator(&self) -> SiteId {
        self.created.site()
    }

    /// The record as the application sees it, or `None` when deleted. A deletion hides every
    /// field written before it; a later write brings the record back with the fields written
    /// after the deletion.
    pub fn visible(&self) -> Option<Record> {
        let tomb = self
            .tombstone
            .as_ref()
            .filter(|t| t.value == Value::Bool(true))
            .map(Register::marker);
        let fields: BTreeMap<String, Value> = self
            .fields
            .iter()
            .filter(|(_, r)| tomb.is_none_or(|t| r.marker() > t))
            .map(|(name, r)| (name.clone(), r.value.clone()))
            .collect();
        if tomb.is_some() && fields.is_empty() {
            return None;
        }
        Some(Record {
            key: self.key.clone(),
            creator: self.created.site(),
            fields,
        })
    }
}

/// A record as the application sees it.
#[derive(Clone, PartialEq, Debug)]
pub struct Record {
    /// The application key.
    pub key: String,
    /// The creator site (R1).
    pub creator: SiteId,
    /// The fields' values.
    pub fields: BTreeMap<String, Value>,
}

impl Record {
    /// A field's value (`None` when never written).
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field)
    }
}

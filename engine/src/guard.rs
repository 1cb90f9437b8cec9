//! Merge guards: where the ownership rules live (SPEC R3–R8).
//!
//! The same function judges a local write through the API (an immediate typed error for the host
//! application) and an incoming change being merged (refused into the rejection log). It keys on
//! the site that made the write — the change's origin, which the merge checks against the site
//! that sent it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::record::Slot;
use crate::schema::{Policy, TableDef};
use crate::site::{Role, Site, SiteId};

/// The rule that refused a write.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Rule {
    /// R1: a change must come from the site it claims as its origin (a remote relays no one
    /// else's changes), from a known site, and keep its record's creator.
    R1,
    /// R3: only central modifies central-only tables (articles, prices, configuration).
    R3,
    /// R4/R9: the establishment's permissions forbid this table to this site.
    R4,
    /// R5: only the creator site or central modifies a document.
    R5,
    /// R6: a document already synchronised to central is frozen for its remote creator.
    R6,
    /// R7: a document reserved by one holder is written only by that holder.
    R7,
    /// R8: an owner-exclusive field (a cash register's closing) is written only by the record's
    /// creator — not even central.
    R8,
    /// The change does not fit the shared schema: unknown table or field, wrong type.
    Schema,
    /// R2: the latest by date/time is kept. Returned, not refused by a guard: the change of a
    /// site lost at central to a write of the same site stamped later, which the site no
    /// longer holds though it knows it (a restamp replaced that write while an emission
    /// carrying it was on its way) — the site takes central's value. Last, so that the other
    /// rules keep their encoding.
    R2,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::R1 => "R1",
            Rule::R3 => "R3",
            Rule::R4 => "R4/R9",
            Rule::R5 => "R5",
            Rule::R6 => "R6",
            Rule::R7 => "R7",
            Rule::R8 => "R8",
            Rule::Schema => "schema",
            Rule::R2 => "R2",
        })
    }
}

/// A refused write: the rule, who wrote, what, and why in words.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Refusal {
    /// The rule that refused it.
    pub rule: Rule,
    /// The site that made the write.
    pub writer: SiteId,
    /// The table.
    pub table: String,
    /// The record's key.
    pub key: String,
    /// The register, if the write targeted one field (`None` for a deletion).
    pub field: Option<String>,
    /// Why, in words, for the user.
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refused by {}: {} (site {}, {}/{}",
            self.rule, self.reason, self.writer, self.table, self.key
        )?;
        if let Some(field) = &self.field {
            write!(f, ".{field}")?;
        }
        f.write_str(")")
    }
}

/// What the guard needs to know about one write.
#[derive(Debug)]
pub(crate) struct Write<'a> {
    pub table: &'a TableDef,
    pub key: &'a str,
    pub slot: &'a Slot,
    /// The site that made the write.
    pub writer: &'a Site,
    /// The record's creator (the writer itself for a new record).
    pub creator: SiteId,
    /// Whether the record is frozen (emitted to central, R6).
    pub frozen: bool,
    /// Whether the writer's establishment may not write this table (R4/R9).
    pub denied: bool,
    /// For a local write: the record's reservation holder and the writing transaction's holder.
    pub reservation: Option<(&'a str, Option<&'a str>)>,
}

impl Write<'_> {
    fn refuse(&self, rule: Rule, reason: String) -> Refusal {
        Refusal {
            rule,
            writer: self.writer.id,
            table: self.table.name().to_owned(),
            key: self.key.to_owned(),
            field: match self.slot {
                Slot::Field(name) => Some(name.clone()),
                Slot::Created | Slot::Tombstone => None,
            },
            reason,
        }
    }
}

/// Judges one write against R3–R8. `Ok` means the write may go on to last-writer-wins.
pub(crate) fn check(w: &Write<'_>) -> Result<(), Refusal> {
    let writer_is_central = w.writer.role == Role::Central;
    let table = w.table.name();
    if w.denied {
        return Err(w.refuse(
            Rule::R4,
            format!(
                "establishment {} is not permitted to write {table}",
                w.writer.code
            ),
        ));
    }
    match w.table.policy() {
        Policy::CentralOnly if !writer_is_central => {
            return Err(w.refuse(
                Rule::R3,
                format!("only central may modify {table}; a remote cannot"),
            ));
        }
        Policy::Document { frozen_once_synced } => {
            if w.creator != w.writer.id && !writer_is_central {
                return Err(w.refuse(
                    Rule::R5,
                    format!(
                        "only the creator site ({}) or central may modify this document",
                        w.creator
                    ),
                ));
            }
            if frozen_once_synced && w.frozen && w.creator == w.writer.id && !writer_is_central {
                return Err(w.refuse(
                    Rule::R6,
                    "this document has been synchronised to central and can no longer be modified here"
                        .to_owned(),
                ));
            }
        }
        Policy::Shared | Policy::CentralOnly => {}
    }
    if let Slot::Field(field) = w.slot
        && w.table.is_owner_exclusive(field)
        && w.creator != w.writer.id
    {
        return Err(w.refuse(
            Rule::R8,
            format!(
                "only the creating establishment ({}) may write {field}, not even central",
                w.creator
            ),
        ));
    }
    if let Some((holder, writer_holder)) = w.reservation
        && writer_holder != Some(holder)
    {
        return Err(w.refuse(Rule::R7, format!("the document is reserved by {holder}")));
    }
    Ok(())
}

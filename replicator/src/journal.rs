//! The journal (SPEC J1–J4): every flow central has seen or made, with its processing.
//!
//! A row is stored in the local side table under `j/` + SynID, postcard-encoded. Its layout is
//! versioned: version 1 ended at `receipt`; version 2 (issue 20) adds `hold` after it. postcard
//! writes fields in order with nothing between them, so a version-1 row is a strict prefix of
//! the version-2 layout: it fails to decode as version 2 (at its end), decodes as `RowV1`,
//! and is migrated on read — its hold read from its `error` text, the one place that text is
//! read, for rows written before the state was typed. Every row written is version 2.

use outpost_engine::{SiteId, Snapshot, Store, WriteTx};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::flow::{FlowId, FlowKind, SyncMode};
use crate::local;

/// Why central keeps an emission pending without processing it.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub enum Hold {
    /// Not held.
    #[default]
    None,
    /// Held for clock skew: a change stamped too far ahead of central's clock; never tried
    /// again (`central::process`).
    Quarantined {
        /// Which change, and how far ahead.
        reason: String,
    },
    /// Held, then superseded by a later emission of its site that carried its changes again:
    /// never applied, and out of the pending list.
    Superseded,
}

/// One row of the journal.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct JournalRow {
    /// SynID.
    pub id: FlowId,
    /// Emission or return (or bootstrap).
    pub kind: FlowKind,
    /// The remote concerned: the emitter, or the return's target.
    pub site: SiteId,
    /// The sync type.
    pub mode: SyncMode,
    /// J1 Link: a return's link is the emission it answers; an emission's link is the return
    /// that answered it — `None` (Link 0) while none has, and forever if a later return covered
    /// it (J2).
    pub link: Option<FlowId>,
    /// When the flow became "file ready" (whole in the sync table, T3), or was made (a return).
    pub file_ready_ms: Option<u64>,
    /// Start of execution: central processing an emission, or the remote applying a return (as
    /// it reported).
    pub exec_start_ms: Option<u64>,
    /// End of execution.
    pub exec_end_ms: Option<u64>,
    /// How many times execution started: more than one means it was cut off and redone (J1).
    pub executions: u32,
    /// A return the remote refused (J1).
    pub refused_by_remote: bool,
    /// Changes in the flow.
    pub n_changes: u64,
    /// Changes refused at central (an emission), or sent back (a return).
    pub n_rejections: u64,
    /// The flow's size in bytes.
    pub bytes: u64,
    /// What went wrong, or what is worth knowing (a gap in the sequence, a refusal's reason).
    pub error: Option<String>,
    /// Where the flow's bytes are in the sync table (emissions).
    pub receipt: Option<u64>,
    /// Whether central holds the emission instead of processing it (version 2 of the row).
    pub hold: Hold,
}

/// A journal row as version 1 stored it (before `hold`).
#[derive(Deserialize)]
struct RowV1 {
    id: FlowId,
    kind: FlowKind,
    site: SiteId,
    mode: SyncMode,
    link: Option<FlowId>,
    file_ready_ms: Option<u64>,
    exec_start_ms: Option<u64>,
    exec_end_ms: Option<u64>,
    executions: u32,
    refused_by_remote: bool,
    n_changes: u64,
    n_rejections: u64,
    bytes: u64,
    error: Option<String>,
    receipt: Option<u64>,
}

/// How version 1 began the `error` of an emission held for clock skew, and of one superseded.
const V1_QUARANTINED: &str = "quarantined: ";
const V1_SUPERSEDED: &str = "superseded by emission";

impl From<RowV1> for JournalRow {
    fn from(r: RowV1) -> Self {
        let text = r.error.as_deref().unwrap_or("");
        let hold = if let Some(reason) = text.strip_prefix(V1_QUARANTINED) {
            Hold::Quarantined {
                reason: reason.to_owned(),
            }
        } else if text.starts_with(V1_SUPERSEDED) {
            Hold::Superseded
        } else {
            Hold::None
        };
        JournalRow {
            id: r.id,
            kind: r.kind,
            site: r.site,
            mode: r.mode,
            link: r.link,
            file_ready_ms: r.file_ready_ms,
            exec_start_ms: r.exec_start_ms,
            exec_end_ms: r.exec_end_ms,
            executions: r.executions,
            refused_by_remote: r.refused_by_remote,
            n_changes: r.n_changes,
            n_rejections: r.n_rejections,
            bytes: r.bytes,
            error: r.error,
            receipt: r.receipt,
            hold,
        }
    }
}

/// A stored row, of either version.
fn decode(bytes: &[u8]) -> Result<JournalRow> {
    match postcard::from_bytes::<JournalRow>(bytes) {
        Ok(row) => Ok(row),
        Err(_) => local::snap_decode::<RowV1>(bytes).map(JournalRow::from),
    }
}

/// The row of `id`, in a write transaction.
pub(crate) fn get(tx: &WriteTx<'_, '_>, id: FlowId) -> Result<Option<JournalRow>> {
    tx.local_get(&local::flow_key(local::JOURNAL, id))?
        .map(|b| decode(&b))
        .transpose()
}

/// Writes a row (version 2).
pub(crate) fn put(tx: &mut WriteTx<'_, '_>, row: &JournalRow) -> Result<()> {
    local::put(tx, &local::flow_key(local::JOURNAL, row.id), row)
}

/// The row of `id`, in a snapshot.
pub(crate) fn snap_get(snap: &Snapshot, id: FlowId) -> Result<Option<JournalRow>> {
    snap.local_get(&local::flow_key(local::JOURNAL, id))?
        .map(|b| decode(&b))
        .transpose()
}

/// Every row, in SynID order.
pub(crate) fn snap_all(snap: &Snapshot) -> Result<Vec<JournalRow>> {
    snap.local_range(local::JOURNAL, &local::prefix_end(local::JOURNAL), None)?
        .into_iter()
        .map(|(_, v)| decode(&v))
        .collect()
}

impl JournalRow {
    pub(crate) fn new(id: FlowId, kind: FlowKind, site: SiteId, mode: SyncMode) -> Self {
        JournalRow {
            id,
            kind,
            site,
            mode,
            link: None,
            file_ready_ms: None,
            exec_start_ms: None,
            exec_end_ms: None,
            executions: 0,
            refused_by_remote: false,
            n_changes: 0,
            n_rejections: 0,
            bytes: 0,
            error: None,
            receipt: None,
            hold: Hold::None,
        }
    }
}

/// Journal rows, optionally of one remote, with `file_ready_ms` in `[from_ms, to_ms)`; in time
/// order (file ready), then SynID.
pub fn rows(
    store: &Store,
    site: Option<SiteId>,
    from_ms: Option<u64>,
    to_ms: Option<u64>,
) -> Result<Vec<JournalRow>> {
    let snap = store.snapshot()?;
    let mut all = snap_all(&snap)?;
    all.sort_by_key(|r| (r.file_ready_ms, r.id));
    Ok(all
        .into_iter()
        .filter(|r| site.is_none_or(|s| r.site == s))
        .filter(|r| {
            let t = r.file_ready_ms.unwrap_or(0);
            from_ms.is_none_or(|f| t >= f) && to_ms.is_none_or(|e| t < e)
        })
        .collect())
}

/// One row.
pub fn row(store: &Store, id: FlowId) -> Result<Option<JournalRow>> {
    snap_get(&store.snapshot()?, id)
}

#[cfg(test)]
mod tests {
    use outpost_engine::{FieldKind, ManualClock, Schema, Site, StoreConfig, TableDef};

    use super::*;

    /// A version-1 row as the code before issue 20 wrote it.
    #[derive(Serialize)]
    struct WrittenV1<'a> {
        id: FlowId,
        kind: FlowKind,
        site: SiteId,
        mode: SyncMode,
        link: Option<FlowId>,
        file_ready_ms: Option<u64>,
        exec_start_ms: Option<u64>,
        exec_end_ms: Option<u64>,
        executions: u32,
        refused_by_remote: bool,
        n_changes: u64,
        n_rejections: u64,
        bytes: u64,
        error: Option<&'a str>,
        receipt: Option<u64>,
    }

    fn v1(seq: u64, error: Option<&str>) -> Vec<u8> {
        let row = WrittenV1 {
            id: FlowId {
                site: SiteId(2),
                seq,
            },
            kind: FlowKind::Emission,
            site: SiteId(2),
            mode: SyncMode::Immediate,
            link: None,
            file_ready_ms: Some(1_000),
            exec_start_ms: None,
            exec_end_ms: None,
            executions: 0,
            refused_by_remote: false,
            n_changes: 3,
            n_rejections: 0,
            bytes: 120,
            error,
            receipt: Some(seq),
        };
        postcard::to_stdvec(&row).unwrap_or_default()
    }

    /// Issue 20: the monitor and central told a held emission by the start of its journal
    /// row's error text. The row now carries its hold as a type; rows written before are read
    /// with their hold taken from that text once, and written back in the new layout.
    #[test]
    fn a_version_1_row_is_read_with_its_hold_and_written_back_as_version_2() -> Result<()> {
        let schema = Schema::new([TableDef::shared("customers").field("name", FieldKind::Text)])
            .unwrap_or_else(|e| unreachable!("{e}"));
        let site = Site::central(1, "ASOC").unwrap_or_else(|e| unreachable!("{e}"));
        let store = Store::in_memory(StoreConfig::new(site, schema, ManualClock::new(0)))?;
        let held = "quarantined: change 02-1 stamped 3 h ahead";
        local::write(&store, |tx| {
            tx.local_put(
                &local::flow_key(
                    local::JOURNAL,
                    FlowId {
                        site: SiteId(2),
                        seq: 1,
                    },
                ),
                &v1(1, Some(held)),
            )?;
            tx.local_put(
                &local::flow_key(
                    local::JOURNAL,
                    FlowId {
                        site: SiteId(2),
                        seq: 2,
                    },
                ),
                &v1(
                    2,
                    Some("superseded by emission 02-000003 while held for clock skew"),
                ),
            )?;
            tx.local_put(
                &local::flow_key(
                    local::JOURNAL,
                    FlowId {
                        site: SiteId(2),
                        seq: 3,
                    },
                ),
                &v1(3, None),
            )?;
            Ok(())
        })?;
        let rows = rows(&store, None, None, None)?;
        let holds: Vec<Hold> = rows.iter().map(|r| r.hold.clone()).collect();
        assert_eq!(
            holds,
            [
                Hold::Quarantined {
                    reason: "change 02-1 stamped 3 h ahead".into()
                },
                Hold::Superseded,
                Hold::None
            ]
        );
        assert_eq!(rows[0].error.as_deref(), Some(held));
        assert_eq!(rows[2].n_changes, 3);
        // Written back: version 2, read as it was written.
        let mut first = rows[0].clone();
        first.hold = Hold::Superseded;
        local::write(&store, |tx| put(tx, &first))?;
        assert_eq!(row(&store, first.id)?, Some(first));
        Ok(())
    }
}

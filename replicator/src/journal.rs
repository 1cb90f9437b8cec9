//! The journal (SPEC J1–J4): every flow central has seen or made, with its processing.

use outpost_engine::{SiteId, Store};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::flow::{FlowId, FlowKind, SyncMode};
use crate::local;

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
    let mut all: Vec<JournalRow> = local::snap_all(&snap, local::JOURNAL)?;
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
    local::snap_get(&store.snapshot()?, &local::flow_key(local::JOURNAL, id))
}

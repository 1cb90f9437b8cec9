//! The rejection log: every refused incoming change, kept with its full value, so that nothing
//! refused is ever lost from view.

use serde::{Deserialize, Serialize};

use crate::guard::Refusal;
use crate::record::Change;
use crate::site::SiteId;

/// One refused change, as persisted.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Rejection {
    /// The site that sent the change (the flow's source, not necessarily its origin).
    pub source: SiteId,
    /// The change, whole.
    pub change: Change,
    /// The rule and the reason.
    pub refusal: Refusal,
    /// When it was refused: local physical time, UTC milliseconds.
    pub at_ms: u64,
}

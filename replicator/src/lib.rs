//! outpost-replicator: flows, central processing, returns, the journal, sync files.
//!
//! **Empty for now.** The replicator issue fills it: the flow format (`docs/flow-format.md`),
//! emission and return building on top of the engine's `Store::changes_lacking` and
//! `Store::apply`, the sync table and the journal (SPEC T1, T3, J1–J4). Like the engine, its core
//! is sans-IO: functions that take a store, bytes and a time, and return bytes and results.

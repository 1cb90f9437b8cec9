//! outpost-sim: the deterministic multi-site simulator.
//!
//! **Empty for now.** The simulator issue fills it: many sites across time zones, a virtual
//! clock, a seeded RNG and an in-memory transport that can fail, driving the same engine and
//! replicator code as production.

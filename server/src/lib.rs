//! outpost's servers and network sync — everything of outpost that listens on a socket or
//! talks to central over HTTP:
//!
//! - [`serve`]: central's daemon (`outpost central serve`): the `/v1/` routes remotes sync
//!   through, the sync monitor ([`serve::monitor`]) and its alerts;
//! - [`site`]: a site server (`outpost site serve`, S3): a remote's store served to its
//!   workstations, which use `outpost-client`;
//! - [`sync`]: a remote's side of a network sync (`outpost remote sync | run`);
//! - [`auth`]: credentials and their digests;
//! - [`data_dir`]: opening a site's data directory, its private files.
//!
//! The answers' shapes are in `outpost-api`, shared with the client library.

pub mod auth;
pub mod data_dir;
mod http;
pub mod serve;
pub mod site;
pub mod sync;

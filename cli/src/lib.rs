//! The `outpost` program's library: the administration and file commands ([`admin`]), the
//! demo ([`demo`]), the fuzz targets' bodies ([`fuzzing`]) and the long commands' progress
//! bars ([`progress`]). The program itself is `src/main.rs`; the servers it starts are in
//! `outpost-server`.

pub mod admin;
pub mod demo;
pub mod fields;
#[doc(hidden)]
pub mod fuzzing;
pub mod out;
pub mod progress;

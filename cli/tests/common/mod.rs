//! The command line's test helpers: the library-level deployment on disk of the root's
//! `tests/common` (one copy), and the process helpers ([`net`]).
#![allow(dead_code)]

#[path = "../../../tests/common/mod.rs"]
mod library;
pub mod net;

#[allow(unused_imports)]
pub use library::*;

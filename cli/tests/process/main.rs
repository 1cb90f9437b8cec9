//! The command line's tests, in one binary (one link instead of nine): the `outpost` program
//! run as a process — the demo, the simulator's pictures, the file commands, central's daemon and remotes over HTTP and
//! HTTPS, a site server and its workstations, the sync monitor, SIGKILL loops, silent
//! divergence — and the fuzz corpora, the reliability cases that use the administration
//! commands. Run one module with `cargo test -p outpost-cli --test process network::`.

#[path = "../common/mod.rs"]
mod common;

mod cli_files;
mod control;
mod demo;
mod divergence;
mod fuzz_corpus;
mod kill_loop;
mod monitor;
mod network;
mod readme;
mod reliability;
mod sim;
mod site_server;

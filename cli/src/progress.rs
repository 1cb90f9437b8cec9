//! Progress bars for the long commands — `outpost sim` (days simulated), `remote init` from a
//! big bootstrap file and `remote import` of a big return (bytes read) — on standard error,
//! and only when it is a terminal: indicatif's stderr target
//! (`ProgressDrawTarget::stderr`) is hidden when standard error is not a terminal or `TERM` is
//! unset or `dumb`, so a pipe, a log file or a test gets no escape codes and no bar. A command
//! forwarded to the daemon that holds its data directory draws none either: the daemon's
//! standard error is not the asking command line's.
//!
//! The core crates know nothing of them: the simulator reports the days done through a
//! callback (`outpost_sim::run_with_progress`) that reads no clock; a file is counted as the
//! replicator reads it.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use indicatif::{ProgressBar, ProgressFinish, ProgressStyle};

/// Files smaller than this are read without a bar: it would only flicker.
pub const BAR_BYTES_MIN: u64 = 4 << 20;

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// A bar of `len` simulated days (over all the seeds of a run), cleared when done.
pub fn days(len: u64) -> ProgressBar {
    ProgressBar::new(len)
        .with_style(style("{msg} [{bar:30}] day {pos}/{len}, about {eta} left"))
        .with_finish(ProgressFinish::AndClear)
}

/// Whether reading `len` bytes gets a bar: a big file, read by a command of this process's own
/// command line. A command forwarded to the daemon ([`crate::out::redirect`]) gets none: its
/// bar would draw on the daemon's terminal, not on the command line that asked.
fn wants_bar(len: u64) -> bool {
    len >= BAR_BYTES_MIN && !crate::out::redirected()
}

/// `path` opened for reading, counted on a bar named `what` (`bootstrap`, `return`) when it is
/// big enough to take a while; the bar clears when the reader is dropped.
pub fn open(path: &Path, what: &str) -> std::io::Result<Box<dyn Read>> {
    let file = File::open(path)?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if !wants_bar(len) {
        return Ok(Box::new(file));
    }
    let bar = ProgressBar::new(len)
        .with_style(style(
            "{msg} [{bar:30}] {bytes}/{total_bytes}, about {eta} left",
        ))
        .with_message(format!("reading the {what}"))
        .with_finish(ProgressFinish::AndClear);
    Ok(Box::new(bar.wrap_read(file)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_command_draws_no_bar_on_the_daemon_s_terminal() {
        assert!(!wants_bar(BAR_BYTES_MIN - 1), "a small file: no bar");
        assert!(
            wants_bar(BAR_BYTES_MIN),
            "a big file on this command line: a bar"
        );
        let guard = crate::out::redirect(
            Box::new(std::io::sink()),
            Box::new(std::io::sink()),
            std::env::temp_dir(),
        );
        assert!(!wants_bar(BAR_BYTES_MIN), "forwarded: no bar");
        drop(guard);
        assert!(wants_bar(BAR_BYTES_MIN));
    }
}

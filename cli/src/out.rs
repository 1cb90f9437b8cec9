//! Where a command's output goes and where its relative paths start: the terminal and the
//! working directory, or — for a command forwarded to the daemon that holds its data directory
//! ([`outpost_server::control`]) — the connection back to the command line that asked and that
//! command line's working directory. Both are per thread: each forwarded command runs on a
//! thread of its own in the daemon.

use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where this thread's commands print, when not on the terminal.
struct Sink {
    out: Box<dyn Write + Send>,
    err: Box<dyn Write + Send>,
}

thread_local! {
    static SINK: RefCell<Option<Sink>> = const { RefCell::new(None) };
    static BASE: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// Sends this thread's output to `out` and `err`, and reads relative paths from `cwd`, until
/// the guard is dropped.
pub fn redirect(
    out: Box<dyn Write + Send>,
    err: Box<dyn Write + Send>,
    cwd: PathBuf,
) -> Redirected {
    SINK.with(|s| *s.borrow_mut() = Some(Sink { out, err }));
    BASE.with(|b| *b.borrow_mut() = Some(cwd));
    Redirected(())
}

/// Puts this thread's output and working directory back when dropped.
#[derive(Debug)]
pub struct Redirected(());

impl Drop for Redirected {
    fn drop(&mut self) {
        SINK.with(|s| {
            if let Some(mut sink) = s.borrow_mut().take() {
                let _ = sink.out.flush();
                let _ = sink.err.flush();
            }
        });
        BASE.with(|b| *b.borrow_mut() = None);
    }
}

/// Whether this thread runs a command forwarded to a daemon.
pub fn redirected() -> bool {
    SINK.with(|s| s.borrow().is_some())
}

/// This thread's standard output: a command writing many lines takes it once.
#[derive(Debug, Clone, Copy)]
pub struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        SINK.with(|s| match s.borrow_mut().as_mut() {
            Some(sink) => sink.out.write(buf),
            None => std::io::stdout().write(buf),
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        SINK.with(|s| match s.borrow_mut().as_mut() {
            Some(sink) => sink.out.flush(),
            None => std::io::stdout().flush(),
        })
    }
}

/// Writes a line on this thread's standard output or error. A closed output (`| head -1`) is
/// not an error for a command: what it prints is a report.
pub fn line(err: bool, args: std::fmt::Arguments<'_>) {
    SINK.with(|s| match s.borrow_mut().as_mut() {
        Some(sink) => {
            let w = if err { &mut sink.err } else { &mut sink.out };
            let _ = writeln!(w, "{args}");
        }
        None if err => {
            let _ = writeln!(std::io::stderr(), "{args}");
        }
        None => {
            let _ = writeln!(std::io::stdout(), "{args}");
        }
    });
}

/// Prints a line on the command's standard output (the terminal, or the command line that
/// forwarded the command).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::out::line(false, format_args!($($arg)*)) };
}

/// Prints a line on the command's standard error.
#[macro_export]
macro_rules! say_err {
    ($($arg:tt)*) => { $crate::out::line(true, format_args!($($arg)*)) };
}

/// A path given on the command line, made absolute from the working directory of the command
/// line that gave it (clap's value parser for every path argument).
pub fn path(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("an empty path".into());
    }
    let given = Path::new(text);
    if given.is_absolute() {
        return Ok(given.to_owned());
    }
    match BASE.with(|b| b.borrow().clone()) {
        Some(base) => Ok(base.join(given)),
        None => Ok(given.to_owned()),
    }
}

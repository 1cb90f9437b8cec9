//! The control socket: while a daemon (`central serve`, `site serve`, `remote run`) holds a data
//! directory's store, the command line's commands on that directory run inside the daemon, on
//! the store it holds, instead of failing with "store in use" (issue 21).
//!
//! The daemon listens on `control.sock` in the data directory (a Unix-domain socket, mode
//! 0600). Only the account that runs the daemon may use it: on Linux the peer's user id is
//! checked on every connection (the local administrator is whoever owns the data directory).
//! The command line connects when it finds the socket and sends its arguments and working
//! directory as one JSON line; the daemon answers with JSON lines — `{"out": …}` and
//! `{"err": …}` for what the command prints, then `{"exit": n}`.
//!
//! What a forwarded command does is decided by the program that runs the daemon: it installs
//! a [`Handler`] with [`set_handler`] (the `outpost` program runs its own argument parser and
//! commands there). A daemon started without one opens no socket.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use outpost_engine::Store;
use serde::{Deserialize, Serialize};

/// The socket's file name in a data directory.
pub const SOCKET_FILE: &str = "control.sock";

/// The longest request line taken (a command line's arguments).
const REQUEST_BYTES_MAX: u64 = 1 << 20;

/// What the command line sends: its arguments (the program's name first) and its working
/// directory, against which relative paths are read.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Request {
    /// The arguments, the program's name first.
    pub argv: Vec<String>,
    /// The command line's working directory.
    pub cwd: PathBuf,
}

/// One line of the daemon's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frame {
    /// Text the command printed on its standard output.
    Out(String),
    /// Text the command printed on its standard error.
    Err(String),
    /// The command's exit status; the last line.
    Exit(u8),
}

/// A daemon holding a store, as forwarded commands see it.
pub struct Daemon {
    /// What runs: `central serve`, `site serve`, `remote run`.
    pub name: &'static str,
    /// The data directory.
    pub dir: PathBuf,
    /// The store the daemon holds.
    pub store: Arc<Store>,
    /// Held by the daemon around each sync or each run of central's automaton: a forwarded
    /// command that syncs, imports or changes the configuration takes it too, so the two never
    /// interleave.
    pub work: Arc<Mutex<()>>,
    /// Called after each forwarded command: the daemon reads again what it keeps in memory
    /// (central's sites and schedules).
    pub changed: Option<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Runs `f` while no sync or automaton run is under way in the daemon.
    pub fn exclusive<T>(&self, f: impl FnOnce() -> T) -> T {
        let _work = self
            .work
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f()
    }
}

/// One forwarded command.
pub struct Call<'a> {
    /// The daemon it runs in.
    pub daemon: &'a Daemon,
    /// What was asked.
    pub request: Request,
    /// The command's standard output, sent back.
    pub out: Box<dyn Write + Send>,
    /// The command's standard error, sent back.
    pub err: Box<dyn Write + Send>,
}

impl std::fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("daemon", &self.daemon)
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

/// Runs a forwarded command and says its exit status.
pub type Handler = fn(Call<'_>) -> u8;

static HANDLER: OnceLock<Handler> = OnceLock::new();

/// Installs what forwarded commands run (once per process; later calls are ignored).
pub fn set_handler(handler: Handler) {
    let _ = HANDLER.set(handler);
}

/// The open control socket; closed and removed when dropped.
#[derive(Debug)]
pub struct Control {
    path: PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
    _held: crate::data_dir::Held,
}

impl Drop for Control {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wakes the accepting thread, which sees the flag and returns.
        #[cfg(unix)]
        let _ = std::os::unix::net::UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Opens the daemon's control socket in its data directory and answers on it from a thread
/// of its own, one thread per connection. `None` when no handler is installed or on a system
/// without Unix-domain sockets. The store is also registered as held by this process, so that
/// the forwarded commands open it through [`crate::data_dir::open`].
pub fn start(daemon: Daemon) -> crate::Result<Option<Control>> {
    let Some(&handler) = HANDLER.get() else {
        return Ok(None);
    };
    let dir = daemon.dir.clone();
    match start_with(daemon, handler) {
        Ok(control) => Ok(control),
        // The daemon runs without it (a path too long for a socket, a filesystem that holds
        // none): the commands on its directory then say the store is in use, as before.
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "no control socket: {e}");
            Ok(None)
        }
    }
}

#[cfg(unix)]
fn start_with(daemon: Daemon, handler: Handler) -> crate::Result<Option<Control>> {
    use std::os::unix::net::UnixListener;
    let held = crate::data_dir::hold(&daemon.dir, &daemon.store);
    let path = daemon.dir.join(SOCKET_FILE);
    // The store's lock is ours: a socket file left there is a stopped daemon's.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display()).into()),
    }
    let listener = UnixListener::bind(&path).map_err(|e| {
        format!(
            "{}: cannot open the control socket: {e} (a path of more than about 100 bytes is \
             too long for one: use a shorter data directory)",
            path.display()
        )
    })?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let daemon = Arc::new(daemon);
    let stopped = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                if let Err(why) = same_user(&conn) {
                    tracing::warn!("control socket: refused a connection: {why}");
                    continue;
                }
                let daemon = Arc::clone(&daemon);
                let spawned = std::thread::Builder::new()
                    .name("control-command".into())
                    .spawn(move || {
                        if let Err(e) = answer(&daemon, conn, handler) {
                            tracing::warn!("control socket: {e}");
                        }
                    });
                if let Err(e) = spawned {
                    tracing::warn!("control socket: cannot start a thread: {e}");
                }
            }
        })
        .map_err(|e| format!("cannot start the control socket's thread: {e}"))?;
    tracing::info!(socket = %path.display(), "commands on this data directory run here");
    Ok(Some(Control {
        path,
        stop,
        _held: held,
    }))
}

#[cfg(not(unix))]
fn start_with(_daemon: Daemon, _handler: Handler) -> crate::Result<Option<Control>> {
    Ok(None)
}

/// Refuses a peer that runs as another user than the daemon (root aside).
#[cfg(target_os = "linux")]
fn same_user(conn: &std::os::unix::net::UnixStream) -> Result<(), String> {
    let peer = rustix::net::sockopt::socket_peercred(conn)
        .map_err(|e| format!("cannot tell who connected: {e}"))?;
    let me = rustix::process::geteuid();
    if peer.uid == me || peer.uid.is_root() {
        Ok(())
    } else {
        Err(format!(
            "user {} is not the daemon's user {}",
            peer.uid.as_raw(),
            me.as_raw()
        ))
    }
}

/// Elsewhere the socket file's mode (0600) is the check.
#[cfg(all(unix, not(target_os = "linux")))]
fn same_user(_conn: &std::os::unix::net::UnixStream) -> Result<(), String> {
    Ok(())
}

#[cfg(unix)]
fn answer(
    daemon: &Daemon,
    conn: std::os::unix::net::UnixStream,
    handler: Handler,
) -> Result<(), String> {
    use std::io::Read;
    // A caller that connects and says nothing does not keep a thread for ever.
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .map_err(|e| format!("the control connection: {e}"))?;
    let mut line = String::new();
    BufReader::new((&conn).take(REQUEST_BYTES_MAX))
        .read_line(&mut line)
        .map_err(|e| format!("reading a request: {e}"))?;
    let request: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            let mut w = FrameWriter::new(&conn, false)?;
            w.frame(&Frame::Err(format!("error: a malformed request: {e}\n")));
            w.frame(&Frame::Exit(2));
            return Ok(());
        }
    };
    tracing::info!(command = %request.argv.join(" "), "control socket: running");
    let call = Call {
        daemon,
        request,
        out: Box::new(FrameWriter::new(&conn, false)?),
        err: Box::new(FrameWriter::new(&conn, true)?),
    };
    let code = handler(call);
    if let Some(changed) = &daemon.changed {
        changed();
    }
    FrameWriter::new(&conn, false)?.frame(&Frame::Exit(code));
    Ok(())
}

/// Sends what a command prints as frames, a line at a time.
#[cfg(unix)]
struct FrameWriter {
    conn: std::os::unix::net::UnixStream,
    err: bool,
    pending: Vec<u8>,
}

#[cfg(unix)]
impl FrameWriter {
    fn new(conn: &std::os::unix::net::UnixStream, err: bool) -> Result<Self, String> {
        Ok(FrameWriter {
            conn: conn
                .try_clone()
                .map_err(|e| format!("the control connection: {e}"))?,
            err,
            pending: Vec::new(),
        })
    }

    fn frame(&mut self, frame: &Frame) {
        if let Ok(mut line) = serde_json::to_vec(frame) {
            line.push(b'\n');
            let _ = self.conn.write_all(&line);
        }
    }

    fn send_pending(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        let frame = if self.err {
            Frame::Err(text)
        } else {
            Frame::Out(text)
        };
        let mut line = serde_json::to_vec(&frame).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.conn.write_all(&line)
    }
}

#[cfg(unix)]
impl Write for FrameWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        // Whole lines go at once: a long command's progress shows as it happens.
        if let Some(end) = self.pending.iter().rposition(|b| *b == b'\n') {
            let rest = self.pending.split_off(end + 1);
            self.send_pending()?;
            self.pending = rest;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_pending()
    }
}

#[cfg(unix)]
impl Drop for FrameWriter {
    fn drop(&mut self) {
        let _ = self.send_pending();
    }
}

/// Runs a command line in the daemon holding `dir`'s store, if one listens there: what it
/// prints is copied to this process's output and error, and its exit status returned. `None`
/// when no daemon answers (no socket, or one left by a daemon that stopped): the caller runs
/// the command itself.
pub fn forward(dir: &Path, argv: Vec<String>) -> Option<Result<u8, String>> {
    forward_to(
        dir,
        argv,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )
}

/// [`forward`], what the command prints written to `out` and `err`.
pub fn forward_to(
    dir: &Path,
    argv: Vec<String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Option<Result<u8, String>> {
    forward_with(dir, argv, out, err)
}

#[cfg(unix)]
fn forward_with(
    dir: &Path,
    argv: Vec<String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Option<Result<u8, String>> {
    let conn = std::os::unix::net::UnixStream::connect(dir.join(SOCKET_FILE)).ok()?;
    Some(forward_on(conn, argv, out, err))
}

#[cfg(not(unix))]
fn forward_with(
    _dir: &Path,
    _argv: Vec<String>,
    _out: &mut dyn Write,
    _err: &mut dyn Write,
) -> Option<Result<u8, String>> {
    None
}

#[cfg(unix)]
fn forward_on(
    mut conn: std::os::unix::net::UnixStream,
    argv: Vec<String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, String> {
    let cwd = std::env::current_dir().map_err(|e| format!("the working directory: {e}"))?;
    let mut line = serde_json::to_vec(&Request { argv, cwd }).map_err(|e| e.to_string())?;
    line.push(b'\n');
    conn.write_all(&line)
        .map_err(|e| format!("sending the command to the daemon: {e}"))?;
    let mut out_closed = false;
    for line in BufReader::new(conn).lines() {
        let line = line.map_err(|e| format!("reading the daemon's answer: {e}"))?;
        match serde_json::from_str::<Frame>(&line) {
            Ok(Frame::Out(text)) if !out_closed => {
                // A reader that stops early (`| head -1`) is not an error.
                if out.write_all(text.as_bytes()).is_err() {
                    out_closed = true;
                }
            }
            Ok(Frame::Out(_)) => {}
            Ok(Frame::Err(text)) => {
                let _ = err.write_all(text.as_bytes());
            }
            Ok(Frame::Exit(code)) => {
                let _ = out.flush();
                return Ok(code);
            }
            Err(e) => return Err(format!("a malformed answer from the daemon: {e}")),
        }
    }
    Err("the daemon closed the connection before the command finished (see its log)".into())
}

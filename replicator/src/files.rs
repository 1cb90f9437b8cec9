//! Sync files on physical media (SPEC S4): the same bytes as over the network, written whole
//! (a temporary name, fsync, then the final name) so a half-written file never looks complete.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use outpost_engine::{SiteId, Store};

use crate::Result;
use crate::central::{self, Built, Received};
use crate::flow::{FlowId, SyncMode};
use crate::remote::{self, Applied, Emitted};

/// The file name of a flow: `<kind>-<site>-<seq>.outpost`.
pub fn file_name(kind: &str, id: FlowId) -> String {
    format!("{kind}-{id}.outpost")
}

/// A temporary name in `dir` for a file being written, `<stem>.<process>-<n>.pending`: of its
/// own to each writer, threads and processes alike — two writers under one name would write
/// into the same file, and one would rename the other's half-written bytes into place.
pub fn temp_path(dir: &Path, stem: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!("{stem}.{}-{n}.pending", std::process::id()))
}

fn write_whole<T>(
    path: &Path,
    f: impl FnOnce(BufWriter<File>) -> Result<(BufWriter<File>, T)>,
) -> Result<T> {
    let tmp = path.with_extension("partial");
    let file = File::create(&tmp)?;
    let written = f(BufWriter::new(file)).and_then(|(mut w, out)| {
        w.flush()?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(out)
    });
    let out = match written {
        Ok(out) => out,
        Err(e) => {
            // Nothing of a refused or failed write is left behind.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = File::open(dir)
    {
        // Make the rename itself durable; not every platform can sync a directory.
        let _ = d.sync_all();
    }
    Ok(out)
}

/// Remote: writes an emission file into `dir` (manual emission).
pub fn emit_to(store: &Store, dir: &Path, mode: SyncMode) -> Result<(PathBuf, Emitted)> {
    let tmp = temp_path(dir, &format!("emission-{}", store.site().id));
    let emitted = write_whole(&tmp, |w| {
        let (w, e) = remote::emit(store, w, mode, true)?;
        Ok((w, e))
    })?;
    let path = dir.join(file_name("emission", emitted.id));
    std::fs::rename(&tmp, &path)?;
    Ok((path, emitted))
}

/// Central: receives an emission file (manual reception). `sender` as in [`central::receive`].
pub fn receive_from(store: &Store, path: &Path, sender: Option<SiteId>) -> Result<Received> {
    central::receive(store, BufReader::new(File::open(path)?), sender)
}

/// Central: writes the return for `remote` into `dir`.
pub fn return_to(store: &Store, remote: SiteId, dir: &Path) -> Result<(PathBuf, Built)> {
    let tmp = temp_path(dir, &format!("return-{remote}"));
    let built = write_whole(&tmp, |w| central::build_return(store, remote, w, true))?;
    let path = dir.join(file_name("return", built.id));
    std::fs::rename(&tmp, &path)?;
    Ok((path, built))
}

/// Central: writes the bootstrap file of a new remote into `dir`.
pub fn bootstrap_to(store: &Store, remote: SiteId, dir: &Path) -> Result<(PathBuf, Built)> {
    bootstrap_with_to(store, remote, dir, &std::collections::BTreeMap::new())
}

/// Central: [`bootstrap_to`] with first-start settings (see [`central::write_bootstrap_with`]).
pub fn bootstrap_with_to(
    store: &Store,
    remote: SiteId,
    dir: &Path,
    first_start: &std::collections::BTreeMap<String, String>,
) -> Result<(PathBuf, Built)> {
    let tmp = temp_path(dir, &format!("bootstrap-{remote}"));
    let built = write_whole(&tmp, |w| {
        central::write_bootstrap_with(store, remote, w, true, first_start)
    })?;
    let path = dir.join(file_name("bootstrap", built.id));
    std::fs::rename(&tmp, &path)?;
    Ok((path, built))
}

/// Remote: applies a return file (manual reception).
pub fn apply_return_from(store: &Store, path: &Path) -> Result<Applied> {
    remote::apply_return(store, BufReader::new(File::open(path)?))
}

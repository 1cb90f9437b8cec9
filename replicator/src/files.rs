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

fn write_whole<T>(
    path: &Path,
    f: impl FnOnce(BufWriter<File>) -> Result<(BufWriter<File>, T)>,
) -> Result<T> {
    let tmp = path.with_extension("partial");
    let file = File::create(&tmp)?;
    let (mut w, out) = f(BufWriter::new(file))?;
    w.flush()?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
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
    let tmp = dir.join(format!("emission-{}.pending", store.site().id));
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
    let tmp = dir.join(format!("return-{remote}.pending"));
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
    let tmp = dir.join(format!("bootstrap-{remote}.pending"));
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

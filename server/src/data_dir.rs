//! A site's data directory: its store (opened as the site it was created for, in the built-in
//! retail schema), the private files beside it (credentials), and the time zone its journal is
//! shown in. Central's daemon, a site server, a remote's network sync and the command line's
//! administration all open a directory through here.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use outpost::SystemClock;
use outpost_engine::Store;
use outpost_replicator::central;
use outpost_replicator::schedule::Zone;

use crate::{Error, Result};

/// The stores the daemons of this process hold, by canonical data directory.
static HELD: Mutex<Vec<(PathBuf, Weak<Store>)>> = Mutex::new(Vec::new());

fn held_list() -> std::sync::MutexGuard<'static, Vec<(PathBuf, Weak<Store>)>> {
    HELD.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A store registered as held by a daemon of this process, until dropped.
#[derive(Debug)]
pub struct Held {
    dir: PathBuf,
}

impl Drop for Held {
    fn drop(&mut self) {
        held_list().retain(|(dir, _)| *dir != self.dir);
    }
}

/// Registers `store` as the one this process holds for `dir`: [`open`] returns it.
pub fn hold(dir: &Path, store: &Arc<Store>) -> Held {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let mut list = held_list();
    list.retain(|(d, _)| *d != dir);
    list.push((dir.clone(), Arc::downgrade(store)));
    Held { dir }
}

/// The store in `dir`, whichever site it belongs to: the one a daemon of this process holds
/// (a command forwarded through its control socket), else opened.
pub fn open(dir: &Path) -> Result<Arc<Store>> {
    if let Ok(canonical) = dir.canonicalize()
        && let Some(store) = held_list()
            .iter()
            .find(|(d, _)| *d == canonical)
            .and_then(|(_, s)| s.upgrade())
    {
        return Ok(store);
    }
    open_owned(dir).map(Arc::new)
}

/// Opens the store in `dir` for this caller alone (a daemon about to hold it).
pub fn open_owned(dir: &Path) -> Result<Store> {
    Store::open_existing(dir, outpost::retail::schema(), SystemClock).map_err(|e| match e {
        outpost_engine::Error::Locked => Error::Locked(dir.to_owned()),
        source => Error::Open {
            dir: dir.to_owned(),
            source,
        },
    })
}

/// Writes a secret to a file only its owner can read.
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // An existing file keeps its mode through `open`: make it private explicitly.
    #[cfg(unix)]
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(f, "{text}")
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()).into())
}

/// Central's time zone, in which the journal shows times.
pub fn journal_zone(store: &Store) -> Result<Zone> {
    central::config(store)
        .ok()
        .flatten()
        .and_then(|c| c.central.time_zone.parse().ok())
        .or_else(|| "UTC".parse().ok())
        .ok_or_else(|| "no time zone to show the journal in".into())
}

#[cfg(test)]
mod tests {
    use outpost_engine::{Site, StoreConfig};

    use super::*;

    /// A store another process holds is told apart by its type (`Error::Locked`), and the
    /// operator is told what to do.
    #[test]
    fn a_store_in_use_elsewhere_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let site = Site::central(1, "ASOC").unwrap();
        let held = Store::open(
            dir.path(),
            StoreConfig::new(site, outpost::retail::schema(), SystemClock),
        )
        .unwrap();
        let e = open(dir.path()).map(drop).unwrap_err();
        assert!(matches!(e, Error::Locked(_)), "{e}");
        assert!(e.to_string().contains("in use by another process"), "{e}");
        drop(held);
        assert!(open(dir.path()).is_ok());
    }
}

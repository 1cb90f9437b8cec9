//! A site's data directory: its store (opened as the site it was created for, in the built-in
//! retail schema), the private files beside it (credentials), and the time zone its journal is
//! shown in. Central's daemon, a site server, a remote's network sync and the command line's
//! administration all open a directory through here.

use std::path::Path;

use outpost::SystemClock;
use outpost_engine::Store;
use outpost_replicator::central;
use outpost_replicator::schedule::Zone;

use crate::{Error, Result};

/// Opens the store in `dir`, whichever site it belongs to.
pub fn open(dir: &Path) -> Result<Store> {
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

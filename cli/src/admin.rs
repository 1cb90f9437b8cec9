//! The command line's administration and file commands: a central or remote store on disk,
//! sync files on physical media (S4), the journal (J1) and record access for operators. The
//! stores speak the built-in retail schema (`outpost::retail`); a host application embeds
//! the engine with its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use outpost_engine::{Clock, Site, SiteId, Store, StoreConfig};
use outpost_replicator::config::{RemoteSettings, SyncType};
use outpost_replicator::flow::FlowKind;
use outpost_replicator::schedule::Zone;
use outpost_replicator::{central, files, journal, remote};

use outpost::SystemClock;
use outpost_api::{from_json, to_json};
pub use outpost_server::data_dir::{journal_zone, open, write_private};

/// A command's failure, as the person at the terminal should read it.
pub type CliResult<T> = Result<T, String>;

fn msg(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn open_central(dir: &Path) -> CliResult<Arc<Store>> {
    let store = open(dir)?;
    if !store.site().is_central() {
        return Err(format!(
            "{} holds the store of remote {}, not central's",
            dir.display(),
            store.site()
        ));
    }
    Ok(store)
}

fn open_remote(dir: &Path) -> CliResult<Arc<Store>> {
    let store = open(dir)?;
    if store.site().is_central() {
        return Err(format!(
            "{} holds central's store, not a remote's",
            dir.display()
        ));
    }
    Ok(store)
}

/// `outpost central init`: creates central's store with the seed's settings (C4) and no
/// remote yet.
pub fn central_init(dir: &Path, code: &str, id: u16, tz: &str, return_at: &str) -> CliResult<()> {
    if dir.join(outpost_engine::STORE_FILE_NAME).exists() {
        return Err(format!("{} already holds a store", dir.display()));
    }
    let mut config = outpost_replicator::config::seed_example();
    config.remotes.clear();
    config.central.time_zone = tz.to_owned();
    config.central.return_time = return_at.parse().map_err(msg)?;
    config.validate().map_err(msg)?;
    let site = Site::central(id, code).map_err(msg)?;
    let store = Store::open(
        dir,
        StoreConfig::new(site, outpost::retail::schema(), SystemClock),
    )
    .map_err(msg)?;
    central::set_config(&store, &config).map_err(msg)?;
    central::set_deployment_id(&store, outpost_server::auth::random_id()?).map_err(msg)?;
    let (credential, digest) = outpost_server::auth::new_credential(store.site())?;
    central::set_credential_digest(&store, store.site().id, &digest).map_err(msg)?;
    let path = dir.join(ADMIN_CREDENTIAL_FILE);
    write_private(&path, &credential)?;
    crate::say!("central {} created in {}", store.site(), dir.display());
    crate::say!(
        "the administrator's credential (journal and status over the network) is in {}",
        path.display()
    );
    Ok(())
}

/// Where `outpost central init` leaves the administrator's credential.
pub const ADMIN_CREDENTIAL_FILE: &str = "admin.credential";

/// Bootstrap settings for the remote's first start only: its credential, central's address.
const FIRST_START_CREDENTIAL: &str = "network.credential";
const FIRST_START_URL: &str = "network.central_url";

/// `outpost central new-credential`: a new credential for a site (the old one stops working).
/// For a remote it is printed for its operator to put in its `remote.toml`; for central itself
/// it replaces the administrator's credential file.
pub fn new_credential(dir: &Path, code: &str) -> CliResult<()> {
    let store = open_central(dir)?;
    let site = store
        .sites()
        .by_code(code)
        .cloned()
        .ok_or_else(|| format!("no site {code} at central"))?;
    let (credential, digest) = outpost_server::auth::new_credential(&site)?;
    central::set_credential_digest(&store, site.id, &digest).map_err(msg)?;
    if site.is_central() {
        let path = dir.join(ADMIN_CREDENTIAL_FILE);
        write_private(&path, &credential)?;
        crate::say!("new administrator's credential in {}", path.display());
    } else {
        crate::say!("{credential}");
        crate::say_err!(
            "the previous credential of {code} no longer works; put this one in credential = \"…\" of its remote.toml"
        );
    }
    Ok(())
}

/// What `outpost central add-remote` is given.
#[derive(Debug)]
pub struct NewRemote<'a> {
    /// Site id (2–99 shows as `Dnn`).
    pub id: u16,
    /// Establishment code.
    pub code: &'a str,
    /// IANA time zone.
    pub tz: &'a str,
    /// Sync types, e.g. `fixed 21:00 23:20`, `immediate 60`, `no-return`.
    pub sync: &'a [String],
    /// Tables it may not write (R4/R9).
    pub deny: &'a [String],
    /// Central's address as the remote reaches it (`https://central.example:2638`), carried
    /// by the bootstrap file.
    pub url: Option<&'a str>,
}

/// `outpost central add-remote`: the establishment, its settings, and its bootstrap file.
/// Refuses, changing nothing, while central's store is known put back without `central
/// restore`: a bootstrap would take a number the lost central gave.
fn not_put_back(store: &Store) -> CliResult<()> {
    match central::put_back_noticed(store).map_err(msg)? {
        Some(why) => Err(format!("nothing changed: {why}")),
        None => Ok(()),
    }
}

pub fn add_remote(dir: &Path, new: &NewRemote<'_>, bootstrap: &Path) -> CliResult<PathBuf> {
    let store = open_central(dir)?;
    not_put_back(&store)?;
    let mut config = central::config(&store)
        .map_err(msg)?
        .ok_or("central has no configuration: run `outpost central init` first")?;
    if config
        .remotes
        .iter()
        .any(|r| r.id.0 == new.id || r.code == new.code)
    {
        return Err(format!(
            "a remote with id {} or code {} already exists",
            new.id, new.code
        ));
    }
    let sync_types = new
        .sync
        .iter()
        .map(|s| s.parse::<SyncType>().map_err(msg))
        .collect::<CliResult<Vec<_>>>()?;
    config.remotes.push(RemoteSettings {
        id: SiteId(new.id),
        code: new.code.to_owned(),
        time_zone: new.tz.to_owned(),
        sync_types,
        denied_tables: new.deny.iter().cloned().collect(),
    });
    let (dir_out, name) = split_out(bootstrap)?;
    central::set_config(&store, &config).map_err(msg)?;
    let site = store
        .sites()
        .get(SiteId(new.id))
        .cloned()
        .ok_or("the new remote is missing from central's sites")?;
    let path = site_bootstrap(&store, &site, new.url, &dir_out, name)?;
    // M1 across zones: what the remote will get and when.
    if let Ok(zone) = new.tz.parse::<Zone>()
        && let Ok(Some(cycle)) = config.describe_cycle(site.id, zone.date_at(SystemClock.now_ms()))
    {
        crate::say!("{}: {cycle}", new.code);
    }
    crate::say!(
        "remote {} (id {}) created; its bootstrap file (it holds the site's credential: hand it over as a secret, delete it once the remote is initialised): {}",
        new.code,
        new.id,
        path.display()
    );
    Ok(path)
}

/// What `outpost central set-remote` changes; `None` or empty: unchanged.
#[derive(Debug)]
pub struct RemoteChange<'a> {
    /// IANA time zone.
    pub tz: Option<&'a str>,
    /// All its sync types (empty: unchanged).
    pub sync: &'a [String],
    /// All the tables it may not write (`Some(&[])`: none).
    pub deny: Option<&'a [String]>,
}

/// `outpost central set-remote`: a remote's settings changed at central, checked as the whole
/// configuration is (C4, M1); they reach the remote with its next return (C6).
pub fn set_remote(dir: &Path, code: &str, change: &RemoteChange<'_>) -> CliResult<()> {
    let store = open_central(dir)?;
    let mut config = central::config(&store)
        .map_err(msg)?
        .ok_or("central has no configuration: run `outpost central init` first")?;
    let known: Vec<String> = config.remotes.iter().map(|r| r.code.clone()).collect();
    let r = config
        .remotes
        .iter_mut()
        .find(|r| r.code == code)
        .ok_or_else(|| format!("no remote {code}; the remotes are: {}", known.join(", ")))?;
    if let Some(tz) = change.tz {
        tz.parse::<Zone>().map_err(msg)?;
        r.time_zone = tz.to_owned();
    }
    if !change.sync.is_empty() {
        r.sync_types = change
            .sync
            .iter()
            .map(|s| s.parse::<SyncType>().map_err(msg))
            .collect::<CliResult<Vec<_>>>()?;
    }
    if let Some(deny) = change.deny {
        r.denied_tables = deny.iter().cloned().collect();
    }
    let (id, tz) = (r.id, r.time_zone.clone());
    central::set_config(&store, &config).map_err(msg)?;
    if let Ok(zone) = tz.parse::<Zone>()
        && let Ok(Some(cycle)) = config.describe_cycle(id, zone.date_at(SystemClock.now_ms()))
    {
        crate::say!("{code}: {cycle}");
    }
    crate::say!("remote {code} changed; it gets the change with its next return (C6)");
    Ok(())
}

/// `outpost central remove-remote`: see [`central::remove_remote`].
pub fn remove_remote(dir: &Path, code: &str, removal: central::Removal) -> CliResult<()> {
    let store = open_central(dir)?;
    let id = central::remove_remote(&store, code, SystemClock.now_ms(), removal).map_err(msg)?;
    let rows = journal::rows(&store, Some(id), None, None)
        .map_err(msg)?
        .len();
    crate::say!(
        "remote {code} (id {id}) removed: its credential no longer works and its flows are \
         refused from now on; what it wrote and its {rows} journal row(s) stay at central; \
         id {id} and code {code} are not given again"
    );
    Ok(())
}

/// A remote's bootstrap file with a new network credential in it (the old one no longer
/// works).
fn site_bootstrap(
    store: &Store,
    site: &outpost_engine::Site,
    url: Option<&str>,
    dir_out: &Path,
    name: Option<String>,
) -> CliResult<PathBuf> {
    let (credential, digest) = outpost_server::auth::new_credential(site)?;
    let mut first_start = BTreeMap::from([(FIRST_START_CREDENTIAL.to_owned(), credential)]);
    if let Some(url) = url {
        first_start.insert(FIRST_START_URL.to_owned(), url.to_owned());
    }
    let (written, _) =
        files::bootstrap_with_to(store, site.id, dir_out, &first_start).map_err(msg)?;
    central::set_credential_digest(store, site.id, &digest).map_err(msg)?;
    let path = place(&written, dir_out, name)?;
    // It holds the remote's credential: readable by its owner only.
    #[cfg(unix)]
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// `outpost central reprovision`: a remote's store was lost, or set up twice from one
/// bootstrap. Every store of the site set up before is refused from now on, and a new bootstrap
/// (with a new credential) sets up the one that speaks for it, numbering its changes past
/// everything central holds of the site (R1; docs/OPERATIONS.md).
pub fn reprovision(
    dir: &Path,
    code: &str,
    url: Option<&str>,
    bootstrap: &Path,
) -> CliResult<PathBuf> {
    let store = open_central(dir)?;
    let site = store
        .sites()
        .by_code(code)
        .filter(|s| !s.is_central())
        .cloned()
        .ok_or_else(|| format!("no remote {code} at central"))?;
    not_put_back(&store)?;
    let (dir_out, name) = split_out(bootstrap)?;
    // What the replaced store held reserved (R7) is lost with it: central forgets the count.
    let reserved = outpost_replicator::monitor::reserved(&store.snapshot().map_err(msg)?, site.id)
        .map_err(msg)?
        .filter(|r| r.count > 0);
    let provisioning = central::reprovision(&store, site.id).map_err(msg)?;
    let path = site_bootstrap(&store, &site, url, &dir_out, name)?;
    crate::say!(
        "remote {code} reprovisioned (provisioning {provisioning}): central refuses every store of {code} set up before, and takes {code}'s changes from the first store set up from {} (it holds the site's new credential: hand it over as a secret, delete it once the remote is initialised)",
        path.display()
    );
    if let Some(r) = reserved {
        crate::say!(
            "note: {code}'s old store held {} document(s) reserved at its last sync (emission {}): what its tills wrote to them was never sent and is in that store only — read it from there and enter it again at the new store (docs/OPERATIONS.md)",
            r.count,
            r.flow
        );
    }
    Ok(path)
}

/// `--out` or `--bootstrap`: an existing directory (the file gets its canonical name there) or
/// a file path, which must not exist yet (a file already there is not overwritten).
fn split_out(out: &Path) -> CliResult<(PathBuf, Option<String>)> {
    if out.is_dir() {
        return Ok((out.to_path_buf(), None));
    }
    if out.exists() {
        return Err(format!(
            "{} already exists; it is left as it is: remove it first or name another file",
            out.display()
        ));
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(format!(
            "{} does not exist: create the folder first (mkdir -p {}) or name another",
            parent.display(),
            parent.display()
        ));
    }
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{} is not a file name", out.display()))?;
    Ok((parent, Some(name.to_owned())))
}

fn place(written: &Path, dir: &Path, name: Option<String>) -> CliResult<PathBuf> {
    match name {
        None => Ok(written.to_path_buf()),
        Some(n) => {
            let target = dir.join(n);
            std::fs::rename(written, &target).map_err(msg)?;
            Ok(target)
        }
    }
}

/// `outpost remote init`: a remote's store from its bootstrap file.
pub fn remote_init(dir: &Path, bootstrap: &Path) -> CliResult<()> {
    if dir.join(outpost_engine::STORE_FILE_NAME).exists() {
        return Err(format!("{} already holds a store", dir.display()));
    }
    let file = crate::progress::open(bootstrap, "bootstrap")
        .map_err(|e| format!("{}: {e}", bootstrap.display()))?;
    // Its own random identity: central tells it from another store set up from this file.
    let store_id = outpost_server::auth::random_id()?;
    let store = remote::bootstrap_as(
        std::io::BufReader::new(file),
        |site| {
            Store::open(
                dir,
                StoreConfig::new(site.clone(), outpost::retail::schema(), SystemClock),
            )
        },
        Some(store_id),
    )
    .map_err(|e| format!("{}: {e}", bootstrap.display()))?;
    // The credential and central's address go to remote.toml, out of the store's settings.
    let net = outpost_server::sync::RemoteNet {
        credential: remote::take_setting(&store, FIRST_START_CREDENTIAL).map_err(msg)?,
        central_url: remote::take_setting(&store, FIRST_START_URL).map_err(msg)?,
        ca_cert: None,
    };
    net.save(dir)?;
    crate::say!("remote {} created in {}", store.site(), dir.display());
    if net.central_url.is_none() {
        crate::say!(
            "to sync over the network, set central_url in {}",
            dir.join(outpost_server::sync::REMOTE_NET_FILE).display()
        );
    }
    Ok(())
}

/// `outpost remote export`: an emission as a file (S4).
pub fn remote_export(dir: &Path, out: &Path) -> CliResult<PathBuf> {
    let store = open_remote(dir)?;
    let (dir_out, name) = split_out(out)?;
    let (written, emitted) =
        files::emit_to(&store, &dir_out, outpost_replicator::SyncMode::Deferred).map_err(msg)?;
    let path = place(&written, &dir_out, name)?;
    crate::say!(
        "emission {} of {}: {} changes → {}",
        emitted.id,
        store.site(),
        emitted.n_changes,
        path.display()
    );
    Ok(path)
}

/// `outpost central import`: an emission file into the sync table, then processed.
pub fn central_import(dir: &Path, file: &Path) -> CliResult<()> {
    let store = open_central(dir)?;
    let received = files::receive_from(&store, file, None).map_err(|e| match e {
        outpost_replicator::Error::Deferred(_) => format!(
            "{}: not taken yet, nothing kept (import it again later): {e}",
            file.display()
        ),
        e => format!("{}: refused, nothing kept: {e}", file.display()),
    })?;
    match received {
        central::Received::Duplicate(id) => {
            crate::say!(
                "{}: emission {id} was already received; nothing to do",
                file.display()
            );
        }
        central::Received::Ready { id, note, .. } => {
            crate::say!("emission {id} received whole: file ready in the sync table");
            if let Some(n) = note {
                crate::say!("note: {n}");
            }
            for p in central::process_ready(&store).map_err(msg)? {
                // A superseded change returned to its site to take central's value (R2) is
                // among the refusals the return carries, not among the refused changes.
                let returned = p
                    .report
                    .refusals
                    .iter()
                    .filter(|(_, r)| r.refusal.rule == outpost_engine::Rule::R2)
                    .count();
                crate::say!(
                    "emission {} processed: {} changes ({} new, {} superseded, {} already held, {} refused){}",
                    p.id,
                    p.report.outcomes.len(),
                    p.report.count(outpost_engine::Outcome::Applied),
                    p.report.count(outpost_engine::Outcome::Superseded),
                    p.report.count(outpost_engine::Outcome::AlreadyHad),
                    p.report.refused().saturating_sub(returned),
                    if returned > 0 {
                        format!(
                            "; {returned} superseded by a later write of its own site that the \
                             site no longer holds, returned to it (R2)"
                        )
                    } else {
                        String::new()
                    }
                );
            }
            if let Some(row) = journal::row(&store, id).map_err(msg)?
                && row.exec_end_ms.is_none()
            {
                return Err(format!(
                    "emission {id} could not be applied: {}; it stays in the sync table, with its error in the journal",
                    row.error.as_deref().unwrap_or("unknown error")
                ));
            }
        }
    }
    Ok(())
}

/// `outpost central export-return`: the return for one remote as a file (S4).
pub fn central_export_return(dir: &Path, code: &str, out: &Path) -> CliResult<PathBuf> {
    let store = open_central(dir)?;
    let site = store
        .sites()
        .by_code(code)
        .map(|s| s.id)
        .ok_or_else(|| format!("no remote {code} at central"))?;
    let (dir_out, name) = split_out(out)?;
    let (written, built) = files::return_to(&store, site, &dir_out).map_err(msg)?;
    let path = place(&written, &dir_out, name)?;
    crate::say!(
        "return {} for {code}: {} changes, {} refusals sent back → {}",
        built.id,
        built.n_changes,
        built.n_rejections,
        path.display()
    );
    Ok(path)
}

/// `outpost remote import`: a return file applied.
/// The files of a central data directory a backup holds: the store, the administrator's
/// credential, the daemon's settings (those present).
const BACKED_UP: [&str; 3] = [
    outpost_engine::STORE_FILE_NAME,
    ADMIN_CREDENTIAL_FILE,
    "outpost.toml",
];

/// `outpost central backup`: copies central's store (and its credential and settings) into
/// `to`, holding the store's write lock so that nothing writes to it during the copy (run by
/// the daemon when it holds the store); every commit is on disk already (redb commits are
/// durable when they return).
pub fn central_backup(dir: &Path, to: &Path) -> CliResult<()> {
    let store = open_central(dir)?;
    if to.join(outpost_engine::STORE_FILE_NAME).exists() {
        return Err(format!("{} already holds a store", to.display()));
    }
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    // Copied inside a write transaction: while central's daemon runs (the command forwarded
    // to it), nothing else writes during the copy.
    let copied = store
        .write(|_| {
            let mut bytes = 0;
            for name in BACKED_UP {
                let from = dir.join(name);
                if from.is_file() {
                    match std::fs::copy(&from, to.join(name)) {
                        Ok(n) => bytes += n,
                        Err(e) => {
                            return Ok(Err(format!("{} → {}: {e}", from.display(), to.display())));
                        }
                    }
                }
            }
            Ok(Ok(bytes))
        })
        .map_err(msg)?;
    let bytes = copied?;
    let journal_rows = journal::rows(&store, None, None, None).map_err(msg)?.len();
    crate::say!(
        "backup of central {} in {}: {bytes} bytes, {journal_rows} journal rows",
        store.site(),
        to.display()
    );
    Ok(())
}

/// `outpost central restore`: puts a backup in place of central's data directory (what was
/// there is moved aside, not deleted) and makes it safe to run again
/// ([`central::after_restore`]). The remotes send again what central lost with their next
/// syncs.
pub fn central_restore(backup: &Path, dir: &Path) -> CliResult<()> {
    central_restore_with(backup, dir, |store| {
        central::after_restore(store).map_err(msg)
    })
}

/// [`central_restore`], with `finish` making the store put in place safe to run again
/// ([`central::after_restore`]; a test makes it fail) and giving the next return number.
pub fn central_restore_with(
    backup: &Path,
    dir: &Path,
    finish: impl FnOnce(&Store) -> CliResult<u64>,
) -> CliResult<()> {
    // The data directory is moved aside: a backup inside it would go with it.
    if let (Ok(b), Ok(d)) = (backup.canonicalize(), dir.canonicalize())
        && b.starts_with(&d)
    {
        return Err(format!(
            "the backup {} is inside central's data directory {}, which the restore moves \
             aside: copy the backup elsewhere first (nothing was changed)",
            backup.display(),
            dir.display()
        ));
    }
    open_central(backup).map_err(|e| format!("the backup {}: {e}", backup.display()))?;
    let mut aside = None;
    if dir.exists() {
        let secs = SystemClock.now_ms() / 1000;
        let mut name = dir.as_os_str().to_owned();
        name.push(format!(".before-restore-{secs}"));
        let to = PathBuf::from(name);
        std::fs::rename(dir, &to).map_err(|e| format!("moving {} aside: {e}", dir.display()))?;
        aside = Some(to);
    }
    // Copied in, then made safe to run again: if either fails, the data directory is put back
    // as it was — a copy whose numbers did not jump must not be served (its returns and commits
    // would be numbered as the lost central's).
    let restored = put_backup_in_place(backup, dir).and_then(|store| {
        let next = finish(&store)?;
        Ok((store, next))
    });
    let (store, next) = match restored {
        Ok(restored) => restored,
        Err(e) => {
            // Back as it was: the data directory is never left without its store.
            let gone = std::fs::remove_dir_all(dir).or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            });
            let back = match &aside {
                Some(to) => gone.and_then(|()| std::fs::rename(to, dir)).map_or_else(
                    |b| format!("; putting {} back failed too: {b}", to.display()),
                    |()| format!("; {} is as it was", dir.display()),
                ),
                None => gone.map_or_else(
                    |b| format!("; removing {} failed too: {b}", dir.display()),
                    |()| format!("; {} is as it was (none)", dir.display()),
                ),
            };
            return Err(format!("{e}{back}"));
        }
    };
    crate::say!(
        "central {} restored from {} into {}; returns continue at number {next}, and the \
         remotes send again what was lost with their next syncs (sync each four times or \
         more); central takes a remote's new changes once every remote has synced once \
         (docs/OPERATIONS.md)",
        store.site(),
        backup.display(),
        dir.display()
    );
    if let Some(to) = aside {
        crate::say!("what was in {} is now in {}", dir.display(), to.display());
    }
    Ok(())
}

/// Copies the backup's files into `dir` (created) and opens central's store there.
fn put_backup_in_place(backup: &Path, dir: &Path) -> CliResult<Arc<Store>> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for name in BACKED_UP {
        let from = backup.join(name);
        if from.is_file() {
            std::fs::copy(&from, dir.join(name))
                .map_err(|e| format!("{} → {}: {e}", from.display(), dir.display()))?;
        }
    }
    open_central(dir)
}

/// `outpost remote restamp`: see [`remote::restamp`].
pub fn remote_restamp(dir: &Path) -> CliResult<()> {
    let store = open_remote(dir)?;
    let n = remote::restamp(&store).map_err(msg)?;
    if n == 0 {
        crate::say!(
            "nothing to restamp: no write of {} is stamped ahead of this machine's clock",
            store.site()
        );
    } else {
        crate::say!(
            "{n} value(s) of {} stamped again from this machine's clock; the next sync carries them",
            store.site()
        );
    }
    Ok(())
}

pub fn remote_import(dir: &Path, file: &Path) -> CliResult<()> {
    let store = open_remote(dir)?;
    let applied = crate::progress::open(file, "return")
        .map_err(outpost_replicator::Error::from)
        .and_then(|r| remote::apply_return(&store, std::io::BufReader::new(r)))
        .map_err(|e| format!("{}: refused, nothing applied: {e}", file.display()))?;
    match applied {
        remote::Applied::Applied {
            id,
            report,
            reverted,
            note,
        } => {
            crate::say!(
                "return {id} applied: {} changes ({} new, {} superseded, {} already held), {reverted} of this site's refused changes put back to central's values",
                report.outcomes.len(),
                report.count(outpost_engine::Outcome::Applied),
                report.count(outpost_engine::Outcome::Superseded),
                report.count(outpost_engine::Outcome::AlreadyHad),
            );
            // Central judged these already: a store that refuses one of them no longer holds
            // what central holds. Said, never silent.
            for (_, r) in &report.refusals {
                let c = &r.change;
                crate::say!(
                    "warning: a change of return {id} was refused here: {}/{} {} by site {}: {}",
                    c.table,
                    c.key,
                    c.slot,
                    c.dot.site,
                    r.refusal
                );
            }
            if let Some(n) = note {
                crate::say!("note: {n}");
            }
        }
        remote::Applied::AlreadyApplied(id) => {
            crate::say!("return {id} was already applied; nothing to do");
        }
        remote::Applied::RefusedStale { id, newest } => {
            crate::say!(
                "return {id} refused: return {newest} is newer and already applied (central will see it as refused by remote)"
            );
        }
        remote::Applied::RefusedOtherStore { id } => {
            crate::say!(
                "return {id} refused: it was made for another store of this site, before this one was set up (central will see it as refused by remote); the next return is this store's"
            );
        }
    }
    Ok(())
}

/// `outpost journal`: the monitoring list (J1), as a table or JSON.
/// `outpost journal --alerts`: the alerts (C3), open ones first.
pub fn alerts(dir: &Path, json: bool) -> CliResult<()> {
    let store = open_central(dir)?;
    // No daemon holds the store: bring the alerts up to date as it would, with its settings.
    let settings = dir.join("outpost.toml");
    let config =
        outpost_server::serve::ServeConfig::load(settings.exists().then_some(settings.as_path()))
            .map_err(|e| e.to_string())?;
    outpost_server::serve::update_alerts(&store, dir, &config)?;
    let alerts = outpost_server::serve::monitor::alert_views(&store, 200)?;
    if json {
        crate::say!("{}", serde_json::to_string_pretty(&alerts).map_err(msg)?);
        return Ok(());
    }
    if alerts.is_empty() {
        crate::say!("no alert");
    }
    for a in alerts {
        let state = if a.open {
            "OPEN  ".to_owned()
        } else {
            "closed".to_owned()
        };
        let mailed = a
            .mailed
            .map_or_else(|| "not e-mailed".to_owned(), |m| format!("e-mailed {m}"));
        crate::say!("{} {state} #{}  ({mailed})\n    {}", a.raised, a.id, a.text);
    }
    Ok(())
}

pub fn journal(dir: &Path, site: Option<&str>, json: bool, refused: bool) -> CliResult<()> {
    let store = open_central(dir)?;
    if refused {
        let flows = central::refused_flows(&store).map_err(msg)?;
        if json {
            crate::say!("{}", serde_json::to_string_pretty(&flows).map_err(msg)?);
            return Ok(());
        }
        let sites = store.sites();
        let zone = journal_zone(&store)?;
        for f in flows {
            let from = f.sender.map_or_else(
                || "a file".to_owned(),
                |s| {
                    sites
                        .get(s)
                        .map_or_else(|| s.to_string(), |s| s.code.to_string())
                },
            );
            crate::say!(
                "{} {}  from {from}  {} bytes  {}",
                zone.date_at(f.at_ms),
                zone.hhmm_at(f.at_ms),
                f.bytes,
                f.reason
            );
        }
        return Ok(());
    }
    let sites = store.sites();
    let filter = match site {
        Some(code) => Some(
            sites
                .by_code(code)
                .map(|s| s.id)
                .ok_or_else(|| format!("no site {code} at central"))?,
        ),
        None => None,
    };
    let rows = journal::rows(&store, filter, None, None).map_err(msg)?;
    if json {
        crate::say!("{}", serde_json::to_string_pretty(&rows).map_err(msg)?);
        return Ok(());
    }
    let zone = journal_zone(&store)?;
    let at = |ms: Option<u64>| {
        ms.map_or_else(
            || "-".to_owned(),
            |m| format!("{} {}", zone.date_at(m), zone.hhmm_at(m)),
        )
    };
    crate::say!(
        "{:<10} {:<5} {:<9} {:<12} {:<10} {:<16} {:<16} {:<16} {:>5} {:>7} {:>8} {:>5} {:>10}",
        "SynID",
        "site",
        "kind",
        "mode",
        "link",
        "file ready",
        "exec start",
        "exec end",
        "execs",
        "refused",
        "changes",
        "rej.",
        "bytes"
    );
    for r in rows {
        let code = sites
            .get(r.site)
            .map_or_else(|| r.site.to_string(), |s| s.code.to_string());
        let kind = match r.kind {
            FlowKind::Emission => "emission",
            FlowKind::Return => "return",
            FlowKind::Bootstrap => "bootstrap",
        };
        crate::say!(
            "{:<10} {:<5} {:<9} {:<12} {:<10} {:<16} {:<16} {:<16} {:>5} {:>7} {:>8} {:>5} {:>10}",
            r.id.to_string(),
            code,
            kind,
            format!("{:?}", r.mode).to_lowercase(),
            r.link.map_or_else(|| "0".to_owned(), |l| l.to_string()),
            at(r.file_ready_ms),
            at(r.exec_start_ms),
            at(r.exec_end_ms),
            r.executions,
            if r.refused_by_remote { "yes" } else { "no" },
            r.n_changes,
            r.n_rejections,
            r.bytes
        );
    }
    Ok(())
}

/// `outpost get`: a record's fields as a JSON object (`null` when there is none).
pub fn get(dir: &Path, table: &str, key: &str) -> CliResult<()> {
    let store = open(dir)?;
    let record = store.record(table, key).map_err(msg)?;
    let out = match record {
        None => serde_json::Value::Null,
        Some(r) => r
            .fields
            .iter()
            .map(|(f, v)| (f.clone(), to_json(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    };
    crate::say!("{out}");
    Ok(())
}

/// A table of the store's schema, or an error listing the tables there are.
fn table_of<'s>(store: &'s Store, table: &str) -> CliResult<&'s outpost_engine::TableDef> {
    store.schema().table(table).ok_or_else(|| {
        let names: Vec<&str> = store.schema().tables().map(|t| t.name()).collect();
        format!("no table {table}; the tables are: {}", names.join(", "))
    })
}

/// Writes lines to standard output; a reader that stops early (`| head`) ends the listing
/// quietly (`Ok(false)`: stop).
fn emit(out: &mut impl std::io::Write, line: &str) -> CliResult<bool> {
    match writeln!(out, "{line}") {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(format!("cannot write the records: {e}")),
    }
}

fn record_json(r: &outpost_engine::Record) -> serde_json::Value {
    let fields: serde_json::Map<String, serde_json::Value> = r
        .fields
        .iter()
        .map(|(f, v)| (f.clone(), to_json(v)))
        .collect();
    serde_json::json!({ "key": r.key, "fields": fields })
}

/// `outpost scan`: a table's records in key order, one JSON object per line.
pub fn scan(dir: &Path, table: &str, from: Option<&str>, limit: Option<usize>) -> CliResult<()> {
    let store = open(dir)?;
    table_of(&store, table)?;
    let records = store
        .snapshot()
        .and_then(|s| s.scan(table, from, limit))
        .map_err(msg)?;
    let mut out = crate::out::Stdout;
    for r in &records {
        if !emit(&mut out, &record_json(r).to_string())? {
            break;
        }
    }
    Ok(())
}

/// One CSV cell: quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_cell(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// `outpost export`: a whole table as JSON lines or CSV.
pub fn export(dir: &Path, table: &str, format: &str) -> CliResult<()> {
    if !matches!(format, "jsonl" | "csv") {
        return Err(format!("--format {format:?}: jsonl or csv"));
    }
    let store = open(dir)?;
    let def = table_of(&store, table)?;
    let records = store.scan(table).map_err(msg)?;
    let mut out = crate::out::Stdout;
    if format == "jsonl" {
        for r in &records {
            if !emit(&mut out, &record_json(r).to_string())? {
                break;
            }
        }
        return Ok(());
    }
    let fields: Vec<&str> = def.fields().map(|(name, _)| name).collect();
    let header: Vec<String> = std::iter::once("key")
        .chain(fields.iter().copied())
        .map(csv_cell)
        .collect();
    if !emit(&mut out, &header.join(","))? {
        return Ok(());
    }
    for r in &records {
        let mut row = vec![csv_cell(&r.key)];
        for f in &fields {
            // A value as JSON (a text in quotes, a number bare); an absent field empty.
            let cell = r
                .fields
                .get(*f)
                .map(|v| to_json(v).to_string())
                .unwrap_or_default();
            row.push(csv_cell(&cell));
        }
        if !emit(&mut out, &row.join(","))? {
            break;
        }
    }
    Ok(())
}

/// `outpost schema`: each table, its policy, its fields and their types.
pub fn schema(dir: &Path) -> CliResult<()> {
    let store = open(dir)?;
    for def in store.schema().tables() {
        let policy = match def.policy() {
            outpost_engine::Policy::Shared => "shared: any site writes (R2)".to_owned(),
            outpost_engine::Policy::CentralOnly => "central only (R3)".to_owned(),
            outpost_engine::Policy::Document { frozen_once_synced } => format!(
                "document: its creating site or central (R5){}",
                if frozen_once_synced {
                    ", frozen for its creator once synced (R6)"
                } else {
                    ""
                }
            ),
        };
        crate::say!("{} — {policy}", def.name());
        for (name, kind) in def.fields() {
            crate::say!("  {name}: {kind:?}");
        }
    }
    Ok(())
}

/// `outpost put`: writes fields given as a JSON object, under every guard (R3–R8).
pub fn put(dir: &Path, table: &str, key: &str, fields: &str, user: &str) -> CliResult<()> {
    let parsed = crate::fields::parse(fields)?;
    let key = crate::fields::key(key)?;
    let store = open(dir)?;
    let def = table_of(&store, table)?;
    let values = parsed
        .iter()
        .map(|(f, v)| Ok((f.clone(), from_json(def.field_kind(f), v).map_err(msg)?)))
        .collect::<CliResult<Vec<_>>>()?;
    store
        .write_as(user, |tx| tx.set_fields(table, key, values))
        .map_err(msg)?;
    Ok(())
}

/// `outpost delete`.
pub fn delete(dir: &Path, table: &str, key: &str, user: &str) -> CliResult<()> {
    let store = open(dir)?;
    store
        .write_as(user, |tx| tx.delete(table, key))
        .map_err(msg)
}

/// `outpost reserve` / `outpost release` (R7).
pub fn reserve(dir: &Path, table: &str, key: &str, holder: &str, release: bool) -> CliResult<()> {
    let store = open(dir)?;
    if release {
        store.release(table, key, holder).map_err(msg)
    } else {
        store.reserve(table, key, holder).map_err(msg)
    }
}

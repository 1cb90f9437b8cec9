//! Central's side: the sync table, processing emissions, building returns, creating remotes and
//! their bootstrap files.
//!
//! The sync table (T1) is kept in central's own store: a flow's bytes in chunks of the local
//! side table, and a journal row. A flow is "file ready" (T3) only once all its bytes are stored
//! and it has been read through to its end frame with every checksum right.
//!
//! - this module: what central keeps per remote, the sync table's keys and stored flows
//!   (`ChunkWriter`, `StoredFlow`), remotes, settings, the deployment's identity, credentials;
//! - [`receive`](self::receive()) and the rest of receiving: `receive.rs`;
//! - processing emissions, acknowledgements: `process.rs`;
//! - after a restore from a backup: `restore.rs`;
//! - returns and bootstrap files: `returns.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};

use outpost_engine::{
    Knowledge, MergeReport, Outcome, Rejection, Site, SiteId, Slot, Snapshot, Store,
};
use serde::{Deserialize, Serialize};

use crate::flow::{
    ConfigSnapshot, FlowHeader, FlowId, FlowKind, FlowReader, FlowWriter, Incoming, IncomingItem,
    ReturnAck, ReturnedRejection, SyncMode,
};
use crate::journal::{Hold, JournalRow};
use crate::local;
use crate::{Error, Result};

mod process;
mod receive;
mod restore;
mod returns;

pub(crate) use process::human_ms;
pub use process::*;
pub use receive::*;
pub use restore::*;
pub use returns::*;

/// Bytes per stored chunk of a flow.
pub const CHUNK_BYTES: usize = 1 << 20;

/// What central keeps about one remote.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct RemoteRecord {
    /// The highest emission sequence number received.
    last_emission_seq: u64,
    /// The remote's knowledge as its latest processed emission reported it.
    knowledge: Knowledge,
    /// Emissions processed and not yet answered by a return.
    unanswered: Vec<FlowId>,
    /// Its refused changes not yet acknowledged, with the return that last carried each.
    rejections: Vec<(Rejection, Option<u64>)>,
    /// Its settings (C4), sent with every return (C6).
    settings: BTreeMap<String, String>,
    /// Its newest return and the receipt its bytes are stored under: the one it downloads.
    /// Older returns are superseded (J2) and their bytes dropped; their journal rows stay.
    latest_return: Option<(FlowId, u64)>,
}

fn remote_key(site: SiteId) -> Vec<u8> {
    let mut k = local::CENTRAL_REMOTE.to_vec();
    k.extend_from_slice(&site.0.to_be_bytes());
    k
}

/// The index of emissions file ready and not yet processed, in the order received.
fn pending_key(receipt: u64) -> Vec<u8> {
    let mut k = local::PENDING.to_vec();
    k.extend_from_slice(&receipt.to_be_bytes());
    k
}

/// Emissions file ready whose processing has not finished (never started, or cut off), in
/// the order received — read from an index, not by scanning the journal.
pub fn pending_emissions(store: &Store) -> Result<Vec<FlowId>> {
    local::snap_all(&store.snapshot()?, local::PENDING)
}

fn chunk_key(receipt: u64, chunk: u32) -> Vec<u8> {
    let mut k = local::CHUNKS.to_vec();
    k.extend_from_slice(&receipt.to_be_bytes());
    k.extend_from_slice(&chunk.to_be_bytes());
    k
}

fn check_central(store: &Store) -> Result<()> {
    if store.site().is_central() {
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "{} is not the central site",
            store.site()
        )))
    }
}

/// Creates a remote establishment at central: its site, the tables it may not write (R4/R9) and
/// its settings. Its bootstrap file comes from [`write_bootstrap`].
pub fn create_remote(
    store: &Store,
    site: Site,
    denied_tables: BTreeSet<String>,
    settings: BTreeMap<String, String>,
) -> Result<()> {
    check_central(store)?;
    if site.is_central() {
        return Err(Error::Refused(format!("{site} must be a remote")));
    }
    local::write(store, |tx| {
        tx.add_site(site.clone())?;
        tx.set_denied_tables(site.id, denied_tables)?;
        let key = remote_key(site.id);
        let mut rec: RemoteRecord = local::get(tx, &key)?.unwrap_or_default();
        rec.settings = settings;
        local::put(tx, &key, &rec)
    })
}

/// Changes a remote's settings at central; they reach the remote with its next return (C6).
pub fn set_remote_settings(
    store: &Store,
    remote: SiteId,
    settings: BTreeMap<String, String>,
) -> Result<()> {
    local::write(store, |tx| {
        let key = remote_key(remote);
        let mut rec: RemoteRecord = local::get(tx, &key)?
            .ok_or(Error::Engine(outpost_engine::Error::UnknownSite(remote)))?;
        rec.settings = settings;
        local::put(tx, &key, &rec)
    })
}

/// The setting every flow of a deployment carries: central's [`deployment_id`], in hex.
pub const DEPLOYMENT_SETTING: &str = "deployment";

/// Sets the deployment's identity: `outpost central init` draws it at random. A store that has
/// none gets one derived from central's site and clock the first time it is needed.
pub fn set_deployment_id(store: &Store, id: u64) -> Result<()> {
    check_central(store)?;
    local::write(store, |tx| local::put(tx, local::DEPLOYMENT, &id))
}

/// The deployment's identity: a remote refuses a return, central an emission, carrying
/// another one (a file from another deployment).
pub fn deployment_id(store: &Store) -> Result<u64> {
    if let Some(id) = local::snap_get::<u64>(&store.snapshot()?, local::DEPLOYMENT)? {
        return Ok(id);
    }
    // FNV-1a over central's identity and the time now: distinct for deployments not created
    // in the same millisecond under the same code. Read again and set in one transaction, so
    // that two threads asking at once agree.
    let seed = format!("{}/{}", store.site(), store.now_ms());
    local::write(store, |tx| {
        if let Some(id) = local::get::<u64>(tx, local::DEPLOYMENT)? {
            return Ok(id);
        }
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in seed.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        local::put(tx, local::DEPLOYMENT, &h)?;
        Ok(h)
    })
}

fn config_for(store: &Store, rec: &RemoteRecord) -> Result<ConfigSnapshot> {
    let sites: Vec<Site> = store.sites().iter().cloned().collect();
    let denied = sites
        .iter()
        .map(|s| {
            (
                s.id,
                store.denied_tables(s.id).into_iter().collect::<Vec<_>>(),
            )
        })
        .filter(|(_, d)| !d.is_empty())
        .collect();
    let mut settings = rec.settings.clone();
    settings.insert(
        DEPLOYMENT_SETTING.to_owned(),
        format!("{:016x}", deployment_id(store)?),
    );
    // Central's to set, never a setting a remote was given by name.
    settings.remove(REJUDGED_SETTING);
    if restore_under_way(store)? {
        settings.insert(REJUDGED_SETTING.to_owned(), "1".to_owned());
    }
    Ok(ConfigSnapshot {
        sites,
        denied,
        settings,
    })
}

/// Sets the whole sync configuration (C4) after validating it: central's settings, and each
/// remote's establishment, permissions and settings, which reach it with its next return (C6).
pub fn set_config(store: &Store, config: &crate::config::SyncConfig) -> Result<()> {
    check_central(store)?;
    config
        .validate()
        .map_err(|e| Error::Config(e.to_string()))?;
    // One transaction, whatever the number of remotes (a thousand remotes added one by one
    // must not cost a commit per remote each time).
    local::write(store, |tx| {
        for r in &config.remotes {
            if retired_in(tx, r.id)?.is_some() {
                return Err(Error::Refused(format!(
                    "site {} ({}) was removed from this deployment: its id and code are not \
                     given again (give the new establishment new ones)",
                    r.id, r.code
                )));
            }
            let site = Site::remote(r.id.0, &r.code).map_err(outpost_engine::Error::from)?;
            tx.add_site(site)?;
            tx.set_denied_tables(r.id, r.denied_tables.clone())?;
            let settings = config.remote_settings(r.id).unwrap_or_default();
            let key = remote_key(r.id);
            let mut rec: RemoteRecord = local::get(tx, &key)?.unwrap_or_default();
            if rec.settings != settings {
                rec.settings = settings;
                local::put(tx, &key, &rec)?;
            }
        }
        local::put(tx, local::CONFIG, config)
    })
}

/// Removes a remote from the deployment (`outpost central remove-remote`): it leaves the sync
/// configuration (no schedule, no common return, no silence alert), its credential stops
/// working, and any flow of it that still comes — uploaded or imported from a file — is refused
/// and listed with the refused flows. What it wrote stays in central's data, which the other
/// remotes keep receiving, and its journal rows stay (J1's history). Its id and code stay taken:
/// a new establishment gets new ones; the bytes of its newest return are dropped. Refused while
/// emissions of it wait to be processed; unless `removal.drop_reserved`, while its last
/// emission reported documents reserved (R7: what was written to them has not been sent); and,
/// unless `removal.drop_unsent`, while central is being restored from a backup and the remote
/// has not yet sent back what central lost of it ([`restore_under_way`]), or has reported while
/// central still waits for other remotes' reports (its last emission was put off).
pub fn remove_remote(store: &Store, code: &str, now_ms: u64, removal: Removal) -> Result<SiteId> {
    check_central(store)?;
    let mut config = config(store)?.ok_or_else(|| {
        Error::Refused("central has no configuration: run `outpost central init` first".into())
    })?;
    let Some(pos) = config.remotes.iter().position(|r| r.code == code) else {
        let known: Vec<&str> = config.remotes.iter().map(|r| r.code.as_str()).collect();
        return Err(Error::Refused(format!(
            "no remote {code}; the remotes are: {}",
            known.join(", ")
        )));
    };
    let id = config.remotes.remove(pos).id;
    config
        .validate()
        .map_err(|e| Error::Config(e.to_string()))?;
    let sites = store.sites();
    local::write(store, |tx| {
        // Checked in the transaction that retires it: an emission received meanwhile counts.
        let mut pending = 0;
        for (_, v) in tx.local_range(local::PENDING, &local::prefix_end(local::PENDING), None)? {
            let flow: FlowId = local::snap_decode(&v)?;
            pending += usize::from(flow.site == id);
        }
        if pending > 0 {
            return Err(Error::Refused(format!(
                "{pending} emission(s) of {code} wait to be processed: let central process \
                 them first (its daemon does at once; a stopped daemon at its next start), \
                 then remove it"
            )));
        }
        // What its tills wrote to documents they hold reserved has not been sent (R7): it
        // would be lost with the shop, unheard of.
        if let Some(r) = crate::monitor_records::reserved_in(tx, id)?
            && r.count > 0
            && !removal.drop_reserved
        {
            return Err(Error::Refused(format!(
                "{code} held {} document(s) reserved at its last sync (emission {}): what is \
                 written to a reserved document is not sent until it is released (R7), and \
                 would be lost with the shop; release them at the shop (`outpost release`) \
                 and sync, then remove it — or, if the shop's store is gone, remove it with \
                 --drop-reserved",
                r.count, r.flow
            )));
        }
        // What the restore lost of it is held by its store only (and by the remotes that
        // received it before the loss): it sends it back with its next two syncs.
        if !removal.drop_unsent && !restore::relayed_since_restore(tx, id)? {
            return Err(Error::Refused(format!(
                "central is being restored from a backup and {code} has not yet sent back what \
                 central lost of it: sync it twice (a return of the restored central, then an \
                 emission), then remove it — or, if the shop's store is gone, remove it with \
                 --drop-unsent (what only that store held is lost)"
            )));
        }
        // While central waits for other remotes' reports it takes no remote's new changes: an
        // emission this one made since its last taken (its last sync before closing) was put
        // off, nothing of it kept.
        if !removal.drop_unsent && restore::has_reported(tx, id)? {
            let others = restore::waiting_for(tx, &sites, id)?;
            if !others.is_empty() {
                return Err(Error::Refused(format!(
                    "central is being restored from a backup and waits for the reports of {} \
                     before it takes any remote's new changes: what {code} wrote since its last \
                     emission central took was not taken yet; once they have synced, sync \
                     {code} again, then remove it — or, if the shop's store is gone, remove it \
                     with --drop-unsent (what only that store held is lost)",
                    others.join(", ")
                )));
            }
        }
        local::put(tx, local::CONFIG, &config)?;
        // Its newest return will not be downloaded: its bytes go (and with the last such
        // return, the common part it read).
        let rkey = remote_key(id);
        if let Some(mut rec) = local::get::<RemoteRecord>(tx, &rkey)?
            && let Some((rid, receipt)) = rec.latest_return.take()
        {
            drop_return_bytes(tx, rid, receipt)?;
            local::put(tx, &rkey, &rec)?;
        }
        // Its credential's digest stays: the daemon refuses a removed site's credential, and
        // knowing it lets the daemon tell that shop why (and the person responsible that it
        // still syncs) where a mere wrong credential is told nothing.
        local::put(tx, &retired_key(id), &now_ms)
    })?;
    Ok(id)
}

/// What [`remove_remote`] may leave behind, when the shop's store is gone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removal {
    /// What its tills wrote to documents reserved at its last sync (never sent, R7).
    pub drop_reserved: bool,
    /// What central lost of it in a restore from a backup, while the remote has not yet sent it
    /// back.
    pub drop_unsent: bool,
}

fn retired_key(site: SiteId) -> Vec<u8> {
    let mut key = local::RETIRED.to_vec();
    key.extend_from_slice(&site.0.to_be_bytes());
    key
}

/// When a remote was removed from the deployment, if it was ([`remove_remote`]).
pub fn retired(store: &Store, site: SiteId) -> Result<Option<u64>> {
    local::snap_get(&store.snapshot()?, &retired_key(site))
}

/// How often a removed site still syncing raises its event: once a day per site.
pub const REMOVED_SITE_EVENT_MS: u64 = 24 * 3_600_000;

/// A removed remote's store still syncing, with its own credential (`text` says from where):
/// what is written there reaches no other site. An event for the person responsible (the
/// monitor's alerts, the e-mail digest), at most once per [`REMOVED_SITE_EVENT_MS`] per site —
/// kept in the store, so a restarted daemon does not raise it again. Returns whether it was
/// raised.
pub fn record_removed_site_call(
    store: &Store,
    site: SiteId,
    at_ms: u64,
    text: String,
) -> Result<bool> {
    check_central(store)?;
    let mut key = local::REMOVED_CALLS.to_vec();
    key.extend_from_slice(&site.0.to_be_bytes());
    local::write(store, |tx| {
        if let Some(last) = local::get::<u64>(tx, &key)?
            && at_ms.saturating_sub(last) < REMOVED_SITE_EVENT_MS
        {
            return Ok(false);
        }
        local::put(tx, &key, &at_ms)?;
        crate::monitor_records::record_event(
            tx,
            &crate::monitor_records::Event {
                kind: crate::monitor_records::EventKind::RemovedSiteSyncs,
                at_ms,
                site,
                flow: FlowId { site, seq: 0 },
                text,
            },
        )?;
        Ok(true)
    })
}

pub(crate) fn retired_in(
    tx: &outpost_engine::WriteTx<'_, '_>,
    site: SiteId,
) -> Result<Option<u64>> {
    local::get(tx, &retired_key(site))
}

/// The sync configuration last set, if any.
pub fn config(store: &Store) -> Result<Option<crate::config::SyncConfig>> {
    local::snap_get(&store.snapshot()?, local::CONFIG)
}

/// The bytes of the flows central keeps in its sync table: the emissions it received, and each
/// remote's newest return, whose common part (the same for every return of one common return
/// time, M1) is kept once.
pub fn stored_flow_bytes(store: &Store) -> Result<u64> {
    let snap = store.snapshot()?;
    let end = local::prefix_end(local::CHUNKS);
    let mut start = local::CHUNKS.to_vec();
    let mut total = 0u64;
    loop {
        // A few chunks at a time: a chunk is up to a mebibyte.
        let batch = snap.local_range(&start, &end, Some(8))?;
        let Some((last, _)) = batch.last() else {
            return Ok(total);
        };
        start.clone_from(last);
        start.push(0);
        total += batch.iter().map(|(_, v)| v.len() as u64).sum::<u64>();
    }
}

/// What is wrong with the sync table's common parts, in words (none when all is well): each
/// common part's count is the number of returns reading it (plus one while its batch is written),
/// and each counted part is stored. The simulator checks it at the end of every run.
pub fn sync_table_problems(store: &Store) -> Result<Vec<String>> {
    let snap = store.snapshot()?;
    let mut readers: BTreeMap<u64, u64> = BTreeMap::new();
    for (_, v) in snap.local_range(local::SPLICES, &local::prefix_end(local::SPLICES), None)? {
        *readers.entry(local::snap_decode(&v)?).or_default() += 1;
    }
    if let Some(pinned) = local::snap_get::<u64>(&snap, local::SHARING)? {
        *readers.entry(pinned).or_default() += 1;
    }
    let mut counted: BTreeMap<u64, u64> = BTreeMap::new();
    let refs = local::SHARED_REFS;
    for (k, v) in snap.local_range(refs, &local::prefix_end(refs), None)? {
        let receipt = k
            .get(refs.len()..)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| {
                Error::Engine(outpost_engine::Error::Corrupt(format!(
                    "sync table: a count under key {k:?}"
                )))
            })?;
        counted.insert(receipt, local::snap_decode(&v)?);
    }
    let mut problems = Vec::new();
    for part in readers
        .keys()
        .chain(counted.keys())
        .collect::<BTreeSet<_>>()
    {
        let (n_read, n_counted) = (
            readers.get(part).copied().unwrap_or(0),
            counted.get(part).copied().unwrap_or(0),
        );
        if n_read != n_counted {
            problems.push(format!(
                "common part {part}: read by {n_read} return(s) and its batch, counted {n_counted}"
            ));
        }
        if snap.local_get(&chunk_key(*part, 0))?.is_none() {
            problems.push(format!("common part {part}: read or counted, not stored"));
        }
    }
    Ok(problems)
}

fn discard(store: &Store, receipt: u64) -> Result<()> {
    local::write(store, |tx| remove_chunks(tx, receipt))
}

/// Drops a stored flow's bytes; a common part it read is dropped with the last flow reading it.
fn remove_chunks(tx: &mut outpost_engine::WriteTx<'_, '_>, receipt: u64) -> Result<()> {
    let start = chunk_key(receipt, 0);
    let end = chunk_key(receipt + 1, 0);
    for (k, _) in tx.local_range(&start, &end, None)? {
        tx.local_remove(&k)?;
    }
    let start = splice_key(receipt, 0);
    let end = splice_key(receipt + 1, 0);
    for (k, v) in tx.local_range(&start, &end, None)? {
        tx.local_remove(&k)?;
        release_common_part(tx, local::snap_decode(&v)?)?;
    }
    Ok(())
}

/// One reader fewer for the common part stored under `shared`: dropped with the last.
fn release_common_part(tx: &mut outpost_engine::WriteTx<'_, '_>, shared: u64) -> Result<()> {
    let refs = shared_refs_key(shared);
    match local::get::<u64>(tx, &refs)? {
        Some(n) if n > 1 => local::put(tx, &refs, &(n - 1)),
        _ => {
            tx.local_remove(&refs)?;
            remove_chunks(tx, shared)
        }
    }
}

/// Unpins the common part of a batch of returns ([`store_common_part`]): what no return reads
/// goes. Also run before a batch for the pin a crash left.
fn unpin_common_part(tx: &mut outpost_engine::WriteTx<'_, '_>) -> Result<()> {
    if let Some(shared) = local::get::<u64>(tx, local::SHARING)? {
        tx.local_remove(local::SHARING)?;
        release_common_part(tx, shared)?;
    }
    Ok(())
}

/// Where stored flow `receipt` reads, at its chunk number `chunk`, another stored flow whole.
fn splice_key(receipt: u64, chunk: u32) -> Vec<u8> {
    let mut k = local::SPLICES.to_vec();
    k.extend_from_slice(&receipt.to_be_bytes());
    k.extend_from_slice(&chunk.to_be_bytes());
    k
}

/// How many stored flows read the common part stored under `receipt`.
fn shared_refs_key(receipt: u64) -> Vec<u8> {
    let mut k = local::SHARED_REFS.to_vec();
    k.extend_from_slice(&receipt.to_be_bytes());
    k
}

/// Reads a stored flow's bytes back, chunk by chunk, from one snapshot; where it reads a common
/// part stored once, that part's chunks.
struct StoredFlow {
    snap: Snapshot,
    receipt: u64,
    chunk: u32,
    /// The common part being read, and its next chunk.
    spliced: Option<(u64, u32)>,
    buf: Vec<u8>,
    pos: usize,
}

impl StoredFlow {
    fn open(store: &Store, receipt: u64) -> Result<Self> {
        Ok(Self::on(store.snapshot()?, receipt))
    }

    fn on(snap: Snapshot, receipt: u64) -> Self {
        StoredFlow {
            snap,
            receipt,
            chunk: 0,
            spliced: None,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// The next chunk of bytes, if any is left.
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            if let Some((shared, n)) = self.spliced {
                if let Some(b) = self.snap.local_get(&chunk_key(shared, n))? {
                    self.spliced = Some((shared, n + 1));
                    return Ok(Some(b));
                }
                self.spliced = None;
                self.chunk += 1;
            }
            if let Some(b) = self.snap.local_get(&chunk_key(self.receipt, self.chunk))? {
                self.chunk += 1;
                return Ok(Some(b));
            }
            match self.snap.local_get(&splice_key(self.receipt, self.chunk))? {
                Some(v) => {
                    let shared: u64 = local::snap_decode(&v)?;
                    // Never empty: a missing part would make a short flow, not an error.
                    if self.snap.local_get(&chunk_key(shared, 0))?.is_none() {
                        return Err(Error::Engine(outpost_engine::Error::Corrupt(format!(
                            "stored flow {} reads common part {shared}, which is not stored",
                            self.receipt
                        ))));
                    }
                    self.spliced = Some((shared, 0));
                }
                None => return Ok(None),
            }
        }
    }
}

impl Read for StoredFlow {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.buf.len() {
            match self.next_chunk().map_err(io::Error::other)? {
                Some(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let n = rest.len().min(out.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..n), rest.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.pos += n;
        Ok(n)
    }
}

/// Stores the digest of a site's network credential (the secret itself is never kept). The
/// central site's own credential is the administrator's.
pub fn set_credential_digest(store: &Store, site: SiteId, digest: &[u8]) -> Result<()> {
    check_central(store)?;
    if store.sites().get(site).is_none() {
        return Err(Error::Engine(outpost_engine::Error::UnknownSite(site)));
    }
    if retired(store, site)?.is_some() {
        return Err(Error::Refused(format!(
            "site {site} was removed from this deployment: it gets no credential again"
        )));
    }
    let mut key = local::CREDENTIALS.to_vec();
    key.extend_from_slice(&site.0.to_be_bytes());
    local::write(store, |tx| local::put(tx, &key, &digest.to_vec()))
}

/// The digest of a site's network credential, if it has one.
pub fn credential_digest(store: &Store, site: SiteId) -> Result<Option<Vec<u8>>> {
    let mut key = local::CREDENTIALS.to_vec();
    key.extend_from_slice(&site.0.to_be_bytes());
    local::snap_get(&store.snapshot()?, &key)
}

/// Where a flow kept in the sync table stands while it is written: its receipt, once it has
/// one, and the bytes of its last chunk, not stored yet.
#[derive(Default)]
struct Keeping {
    /// Taken in a transaction that may still roll back.
    receipt: Option<u64>,
    /// The receipt some chunks were committed under: the only one an error may discard (a
    /// number taken in a transaction that rolled back may be another flow's by then).
    stored: Option<u64>,
    chunk: u32,
    /// Grown as bytes come, up to a chunk: a return is a few kilobytes most days, and a
    /// chunk-sized buffer made for each came as fresh pages from the system every time.
    buf: Vec<u8>,
    /// Chunks complete before a common part, with their numbers, not stored yet.
    held: Vec<(u32, Vec<u8>)>,
    /// Common parts read at these chunk numbers, not recorded yet.
    splices: Vec<(u32, u64)>,
}

impl Keeping {
    /// The receipt, allocated in `tx` if the flow has none yet.
    fn receipt(&mut self, tx: &mut outpost_engine::WriteTx<'_, '_>) -> Result<u64> {
        match self.receipt {
            Some(r) => Ok(r),
            None => {
                let r = receive::allocate_receipt(tx)?;
                self.receipt = Some(r);
                Ok(r)
            }
        }
    }

    /// The flow reads, here, the common part stored under `shared` ([`store_common_part`]).
    fn splice(&mut self, shared: u64) {
        if !self.buf.is_empty() {
            self.held.push((self.chunk, std::mem::take(&mut self.buf)));
            self.chunk += 1;
        }
        self.splices.push((self.chunk, shared));
        self.chunk += 1;
    }

    /// Stores the bytes held, in `tx`.
    fn store_held(&mut self, tx: &mut outpost_engine::WriteTx<'_, '_>) -> Result<u64> {
        let receipt = self.receipt(tx)?;
        for (n, bytes) in std::mem::take(&mut self.held) {
            tx.local_put(&chunk_key(receipt, n), &bytes)?;
        }
        for (n, shared) in std::mem::take(&mut self.splices) {
            local::put(tx, &splice_key(receipt, n), &shared)?;
            let refs = shared_refs_key(shared);
            let count = local::get::<u64>(tx, &refs)?.unwrap_or(0);
            local::put(tx, &refs, &(count + 1))?;
        }
        if !self.buf.is_empty() {
            tx.local_put(&chunk_key(receipt, self.chunk), &self.buf)?;
            self.chunk += 1;
            self.buf.clear();
        }
        Ok(receipt)
    }
}

/// Stores the common part of several returns once, under a receipt of its own, for the returns
/// to read ([`Keeping::splice`]); pinned (`SHARING`) until [`unpin_common_part`], so that a
/// crash before its returns are written leaves nothing no one drops. A pin a crash left is
/// dropped first.
fn store_common_part(store: &Store, bytes: &[u8]) -> Result<u64> {
    let receipt = local::write(store, |tx| {
        unpin_common_part(tx)?;
        let receipt = receive::allocate_receipt(tx)?;
        local::put(tx, local::SHARING, &receipt)?;
        local::put(tx, &shared_refs_key(receipt), &1u64)?;
        Ok(receipt)
    })?;
    let keeping = std::cell::RefCell::new(Keeping {
        receipt: Some(receipt),
        ..Keeping::default()
    });
    let mut out = ChunkWriter {
        store,
        keeping: &keeping,
    };
    let stored = io::Write::write_all(&mut out, bytes)
        .map_err(Error::Io)
        .and_then(|()| local::write(store, |tx| keeping.borrow_mut().store_held(tx)));
    if stored.is_err() {
        local::write(store, unpin_common_part)?;
    }
    stored
}

/// Writes a flow's bytes into the sync table: each full chunk in a transaction of its own, the
/// last one (all of a flow under a chunk) in the transaction that records the flow
/// ([`Keeping::store_held`]) — one commit for a day's return instead of three.
struct ChunkWriter<'s> {
    store: &'s Store,
    keeping: &'s std::cell::RefCell<Keeping>,
}

impl Write for ChunkWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut k = self.keeping.borrow_mut();
        let room = CHUNK_BYTES - k.buf.len();
        let n = room.min(data.len());
        k.buf.extend_from_slice(data.get(..n).unwrap_or_default());
        if k.buf.len() >= CHUNK_BYTES {
            let receipt =
                local::write(self.store, |tx| k.store_held(tx)).map_err(io::Error::other)?;
            k.stored = Some(receipt);
        }
        Ok(n)
    }

    /// The bytes held stay for the transaction that records the flow.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use outpost_engine::{FieldKind, ManualClock, Schema, Site, StoreConfig, TableDef};

    use super::*;

    fn central() -> Result<Store> {
        let schema = Schema::new([TableDef::shared("customers").field("name", FieldKind::Text)])
            .map_err(|e| Error::Refused(e.to_string()))?;
        let site = Site::central(1, "ASOC").map_err(|e| Error::Refused(e.to_string()))?;
        Ok(Store::in_memory(StoreConfig::new(
            site,
            schema,
            ManualClock::new(0),
        ))?)
    }

    #[test]
    fn m1_a_common_part_left_pinned_by_a_crash_is_dropped_by_the_next_batch() -> Result<()> {
        let store = central()?;
        // A batch stored its common part and stopped there (the daemon was killed).
        let first = store_common_part(&store, &[1; 3 * CHUNK_BYTES / 2])?;
        assert_eq!(stored_flow_bytes(&store)?, 3 * CHUNK_BYTES as u64 / 2);
        assert_eq!(sync_table_problems(&store)?, Vec::<String>::new());
        // The next batch's part replaces it; once unpinned, no return reading it, it goes.
        let second = store_common_part(&store, &[2; 1000])?;
        assert_ne!(first, second);
        assert_eq!(stored_flow_bytes(&store)?, 1000);
        local::write(&store, unpin_common_part)?;
        assert_eq!(stored_flow_bytes(&store)?, 0);
        assert_eq!(sync_table_problems(&store)?, Vec::<String>::new());
        let snap = store.snapshot()?;
        assert!(snap.local_get(&shared_refs_key(second))?.is_none());
        assert!(snap.local_get(local::SHARING)?.is_none());
        // A count no reader accounts for is found.
        local::write(&store, |tx| local::put(tx, &shared_refs_key(second), &1u64))?;
        assert_eq!(
            sync_table_problems(&store)?.len(),
            2,
            "counted, not read nor stored"
        );
        Ok(())
    }

    #[test]
    fn m1_a_return_whose_common_part_is_missing_reads_as_an_error_not_a_short_flow() -> Result<()> {
        let store = central()?;
        local::write(&store, |tx| {
            tx.local_put(&chunk_key(7, 0), b"head")?;
            local::put(tx, &splice_key(7, 1), &9u64)?;
            Ok(tx.local_put(&chunk_key(7, 2), b"tail")?)
        })?;
        let mut bytes = Vec::new();
        let read = StoredFlow::open(&store, 7)?.read_to_end(&mut bytes);
        assert!(read.is_err(), "{bytes:?}");
        // With the part stored, the three pieces in order.
        local::write(
            &store,
            |tx| Ok(tx.local_put(&chunk_key(9, 0), b"-common-")?),
        )?;
        let mut bytes = Vec::new();
        StoredFlow::open(&store, 7)?.read_to_end(&mut bytes)?;
        assert_eq!(bytes, b"head-common-tail");
        Ok(())
    }
}

//! Central's side: the sync table, processing emissions, building returns, creating remotes and
//! their bootstrap files.
//!
//! The sync table (T1) is kept in central's own store: a flow's bytes in chunks of the local
//! side table, and a journal row. A flow is "file ready" (T3) only once all its bytes are stored
//! and it has been read through to its end frame with every checksum right.

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
    Ok(ConfigSnapshot {
        sites,
        denied,
        settings,
    })
}

/// A flow central refused at receipt: damaged, truncated, too large, of another deployment,
/// claiming another site… Nothing of it is kept but this entry (the journal has rows only for
/// flows it took).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RefusedFlow {
    /// When (central's clock, UTC ms).
    pub at_ms: u64,
    /// The site that sent it, when the transport knew (an authenticated connection).
    pub sender: Option<SiteId>,
    /// Its size as received.
    pub bytes: u64,
    /// Why it was refused.
    pub reason: String,
}

/// The flows refused at receipt, oldest first.
pub fn refused_flows(store: &Store) -> Result<Vec<RefusedFlow>> {
    local::snap_all(&store.snapshot()?, local::REFUSED_FLOWS)
}

/// The result of receiving a flow.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Received {
    /// Stored whole and checked: file ready.
    Ready {
        /// The flow.
        id: FlowId,
        /// Its size.
        bytes: u64,
        /// A gap or disorder in the remote's sequence, reported in the journal.
        note: Option<String>,
    },
    /// The sync table already has this flow: it is not stored or applied again.
    Duplicate(FlowId),
}

/// Receives an emission (from a file, later from the network) into the sync table. `sender` is
/// the site that actually sent it, when the transport knows it (an authenticated connection):
/// a flow claiming another site is refused. The flow is checked through to its end frame before
/// it is "file ready"; a damaged or truncated flow is refused and nothing is kept.
pub fn receive(store: &Store, mut input: impl Read, sender: Option<SiteId>) -> Result<Received> {
    check_central(store)?;
    // 1. Store the bytes, chunk by chunk.
    let receipt = new_receipt(store)?;
    let mut bytes = 0u64;
    let mut chunk_no = 0u32;
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let mut filled = 0;
        while filled < CHUNK_BYTES {
            let n = match input.read(buf.get_mut(filled..).unwrap_or_default()) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    discard(store, receipt)?;
                    return Err(Error::Io(e));
                }
            };
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        let chunk = buf.get(..filled).unwrap_or_default();
        local::write(store, |tx| {
            Ok(tx.local_put(&chunk_key(receipt, chunk_no), chunk)?)
        })?;
        bytes += filled as u64;
        chunk_no += 1;
        if filled < CHUNK_BYTES {
            break;
        }
    }
    // 2. Check it whole, from what was stored.
    let checked = check_stored(store, receipt, sender);
    let header = match checked {
        Ok(h) => h,
        Err(e) => {
            discard(store, receipt)?;
            if e.is_the_flows() {
                let refused = RefusedFlow {
                    at_ms: store.now_ms(),
                    sender,
                    bytes,
                    reason: e.to_string(),
                };
                local::write(store, |tx| put_refused(tx, receipt, &refused))?;
            }
            return Err(e);
        }
    };
    // 3. File ready — unless it comes from a store that does not speak for its site, or is a
    // duplicate.
    let now = store.now_ms();
    let id = header.id;
    let code = store
        .sites()
        .get(header.source)
        .map_or_else(|| header.source.to_string(), |s| s.code.to_string());
    let outcome = local::write(store, |tx| {
        if let Err(reason) = crate::incarnation::check_emission(tx, &header, &code)? {
            let refused = RefusedFlow {
                at_ms: now,
                sender,
                bytes,
                reason: reason.clone(),
            };
            put_refused(tx, receipt, &refused)?;
            crate::monitor_records::record_event(
                tx,
                &crate::monitor_records::Event {
                    kind: crate::monitor_records::EventKind::WrongStore,
                    at_ms: now,
                    site: header.source,
                    flow: id,
                    text: reason.clone(),
                },
            )?;
            return Ok(Err(reason));
        }
        if crate::journal::get(tx, id)?.is_some() {
            return Ok(Ok(Received::Duplicate(id)));
        }
        let rkey = remote_key(header.source);
        let mut rec: RemoteRecord = local::get(tx, &rkey)?.unwrap_or_default();
        let note = if id.seq > rec.last_emission_seq + 1 {
            Some(format!(
                "emission(s) {}..{} of {} never received",
                rec.last_emission_seq + 1,
                id.seq - 1,
                header.source
            ))
        } else if id.seq <= rec.last_emission_seq {
            Some(format!(
                "received out of order, after emission {}",
                rec.last_emission_seq
            ))
        } else {
            None
        };
        rec.last_emission_seq = rec.last_emission_seq.max(id.seq);
        local::put(tx, &rkey, &rec)?;
        let mut row = JournalRow::new(id, FlowKind::Emission, header.source, header.mode);
        row.file_ready_ms = Some(now);
        row.bytes = bytes;
        row.receipt = Some(receipt);
        row.error = note.clone();
        crate::journal::put(tx, &row)?;
        crate::monitor_records::index_row(tx, now, id)?;
        crate::monitor_records::saw_emission(tx, id, now, Some(header.created_wall_ms))?;
        local::put(tx, &pending_key(receipt), &id)?;
        Ok(Ok(Received::Ready { id, bytes, note }))
    })?;
    let outcome = match outcome {
        Ok(o) => o,
        Err(reason) => {
            discard(store, receipt)?;
            return Err(Error::WrongStore(reason));
        }
    };
    if matches!(outcome, Received::Duplicate(_)) {
        discard(store, receipt)?;
    }
    Ok(outcome)
}

/// Lists a flow refused at receipt (`rf/` + receipt number), outside the journal.
fn put_refused(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    receipt: u64,
    refused: &RefusedFlow,
) -> Result<()> {
    let mut key = local::REFUSED_FLOWS.to_vec();
    key.extend_from_slice(&receipt.to_be_bytes());
    local::put(tx, &key, refused)
}

fn new_receipt(store: &Store) -> Result<u64> {
    local::write(store, |tx| {
        let n: u64 = local::get(tx, local::RECEIPT_SEQ)?.unwrap_or(0) + 1;
        local::put(tx, local::RECEIPT_SEQ, &n)?;
        Ok(n)
    })
}

/// Writes a flow's bytes into the sync table, a chunk per transaction.
struct ChunkWriter<'s> {
    store: &'s Store,
    receipt: u64,
    chunk: u32,
    buf: Vec<u8>,
}

impl ChunkWriter<'_> {
    fn put_chunk(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let key = chunk_key(self.receipt, self.chunk);
        let bytes = std::mem::take(&mut self.buf);
        local::write(self.store, |tx| Ok(tx.local_put(&key, &bytes)?)).map_err(io::Error::other)?;
        self.chunk += 1;
        Ok(())
    }
}

impl Write for ChunkWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK_BYTES - self.buf.len();
        let n = room.min(data.len());
        self.buf
            .extend_from_slice(data.get(..n).unwrap_or_default());
        if self.buf.len() >= CHUNK_BYTES {
            self.put_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.put_chunk()
    }
}

/// Prepares the return of `remote` into central's sync table, where the remote fetches it when
/// it connects ([`fetch_return`]). See [`build_return`].
pub fn prepare_return(store: &Store, remote: SiteId) -> Result<Built> {
    let receipt = new_receipt(store)?;
    let out = ChunkWriter {
        store,
        receipt,
        chunk: 0,
        buf: Vec::with_capacity(CHUNK_BYTES),
    };
    match write_for_remote(
        store,
        remote,
        FlowKind::Return,
        out,
        true,
        Some(receipt),
        None,
    ) {
        Ok((_, built)) => Ok(built),
        Err(e) => {
            discard(store, receipt)?;
            Err(e)
        }
    }
}

/// The newest return prepared for `remote` with a sequence number above `after_seq`, as a byte
/// stream (what a remote downloads when it connects).
pub fn fetch_return(
    store: &Store,
    remote: SiteId,
    after_seq: u64,
) -> Result<Option<(FlowId, impl Read + use<>)>> {
    // One snapshot for the record and the bytes: a return built meanwhile, which drops the
    // bytes of the one it supersedes, cannot cut this download short.
    let snap = store.snapshot()?;
    let rec: Option<RemoteRecord> = local::snap_get(&snap, &remote_key(remote))?;
    let newest = rec
        .and_then(|r| r.latest_return)
        .filter(|(id, _)| id.seq > after_seq);
    match newest {
        Some((id, receipt)) => Ok(Some((id, StoredFlow::on(snap, receipt)))),
        None => Ok(None),
    }
}

/// Sets the whole sync configuration (C4) after validating it: central's settings, and each
/// remote's establishment, permissions and settings, which reach it with its next return (C6).
pub fn set_config(store: &Store, config: &crate::config::SyncConfig) -> Result<()> {
    check_central(store)?;
    config
        .validate()
        .map_err(|e| Error::Refused(format!("configuration: {e}")))?;
    for r in &config.remotes {
        let site = Site::remote(r.id.0, &r.code).map_err(outpost_engine::Error::from)?;
        let settings = config.remote_settings(r.id).unwrap_or_default();
        create_remote(store, site, r.denied_tables.clone(), settings)?;
    }
    local::write(store, |tx| local::put(tx, local::CONFIG, config))
}

/// The sync configuration last set, if any.
pub fn config(store: &Store) -> Result<Option<crate::config::SyncConfig>> {
    local::snap_get(&store.snapshot()?, local::CONFIG)
}

fn discard(store: &Store, receipt: u64) -> Result<()> {
    local::write(store, |tx| remove_chunks(tx, receipt))
}

fn remove_chunks(tx: &mut outpost_engine::WriteTx<'_, '_>, receipt: u64) -> Result<()> {
    let start = chunk_key(receipt, 0);
    let end = chunk_key(receipt + 1, 0);
    for (k, _) in tx.local_range(&start, &end, None)? {
        tx.local_remove(&k)?;
    }
    Ok(())
}

/// Reads a stored flow's bytes back, chunk by chunk, from one snapshot.
struct StoredFlow {
    snap: Snapshot,
    receipt: u64,
    chunk: u32,
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
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for StoredFlow {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.buf.len() {
            match self
                .snap
                .local_get(&chunk_key(self.receipt, self.chunk))
                .map_err(io::Error::other)?
            {
                Some(b) => {
                    self.buf = b;
                    self.pos = 0;
                    self.chunk += 1;
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

fn check_stored(store: &Store, receipt: u64, sender: Option<SiteId>) -> Result<FlowHeader> {
    let reader = FlowReader::open(StoredFlow::open(store, receipt)?)?;
    check_emission_header(store, reader.header(), sender)?;
    Ok(reader.verify()?)
}

fn check_emission_header(store: &Store, h: &FlowHeader, sender: Option<SiteId>) -> Result<()> {
    if h.kind != FlowKind::Emission {
        return Err(Error::Refused(format!(
            "flow {} is a {:?}, not an emission",
            h.id, h.kind
        )));
    }
    if let Some(sender) = sender
        && (h.source != sender || h.id.site != sender)
    {
        return Err(Error::Refused(format!(
            "flow {} claims to come from site {} but was sent by site {sender}",
            h.id, h.source
        )));
    }
    if h.id.site != h.source {
        return Err(Error::Refused(format!(
            "flow {} claims source {} but its id names site {}",
            h.id, h.source, h.id.site
        )));
    }
    if h.target != store.site().id {
        return Err(Error::Refused(format!(
            "flow {} is addressed to site {}, not to this central site {}",
            h.id,
            h.target,
            store.site().id
        )));
    }
    match store.sites().get(h.source) {
        Some(s) if !s.is_central() => {}
        _ => {
            return Err(Error::Refused(format!(
                "flow {} comes from site {}, which is not a known remote",
                h.id, h.source
            )));
        }
    }
    let carried = h
        .config
        .as_ref()
        .and_then(|c| c.settings.get(DEPLOYMENT_SETTING));
    let ours = format!("{:016x}", deployment_id(store)?);
    if let Some(theirs) = carried
        && *theirs != ours
    {
        return Err(Error::Refused(format!(
            "flow {} belongs to another deployment ({theirs}; this central's is {ours})",
            h.id
        )));
    }
    let fingerprint = store.schema().fingerprint();
    if h.schema_fingerprint != fingerprint {
        return Err(Error::Refused(format!(
            "flow {} was made with schema {:016x}; this site's is {fingerprint:016x}",
            h.id, h.schema_fingerprint
        )));
    }
    Ok(())
}

/// What processing one emission did.
#[derive(Clone, Debug, PartialEq)]
pub struct Processed {
    /// The emission.
    pub id: FlowId,
    /// The merge's outcomes.
    pub report: MergeReport,
}

/// How far central's sequences (its returns, its own commits) jump after a restore from a
/// backup: past anything it can have issued between the backup and the loss (and at least to
/// the time in milliseconds, so that a second restore of the same backup jumps further).
pub const RESTORE_SEQ_JUMP: u64 = 1 << 32;

/// Makes central's store, just restored from a backup, safe to run again. The returns and the
/// commits it made after the backup are lost here, but its remotes have them: its return
/// numbers jump (a remote would refuse a return numbered below one it applied as stale) and so
/// does its commit sequence (a new commit must not reuse a dot the remotes already know).
/// Each remote's emissions are computed from what central last reported it holds, so once a
/// remote has applied a return of the restored central, its next emission carries again what
/// central lost. Until then its emissions' claims to cover what it knows are not trusted
/// ([`trusts_coverage`]): they were made believing central has what it lost. Returns the next
/// return number.
pub fn after_restore(store: &Store) -> Result<u64> {
    check_central(store)?;
    // Past anything issued since the backup, and past an earlier restore of the same backup:
    // the numbers never go below the time in milliseconds.
    let floor = store.now_ms();
    store.skip_sequence(RESTORE_SEQ_JUMP, floor)?;
    local::write(store, |tx| {
        let seq: u64 = local::get(tx, local::RETURN_SEQ)?.unwrap_or(0);
        let next = seq.saturating_add(RESTORE_SEQ_JUMP).max(floor);
        local::put(tx, local::RETURN_SEQ, &next)?;
        local::put(tx, local::RESTORED, &(next + 1))?;
        local::remove_all(tx, local::RESTORE_CONFIRMED)?;
        local::remove_all(tx, local::RESTORE_RELAYED)?;
        Ok(next + 1)
    })
}

/// Whether central may take the coverage claim of `remote`'s emission number `emission`
/// (everything the remote knows of its own is at central once the emission is applied; `None`
/// for a report of returns outside an emission). After a restore from a backup it may not
/// until the remote reports applying a return made since (`acks`, recorded here), and then
/// only for emissions made after that: before, the remote believed central holds what the
/// restore lost.
fn trusts_coverage(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    remote: SiteId,
    acks: &[ReturnAck],
    emission: Option<u64>,
) -> Result<bool> {
    let Some(first) = local::get::<u64>(tx, local::RESTORED)? else {
        return Ok(true);
    };
    let mut key = local::RESTORE_CONFIRMED.to_vec();
    key.extend_from_slice(&remote.0.to_be_bytes());
    // The emissions after this number were made knowing what the restored central holds.
    let after = match local::get::<u64>(tx, &key)? {
        Some(after) => after,
        None if acks.iter().any(|a| !a.refused && a.id.seq >= first) => {
            let received: RemoteRecord = local::get(tx, &remote_key(remote))?.unwrap_or_default();
            let after = emission.map_or(received.last_emission_seq, |s| s.saturating_sub(1));
            local::put(tx, &key, &after)?;
            after
        }
        None => return Ok(false),
    };
    Ok(emission.is_none_or(|s| s > after))
}

/// After a restore: `remote` has sent back, in a trusted emission, what it had. Once every
/// remote has, central stops taking its own lost commits from them (a remote could otherwise
/// write as central) and the restore is over.
fn restore_relayed(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    remote: SiteId,
    remotes: &[SiteId],
) -> Result<()> {
    if local::get::<u64>(tx, local::RESTORED)?.is_none() {
        return Ok(());
    }
    let key = |prefix: &[u8], site: SiteId| {
        let mut k = prefix.to_vec();
        k.extend_from_slice(&site.0.to_be_bytes());
        k
    };
    local::put(tx, &key(local::RESTORE_RELAYED, remote), &())?;
    for site in remotes {
        if tx.local_get(&key(local::RESTORE_RELAYED, *site))?.is_none() {
            return Ok(());
        }
    }
    tx.forget_lost_own()?;
    tx.local_remove(local::RESTORED)?;
    local::remove_all(tx, local::RESTORE_CONFIRMED)?;
    local::remove_all(tx, local::RESTORE_RELAYED)
}

/// What central holds of `remote`'s own changes: the acknowledgement a transport with a reply
/// channel (the network) sends back after an upload, so that a remote that gets no return (M3)
/// stops re-sending what central has.
pub fn acknowledgement(store: &Store, remote: SiteId) -> Knowledge {
    store.knowledge().only(remote)
}

/// Marks the start of an emission's processing: execution start and count (J1). A processing
/// cut off after this (a crash) shows as a second execution when it is redone.
pub fn begin_processing(store: &Store, id: FlowId) -> Result<()> {
    let now = store.now_ms();
    local::write(store, |tx| {
        let mut row = crate::journal::get(tx, id)?.ok_or(Error::UnknownFlow(id))?;
        // A start after a start that never ended, and did not fail: the one before was cut off
        // (a stop or a crash). Retries of an emission whose processing fails are not that.
        let cut_off = row.exec_start_ms.is_some()
            && row.exec_end_ms.is_none()
            && !crate::monitor_records::failed(tx, id)?;
        row.executions += 1;
        row.exec_start_ms = Some(now);
        row.exec_end_ms = None;
        if cut_off {
            crate::monitor_records::record_event(
                tx,
                &crate::monitor_records::Event {
                    kind: crate::monitor_records::EventKind::ExecutedAgain,
                    at_ms: now,
                    site: row.site,
                    flow: id,
                    text: format!(
                        "processing of emission {id} started again (execution {}): the one \
                         before was cut off (a stop or a crash) and is redone whole",
                        row.executions
                    ),
                },
            )?;
        }
        crate::journal::put(tx, &row)
    })
}

/// Processes every file-ready emission not yet processed (including one whose processing was
/// cut off), in the order received. An emission that cannot be applied (its content is refused)
/// keeps its error in the journal and stays pending; the others are processed all the same. A
/// failure of the store itself stops the run.
pub fn process_ready(store: &Store) -> Result<Vec<Processed>> {
    check_central(store)?;
    let pending = pending_emissions(store)?;
    let mut out = Vec::new();
    for id in pending {
        match process(store, id) {
            Ok(p) => out.push(p),
            Err(e) if e.is_the_flows() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Processes one emission: one write transaction applies it with the guards keyed on the site
/// that sent it, freezes the documents received from their creator (R6), records refusals for
/// the next return, the acknowledgements of returns, and the journal's end of execution.
///
/// An emission with a change stamped further ahead of central's clock than the store's bound
/// (and not already known) is held instead: nothing of it is applied, it stays pending, and its
/// journal row says so — the alert for the person responsible. Being held is no execution: the
/// row's count and start are put back. A held emission is not tried again, even once time has
/// caught up with its stamps: its site may have stamped its changes again meanwhile
/// (`remote::restamp`), and the old stamps must then never be applied anywhere. It is
/// superseded instead by the next emission of its site that central processes, which carries
/// everything it did (emissions are cumulative) with the stamps as they are then.
pub fn process(store: &Store, id: FlowId) -> Result<Processed> {
    let before = crate::journal::row(store, id)?.ok_or(Error::UnknownFlow(id))?;
    if let Hold::Quarantined { reason } = &before.hold {
        return Err(Error::Quarantined(reason.clone()));
    }
    begin_processing(store, id)?;
    match finish_processing(store, id) {
        Ok(p) => Ok(p),
        Err(e) => {
            let text = e.to_string();
            let held = match &e {
                Error::Quarantined(reason) => Some(reason.clone()),
                _ => None,
            };
            local::write(store, |tx| {
                if let Some(mut row) = crate::journal::get(tx, id)? {
                    row.error = Some(text.clone());
                    if held.is_none() {
                        crate::monitor_records::set_failed(tx, id, true)?;
                    }
                    if let Some(reason) = held.clone() {
                        row.hold = Hold::Quarantined { reason };
                        row.executions = before.executions;
                        row.exec_start_ms = before.exec_start_ms;
                        row.exec_end_ms = before.exec_end_ms;
                        crate::monitor_records::record_event(
                            tx,
                            &crate::monitor_records::Event {
                                kind: crate::monitor_records::EventKind::Quarantined,
                                at_ms: store.now_ms(),
                                site: row.site,
                                flow: id,
                                text: format!("emission {id} {text}"),
                            },
                        )?;
                    }
                    crate::journal::put(tx, &row)?;
                }
                Ok(())
            })?;
            Err(e)
        }
    }
}

/// Takes out of the pending list the emissions of `id`'s site, older than it, held for clock
/// skew: `id` carried everything they did.
fn supersede_held(tx: &mut outpost_engine::WriteTx<'_, '_>, id: FlowId) -> Result<()> {
    for (key, held) in local::tx_all::<FlowId>(tx, local::PENDING)? {
        if held.site != id.site || held.seq >= id.seq {
            continue;
        }
        let Some(mut row) = crate::journal::get(tx, held)? else {
            continue;
        };
        if !matches!(row.hold, Hold::Quarantined { .. }) {
            continue;
        }
        row.hold = Hold::Superseded;
        row.error = Some(format!(
            "superseded by emission {id} while held for clock skew: never applied; its \
             changes came again in that emission"
        ));
        crate::journal::put(tx, &row)?;
        tx.local_remove(&key)?;
    }
    Ok(())
}

/// The reason to hold `change` from the site `code`, if it is stamped beyond the bound ahead of
/// central's clock and central does not know it already.
fn quarantine_reason(
    store: &Store,
    tx: &outpost_engine::WriteTx<'_, '_>,
    code: &str,
    change: &outpost_engine::Change,
) -> Option<String> {
    let ahead = store.ahead_ms(change.stamp);
    if ahead <= store.skew_ms_max() || tx.knowledge().contains(change.dot) {
        return None;
    }
    Some(format!(
        "{code}'s changes are stamped {} ahead of central's clock (the bound is {}): its clock \
         is probably wrong. Nothing of this emission was applied; it is held until {code}'s \
         clock is set right and `outpost remote restamp` has run there",
        human_ms(ahead),
        human_ms(store.skew_ms_max())
    ))
}

/// A duration for people: 3.0 d, 4.5 h, 5 min, 40 s.
fn human_ms(ms: u64) -> String {
    let f = ms as f64;
    match ms {
        86_400_000.. => format!("{:.1} d", f / 86_400_000.0),
        3_600_000.. => format!("{:.1} h", f / 3_600_000.0),
        60_000.. => format!("{} min", ms / 60_000),
        _ => format!("{} s", ms / 1_000),
    }
}

fn finish_processing(store: &Store, id: FlowId) -> Result<Processed> {
    let row = crate::journal::row(store, id)?.ok_or(Error::UnknownFlow(id))?;
    let receipt = row.receipt.ok_or(Error::UnknownFlow(id))?;
    // The sender is the site the journal recorded at receipt (authenticated when the transport
    // could), never re-read from the file.
    let sender = row.site;
    let mut reader = FlowReader::open(StoredFlow::open(store, receipt)?)?;
    let header = reader.header().clone();
    let now = store.now_ms();
    let schema = store.schema().clone();
    let sites = store.sites();
    let code = sites
        .get(sender)
        .map_or_else(|| sender.to_string(), |s| s.code.to_string());
    let remotes: Vec<SiteId> = sites
        .iter()
        .filter(|s| !s.is_central())
        .map(|s| s.id)
        .collect();
    let report = local::write(store, |tx| {
        let mut report = MergeReport::default();
        // Documents received from their creator, frozen once the whole flow is applied (a
        // document's creation and its fields arrive in the same flow).
        let mut to_freeze: BTreeSet<(String, String)> = BTreeSet::new();
        let trusted = trusts_coverage(tx, sender, &header.acks, Some(id.seq))?;
        let mut carried = Knowledge::new();
        while let Some(item) = reader.next_item_lacking(tx.knowledge())? {
            let IncomingItem::Changes(changes) = item else {
                return Err(Error::Refused("an emission carries no rejections".into()));
            };
            for incoming in changes {
                let change = match incoming {
                    Incoming::New(c) => c,
                    // Already merged (an emission carrying again what the remote sent before
                    // its last return arrived): counted, nothing else to do.
                    Incoming::Known(_) => {
                        tx.already_had(sender, &mut report)?;
                        continue;
                    }
                };
                if !trusted {
                    carried.insert(change.dot);
                }
                if let Some(reason) = quarantine_reason(store, tx, &code, &change) {
                    return Err(Error::Quarantined(reason));
                }
                let is_doc = schema.table(&change.table).is_some_and(|t| t.is_document());
                let doc = (is_doc && change.created.site() == sender)
                    .then(|| (change.table.clone(), change.key.clone()));
                let outcome = tx.apply_change(sender, change, &mut report)?;
                // Not for a change already had: frozen when it first came, if it was accepted
                // (a refused creation may be known and have no document to freeze).
                if let Some(doc) = doc
                    && matches!(outcome, Outcome::Applied | Outcome::Superseded)
                {
                    to_freeze.insert(doc);
                }
            }
        }
        // R6: a document received from its creator is frozen for it here too.
        for (table, key) in &to_freeze {
            tx.freeze(table, key)?;
        }
        tx.add_knowledge(sender, if trusted { &header.covered } else { &carried })?;
        if trusted {
            restore_relayed(tx, sender, &remotes)?;
        }
        let rkey = remote_key(sender);
        let mut rec: RemoteRecord = local::get(tx, &rkey)?.unwrap_or_default();
        // What the site knows, for its next return — unless this emission's store was replaced
        // by a reprovisioning since it arrived: the new store knows only its bootstrap and its
        // own emissions, and must get these changes back (R1).
        if !crate::incarnation::is_superseded(tx, &header)? {
            rec.knowledge = header.knowledge.clone();
        }
        rec.unanswered.push(id);
        rec.rejections
            .extend(report.refusals.iter().map(|(_, r)| (r.clone(), None)));
        apply_acks(tx, &mut rec, &header.acks)?;
        local::put(tx, &rkey, &rec)?;
        let mut row = crate::journal::get(tx, id)?.ok_or(Error::UnknownFlow(id))?;
        row.exec_end_ms = Some(now);
        row.n_changes = reader.n_changes();
        row.n_rejections = report.refusals.len() as u64;
        crate::journal::put(tx, &row)?;
        crate::monitor_records::log_rejections(tx, id, &report.refusals)?;
        if !report.refusals.is_empty() {
            crate::monitor_records::record_event(
                tx,
                &crate::monitor_records::Event {
                    kind: crate::monitor_records::EventKind::Rejections,
                    at_ms: now,
                    site: sender,
                    flow: id,
                    text: rejections_text(&code, id, &report.refusals),
                },
            )?;
        }
        tx.local_remove(&pending_key(receipt))?;
        crate::monitor_records::set_failed(tx, id, false)?;
        supersede_held(tx, id)?;
        Ok(report)
    })?;
    Ok(Processed { id, report })
}

/// Records what a remote reported of the returns it received (J1: execution start and end,
/// refused by remote), and forgets the refusals that an applied return carried.
fn apply_acks(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    rec: &mut RemoteRecord,
    acks: &[ReturnAck],
) -> Result<()> {
    for ack in acks {
        if let Some(mut row) = crate::journal::get(tx, ack.id)? {
            // The same report can arrive twice (over the network right after applying, then
            // with the next emission): it counts once.
            if row.exec_start_ms == Some(ack.start_ms)
                && row.exec_end_ms == Some(ack.end_ms)
                && row.refused_by_remote == ack.refused
            {
                continue;
            }
            row.exec_start_ms = Some(ack.start_ms);
            row.exec_end_ms = Some(ack.end_ms);
            row.executions += 1;
            row.refused_by_remote = ack.refused;
            if let Some(reason) = &ack.reason {
                row.error = Some(reason.clone());
            }
            crate::journal::put(tx, &row)?;
            ack_events(tx, &row, ack)?;
        }
        if !ack.refused {
            rec.rejections
                .retain(|(_, sent)| sent.is_none_or(|s| s > ack.id.seq));
        }
    }
    Ok(())
}

/// What the monitor keeps of one report of a return: the remote's newest applied return, and
/// the events worth an alert.
fn ack_events(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    row: &JournalRow,
    ack: &ReturnAck,
) -> Result<()> {
    use crate::monitor_records::{Event, EventKind, record_event};
    if !ack.refused {
        crate::monitor_records::saw_return_applied(
            tx,
            row.site,
            ack.id,
            row.file_ready_ms.unwrap_or(ack.start_ms),
            ack.end_ms,
        )?;
    }
    if ack.refused {
        record_event(
            tx,
            &Event {
                kind: EventKind::RefusedByRemote,
                at_ms: ack.end_ms,
                site: row.site,
                flow: ack.id,
                text: format!(
                    "return {} was refused by its remote: {}",
                    ack.id,
                    ack.reason.as_deref().unwrap_or("no reason given")
                ),
            },
        )?;
    }
    if row.executions > 1 {
        record_event(
            tx,
            &Event {
                kind: EventKind::ExecutedAgain,
                at_ms: ack.end_ms,
                site: row.site,
                flow: ack.id,
                text: format!(
                    "return {} was applied again by its remote (execution {})",
                    ack.id, row.executions
                ),
            },
        )?;
    }
    Ok(())
}

/// An emission's refused changes in one line: how many, by rule.
fn rejections_text(code: &str, id: FlowId, refusals: &[(usize, Rejection)]) -> String {
    let mut by_rule: BTreeMap<String, usize> = BTreeMap::new();
    for (_, r) in refusals {
        *by_rule.entry(r.refusal.rule.to_string()).or_default() += 1;
    }
    let rules: Vec<String> = by_rule.iter().map(|(r, n)| format!("{r} ×{n}")).collect();
    format!(
        "{} change(s) of {code} refused in emission {id} ({}): they go back to {code} with \
         central's values in its next return",
        refusals.len(),
        rules.join(", ")
    )
}

/// Records a remote's reports of the returns it received, as soon as it made them (over the
/// network, right after applying) instead of with its next emission. Only reports of returns
/// addressed to `remote` are taken: a site cannot report on another's returns.
pub fn record_acks(store: &Store, remote: SiteId, acks: &[ReturnAck]) -> Result<()> {
    check_central(store)?;
    local::write(store, |tx| {
        let key = remote_key(remote);
        let mut rec: RemoteRecord = local::get(tx, &key)?
            .ok_or(Error::Engine(outpost_engine::Error::UnknownSite(remote)))?;
        for ack in acks {
            let row = crate::journal::get(tx, ack.id)?;
            match row {
                Some(r) if r.kind == FlowKind::Return && r.site == remote => {}
                _ => {
                    return Err(Error::Refused(format!(
                        "{} is not a return of {remote}",
                        ack.id
                    )));
                }
            }
        }
        trusts_coverage(tx, remote, acks, None)?;
        apply_acks(tx, &mut rec, acks)?;
        local::put(tx, &key, &rec)
    })
}

/// Stores the digest of a site's network credential (the secret itself is never kept). The
/// central site's own credential is the administrator's.
pub fn set_credential_digest(store: &Store, site: SiteId, digest: &[u8]) -> Result<()> {
    check_central(store)?;
    if store.sites().get(site).is_none() {
        return Err(Error::Engine(outpost_engine::Error::UnknownSite(site)));
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

/// What a return (or bootstrap) held.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Built {
    /// The flow.
    pub id: FlowId,
    /// The emission it answers (J1 link).
    pub link: Option<FlowId>,
    /// Changes written.
    pub n_changes: u64,
    /// Refused changes sent back.
    pub n_rejections: u64,
    /// Its size (uncompressed).
    pub bytes: u64,
}

/// Builds the return for one remote — right after processing (M2), or at the common return
/// time for each deferred remote (M1; the automaton decides when). It holds everything that
/// remote lacks, other remotes' changes included, central's knowledge, the remote's
/// configuration and its refused changes with central's registers for them. Its cost follows
/// what the remote lacks. The journal gets the return's row; the emission it answers gets its
/// link, and earlier unanswered emissions keep link 0 (J2).
pub fn build_return<W: Write>(
    store: &Store,
    remote: SiteId,
    out: W,
    compress: bool,
) -> Result<(W, Built)> {
    write_for_remote(store, remote, FlowKind::Return, out, compress, None, None)
}

/// Writes the bootstrap file of a remote created with [`create_remote`]: the full copy it needs
/// and its configuration. Streamed from one snapshot.
pub fn write_bootstrap<W: Write>(
    store: &Store,
    remote: SiteId,
    out: W,
    compress: bool,
) -> Result<(W, Built)> {
    write_bootstrap_with(store, remote, out, compress, &BTreeMap::new())
}

/// Starts a new provisioning of a remote whose store was lost, or set up twice (R1: see
/// [`crate::incarnation`]): every store set up from an earlier bootstrap of the site is refused
/// from now on, and the next bootstrap written ([`write_bootstrap`]) sets up the one that
/// speaks for it, numbering its commits past every one central knows of the site. Returns the
/// provisioning's number.
pub fn reprovision(store: &Store, remote: SiteId) -> Result<u32> {
    check_central(store)?;
    match store.sites().get(remote) {
        Some(s) if !s.is_central() => {}
        _ => return Err(Error::Engine(outpost_engine::Error::UnknownSite(remote))),
    }
    local::write(store, |tx| {
        // The new store will know what its bootstrap carries: all central holds now.
        let rkey = remote_key(remote);
        let mut rec: RemoteRecord = local::get(tx, &rkey)?.unwrap_or_default();
        rec.knowledge = tx.knowledge().clone();
        local::put(tx, &rkey, &rec)?;
        crate::incarnation::start_provisioning(tx, remote)
    })
}

/// [`write_bootstrap`], with settings for the remote's first start only (its network
/// credential, central's address) added to the configuration it carries; central does not keep
/// them and returns never carry them.
pub fn write_bootstrap_with<W: Write>(
    store: &Store,
    remote: SiteId,
    out: W,
    compress: bool,
    first_start: &BTreeMap<String, String>,
) -> Result<(W, Built)> {
    let mut rec: RemoteRecord = local::snap_get(&store.snapshot()?, &remote_key(remote))?
        .ok_or(Error::Engine(outpost_engine::Error::UnknownSite(remote)))?;
    rec.settings
        .extend(first_start.iter().map(|(k, v)| (k.clone(), v.clone())));
    let provisioning = local::write(store, |tx| crate::incarnation::provisioning(tx, remote))?;
    rec.settings.insert(
        crate::incarnation::PROVISIONING_SETTING.to_owned(),
        provisioning.to_string(),
    );
    // A store set up again numbers its emissions past those of the stores before it.
    rec.settings.insert(
        crate::incarnation::FIRST_EMISSION_SETTING.to_owned(),
        (rec.last_emission_seq + 1).to_string(),
    );
    write_for_remote(
        store,
        remote,
        FlowKind::Bootstrap,
        out,
        compress,
        None,
        Some(rec),
    )
}

/// A return or a bootstrap: everything the remote lacks (for a bootstrap: everything), with its
/// configuration, then the journal row.
fn write_for_remote<W: Write>(
    store: &Store,
    remote: SiteId,
    kind: FlowKind,
    out: W,
    compress: bool,
    receipt: Option<u64>,
    record: Option<RemoteRecord>,
) -> Result<(W, Built)> {
    check_central(store)?;
    let is_return = kind == FlowKind::Return;
    let snap = store.snapshot()?;
    let rec: RemoteRecord = match record {
        Some(r) => r,
        None => local::snap_get(&snap, &remote_key(remote))?
            .ok_or(Error::Engine(outpost_engine::Error::UnknownSite(remote)))?,
    };
    let seq: u64 = local::snap_get(&snap, local::RETURN_SEQ)?.unwrap_or(0) + 1;
    let id = FlowId {
        site: store.site().id,
        seq,
    };
    let link = if is_return {
        rec.unanswered.iter().max().copied()
    } else {
        None
    };
    let mode = match (is_return, link) {
        (false, _) => SyncMode::Provisioning,
        (true, Some(e)) => crate::journal::row(store, e)?.map_or(SyncMode::Deferred, |r| r.mode),
        (true, None) => SyncMode::Deferred,
    };
    let peer = if is_return {
        rec.knowledge.clone()
    } else {
        Knowledge::new()
    };
    let mut lacking = store.changes_lacking(&peer, true)?;
    let header = FlowHeader {
        id,
        kind,
        source: store.site().id,
        target: remote,
        mode,
        link,
        knowledge: lacking.knowledge().clone(),
        covered: lacking.covered_up_front()?,
        schema_fingerprint: store.schema().fingerprint(),
        created_stamp: store.clock_high_water(),
        created_wall_ms: store.now_ms(),
        acks: Vec::new(),
        config: Some(config_for(store, &rec)?),
    };
    let mut writer = FlowWriter::new(out, &header, compress)?;
    for change in lacking.by_ref() {
        writer.push_change(change?)?;
    }
    let returned: Vec<ReturnedRejection> = if is_return {
        rec.rejections
            .iter()
            .map(|(r, _)| {
                Ok(ReturnedRejection {
                    rejection: r.clone(),
                    central: central_register(&snap, r)?,
                })
            })
            .collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    writer.push_rejections(&returned)?;
    let (out, n_changes, bytes) = writer.finish()?;
    let n_rejections = returned.len() as u64;
    let now = store.now_ms();
    local::write(store, |tx| {
        local::put(tx, local::RETURN_SEQ, &seq)?;
        if is_return {
            let rkey = remote_key(remote);
            let mut rec: RemoteRecord = local::get(tx, &rkey)?.unwrap_or_default();
            for (_, sent) in rec.rejections.iter_mut() {
                *sent = Some(seq);
            }
            rec.unanswered.clear();
            if let Some(receipt) = receipt
                && let Some((old_id, old_receipt)) = rec.latest_return.replace((id, receipt))
            {
                // A remote downloads only its newest return, which carries everything the
                // superseded one did: drop the superseded one's bytes.
                remove_chunks(tx, old_receipt)?;
                if let Some(mut orow) = crate::journal::get(tx, old_id)? {
                    orow.receipt = None;
                    crate::journal::put(tx, &orow)?;
                }
            }
            local::put(tx, &rkey, &rec)?;
        }
        if let Some(e) = link
            && let Some(mut erow) = crate::journal::get(tx, e)?
        {
            erow.link = Some(id);
            crate::journal::put(tx, &erow)?;
        }
        let mut row = JournalRow::new(id, kind, remote, mode);
        row.link = link;
        row.file_ready_ms = Some(now);
        row.n_changes = n_changes;
        row.n_rejections = n_rejections;
        row.bytes = bytes;
        row.receipt = receipt;
        crate::monitor_records::index_row(tx, now, id)?;
        crate::monitor_records::saw_made(tx, remote, id, kind, now)?;
        crate::journal::put(tx, &row)
    })?;
    Ok((
        out,
        Built {
            id,
            link,
            n_changes,
            n_rejections,
            bytes,
        },
    ))
}

/// Central's register for the place a refused change targeted (none if central has none).
fn central_register(snap: &Snapshot, r: &Rejection) -> Result<Option<outpost_engine::Register>> {
    Ok(snap
        .raw_record(&r.change.table, &r.change.key)?
        .and_then(|raw| match &r.change.slot {
            Slot::Created => Some(outpost_engine::Register {
                value: outpost_engine::Value::Null,
                stamp: raw.created.stamp,
                dot: raw.created.dot,
            }),
            Slot::Tombstone => raw.tombstone.clone(),
            Slot::Field(f) => raw.fields.get(f).cloned(),
        }))
}

//! A remote's side: initialise from a bootstrap, emit, apply a return, keep the log, the
//! configuration (C6) and the changes central refused.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};

use outpost_engine::{Knowledge, MergeReport, Site, SiteId, Stamp, Store, TableDef};
use serde::{Deserialize, Serialize};

use crate::flow::{
    ConfigSnapshot, FlowHeader, FlowId, FlowKind, FlowReader, FlowWriter, Incoming, IncomingItem,
    Item, ReturnAck, ReturnedRejection, SyncMode,
};
use crate::incarnation::{
    self, FIRST_COMMIT_SETTING, FIRST_EMISSION_SETTING, NUMBERED_FROM_SETTING, PREV_SETTING,
    PROVISIONING_SETTING, REPROVISION_SEQ_JUMP, STORE_SETTING, StoreIdentity, prev_setting,
};
use crate::local;
use crate::{Error, Result};

/// This store's identity (see [`crate::incarnation`]); a store set up before identities
/// existed draws one now, once.
pub fn own_identity(store: &Store) -> Result<StoreIdentity> {
    if let Some(ident) = local::snap_get(&store.snapshot()?, local::REMOTE_IDENTITY)? {
        return Ok(ident);
    }
    let site = store.site().id;
    let now = store.now_ms();
    local::write(store, |tx| {
        if let Some(ident) = incarnation::own(tx)? {
            return Ok(ident);
        }
        let st = state(tx)?;
        let ident = StoreIdentity {
            provisioning: 0,
            id: incarnation::derived_id(site, st.next_seq, now),
        };
        incarnation::set_own(tx, &ident)?;
        Ok(ident)
    })
}

/// Records that the site's fixed-time emission of the day was made at `at_ms` (M1: a new
/// executor, after a restart, does not make it again that day). A manual emission (a file, S4)
/// is not one.
pub fn note_fixed_emission(store: &Store, at_ms: u64) -> Result<()> {
    local::write(store, |tx| {
        local::put(tx, local::REMOTE_FIXED_EMISSION, &at_ms)
    })
}

/// When the site's fixed-time emission was last made, if this store has recorded one.
pub fn last_fixed_emission(store: &Store) -> Result<Option<u64>> {
    local::snap_get(&store.snapshot()?, local::REMOTE_FIXED_EMISSION)
}

/// What a remote keeps about its syncs.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RemoteState {
    /// The central site.
    central: SiteId,
    /// Central's knowledge as its latest return reported it.
    central_knowledge: Knowledge,
    /// The next emission's sequence number.
    next_seq: u64,
    /// The highest return applied (0: none yet; the bootstrap's sequence after provisioning).
    last_return_seq: u64,
    /// Returns received since the last emission, to report with the next one.
    acks: Vec<ReturnAck>,
    /// The settings in force: central's, or a local admin's edits until the next return (C6).
    settings: BTreeMap<String, String>,
}

/// One row of a remote's own log.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LogRow {
    /// The flow.
    pub id: FlowId,
    /// Emission sent, or return (or bootstrap) received.
    pub kind: FlowKind,
    /// The sync type.
    pub mode: SyncMode,
    /// When (local wall time, UTC ms).
    pub at_ms: u64,
    /// Changes in the flow.
    pub n_changes: u64,
    /// Its size.
    pub bytes: u64,
    /// What happened: `emitted`, `applied`, `refused: …`, `already applied`.
    pub outcome: String,
}

fn state(tx: &outpost_engine::WriteTx<'_, '_>) -> Result<RemoteState> {
    local::get(tx, local::REMOTE_STATE)?
        .ok_or_else(|| Error::Refused("this store was not provisioned as a remote".into()))
}

fn log(tx: &mut outpost_engine::WriteTx<'_, '_>, row: &LogRow) -> Result<()> {
    local::put(tx, &local::flow_key(local::REMOTE_LOG, row.id), row)
}

fn apply_config(tx: &mut outpost_engine::WriteTx<'_, '_>, config: &ConfigSnapshot) -> Result<()> {
    add_sites(tx, config)?;
    set_denied(tx, config)
}

/// The sites a configuration names (a return's changes may come from a site this remote has
/// not heard of yet).
fn add_sites(tx: &mut outpost_engine::WriteTx<'_, '_>, config: &ConfigSnapshot) -> Result<()> {
    for site in &config.sites {
        tx.add_site(site.clone())?;
    }
    Ok(())
}

/// The permissions a configuration sets (R4/R9).
fn set_denied(tx: &mut outpost_engine::WriteTx<'_, '_>, config: &ConfigSnapshot) -> Result<()> {
    let denied: BTreeMap<SiteId, &Vec<String>> =
        config.denied.iter().map(|(s, t)| (*s, t)).collect();
    for site in &config.sites {
        let tables: BTreeSet<String> = denied
            .get(&site.id)
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        tx.set_denied_tables(site.id, tables)?;
    }
    Ok(())
}

/// Initialises a new remote from its bootstrap file. `open` opens (creates) the remote's store
/// for the site the bootstrap names — the host supplies the directory, schema and clock. The
/// whole copy is applied in one transaction, streamed.
///
/// The store's identity (see [`crate::incarnation`]) is drawn from the bootstrap and the time;
/// a host that has a source of randomness passes one with [`bootstrap_as`].
pub fn bootstrap(
    input: impl Read,
    open: impl FnOnce(&Site) -> outpost_engine::Result<Store>,
) -> Result<Store> {
    bootstrap_as(input, open, None)
}

/// [`bootstrap`], with the store's identity given (random: two stores set up from one
/// bootstrap must not draw the same). Central takes the site's changes from the first store
/// that emits, and refuses any other's.
pub fn bootstrap_as(
    input: impl Read,
    open: impl FnOnce(&Site) -> outpost_engine::Result<Store>,
    store_id: Option<u64>,
) -> Result<Store> {
    let mut reader = FlowReader::open(input)?;
    let header = reader.header().clone();
    if header.kind != FlowKind::Bootstrap {
        return Err(Error::Refused(format!(
            "flow {} is {}, not a bootstrap",
            header.id, header.kind
        )));
    }
    let config = header
        .config
        .clone()
        .ok_or_else(|| Error::Refused("a bootstrap without configuration".into()))?;
    let site = config
        .sites
        .iter()
        .find(|s| s.id == header.target)
        .cloned()
        .ok_or_else(|| Error::Refused("the bootstrap does not describe its target site".into()))?;
    let store = open(&site)?;
    if store.schema().fingerprint() != header.schema_fingerprint {
        return Err(Error::Refused(format!(
            "the bootstrap was made with schema {:016x}; this store's is {:016x}",
            header.schema_fingerprint,
            store.schema().fingerprint()
        )));
    }
    let now = store.now_ms();
    local::write(&store, |tx| {
        if local::get::<RemoteState>(tx, local::REMOTE_STATE)?.is_some() {
            return Err(Error::Refused("this remote is already provisioned".into()));
        }
        apply_config(tx, &config)?;
        let mut report = MergeReport::default();
        // What it holds of each other remote, as after a return: after central's restore from a
        // backup, its emissions say the stamps of the changes central may have lost (`tips`).
        let mut tips = crate::incarnation::Tips::new();
        let mut synced = BTreeSet::new();
        while let Some(item) = reader.next_item()? {
            if let Item::Changes(changes) = item {
                let batch: Vec<Incoming> = changes.into_iter().map(Incoming::New).collect();
                crate::incarnation::note_tips(&mut tips, &batch, [site.id, header.source]);
                own_documents(store.schema(), &batch, site.id, &mut synced);
                tx.apply_batch(header.source, &batch, &mut report)?;
            }
        }
        if !tips.is_empty() {
            local::put(tx, local::REMOTE_TIPS, &tips)?;
        }
        freeze_all(tx, &synced)?;
        tx.add_knowledge(header.source, &header.covered)?;
        // No dot twice: number past every commit of this site central knew of when it wrote
        // the bootstrap — after a reprovisioning, further past what may still be on its way.
        let provisioning: u32 =
            bootstrap_number(&config, PROVISIONING_SETTING, "provisioning number", 0)?;
        let first_emission: u64 =
            bootstrap_number(&config, FIRST_EMISSION_SETTING, "first emission number", 1)?;
        let first_commit: u64 =
            bootstrap_number(&config, FIRST_COMMIT_SETTING, "first commit number", 0)?;
        let own_known = tx.knowledge().max_seq(site.id);
        let jump = if provisioning > 0 {
            REPROVISION_SEQ_JUMP
        } else {
            0
        };
        let id = store_id.unwrap_or_else(|| incarnation::derived_id(site.id, header.id.seq, now));
        // In a block of its own: a second store set up from this bootstrap numbers apart.
        let numbered_from = own_known
            .checked_add(1 + jump)
            .map(|n| n.max(first_commit))
            .and_then(|n| n.checked_add(incarnation::numbering_offset(id)))
            .filter(|n| n.checked_add(incarnation::NUMBERING_BLOCK).is_some())
            .ok_or_else(|| {
                Error::Refused(format!(
                    "site {} has no commit numbers left (it was reprovisioned too often)",
                    site.code
                ))
            })?;
        tx.number_from(numbered_from)?;
        tx.keep_own_stamps()?;
        local::put(tx, local::REMOTE_NUMBERED_FROM, &numbered_from)?;
        // No fixed-time emission made yet (M1; a store from before this key reads its log).
        local::put(tx, local::REMOTE_FIXED_EMISSION, &0u64)?;
        incarnation::set_own(tx, &StoreIdentity { provisioning, id })?;
        local::put(
            tx,
            local::REMOTE_STATE,
            &RemoteState {
                central: header.source,
                central_knowledge: header.knowledge.clone(),
                next_seq: first_emission,
                last_return_seq: header.id.seq,
                acks: Vec::new(),
                settings: config.settings.clone(),
            },
        )?;
        log(
            tx,
            &LogRow {
                id: header.id,
                kind: FlowKind::Bootstrap,
                mode: SyncMode::Provisioning,
                at_ms: now,
                n_changes: reader.n_changes(),
                bytes: 0,
                outcome: format!("applied ({} refused)", report.refused()),
            },
        )
    })?;
    Ok(store)
}

/// Adds to `into` the documents among `changes` (from central) that site `own` created: central
/// holds them, so they were synchronised (R6) — by a store of this site set up before this one
/// (a bootstrap after a reprovisioning), or before the backup this store was put back from.
fn own_documents(
    schema: &outpost_engine::Schema,
    changes: &[Incoming],
    own: SiteId,
    into: &mut BTreeSet<(String, String)>,
) {
    for c in changes {
        let Incoming::New(c) = c else {
            continue;
        };
        if c.created.site() == own && schema.table(&c.table).is_some_and(TableDef::freezes) {
            into.insert((c.table.clone(), c.key.clone()));
        }
    }
}

/// Freezes every document of `docs` (R6).
fn freeze_all(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    docs: &BTreeSet<(String, String)>,
) -> Result<()> {
    for (table, key) in docs {
        tx.freeze(table, key)?;
    }
    Ok(())
}

/// What an emission held.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Emitted {
    /// The flow.
    pub id: FlowId,
    /// Changes written.
    pub n_changes: u64,
    /// Its size (uncompressed).
    pub bytes: u64,
    /// Documents frozen by this emission (R6).
    pub frozen: u64,
    /// Commits held back because their documents are reserved (R7).
    pub held_back: u64,
}

/// Writes an emission: every change central lacks, by central's knowledge as last reported,
/// except those of documents reserved now (R7: they go with the first emission after release).
/// The documents it carries that this site created become frozen (R6); the emission is logged.
pub fn emit<W: Write>(
    store: &Store,
    out: W,
    mode: SyncMode,
    compress: bool,
) -> Result<(W, Emitted)> {
    let snap = store.snapshot()?;
    let st: RemoteState = local::snap_get(&snap, local::REMOTE_STATE)?
        .ok_or_else(|| Error::Refused("this store was not provisioned as a remote".into()))?;
    let id = FlowId {
        site: store.site().id,
        seq: st.next_seq,
    };
    let ident = own_identity(store)?;
    let mut lacking = store.changes_lacking(&st.central_knowledge, true)?;
    let held_back = lacking.held_back()?;
    // The deployment it belongs to, for central to refuse a file of another one, and the store
    // that made it, for central to refuse a store that does not speak for this site.
    let mut settings = BTreeMap::from([(STORE_SETTING.to_owned(), ident.to_setting())]);
    let prev: Option<(u64, Stamp)> = local::snap_get(&snap, local::REMOTE_PREV_EMISSION)?;
    if let Some((seq, stamp)) = prev {
        settings.insert(PREV_SETTING.to_owned(), prev_setting(seq, stamp));
    }
    settings.insert(
        crate::incarnation::RULES_SETTING.to_owned(),
        "R2".to_owned(),
    );
    let settled = store.settled_high();
    if settled != Stamp::ZERO {
        settings.insert(
            crate::incarnation::SETTLED_SETTING.to_owned(),
            settled.as_u64().to_string(),
        );
    }
    let tips: Option<crate::incarnation::Tips> = local::snap_get(&snap, local::REMOTE_TIPS)?;
    if let Some(tips) = tips.filter(|t| !t.is_empty()) {
        settings.insert(
            crate::incarnation::TIPS_SETTING.to_owned(),
            crate::incarnation::tips_setting(&tips, lacking.knowledge()),
        );
    }
    // Own commits of which no change travels: their stamps do (central's check after its
    // restore).
    let mut unsent = lacking.own_commits_unsent(&st.central_knowledge, &held_back)?;
    unsent.truncate(crate::incarnation::UNSENT_MAX);
    if !unsent.is_empty() {
        settings.insert(
            crate::incarnation::UNSENT_SETTING.to_owned(),
            crate::incarnation::unsent_setting(&unsent),
        );
    }
    // The newest return (or bootstrap) applied: its acknowledgement travels once only.
    if st.last_return_seq > 0 {
        settings.insert(
            crate::central::APPLIED_SETTING.to_owned(),
            st.last_return_seq.to_string(),
        );
    }
    let numbered_from: Option<u64> = local::snap_get(&snap, local::REMOTE_NUMBERED_FROM)?;
    if let Some(from) = numbered_from {
        settings.insert(NUMBERED_FROM_SETTING.to_owned(), from.to_string());
    }
    let created_stamp = store.clock_high_water();
    if let Some(d) = st.settings.get(crate::central::DEPLOYMENT_SETTING) {
        settings.insert(crate::central::DEPLOYMENT_SETTING.to_owned(), d.clone());
    }
    // The documents held reserved here (R7), for central's monitor (issue 21).
    settings.insert(
        crate::monitor_records::RESERVED_SETTING.to_owned(),
        snap.reservations()?.len().to_string(),
    );
    let header = FlowHeader {
        id,
        kind: FlowKind::Emission,
        source: store.site().id,
        target: st.central,
        mode,
        link: None,
        knowledge: lacking.knowledge().clone(),
        covered: lacking.knowledge().difference(&held_back),
        schema_fingerprint: store.schema().fingerprint(),
        created_stamp,
        created_wall_ms: store.now_ms(),
        acks: st.acks.clone(),
        config: Some(ConfigSnapshot {
            settings,
            ..ConfigSnapshot::default()
        }),
    };
    let own = store.site().id;
    let mut docs: BTreeSet<(String, String)> = BTreeSet::new();
    let mut writer = FlowWriter::new(out, &header, compress)?;
    for change in lacking.by_ref() {
        let change = change?;
        let freezes = store
            .schema()
            .table(&change.table)
            .is_some_and(TableDef::is_document);
        if freezes && change.created.site() == own {
            docs.insert((change.table.clone(), change.key.clone()));
        }
        writer.push_change(change)?;
    }
    let (out, n_changes, bytes) = writer.finish()?;
    let now = store.now_ms();
    let acked = st.acks.len();
    let frozen = local::write(store, |tx| {
        // A store set up by an earlier version keeps its commits' stamps from now on.
        tx.keep_own_stamps()?;
        let mut st = state(tx)?;
        // Numbered when it began: an emission recorded meanwhile (made on a host program's
        // other thread) took this number — central would count this one a duplicate, and the
        // reports it carries would be dropped here as sent. Refused, nothing kept.
        if st.next_seq > id.seq {
            return Err(Error::NumberTaken(id.seq));
        }
        st.next_seq = id.seq + 1;
        local::put(tx, local::REMOTE_PREV_EMISSION, &(id.seq, created_stamp))?;
        // Reports made in this emission are not repeated in the next.
        st.acks.drain(..acked.min(st.acks.len()));
        local::put(tx, local::REMOTE_STATE, &st)?;
        let mut frozen = 0;
        for (table, key) in &docs {
            if tx.freeze(table, key)? {
                frozen += 1;
            }
        }
        log(
            tx,
            &LogRow {
                id,
                kind: FlowKind::Emission,
                mode,
                at_ms: now,
                n_changes,
                bytes,
                outcome: "emitted".into(),
            },
        )?;
        Ok(frozen)
    })?;
    Ok((
        out,
        Emitted {
            id,
            n_changes,
            bytes,
            frozen,
            held_back: held_back.count(),
        },
    ))
}

/// A number a bootstrap's settings carry under `key` (`default` when absent); a malformed one
/// is refused, naming `what`.
fn bootstrap_number<T: std::str::FromStr>(
    config: &ConfigSnapshot,
    key: &str,
    what: &str,
    default: T,
) -> Result<T> {
    match config.settings.get(key) {
        None => Ok(default),
        Some(n) => n
            .parse::<T>()
            .map_err(|_| Error::Refused(format!("the bootstrap's {what} {n:?} is not a number"))),
    }
}

/// What applying a return did.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    /// Applied whole.
    Applied {
        /// The return.
        id: FlowId,
        /// The merge's outcomes.
        report: MergeReport,
        /// Refused changes of this site put back to central's values.
        reverted: u64,
        /// Anything worth reporting about this return.
        note: Option<String>,
    },
    /// Already applied: not applied again.
    AlreadyApplied(FlowId),
    /// Older than a return already applied: refused, and reported to central with the next
    /// emission ("refused by remote", J1).
    RefusedStale {
        /// The return.
        id: FlowId,
        /// The newest return applied.
        newest: u64,
    },
    /// Made for another store of this site (one this store replaced): refused, and reported
    /// to central with the next emission ("refused by remote", J1).
    RefusedOtherStore {
        /// The return.
        id: FlowId,
    },
}

/// Applies a return, atomically: its changes, its knowledge, its configuration (overwriting
/// local admin edits, C6), and the changes of this site central refused — put back to central's
/// values and kept for the host application to show. A damaged file changes nothing.
pub fn apply_return(store: &Store, input: impl Read) -> Result<Applied> {
    let mut reader = FlowReader::open(input)?;
    let header = reader.header().clone();
    let own = store.site().id;
    let snap_state = check_return(store, &header)?;
    let now = store.now_ms();
    let seq = header.id.seq;
    if seq == snap_state.last_return_seq {
        return Ok(Applied::AlreadyApplied(header.id));
    }
    if seq < snap_state.last_return_seq {
        return refuse_stale(store, &header, now, snap_state.last_return_seq);
    }
    // Made for another store of this site (one this store replaced, a file carried in late):
    // its knowledge is that store's, not this one's.
    if let Some(made_for) = header
        .config
        .as_ref()
        .and_then(|c| c.settings.get(incarnation::FOR_STORE_SETTING))
        .and_then(|t| StoreIdentity::parse(t))
    {
        let this = own_identity(store)?;
        if made_for != this {
            let reason = format!(
                "return {} was made for {made_for} of {}, not this {this}: a file made before \
                 this store was set up; the next return is this store's",
                header.id,
                store.site().code
            );
            return refuse_return(store, &header, now, reason)
                .map(|()| Applied::RefusedOtherStore { id: header.id });
        }
    }
    // Return numbers are central's, shared by all remotes, so a jump is no gap. A return that
    // never arrived shows at central instead: its journal row never gets an execution (J1).
    let note: Option<String> = None;
    let central = header.source;
    let (report, reverted) = local::write(store, |tx| {
        let mut report = MergeReport::default();
        let mut reverted = 0u64;
        let mut n_rej = 0u32;
        // The sites first: a return can carry the first changes of a site created after this
        // remote's bootstrap, and the site must be known before its changes are. The
        // permissions after, for this store's own writes from now on: the changes central
        // sends passed its own judgement of them (R4/R9), which the merge does not redo.
        if let Some(config) = &header.config {
            add_sites(tx, config)?;
        }
        // Central restored from a backup may have judged anew what this store knows: merged
        // again, everything (what it had comes out already had).
        let rejudged = header
            .config
            .as_ref()
            .is_some_and(|c| c.settings.contains_key(crate::central::REJUDGED_SETTING));
        let nothing = Knowledge::new();
        if rejudged {
            tx.merge_known_dots();
        }
        let mut tips: crate::incarnation::Tips =
            local::get(tx, local::REMOTE_TIPS)?.unwrap_or_default();
        let mut tips_moved = false;
        let mut synced = BTreeSet::new();
        while let Some(item) =
            reader.next_item_lacking(if rejudged { &nothing } else { tx.knowledge() })?
        {
            match item {
                IncomingItem::Changes(changes) => {
                    tips_moved |=
                        crate::incarnation::note_tips(&mut tips, &changes, [own, central]);
                    own_documents(store.schema(), &changes, own, &mut synced);
                    tx.apply_batch(central, &changes, &mut report)?;
                }
                IncomingItem::Rejections(rejections) => {
                    for r in rejections {
                        let c = &r.rejection.change;
                        if c.dot.site == own
                            && tx.revert(&c.table, &c.key, &c.slot, c.dot, r.central.as_ref())?
                        {
                            reverted += 1;
                        }
                        let mut key = local::flow_key(local::REMOTE_REJECTIONS, header.id);
                        key.extend_from_slice(&n_rej.to_be_bytes());
                        n_rej += 1;
                        local::put(tx, &key, &r)?;
                    }
                }
            }
        }
        if tips_moved {
            local::put(tx, local::REMOTE_TIPS, &tips)?;
        }
        freeze_all(tx, &synced)?;
        tx.add_knowledge(central, &header.covered)?;
        if let Some(config) = &header.config {
            set_denied(tx, config)?;
        }
        let mut st = state(tx)?;
        if let Some(config) = &header.config {
            st.settings = config.settings.clone();
        }
        st.central_knowledge = header.knowledge.clone();
        // Central holds these own commits: their stamps need not be said again. A store from
        // before stamps were kept keeps them from now on.
        tx.keep_own_stamps()?;
        tx.forget_own_stamps(&st.central_knowledge, Some(header.created_stamp))?;
        st.last_return_seq = seq;
        st.acks.push(ReturnAck {
            id: header.id,
            start_ms: now,
            end_ms: store.now_ms(),
            refused: false,
            reason: note.clone(),
        });
        local::put(tx, local::REMOTE_STATE, &st)?;
        log(
            tx,
            &LogRow {
                id: header.id,
                kind: FlowKind::Return,
                mode: header.mode,
                at_ms: now,
                n_changes: reader.n_changes(),
                bytes: 0,
                outcome: match &note {
                    Some(n) => format!("applied ({n})"),
                    None => "applied".into(),
                },
            },
        )?;
        Ok((report, reverted))
    })?;
    Ok(Applied::Applied {
        id: header.id,
        report,
        reverted,
        note,
    })
}

/// The checks of a return's header before anything of it is read: a return, for this site, of
/// this schema, from this site's central, of this deployment. Returns the site's sync state.
fn check_return(store: &Store, header: &FlowHeader) -> Result<RemoteState> {
    let own = store.site().id;
    if header.kind != FlowKind::Return {
        return Err(Error::Refused(format!(
            "flow {} is {}, not a return",
            header.id, header.kind
        )));
    }
    if header.target != own {
        return Err(Error::Refused(format!(
            "return {} is addressed to site {}, not to this site {own}",
            header.id, header.target
        )));
    }
    if header.schema_fingerprint != store.schema().fingerprint() {
        return Err(Error::Refused(format!(
            "return {} was made with schema {:016x}; this site's is {:016x}",
            header.id,
            header.schema_fingerprint,
            store.schema().fingerprint()
        )));
    }
    let snap_state: RemoteState = local::snap_get(&store.snapshot()?, local::REMOTE_STATE)?
        .ok_or_else(|| Error::Refused("this store was not provisioned as a remote".into()))?;
    if header.source != snap_state.central || header.id.site != snap_state.central {
        return Err(Error::Refused(format!(
            "return {} does not come from central site {}",
            header.id, snap_state.central
        )));
    }
    let key = crate::central::DEPLOYMENT_SETTING;
    if let (Some(ours), Some(theirs)) = (
        snap_state.settings.get(key),
        header.config.as_ref().and_then(|c| c.settings.get(key)),
    ) && ours != theirs
    {
        return Err(Error::Refused(format!(
            "return {} belongs to another deployment ({theirs}; this site's is {ours})",
            header.id
        )));
    }
    Ok(snap_state)
}

/// Refuses a return older than the newest applied (`newest`): acknowledged as refused, logged.
fn refuse_stale(store: &Store, header: &FlowHeader, now: u64, newest: u64) -> Result<Applied> {
    let reason = format!(
        "return {} is older than return {newest}, already applied",
        header.id
    );
    refuse_return(store, header, now, reason)?;
    Ok(Applied::RefusedStale {
        id: header.id,
        newest,
    })
}

/// Refuses a return for `reason`: acknowledged as refused (J1), logged.
fn refuse_return(store: &Store, header: &FlowHeader, now: u64, reason: String) -> Result<()> {
    local::write(store, |tx| {
        let mut st = state(tx)?;
        st.acks.push(ReturnAck {
            id: header.id,
            start_ms: now,
            end_ms: now,
            refused: true,
            reason: Some(reason.clone()),
        });
        local::put(tx, local::REMOTE_STATE, &st)?;
        log(
            tx,
            &LogRow {
                id: header.id,
                kind: FlowKind::Return,
                mode: header.mode,
                at_ms: now,
                n_changes: 0,
                bytes: 0,
                outcome: format!("refused: {reason}"),
            },
        )
    })
}

/// After this site's clock ran ahead and was set right: stamps again, from the clock as it
/// is now, this site's writes central has not acknowledged (see
/// [`outpost_engine::Store::restamp_ahead`]), so that central, which held the emissions
/// carrying them (clock-skew quarantine), takes them with the next one. Returns how many
/// registers were stamped again.
pub fn restamp(store: &Store) -> Result<u64> {
    let st: RemoteState = local::snap_get(&store.snapshot()?, local::REMOTE_STATE)?
        .ok_or_else(|| Error::Refused("this store was not provisioned as a remote".into()))?;
    Ok(store.restamp_ahead(&st.central_knowledge)?)
}

/// Takes central's acknowledgement of this site's own changes ([`crate::central::acknowledgement`]):
/// the next emission leaves out what central already has. Only this site's own dots are taken,
/// and they replace what this store believed central holds of them: after central's restore
/// from a backup it holds less, and the next emission carries again what it lost (a smaller
/// answer only makes the remote send more).
pub fn record_acknowledgement(store: &Store, ack: &crate::central::Acknowledgement) -> Result<()> {
    let me = store.site().id;
    let own = ack.ack.only(me);
    local::write(store, |tx| {
        let mut st = state(tx)?;
        let believed = st.central_knowledge.only(me);
        st.central_knowledge = st.central_knowledge.difference(&believed);
        st.central_knowledge.union_with(&own);
        // Central holds these: their stamps need not be kept (see `apply_return`).
        tx.forget_own_stamps(&st.central_knowledge, ack.clock)?;
        local::put(tx, local::REMOTE_STATE, &st)
    })
}

/// A local admin's edit of a setting (C6): in force until the next return, which overwrites it
/// with central's value — make the change on central too.
///
/// Checked as central checks its configuration ([`crate::config::check_remote_setting`]): an
/// unknown setting, a malformed value or a schedule this site could not run is refused (a
/// remote whose schedule cannot be read could not sync to get central's back, C6).
pub fn set_setting(store: &Store, name: &str, value: &str) -> Result<()> {
    let code = store.site().code.to_string();
    local::write(store, |tx| {
        let mut st = state(tx)?;
        let sent = st.settings.contains_key(name);
        st.settings.insert(name.to_owned(), value.to_owned());
        // Checked as central checks them (C4, M1): a refused value changes nothing.
        crate::config::check_remote_setting(&code, &st.settings, name, sent)
            .map_err(Error::Refused)?;
        local::put(tx, local::REMOTE_STATE, &st)
    })
}

/// Removes a setting and gives its value: what only the first start needs (the network
/// credential the bootstrap brought, kept by the host outside the store).
pub fn take_setting(store: &Store, name: &str) -> Result<Option<String>> {
    local::write(store, |tx| {
        let mut st = state(tx)?;
        let v = st.settings.remove(name);
        local::put(tx, local::REMOTE_STATE, &st)?;
        Ok(v)
    })
}

/// The reports of returns received that the next emission will carry; a network sync also
/// sends them right away ([`crate::central::record_acks`]), and central counts each once.
pub fn unreported_acks(store: &Store) -> Result<Vec<ReturnAck>> {
    let st: Option<RemoteState> = local::snap_get(&store.snapshot()?, local::REMOTE_STATE)?;
    Ok(st.map(|s| s.acks).unwrap_or_default())
}

/// The sequence number of the newest return applied (what to ask central for: anything newer).
pub fn last_return_seq(store: &Store) -> Result<u64> {
    let st: Option<RemoteState> = local::snap_get(&store.snapshot()?, local::REMOTE_STATE)?;
    Ok(st.map_or(0, |s| s.last_return_seq))
}

/// The settings in force on this remote.
pub fn settings(store: &Store) -> Result<BTreeMap<String, String>> {
    let st: Option<RemoteState> = local::snap_get(&store.snapshot()?, local::REMOTE_STATE)?;
    Ok(st.map(|s| s.settings).unwrap_or_default())
}

/// This remote's log of flows, in SynID order.
pub fn log_rows(store: &Store) -> Result<Vec<LogRow>> {
    local::snap_all(&store.snapshot()?, local::REMOTE_LOG)
}

/// The changes of this site that central refused, as returns brought them back: what the host
/// application shows the user (what was refused, and why).
pub fn refused_by_central(store: &Store) -> Result<Vec<ReturnedRejection>> {
    local::snap_all(&store.snapshot()?, local::REMOTE_REJECTIONS)
}

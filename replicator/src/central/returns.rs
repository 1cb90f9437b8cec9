//! Returns (A2) and bootstrap files: what each remote lacks, its refused changes and its
//! settings (C6), written for it; returns kept in the sync table for remotes to download.

use super::*;

/// Prepares the return of `remote` into central's sync table, where the remote fetches it when
/// it connects ([`fetch_return`]). See [`build_return`].
pub fn prepare_return(store: &Store, remote: SiteId) -> Result<Built> {
    let keeping = std::cell::RefCell::new(Keeping::default());
    let out = ChunkWriter {
        store,
        keeping: &keeping,
    };
    let how = Writing {
        compress: true,
        keep: Some(&keeping),
        ..Writing::default()
    };
    let written = write_for_remote(store, remote, FlowKind::Return, out, how);
    kept_or_discarded(store, &keeping, written)
}

/// What was written, or, after an error, the chunks already stored dropped.
fn kept_or_discarded<W>(
    store: &Store,
    keeping: &std::cell::RefCell<Keeping>,
    written: Result<(W, Built)>,
) -> Result<Built> {
    match written {
        Ok((_, built)) => Ok(built),
        Err(e) => {
            if let Some(receipt) = keeping.borrow().stored {
                discard(store, receipt)?;
            }
            Err(e)
        }
    }
}

/// From how many returns at once [`prepare_returns`] encodes their common part once: below, each
/// return is written whole for its remote (exactly what it lacks). It also shares only when the
/// common part is at most 1.25 times what the remotes lack on average.
pub const SHARED_RETURNS_MIN: usize = 8;

/// How many changes beyond twice the median a remote may lack and still share the common part.
const SHARED_GAP_SLACK: u64 = 10_000;

/// Prepares the returns of several remotes at once — the common return time (M1), when every
/// deferred remote gets one. From [`SHARED_RETURNS_MIN`] remotes, the changes above what all of
/// them know are encoded once ([`crate::flow::SharedChanges`]) and copied into each return with
/// its own header and refused changes: every remote then also receives the changes of this
/// part it already has (its own day, mostly), which it counts as already had, instead of
/// central reading and encoding the fleet's day once per remote. Fewer remotes: one
/// [`prepare_return`] each.
pub fn prepare_returns(store: &Store, remotes: &[SiteId]) -> Result<Vec<Built>> {
    // Put back without `central restore`: none now (their numbers would be the lost central's).
    if super::receive::put_back_reason(&store.snapshot()?)?.is_some() {
        return Ok(Vec::new());
    }
    if remotes.len() < SHARED_RETURNS_MIN {
        return remotes.iter().map(|r| prepare_return(store, *r)).collect();
    }
    check_central(store)?;
    let snap = store.snapshot()?;
    // A remote far behind the others (just added, offline for weeks) would pull the common
    // part down to what it lacks, and every return would carry that: it gets a return of its
    // own. The others share one: at most twice the median gap, plus some slack.
    let central_knows = store.knowledge();
    let mut known = Vec::with_capacity(remotes.len());
    for r in remotes {
        let rec: RemoteRecord = local::snap_get(&snap, &remote_key(*r))?
            .ok_or(Error::Engine(outpost_engine::Error::UnknownSite(*r)))?;
        let peer = return_peer(&snap, *r, &rec.knowledge)?;
        let gap = central_knows.difference(&peer).count();
        known.push((*r, gap, peer));
    }
    let mut gaps: Vec<u64> = known.iter().map(|k| k.1).collect();
    gaps.sort_unstable();
    let median = gaps.get(gaps.len() / 2).copied().unwrap_or(0);
    let limit = median.saturating_mul(2).saturating_add(SHARED_GAP_SLACK);
    let (group, alone): (Vec<_>, Vec<_>) = known.into_iter().partition(|k| k.1 <= limit);
    if group.len() < SHARED_RETURNS_MIN {
        return remotes.iter().map(|r| prepare_return(store, *r)).collect();
    }
    let mut floor: Option<Knowledge> = None;
    for (_, _, k) in &group {
        floor = Some(match floor {
            None => k.clone(),
            Some(f) => f.difference(&f.difference(k)),
        });
    }
    let floor = floor.unwrap_or_default();
    // Shared only when the common part is about what each of them lacks anyway (a fleet after
    // a normal day: each lacks the others' day). Remotes in different states lack different
    // things, and the part above what all of them know would make every return bigger.
    let floor_gap = u128::from(central_knows.difference(&floor).count());
    let gaps_sum: u128 = group.iter().map(|k| u128::from(k.1)).sum();
    if floor_gap * 4 * group.len() as u128 > gaps_sum * 5 {
        return remotes.iter().map(|r| prepare_return(store, *r)).collect();
    }
    let mut lacking = store.changes_lacking(&floor, true)?;
    let knowledge = lacking.knowledge().clone();
    let covered = lacking.covered_up_front()?;
    let shared = crate::flow::SharedChanges::encode(lacking.by_ref())?;
    // Stored once: each return reads it from there (a thousand remotes, a thousand copies
    // otherwise).
    let stored_at = store_common_part(store, shared.compressed())?;
    let shared_part = SharedPart {
        shared: &shared,
        knowledge: &knowledge,
        covered: &covered,
        stored_at,
    };
    let built = returns_sharing(store, &alone, &group, &shared_part);
    let unpinned = local::write(store, unpin_common_part);
    let built = built?;
    unpinned?;
    remotes
        .iter()
        .map(|r| {
            built
                .get(r)
                .copied()
                .ok_or(Error::Engine(outpost_engine::Error::UnknownSite(*r)))
        })
        .collect()
}

/// The returns of `alone`, each for its remote, and of `group`, reading `shared_part`.
fn returns_sharing(
    store: &Store,
    alone: &[(SiteId, u64, Knowledge)],
    group: &[(SiteId, u64, Knowledge)],
    shared_part: &SharedPart<'_>,
) -> Result<BTreeMap<SiteId, Built>> {
    let mut built = BTreeMap::new();
    for (remote, _, _) in alone {
        built.insert(*remote, prepare_return(store, *remote)?);
    }
    for (remote, _, _) in group {
        let keeping = std::cell::RefCell::new(Keeping::default());
        let out = ChunkWriter {
            store,
            keeping: &keeping,
        };
        let written = write_for_remote(
            store,
            *remote,
            FlowKind::Return,
            out,
            Writing {
                compress: true,
                keep: Some(&keeping),
                shared: Some(shared_part),
                ..Writing::default()
            },
        );
        built.insert(*remote, kept_or_discarded(store, &keeping, written)?);
    }
    Ok(built)
}

/// The common part of several returns and what their headers say of it.
pub(super) struct SharedPart<'a> {
    shared: &'a crate::flow::SharedChanges,
    knowledge: &'a Knowledge,
    covered: &'a Knowledge,
    /// The receipt it is stored under in the sync table, for the returns kept there to read.
    stored_at: u64,
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
    // Put back without `central restore`: a return prepared since may bear a number the lost
    // central gave.
    if super::receive::put_back_reason(&snap)?.is_some() {
        return Ok(None);
    }
    let rec: Option<RemoteRecord> = local::snap_get(&snap, &remote_key(remote))?;
    let newest = rec
        .and_then(|r| r.latest_return)
        .filter(|(id, _)| id.seq > after_seq);
    match newest {
        Some((id, receipt)) => Ok(Some((id, StoredFlow::on(snap, receipt)))),
        None => Ok(None),
    }
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
    let how = Writing {
        compress,
        ..Writing::default()
    };
    write_for_remote(store, remote, FlowKind::Return, out, how)
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
    if retired(store, remote)?.is_some() {
        return Err(Error::Refused(format!(
            "site {remote} was removed from this deployment: it is not set up again"
        )));
    }
    match store.sites().get(remote) {
        Some(s) if !s.is_central() => {}
        _ => return Err(Error::Engine(outpost_engine::Error::UnknownSite(remote))),
    }
    local::write(store, |tx| {
        // The new store will know what its bootstrap carries: at most all central holds now
        // (less what a bootstrap holds back, `record_made`).
        let rkey = remote_key(remote);
        let mut rec: RemoteRecord = local::get(tx, &rkey)?.unwrap_or_default();
        rec.knowledge = tx.knowledge().clone();
        local::put(tx, &rkey, &rec)?;
        // What the old store held reserved (R7) is lost with it.
        crate::monitor_records::forget_reserved(tx, remote)?;
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
    let (provisioning, first_commit) =
        local::write(store, |tx| crate::incarnation::provisioning(tx, remote))?;
    rec.settings.insert(
        crate::incarnation::PROVISIONING_SETTING.to_owned(),
        provisioning.to_string(),
    );
    rec.settings.insert(
        crate::incarnation::FIRST_COMMIT_SETTING.to_owned(),
        first_commit.to_string(),
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
        Writing {
            compress,
            record: Some(rec),
            ..Writing::default()
        },
    )
}

/// A return or a bootstrap: everything the remote lacks (for a bootstrap: everything), with its
/// configuration, then the journal row.
/// How [`write_for_remote`] writes a flow.
#[derive(Default)]
pub(super) struct Writing<'a> {
    /// Compress the body (zstd).
    pub compress: bool,
    /// A return kept for download in the sync table: its last bytes are stored, and its receipt
    /// taken if it has none yet, in the transaction that records it.
    pub keep: Option<&'a std::cell::RefCell<Keeping>>,
    /// The remote's record as it will be, when it is not yet stored (a bootstrap).
    pub record: Option<RemoteRecord>,
    /// The common part of several returns, copied in instead of what the remote lacks.
    pub shared: Option<&'a SharedPart<'a>>,
}

pub(super) fn write_for_remote<W: Write>(
    store: &Store,
    remote: SiteId,
    kind: FlowKind,
    out: W,
    how: Writing<'_>,
) -> Result<(W, Built)> {
    let Writing {
        compress,
        keep,
        record,
        shared,
    } = how;
    check_central(store)?;
    let is_return = kind == FlowKind::Return;
    let snap = store.snapshot()?;
    if let Some(reason) = super::receive::put_back_reason(&snap)? {
        return Err(Error::Deferred(reason));
    }
    let rec: RemoteRecord = match record {
        Some(r) => r,
        None => local::snap_get(&snap, &remote_key(remote))?
            .ok_or(Error::Engine(outpost_engine::Error::UnknownSite(remote)))?,
    };
    let seq: u64 = local::snap_get(&snap, local::RETURN_SEQ)?.unwrap_or(0) + 1;
    // A remote to be sent changes again gets a return of its own: the common part was read
    // before (perhaps before they were taken).
    let redeliver = if is_return {
        super::restore::redeliver(&snap, remote)?
    } else {
        None
    };
    let shared = shared.filter(|_| redeliver.is_none());
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
    // What it holds: the common part of several returns, or what this remote lacks.
    let (knowledge, covered, mut lacking) = match shared {
        Some(part) => (part.knowledge.clone(), part.covered.clone(), None),
        None => {
            let peer = if is_return {
                return_peer(&snap, remote, &rec.knowledge)?
            } else {
                Knowledge::new()
            };
            let lacking = store.changes_lacking(&peer, true)?;
            let knowledge = lacking.knowledge().clone();
            (knowledge, lacking.covered_up_front()?, Some(lacking))
        }
    };
    // While a restore is under way: the commits central took only from relays, perhaps in
    // part, each remote is told central lacks (one that holds them sends them). Read after the
    // knowledge: a dot relayed meanwhile is in the set.
    let knowledge = if is_return {
        let snap = store.snapshot()?;
        let mut again = relayed_dots(&snap)?;
        // And the dots central knows only by their own site's word: another remote may hold
        // one that matters (a write its site stamped again, lower, after the lost central took
        // it). Not to their own site, which knows them. (Not only to the remotes that reported
        // knowing one: that report may be in an emission central holds for its clock, which
        // does not move the remote's record — the case this is for.)
        let by_word = super::restore::by_word_dots(&snap)?;
        again.union_with(&by_word.difference(&by_word.only(remote)));
        if again.is_empty() {
            knowledge
        } else {
            knowledge.difference(&again)
        }
    } else {
        knowledge
    };
    let header = FlowHeader {
        id,
        kind,
        source: store.site().id,
        target: remote,
        mode,
        link,
        knowledge,
        covered,
        schema_fingerprint: store.schema().fingerprint(),
        created_stamp: store.clock_high_water(),
        created_wall_ms: store.now_ms(),
        acks: Vec::new(),
        config: Some({
            let mut config = config_for(store, &rec)?;
            // Changes it reported knowing under numbers a store put back from its backup may have
            // reused: sent again, to be merged by value.
            if redeliver.is_some() {
                config
                    .settings
                    .insert(super::restore::REJUDGED_SETTING.to_owned(), "1".to_owned());
            }
            // A return is for the store that reported what it holds: another store of the site
            // (set up again since) must not take its knowledge for its own.
            if is_return
                && let Some(ident) = crate::incarnation::bound_store(&store.snapshot()?, remote)?
            {
                config.settings.insert(
                    crate::incarnation::FOR_STORE_SETTING.to_owned(),
                    ident.to_setting(),
                );
            }
            config
        }),
    };
    let mut writer = match shared {
        Some(part) => match keep {
            // The sync table's writer adds to `keep` as bytes come: the return reads the
            // stored common part at this point.
            Some(keeping) => FlowWriter::with_shared_by(out, &header, part.shared, |_, _| {
                keeping.borrow_mut().splice(part.stored_at);
                Ok(())
            })?,
            None => FlowWriter::with_shared(out, &header, part.shared)?,
        },
        None => FlowWriter::new(out, &header, compress)?,
    };
    if let Some(lacking) = lacking.as_mut() {
        for change in lacking.by_ref() {
            writer.push_change(change?)?;
        }
    }
    let returned = if is_return {
        let reads_r2 = snap.local_get(&local::reads_r2_key(remote))?.is_some();
        returned_rejections(&snap, &rec, reads_r2)?
    } else {
        Vec::new()
    };
    writer.push_rejections(&returned)?;
    let (out, n_changes, bytes) = writer.finish()?;
    let built = Built {
        id,
        link,
        n_changes,
        n_rejections: returned.len() as u64,
        bytes,
    };
    record_made(store, remote, kind, mode, keep, &built, &header.covered)?;
    Ok((out, built))
}

/// The refused changes of `rec` a return carries back, each with central's register for it;
/// a refusal of rule R2 under rule R1 (same reason) unless the remote `reads_r2`
/// ([`local::READS_R2`]).
fn returned_rejections(
    snap: &Snapshot,
    rec: &RemoteRecord,
    reads_r2: bool,
) -> Result<Vec<ReturnedRejection>> {
    rec.rejections
        .iter()
        .map(|(r, _)| {
            let mut rejection = r.clone();
            if !reads_r2 && rejection.refusal.rule == outpost_engine::Rule::R2 {
                rejection.refusal.rule = outpost_engine::Rule::R1;
            }
            Ok(ReturnedRejection {
                rejection,
                central: central_register(snap, r)?,
            })
        })
        .collect()
}

/// Records a flow central made for `remote` (a return, or a bootstrap), in one transaction:
/// the next return number; for a return, the remote's refusals marked sent, its emissions
/// answered and the superseded return's bytes dropped; for a bootstrap, what the store set up
/// from it will know (`covered`); the link of the emission it answers; its journal row and the
/// monitor's records.
fn record_made(
    store: &Store,
    remote: SiteId,
    kind: FlowKind,
    mode: SyncMode,
    keep: Option<&std::cell::RefCell<Keeping>>,
    built: &Built,
    covered: &Knowledge,
) -> Result<()> {
    let Built {
        id,
        link,
        n_changes,
        n_rejections,
        bytes,
    } = *built;
    let seq = id.seq;
    let is_return = kind == FlowKind::Return;
    let now = store.now_ms();
    local::write(store, |tx| {
        let receipt = match keep {
            Some(k) => Some(k.borrow_mut().store_held(tx)?),
            None => None,
        };
        // Numbered when its build began: a flow recorded meanwhile (built on a host program's
        // other thread) may hold this number or a higher one. Recorded anyway, it would give
        // two flows one number (the journal's rows mixed, a remote skipping the second as
        // applied) and put the counter back (the next return skipped as applied): refused,
        // nothing kept.
        if local::get::<u64>(tx, local::RETURN_SEQ)?.is_some_and(|last| last >= seq) {
            return Err(Error::NumberTaken(seq));
        }
        local::put(tx, local::RETURN_SEQ, &seq)?;
        // The newest stamp this flow can carry (R2: the remote's clock may take it).
        let sent = local::sent_high_key(remote);
        let high = tx.clock_high_water().as_u64();
        if local::get::<u64>(tx, &sent)?.is_none_or(|old| old < high) {
            local::put(tx, &sent, &high)?;
        }
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
                drop_return_bytes(tx, old_id, old_receipt)?;
            }
            local::put(tx, &rkey, &rec)?;
        } else if let Some(mut rec) = local::get::<RemoteRecord>(tx, &remote_key(remote))? {
            // A store set up from this bootstrap knows what it covers, no more: a commit held
            // back (a document reserved at central, R7) counted as known would never be sent to
            // it. Of several bootstraps written, the store may be set up from any.
            rec.knowledge = rec.knowledge.difference(&rec.knowledge.difference(covered));
            local::put(tx, &remote_key(remote), &rec)?;
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
    })
}

/// Drops the bytes of return `id`, stored under `receipt`; its journal row stays.
pub(super) fn drop_return_bytes(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    id: FlowId,
    receipt: u64,
) -> Result<()> {
    remove_chunks(tx, receipt)?;
    if let Some(mut row) = crate::journal::get(tx, id)? {
        row.receipt = None;
        crate::journal::put(tx, &row)?;
    }
    Ok(())
}

/// Central's register for the place a refused change targeted (none if central has none).
pub(super) fn central_register(
    snap: &Snapshot,
    r: &Rejection,
) -> Result<Option<outpost_engine::Register>> {
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

//! After central is restored from a backup: the numbers it uses again jump past everything it
//! made before, and a remote's coverage claims are trusted again only once it has applied a
//! return made since.

use super::*;
use outpost_engine::Stamp;

/// How far central's sequences (its returns, its own commits) jump after a restore from a
/// backup: past anything it can have issued between the backup and the loss. They jump from
/// the backup's numbers or from the time ([`RESTORE_TIME_SHIFT`]), whichever is higher (see
/// [`after_restore`]).
pub const RESTORE_SEQ_JUMP: u64 = 1 << 32;

/// After a restore, central's numbers start past the time in milliseconds shifted left by this
/// many bits (times 1,024): restored again a millisecond or more later — from the same backup,
/// or from an older one — central numbers past everything the earlier restored central issued
/// as long as it issued fewer than 1,024 numbers a millisecond. The numbers stay below 2⁵³
/// (exact in a JavaScript number) until the year 2248.
pub const RESTORE_TIME_SHIFT: u32 = 10;

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
    // Past anything issued since the backup (2^32), and past what a central restored earlier
    // issued, from this backup or another: the numbers jump from the backup's or from the time
    // shifted left (RESTORE_TIME_SHIFT), whichever is higher. The time must dominate: jumping
    // to the time alone left a backup taken within 2^32 ms (about 49 days) of an earlier
    // restore above it, so restored twice it numbered both centrals' returns and commits
    // alike — the second's refused as stale, or taken for known, silently; and adding the
    // time to the backup's numbers grew them with each restore of a restored central, so an
    // older backup restored after such a one numbered below it.
    let at = store.now_ms();
    let past = at.saturating_mul(1 << RESTORE_TIME_SHIFT);
    // One transaction: a crash leaves central as restored or as it was, never half-marked.
    local::write(store, |tx| {
        tx.skip_sequence(RESTORE_SEQ_JUMP, past)?;
        let seq: u64 = local::get(tx, local::RETURN_SEQ)?.unwrap_or(0);
        let next = seq.max(past).saturating_add(RESTORE_SEQ_JUMP);
        local::put(tx, local::RETURN_SEQ, &next)?;
        local::put(tx, local::RESTORED, &(next + 1))?;
        local::put(tx, local::RESTORE_FIRST_RETURN, &(next + 1))?;
        local::put(tx, local::RESTORED_AT, &at)?;
        let known = tx.knowledge().clone();
        local::put(tx, local::RESTORED_KNOWLEDGE, &known)?;
        local::remove_all(tx, local::RESTORE_CONFIRMED)?;
        local::remove_all(tx, local::RESTORE_RELAYED)?;
        tx.local_remove(local::RESTORE_RELAYED_DOTS)?;
        tx.local_remove(local::RESTORE_BY_WORD)?;
        tx.local_remove(local::RESTORE_HELD)?;
        tx.local_remove(local::RESTORE_KNOWN)?;
        local::remove_all(tx, local::RESTORE_TAKES)?;
        tx.local_remove(local::LATE_REJUDGE)?;
        local::remove_all(tx, local::RESTORE_REPORTED)?;
        local::remove_all(tx, local::RESTORE_SENT_BACK)?;
        local::remove_all(tx, local::RESTORE_OWN_CLAIMS)?;
        local::remove_all(tx, local::RESTORE_TAKEN_FROM)?;
        local::remove_all(tx, local::RESTORE_TIPS)?;
        local::remove_all(tx, local::RESTORE_VOUCHED)?;
        tx.local_remove(local::RESTORE_OWN_BACK)?;
        tx.local_remove(local::PUT_BACK)?;
        tx.hold_own_writes(None)?;
        Ok(next + 1)
    })
}

/// Whether central may take the coverage claim of `remote`'s emission number `emission`
/// (everything the remote knows of its own is at central once the emission is applied; `None`
/// for a report of returns outside an emission). After a restore from a backup it may not
/// until the remote reports applying a return made since (`acks`, recorded here), and then
/// only for emissions made after that: before, the remote believed central holds what the
/// restore lost.
pub(super) fn trusts_coverage(
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
pub(super) fn restore_relayed(
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
        // A remote removed from the deployment never will.
        if tx.local_get(&key(local::RESTORE_RELAYED, *site))?.is_none()
            && retired_in(tx, *site)?.is_none()
        {
            return Ok(());
        }
    }
    tx.forget_lost_own()?;
    late_rejudge_at_the_end(tx, remotes)?;
    tx.local_remove(local::RESTORED)?;
    tx.local_remove(local::RESTORED_KNOWLEDGE)?;
    tx.local_remove(local::RESTORE_RELAYED_DOTS)?;
    tx.local_remove(local::RESTORE_BY_WORD)?;
    tx.local_remove(local::RESTORE_HELD)?;
    tx.local_remove(local::RESTORE_KNOWN)?;
    local::remove_all(tx, local::RESTORE_TAKES)?;
    local::remove_all(tx, local::RESTORE_REPORTED)?;
    local::remove_all(tx, local::RESTORE_SENT_BACK)?;
    local::remove_all(tx, local::RESTORE_OWN_CLAIMS)?;
    local::remove_all(tx, local::RESTORE_TAKEN_FROM)?;
    local::remove_all(tx, local::RESTORE_TIPS)?;
    local::remove_all(tx, local::RESTORE_VOUCHED)?;
    tx.local_remove(local::RESTORE_OWN_BACK)?;
    tx.local_remove(local::RESTORE_FIRST_RETURN)?;
    tx.local_remove(local::RESTORED_AT)?;
    local::remove_all(tx, local::RESTORE_CONFIRMED)?;
    local::remove_all(tx, local::RESTORE_RELAYED)
}

/// Whether `remote` has nothing more to send back of what a restore lost: no restore is under
/// way, or it has sent a trusted emission since (see [`restore_relayed`]).
pub(super) fn relayed_since_restore(
    tx: &outpost_engine::WriteTx<'_, '_>,
    remote: SiteId,
) -> Result<bool> {
    if local::get::<u64>(tx, local::RESTORED)?.is_none() {
        return Ok(true);
    }
    let mut key = local::RESTORE_RELAYED.to_vec();
    key.extend_from_slice(&remote.0.to_be_bytes());
    Ok(tx.local_get(&key)?.is_some())
}

/// While a restore is under way: what the remotes' emissions received since the restore
/// reported holding of `site`'s changes (their headers' knowledge). A store of `site` put back
/// from its own backup around central's restore numbers its new changes as the lost store
/// numbered changes that central lost and other remotes hold; lacking them, it is refused before
/// central takes any of its changes for theirs (`incarnation::check_emission`). What the remotes
/// had reported before the backup, central holds. Empty outside a restore.
pub(super) fn held_by_remotes(
    tx: &outpost_engine::WriteTx<'_, '_>,
    site: SiteId,
) -> Result<Knowledge> {
    of_site(tx, local::RESTORE_HELD, site)
}

/// `site`'s part of the set kept under `key`.
fn of_site(tx: &outpost_engine::WriteTx<'_, '_>, key: &[u8], site: SiteId) -> Result<Knowledge> {
    Ok(local::get::<Knowledge>(tx, key)?
        .map(|k| k.only(site))
        .unwrap_or_default())
}

/// While a restore is under way: every change another remote than its own site's reported
/// holding, of a site central has taken no new change of its own from since — what the lost
/// central had taken, and so judged (see [`held_by_remotes`]). Empty outside a restore.
pub(super) fn held_by_any_remote(tx: &outpost_engine::WriteTx<'_, '_>) -> Result<Knowledge> {
    Ok(local::get::<Knowledge>(tx, local::RESTORE_HELD)?.unwrap_or_default())
}

/// While a restore is under way: `sender` has reported what its store holds (an emission of it
/// received, whether taken now or not): [`held_by_remotes`] gains it, and central waits no
/// more for `sender` ([`waiting_for`]).
///
/// What it says of its own site's changes goes to [`own_claim`] when it was made after
/// applying a return of the restored central; what it says of the other sites' is counted for
/// each site central has not yet taken new changes of its own from ([`taken_from`]): until
/// then, every change of that site another remote holds beyond the backup came from the lost
/// central, so its store made it before the restore.
pub(super) fn record_report(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    header: &FlowHeader,
    clock: MadeWhen,
) -> Result<()> {
    if local::get::<u64>(tx, local::RESTORED)?.is_none() {
        return Ok(());
    }
    let sender = header.source;
    heard_from(tx, sender)?;
    if let Some(claim) = own_claim(tx, header, clock)? {
        local::put(tx, &site_key(local::RESTORE_OWN_CLAIMS, sender), &claim)?;
    }
    let mut others = header.knowledge.difference(&header.knowledge.only(sender));
    // Only what central lacks: a change it knows is never taken again from its site (a
    // commit merged again whole restarts the confirmations of its own).
    let lacked = others.difference(tx.knowledge());
    add_to(tx, local::RESTORE_KNOWN, &lacked)?;
    let sites: Vec<SiteId> = others.iter().map(|(s, _)| s).collect();
    for site in sites {
        if tx
            .local_get(&site_key(local::RESTORE_TAKEN_FROM, site))?
            .is_some()
        {
            others = others.difference(&others.only(site));
        }
    }
    record_tips(tx, header, &others)?;
    record_held(tx, &others)
}

/// While a restore is under way: moves central's clock past the stamps `header`'s emission
/// reports holding (`incarnation::TIPS_SETTING`). A central sent them, so the lost central's
/// clock had passed them; the restored one's passes them too, so that what a return or an
/// acknowledgement states of its clock covers what the lost one took and relayed (a remote
/// counts the stamps of its commits central confirms only up to it,
/// `WriteTx::forget_own_stamps`), and its own next writes are stamped after them. Also for an
/// emission refused: its store's word on what it holds is not counted, but its stamps came from
/// a central's returns all the same. A stamp past the emission's own clock (`created_stamp`,
/// which observed every stamp its store holds) is not one a store holds, and is skipped.
pub(super) fn observe_tips(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    header: &FlowHeader,
) -> Result<()> {
    if local::get::<u64>(tx, local::RESTORED)?.is_none() {
        return Ok(());
    }
    for (_, _, stamp) in tips_of(header) {
        if stamp <= header.created_stamp {
            tx.observe_stamp(stamp);
        }
    }
    Ok(())
}

/// What `header`'s emission reports holding of the other sites (`incarnation::TIPS_SETTING`):
/// (site, number, stamp); none if it says nothing.
fn tips_of(header: &FlowHeader) -> Vec<(SiteId, u64, Stamp)> {
    header
        .config
        .as_ref()
        .and_then(|c| c.settings.get(crate::incarnation::TIPS_SETTING))
        .map(|text| crate::incarnation::parse_tips(text, &header.knowledge))
        .unwrap_or_default()
}

/// While a restore is under way: the stamps of the changes of other sites, among those `others`
/// that central lacks, that `header`'s emission reports holding as their site's newest
/// (`incarnation::TIPS_SETTING`) — one per site (a store reports one), the first report of
/// each number kept.
fn record_tips(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    header: &FlowHeader,
    others: &Knowledge,
) -> Result<()> {
    observe_tips(tx, header)?;
    let mut seen = BTreeSet::new();
    for (site, seq, stamp) in tips_of(header) {
        // The reporting remote holds it: a central sent it that stamp; and a central took
        // it from `site`.
        vouch(tx, header.source, stamp)?;
        vouch(tx, site, stamp)?;
        let dot = outpost_engine::Dot { site, seq };
        if !seen.insert(site) || !others.contains(dot) || tx.knowledge().contains(dot) {
            continue;
        }
        let key = site_key(local::RESTORE_TIPS, site);
        let mut held: BTreeMap<u64, Stamp> = local::get(tx, &key)?.unwrap_or_default();
        let before = held.len();
        held.entry(seq).or_insert(stamp);
        if held.len() != before {
            local::put(tx, &key, &held)?;
        }
    }
    Ok(())
}

/// While a restore is under way: the lost central sent `remote` a change stamped `stamp`, or
/// took one from it ([`local::RESTORE_VOUCHED`]).
pub(super) fn vouch(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    remote: SiteId,
    stamp: Stamp,
) -> Result<()> {
    if local::get::<u64>(tx, local::RESTORED)?.is_none() {
        return Ok(());
    }
    let key = site_key(local::RESTORE_VOUCHED, remote);
    let before: Option<Stamp> = local::get(tx, &key)?;
    if before.is_none_or(|b| stamp > b) {
        local::put(tx, &key, &stamp)?;
    }
    Ok(())
}

/// While a restore is under way: the newest stamp the lost central is known to have sent
/// `remote` or taken from it ([`local::RESTORE_VOUCHED`]), or of its own lost changes taken
/// back that `holds` (the remote's emission's knowledge) says the remote holds
/// ([`local::RESTORE_OWN_BACK`]).
pub(super) fn vouched(
    tx: &outpost_engine::WriteTx<'_, '_>,
    remote: SiteId,
    holds: &Knowledge,
) -> Result<Stamp> {
    let mut vouched: Stamp =
        local::get(tx, &site_key(local::RESTORE_VOUCHED, remote))?.unwrap_or(Stamp::ZERO);
    let own = tx.site().id;
    let back: BTreeMap<u64, Stamp> = local::get(tx, local::RESTORE_OWN_BACK)?.unwrap_or_default();
    for (seq, stamp) in back {
        if holds.contains(outpost_engine::Dot { site: own, seq }) {
            vouched = vouched.max(stamp);
        }
    }
    Ok(vouched)
}

/// While a restore is under way: central took back its own lost changes `taken` (sequence
/// number, stamp) ([`local::RESTORE_OWN_BACK`]).
pub(super) fn took_own_back(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    taken: &BTreeMap<u64, Stamp>,
) -> Result<()> {
    if taken.is_empty() || local::get::<u64>(tx, local::RESTORED)?.is_none() {
        return Ok(());
    }
    let mut back: BTreeMap<u64, Stamp> =
        local::get(tx, local::RESTORE_OWN_BACK)?.unwrap_or_default();
    let before = back.clone();
    for (seq, stamp) in taken {
        let e = back.entry(*seq).or_insert(*stamp);
        *e = (*e).max(*stamp);
    }
    if back != before {
        local::put(tx, local::RESTORE_OWN_BACK, &back)?;
    }
    Ok(())
}

/// While a restore is under way: a change of `header`'s site that the emission at hand
/// (`flow`) carries under a number another remote reported holding with another stamp
/// ([`record_tips`]): its number, the stamp reported, the stamp carried. The other remote got
/// its copy from the lost central, so this store numbered a new change as that one: it was put
/// back from a backup. Reads the flow only when such a number is within what it says it holds.
pub(super) fn renumbered<R: Read>(
    tx: &outpost_engine::WriteTx<'_, '_>,
    header: &FlowHeader,
    flow: impl FnOnce() -> Result<R>,
) -> Result<Option<crate::incarnation::Renumbered>> {
    let site = header.source;
    if local::get::<u64>(tx, local::RESTORED)?.is_none() {
        return Ok(None);
    }
    let held: BTreeMap<u64, Stamp> =
        local::get(tx, &site_key(local::RESTORE_TIPS, site))?.unwrap_or_default();
    let wanted: BTreeMap<u64, Stamp> = held
        .into_iter()
        .filter(|(seq, _)| {
            header
                .knowledge
                .contains(outpost_engine::Dot { site, seq: *seq })
        })
        .collect();
    if wanted.is_empty() {
        return Ok(None);
    }
    // Commits of its own of which no change travels (written over, held back): their stamps
    // do.
    if let Some(text) = header
        .config
        .as_ref()
        .and_then(|c| c.settings.get(crate::incarnation::UNSENT_SETTING))
    {
        for (seq, stamp) in crate::incarnation::parse_unsent(text) {
            if let Some(theirs) = wanted.get(&seq)
                && *theirs != stamp
            {
                return Ok(Some(crate::incarnation::Renumbered {
                    seq,
                    theirs: *theirs,
                    this: stamp,
                    carried: false,
                }));
            }
        }
    }
    let mut reader = FlowReader::open(flow()?)?;
    while let Some(item) = reader.next_item()? {
        let crate::flow::Item::Changes(changes) = item else {
            continue;
        };
        for c in changes {
            if c.dot.site == site
                && let Some(theirs) = wanted.get(&c.dot.seq)
                && *theirs != c.stamp
            {
                return Ok(Some(crate::incarnation::Renumbered {
                    seq: c.dot.seq,
                    theirs: *theirs,
                    this: c.stamp,
                    carried: true,
                }));
            }
        }
    }
    Ok(None)
}

/// While a restore is under way: central has heard from `sender` (an emission of it received,
/// even one refused): it waits no more for its report ([`waiting_for`]).
pub(super) fn heard_from(tx: &mut outpost_engine::WriteTx<'_, '_>, sender: SiteId) -> Result<()> {
    if local::get::<u64>(tx, local::RESTORED)?.is_none() {
        return Ok(());
    }
    local::put(tx, &reported_key(sender), &())
}

fn site_key(prefix: &[u8], site: SiteId) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&site.0.to_be_bytes());
    key
}

/// While a restore is under way: central takes new changes of `site`'s own from its emission
/// (see [`record_report`]).
pub(super) fn taken_from(tx: &mut outpost_engine::WriteTx<'_, '_>, site: SiteId) -> Result<()> {
    if local::get::<u64>(tx, local::RESTORED)?.is_none() {
        return Ok(());
    }
    local::put(tx, &site_key(local::RESTORE_TAKEN_FROM, site), &())
}

/// Central's clock when it receives an emission, and the clock-skew bound, for telling an
/// emission made after central's restore.
#[derive(Clone, Copy, Debug)]
pub(super) struct MadeWhen {
    /// Central's clock (UTC ms).
    pub now_ms: u64,
    /// How far ahead of central's a remote's clock may be (`clock_skew_max_s`).
    pub skew_ms: u64,
}

/// While a restore is under way: what the store of `header`'s site said it holds of its own
/// changes in every emission received since the restore that it made after the restore,
/// `header`'s included (their common part; `None` if there was none). Such an emission knows
/// every change of its own the lost central had received — unless its store was put back from
/// a backup since. Made after the restore: after applying a return of the restored central,
/// or stamped by its site's clock later than the restore by more than the clock-skew bound and
/// received within that bound of its stamp (as an upload is; not a file carried in later, even
/// from a clock set ahead).
pub(super) fn own_claim(
    tx: &outpost_engine::WriteTx<'_, '_>,
    header: &FlowHeader,
    clock: MadeWhen,
) -> Result<Option<Knowledge>> {
    let Some(first) = local::get::<u64>(tx, local::RESTORE_FIRST_RETURN)? else {
        return Ok(None);
    };
    let at: u64 = local::get(tx, local::RESTORED_AT)?.unwrap_or(u64::MAX);
    let site = header.source;
    let before: Option<Knowledge> = local::get(tx, &site_key(local::RESTORE_OWN_CLAIMS, site))?;
    let made = header.created_wall_ms;
    let after_a_return = header.acks.iter().any(|a| !a.refused && a.id.seq >= first);
    // Received as it was made (within the bound either way): a file made before the restore
    // and carried in later is not counted, even from a clock set ahead.
    let later = made >= at.saturating_add(clock.skew_ms)
        && made <= clock.now_ms.saturating_add(clock.skew_ms)
        && made.saturating_add(clock.skew_ms) >= clock.now_ms;
    if !after_a_return && !later {
        return Ok(before);
    }
    let claim = header.knowledge.only(site);
    Ok(Some(match before {
        Some(b) => b.difference(&b.difference(&claim)),
        None => claim,
    }))
}

/// While a restore is under way: the remotes of the deployment, other than `except`, that
/// central has not heard from since (no emission of theirs received), by code in site order;
/// empty outside a restore. A removed remote is not waited for.
///
/// Until they have reported what they hold, central cannot tell whether a remote's new
/// changes are numbered as changes the restore lost and another remote holds (a shop put back
/// from its own backup numbers its new changes as its lost store numbered the lost ones):
/// those wait (`incarnation::check_emission`, [`Error::Deferred`]).
pub(super) fn waiting_for(
    tx: &outpost_engine::WriteTx<'_, '_>,
    sites: &outpost_engine::SiteDirectory,
    except: SiteId,
) -> Result<Vec<String>> {
    if local::get::<u64>(tx, local::RESTORED)?.is_none() {
        return Ok(Vec::new());
    }
    let mut waiting = Vec::new();
    for site in sites.iter().filter(|s| !s.is_central() && s.id != except) {
        if tx.local_get(&reported_key(site.id))?.is_none() && retired_in(tx, site.id)?.is_none() {
            waiting.push(site.code.to_string());
        }
    }
    Ok(waiting)
}

/// While a restore is under way: whether central has received an emission of `site` since.
pub(super) fn has_reported(tx: &outpost_engine::WriteTx<'_, '_>, site: SiteId) -> Result<bool> {
    Ok(local::get::<u64>(tx, local::RESTORED)?.is_some()
        && tx.local_get(&reported_key(site))?.is_some())
}

fn reported_key(site: SiteId) -> Vec<u8> {
    let mut key = local::RESTORE_REPORTED.to_vec();
    key.extend_from_slice(&site.0.to_be_bytes());
    key
}

/// While central's restore from a backup is under way: the remotes it has not received an
/// emission of since, whose report of what they hold every remote's new changes wait for
/// (docs/OPERATIONS.md). Empty once every remote has reported, and outside a restore.
pub fn restore_waiting_for(store: &Store) -> Result<Vec<String>> {
    check_central(store)?;
    waiting_in(store, &store.snapshot()?)
}

/// [`restore_waiting_for`] in `snap`.
fn waiting_in(store: &Store, snap: &Snapshot) -> Result<Vec<String>> {
    if local::snap_get::<u64>(snap, local::RESTORED)?.is_none() {
        return Ok(Vec::new());
    }
    let mut waiting = Vec::new();
    for site in store.sites().iter().filter(|s| !s.is_central()) {
        if snap.local_get(&reported_key(site.id))?.is_none()
            && local::snap_get::<u64>(snap, &retired_key(site.id))?.is_none()
        {
            waiting.push(site.code.to_string());
        }
    }
    Ok(waiting)
}

/// Where central's restore from a backup stands (docs/OPERATIONS.md, "Central's disk is
/// lost"), for the person responsible for syncs: [`restore_status`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RestoreStatus {
    /// When central was put back (its clock then, UTC ms).
    pub since_ms: u64,
    /// The remotes central has not received an emission of since ([`restore_waiting_for`]):
    /// every remote's new changes wait for their reports.
    pub waiting_for: Vec<String>,
    /// The remotes that have not yet sent what they hold in an emission made after applying a
    /// return of the restored central: the restore stays under way (larger returns; relayed
    /// changes taken) until every one has.
    pub not_sent_back: Vec<String>,
}

/// Where central's restore from a backup stands; `None` when none is under way. A removed
/// remote is waited for by neither list.
pub fn restore_status(store: &Store) -> Result<Option<RestoreStatus>> {
    check_central(store)?;
    let snap = store.snapshot()?;
    if local::snap_get::<u64>(&snap, local::RESTORED)?.is_none() {
        return Ok(None);
    }
    let mut not_sent_back = Vec::new();
    for site in store.sites().iter().filter(|s| !s.is_central()) {
        if snap
            .local_get(&site_key(local::RESTORE_RELAYED, site.id))?
            .is_none()
            && local::snap_get::<u64>(&snap, &retired_key(site.id))?.is_none()
        {
            not_sent_back.push(site.code.to_string());
        }
    }
    Ok(Some(RestoreStatus {
        since_ms: local::snap_get(&snap, local::RESTORED_AT)?.unwrap_or(0),
        waiting_for: waiting_in(store, &snap)?,
        not_sent_back,
    }))
}

/// While a restore is under way: adds what an emission's header says its store holds to
/// [`held_by_remotes`].
fn record_held(tx: &mut outpost_engine::WriteTx<'_, '_>, knowledge: &Knowledge) -> Result<()> {
    if local::get::<u64>(tx, local::RESTORED)?.is_none() {
        return Ok(());
    }
    add_to(tx, local::RESTORE_HELD, knowledge)
}

/// While a restore is under way: central took `taken`, changes of their own site, from an
/// emission ([`local::RESTORE_TAKES`]); the next return made carries them to any remote.
pub(super) fn record_takes(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    taken: &Knowledge,
) -> Result<()> {
    if taken.is_empty() || local::get::<u64>(tx, local::RESTORED)?.is_none() {
        return Ok(());
    }
    let since = local::get::<u64>(tx, local::RETURN_SEQ)?
        .unwrap_or(0)
        .saturating_add(1);
    let mut key = local::RESTORE_TAKES.to_vec();
    key.extend_from_slice(&since.to_be_bytes());
    let mut dots: Knowledge = local::get(tx, &key)?.unwrap_or_default();
    dots.union_with(taken);
    local::put(tx, &key, &dots)
}

/// While a restore is under way: whether `remote`'s emission, reporting `knowledge` and the
/// newest return its store applied (`applied`, [`APPLIED_SETTING`]), knows a change central
/// took from its own site since the confirmations last restarted that no return `remote`
/// applied can have carried (all made before the take). It knew it from the lost central,
/// perhaps under another verdict (a document numbered twice, refused then), and must take a
/// return carrying it again: its word that it relayed what it had does not count, and the
/// confirmations restart ([`restart_confirmations`], which forgets the takes: each restarts
/// them at most once). Reads only the takes after the newest return the remote applied.
pub(super) fn knew_a_take_from_the_lost_central(
    tx: &outpost_engine::WriteTx<'_, '_>,
    remote: SiteId,
    knowledge: &Knowledge,
    applied: u64,
) -> Result<bool> {
    let Some(epoch) = local::get::<u64>(tx, local::RESTORED)? else {
        return Ok(false);
    };
    // A number above any this central gave is not one of its returns (a central lost after a
    // restore of the same backup may have given it): not taken for one.
    let issued: u64 = local::get(tx, local::RETURN_SEQ)?.unwrap_or(0);
    let claimed = if applied <= issued { applied } else { 0 };
    // The takes up to the confirmations' first return are carried by the return every remote
    // must take to answer: only those after it, and after the newest return it applied.
    let applied = crate::monitor_records::last_applied_return_seq(tx, remote)?
        .unwrap_or(0)
        .max(claimed)
        .max(epoch);
    let others = knowledge.difference(&knowledge.only(remote));
    let mut from = local::RESTORE_TAKES.to_vec();
    from.extend_from_slice(&applied.saturating_add(1).to_be_bytes());
    for (_, v) in tx.local_range(&from, &local::prefix_end(local::RESTORE_TAKES), None)? {
        let dots: Knowledge = local::snap_decode(&v)?;
        if !dots.difference(&dots.difference(&others)).is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The setting of an emission that says the number of the newest return (or bootstrap) its
/// store applied: an acknowledgement travels in one emission only, which may be lost or held.
pub const APPLIED_SETTING: &str = "applied";

/// What `header`'s emission says of the newest return its store applied ([`APPLIED_SETTING`]).
pub(super) fn applied_claim(header: &FlowHeader) -> u64 {
    header
        .config
        .as_ref()
        .and_then(|c| c.settings.get(APPLIED_SETTING))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Adds `knowledge` to the set kept under `key`.
fn add_to(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    key: &[u8],
    knowledge: &Knowledge,
) -> Result<()> {
    let mut set: Knowledge = local::get(tx, key)?.unwrap_or_default();
    if knowledge.difference(&set).is_empty() {
        return Ok(());
    }
    set.union_with(knowledge);
    local::put(tx, key, &set)
}

/// While a restore is under way: what the remotes other than `site` reported knowing of
/// `site`'s changes in their emissions received since, central lacking them then
/// ([`local::RESTORE_KNOWN`]), with [`held_by_remotes`] (what a central of an earlier version
/// recorded before it was upgraded during the window). Empty outside a restore.
pub(super) fn known_by_remotes(
    tx: &outpost_engine::WriteTx<'_, '_>,
    site: SiteId,
) -> Result<Knowledge> {
    let mut known = of_site(tx, local::RESTORE_KNOWN, site)?;
    known.union_with(&held_by_remotes(tx, site)?);
    Ok(known)
}

/// Whether a restore from a backup is under way: central still takes its own lost commits from
/// its remotes (and what they relay of other sites'), until every remote in the deployment has
/// sent back what it had ([`after_restore`]).
pub fn restore_under_way(store: &Store) -> Result<bool> {
    Ok(local::snap_get::<u64>(&store.snapshot()?, local::RESTORED)?.is_some())
}

/// The setting a return carries while central is being restored from a backup: the remote
/// merges every change in it, those whose dots it knows included. Central may now judge a
/// change differently from the central that was lost — a document numbered at two shops goes
/// to the other creator — and a remote that knew the change as refused must take it.
pub const REJUDGED_SETTING: &str = "rejudged";

/// What central takes `remote_knows` (what `remote` reported knowing) to be when it writes a
/// return: while a restore is under way, no more than what central knew when it was restored —
/// every return then carries again everything central took since, and says so
/// ([`REJUDGED_SETTING`]); and never the dots it must send `remote` again ([`Redeliver`]).
pub(super) fn return_peer(
    snap: &Snapshot,
    remote: SiteId,
    remote_knows: &Knowledge,
) -> Result<Knowledge> {
    let peer = match local::snap_get::<Knowledge>(snap, local::RESTORED_KNOWLEDGE)? {
        Some(at_restore) => remote_knows.difference(&remote_knows.difference(&at_restore)),
        None => remote_knows.clone(),
    };
    Ok(match redeliver(snap, remote)? {
        Some(r) => peer.difference(&r.dots),
        None => peer,
    })
}

/// The end of a restore: the dots of the remotes' sites that some remote reported knowing
/// (its latest emission's knowledge, its own site's aside) and central does not. They came
/// from the lost central: a change a remote's store held back then (R7) or wrote over, made by
/// a store lost since — whose number the store put back from its backup may have reused for
/// another, held back until after the window (a reserved document), with no stamp anywhere to
/// tell the two apart. When central takes one from its site later, the remotes that reported
/// knowing it get it again ([`took_late`]).
fn late_rejudge_at_the_end(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    remotes: &[SiteId],
) -> Result<()> {
    let mut late = Knowledge::new();
    for site in remotes {
        let rec: RemoteRecord = local::get(tx, &remote_key(*site))?.unwrap_or_default();
        late.union_with(&rec.knowledge.difference(&rec.knowledge.only(*site)));
    }
    let late = late
        .difference(&late.only(tx.site().id))
        .difference(tx.knowledge());
    if late.is_empty() {
        tx.local_remove(local::LATE_REJUDGE)?;
        Ok(())
    } else {
        local::put(tx, local::LATE_REJUDGE, &late)
    }
}

/// The dots of [`late_rejudge_at_the_end`] not taken yet (empty outside).
pub(super) fn late_rejudge(tx: &outpost_engine::WriteTx<'_, '_>) -> Result<Knowledge> {
    Ok(local::get(tx, local::LATE_REJUDGE)?.unwrap_or_default())
}

/// The changes central sends a remote again, judged by their value ([`REJUDGED_SETTING`]): those
/// of `dots`, taken from their site after central's restore, under numbers the remote had
/// reported knowing when central did not ([`late_rejudge_at_the_end`]). Until the remote
/// reports applying a return numbered after `since` (the return number after the last one made
/// when dots were last added), which carried them all.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Redeliver {
    pub dots: Knowledge,
    pub since: u64,
}

/// What central sends `remote` again ([`Redeliver`]), if anything.
pub(super) fn redeliver(snap: &Snapshot, remote: SiteId) -> Result<Option<Redeliver>> {
    local::snap_get(snap, &site_key(local::REDELIVER, remote))
}

/// `sender`'s emission, after central's restore, brought changes of `carried` (its own, of
/// `late`, [`late_rejudge`], taken), and accounts for `own` (what central now knows from it):
/// each remote that reported knowing a dot of both gets its changes again. A dot `own` does not
/// cover yet (a commit held back in part, R7) waits for the emission that covers it — sent
/// whole then, central not knowing it. Dots central knows already (from a relay) or of a site
/// removed since are waited for no more.
pub(super) fn took_late(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    late: &Knowledge,
    sender: SiteId,
    carried: &Knowledge,
    own: &Knowledge,
    remotes: &[SiteId],
) -> Result<()> {
    let own = own.only(sender);
    let taken = carried.difference(&carried.difference(&own));
    let mut left = late.difference(&own).difference(tx.knowledge());
    let sites: Vec<SiteId> = left.iter().map(|(s, _)| s).collect();
    for site in sites {
        if retired_in(tx, site)?.is_some() {
            left = left.difference(&left.only(site));
        }
    }
    if left.is_empty() {
        tx.local_remove(local::LATE_REJUDGE)?;
    } else if left != *late {
        local::put(tx, local::LATE_REJUDGE, &left)?;
    }
    if taken.is_empty() {
        return Ok(());
    }
    // Past a return being written meanwhile from a snapshot taken before this.
    let since: u64 = local::get::<u64>(tx, local::RETURN_SEQ)?
        .unwrap_or(0)
        .saturating_add(1);
    for site in remotes.iter().filter(|s| **s != sender) {
        if retired_in(tx, *site)?.is_some() {
            continue;
        }
        let rec: RemoteRecord = local::get(tx, &remote_key(*site))?.unwrap_or_default();
        let knew = rec.knowledge.difference(&rec.knowledge.difference(&taken));
        if knew.is_empty() {
            continue;
        }
        let key = site_key(local::REDELIVER, *site);
        let mut again: Redeliver = local::get(tx, &key)?.unwrap_or_default();
        again.dots.union_with(&knew);
        again.since = since;
        local::put(tx, &key, &again)?;
    }
    Ok(())
}

/// `remote` reported applying the return numbered `seq`: what it was to get again it has, if
/// that return was made after the last dots were added ([`Redeliver`]).
pub(super) fn redelivered(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    remote: SiteId,
    seq: u64,
) -> Result<()> {
    let key = site_key(local::REDELIVER, remote);
    if let Some(again) = local::get::<Redeliver>(tx, &key)?
        && seq > again.since
    {
        tx.local_remove(&key)?;
    }
    Ok(())
}

/// While a restore is under way: records the dots `sender`'s emission relayed (other sites'
/// changes central took from it) and those of its own it sent (`own`, now whole at central).
///
/// A commit's changes share one dot, and a remote relays only what it still holds of another
/// site's commit: a register it overwrote, or put back to the lost central's after a refusal,
/// is not in it. (A known dot merged again by value that won, `WriteTx::merge_by_value`, is
/// among them too: until its site's next trusted emission says it knows it, the others are
/// told central lacks it and what they send of it comes out already had.) Central knows the dot from then on, so until the commit's own site sends it
/// whole, every remote is told central lacks it ([`relayed_dots`]) and central merges it again
/// from whoever sends it: its own site, or — when that site is gone (removed, or set up again
/// without it) — a remote that holds it whole.
pub(super) fn record_relayed_dots(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    sender: SiteId,
    relayed: &Knowledge,
    own: &Knowledge,
) -> Result<()> {
    if local::get::<u64>(tx, local::RESTORED)?.is_none() {
        return Ok(());
    }
    let mut dots: Knowledge = local::get(tx, local::RESTORE_RELAYED_DOTS)?.unwrap_or_default();
    let before = dots.clone();
    dots.union_with(&relayed.difference(&relayed.only(tx.site().id)));
    let dots = dots.difference(&own.only(sender));
    if dots != before {
        local::put(tx, local::RESTORE_RELAYED_DOTS, &dots)?;
    }
    Ok(())
}

/// While a restore is under way: `covered`, the dots of `sender` a trusted emission of it
/// accounts for, of which central learns some only by its word (`new_by_word`: not carried, not
/// known before — written over at the remote). Such a dot is dead only if what wrote over it
/// was stamped later, which a restamp breaks: a write stamped again, lower, after the lost
/// central took the old one, which another remote may still hold, stamped later than what
/// central holds now. Central's returns to the other remotes say it lacks these dots, so a
/// remote that holds one sends it and central judges it by its value; `relayed`, the dots
/// of other sites the emission carried, are central's to judge now and leave the set.
pub(super) fn record_by_word(
    tx: &mut outpost_engine::WriteTx<'_, '_>,
    new_by_word: &Knowledge,
    relayed: &Knowledge,
) -> Result<()> {
    if local::get::<u64>(tx, local::RESTORED)?.is_none()
        || (new_by_word.is_empty() && relayed.is_empty())
    {
        return Ok(());
    }
    let mut dots: Knowledge = local::get(tx, local::RESTORE_BY_WORD)?.unwrap_or_default();
    let before = dots.clone();
    dots.union_with(new_by_word);
    let dots = dots.difference(relayed);
    if dots != before {
        local::put(tx, local::RESTORE_BY_WORD, &dots)?;
    }
    Ok(())
}

/// The dots central knows only by their own site's word since a restore (see
/// [`record_by_word`]): what its returns tell every other remote it lacks. Empty outside a
/// restore.
pub(super) fn by_word_dots(snap: &Snapshot) -> Result<Knowledge> {
    Ok(local::snap_get::<Knowledge>(snap, local::RESTORE_BY_WORD)?.unwrap_or_default())
}

/// The dots central took only from remotes relaying them since a restore, their own sites not
/// having sent them yet (see [`record_relayed_dots`]): what central tells every remote it lacks,
/// and merges again when one sends them. Empty outside a restore.
pub(super) fn relayed_dots(snap: &Snapshot) -> Result<Knowledge> {
    Ok(local::snap_get::<Knowledge>(snap, local::RESTORE_RELAYED_DOTS)?.unwrap_or_default())
}

/// Central took a relayed change, or a commit it had taken in part from a relay came whole, or
/// a remote's own changes another remote reported holding came back (in any emission of it):
/// the other remotes may hold that commit in part, knowing its dot (a field put back after a refusal), or know it under the lost
/// central's verdict. Or an emission processed after a newer one of its remote (a file carried
/// by hand) brought a change of that remote's own that the newer one said it knows: the remote
/// may have written over it since, and takes it again only from a return judged anew. The
/// restore goes on until each has taken a return made from now on (carrying it
/// again, rejudged) and sent a trusted emission after it. Each restart needs central to take a
/// register newer than the one it held, so the window does close; what comes back on different
/// days restarts it each time.
pub(super) fn restart_confirmations(tx: &mut outpost_engine::WriteTx<'_, '_>) -> Result<()> {
    if local::get::<u64>(tx, local::RESTORED)?.is_none() {
        return Ok(());
    }
    let next_return = local::get::<u64>(tx, local::RETURN_SEQ)?.unwrap_or(0) + 1;
    local::put(tx, local::RESTORED, &next_return)?;
    // Every take so far is carried by the returns every remote must now take.
    local::remove_all(tx, local::RESTORE_TAKES)?;
    local::remove_all(tx, local::RESTORE_CONFIRMED)?;
    local::remove_all(tx, local::RESTORE_RELAYED)
}

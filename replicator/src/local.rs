//! The replicator's rows in the store's local side table (not replicated): typed get and put,
//! and the key layout (docs/flow-format.md, "Where flows and the journal are kept").
//!
//! Every key of the local table is named here, the site server's too ([`SITE_USERS`],
//! [`SITE_LOG`], [`SITE_LOG_SEQ`]), in one registry ([`REGISTRY`]) whose test checks that no
//! prefix starts another: a range scan over one prefix never reads another's rows.

use outpost_engine::{Snapshot, WriteTx};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::flow::FlowId;
use crate::{Error, Result};

/// Journal rows: `j/` + flow id.
pub(crate) const JOURNAL: &[u8] = b"j/";
/// Stored flow bytes: `c/` + receipt number (u64 BE) + chunk number (u32 BE).
pub(crate) const CHUNKS: &[u8] = b"c/";
/// Central: where a stored flow reads another stored flow whole (the common part of the
/// returns, stored once): `sp/` + receipt (u64 BE) + chunk number (u32 BE) → that flow's receipt.
pub(crate) const SPLICES: &[u8] = b"sp/";
/// Central: how many stored flows read a common part: `sn/` + its receipt (u64 BE) → count.
pub(crate) const SHARED_REFS: &[u8] = b"sn/";
/// Central: the receipt of the common part being stored and shared right now, pinned (one
/// count in `sn/`) until every return of its batch is written: a crash meanwhile leaves it here,
/// and the next batch unpins it.
pub(crate) const SHARING: &[u8] = b"cs/sharing";
/// Central: emissions file ready and not yet processed: `pe/` + receipt number (u64 BE).
pub(crate) const PENDING: &[u8] = b"pe/";
/// Central: the next receipt number.
pub(crate) const RECEIPT_SEQ: &[u8] = b"cs/receipt";
/// Central: the deployment's identity (u64), carried by every flow as the setting
/// `deployment`, so that a file of another deployment is refused.
pub(crate) const DEPLOYMENT: &[u8] = b"cs/deployment";
/// Central: flows refused at receipt (nothing of them kept): `rf/` + receipt number (u64 BE).
pub(crate) const REFUSED_FLOWS: &[u8] = b"rf/";
/// Central: the next return's sequence number.
pub(crate) const RETURN_SEQ: &[u8] = b"cs/return";
/// Central: restored from a backup; the number of its first return after the restore.
pub(crate) const RESTORED: &[u8] = b"cs/restored";
/// Central, while a restore is under way: what it knew when it was restored (the backup's
/// knowledge), below which its returns send everything again (see `central::after_restore`).
pub(crate) const RESTORED_KNOWLEDGE: &[u8] = b"cs/knowledge-at-restore";
/// Central, after a restore: the remotes known to have applied a return made since, whose
/// emissions' coverage claims central trusts again: `cc/` + site id (u16 BE).
pub(crate) const RESTORE_CONFIRMED: &[u8] = b"cc/";
/// Central, while a restore is under way: the dots it took from a remote relaying them and not
/// (yet) from their own site (`Knowledge`); a commit may have come in part.
pub(crate) const RESTORE_RELAYED_DOTS: &[u8] = b"cs/relayed-dots";
/// Central, while a restore is under way: the dots of a remote it knows only by that remote's
/// word (covered by a trusted emission that did not carry them: written over there), and no
/// other remote has relayed since (`Knowledge`; see `central::restore::record_by_word`).
pub(crate) const RESTORE_BY_WORD: &[u8] = b"cs/by-word-dots";
/// Central, once its restore from a backup is over: the dots of the remotes' sites some remote
/// reported knowing when it ended that central did not know (`Knowledge`; see
/// `central::restore::late_rejudge_at_the_end`): learnt from the lost central, perhaps under a number a
/// store put back from its backup reused.
pub(crate) const LATE_REJUDGE: &[u8] = b"cs/late-rejudge";
/// Central: the dots of [`LATE_REJUDGE`] it took since, to be sent again to a remote that reported
/// knowing them, judged by value (`central::restore::Redeliver`): `cq/` + site id (u16 BE).
pub(crate) const REDELIVER: &[u8] = b"cq/";
/// Central, while a restore is under way: what the remotes' emissions received since reported
/// holding (the union of their headers' knowledge; see `central::held_by_remotes`).
pub(crate) const RESTORE_HELD: &[u8] = b"cs/held-by-remotes";
/// Central, while a restore is under way: every change of another site than their own the
/// remotes' emissions received since (taken or put off) reported knowing while central lacked
/// it, whichever site central has begun taking new changes from since (unlike
/// [`RESTORE_HELD`]): a change of a site's own central takes that one of them knew may be known
/// there under the lost central's verdict.
pub(crate) const RESTORE_KNOWN: &[u8] = b"cs/known-by-remotes";
/// Central, while a restore is under way: the changes of their own site it took from the
/// remotes' emissions since the confirmations last restarted: `cp/` + the number of the first
/// return made after (u64 BE) → those changes (`central::restore::record_takes`).
pub(crate) const RESTORE_TAKES: &[u8] = b"cp/";
/// Central, after a restore: the remotes whose emissions since carried back what they had:
/// `cx/` + site id (u16 BE).
pub(crate) const RESTORE_RELAYED: &[u8] = b"cx/";
/// Central, while a restore is under way: the remotes it has received an emission of since
/// (each has reported what it holds): `cy/` + site id (u16 BE).
pub(crate) const RESTORE_REPORTED: &[u8] = b"cy/";
/// Central, while a restore is under way, in a store of a version before 2026-12-06: the remotes
/// whose first trusted emission since brought back changes of their own (`cz/` + site id, u16
/// BE). No longer written; removed with the restore's other keys.
pub(crate) const RESTORE_SENT_BACK: &[u8] = b"cz/";
/// Central, while a restore is under way: the number of the restored central's first return
/// (unlike [`RESTORED`], kept when the confirmations restart).
pub(crate) const RESTORE_FIRST_RETURN: &[u8] = b"cs/restore-first-return";
/// Central whose store a remote's emission showed was put back without `central restore`
/// (`central::receive`): why, in words. It takes no emission and gives no return until the
/// restore ([`crate::central::after_restore`]) removes it.
pub(crate) const PUT_BACK: &[u8] = b"cs/put-back";
/// Central, while a restore is under way: its clock (UTC ms) when it was restored.
pub(crate) const RESTORED_AT: &[u8] = b"cs/restore-time";
/// Central, while a restore is under way: what a remote's emissions made after the restore
/// (after applying a return of the restored central, or stamped past the restore and received
/// at once) said its store holds of its own changes (their common part):
/// `cf/` + site id (u16 BE) → knowledge.
pub(crate) const RESTORE_OWN_CLAIMS: &[u8] = b"cf/";
/// Central, while a restore is under way: the remotes it has taken new changes of their own
/// from since (what the others report of them from then on is not counted): `cg/` + site id
/// (u16 BE).
pub(crate) const RESTORE_TAKEN_FROM: &[u8] = b"cg/";
/// Central, while a restore is under way: the changes of a site that central lacked when
/// another remote reported holding them (its tips, `incarnation::TIPS_SETTING`), with their
/// stamps: `ct/` + site id (u16 BE) → change number → stamp.
pub(crate) const RESTORE_TIPS: &[u8] = b"ct/";
/// Central, while a restore is under way: per remote, the newest stamp the lost central is
/// known to have sent it or taken from it — the stamps of the changes the remote's emissions
/// report holding (their tips) or bring back of central's own, and of its own changes other
/// remotes report holding. It vouches for the remote's stamps as what central last sent it does
/// ([`SENT_HIGH`]): `cv/` + site id (u16 BE) → stamp.
pub(crate) const RESTORE_VOUCHED: &[u8] = b"cv/";
/// Central, while a restore is under way: its own lost changes taken back since, one entry per
/// commit: sequence number → stamp. A remote whose emission says it holds one took that stamp
/// from the lost central, whichever remote sent it back first ([`RESTORE_VOUCHED`] likewise).
pub(crate) const RESTORE_OWN_BACK: &[u8] = b"cs/restore-own-back";
/// Central: the sync configuration (C4).
pub(crate) const CONFIG: &[u8] = b"cs/config";
/// Central: what it keeps per remote: `cr/` + site id (u16 BE).
pub(crate) const CENTRAL_REMOTE: &[u8] = b"cr/";
/// Central: the digest of each site's network credential: `ck/` + site id (u16 BE).
pub(crate) const CREDENTIALS: &[u8] = b"ck/";
/// Central: which store speaks for each remote (`incarnation::SiteIncarnation`): `ci/` + site
/// id (u16 BE).
pub(crate) const INCARNATIONS: &[u8] = b"ci/";
/// Central: each emission's creation stamp, to recognise a number used again: `es/` + flow id.
pub(crate) const EMISSION_STAMPS: &[u8] = b"es/";
/// Remote: its store's identity (`incarnation::StoreIdentity`).
pub(crate) const REMOTE_IDENTITY: &[u8] = b"ri";
/// Remote: when its executor last made the fixed-time emission (UTC ms), M1 across restarts.
pub(crate) const REMOTE_FIXED_EMISSION: &[u8] = b"rx";
/// Remote: its latest emission's number and creation stamp, which the next one carries.
pub(crate) const REMOTE_PREV_EMISSION: &[u8] = b"rp";
/// Remote: the number its store's commits start from (`incarnation::numbering_offset`); absent
/// in a store set up by a version before numbering blocks.
pub(crate) const REMOTE_NUMBERED_FROM: &[u8] = b"rn";
/// Remote: for each other remote site, the highest-numbered change of it received and its
/// stamp (`incarnation::Tips`), which its emissions report.
pub(crate) const REMOTE_TIPS: &[u8] = b"rh";
/// Remote: its sync state.
pub(crate) const REMOTE_STATE: &[u8] = b"rs";
/// Remote: its log of flows sent and received: `rl/` + flow id.
pub(crate) const REMOTE_LOG: &[u8] = b"rl/";
/// Remote: refused changes central sent back: `rr/` + return id + index (u32 BE).
pub(crate) const REMOTE_REJECTIONS: &[u8] = b"rr/";

/// The monitor: the journal by file-ready time: `jt/` + time (u64 BE) + flow id.
pub(crate) const JOURNAL_BY_TIME: &[u8] = b"jt/";
/// The monitor: refused changes: `rj/` + time (u64 BE) + flow id + index (u32 BE).
pub(crate) const REJECTIONS: &[u8] = b"rj/";
/// The monitor: what central has seen of each remote: `sw/` + site id (u16 BE).
pub(crate) const SITE_SEEN: &[u8] = b"sw/";
/// The monitor: events: `ev/` + number (u64 BE).
pub(crate) const EVENTS: &[u8] = b"ev/";
/// The monitor: the next event number.
pub(crate) const EVENT_SEQ: &[u8] = b"cs/event";
/// The monitor: emissions whose latest processing failed (not cut off): `fp/` + flow id.
pub(crate) const FAILED: &[u8] = b"fp/";
/// The monitor: alerts: `al/` + number (u64 BE).
pub(crate) const ALERTS: &[u8] = b"al/";
/// Central: remotes removed from the deployment (`rt/` + site id → when, UTC ms).
pub(crate) const RETIRED: &[u8] = b"rt/";
/// Central: when a removed remote still syncing last raised its event: `rc/` + site id (u16 BE).
pub(crate) const REMOVED_CALLS: &[u8] = b"rc/";
/// Central: documents each remote holds reserved (R7), as its newest emission reported them
/// (`rv/` + site id → [`crate::monitor_records::Reserved`]).
pub(crate) const RESERVED_REPORTED: &[u8] = b"rv/";
/// The monitor: the alerts' bookkeeping.
pub(crate) const ALERT_STATE: &[u8] = b"cs/alerts";
/// The monitor: how many alerts were left out of the e-mail since the last one sent (the
/// backlog kept while e-mail fails is bounded), u64.
pub(crate) const MAIL_LEFT_OUT: &[u8] = b"cs/mail-left-out";
/// Central: the first return made for a remote after the newest it reported applied — its
/// number and when it was made: `un/` + site id (u16 BE) → (u64, u64). The monitor's stale
/// check (a remote that emits but applies no return) counts from it.
pub(crate) const UNAPPLIED_SINCE: &[u8] = b"un/";
/// The site server (`outpost-server`): its workstation users: `wu/` + user code.
pub const SITE_USERS: &[u8] = b"wu/";
/// The site server: its workstation log: `wl/` + entry number (u64 BE).
pub const SITE_LOG: &[u8] = b"wl/";
/// The site server: the next entry number of its workstation log.
pub const SITE_LOG_SEQ: &[u8] = b"ws/log";
/// The site server: the lease of each reservation a workstation holds, kept so that a restart
/// gives each the lease it had, and none to a reservation made without one: `wr/` + table + 0 +
/// key → JSON `{holder, until_ms, lease_ms}`.
pub const SITE_LEASES: &[u8] = b"wr/";
/// The site server: set once a server that keeps leases (`SITE_LEASES`) has run on the store.
pub const SITE_LEASES_KEPT: &[u8] = b"ws/leases";
/// Central: its newest stamp (issued or taken) when it last wrote a return or the bootstrap of a
/// remote — the latest time the remote's clock can have taken from central (R2: its stamps up
/// to it are not held for clock skew): `ch/` + site id (u16 BE) → stamp (u64).
pub(crate) const SENT_HIGH: &[u8] = b"ch/";
/// Central: the remotes whose latest emission said they read the refusals of rule R2 (setting
/// `incarnation::RULES_SETTING`): `cu/` + site id (u16 BE) → (). A remote of an earlier version
/// cannot decode that rule in a return, and gets such a refusal under rule R1, with its reason.
pub(crate) const READS_R2: &[u8] = b"cu/";

/// Central: what the newest emission received of each remote (by number) said its store knew
/// of that remote's own changes (`incarnation::NewestClaim`): `cn/` + site id (u16 BE).
pub(crate) const NEWEST_CLAIMS: &[u8] = b"cn/";
/// Central: what the newest emission received of each remote (by number) named as not
/// travelling of its own commits, with their stamps (`incarnation::late_renumbered`): `cw/` +
/// site id (u16 BE) → number → stamp.
pub(crate) const NEWEST_UNSENT: &[u8] = b"cw/";

/// Every key and key prefix of the local table, by name.
pub const REGISTRY: &[(&str, &[u8])] = &[
    ("JOURNAL", JOURNAL),
    ("CHUNKS", CHUNKS),
    ("SPLICES", SPLICES),
    ("SHARED_REFS", SHARED_REFS),
    ("SHARING", SHARING),
    ("PENDING", PENDING),
    ("RECEIPT_SEQ", RECEIPT_SEQ),
    ("DEPLOYMENT", DEPLOYMENT),
    ("REFUSED_FLOWS", REFUSED_FLOWS),
    ("RETURN_SEQ", RETURN_SEQ),
    ("RESTORED", RESTORED),
    ("RESTORED_KNOWLEDGE", RESTORED_KNOWLEDGE),
    ("RESTORE_CONFIRMED", RESTORE_CONFIRMED),
    ("RESTORE_RELAYED_DOTS", RESTORE_RELAYED_DOTS),
    ("RESTORE_BY_WORD", RESTORE_BY_WORD),
    ("RESTORE_RELAYED", RESTORE_RELAYED),
    ("RESTORE_HELD", RESTORE_HELD),
    ("RESTORE_KNOWN", RESTORE_KNOWN),
    ("RESTORE_TAKES", RESTORE_TAKES),
    ("LATE_REJUDGE", LATE_REJUDGE),
    ("REDELIVER", REDELIVER),
    ("RESTORE_REPORTED", RESTORE_REPORTED),
    ("RESTORE_SENT_BACK", RESTORE_SENT_BACK),
    ("RESTORE_FIRST_RETURN", RESTORE_FIRST_RETURN),
    ("RESTORED_AT", RESTORED_AT),
    ("PUT_BACK", PUT_BACK),
    ("RESTORE_OWN_CLAIMS", RESTORE_OWN_CLAIMS),
    ("RESTORE_TAKEN_FROM", RESTORE_TAKEN_FROM),
    ("RESTORE_TIPS", RESTORE_TIPS),
    ("RESTORE_VOUCHED", RESTORE_VOUCHED),
    ("RESTORE_OWN_BACK", RESTORE_OWN_BACK),
    ("SENT_HIGH", SENT_HIGH),
    ("READS_R2", READS_R2),
    ("NEWEST_CLAIMS", NEWEST_CLAIMS),
    ("NEWEST_UNSENT", NEWEST_UNSENT),
    ("CONFIG", CONFIG),
    ("CENTRAL_REMOTE", CENTRAL_REMOTE),
    ("CREDENTIALS", CREDENTIALS),
    ("INCARNATIONS", INCARNATIONS),
    ("EMISSION_STAMPS", EMISSION_STAMPS),
    ("REMOTE_IDENTITY", REMOTE_IDENTITY),
    ("REMOTE_FIXED_EMISSION", REMOTE_FIXED_EMISSION),
    ("REMOTE_PREV_EMISSION", REMOTE_PREV_EMISSION),
    ("REMOTE_NUMBERED_FROM", REMOTE_NUMBERED_FROM),
    ("REMOTE_TIPS", REMOTE_TIPS),
    ("REMOTE_STATE", REMOTE_STATE),
    ("REMOTE_LOG", REMOTE_LOG),
    ("REMOTE_REJECTIONS", REMOTE_REJECTIONS),
    ("JOURNAL_BY_TIME", JOURNAL_BY_TIME),
    ("REJECTIONS", REJECTIONS),
    ("SITE_SEEN", SITE_SEEN),
    ("EVENTS", EVENTS),
    ("EVENT_SEQ", EVENT_SEQ),
    ("FAILED", FAILED),
    ("ALERTS", ALERTS),
    ("ALERT_STATE", ALERT_STATE),
    ("MAIL_LEFT_OUT", MAIL_LEFT_OUT),
    ("UNAPPLIED_SINCE", UNAPPLIED_SINCE),
    ("RETIRED", RETIRED),
    ("REMOVED_CALLS", REMOVED_CALLS),
    ("RESERVED_REPORTED", RESERVED_REPORTED),
    ("SITE_USERS", SITE_USERS),
    ("SITE_LOG", SITE_LOG),
    ("SITE_LOG_SEQ", SITE_LOG_SEQ),
    ("SITE_LEASES", SITE_LEASES),
    ("SITE_LEASES_KEPT", SITE_LEASES_KEPT),
];

pub(crate) fn flow_key(prefix: &[u8], id: FlowId) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&id.site.0.to_be_bytes());
    k.extend_from_slice(&id.seq.to_be_bytes());
    k
}

/// The first key after every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xFF; prefix.len() + 1]
}

pub(crate) fn snap_decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    decode(bytes)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| {
        Error::Engine(outpost_engine::Error::Corrupt(format!(
            "replicator row: {e}"
        )))
    })
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| {
        Error::Engine(outpost_engine::Error::Corrupt(format!(
            "replicator row: {e}"
        )))
    })
}

pub(crate) fn get<T: DeserializeOwned>(tx: &WriteTx<'_, '_>, key: &[u8]) -> Result<Option<T>> {
    tx.local_get(key)?.map(|b| decode(&b)).transpose()
}

pub(crate) fn put<T: Serialize>(tx: &mut WriteTx<'_, '_>, key: &[u8], value: &T) -> Result<()> {
    Ok(tx.local_put(key, &encode(value)?)?)
}

pub(crate) fn snap_get<T: DeserializeOwned>(snap: &Snapshot, key: &[u8]) -> Result<Option<T>> {
    snap.local_get(key)?.map(|b| decode(&b)).transpose()
}

pub(crate) fn snap_all<T: DeserializeOwned>(snap: &Snapshot, prefix: &[u8]) -> Result<Vec<T>> {
    snap.local_range(prefix, &prefix_end(prefix), None)?
        .into_iter()
        .map(|(_, v)| decode(&v))
        .collect()
}

pub(crate) fn tx_all<T: DeserializeOwned>(
    tx: &WriteTx<'_, '_>,
    prefix: &[u8],
) -> Result<Vec<(Vec<u8>, T)>> {
    tx.local_range(prefix, &prefix_end(prefix), None)?
        .into_iter()
        .map(|(k, v)| Ok((k, decode(&v)?)))
        .collect()
}

/// Removes every row whose key starts with `prefix`.
pub(crate) fn remove_all(tx: &mut WriteTx<'_, '_>, prefix: &[u8]) -> Result<()> {
    for (k, _) in tx.local_range(prefix, &prefix_end(prefix), None)? {
        tx.local_remove(&k)?;
    }
    Ok(())
}

/// Runs a replicator transaction on the store: the closure's replicator errors abort it too.
pub(crate) fn write<R>(
    store: &outpost_engine::Store,
    f: impl FnOnce(&mut WriteTx<'_, '_>) -> Result<R>,
) -> Result<R> {
    let mut inner: Option<Error> = None;
    let out = store.write(|tx| match f(tx) {
        Ok(r) => Ok(r),
        Err(Error::Engine(e)) => Err(e),
        Err(other) => {
            let msg = other.to_string();
            inner = Some(other);
            Err(outpost_engine::Error::Input(msg.into()))
        }
    });
    match (out, inner) {
        (Ok(r), _) => Ok(r),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(Error::Engine(e)),
    }
}

/// The key of [`SENT_HIGH`] for `site`.
pub(crate) fn sent_high_key(site: outpost_engine::SiteId) -> Vec<u8> {
    let mut key = SENT_HIGH.to_vec();
    key.extend_from_slice(&site.0.to_be_bytes());
    key
}

/// [`READS_R2`]'s key for `site`.
pub(crate) fn reads_r2_key(site: outpost_engine::SiteId) -> Vec<u8> {
    let mut key = READS_R2.to_vec();
    key.extend_from_slice(&site.0.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::REGISTRY;

    /// A key or prefix that started another would let a range scan over the one read the
    /// other's rows (or a single key fall inside a prefix's range).
    #[test]
    fn no_key_prefix_of_the_local_table_starts_another() {
        for (i, (name, key)) in REGISTRY.iter().enumerate() {
            for (other, okey) in REGISTRY.iter().skip(i + 1) {
                assert!(
                    !key.starts_with(okey) && !okey.starts_with(key),
                    "{name} ({:?}) and {other} ({:?}) overlap",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(okey)
                );
            }
        }
    }
}

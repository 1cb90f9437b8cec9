//! Which store speaks for a remote site (R1: no two stores ever emit the same dot for
//! different content).
//!
//! A remote's changes are numbered by its store (dots). Two stores speaking for one site — a shop
//! PC set up again from its old bootstrap, a second machine set up by mistake, a store restored
//! from an old backup of itself — would number different changes alike, and central would take
//! the second of each pair for one it already holds: a silent loss. So:
//!
//! - every store draws its own identity when it is set up from a bootstrap, and every bootstrap
//!   carries the *provisioning* central issued it under (0 from `add-remote`, one more at each
//!   [`reprovision`]); an emission carries both (setting [`STORE_SETTING`]);
//! - central binds a site to the first store that emits under its current provisioning, and
//!   refuses at receipt an emission of another store, of a superseded provisioning or of one it
//!   never issued — kept in the list of refused flows, and an alert;
//! - central remembers each emission's creation stamp: a store's emissions are numbered and
//!   stamped in the same order, so an emission reusing a number with another stamp, or numbered
//!   below one received but made after it, comes from a store restored from a backup and is
//!   refused the same way;
//! - a store set up from a bootstrap numbers its commits past every one of its site's that
//!   central knew when it wrote the bootstrap (after a reprovisioning, further, past what every
//!   store of the earlier provisioning may have numbered), in a block of its own drawn from its
//!   identity ([`numbering_offset`]): two stores set up from one bootstrap number nothing alike
//!   even where central cannot tell them apart (one of them unknown to a central restored from
//!   a backup); an emission carries where its store's numbering starts
//!   ([`NUMBERED_FROM_SETTING`]).
//!
//! The operator's way out is always the same: `outpost central reprovision --site CODE`, and
//! the machine set up again from the new bootstrap (docs/OPERATIONS.md).

use outpost_engine::{Knowledge, SiteId, Stamp, WriteTx};
use serde::{Deserialize, Serialize};

use crate::flow::FlowHeader;
use crate::local;
use crate::{Error, Result};

/// The setting an emission carries: the store that made it, `PROVISIONING/ID` (decimal, then 16
/// hex digits).
pub const STORE_SETTING: &str = "store";

/// The setting a bootstrap carries: the provisioning central issued it under.
pub const PROVISIONING_SETTING: &str = "provisioning";

/// The setting a bootstrap carries: the number of the store's first emission (past every
/// emission central received of the site).
pub const FIRST_EMISSION_SETTING: &str = "first_emission";

/// The setting an emission carries: its store's previous emission, `SEQ/STAMP` (hex stamp).
pub const PREV_SETTING: &str = "prev";

/// The setting of a return naming the store it was made for (a [`StoreIdentity`]): the one
/// central takes its site's changes from. A return is computed from what that store reported
/// holding; another store of the site (set up again since) refuses it.
pub const FOR_STORE_SETTING: &str = "for_store";

/// The setting [`PREV_SETTING`] for an emission number and stamp.
pub fn prev_setting(seq: u64, stamp: Stamp) -> String {
    format!("{seq}/{}", stamp_text(stamp))
}

/// A stamp as the settings write it: 16 hex digits.
fn stamp_text(stamp: Stamp) -> String {
    format!("{:016x}", stamp.as_u64())
}

/// A stamp as [`stamp_text`] writes it.
fn parse_stamp(text: &str) -> Option<Stamp> {
    Some(Stamp::from_u64(u64::from_str_radix(text, 16).ok()?))
}

/// The setting an emission carries: the newest stamp a central sent its store or took from it
/// ([`outpost_engine::Store::settled_high`], a `u64` in decimal). It vouches for the remote's
/// stamps as central's own record of what it last sent the remote does — and outlives central's
/// restore from a backup, which loses that record: a remote whose writes only the lost central
/// took, once restamped (never below them), is not held for them.
pub const SETTLED_SETTING: &str = "settled";

/// The setting an emission carries: the rules added to a return's refusals since flow format 3
/// that its store decodes, joined by `,` (`R2`, since 2026-12-05). Central returns a refusal of
/// such a rule to a remote that does not say it under rule R1, with the same reason: a remote
/// of an earlier version could not read the return at all.
pub const RULES_SETTING: &str = "rules";

/// Whether `header`'s emission says its store decodes refusals of rule R2 ([`RULES_SETTING`]).
pub fn reads_r2(header: &crate::flow::FlowHeader) -> bool {
    header
        .config
        .as_ref()
        .and_then(|c| c.settings.get(RULES_SETTING))
        .is_some_and(|v| v.split(',').any(|r| r == "R2"))
}

/// The setting an emission carries: for each other remote site, the highest-numbered change of
/// it its store received, and that change's stamp: `SITE:SEQ/STAMP` (hex stamp) joined by
/// `,` ([`local::REMOTE_TIPS`]); `SITE:/STAMP` when the number is the highest the emission's
/// knowledge holds of that site (most of them: about 15 bytes fewer each). After central's
/// restore from a backup, a store put back from its own backup may number a new change as one
/// the lost central had relayed to the others: the stamps tell them apart ([`Reports::renumbered`]).
pub const TIPS_SETTING: &str = "tips";

/// The setting an emission carries when, of some of its store's own commits that central has
/// not confirmed, no change travels in it — each written over by a later change, or held back
/// with a reserved document (R7): `SEQ/STAMP` (hex stamp) of each, joined by `,`. Central
/// compares them with the stamps the other remotes report ([`TIPS_SETTING`]) as it does a
/// change's.
pub const UNSENT_SETTING: &str = "unsent";

/// At most this many commits in [`UNSENT_SETTING`], the lowest-numbered (about 33 bytes each in
/// the header): a store put back from its backup renumbers from its oldest unconfirmed commit
/// on, so those are the ones central may need; the bound keeps the header of a remote that
/// gets neither returns nor acknowledgements far below its limit.
pub const UNSENT_MAX: usize = 16_384;

/// The setting [`UNSENT_SETTING`] for `commits` (number, stamp).
pub fn unsent_setting(commits: &[(u64, Stamp)]) -> String {
    let entries: Vec<String> = commits
        .iter()
        .map(|(seq, stamp)| prev_setting(*seq, *stamp))
        .collect();
    entries.join(",")
}

/// The commits [`UNSENT_SETTING`] says; an entry that does not parse is skipped.
pub fn parse_unsent(text: &str) -> Vec<(u64, Stamp)> {
    text.split(',').filter_map(parse_prev).collect()
}

/// A change numbered by a remote's store as one another remote holds with another stamp
/// ([`Reports::renumbered`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renumbered {
    /// Its number.
    pub seq: u64,
    /// The stamp another remote reported for that number.
    pub theirs: Stamp,
    /// The stamp the emission gives it.
    pub this: Stamp,
    /// Whether the emission carries a change of it (else it names it in [`UNSENT_SETTING`]).
    pub carried: bool,
}

/// What a remote holds of each other remote site: its highest-numbered change and its stamp.
pub type Tips = std::collections::BTreeMap<SiteId, (u64, Stamp)>;

/// The setting [`TIPS_SETTING`] for `tips`, in an emission whose header states `knowledge`.
pub fn tips_setting(tips: &Tips, knowledge: &Knowledge) -> String {
    let mut text = String::new();
    for (site, (seq, stamp)) in tips {
        if !text.is_empty() {
            text.push(',');
        }
        if knowledge.max_seq(*site) == *seq {
            text.push_str(&format!("{}:/{}", site.0, stamp_text(*stamp)));
        } else {
            text.push_str(&format!("{}:{}", site.0, prev_setting(*seq, *stamp)));
        }
    }
    text
}

/// The tips [`TIPS_SETTING`] says, in an emission whose header states `knowledge`; an entry
/// that does not parse is skipped (it only weakens the check it serves).
pub fn parse_tips(text: &str, knowledge: &Knowledge) -> Vec<(SiteId, u64, Stamp)> {
    text.split(',')
        .filter_map(|entry| {
            let (site, rest) = entry.split_once(':')?;
            let site = SiteId(site.parse().ok()?);
            let (seq, stamp) = match rest.strip_prefix('/') {
                Some(stamp) => {
                    let seq = knowledge.max_seq(site);
                    if seq == 0 {
                        return None;
                    }
                    (seq, parse_stamp(stamp)?)
                }
                None => parse_prev(rest)?,
            };
            Some((site, seq, stamp))
        })
        .collect()
}

/// Adds to `tips` what a batch of changes received from central says: for each site other
/// than `except` (this store's and central's), its highest-numbered change. True if it moved.
pub(crate) fn note_tips(
    tips: &mut Tips,
    changes: &[outpost_engine::Incoming],
    except: [SiteId; 2],
) -> bool {
    let mut moved = false;
    for c in changes {
        let outpost_engine::Incoming::New(c) = c else {
            continue;
        };
        if except.contains(&c.dot.site) {
            continue;
        }
        let tip = tips.entry(c.dot.site).or_insert((0, Stamp::default()));
        if c.dot.seq > tip.0 {
            *tip = (c.dot.seq, c.stamp);
            moved = true;
        }
    }
    moved
}

fn parse_prev(s: &str) -> Option<(u64, Stamp)> {
    let (seq, stamp) = s.split_once('/')?;
    Some((seq.parse().ok()?, parse_stamp(stamp)?))
}

/// The size of a store's numbering block: more commits than a store ever makes. A store set up
/// from a bootstrap numbers its commits in the block [`numbering_offset`] draws for it.
pub const NUMBERING_BLOCK: u64 = 1 << 32;

/// How many blocks a store's numbering may start at, past the bootstrap's first number: two
/// stores set up from one bootstrap draw the same with a chance of one in this.
pub const NUMBERING_BLOCKS: u64 = 1 << 16;

/// How far past central's knowledge of the site a reprovisioned store starts numbering: past
/// every block a store of the earlier provisioning may number in, including the commits of an
/// emission of it received but not yet processed.
pub const REPROVISION_SEQ_JUMP: u64 = NUMBERING_BLOCK * (NUMBERING_BLOCKS + 1);

/// Where a store with identity `id` numbers its commits, past the first number its bootstrap
/// allows: a block drawn from its identity (random), so that two stores set up from one
/// bootstrap — a shop PC set up again from its old file — number different changes differently.
pub fn numbering_offset(id: u64) -> u64 {
    (id % NUMBERING_BLOCKS) * NUMBERING_BLOCK
}

/// The setting an emission carries: the number its store's commits start from (decimal). Central
/// checks that a store holds its own changes (a store restored from a backup does not) within
/// its block only: the site's other changes may be a lost store's, relayed by other remotes.
pub const NUMBERED_FROM_SETTING: &str = "numbered_from";

/// How far a site's provisioning number jumps when it is reprovisioned while central is being
/// restored from a backup: past every provisioning issued since the backup, which the restored
/// central does not know of.
pub const PROVISIONING_RESTORE_JUMP: u32 = 1 << 16;

/// How many reprovisionings of one site between central's backup and its loss a reprovisioning
/// during the restore numbers past (`start_provisioning`).
pub const REPROVISIONINGS_SINCE_BACKUP_COVERED: u64 = 2;

/// The setting a bootstrap carries: the number its store's commits start from at least (the
/// floor central set when it reprovisioned the site; absent or 0: past what the bootstrap
/// carries of the site, [`REPROVISION_SEQ_JUMP`] further once reprovisioned).
pub const FIRST_COMMIT_SETTING: &str = "first_commit";

/// The store an emission comes from.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct StoreIdentity {
    /// The provisioning its bootstrap was issued under.
    pub provisioning: u32,
    /// Drawn when the store was set up.
    pub id: u64,
}

impl StoreIdentity {
    /// As the setting [`STORE_SETTING`] holds it.
    pub fn to_setting(&self) -> String {
        format!("{}/{:016x}", self.provisioning, self.id)
    }

    /// Reads the setting back; `None` when malformed.
    pub fn parse(s: &str) -> Option<Self> {
        let (p, id) = s.split_once('/')?;
        Some(StoreIdentity {
            provisioning: p.parse().ok()?,
            id: u64::from_str_radix(id, 16).ok()?,
        })
    }
}

impl std::fmt::Display for StoreIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "store {:016x} (provisioning {})",
            self.id, self.provisioning
        )
    }
}

/// What central keeps per remote about the store speaking for it: `ci/` + site id.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct SiteIncarnation {
    /// The current provisioning.
    provisioning: u32,
    /// The store bound to it: the first that emitted under it.
    store: Option<u64>,
    /// The newest emission received (by number) and its sender's wall time when it was made.
    newest: Option<(u64, u64)>,
    /// The bound store was caught numbering again from an earlier point (restored from a
    /// backup): every emission of it is refused until the site is reprovisioned.
    forked: bool,
    /// The site's commits below this number are those of stores before the current
    /// provisioning (some may still arrive in emissions of theirs received before it).
    floor: u64,
}

/// What the newest emission received of a remote (by number) said its store knew of the
/// remote's own changes, with the store it came from: `cn/` + site id. A store's knowledge of
/// its own changes only grows, so an emission numbered before that one cannot claim one it did
/// not know — unless another store numbered alike made it (a file of a lost store carried in
/// late, after its restored copy synced).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct NewestClaim {
    provisioning: u32,
    store: Option<u64>,
    seq: u64,
    own: Knowledge,
}

fn claim_key(site: SiteId) -> Vec<u8> {
    let mut k = local::NEWEST_CLAIMS.to_vec();
    k.extend_from_slice(&site.0.to_be_bytes());
    k
}

/// The store central takes `site`'s changes from, if one emitted under the current
/// provisioning.
pub(crate) fn bound_store(
    snap: &outpost_engine::Snapshot,
    site: SiteId,
) -> Result<Option<StoreIdentity>> {
    let inc: SiteIncarnation = local::snap_get(snap, &incarnation_key(site))?.unwrap_or_default();
    Ok(inc.store.map(|id| StoreIdentity {
        provisioning: inc.provisioning,
        id,
    }))
}

/// What central keeps of an emission it received (`es/` + flow id): its creation stamp and its
/// sender's wall time — or, for an emission only named as the previous one by a later emission
/// (it never arrived, or not yet), the stamp alone.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Made {
    /// The emission's creation stamp.
    pub stamp: Stamp,
    /// Its sender's wall time, when central received the emission itself.
    pub wall_ms: Option<u64>,
}

impl Made {
    /// Whether an emission made at `stamp`, `wall_ms` is this one.
    pub fn is(&self, stamp: Stamp, wall_ms: u64) -> bool {
        self.stamp == stamp && self.wall_ms.is_none_or(|w| w == wall_ms)
    }
}

fn incarnation_key(site: SiteId) -> Vec<u8> {
    let mut k = local::INCARNATIONS.to_vec();
    k.extend_from_slice(&site.0.to_be_bytes());
    k
}

fn stamp_key(header: &FlowHeader) -> Vec<u8> {
    local::flow_key(local::EMISSION_STAMPS, header.id)
}

/// What the newest emission central received of `site` said its store knows of the site's own
/// changes — if that emission is numbered after `seq`, came from the store central takes the
/// site's changes from and was processed already (an emission numbered `seq` processed late,
/// after a newer one; not one merely waiting behind a newer one received).
pub(crate) fn own_known_after(
    tx: &WriteTx<'_, '_>,
    site: SiteId,
    seq: u64,
) -> Result<Option<Knowledge>> {
    let inc = local::get::<SiteIncarnation>(tx, &incarnation_key(site))?.unwrap_or_default();
    let Some(claim) = local::get::<NewestClaim>(tx, &claim_key(site))?
        .filter(|c| c.seq > seq && (c.provisioning, c.store) == (inc.provisioning, inc.store))
    else {
        return Ok(None);
    };
    let newer = crate::FlowId {
        site,
        seq: claim.seq,
    };
    let processed = crate::journal::get(tx, newer)?.is_some_and(|r| r.exec_end_ms.is_some());
    Ok(processed.then_some(claim.own))
}

/// The current provisioning of a remote (0 until it is reprovisioned), and the number its
/// store's commits start from (0: past what central knows of the site, see [`FIRST_COMMIT_SETTING`]).
pub(crate) fn provisioning(tx: &WriteTx<'_, '_>, site: SiteId) -> Result<(u32, u64)> {
    let inc = local::get::<SiteIncarnation>(tx, &incarnation_key(site))?.unwrap_or_default();
    Ok((inc.provisioning, inc.floor))
}

/// Starts a new provisioning of `site`: the store bound to it, and every store set up from an
/// earlier bootstrap, are refused from now on. Returns its number.
pub(crate) fn start_provisioning(tx: &mut WriteTx<'_, '_>, site: SiteId) -> Result<u32> {
    let key = incarnation_key(site);
    let old: SiteIncarnation = local::get(tx, &key)?.unwrap_or_default();
    // While central is being restored from a backup, the stores it provisioned since the backup
    // are unknown to it: past their provisioning numbers, and past the commits they may have
    // numbered, which the other remotes may hold and send back. Each store numbers in a block
    // up to one jump past its floor, and each reprovisioning puts the floor one jump past the
    // last store's commits: after `n` reprovisionings since the backup, a store's commits lie
    // below `2n + 1` jumps past what the backup knew.
    let restoring = local::get::<u64>(tx, local::RESTORED)?.is_some();
    let (step, jumps) = if restoring {
        (
            PROVISIONING_RESTORE_JUMP,
            2 * REPROVISIONINGS_SINCE_BACKUP_COVERED + 1,
        )
    } else {
        (1, 1)
    };
    let too_often = || Error::Refused(format!("site {site} was reprovisioned too often"));
    let provisioning = old.provisioning.checked_add(step).ok_or_else(too_often)?;
    // Room left for the new store's block, wherever its identity puts it.
    let floor = tx
        .knowledge()
        .max_seq(site)
        .checked_add(1 + REPROVISION_SEQ_JUMP * jumps)
        .filter(|f| f.checked_add(REPROVISION_SEQ_JUMP).is_some())
        .ok_or_else(too_often)?;
    local::put(
        tx,
        &key,
        &SiteIncarnation {
            provisioning,
            store: None,
            newest: old.newest,
            forked: false,
            floor,
        },
    )?;
    // What the replaced store's newest emission named as not travelling is no longer the site's.
    tx.local_remove(&newest_unsent_key(site))?;
    Ok(provisioning)
}

/// Whether `header` is an emission of a store that a reprovisioning of its site has replaced
/// since central received it (received before, processed after): its changes are taken, but
/// what it says of its store's knowledge is no longer the site's.
pub(crate) fn is_superseded(tx: &WriteTx<'_, '_>, header: &FlowHeader) -> Result<bool> {
    let carried = header
        .config
        .as_ref()
        .and_then(|c| c.settings.get(STORE_SETTING))
        .and_then(|t| StoreIdentity::parse(t));
    Ok(match carried {
        Some(ident) => ident.provisioning < provisioning(tx, header.source)?.0,
        None => false,
    })
}

/// Why central does not take an emission at receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NotTaken {
    /// It comes from a store that does not (or no longer) speak for its site.
    WrongStore(String),
    /// Not yet: central, restored from a backup, waits for every remote's report of what it
    /// holds before it takes a remote's new changes.
    Wait(String),
}

/// What central has heard from its remotes since it was restored from a backup (all empty
/// outside a restore), for [`check_emission`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reports<'a> {
    /// What the other remotes reported holding of the site's changes (changes central may have
    /// lost).
    pub elsewhere: &'a outpost_engine::Knowledge,
    /// What the site's store said it holds of its own changes in its emissions made after
    /// applying a return of the restored central, this one's included (their common part).
    pub own_claim: Option<&'a outpost_engine::Knowledge>,
    /// The remotes central has not heard from yet.
    pub waiting: &'a [String],
    /// A change of the site this emission carries, or a commit of its own of which it says no
    /// change travels ([`UNSENT_SETTING`]), that another remote reported holding under the
    /// same number with another stamp.
    pub renumbered: Option<Renumbered>,
    /// A change of the site this emission carries, or a commit of its own it names as not
    /// travelling, under a number central holds with another stamp ([`late_renumbered`]):
    /// judged after every other check, which says more when it finds the store out.
    pub late: Option<Renumbered>,
}

/// Judges an emission central is receiving from `code` (site `site`): `Ok(Err(why))` when it is
/// not taken. `Ok(Ok(()))` binds the site to its store if none was, and records its number and
/// stamp. While central's restore is under way, a store lacking changes of its own that other
/// remotes reported holding (`reports.elsewhere`), now or in an emission it made since the
/// restore (`reports.own_claim`), is refused; and while some remotes have not reported yet
/// (`reports.waiting`), an emission carrying changes of its site central does not hold waits
/// (its store may number them as changes the restore lost and one of those remotes holds).
pub(crate) fn check_emission(
    tx: &mut WriteTx<'_, '_>,
    header: &FlowHeader,
    code: &str,
    reports: Reports<'_>,
) -> Result<std::result::Result<(), NotTaken>> {
    let Reports {
        elsewhere,
        own_claim,
        waiting,
        renumbered,
        late,
    } = reports;
    let site = header.source;
    let key = incarnation_key(site);
    let mut inc: SiteIncarnation = local::get(tx, &key)?.unwrap_or_default();
    let fix = format!(
        "run `outpost central reprovision --site {code}` at central and set the machine up again from the bootstrap it writes (docs/OPERATIONS.md: a remote's disk lost)"
    );
    let carried = header
        .config
        .as_ref()
        .and_then(|c| c.settings.get(STORE_SETTING));
    let mut newly_bound = false;
    // An emission of a version before store identities carries none: only its numbering is
    // checked.
    if let Some(text) = carried {
        let Some(ident) = StoreIdentity::parse(text) else {
            return Ok(Err(NotTaken::WrongStore(format!(
                "emission {} names its store as {text:?}, which is not a store identity",
                header.id
            ))));
        };
        if ident.provisioning < inc.provisioning {
            return Ok(Err(NotTaken::WrongStore(format!(
                "emission {} comes from a store of {code} set up from a bootstrap that a reprovisioning replaced (provisioning {}; the current one is {}): nothing of it is taken. Set this machine up again from {code}'s newest bootstrap, or {fix}",
                header.id, ident.provisioning, inc.provisioning
            ))));
        }
        if ident.provisioning > inc.provisioning {
            return Ok(Err(NotTaken::WrongStore(format!(
                "emission {} comes from a store of {code} set up from a bootstrap this central never issued (provisioning {}; the current one is {}): nothing of it is taken; {fix}",
                header.id, ident.provisioning, inc.provisioning
            ))));
        }
        match inc.store {
            Some(bound) if bound != ident.id => {
                return Ok(Err(NotTaken::WrongStore(format!(
                    "emission {} comes from a second store set up from {code}'s bootstrap ({ident}; central takes {code}'s changes from store {bound:016x}): both would number their changes alike, and one's would be lost. Nothing of it is taken; if this machine replaces the other, {fix}",
                    header.id
                ))));
            }
            Some(_) => {}
            None => {
                inc.store = Some(ident.id);
                newly_bound = true;
            }
        }
    }
    let known: Option<Made> = local::get(tx, &stamp_key(header))?;
    // The same emission again (a file sent twice, imported again, an upload resumed): nothing
    // more to judge; the journal recognises the duplicate.
    if let Some(k) = known
        && k.is(header.created_stamp, header.created_wall_ms)
    {
        if k.wall_ms.is_none() {
            let made = Made {
                stamp: header.created_stamp,
                wall_ms: Some(header.created_wall_ms),
            };
            local::put(tx, &stamp_key(header), &made)?;
        }
        local::put(tx, &key, &inc)?;
        return Ok(Ok(()));
    }
    let again = "its store numbers its emissions and changes again from an earlier point — restored from a backup, or set up again from an old bootstrap — and its new changes would be taken for ones central holds. Nothing of it is taken";
    if inc.forked {
        return Ok(Err(NotTaken::WrongStore(format!(
            "emission {} of {code}: {again}, as with its emissions since central first saw it; {fix}",
            header.id
        ))));
    }
    let prev = header
        .config
        .as_ref()
        .and_then(|c| c.settings.get(PREV_SETTING))
        .and_then(|p| parse_prev(p));
    let prev_key = |seq| {
        local::flow_key(
            local::EMISSION_STAMPS,
            crate::flow::FlowId {
                site: header.id.site,
                seq,
            },
        )
    };
    // A fork is certain when the store contradicts what central received; the wall-time test
    // alone is not (a clock set back after a quarantine looks the same), so it refuses the
    // emission without condemning the store.
    let mut fork: Option<(String, bool)> = None;
    if let Some(Renumbered {
        seq,
        theirs,
        this,
        carried,
    }) = renumbered
    {
        // The other remote got its copy from central before central's loss: this store
        // numbered a new change as that one.
        fork = Some((
            format!(
                "emission {} of {code} {} {seq} of its own stamped {this}, which another remote holds as stamped {theirs} (central lost it with its restore)",
                header.id,
                renumbered_how(carried)
            ),
            true,
        ));
    } else if known.is_some() {
        fork = Some((
            format!(
                "emission {} of {code} was already received with other content",
                header.id
            ),
            true,
        ));
    } else if let Some((seq, prev_stamp)) = prev
        && let Some(k) = local::get::<Made>(tx, &prev_key(seq))?
        && k.stamp != prev_stamp
    {
        fork = Some((
            format!(
                "emission {} of {code} follows an emission {seq} that is not the one central received",
                header.id
            ),
            true,
        ));
    } else if let Some((seq, newest_wall_ms)) = inc.newest
        && header.id.seq < seq
        && header.created_wall_ms > newest_wall_ms
    {
        fork = Some((
            format!(
                "emission {} of {code} was made after emission {seq}, which central already received (if this site's clock was set back, it is an old file: nothing is lost without it)",
                header.id
            ),
            false,
        ));
    } else if let Some((seq, _)) = inc.newest
        && header.id.seq < seq
        && let Some(claim) = local::get::<NewestClaim>(tx, &claim_key(site))?
        && (claim.provisioning, claim.store, claim.seq) == (inc.provisioning, inc.store, seq)
        && !header
            .knowledge
            .only(site)
            .difference(&claim.own)
            .is_empty()
    {
        let unknown = header.knowledge.only(site).difference(&claim.own).count();
        fork = Some((
            format!(
                "emission {} of {code} was made before emission {seq}, which central received, \
                 yet holds {unknown} change(s) of its own that emission did not know",
                header.id
            ),
            true,
        ));
    } else if newly_bound || inc.newest.is_none_or(|(seq, _)| header.id.seq > seq) {
        // The store must know every change of its own that central holds: those numbered in
        // its block — or, from a store that does not say where its block starts (a version
        // before numbering blocks), all but those of the stores before a reprovisioning, which
        // the new one got with its bootstrap.
        let numbered_from = header
            .config
            .as_ref()
            .and_then(|c| c.settings.get(NUMBERED_FROM_SETTING))
            .and_then(|n| n.parse::<u64>().ok());
        let own = match numbered_from {
            Some(from) if from > 0 => {
                let mut block = outpost_engine::Knowledge::new();
                block.insert_range(site, from, from.saturating_add(NUMBERING_BLOCK - 1));
                block
            }
            _ => {
                let mut older = outpost_engine::Knowledge::new();
                if inc.floor > 1 {
                    older.insert_range(site, 1, inc.floor - 1);
                }
                tx.knowledge().only(site).difference(&older)
            }
        };
        // After central's restore, the other remotes may hold changes of it that the restored
        // central lost: a store put back from a backup numbers its new changes as those.
        let at_central = tx.knowledge().only(site);
        let mut held = at_central.clone();
        held.union_with(&elsewhere.only(site));
        let mut lacking = held
            .difference(&held.difference(&own))
            .difference(&header.knowledge.only(site));
        // What the others hold of its own changes beyond the backup, they got from the lost
        // central: made before the restore, and known to any emission made since by a store
        // that was not put back from a backup — even one that numbered past them since.
        let mut lacked_since = false;
        if lacking.is_empty()
            && let Some(claim) = own_claim
        {
            let others = elsewhere.only(site);
            lacking = others
                .difference(&others.difference(&own))
                .difference(claim);
            lacked_since = !lacking.is_empty();
        }
        if !lacking.is_empty() {
            // Certain only on central's own evidence: what another remote reported holding is
            // its claim, and refuses this emission without condemning the store (once that
            // remote has sent the changes back, central holds them).
            let certain = lacking.difference(&at_central) != lacking;
            let whose = if certain {
                "central holds"
            } else {
                "another remote reported holding (central lost them with its restore)"
            };
            let lacks = if lacked_since {
                "lacked, in an emission made since central's restore,"
            } else {
                "lacks"
            };
            fork = Some((
                format!(
                    "emission {} of {code} comes from a store that {lacks} {} of its own changes {whose}",
                    header.id,
                    lacking.count()
                ),
                certain,
            ));
        }
    }
    // Nothing else found it out: central holds another stamp under one of its numbers, from
    // another store of the site numbered alike (a late file of a lost store, or the store put
    // back from its backup that reused its numbers).
    if fork.is_none()
        && let Some(Renumbered {
            seq,
            theirs,
            this,
            carried,
        }) = late
    {
        fork = Some((
            format!(
                "emission {} of {code} {} {seq} of its own stamped {this}, which central holds as stamped {theirs}: two stores of {code} numbered alike",
                header.id,
                renumbered_how(carried)
            ),
            true,
        ));
    }
    if let Some((what, certain)) = fork {
        if carried.is_some() && certain {
            inc.forked = true;
            local::put(tx, &key, &inc)?;
        }
        return Ok(Err(NotTaken::WrongStore(format!("{what}: {again}; {fix}"))));
    }
    // After central's restore, until every remote has reported what it holds: a store put back
    // from its own backup would number its new changes as lost ones a silent remote holds.
    // Nothing is recorded of an emission that waits: it is judged whole when it comes again.
    if !waiting.is_empty()
        && !header
            .knowledge
            .only(site)
            .difference(&tx.knowledge().only(site))
            .is_empty()
    {
        return Ok(Err(NotTaken::Wait(format!(
            "emission {} of {code}: central was restored from a backup and takes a remote's new \
             changes only once every remote has reported what it holds, so that no change is \
             taken for another numbered alike (a store put back from a backup); waiting for {}. \
             Nothing of it was kept: the next sync sends its changes again",
            header.id,
            waiting.join(", ")
        ))));
    }
    if inc.newest.is_none_or(|(seq, _)| header.id.seq > seq) {
        inc.newest = Some((header.id.seq, header.created_wall_ms));
        let claim = NewestClaim {
            provisioning: inc.provisioning,
            store: inc.store,
            seq: header.id.seq,
            own: header.knowledge.only(site),
        };
        local::put(tx, &claim_key(site), &claim)?;
        let unsent: std::collections::BTreeMap<u64, Stamp> =
            named_unsent(header).into_iter().collect();
        if unsent.is_empty() {
            tx.local_remove(&newest_unsent_key(site))?;
        } else {
            local::put(tx, &newest_unsent_key(site), &unsent)?;
        }
    }
    let made = Made {
        stamp: header.created_stamp,
        wall_ms: Some(header.created_wall_ms),
    };
    local::put(tx, &stamp_key(header), &made)?;
    // The previous emission, as this one vouches for it: a late copy of it is recognised.
    if let Some((seq, stamp)) = prev
        && local::get::<Made>(tx, &prev_key(seq))?.is_none()
    {
        let vouched = Made {
            stamp,
            wall_ms: None,
        };
        local::put(tx, &prev_key(seq), &vouched)?;
    }
    local::put(tx, &key, &inc)?;
    Ok(Ok(()))
}

/// The creation stamp and wall time of the emission central received under `id`, if it keeps
/// them (see [`made_text`]): a
/// transport that asks whether central holds an emission already gives the stamp of its own,
/// and central answers no when they differ — the upload then goes through
/// [`crate::central::receive`], which refuses it for what it is.
pub fn received_made(
    store: &outpost_engine::Store,
    id: crate::flow::FlowId,
) -> Result<Option<Made>> {
    local::snap_get(
        &store.snapshot()?,
        &local::flow_key(local::EMISSION_STAMPS, id),
    )
}

/// An emission's creation stamp and wall time as a transport gives them (header
/// `Upload-Stamp`): `STAMP-WALL`, both hex.
pub fn made_text(header: &FlowHeader) -> String {
    format!(
        "{:016x}-{:x}",
        header.created_stamp.as_u64(),
        header.created_wall_ms
    )
}

/// Reads [`made_text`] back.
pub fn parse_made(s: &str) -> Option<(Stamp, u64)> {
    let (stamp, wall) = s.trim().split_once('-')?;
    Some((
        Stamp::from_u64(u64::from_str_radix(stamp, 16).ok()?),
        u64::from_str_radix(wall, 16).ok()?,
    ))
}

/// How an emission holds a commit numbered as another ([`Renumbered::carried`]).
fn renumbered_how(carried: bool) -> &'static str {
    if carried {
        "carries a change"
    } else {
        "names as not travelling (written over, or held back) a commit"
    }
}

/// What the newest emission received of a remote (by number) named as not travelling of its
/// own commits ([`UNSENT_SETTING`]: written over, or held back with a reserved document):
/// `cw/` + site id → number → stamp.
fn newest_unsent_key(site: SiteId) -> Vec<u8> {
    let mut k = local::NEWEST_UNSENT.to_vec();
    k.extend_from_slice(&site.0.to_be_bytes());
    k
}

/// The commits `header` names as not travelling ([`UNSENT_SETTING`]).
fn named_unsent(header: &FlowHeader) -> Vec<(u64, Stamp)> {
    header
        .config
        .as_ref()
        .and_then(|c| c.settings.get(UNSENT_SETTING))
        .map(|text| parse_unsent(text))
        .unwrap_or_default()
}

/// A file of the site carried in late — numbered below the newest emission central received of
/// it, or following an emission central never received — may come from a store lost since,
/// whose numbers the store put back from its backup reused for other commits (R1). A commit has
/// one stamp: a change of its own the file carries, or a commit it names as not travelling,
/// under a number central holds with another stamp (a register still carries it, or the newest
/// emission named it as not travelling) tells the two stores apart, though the file follows the
/// emission central had before it and claims no number the newest one did not (the simulator's
/// seed 601911). The site's one store never gives a number two stamps, so the check cannot
/// condemn it. Read in `snap`, taken before the receipt's transaction (an emission received
/// meanwhile can only make it miss); the flow is read again only for such a file. Not seen: an
/// emission central has received but not processed yet, and a number every change of which
/// central holds written over and the newest emission did not name.
pub(crate) fn late_renumbered<R: std::io::Read>(
    snap: &outpost_engine::Snapshot,
    header: &FlowHeader,
    flow: impl FnOnce() -> Result<R>,
) -> Result<Option<Renumbered>> {
    let site = header.source;
    let inc: SiteIncarnation = local::snap_get(snap, &incarnation_key(site))?.unwrap_or_default();
    let late = inc.newest.is_some_and(|(seq, _)| header.id.seq < seq);
    let prev = header
        .config
        .as_ref()
        .and_then(|c| c.settings.get(PREV_SETTING))
        .and_then(|p| parse_prev(p));
    let unchained = match prev {
        Some((seq, _)) => {
            let key = local::flow_key(
                local::EMISSION_STAMPS,
                crate::flow::FlowId {
                    site: header.id.site,
                    seq,
                },
            );
            local::snap_get::<Made>(snap, &key)?.is_none()
        }
        None => false,
    };
    if !late && !unchained {
        return Ok(None);
    }
    let named: std::collections::BTreeMap<u64, Stamp> =
        local::snap_get(snap, &newest_unsent_key(site))?.unwrap_or_default();
    let mut looked = std::collections::BTreeSet::new();
    let mut differs = |seq: u64, this: Stamp, carried: bool| -> Result<Option<Renumbered>> {
        if !looked.insert(seq) {
            return Ok(None);
        }
        let held = match snap.commit_stamp(outpost_engine::Dot { site, seq })? {
            Some(stamp) => Some(stamp),
            None => named.get(&seq).copied(),
        };
        Ok(held
            .filter(|theirs| *theirs != this)
            .map(|theirs| Renumbered {
                seq,
                theirs,
                this,
                carried,
            }))
    };
    for (seq, stamp) in named_unsent(header) {
        if let Some(found) = differs(seq, stamp, false)? {
            return Ok(Some(found));
        }
    }
    let mut reader = crate::flow::FlowReader::open(flow()?)?;
    while let Some(item) = reader.next_item()? {
        let crate::flow::Item::Changes(changes) = item else {
            continue;
        };
        for c in changes.iter().filter(|c| c.dot.site == site) {
            if let Some(found) = differs(c.dot.seq, c.stamp, true)? {
                return Ok(Some(found));
            }
        }
    }
    Ok(None)
}

/// A store's identity, as a remote keeps it: `ri`.
pub(crate) fn own(tx: &WriteTx<'_, '_>) -> Result<Option<StoreIdentity>> {
    local::get(tx, local::REMOTE_IDENTITY)
}

pub(crate) fn set_own(tx: &mut WriteTx<'_, '_>, ident: &StoreIdentity) -> Result<()> {
    local::put(tx, local::REMOTE_IDENTITY, ident)
}

/// A store identity drawn from what is at hand when the host gives none (FNV-1a over the site,
/// the bootstrap's number and the time): hosts pass a random one
/// ([`crate::remote::bootstrap_as`]), as `outpost remote init` does.
pub(crate) fn derived_id(site: SiteId, flow_seq: u64, now_ms: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in site
        .0
        .to_be_bytes()
        .iter()
        .chain(flow_seq.to_be_bytes().iter())
        .chain(now_ms.to_be_bytes().iter())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn r1_tips_read_back_and_a_malformed_entry_is_skipped() {
        let tips = Tips::from([
            (SiteId(2), (7, Stamp::from_u64(0x1234))),
            (SiteId(40), (1 << 40, Stamp::from_u64(u64::MAX))),
        ]);
        // The emission knows site 2 up to 9 (the tip is written whole) and site 40 up to its
        // tip (written without its number).
        let mut knowledge = Knowledge::new();
        knowledge.insert_range(SiteId(2), 1, 9);
        knowledge.insert_range(SiteId(40), 1 << 40, 1 << 40);
        let text = tips_setting(&tips, &knowledge);
        assert_eq!(text, format!("2:7/{:016x},40:/{:016x}", 0x1234, u64::MAX));
        let back: Vec<_> = parse_tips(&text, &knowledge);
        assert_eq!(
            back,
            vec![
                (SiteId(2), 7, Stamp::from_u64(0x1234)),
                (SiteId(40), 1 << 40, Stamp::from_u64(u64::MAX)),
            ]
        );
        // A number left out for a site the knowledge does not hold: skipped.
        let damaged = format!("x:1/00,{text},3:2,4:5/zz,5:/00,6:/zz");
        assert_eq!(parse_tips(&damaged, &knowledge), back);
        assert!(parse_tips("", &knowledge).is_empty());
    }

    #[test]
    fn r1_a_store_identity_reads_back_and_malformed_ones_do_not() {
        let ident = StoreIdentity {
            provisioning: 3,
            id: 0xdead_beef,
        };
        assert_eq!(StoreIdentity::parse(&ident.to_setting()), Some(ident));
        for bad in ["", "3", "x/00", "3/zz", "-1/00"] {
            assert_eq!(StoreIdentity::parse(bad), None, "{bad}");
        }
    }
}

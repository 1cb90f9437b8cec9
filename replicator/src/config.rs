//! The sync configuration (SPEC C2–C6): central's settings and each remote's, validated with
//! clear errors. Central keeps it; each remote receives its part with every return and bootstrap
//! (as the settings of the [`ConfigSnapshot`](crate::ConfigSnapshot)), which overwrites a remote
//! admin's local edits (C6).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate};
use outpost_engine::SiteId;
use serde::{Deserialize, Serialize};

use crate::schedule::{Cycle, FixedPlan, HhMm, MissedReturn, Zone};

/// T2: central listens on this port unless configured otherwise.
pub const PORT_DEFAULT: u16 = 2638;

/// Central's sweep: the original's 20-second cycle (A1), which the automaton keeps only as a
/// safety net, and the cycle the monitor measures waiting emissions in.
pub const SWEEP_MS_DEFAULT: u64 = 20_000;

/// How a remote syncs (M1–M3).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum SyncType {
    /// M1: emits at `emission` and fetches its return at `fetch` (local times); the return is
    /// prepared at central's common return time.
    Fixed {
        /// Local emission time.
        emission: HhMm,
        /// Local return-fetch time.
        fetch: HhMm,
    },
    /// M2: emits when it decides and waits up to `wait_ms` for the return.
    Immediate {
        /// How long to wait for the return, in milliseconds.
        wait_ms: u64,
    },
    /// M3: emits only.
    NoReturn,
}

impl fmt::Display for SyncType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncType::Fixed { emission, fetch } => write!(f, "fixed {emission} {fetch}"),
            SyncType::Immediate { wait_ms } => write!(f, "immediate {}", wait_ms / 1000),
            SyncType::NoReturn => f.write_str("no-return"),
        }
    }
}

impl FromStr for SyncType {
    type Err = ConfigError;
    /// `fixed 21:00 23:20`, `immediate <wait seconds>`, `no-return`.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let words: Vec<&str> = s.split_whitespace().collect();
        match words.as_slice() {
            ["fixed", e, f] => Ok(SyncType::Fixed {
                emission: e.parse()?,
                fetch: f.parse()?,
            }),
            ["immediate", w] => Ok(SyncType::Immediate {
                wait_ms: w
                    .parse::<u64>()
                    .map_err(|_| ConfigError::BadSyncType(s.to_owned()))?
                    .saturating_mul(1000),
            }),
            ["no-return"] => Ok(SyncType::NoReturn),
            _ => Err(ConfigError::BadSyncType(s.to_owned())),
        }
    }
}

/// A user of central (C2, C3).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct User {
    /// The user's code (`USYN`, `RSYN`).
    pub code: String,
    /// Member of the admin group.
    pub admin: bool,
    /// E-mail address, if any.
    pub email: Option<String>,
}

/// Central's settings (C4).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct CentralSettings {
    /// Host central listens on (T2).
    pub host: String,
    /// Port (T2), 2638 by default.
    pub port: u16,
    /// Customer code, e.g. `00086`.
    pub customer_code: String,
    /// Central base name, e.g. `BASEASOC`.
    pub base_name: String,
    /// Central's IANA time zone.
    pub time_zone: String,
    /// The common deferred-return time (central's time zone).
    pub return_time: HhMm,
    /// The sync user (C2): must be an admin.
    pub sync_user: String,
    /// The responsible collaborator (C3): must have an e-mail address.
    pub responsible: String,
    /// Central's users.
    pub users: Vec<User>,
}

/// One remote's settings (C4).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RemoteSettings {
    /// Its id.
    pub id: SiteId,
    /// Its establishment code.
    pub code: String,
    /// Its IANA time zone.
    pub time_zone: String,
    /// How it syncs; at most one fixed-time sync (M1). Immediate syncs can always be asked for
    /// too (M4).
    pub sync_types: Vec<SyncType>,
    /// Tables it may not write (R4/R9).
    pub denied_tables: BTreeSet<String>,
}

/// The whole configuration.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SyncConfig {
    /// Central's settings.
    pub central: CentralSettings,
    /// The remotes'.
    pub remotes: Vec<RemoteSettings>,
}

/// What is wrong with a configuration.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A malformed `HH:MM`.
    #[error(transparent)]
    BadTime(#[from] crate::schedule::BadTime),
    /// An unknown IANA time zone.
    #[error(transparent)]
    UnknownZone(#[from] crate::schedule::UnknownZone),
    /// A sync type that does not parse.
    #[error(
        "{0:?} is not a sync type: write `fixed HH:MM HH:MM`, `immediate <seconds>` or `no-return`"
    )]
    BadSyncType(String),
    /// C2.
    #[error("the sync user {0} must exist and belong to the admin group (C2)")]
    SyncUserNotAdmin(String),
    /// C3.
    #[error("the responsible collaborator {0} must exist and have an e-mail address (C3)")]
    ResponsibleWithoutEmail(String),
    /// M1.
    #[error(
        "remote {0} has {1} fixed-time syncs; only one fixed-time sync per day is possible (M1)"
    )]
    TwoFixedSyncs(String, usize),
    /// M1: a fixed-time fetch that would never get central's common return of some days of
    /// the year (every day, for a fetch at the very minute of the return).
    #[error("{}", missed_text(code, plan, missed))]
    FetchMissesReturn {
        /// The remote.
        code: String,
        /// Its schedule against central's return.
        plan: FixedPlan,
        /// The returns it would miss, in the year checked ([`CHECKED_YEAR`]).
        missed: Vec<MissedReturn>,
    },
    /// Duplicate remote id or code.
    #[error("remote {0} is configured twice")]
    DuplicateRemote(String),
}

impl SyncConfig {
    /// Checks everything C2–C4 and M1 require, with one clear error for the first problem.
    ///
    /// A fixed-time remote is checked in absolute time over its daily cycle (emission → the
    /// common return that carries it → the first fetch after that return), on every day of
    /// [`CHECKED_YEAR`] with both zones' daylight saving time: it is refused only if some
    /// return would never be fetched — the next one replaces it first, or comes at the very
    /// minute of the fetch (a race). A fetch "before" the return in local times is fine: it gets
    /// the one of the day before (New York fetching at 07:00 sees Paris's 23:00 return of the
    /// day before, 14 hours old; [`SyncConfig::describe_cycle`] says so). A fetch with less
    /// margin than the hour daylight saving time moves one zone against the other misses a
    /// return around the changes (and sees the day before's for the weeks between): refused,
    /// naming those days, since the shop would run a day behind part of the year.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let c = &self.central;
        let central_zone: Zone = c.time_zone.parse()?;
        let user = |code: &str| c.users.iter().find(|u| u.code == code);
        if !user(&c.sync_user).is_some_and(|u| u.admin) {
            return Err(ConfigError::SyncUserNotAdmin(c.sync_user.clone()));
        }
        if !user(&c.responsible)
            .is_some_and(|u| u.email.as_deref().is_some_and(|e| e.contains('@')))
        {
            return Err(ConfigError::ResponsibleWithoutEmail(c.responsible.clone()));
        }
        let mut seen = BTreeSet::new();
        for r in &self.remotes {
            if !seen.insert(r.id) || self.remotes.iter().filter(|o| o.code == r.code).count() > 1 {
                return Err(ConfigError::DuplicateRemote(r.code.clone()));
            }
            let zone: Zone = r.time_zone.parse()?;
            check_schedule(&r.code, zone, &r.sync_types, central_zone, c.return_time)?;
        }
        Ok(())
    }

    /// A fixed-time remote's schedule against central's common return, `None` for a remote
    /// without a fixed-time sync (or not configured).
    pub fn fixed_plan(&self, remote: SiteId) -> Result<Option<FixedPlan>, ConfigError> {
        let Some(r) = self.remotes.iter().find(|r| r.id == remote) else {
            return Ok(None);
        };
        let Some((emission, fetch)) = r.sync_types.iter().find_map(|t| match t {
            SyncType::Fixed { emission, fetch } => Some((*emission, *fetch)),
            _ => None,
        }) else {
            return Ok(None);
        };
        Ok(Some(FixedPlan {
            zone: r.time_zone.parse()?,
            emission,
            fetch,
            central_zone: self.central.time_zone.parse()?,
            ret: self.central.return_time,
        }))
    }

    /// What a fixed-time remote gets and when, in words, for its emission of the local `date`:
    /// `emits at 02:30 New York (08:30 Paris), central's return at 23:00 Paris (17:00 New
    /// York), fetched at 07:00 New York the next day — 14 h 00 after the return`. `None` for a
    /// remote without a fixed-time sync.
    pub fn describe_cycle(
        &self,
        remote: SiteId,
        date: NaiveDate,
    ) -> Result<Option<String>, ConfigError> {
        Ok(self.fixed_plan(remote)?.map(|p| p.cycle(date).to_string()))
    }

    /// The settings map a remote receives in its configuration snapshot.
    pub fn remote_settings(&self, remote: SiteId) -> Option<BTreeMap<String, String>> {
        let r = self.remotes.iter().find(|r| r.id == remote)?;
        let mut out = BTreeMap::new();
        out.insert("time_zone".to_owned(), r.time_zone.clone());
        out.insert(
            "sync_types".to_owned(),
            r.sync_types
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(";"),
        );
        out.insert(
            "central_time_zone".to_owned(),
            self.central.time_zone.clone(),
        );
        out.insert(
            "return_time".to_owned(),
            self.central.return_time.to_string(),
        );
        out.insert("central_host".to_owned(), self.central.host.clone());
        out.insert("central_port".to_owned(), self.central.port.to_string());
        Some(out)
    }
}

/// The year whose every day [`SyncConfig::validate`] checks a fixed-time schedule against
/// (with the time-zone rules chrono-tz has for it): validation is sans-IO and does not read
/// the clock, and today's rules repeat from year to year.
pub const CHECKED_YEAR: i32 = 2026;

/// The first day checked and how many: every return of [`CHECKED_YEAR`].
fn checked_days() -> (NaiveDate, u32) {
    let first = |y| NaiveDate::from_ymd_opt(y, 1, 1).unwrap_or(NaiveDate::MIN);
    let from = first(CHECKED_YEAR);
    let days = (first(CHECKED_YEAR + 1) - from).num_days();
    (from, u32::try_from(days).unwrap_or(365))
}

/// Dates as ranges, `2026-03-08 to 2026-03-28, 2026-10-31`, the first few of them.
fn date_ranges(dates: &[NaiveDate]) -> String {
    const SHOWN: usize = 4;
    let mut ranges: Vec<(NaiveDate, NaiveDate)> = Vec::new();
    for d in dates {
        match ranges.last_mut() {
            Some((_, end)) if end.succ_opt() == Some(*d) => *end = *d,
            _ => ranges.push((*d, *d)),
        }
    }
    let mut out: Vec<String> = ranges
        .iter()
        .take(SHOWN)
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a} to {b}")
            }
        })
        .collect();
    if ranges.len() > SHOWN {
        out.push("…".to_owned());
    }
    out.join(", ")
}

/// The text of [`ConfigError::FetchMissesReturn`]: which returns, why, and what the remote gets
/// on the other days (its cycles with the shortest and the longest wait of the year).
fn missed_text(code: &str, plan: &FixedPlan, missed: &[MissedReturn]) -> String {
    let (z, c) = (plan.zone, plan.central_zone);
    let at = |zone: Zone, ms: u64| format!("{} {}", zone.hhmm_at(ms), zone.city());
    let both = |ms: u64| {
        if z == c {
            at(c, ms)
        } else {
            format!("{}, {}", at(c, ms), at(z, ms))
        }
    };
    let (_, days) = checked_days();
    let every_day = missed.len() >= usize::try_from(days).unwrap_or(usize::MAX);
    let Some(first) = missed.first() else {
        return format!("remote {code} misses no return");
    };
    let mut out = if every_day && first.is_race() {
        format!(
            "remote {code} would never see central's common return, on every day of the year: its fetch at {} is at the very minute central prepares the return ({}), and would race it every day",
            at(z, first.fetched_ms),
            both(first.next_return_ms),
        )
    } else {
        let dates: Vec<NaiveDate> = missed.iter().map(|m| m.date).collect();
        let why = if first.is_race() {
            format!(
                "on {}, its fetch at {} is at the very minute central prepares the next return ({}), and would race it",
                z.date_at(first.fetched_ms),
                at(z, first.fetched_ms),
                both(first.next_return_ms),
            )
        } else {
            format!(
                "central's return of {} ({}) is replaced by that of {} ({}) before the remote's next fetch, at {} on {}",
                first.date,
                both(first.returned_ms),
                c.date_at(first.next_return_ms),
                both(first.next_return_ms),
                at(z, first.fetched_ms),
                z.date_at(first.fetched_ms),
            )
        };
        let n = missed.len();
        format!(
            "remote {code} would never fetch central's common return of {} ({n} day{} of {CHECKED_YEAR}): {why}",
            date_ranges(&dates),
            if n == 1 { "" } else { "s" },
        )
    };
    out.push_str(". Its fetch must come after the return on every day of the year, with a margin for daylight saving time in either zone");
    // What it gets on the other days: the shortest and the longest wait of the year.
    let (from, _) = checked_days();
    let fetched: Vec<(NaiveDate, Cycle)> = from
        .iter_days()
        .take_while(|d| d.year() == CHECKED_YEAR)
        .map(|d| (d, plan.cycle(d)))
        .filter(|(_, cy)| cy.fetched_ms < cy.next_return_ms)
        .collect();
    let wait = |(_, cy): &&(NaiveDate, Cycle)| cy.fetched_ms - cy.returned_ms;
    let shortest = fetched.iter().min_by_key(wait);
    let longest = fetched.iter().rev().max_by_key(wait);
    if let (Some(a), Some(b)) = (shortest, longest) {
        out.push_str(&format!(": on {} it {}", a.0, a.1));
        if wait(&a) != wait(&b) {
            out.push_str(&format!("; on {} it {}", b.0, b.1));
        }
    }
    out
}

/// M1 for one remote: at most one fixed-time sync, whose fetch gets central's common return
/// every day of the year ([`SyncConfig::validate`] explains the margin).
pub fn check_schedule(
    code: &str,
    zone: Zone,
    sync_types: &[SyncType],
    central_zone: Zone,
    return_time: HhMm,
) -> Result<(), ConfigError> {
    let fixed: Vec<(HhMm, HhMm)> = sync_types
        .iter()
        .filter_map(|t| match t {
            SyncType::Fixed { emission, fetch } => Some((*emission, *fetch)),
            _ => None,
        })
        .collect();
    if fixed.len() > 1 {
        return Err(ConfigError::TwoFixedSyncs(code.to_owned(), fixed.len()));
    }
    if let Some((emission, fetch)) = fixed.first() {
        let plan = FixedPlan {
            zone,
            emission: *emission,
            fetch: *fetch,
            central_zone,
            ret: return_time,
        };
        let (from, days) = checked_days();
        let missed = plan.missed_returns(from, days);
        if !missed.is_empty() {
            return Err(ConfigError::FetchMissesReturn {
                code: code.to_owned(),
                plan,
                missed,
            });
        }
    }
    Ok(())
}

/// The settings a remote knows (C6): those central sends in its configuration snapshot
/// ([`SyncConfig::remote_settings`]), which a local administrator may also set.
pub const REMOTE_SETTINGS: [&str; 6] = [
    "time_zone",
    "sync_types",
    "central_time_zone",
    "return_time",
    "central_host",
    "central_port",
];

/// The settings outpost keeps for itself in a remote's settings map: the deployment's identity,
/// the store's provisioning and numbering, what an emission reports.
pub const INTERNAL_SETTINGS: [&str; 9] = [
    "deployment",
    "rejudged",
    "provisioning",
    "first_emission",
    "first_commit",
    "numbered_from",
    "store",
    "prev",
    "reserved",
];

/// Checks a setting a remote's administrator sets, among the remote's settings, as central
/// checks its configuration (C4, M1): one of outpost's settings, well formed, the schedule
/// possible against central's common return — or a setting of the host application that
/// central sent the remote (`sent`: outpost cannot tell its format). `code` names the remote
/// in the messages.
pub fn check_remote_setting(
    code: &str,
    settings: &BTreeMap<String, String>,
    name: &str,
    sent: bool,
) -> Result<(), String> {
    // outpost's own bookkeeping travels in the settings map too: never a local edit (a wrong
    // deployment would make the site refuse every return, the one way back, C6).
    if INTERNAL_SETTINGS.contains(&name) {
        return Err(format!(
            "{name:?} is kept by outpost itself (the deployment and the store's provisioning): \
             it is not changed by hand"
        ));
    }
    if sent && !REMOTE_SETTINGS.contains(&name) {
        return Ok(());
    }
    if let Some(value) = settings.get(name) {
        let bad = |why: String| format!("setting {name} = {value:?} refused: {why}");
        match name {
            "time_zone" | "central_time_zone" => {
                value.parse::<Zone>().map_err(|e| bad(e.to_string()))?;
            }
            "sync_types" => {
                RemoteSchedule::from_settings(settings).map_err(|e| bad(e.to_string()))?;
            }
            "return_time" => {
                value.parse::<HhMm>().map_err(|e| bad(e.to_string()))?;
            }
            "central_host" => {
                if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '/') {
                    return Err(bad("a host name or address, like central.example".into()));
                }
            }
            "central_port" => {
                if !value.parse::<u16>().is_ok_and(|p| p > 0) {
                    return Err(bad("a port number from 1 to 65535".into()));
                }
            }
            _ => {
                return Err(format!(
                    "{name:?} is not a setting of this site; the settings are: {} (and those \
                     central sent it)",
                    REMOTE_SETTINGS.join(", ")
                ));
            }
        }
    }
    let schedule = RemoteSchedule::from_settings(settings).map_err(|e| e.to_string())?;
    let central_zone: Zone = settings
        .get("central_time_zone")
        .map_or("UTC", String::as_str)
        .parse()
        .map_err(|e: crate::schedule::UnknownZone| e.to_string())?;
    if let Some(ret) = settings.get("return_time") {
        let ret: HhMm = ret
            .parse()
            .map_err(|e: crate::schedule::BadTime| e.to_string())?;
        check_schedule(code, schedule.zone, &schedule.sync_types, central_zone, ret)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A remote's schedule, read back from its settings map.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RemoteSchedule {
    /// Its zone.
    pub zone: Zone,
    /// Its sync types.
    pub sync_types: Vec<SyncType>,
}

impl RemoteSchedule {
    /// What of `settings` can be read, and what cannot (each with why): the zone UTC when its
    /// name is unknown, the sync types that parse. A remote follows it rather than stop
    /// syncing (C6: a setting of a newer central, a time zone its database lacks) — until its
    /// settings are set right, by a return or a local admin.
    pub fn readable(settings: &BTreeMap<String, String>) -> (Self, Vec<String>) {
        let mut unread = Vec::new();
        let zone = match settings.get("time_zone") {
            None => Zone::UTC,
            Some(name) => name
                .parse()
                .unwrap_or_else(|e: crate::schedule::UnknownZone| {
                    unread.push(e.to_string());
                    Zone::UTC
                }),
        };
        let mut sync_types = Vec::new();
        for t in settings
            .get("sync_types")
            .map(String::as_str)
            .unwrap_or_default()
            .split(';')
            .filter(|t| !t.trim().is_empty())
        {
            match t.parse::<SyncType>() {
                Ok(st) => sync_types.push(st),
                Err(e) => unread.push(format!("sync type {:?}: {e}", t.trim())),
            }
        }
        (RemoteSchedule { zone, sync_types }, unread)
    }

    /// Parses the settings a remote received (or a local admin set, C6).
    pub fn from_settings(settings: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let zone: Zone = settings
            .get("time_zone")
            .map(String::as_str)
            .unwrap_or("UTC")
            .parse()?;
        let sync_types = settings
            .get("sync_types")
            .map(|s| {
                s.split(';')
                    .filter(|t| !t.trim().is_empty())
                    .map(str::parse)
                    .collect::<Result<Vec<SyncType>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        Ok(RemoteSchedule { zone, sync_types })
    }
}

/// The seed's example (SPEC C1–C5): central ASOC in Paris returning at 23:00, with sync user
/// USYN (admin) and responsible RSYN; BSOC emitting at 21:00 and fetching at 23:20; CSOC at
/// 22:00 and 23:40, also allowed immediate syncs, and not permitted stock documents.
pub fn seed_example() -> SyncConfig {
    let at = |(h, m): (u8, u8)| HhMm::new(h, m).unwrap_or(HhMm::MIDNIGHT);
    let fixed = |e, f| SyncType::Fixed {
        emission: at(e),
        fetch: at(f),
    };
    SyncConfig {
        central: CentralSettings {
            host: "central.example".into(),
            port: PORT_DEFAULT,
            customer_code: "00086".into(),
            base_name: "BASEASOC".into(),
            time_zone: "Europe/Paris".into(),
            return_time: at((23, 0)),
            sync_user: "USYN".into(),
            responsible: "RSYN".into(),
            users: vec![
                User {
                    code: "USYN".into(),
                    admin: true,
                    email: None,
                },
                User {
                    code: "RSYN".into(),
                    admin: false,
                    email: Some("rsyn@asoc.example".into()),
                },
            ],
        },
        remotes: vec![
            RemoteSettings {
                id: SiteId(2),
                code: "BSOC".into(),
                time_zone: "Europe/Paris".into(),
                sync_types: vec![fixed((21, 0), (23, 20))],
                denied_tables: BTreeSet::new(),
            },
            RemoteSettings {
                id: SiteId(3),
                code: "CSOC".into(),
                time_zone: "Europe/Paris".into(),
                sync_types: vec![
                    fixed((22, 0), (23, 40)),
                    SyncType::Immediate { wait_ms: 600_000 },
                ],
                denied_tables: BTreeSet::from(["stock_documents".into()]),
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c4_the_example_plan_is_valid() {
        seed_example().validate().unwrap();
        let s = seed_example().remote_settings(SiteId(3)).unwrap();
        let back = RemoteSchedule::from_settings(&s).unwrap();
        assert_eq!(back.sync_types, seed_example().remotes[1].sync_types);
    }

    #[test]
    fn c2_c3_m1_validation_errors_are_clear() {
        let mut c = seed_example();
        c.central.users[0].admin = false;
        let e = c.validate().unwrap_err();
        assert!(
            matches!(e, ConfigError::SyncUserNotAdmin(_)) && e.to_string().contains("C2"),
            "{e}"
        );

        let mut c = seed_example();
        c.central.users[1].email = None;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ResponsibleWithoutEmail(_))
        ));

        let mut c = seed_example();
        c.remotes[0]
            .sync_types
            .push("fixed 20:00 23:30".parse().unwrap());
        let e = c.validate().unwrap_err();
        assert!(
            matches!(e, ConfigError::TwoFixedSyncs(_, 2)) && e.to_string().contains("M1"),
            "{e}"
        );

        let mut c = seed_example();
        c.remotes[0].time_zone = "Europe/Atlantis".into();
        assert!(matches!(c.validate(), Err(ConfigError::UnknownZone(_))));

        assert!(matches!(
            "fixed 25:00 23:20".parse::<SyncType>(),
            Err(ConfigError::BadTime(_))
        ));
        assert!(matches!(
            "weekly".parse::<SyncType>(),
            Err(ConfigError::BadSyncType(_))
        ));
    }

    /// The seed's plan with BSOC moved to `zone` and given `sync` (`fixed HH:MM HH:MM`).
    fn bsoc_in(zone: &str, sync: &str) -> SyncConfig {
        let mut c = seed_example();
        c.remotes[0].time_zone = zone.into();
        c.remotes[0].sync_types = vec![sync.parse().unwrap()];
        c
    }

    #[test]
    fn m1_c4_a_remote_far_west_fetching_the_next_morning_is_valid() {
        // 02:30 in New York is 08:30 in Paris; the 23:00 return is 17:00 there; the 07:00 fetch
        // the next morning (13:00 Paris) sees it, 14 hours later — every day of the year.
        bsoc_in("America/New_York", "fixed 02:30 07:00")
            .validate()
            .unwrap();
        // Same shape far east: Tokyo fetching at 08:00, an hour after the return in winter (two
        // in summer), and an emission in New York after the return fetched the next evening.
        bsoc_in("Asia/Tokyo", "fixed 21:00 08:00")
            .validate()
            .unwrap();
        bsoc_in("America/New_York", "fixed 18:00 19:00")
            .validate()
            .unwrap();
    }

    #[test]
    fn m1_c4_describe_cycle_says_what_a_remote_gets_and_when() {
        let day = |m, d| NaiveDate::from_ymd_opt(2026, m, d).unwrap();
        let c = bsoc_in("America/New_York", "fixed 02:30 07:00");
        assert_eq!(
            c.describe_cycle(SiteId(2), day(1, 15)).unwrap().unwrap(),
            "emits at 02:30 New York (08:30 Paris), central's return at 23:00 Paris (17:00 New York), fetched at 07:00 New York the next day — 14 h 00 after the return"
        );
        // In March's weeks when New York has changed its clocks and Paris not yet.
        assert_eq!(
            c.describe_cycle(SiteId(2), day(3, 16)).unwrap().unwrap(),
            "emits at 02:30 New York (07:30 Paris), central's return at 23:00 Paris (18:00 New York), fetched at 07:00 New York the next day — 13 h 00 after the return"
        );
        let c = bsoc_in("Asia/Tokyo", "fixed 21:00 08:00");
        assert_eq!(
            c.describe_cycle(SiteId(2), day(1, 15)).unwrap().unwrap(),
            "emits at 21:00 Tokyo (13:00 Paris), central's return at 23:00 Paris (07:00 Tokyo the next day), fetched at 08:00 Tokyo the next day — 1 h 00 after the return"
        );
        let c = seed_example();
        assert_eq!(
            c.describe_cycle(SiteId(2), day(1, 15)).unwrap().unwrap(),
            "emits at 21:00 Paris, central's return at 23:00 Paris, fetched at 23:20 Paris — 0 h 20 after the return"
        );
        let c = bsoc_in("Europe/Paris", "fixed 21:00 22:30");
        assert_eq!(
            c.describe_cycle(SiteId(2), day(1, 15)).unwrap().unwrap(),
            "emits at 21:00 Paris, central's return at 23:00 Paris, fetched at 22:30 Paris the next day — 23 h 30 after the return"
        );
        let mut c = seed_example();
        c.remotes[1].sync_types = vec![SyncType::NoReturn];
        assert_eq!(c.describe_cycle(SiteId(3), day(1, 15)).unwrap(), None);
        assert_eq!(c.describe_cycle(SiteId(9), day(1, 15)).unwrap(), None);
    }

    #[test]
    fn m1_c5_the_seed_example_plan_is_still_valid() {
        seed_example().validate().unwrap();
        // A fetch before the return in the same zone still sees a return every day: the one
        // of the day before, 23 h 30 old (the same cycle as New York's 07:00 fetch above).
        bsoc_in("Europe/Paris", "fixed 21:00 22:30")
            .validate()
            .unwrap();
    }

    #[test]
    fn m1_c4_a_fetch_at_the_very_minute_of_the_return_never_sees_it() {
        // Each fetch would race central's preparation of the return, every day of the year:
        // in Paris itself, and in London (always an hour behind Paris: 22:00 is 23:00 there).
        for (zone, sync) in [
            ("Europe/Paris", "fixed 21:00 23:00"),
            ("Europe/London", "fixed 20:00 22:00"),
        ] {
            let e = bsoc_in(zone, sync).validate().unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains("BSOC") && text.contains("very minute") && text.contains("every day"),
                "{zone}: {text}"
            );
        }
    }

    #[test]
    fn m1_c4_a_fetch_less_than_an_hour_after_the_return_misses_it_around_dst_changes() {
        // Paris and New York change their clocks on different dates: 23:00 Paris is 17:00 in
        // New York most of the year, 18:00 for three weeks in March and one around November.
        // A 17:30 fetch then comes before the return; at the changes, one return is replaced
        // by the next before any fetch sees it. Refused, naming those days.
        let e = bsoc_in("America/New_York", "fixed 16:00 17:30")
            .validate()
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("BSOC") && text.contains("2026-03-28") && text.contains("2026-10-31"),
            "{text}"
        );
        // And what it gets otherwise: the return 30 minutes old, or the day before's.
        assert!(
            text.contains("fetched at 17:30 New York — 0 h 30 after the return")
                && text
                    .contains("fetched at 17:30 New York the next day — 23 h 30 after the return"),
            "{text}"
        );
        // Tokyo has no daylight saving time, Paris has: 23:00 Paris is 07:00 in Tokyo in
        // winter, 06:00 in summer; a 06:30 fetch misses the return when Paris springs forward.
        let e = bsoc_in("Asia/Tokyo", "fixed 05:00 06:30")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("2026-03-28"), "{e}");
        // A margin of more than the hour the difference moves by holds all year.
        bsoc_in("America/New_York", "fixed 16:00 18:30")
            .validate()
            .unwrap();
        bsoc_in("Asia/Tokyo", "fixed 05:00 07:30")
            .validate()
            .unwrap();
        // Central on the other side: New York returning at 17:00 (23:00 in Paris, 22:00 for
        // those weeks). A Paris remote fetching at 22:30 sees the day before's return most of
        // the year and that day's for those weeks: refused. CSOC's 23:40 holds all year.
        let mut c = bsoc_in("Europe/Paris", "fixed 21:00 22:30");
        c.central.time_zone = "America/New_York".into();
        c.central.return_time = "17:00".parse().unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("BSOC"), "{e}");
        c.remotes[0].sync_types = vec!["fixed 21:00 23:20".parse().unwrap()];
        c.validate().unwrap();
    }
}

//! The sync configuration (SPEC C2–C6): central's settings and each remote's, validated with
//! clear errors. Central keeps it; each remote receives its part with every return and bootstrap
//! (as the settings of the [`ConfigSnapshot`](crate::ConfigSnapshot)), which overwrites a remote
//! admin's local edits (C6).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;
use outpost_engine::SiteId;
use serde::{Deserialize, Serialize};

use crate::schedule::{HhMm, Zone};

/// T2: central listens on this port unless configured otherwise.
pub const PORT_DEFAULT: u16 = 2638;

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
    /// A fetch time before the common return is ready.
    #[error(
        "remote {code} fetches its return at {fetch} ({zone}) on {date}, before central prepares it at {ret} ({central_zone}): it would never see the common return"
    )]
    FetchBeforeReturn {
        /// The remote.
        code: String,
        /// Its fetch time.
        fetch: HhMm,
        /// Its zone.
        zone: String,
        /// Central's return time.
        ret: HhMm,
        /// Central's zone.
        central_zone: String,
        /// The date on which it fails.
        date: NaiveDate,
    },
    /// Duplicate remote id or code.
    #[error("remote {0} is configured twice")]
    DuplicateRemote(String),
}

impl SyncConfig {
    /// Checks everything C2–C4 and M1 require, with one clear error for the first problem.
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
            let fixed: Vec<(HhMm, HhMm)> = r
                .sync_types
                .iter()
                .filter_map(|t| match t {
                    SyncType::Fixed { emission, fetch } => Some((*emission, *fetch)),
                    _ => None,
                })
                .collect();
            if fixed.len() > 1 {
                return Err(ConfigError::TwoFixedSyncs(r.code.clone(), fixed.len()));
            }
            if let Some((emission, fetch)) = fixed.first() {
                // Check on a winter and a summer day: time-zone offsets change the order.
                for date in [(2026, 1, 15), (2026, 7, 15)]
                    .into_iter()
                    .filter_map(|(y, m, d)| NaiveDate::from_ymd_opt(y, m, d))
                {
                    let ret = central_zone.instant(date, c.return_time);
                    let d = zone.date_at(ret);
                    let days = [d.pred_opt(), Some(d), d.succ_opt()];
                    let instants = |at: HhMm| -> Vec<u64> {
                        days.iter()
                            .flatten()
                            .map(|day| zone.instant(*day, at))
                            .collect()
                    };
                    // The cycle: the last emission at or before the return, then the first
                    // fetch after that emission — which must not come before the return.
                    let emitted = instants(*emission).into_iter().filter(|t| *t <= ret).max();
                    let fetched =
                        emitted.and_then(|e| instants(*fetch).into_iter().filter(|t| *t > e).min());
                    if fetched.is_some_and(|f| f < ret) {
                        return Err(ConfigError::FetchBeforeReturn {
                            code: r.code.clone(),
                            fetch: *fetch,
                            zone: r.time_zone.clone(),
                            ret: c.return_time,
                            central_zone: c.time_zone.clone(),
                            date,
                        });
                    }
                }
            }
        }
        Ok(())
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

/// A remote's schedule, read back from its settings map.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RemoteSchedule {
    /// Its zone.
    pub zone: Zone,
    /// Its sync types.
    pub sync_types: Vec<SyncType>,
}

impl RemoteSchedule {
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

        // A fetch at 22:30 cannot see a return prepared at 23:00.
        let mut c = seed_example();
        c.remotes[0].sync_types = vec!["fixed 21:00 22:30".parse().unwrap()];
        let e = c.validate().unwrap_err();
        assert!(matches!(e, ConfigError::FetchBeforeReturn { .. }), "{e}");
        // In New York, a 18:00 emission and 19:00 fetch straddle no return: central's 23:00 in
        // Paris is 17:00 there, so the 19:00 fetch comes before the next one.
        let mut c = seed_example();
        c.remotes[0].time_zone = "America/New_York".into();
        c.remotes[0].sync_types = vec!["fixed 18:00 19:00".parse().unwrap()];
        let e = c.validate().unwrap_err();
        assert!(matches!(e, ConfigError::FetchBeforeReturn { .. }), "{e}");
        // 16:00 and 17:30 there (22:00 and 23:30 in Paris) are fine; so is Tokyo emitting at
        // 21:00 and fetching at 08:00 the next morning (the return is 07:00 there).
        c.remotes[0].sync_types = vec!["fixed 16:00 17:30".parse().unwrap()];
        c.validate().unwrap();
        c.remotes[0].time_zone = "Asia/Tokyo".into();
        c.remotes[0].sync_types = vec!["fixed 21:00 08:00".parse().unwrap()];
        c.validate().unwrap();
    }
}

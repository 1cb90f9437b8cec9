//! Local times of day and their instants: "21:00 in Europe/Paris on 2026-11-25", resolved with
//! real time-zone rules (chrono-tz). On a spring-forward day a time inside the gap runs at the
//! first valid instant after it; on a fall-back day a time in the overlap runs once, at its first
//! occurrence. [`FixedPlan`] puts a fixed-time remote's emission and fetch against central's
//! common return in absolute time: its [`Cycle`] of a day, and the returns it would miss.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// A time of day, `HH:MM`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct HhMm {
    hour: u8,
    minute: u8,
}

/// A malformed `HH:MM`.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("{0:?} is not a time of day: write HH:MM, from 00:00 to 23:59")]
pub struct BadTime(pub String);

impl HhMm {
    /// 00:00.
    pub const MIDNIGHT: HhMm = HhMm { hour: 0, minute: 0 };

    /// A time of day; `None` out of range.
    pub fn new(hour: u8, minute: u8) -> Option<Self> {
        (hour < 24 && minute < 60).then_some(HhMm { hour, minute })
    }

    /// Minutes since midnight.
    pub fn minutes(self) -> u32 {
        u32::from(self.hour) * 60 + u32::from(self.minute)
    }

    fn naive(self) -> NaiveTime {
        NaiveTime::from_hms_opt(self.hour.into(), self.minute.into(), 0).unwrap_or(NaiveTime::MIN)
    }
}

impl FromStr for HhMm {
    type Err = BadTime;
    fn from_str(s: &str) -> Result<Self, BadTime> {
        let bad = || BadTime(s.to_owned());
        let (h, m) = s.split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        let hour: u8 = h.parse().map_err(|_| bad())?;
        let minute: u8 = m.parse().map_err(|_| bad())?;
        HhMm::new(hour, minute).ok_or_else(bad)
    }
}

impl fmt::Display for HhMm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

/// An IANA time zone that was checked to exist.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Zone(Tz);

/// An unknown time zone name.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("unknown time zone {0:?}: use an IANA name such as Europe/Paris")]
pub struct UnknownZone(pub String);

impl FromStr for Zone {
    type Err = UnknownZone;
    fn from_str(s: &str) -> Result<Self, UnknownZone> {
        s.parse::<Tz>()
            .map(Zone)
            .map_err(|_| UnknownZone(s.to_owned()))
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

fn utc(ms: u64) -> DateTime<Utc> {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn to_ms(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

impl Zone {
    /// Coordinated Universal Time.
    pub const UTC: Zone = Zone(Tz::UTC);

    /// The local date at an instant (UTC ms).
    pub fn date_at(self, ms: u64) -> NaiveDate {
        utc(ms).with_timezone(&self.0).date_naive()
    }

    /// The local time of day at an instant, `HH:MM`.
    pub fn hhmm_at(self, ms: u64) -> String {
        utc(ms).with_timezone(&self.0).format("%H:%M").to_string()
    }

    /// The local date and time at an instant, `YYYY-MM-DD HH:MM:SS`, for monitoring.
    pub fn datetime_at(self, ms: u64) -> String {
        utc(ms)
            .with_timezone(&self.0)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    }

    /// The latest instant at or before `now_ms` of the local time `at` (today's or yesterday's).
    pub fn latest_at_or_before(self, at: HhMm, now_ms: u64) -> u64 {
        let today = self.date_at(now_ms);
        let t = self.instant(today, at);
        if t <= now_ms {
            return t;
        }
        today
            .pred_opt()
            .map_or(0, |yesterday| self.instant(yesterday, at))
    }

    /// The instant (UTC ms) of `at` on local `date`. In a spring-forward gap: the first valid
    /// instant after the gap; in a fall-back overlap: the first occurrence.
    pub fn instant(self, date: NaiveDate, at: HhMm) -> u64 {
        let mut local = date.and_time(at.naive());
        // Gaps are at most a few hours; step a minute at a time to their end.
        for _ in 0..(24 * 60) {
            match self.0.from_local_datetime(&local) {
                LocalResult::Single(t) => return to_ms(t.with_timezone(&Utc)),
                LocalResult::Ambiguous(first, _) => return to_ms(first.with_timezone(&Utc)),
                LocalResult::None => local += chrono::Duration::minutes(1),
            }
        }
        to_ms(date.and_time(at.naive()).and_utc())
    }
}

impl Zone {
    /// The zone's place, for messages: `America/New_York` → `New York`, `UTC` → `UTC`.
    pub fn city(self) -> String {
        let name = self.0.name();
        name.rsplit('/').next().unwrap_or(name).replace('_', " ")
    }

    /// The first instant strictly after `after_ms` at which the local time is `at`.
    pub fn first_after(self, at: HhMm, after_ms: u64) -> u64 {
        let d = self.date_at(after_ms);
        let mut day = d.pred_opt().unwrap_or(d);
        // Local dates' instants increase with the date: at most three steps.
        for _ in 0..5 {
            let t = self.instant(day, at);
            if t > after_ms {
                return t;
            }
            day = day.succ_opt().unwrap_or(day);
        }
        after_ms + 86_400_000
    }
}

/// A fixed-time remote's daily schedule against central's common return (M1, C4): the remote
/// emits at `emission` and fetches at `fetch` in its zone; central prepares every deferred
/// remote's return at `ret` in its own zone. Returns accumulate (a fetch gets the newest one,
/// carrying everything central held when preparing it), so what matters is, in absolute time,
/// whether every return is fetched before the next one replaces it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FixedPlan {
    /// The remote's zone.
    pub zone: Zone,
    /// Its emission time, local.
    pub emission: HhMm,
    /// Its fetch time, local.
    pub fetch: HhMm,
    /// Central's zone.
    pub central_zone: Zone,
    /// Central's common return time, in central's zone.
    pub ret: HhMm,
}

/// One day of a [`FixedPlan`] in absolute time (UTC ms): an emission, the first common return
/// after it (the one that carries it), and the first fetch after that return.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Cycle {
    /// The plan.
    pub plan: FixedPlan,
    /// The emission.
    pub emitted_ms: u64,
    /// The common return that carries it: the first strictly after it (an emission at the very
    /// minute of the return is still being sent and processed when the return is prepared).
    pub returned_ms: u64,
    /// The first fetch strictly after that return.
    pub fetched_ms: u64,
    /// The return after that one: if it comes first, the fetch gets it instead.
    pub next_return_ms: u64,
}

/// A common return a remote would never fetch: the next one replaces it first (or at the very
/// minute of the fetch, which then races it).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MissedReturn {
    /// Central's local date of the return.
    pub date: NaiveDate,
    /// The return.
    pub returned_ms: u64,
    /// The return that replaces it.
    pub next_return_ms: u64,
    /// The remote's first fetch after the return.
    pub fetched_ms: u64,
}

impl MissedReturn {
    /// Whether the fetch falls on the very minute of the next return (a race, not a gap).
    pub fn is_race(&self) -> bool {
        self.fetched_ms == self.next_return_ms
    }
}

impl FixedPlan {
    /// The cycle of the emission of the remote's local `date`.
    pub fn cycle(&self, date: NaiveDate) -> Cycle {
        let emitted_ms = self.zone.instant(date, self.emission);
        let returned_ms = self.central_zone.first_after(self.ret, emitted_ms);
        let fetched_ms = self.zone.first_after(self.fetch, returned_ms);
        let next_return_ms = self.central_zone.first_after(self.ret, returned_ms);
        Cycle {
            plan: *self,
            emitted_ms,
            returned_ms,
            fetched_ms,
            next_return_ms,
        }
    }

    /// The returns of central's local dates `from` and the `days - 1` after it that the remote
    /// would never fetch: those whose first fetch after them is not strictly before the next
    /// return. With both zones' offsets fixed this is every day or none (a fetch at the very
    /// minute of the return); when daylight saving time moves one zone against the other, a
    /// fetch with less margin than the move misses a return around the changes.
    pub fn missed_returns(&self, from: NaiveDate, days: u32) -> Vec<MissedReturn> {
        let mut out = Vec::new();
        let mut date = from;
        let mut returned_ms = self.central_zone.instant(date, self.ret);
        for _ in 0..days {
            let Some(next) = date.succ_opt() else { break };
            let next_return_ms = self.central_zone.instant(next, self.ret);
            let fetched_ms = self.zone.first_after(self.fetch, returned_ms);
            if fetched_ms >= next_return_ms {
                out.push(MissedReturn {
                    date,
                    returned_ms,
                    next_return_ms,
                    fetched_ms,
                });
            }
            date = next;
            returned_ms = next_return_ms;
        }
        out
    }
}

/// `HH:MM Place`, with `the next day` / `the day before` / `N days later` against `day0`.
fn at_in(zone: Zone, ms: u64, day0: NaiveDate) -> String {
    let days = (zone.date_at(ms) - day0).num_days();
    let when = match days {
        0 => String::new(),
        1 => " the next day".to_owned(),
        -1 => " the day before".to_owned(),
        n if n > 1 => format!(" {n} days later"),
        n => format!(" {} days before", -n),
    };
    format!("{} {}{when}", zone.hhmm_at(ms), zone.city())
}

/// A duration as `14 h 00`.
pub fn hours_minutes(ms: u64) -> String {
    let minutes = ms / 60_000;
    format!("{} h {:02}", minutes / 60, minutes % 60)
}

impl fmt::Display for Cycle {
    /// `emits at 02:30 New York (08:30 Paris), central's return at 23:00 Paris (17:00 New
    /// York), fetched at 07:00 New York the next day — 14 h 00 after the return`; days are
    /// counted from the emission's date in each zone; one zone only when both are the same.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (z, c) = (self.plan.zone, self.plan.central_zone);
        let (day_z, day_c) = (z.date_at(self.emitted_ms), c.date_at(self.emitted_ms));
        let both = |ms: u64, first: Zone, day_first, second: Zone, day_second| {
            if first == second {
                at_in(first, ms, day_first)
            } else {
                format!(
                    "{} ({})",
                    at_in(first, ms, day_first),
                    at_in(second, ms, day_second)
                )
            }
        };
        write!(
            f,
            "emits at {}, central's return at {}, ",
            both(self.emitted_ms, z, day_z, c, day_c),
            both(self.returned_ms, c, day_c, z, day_z),
        )?;
        if self.fetched_ms >= self.next_return_ms {
            write!(
                f,
                "replaced by the next one at {} before its fetch at {}",
                both(self.next_return_ms, c, day_c, z, day_z),
                at_in(z, self.fetched_ms, day_z),
            )
        } else {
            write!(
                f,
                "fetched at {} — {} after the return",
                at_in(z, self.fetched_ms, day_z),
                hours_minutes(self.fetched_ms - self.returned_ms),
            )
        }
    }
}

/// A daily job at a local time: due once per local date, at the resolved instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Daily {
    at: HhMm,
    // Invariant: the local date of the last run; the job runs at most once per local date.
    last_run: Option<NaiveDate>,
}

impl Daily {
    /// A job at `at`, never run yet.
    pub fn new(at: HhMm) -> Self {
        Daily { at, last_run: None }
    }

    /// The same job moved to `at`, keeping the local date it last ran: a schedule changed
    /// after today's run does not run it again today (M1: one fixed-time sync a day).
    pub fn retime(&mut self, at: HhMm) {
        self.at = at;
    }

    /// The local date it last ran, if it ran.
    pub fn last_run(&self) -> Option<NaiveDate> {
        self.last_run
    }

    /// Marks it as run on local `date` (a run the process made before it restarted); never
    /// moves the date back.
    pub fn ran_on(&mut self, date: NaiveDate) {
        if self.last_run.is_none_or(|d| d < date) {
            self.last_run = Some(date);
        }
    }

    /// The date it last ran, as far as `today` can tell: a run dated after today was made
    /// while the clock was ahead (set back since), and does not stand for today's or a later
    /// day's run — counted as yesterday's.
    fn last_run_by(&self, today: NaiveDate) -> Option<NaiveDate> {
        match self.last_run {
            Some(d) if d > today => today.pred_opt(),
            other => other,
        }
    }

    /// Whether the job is due at `now_ms` in `zone`; if so, it is marked as run for that date.
    pub fn take_due(&mut self, zone: Zone, now_ms: u64) -> bool {
        self.take_due_within(zone, now_ms, DUE_WINDOW_MS)
    }

    /// [`Daily::take_due`] however late: a run missed by more than [`DUE_WINDOW_MS`] (a machine
    /// asleep or switched off at the job's time) is made now, once — for a job that is
    /// harmless late and must not be skipped (fetching the return that waits).
    pub fn take_due_late(&mut self, zone: Zone, now_ms: u64) -> bool {
        self.take_due_within(zone, now_ms, u64::MAX)
    }

    fn take_due_within(&mut self, zone: Zone, now_ms: u64, window_ms: u64) -> bool {
        let today = zone.date_at(now_ms);
        self.last_run = self.last_run_by(today);
        // The job of the previous local date may still be pending right after midnight when its
        // instant moved past midnight; consider both dates.
        let due: Vec<NaiveDate> = [today.pred_opt(), Some(today)]
            .into_iter()
            .flatten()
            .filter(|date| self.last_run.is_none_or(|d| d < *date))
            .filter(|date| {
                let at = zone.instant(*date, self.at);
                now_ms >= at && at.saturating_add(window_ms) > now_ms
            })
            .collect();
        // Within the window, the older date's run first (yesterday's late job, then today's);
        // however late, one run stands for both.
        let run = if window_ms == u64::MAX {
            due.last()
        } else {
            due.first()
        };
        match run {
            Some(date) => {
                self.last_run = Some(*date);
                true
            }
            None => false,
        }
    }

    /// The next instant at which the job will be due, after `now_ms`.
    pub fn next_due(&self, zone: Zone, now_ms: u64) -> u64 {
        let today = zone.date_at(now_ms);
        [
            Some(today),
            today.succ_opt(),
            today.succ_opt().and_then(|d| d.succ_opt()),
        ]
        .into_iter()
        .flatten()
        .filter(|d| self.last_run_by(today).is_none_or(|r| r < *d))
        .map(|d| zone.instant(d, self.at))
        .find(|t| *t >= now_ms)
        .unwrap_or(now_ms + 86_400_000)
    }
}

/// How late a daily job may still run (a process that was down at its time catches up within
/// this window rather than running a stale job hours later): a remote's emission and central's
/// common return. A remote's fetch is made however late ([`Daily::take_due_late`]).
pub const DUE_WINDOW_MS: u64 = 6 * 3_600_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> u64 {
        to_ms(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc))
    }

    /// M1 after a clock set back: the job ran on a date the clock gave wrongly (a day ahead);
    /// once the clock is right, today's run is not taken for done — nor tomorrow's.
    #[test]
    fn m1_a_run_on_a_date_ahead_of_the_clock_does_not_skip_today_once_it_is_set_back() {
        let z: Zone = "Europe/Paris".parse().unwrap();
        let mut job = Daily::new("21:00".parse().unwrap());
        // The clock a day and ten minutes ahead: the job runs for tomorrow's date.
        assert!(job.take_due(z, ms("2026-12-06T20:10:00Z")));
        // Set right: today, 20:59 Paris (19:59 UTC), the next run is today's 21:00.
        let now = ms("2026-12-05T19:59:00Z");
        assert_eq!(job.next_due(z, now), ms("2026-12-05T20:00:00Z"));
        assert!(!job.take_due(z, now));
        assert!(job.take_due(z, ms("2026-12-05T20:00:30Z")));
        assert!(job.take_due(z, ms("2026-12-06T20:00:30Z")));
        assert!(!job.take_due(z, ms("2026-12-06T20:30:00Z")));
    }

    /// M1: a fetch missed while the machine slept, which wakes after today's fetch time too:
    /// one fetch stands for both days' — yesterday's taken first, today's a minute later, made
    /// a second connection (and, central out of reach, a second failure and a longer wait).
    #[test]
    fn m1_a_fetch_missed_for_two_days_is_made_once_on_waking() {
        let z: Zone = "Europe/Paris".parse().unwrap();
        let mut job = Daily::new("01:00".parse().unwrap());
        assert!(job.take_due_late(z, ms("2026-12-03T00:01:00Z")));
        // Asleep from then until 2026-12-05 10:00 Paris: the 4th's and the 5th's fetches missed.
        assert!(job.take_due_late(z, ms("2026-12-05T09:00:00Z")));
        assert!(!job.take_due_late(z, ms("2026-12-05T09:01:00Z")));
        assert_eq!(
            job.next_due(z, ms("2026-12-05T09:01:00Z")),
            ms("2026-12-06T00:00:00Z")
        );
        // The next day's on time, and not again.
        assert!(job.take_due_late(z, ms("2026-12-06T00:00:10Z")));
        assert!(!job.take_due_late(z, ms("2026-12-06T05:00:00Z")));
    }

    #[test]
    fn hhmm_parses_and_refuses() {
        assert_eq!("21:05".parse::<HhMm>().unwrap().to_string(), "21:05");
        for bad in ["24:00", "9:00", "21:60", "2100", "ab:cd", ""] {
            assert!(bad.parse::<HhMm>().is_err(), "{bad}");
        }
        assert!("Mars/Olympus".parse::<Zone>().is_err());
    }

    #[test]
    fn spring_forward_runs_at_the_first_valid_instant_after_the_gap() {
        for (zone, day, expected) in [
            // 2026-03-08 02:00 EST → 03:00 EDT; 03:00 EDT = 07:00 UTC.
            ("America/New_York", (2026, 3, 8), "2026-03-08T07:00:00Z"),
            // 2026-03-29 02:00 CET → 03:00 CEST; 03:00 CEST = 01:00 UTC.
            ("Europe/Paris", (2026, 3, 29), "2026-03-29T01:00:00Z"),
        ] {
            let z: Zone = zone.parse().unwrap();
            let date = NaiveDate::from_ymd_opt(day.0, day.1, day.2).unwrap();
            let at = z.instant(date, "02:30".parse().unwrap());
            assert_eq!(at, ms(expected), "{zone}");
            let mut job = Daily::new("02:30".parse().unwrap());
            let mut runs = Vec::new();
            let start = ms(expected) - 6 * 3_600_000;
            for minute in 0..(12 * 60) {
                let now = start + minute * 60_000;
                if job.take_due(z, now) {
                    runs.push(now);
                }
            }
            assert_eq!(
                runs,
                vec![ms(expected)],
                "{zone}: once, right after the gap"
            );
        }
    }

    #[test]
    fn fall_back_runs_a_time_in_the_overlap_once() {
        for (zone, day, first) in [
            // 2026-11-01 02:00 EDT → 01:00 EST: 01:30 happens twice; the first is 05:30 UTC.
            ("America/New_York", (2026, 11, 1), "2026-11-01T05:30:00Z"),
            // 2026-10-25 03:00 CEST → 02:00 CET: 02:30 happens twice; the first is 00:30 UTC.
            ("Europe/Paris", (2026, 10, 25), "2026-10-25T00:30:00Z"),
        ] {
            let z: Zone = zone.parse().unwrap();
            let at = if zone == "Europe/Paris" {
                "02:30"
            } else {
                "01:30"
            };
            let date = NaiveDate::from_ymd_opt(day.0, day.1, day.2).unwrap();
            assert_eq!(z.instant(date, at.parse().unwrap()), ms(first), "{zone}");
            let mut job = Daily::new(at.parse().unwrap());
            let mut runs = Vec::new();
            let start = ms(first) - 3 * 3_600_000;
            for minute in 0..(8 * 60) {
                let now = start + minute * 60_000;
                if job.take_due(z, now) {
                    runs.push(now);
                }
            }
            assert_eq!(runs, vec![ms(first)], "{zone}: once, not twice");
        }
    }

    #[test]
    fn m1_missed_returns_are_found_around_the_clock_changes_of_either_zone() {
        let paris: Zone = "Europe/Paris".parse().unwrap();
        let new_york: Zone = "America/New_York".parse().unwrap();
        assert_eq!(new_york.city(), "New York");
        assert_eq!(Zone::UTC.city(), "UTC");
        let plan = |fetch: &str| FixedPlan {
            zone: new_york,
            emission: "16:00".parse().unwrap(),
            fetch: fetch.parse().unwrap(),
            central_zone: paris,
            ret: "23:00".parse().unwrap(),
        };
        let jan1 = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let missed = plan("17:30").missed_returns(jan1, 365);
        let dates: Vec<String> = missed.iter().map(|m| m.date.to_string()).collect();
        assert_eq!(dates, ["2026-03-28", "2026-10-31"]);
        // The return of 2026-03-28, 22:00 UTC, is replaced at 21:00 UTC the next day (Paris
        // sprang forward), before the 17:30 fetch, 21:30 UTC (New York did three weeks ago).
        assert_eq!(missed[0].returned_ms, ms("2026-03-28T22:00:00Z"));
        assert_eq!(missed[0].next_return_ms, ms("2026-03-29T21:00:00Z"));
        assert_eq!(missed[0].fetched_ms, ms("2026-03-29T21:30:00Z"));
        assert!(!missed[0].is_race());
        assert!(plan("18:30").missed_returns(jan1, 365).is_empty());
        // At the return's very minute most of the year: a race on every such day.
        let missed = plan("17:00").missed_returns(jan1, 365);
        assert!(missed.len() > 300 && missed.iter().all(|m| m.is_race()));
        assert_eq!(
            hours_minutes(plan("07:00").cycle(jan1).fetched_ms - ms("2026-01-01T22:00:00Z")),
            "14 h 00"
        );
    }

    #[test]
    fn a_daily_job_runs_once_a_day_and_says_when_next() {
        let z: Zone = "Asia/Tokyo".parse().unwrap();
        let mut job = Daily::new("18:00".parse().unwrap());
        let mut runs = 0;
        let start = ms("2026-11-25T00:00:00Z");
        for minute in 0..(3 * 24 * 60) {
            if job.take_due(z, start + minute * 60_000) {
                runs += 1;
            }
        }
        assert_eq!(runs, 3);
        assert_eq!(
            job.next_due(z, ms("2026-11-28T00:00:00Z")),
            ms("2026-11-28T09:00:00Z")
        );
    }
}

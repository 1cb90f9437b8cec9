//! The hybrid logical clock: physical UTC milliseconds and a logical counter in one `u64`.
//!
//! A stamp is "the latest by date/time" (SPEC R2) while clocks are sane, and stays causal when
//! they are not: a site that receives a stamp ahead of its own clock moves past it, so its next
//! write wins over what it has seen. Time comes from an injected [`Clock`]; the engine never reads
//! the wall clock itself.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Bits of a stamp given to the logical counter.
const LOGICAL_BITS: u32 = 16;
/// The largest physical time a stamp can carry (48 bits of milliseconds: year 10889).
pub const PHYSICAL_MS_MAX: u64 = (1 << (64 - LOGICAL_BITS)) - 1;

/// A hybrid logical clock stamp: `physical_ms << 16 | logical`. Stamps order as integers.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Stamp(u64);

impl Stamp {
    /// The smallest stamp.
    pub const ZERO: Stamp = Stamp(0);

    /// A stamp from a physical time (clamped to [`PHYSICAL_MS_MAX`]) and a logical counter.
    pub fn new(physical_ms: u64, logical: u16) -> Self {
        Stamp((physical_ms.min(PHYSICAL_MS_MAX) << LOGICAL_BITS) | u64::from(logical))
    }

    /// The stamp as stored and sent.
    pub fn from_u64(raw: u64) -> Self {
        Stamp(raw)
    }

    /// The raw integer.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// UTC milliseconds since the Unix epoch.
    pub fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The logical counter.
    pub fn logical(self) -> u16 {
        // Truncation intended: the low bits are the counter.
        (self.0 & 0xFFFF) as u16
    }

    /// The next stamp after this one; a full counter carries into the physical part.
    fn successor(self) -> Stamp {
        Stamp(self.0.saturating_add(1))
    }
}

impl fmt::Debug for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Stamp({}+{})", self.physical_ms(), self.logical())
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.physical_ms(), self.logical())
    }
}

/// A source of physical time: UTC milliseconds since the Unix epoch. Injected into the store so
/// the same code runs under a virtual clock in tests and the simulator.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, in UTC milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// A clock that says what it is told: for tests, the simulator and deterministic runs.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock standing at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        ManualClock(Arc::new(AtomicU64::new(now_ms)))
    }

    /// Sets the time (it may go backwards: a clock can be wrong).
    pub fn set(&self, now_ms: u64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }

    /// Moves the time forward.
    pub fn advance(&self, by_ms: u64) {
        self.0.fetch_add(by_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// While a site's clock is behind its last stamp, its logical counter follows the clock in
/// steps of this many milliseconds (`u16::MAX` steps: up to 36 hours behind).
pub const BEHIND_STEP_MS: u64 = 2_000;

/// The clock state of one site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hlc {
    // Invariant: last >= every stamp this site has issued or stored.
    last: Stamp,
}

impl Hlc {
    /// Resumes from a persisted high-water mark.
    pub fn new(high_water: Stamp) -> Self {
        Hlc { last: high_water }
    }

    /// The highest stamp issued or observed.
    pub fn last(&self) -> Stamp {
        self.last
    }

    /// A new stamp for a local write at physical time `now_ms`: greater than every stamp before.
    ///
    /// While the clock is behind the last stamp (one taken from a clock ahead), the stamp stays
    /// at that physical time and its logical counter also follows the clock: at least
    /// `u16::MAX` less one step per [`BEHIND_STEP_MS`] the clock is behind. So a store put back
    /// from its backup, which numbers its next commits as the lost ones, does not stamp them
    /// alike either, as long as the clock moved on by a step (R1: central tells a renumbered
    /// commit by its stamp).
    pub fn tick(&mut self, now_ms: u64) -> Stamp {
        let mut next = Stamp::new(now_ms, 0).max(self.last.successor());
        let pinned = self.last.physical_ms();
        if now_ms < pinned {
            let steps = (pinned - now_ms) / BEHIND_STEP_MS;
            if let Ok(steps) = u16::try_from(steps) {
                next = next.max(Stamp::new(pinned, u16::MAX - steps));
            }
        }
        debug_assert!(next > self.last);
        self.last = next;
        next
    }

    /// Takes in a stamp received from another site, so the next tick is after it.
    pub fn observe(&mut self, stamp: Stamp) {
        self.last = self.last.max(stamp);
    }
}

/// How far `stamp` is ahead of the physical time `now_ms`, in milliseconds (0 if not ahead).
pub fn ahead_ms(stamp: Stamp, now_ms: u64) -> u64 {
    stamp.physical_ms().saturating_sub(now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_is_monotonic_even_when_the_clock_goes_back() {
        let mut hlc = Hlc::new(Stamp::ZERO);
        let a = hlc.tick(1_000);
        let b = hlc.tick(1_000);
        let c = hlc.tick(500);
        assert!(a < b && b < c);
        assert_eq!(a.physical_ms(), 1_000);
        assert_eq!(b.logical(), 1);
        assert_eq!(c.physical_ms(), 1_000);
        let d = hlc.tick(2_000);
        assert_eq!((d.physical_ms(), d.logical()), (2_000, 0));
    }

    #[test]
    fn observe_moves_past_a_stamp_from_ahead() {
        let mut hlc = Hlc::new(Stamp::ZERO);
        let remote = Stamp::new(10_000, 7);
        hlc.observe(remote);
        let next = hlc.tick(1_000);
        assert!(next > remote);
        assert_eq!(ahead_ms(remote, 1_000), 9_000);
        assert_eq!(ahead_ms(remote, 20_000), 0);
    }

    /// R1: a store put back from its backup numbers its next commits as the lost ones; central
    /// tells them apart by their stamps. While its clock is behind its last stamp (a stamp taken
    /// from a clock a day ahead), the lost commit and the new one must not be stamped alike.
    #[test]
    fn r1_a_store_put_back_while_its_clock_is_behind_its_stamps_does_not_restamp_the_lost_ones() {
        let day = 86_400_000;
        let now = 1_000_000_000;
        let backup = Hlc::new(Stamp::new(now + day, 0));
        let mut lost = backup;
        let mut restored = backup;
        let lost_stamps: Vec<Stamp> = (0..3).map(|i| lost.tick(now + i * 60_000)).collect();
        let new_stamps: Vec<Stamp> = (0..3)
            .map(|i| restored.tick(now + 3_600_000 + i * 60_000))
            .collect();
        for (a, b) in lost_stamps.iter().zip(&new_stamps) {
            assert_ne!(a, b);
            assert_eq!(
                a.physical_ms(),
                now + day,
                "still causal: after the stamp taken"
            );
        }
        // Stamps still only grow, and the clock catching up takes over.
        assert!(new_stamps.windows(2).all(|w| w[0] < w[1]));
        let caught_up = restored.tick(now + 2 * day);
        assert_eq!(
            (caught_up.physical_ms(), caught_up.logical()),
            (now + 2 * day, 0)
        );
    }

    #[test]
    fn logical_counter_overflow_carries_into_physical() {
        let mut hlc = Hlc::new(Stamp::new(5, u16::MAX));
        let next = hlc.tick(0);
        assert_eq!((next.physical_ms(), next.logical()), (6, 0));
    }
}

//! Dots and knowledge: which changes a site has, per origin, as sets of sequence ranges.
//!
//! Every local commit takes the next sequence number of its site: a [`Dot`]. A site's
//! [`Knowledge`] is, per origin site, the set of sequence numbers whose changes it has. It is a set
//! of ranges rather than one counter because reserved documents (SPEC R7) leave holes in what an
//! emission covers.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::site::SiteId;

/// One commit of one site: `(site, seq)`; sequence numbers start at 1.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Dot {
    /// The site that made the commit (the change's origin).
    pub site: SiteId,
    /// The commit's sequence number at that site.
    pub seq: u64,
}

impl fmt::Display for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.site, self.seq)
    }
}

/// A set of `u64`, kept as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RangeSet {
    // Invariant: sorted by start; for consecutive (a, b), (c, d): a <= b and b + 1 < c.
    ranges: Vec<(u64, u64)>,
}

impl fmt::Debug for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.ranges.iter().map(|(a, b)| a..=b))
            .finish()
    }
}

impl RangeSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set of one range; empty when `first > last`.
    pub fn from_range(first: u64, last: u64) -> Self {
        let mut set = Self::new();
        set.insert_range(first, last);
        set
    }

    /// Whether the ranges are well formed (used after decoding untrusted bytes).
    pub fn is_well_formed(&self) -> bool {
        self.ranges.iter().all(|(a, b)| a <= b)
            && self.ranges.windows(2).all(
                |w| matches!(w, [(_, b), (c, _)] if b.checked_add(1).is_some_and(|b1| b1 < *c)),
            )
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The inclusive ranges, in order.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// The largest member.
    pub fn max(&self) -> Option<u64> {
        self.ranges.last().map(|(_, b)| *b)
    }

    /// How many numbers the set holds.
    pub fn count(&self) -> u64 {
        self.ranges
            .iter()
            .map(|(a, b)| (b - a).saturating_add(1))
            .fold(0, u64::saturating_add)
    }

    /// Membership.
    pub fn contains(&self, x: u64) -> bool {
        let i = self.ranges.partition_point(|(_, b)| *b < x);
        self.ranges.get(i).is_some_and(|(a, _)| *a <= x)
    }

    /// Adds one number.
    pub fn insert(&mut self, x: u64) {
        self.insert_range(x, x);
    }

    /// Adds `first..=last` (nothing when `first > last`).
    pub fn insert_range(&mut self, first: u64, last: u64) {
        if first > last {
            return;
        }
        // Ranges entirely before `first - 1` stay; those touching or overlapping merge.
        let lo = self
            .ranges
            .partition_point(|(_, b)| b.saturating_add(1) < first);
        let hi = self
            .ranges
            .partition_point(|(a, _)| *a <= last.saturating_add(1));
        let (mut new_a, mut new_b) = (first, last);
        if let Some(merged) = self.ranges.get(lo..hi) {
            if let (Some((a, _)), Some((_, b))) = (merged.first(), merged.last()) {
                new_a = new_a.min(*a);
                new_b = new_b.max(*b);
            }
            self.ranges.splice(lo..hi, [(new_a, new_b)]);
        }
        debug_assert!(self.is_well_formed());
    }

    /// Adds every member of `other`.
    pub fn union_with(&mut self, other: &RangeSet) {
        // A few ranges added (the usual case: a flow's new dots) go in one by one; more are
        // merged in one pass, so that a union of two long interleaved sets (a hostile flow
        // header's, say) stays linear.
        if other.ranges.len() <= 4 {
            for (a, b) in &other.ranges {
                self.insert_range(*a, *b);
            }
            return;
        }
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(self.ranges.len() + other.ranges.len());
        let (mut mine, mut theirs) = (
            self.ranges.iter().peekable(),
            other.ranges.iter().peekable(),
        );
        loop {
            let next = match (mine.peek(), theirs.peek()) {
                (Some(m), Some(t)) if m.0 <= t.0 => mine.next(),
                (Some(_), Some(_)) => theirs.next(),
                (Some(_), None) => mine.next(),
                (None, Some(_)) => theirs.next(),
                (None, None) => break,
            };
            let Some(&(a, b)) = next else { break };
            match out.last_mut() {
                Some(last) if last.1.saturating_add(1) >= a => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        self.ranges = out;
        debug_assert!(self.is_well_formed());
    }

    /// The members of `self` not in `other`.
    pub fn difference(&self, other: &RangeSet) -> RangeSet {
        let mut out = Vec::new();
        let mut others = other.ranges.iter().peekable();
        for &(a, b) in &self.ranges {
            let mut start = a;
            // Skip other ranges entirely before this one.
            while others.peek().is_some_and(|(_, ob)| *ob < start) {
                others.next();
            }
            let mut done = false;
            while let Some(&&(oa, ob)) = others.peek() {
                if oa > b {
                    break;
                }
                if oa > start {
                    out.push((start, oa - 1));
                }
                if ob >= b {
                    done = true;
                    break;
                }
                start = ob + 1;
                others.next();
            }
            if !done {
                out.push((start, b));
            }
        }
        let set = RangeSet { ranges: out };
        debug_assert!(set.is_well_formed());
        set
    }
}

/// What a site has, per origin site.
#[derive(Clone, Default, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Knowledge {
    // Each origin's ranges shared between copies (a transaction's staged state, a flow's
    // header, a peer's record): a copy costs a pointer per site, and a change copies only the
    // origin it touches. The same bytes as an unshared map when encoded.
    origins: BTreeMap<SiteId, Arc<RangeSet>>,
}

impl Knowledge {
    /// Knows nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the changes of this dot are known.
    pub fn contains(&self, dot: Dot) -> bool {
        self.origins
            .get(&dot.site)
            .is_some_and(|r| r.contains(dot.seq))
    }

    /// Records one dot as known.
    pub fn insert(&mut self, dot: Dot) {
        Arc::make_mut(self.origins.entry(dot.site).or_default()).insert(dot.seq);
    }

    /// Records `first..=last` of `site` as known.
    pub fn insert_range(&mut self, site: SiteId, first: u64, last: u64) {
        if first <= last {
            Arc::make_mut(self.origins.entry(site).or_default()).insert_range(first, last);
        }
    }

    /// Adds everything `other` knows.
    pub fn union_with(&mut self, other: &Knowledge) {
        for (site, ranges) in &other.origins {
            if ranges.is_empty() {
                continue;
            }
            match self.origins.get_mut(site) {
                Some(mine) if !Arc::ptr_eq(mine, ranges) => Arc::make_mut(mine).union_with(ranges),
                Some(_) => {}
                None => {
                    self.origins.insert(*site, Arc::clone(ranges));
                }
            }
        }
    }

    /// What `self` knows and `other` does not: the dots a peer with knowledge `other` lacks.
    pub fn difference(&self, other: &Knowledge) -> Knowledge {
        let mut out = Knowledge::new();
        for (site, ranges) in &self.origins {
            let rest = match other.origins.get(site) {
                Some(theirs) if Arc::ptr_eq(ranges, theirs) => continue,
                Some(theirs) => Arc::new(ranges.difference(theirs)),
                None => Arc::clone(ranges),
            };
            if !rest.is_empty() {
                out.origins.insert(*site, rest);
            }
        }
        out
    }

    /// The part of this knowledge about one origin site.
    pub fn only(&self, site: SiteId) -> Knowledge {
        let mut out = Knowledge::new();
        if let Some(r) = self.origins.get(&site) {
            out.origins.insert(site, Arc::clone(r));
        }
        out
    }

    /// The ranges known of one origin.
    pub fn of(&self, site: SiteId) -> Option<&RangeSet> {
        self.origins.get(&site).map(Arc::as_ref)
    }

    /// Every origin and its ranges.
    pub fn iter(&self) -> impl Iterator<Item = (SiteId, &RangeSet)> {
        self.origins.iter().map(|(s, r)| (*s, r.as_ref()))
    }

    /// The highest sequence number known of `site` (0 if none).
    pub fn max_seq(&self, site: SiteId) -> u64 {
        self.origins.get(&site).and_then(|r| r.max()).unwrap_or(0)
    }

    /// True when nothing is known.
    pub fn is_empty(&self) -> bool {
        self.origins.values().all(|r| r.is_empty())
    }

    /// How many dots are known in all.
    pub fn count(&self) -> u64 {
        self.origins
            .values()
            .map(|r| r.count())
            .fold(0, u64::saturating_add)
    }

    /// Whether every range set is well formed (used after decoding untrusted bytes).
    pub fn is_well_formed(&self) -> bool {
        self.origins.values().all(|r| r.is_well_formed())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn model(set: &RangeSet) -> BTreeSet<u64> {
        set.ranges().iter().flat_map(|(a, b)| *a..=*b).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn range_set_matches_a_btreeset(
            xs in proptest::collection::vec((0u64..60, 0u64..4), 0..30),
            ys in proptest::collection::vec((0u64..60, 0u64..4), 0..30),
        ) {
            let mut a = RangeSet::new();
            let mut ma = BTreeSet::new();
            for (x, len) in &xs {
                a.insert_range(*x, x + len);
                ma.extend(*x..=x + len);
            }
            let mut b = RangeSet::new();
            let mut mb = BTreeSet::new();
            for (x, len) in &ys {
                b.insert_range(*x, x + len);
                mb.extend(*x..=x + len);
            }
            prop_assert!(a.is_well_formed() && b.is_well_formed());
            prop_assert_eq!(model(&a), ma.clone());
            for x in 0..70 {
                prop_assert_eq!(a.contains(x), ma.contains(&x));
            }
            let d = a.difference(&b);
            prop_assert!(d.is_well_formed());
            prop_assert_eq!(model(&d), ma.difference(&mb).copied().collect::<BTreeSet<_>>());
            let mut u = a.clone();
            u.union_with(&b);
            prop_assert!(u.is_well_formed());
            prop_assert_eq!(model(&u), ma.union(&mb).copied().collect::<BTreeSet<_>>());
            prop_assert_eq!(a.count(), ma.len() as u64);
        }
    }

    #[test]
    fn knowledge_is_encoded_as_a_plain_map_of_ranges_and_copies_share_them() {
        let (b, c) = (SiteId(2), SiteId(3));
        let mut k = Knowledge::new();
        k.insert_range(b, 1, 10);
        k.insert_range(c, 4, 6);
        let mut plain: BTreeMap<SiteId, RangeSet> = BTreeMap::new();
        plain.entry(b).or_default().insert_range(1, 10);
        plain.entry(c).or_default().insert_range(4, 6);
        let bytes = postcard::to_stdvec(&k).unwrap();
        assert_eq!(
            bytes,
            postcard::to_stdvec(&plain).unwrap(),
            "the stored format"
        );
        assert_eq!(postcard::from_bytes::<Knowledge>(&bytes).unwrap(), k);
        // A copy changed on one origin leaves the original as it was.
        let mut copy = k.clone();
        copy.insert(Dot { site: b, seq: 11 });
        copy.union_with(&k);
        assert_eq!(k.max_seq(b), 10);
        assert_eq!(copy.max_seq(b), 11);
        assert_eq!(copy.of(c), k.of(c));
        assert_eq!(copy.difference(&k).count(), 1);
        assert!(k.difference(&copy).is_empty());
    }

    #[test]
    fn knowledge_difference_is_what_a_peer_lacks() {
        let (b, c) = (SiteId(2), SiteId(3));
        let mut mine = Knowledge::new();
        mine.insert_range(b, 1, 10);
        mine.insert_range(c, 1, 3);
        let mut peer = Knowledge::new();
        peer.insert_range(b, 1, 4);
        peer.insert(Dot { site: b, seq: 7 });
        let lack = mine.difference(&peer);
        assert_eq!(lack.of(b).unwrap().ranges(), &[(5, 6), (8, 10)]);
        assert_eq!(lack.of(c).unwrap().ranges(), &[(1, 3)]);
        assert_eq!(lack.count(), 8);
        assert!(mine.difference(&mine).is_empty());
    }
}

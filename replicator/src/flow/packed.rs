//! The packed changes frame (tag 4 in format version 3, tag 3 in version 2): a frame's changes grouped by
//! record, table and field names once per frame, stamps as differences from the previous one,
//! sequence numbers as differences from the previous one of the same site (version 3; from the
//! previous one of any site in version 2 — a store numbers its commits in a block of its own,
//! far from its neighbours', so that cost a full number per change in a flow mixing sites). Byte layout in docs/flow-format.md ("Packed changes"). About 9 bytes per change beyond its
//! value and its record's key (counted once per record), where postcard's plain `Vec<Change>`
//! (tag 1) takes about 39 beyond its value and a key per change.

use outpost_engine::{Change, Creation, Dot, Knowledge, NAME_LEN_MAX, SiteId, Slot, Stamp, Value};

use super::Incoming;

/// The most changes one record heading carries: a longer run repeats the heading, so that a
/// record's key is copied into at most this many decoded changes per time it is written.
const RUN_MAX: usize = 8;
/// The most changes a frame may hold (the writer puts 1,024).
const CHANGES_MAX: usize = 4 * super::CHANGES_PER_FRAME;
/// What decoded changes may copy of their record's key and names: keys up to [`RUN_MAX`] times
/// the frame's size, names (at most `NAME_LEN_MAX` bytes each) once per change.
fn copy_budget(frame_len: usize) -> usize {
    frame_len
        .saturating_mul(RUN_MAX)
        .saturating_add(CHANGES_MAX * 2 * NAME_LEN_MAX)
}

/// Encodes changes (in their order: consecutive changes of one record share its heading), as
/// format version 3 lays them out.
pub(crate) fn encode(changes: &[Change]) -> Result<Vec<u8>, String> {
    let mut tables: Vec<&str> = Vec::new();
    let mut fields: Vec<&str> = Vec::new();
    for c in changes {
        if !tables.contains(&c.table.as_str()) {
            tables.push(&c.table);
        }
        if let Slot::Field(f) = &c.slot
            && !fields.contains(&f.as_str())
        {
            fields.push(f);
        }
    }
    let mut out = Vec::with_capacity(changes.len() * 24);
    put_varint(&mut out, tables.len() as u64);
    for t in &tables {
        put_str(&mut out, t);
    }
    put_varint(&mut out, fields.len() as u64);
    for f in &fields {
        put_str(&mut out, f);
    }
    // Records: runs of consecutive changes to the same record with the same creation.
    let mut runs: Vec<&[Change]> = Vec::new();
    let mut rest = changes;
    while let Some(first) = rest.first() {
        let n = rest
            .iter()
            .take(RUN_MAX)
            .take_while(|c| {
                c.table == first.table && c.key == first.key && c.created == first.created
            })
            .count();
        let (run, tail) = rest.split_at(n);
        runs.push(run);
        rest = tail;
    }
    put_varint(&mut out, runs.len() as u64);
    let mut p = Predictors::new(true);
    for run in runs {
        let Some(first) = run.first() else { continue };
        let table = tables.iter().position(|t| *t == first.table).unwrap_or(0);
        put_varint(&mut out, table as u64);
        put_str(&mut out, &first.key);
        p.put_created(&mut out, first.created);
        put_varint(&mut out, run.len() as u64);
        for c in run {
            let slot = match &c.slot {
                Slot::Created => 0,
                Slot::Tombstone => 1,
                Slot::Field(f) => 2 + fields.iter().position(|x| x == f).unwrap_or(0) as u64,
            };
            put_varint(&mut out, slot);
            out = postcard::to_extend(&c.value, out).map_err(|e| e.to_string())?;
            p.put_change(&mut out, c.stamp, c.dot);
        }
    }
    Ok(out)
}

/// Decodes a packed frame; every inconsistency is an error, never a panic.
#[cfg(test)]
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<Change>, String> {
    let mut out = Vec::new();
    decode_each(bytes, true, None, |i| {
        if let Incoming::New(c) = i {
            out.push(c);
        }
    })?;
    Ok(out)
}

/// Decodes a packed frame, handing each change to `each` in the frame's order; every
/// inconsistency is an error, never a panic. A change whose dot `known` holds is handed over as
/// [`Incoming::Known`]: it is read and checked like the others (the same errors, the same bound
/// on what the frame may expand to) but its strings are not copied. A flow applied a second
/// time costs little more than reading it. `per_site`: sequence numbers as format version 3
/// writes them (from the same site's previous one), else as version 2.
pub(crate) fn decode_each(
    bytes: &[u8],
    per_site: bool,
    known: Option<&Knowledge>,
    mut each: impl FnMut(Incoming),
) -> Result<(), String> {
    let mut r = Reader { bytes };
    let n_tables = r.count()?;
    let mut tables = Vec::with_capacity(n_tables.min(64));
    for _ in 0..n_tables {
        tables.push(r.name()?);
    }
    let n_fields = r.count()?;
    let mut fields = Vec::with_capacity(n_fields.min(64));
    for _ in 0..n_fields {
        fields.push(r.name()?);
    }
    let n_records = r.count()?;
    let mut n_changes = 0usize;
    let mut p = Predictors::new(per_site);
    // A record's key and names are copied into each of its changes: a hostile frame could ask
    // for a huge key repeated a million times. What the writer makes always fits the budget.
    let mut budget = copy_budget(bytes.len());
    for _ in 0..n_records {
        let table = tables
            .get(r.count()?)
            .ok_or("a table index beyond the frame's tables")?
            .clone();
        let key = r.string()?;
        let created = p.get_created(&mut r)?;
        let n = r.count()?;
        if n == 0 {
            return Err("a record with no change".into());
        }
        n_changes += n;
        if n_changes > CHANGES_MAX {
            return Err(format!("more than {CHANGES_MAX} changes in a frame"));
        }
        for _ in 0..n {
            let slot_tag = r.varint()?;
            // The field's name, if the slot is a field's.
            let field: Option<&String> = match slot_tag {
                0 | 1 => None,
                i => Some(
                    fields
                        .get(usize::try_from(i - 2).map_err(|_| "a field index too large")?)
                        .ok_or("a field index beyond the frame's fields")?,
                ),
            };
            let (value, rest): (Value, &[u8]) =
                postcard::take_from_bytes(r.bytes).map_err(|e| format!("a value: {e}"))?;
            r.bytes = rest;
            let (stamp, dot) = p.get_change(&mut r)?;
            // Charged for known changes too: the bound is the frame's, whatever the receiver
            // already has.
            let copied = table.len() + key.len() + field.map_or(0, String::len);
            budget = budget
                .checked_sub(copied)
                .ok_or("the frame's records expand to far more than its size")?;
            if known.is_some_and(|k| k.contains(dot)) {
                each(Incoming::Known(dot));
                continue;
            }
            let slot = match (field, slot_tag) {
                (Some(f), _) => Slot::Field(f.clone()),
                (None, 0) => Slot::Created,
                (None, _) => Slot::Tombstone,
            };
            each(Incoming::New(Change {
                table: table.clone(),
                key: key.clone(),
                slot,
                value,
                stamp,
                dot,
                created,
            }));
        }
    }
    if !r.bytes.is_empty() {
        return Err("bytes after the last record".into());
    }
    Ok(())
}

/// The previous stamps and sequence numbers: each is written as a difference from its own —
/// a sequence number from the previous one of its site ([`SeqPredictor`]).
struct Predictors {
    created_stamp: u64,
    created_seq: SeqPredictor,
    stamp: u64,
    seq: SeqPredictor,
}

impl Predictors {
    fn new(per_site: bool) -> Self {
        Predictors {
            created_stamp: 0,
            created_seq: SeqPredictor::new(per_site),
            stamp: 0,
            seq: SeqPredictor::new(per_site),
        }
    }

    fn put_created(&mut self, out: &mut Vec<u8>, c: Creation) {
        put_delta(out, &mut self.created_stamp, c.stamp.as_u64());
        put_varint(out, u64::from(c.dot.site.0));
        put_delta(out, self.created_seq.of(c.dot.site), c.dot.seq);
    }

    fn put_change(&mut self, out: &mut Vec<u8>, stamp: Stamp, dot: Dot) {
        put_delta(out, &mut self.stamp, stamp.as_u64());
        put_varint(out, u64::from(dot.site.0));
        put_delta(out, self.seq.of(dot.site), dot.seq);
    }

    fn get_created(&mut self, r: &mut Reader<'_>) -> Result<Creation, String> {
        let stamp = Stamp::from_u64(r.delta(&mut self.created_stamp)?);
        let site = r.site()?;
        let seq = r.delta(self.created_seq.of(site))?;
        Ok(Creation {
            stamp,
            dot: Dot { site, seq },
        })
    }

    fn get_change(&mut self, r: &mut Reader<'_>) -> Result<(Stamp, Dot), String> {
        let stamp = Stamp::from_u64(r.delta(&mut self.stamp)?);
        let site = r.site()?;
        let seq = r.delta(self.seq.of(site))?;
        Ok((stamp, Dot { site, seq }))
    }
}

/// The previous sequence number a new one is written against: the previous one of the same
/// site (0 for a site's first in the frame), or — format version 2 — of any site.
struct SeqPredictor {
    per_site: bool,
    /// The site of the last number, and the number (the common case: a run of one site's).
    last: (SiteId, u64),
    /// Every other site's last number in this frame.
    others: std::collections::HashMap<SiteId, u64>,
}

impl SeqPredictor {
    fn new(per_site: bool) -> Self {
        SeqPredictor {
            per_site,
            last: (SiteId(0), 0),
            others: std::collections::HashMap::new(),
        }
    }

    /// The predictor for a number of `site`'s, which the delta then moves.
    fn of(&mut self, site: SiteId) -> &mut u64 {
        if self.per_site && site != self.last.0 {
            let prev = self.others.remove(&site).unwrap_or(0);
            let (old_site, old) = std::mem::replace(&mut self.last, (site, prev));
            self.others.insert(old_site, old);
        }
        &mut self.last.1
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Writes `next - *prev` zigzag-encoded (wrapping, so any pair of u64 round-trips).
fn put_delta(out: &mut Vec<u8>, prev: &mut u64, next: u64) {
    let d = next.wrapping_sub(*prev) as i64;
    put_varint(out, ((d << 1) ^ (d >> 63)) as u64);
    *prev = next;
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self
                .bytes
                .split_first()
                .ok_or("the frame ends inside a number")?;
            self.bytes = rest;
            if shift == 63 && b > 1 {
                return Err("a number longer than 64 bits".into());
            }
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a number longer than 64 bits".into())
    }

    /// A count or index: never more than the bytes left (each element takes at least one).
    fn count(&mut self) -> Result<usize, String> {
        let n = self.varint()?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.bytes.len())
            .ok_or_else(|| format!("a count of {n} with {} bytes left", self.bytes.len()))
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.count()?;
        let (s, rest) = self
            .bytes
            .split_at_checked(n)
            .ok_or("a string beyond the frame")?;
        self.bytes = rest;
        String::from_utf8(s.to_vec()).map_err(|_| "a string that is not UTF-8".into())
    }

    /// A table or field name: at most `NAME_LEN_MAX` bytes, as the schema allows.
    fn name(&mut self) -> Result<String, String> {
        let s = self.string()?;
        if s.len() > NAME_LEN_MAX {
            return Err(format!(
                "a name of {} bytes (at most {NAME_LEN_MAX})",
                s.len()
            ));
        }
        Ok(s)
    }

    fn site(&mut self) -> Result<SiteId, String> {
        let v = self.varint()?;
        u16::try_from(v)
            .map(SiteId)
            .map_err(|_| format!("site id {v} out of range"))
    }

    fn delta(&mut self, prev: &mut u64) -> Result<u64, String> {
        let z = self.varint()?;
        let d = ((z >> 1) as i64) ^ -((z & 1) as i64);
        *prev = prev.wrapping_add(d as u64);
        Ok(*prev)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_flow_mixing_sites_numbered_far_apart_costs_a_number_per_site_not_per_change() {
        let far = 77 << 32;
        let changes = |offset: u64| -> Vec<Change> {
            (0..100u64)
                .map(|i| {
                    let (site, seq) = if i % 2 == 0 {
                        (SiteId(2), offset + i)
                    } else {
                        (SiteId(3), i)
                    };
                    let dot = Dot { site, seq };
                    Change {
                        table: "customers".into(),
                        key: format!("K{i}"),
                        slot: Slot::Field("name".into()),
                        value: Value::Int(1),
                        stamp: Stamp::new(1_795_647_600_000 + i, 0),
                        dot,
                        created: Creation {
                            stamp: Stamp::new(1_795_647_600_000 + i, 0),
                            dot,
                        },
                    }
                })
                .collect()
        };
        let near = encode(&changes(0)).unwrap();
        let apart = encode(&changes(far)).unwrap();
        assert_eq!(decode(&apart).unwrap(), changes(far));
        // One longer difference per site's first number (the creation's and the change's).
        assert!(
            apart.len() <= near.len() + 16,
            "{} bytes apart, {} near",
            apart.len(),
            near.len()
        );
    }

    fn change() -> impl Strategy<Value = Change> {
        (
            prop::sample::select(vec!["customers", "sales_documents", "t\u{e9}"]),
            "[a-z0-9\\x00]{0,6}",
            0u8..5,
            prop_oneof![
                Just(Value::Null),
                any::<i64>().prop_map(Value::Int),
                "[a-z]{0,9}".prop_map(Value::Text),
            ],
            any::<u64>(),
            (1u16..5, any::<u64>()),
            (any::<u64>(), 1u16..5, 0u64..1000),
        )
            .prop_map(
                |(table, key, slot, value, stamp, (site, seq), (cs, csite, cseq))| Change {
                    table: table.into(),
                    key,
                    slot: match slot {
                        0 => Slot::Created,
                        1 => Slot::Tombstone,
                        n => Slot::Field(format!("f{n}")),
                    },
                    value,
                    stamp: Stamp::from_u64(stamp),
                    dot: Dot {
                        site: SiteId(site),
                        seq,
                    },
                    created: Creation {
                        stamp: Stamp::from_u64(cs),
                        dot: Dot {
                            site: SiteId(csite),
                            seq: cseq,
                        },
                    },
                },
            )
    }

    /// Changes with runs: each change repeated 1–4 times with other fields of the same record.
    fn changes() -> impl Strategy<Value = Vec<Change>> {
        prop::collection::vec((change(), 1usize..5), 0..40).prop_map(|v| {
            v.into_iter()
                .flat_map(|(c, n)| {
                    (0..n).map(move |i| {
                        let mut c = c.clone();
                        if i > 0 {
                            c.slot = Slot::Field(format!("g{i}"));
                            c.dot.seq = c.dot.seq.wrapping_add(i as u64);
                        }
                        c
                    })
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, rng_seed: proptest::test_runner::RngSeed::Fixed(20261125), ..ProptestConfig::default() })]

        #[test]
        fn packed_frames_round_trip(cs in changes()) {
            let bytes = encode(&cs).unwrap();
            prop_assert_eq!(decode(&bytes).unwrap(), cs);
        }

        #[test]
        fn a_frame_read_with_knowledge_leaves_out_exactly_the_changes_it_holds(cs in changes(), every in 1usize..4) {
            let bytes = encode(&cs).unwrap();
            let mut known = Knowledge::new();
            for c in cs.iter().step_by(every) {
                known.insert(c.dot);
            }
            let mut got = Vec::new();
            decode_each(&bytes, true, Some(&known), |i| got.push(i)).unwrap();
            // In the frame's order: each change either whole or, when known, its dot alone.
            let expected: Vec<Incoming> = cs
                .iter()
                .map(|c| if known.contains(c.dot) { Incoming::Known(c.dot) } else { Incoming::New(c.clone()) })
                .collect();
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn damaged_frames_are_errors_never_panics(cs in changes(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>()) {
            let bytes = encode(&cs).unwrap();
            if !bytes.is_empty() {
                let n = cut.index(bytes.len());
                prop_assert!(decode(&bytes[..n]).is_err() || n == bytes.len());
                // Changes left out as known are checked all the same.
                let mut all = Knowledge::new();
                for c in &cs {
                    all.insert(c.dot);
                }
                prop_assert!(decode_each(&bytes[..n], true, Some(&all), drop).is_err() || n == bytes.len());
                let mut flipped = bytes.clone();
                flipped[flip.index(bytes.len())] ^= 0x5A;
                let _ = decode(&flipped);
                let _ = decode_each(&flipped, true, Some(&all), drop);
            }
        }
    }

    /// A frame of one record with `key_len` bytes of key and `n` tombstone changes.
    fn one_record(key_len: usize, n: u64) -> Vec<u8> {
        let mut b = Vec::new();
        put_varint(&mut b, 1);
        put_str(&mut b, "t");
        put_varint(&mut b, 0);
        put_varint(&mut b, 1);
        put_varint(&mut b, 0);
        put_str(&mut b, &"k".repeat(key_len));
        b.extend_from_slice(&[0, 1, 0]);
        put_varint(&mut b, n);
        for _ in 0..n {
            b.extend_from_slice(&[1, 0, 0, 1, 0]);
        }
        b
    }

    #[test]
    fn a_huge_key_repeated_many_times_is_refused_not_allocated() {
        // A 1 MiB key in 4,000 changes: 4 GB if copied.
        let err = decode(&one_record(1 << 20, 4_000)).unwrap_err();
        assert!(err.contains("expand"), "{err}");
        // The same when the receiver already has every one of them.
        let mut all = Knowledge::new();
        all.insert(Dot {
            site: SiteId(1),
            seq: 0,
        });
        let err = decode_each(&one_record(1 << 20, 4_000), true, Some(&all), drop).unwrap_err();
        assert!(err.contains("expand"), "{err}");
        // And a frame may not hold more changes than a writer ever puts in one.
        let err = decode(&one_record(1, 5_000)).unwrap_err();
        assert!(err.contains("changes in a frame"), "{err}");
        // A number's tenth byte may only hold its 64th bit.
        let mut r = Reader {
            bytes: &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02],
        };
        assert!(r.varint().is_err());
    }

    #[test]
    fn long_keys_with_many_fields_still_round_trip() {
        // What the writer makes always decodes: 40 fields of a record with a 4 KiB key.
        let key = "K".repeat(4096);
        let created = Creation {
            stamp: Stamp::new(1_795_000_000_000, 0),
            dot: Dot {
                site: SiteId(1),
                seq: 1,
            },
        };
        let cs: Vec<Change> = (0..1024u64)
            .map(|i| Change {
                table: "customers".into(),
                key: key.clone(),
                slot: Slot::Field(format!("field_{:02}", i % 40)),
                value: Value::Int(i as i64),
                stamp: Stamp::new(1_795_000_000_000, 0),
                dot: Dot {
                    site: SiteId(2),
                    seq: 1,
                },
                created,
            })
            .collect();
        assert_eq!(decode(&encode(&cs).unwrap()).unwrap(), cs);
    }

    #[test]
    fn a_record_of_four_fields_costs_under_twelve_bytes_a_change_beyond_key_and_values() {
        let created = Creation {
            stamp: Stamp::new(1_795_000_000_000, 0),
            dot: Dot {
                site: SiteId(1),
                seq: 12,
            },
        };
        let cs: Vec<Change> = (0..1000u64)
            .flat_map(|r| {
                ["name", "address", "city", "phone"].map(|f| Change {
                    table: "customers".into(),
                    key: format!("C{r:08}"),
                    slot: Slot::Field(f.into()),
                    value: Value::Text(format!("{f}-{r}")),
                    stamp: Stamp::new(1_795_000_000_000 + r * 1000, 0),
                    dot: Dot {
                        site: SiteId(2),
                        seq: r + 1,
                    },
                    created,
                })
            })
            .collect();
        // Each record's key once (it is written once), each change's value.
        let payload: usize = 1000 * "C00000000".len()
            + cs.iter()
                .map(|c| match &c.value {
                    Value::Text(s) => s.len(),
                    _ => 0,
                })
                .sum::<usize>();
        let bytes = encode(&cs).unwrap();
        let per_change = (bytes.len() as f64 - payload as f64) / cs.len() as f64;
        assert!(per_change < 12.0, "{per_change} bytes per change");
        assert_eq!(decode(&bytes).unwrap(), cs);
    }
}

//! The stored form of one record (the `records` table's value, docs/storage-format.md), and the
//! record a merge works on without decoding its values.
//!
//! ```text
//! record   = 0x02 register*                      registers sorted by slot, each slot once
//! register = slot_len:u16 LE  slot  stamp:u64 LE  site:u16 LE  seq:u64 LE
//!            value_len:u32 LE  value (postcard)
//! ```
//! Numbers are fixed-width: a register rewritten with a later stamp keeps its size, and the
//! encoding of a set of registers is unique, so converged stores hold identical bytes.
//! Format 1 (postcard of the sorted register list) is read for the conversion of stores
//! written before it.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::error::{Error, Result};
use crate::hlc::Stamp;
use crate::knowledge::Dot;
use crate::record::Register;
use crate::site::SiteId;
use crate::value::Value;

/// A record's registers, by slot (the cell key's bytes after the record prefix).
pub(crate) type Registers = BTreeMap<Vec<u8>, Register>;

/// The format byte of a record written by this version.
const FORMAT: u8 = 2;
/// The format byte of layout 2's first records (postcard).
const FORMAT_POSTCARD: u8 = 1;

fn corrupt(what: &str) -> Error {
    Error::Corrupt(format!("a stored record: {what}"))
}

fn encode_value(value: &Value) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| Error::Corrupt(format!("cannot encode a value: {e}")))
}

fn push_register(
    out: &mut Vec<u8>,
    slot: &[u8],
    stamp: Stamp,
    dot: Dot,
    value: &[u8],
) -> Result<()> {
    let slot_len = u16::try_from(slot.len()).map_err(|_| corrupt("a slot too long"))?;
    let value_len = u32::try_from(value.len()).map_err(|_| corrupt("a value too long"))?;
    out.extend_from_slice(&slot_len.to_le_bytes());
    out.extend_from_slice(slot);
    out.extend_from_slice(&stamp.as_u64().to_le_bytes());
    out.extend_from_slice(&dot.site.0.to_le_bytes());
    out.extend_from_slice(&dot.seq.to_le_bytes());
    out.extend_from_slice(&value_len.to_le_bytes());
    out.extend_from_slice(value);
    Ok(())
}

/// The stored bytes of a record.
pub(crate) fn encode(regs: &Registers) -> Result<Vec<u8>> {
    let mut out = vec![FORMAT];
    for (slot, reg) in regs {
        push_register(
            &mut out,
            slot,
            reg.stamp,
            reg.dot,
            &encode_value(&reg.value)?,
        )?;
    }
    Ok(out)
}

/// A record's registers from its stored bytes (either format).
pub(crate) fn decode(bytes: &[u8]) -> Result<Registers> {
    match bytes.split_first() {
        Some((&FORMAT, _)) => {
            let mut regs = Registers::new();
            for r in Parsed::new(bytes)?.regs {
                let value = postcard::from_bytes(at(bytes, &r.value))
                    .map_err(|e| corrupt(&format!("a value: {e}")))?;
                regs.insert(
                    at(bytes, &r.slot).to_vec(),
                    Register {
                        value,
                        stamp: r.stamp,
                        dot: r.dot,
                    },
                );
            }
            Ok(regs)
        }
        Some((&FORMAT_POSTCARD, rest)) => {
            let list: Vec<(Vec<u8>, Register)> =
                postcard::from_bytes(rest).map_err(|e| corrupt(&e.to_string()))?;
            Ok(list.into_iter().collect())
        }
        _ => Err(corrupt("an unknown format")),
    }
}

/// Whether stored bytes are in this version's format.
pub(crate) fn is_current(bytes: &[u8]) -> bool {
    bytes.first() == Some(&FORMAT)
}

/// Where a register lies in a record's bytes.
#[derive(Clone, Debug)]
struct RegAt {
    slot: Range<usize>,
    stamp: Stamp,
    dot: Dot,
    value: Range<usize>,
}

/// A record's bytes split into registers, without decoding values.
struct Parsed {
    regs: Vec<RegAt>,
}

/// Reads a record's bytes front to back.
struct Cursor<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl Cursor<'_> {
    /// The range of the next `n` bytes.
    fn take(&mut self, n: usize) -> Result<Range<usize>> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or_else(|| corrupt("cut short"))?;
        let r = self.at..end;
        self.at = end;
        Ok(r)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let r = self.take(N)?;
        self.bytes
            .get(r)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt("cut short"))
    }
}

/// The bytes of a range a parse checked.
fn at<'b>(bytes: &'b [u8], r: &Range<usize>) -> &'b [u8] {
    bytes.get(r.clone()).unwrap_or_default()
}

impl Parsed {
    fn new(bytes: &[u8]) -> Result<Parsed> {
        if bytes.first() != Some(&FORMAT) {
            return Err(corrupt("not in the current format"));
        }
        let mut regs: Vec<RegAt> = Vec::new();
        let mut c = Cursor { bytes, at: 1 };
        while c.at < bytes.len() {
            let slot_len = u16::from_le_bytes(c.array()?);
            let slot = c.take(usize::from(slot_len))?;
            let stamp = Stamp::from_u64(u64::from_le_bytes(c.array()?));
            let site = SiteId(u16::from_le_bytes(c.array()?));
            let seq = u64::from_le_bytes(c.array()?);
            let len = u32::from_le_bytes(c.array()?);
            let value = c.take(usize::try_from(len).map_err(|_| corrupt("a value too long"))?)?;
            if regs
                .last()
                .is_some_and(|p| at(bytes, &p.slot) >= at(bytes, &slot))
            {
                return Err(corrupt("registers out of order"));
            }
            regs.push(RegAt {
                slot,
                stamp,
                dot: Dot { site, seq },
                value,
            });
        }
        Ok(Parsed { regs })
    }
}

/// One register of a [`StoredRecord`]: kept as stored, or written by the merge.
#[derive(Debug)]
enum Piece {
    Stored(RegAt),
    New {
        slot: Vec<u8>,
        stamp: Stamp,
        dot: Dot,
        value: Vec<u8>,
    },
}

/// A record as a merge holds it: its stored bytes, split into registers whose values are not
/// decoded (a merge compares stamps and dots only), and the registers it wrote.
#[derive(Debug, Default)]
pub(crate) struct StoredRecord {
    bytes: Vec<u8>,
    regs: Vec<Piece>,
}

impl StoredRecord {
    /// A record from its stored bytes (either format; the old one is re-encoded).
    pub fn from_stored(bytes: Vec<u8>) -> Result<StoredRecord> {
        if !is_current(&bytes) {
            return StoredRecord::from_registers(&decode(&bytes)?);
        }
        let regs = Parsed::new(&bytes)?
            .regs
            .into_iter()
            .map(Piece::Stored)
            .collect();
        Ok(StoredRecord { bytes, regs })
    }

    /// A record from decoded registers.
    pub fn from_registers(regs: &Registers) -> Result<StoredRecord> {
        StoredRecord::from_stored(encode(regs)?)
    }

    fn slot<'a>(&'a self, p: &'a Piece) -> &'a [u8] {
        match p {
            Piece::Stored(r) => at(&self.bytes, &r.slot),
            Piece::New { slot, .. } => slot,
        }
    }

    fn find(&self, slot: &[u8]) -> std::result::Result<usize, usize> {
        self.regs.binary_search_by(|p| self.slot(p).cmp(slot))
    }

    /// The stamp and dot of a slot's register.
    pub fn get(&self, slot: &[u8]) -> Option<(Stamp, Dot)> {
        let i = self.find(slot).ok()?;
        Some(match self.regs.get(i)? {
            Piece::Stored(r) => (r.stamp, r.dot),
            Piece::New { stamp, dot, .. } => (*stamp, *dot),
        })
    }

    /// Sets a slot's register.
    pub fn put(&mut self, slot: &[u8], stamp: Stamp, dot: Dot, value: &Value) -> Result<()> {
        let piece = Piece::New {
            slot: slot.to_vec(),
            stamp,
            dot,
            value: encode_value(value)?,
        };
        match self.find(slot) {
            Ok(i) => {
                if let Some(p) = self.regs.get_mut(i) {
                    *p = piece;
                }
            }
            Err(i) => self.regs.insert(i, piece),
        }
        Ok(())
    }

    /// The dots its registers hold, sorted, each once.
    pub fn dots(&self) -> Vec<Dot> {
        let mut dots: Vec<Dot> = self
            .regs
            .iter()
            .map(|p| match p {
                Piece::Stored(r) => r.dot,
                Piece::New { dot, .. } => *dot,
            })
            .collect();
        dots.sort_unstable();
        dots.dedup();
        dots
    }

    /// Drops every register but `except` whose writer `drop` names; whether one was.
    pub fn drop_written_by(&mut self, except: &[u8], drop: impl Fn(SiteId) -> bool) -> bool {
        let before = self.regs.len();
        let bytes = &self.bytes;
        self.regs.retain(|p| {
            let (slot, dot) = match p {
                Piece::Stored(r) => (at(bytes, &r.slot), r.dot),
                Piece::New { slot, dot, .. } => (slot.as_slice(), *dot),
            };
            slot == except || !drop(dot.site)
        });
        self.regs.len() != before
    }

    pub fn is_empty(&self) -> bool {
        self.regs.is_empty()
    }

    /// The stored bytes: the same as [`encode`] of the same registers.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.bytes.len() + 64);
        out.push(FORMAT);
        for p in &self.regs {
            match p {
                Piece::Stored(r) => {
                    // From its slot length to the end of its value, as stored.
                    let whole = r.slot.start.saturating_sub(2)..r.value.end;
                    out.extend_from_slice(at(&self.bytes, &whole));
                }
                Piece::New {
                    slot,
                    stamp,
                    dot,
                    value,
                } => push_register(&mut out, slot, *stamp, *dot, value)?,
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn reg(value: Value, stamp: u64, site: u16, seq: u64) -> Register {
        Register {
            value,
            stamp: Stamp::from_u64(stamp),
            dot: Dot {
                site: SiteId(site),
                seq,
            },
        }
    }

    fn sample() -> Registers {
        let mut regs = Registers::new();
        regs.insert(vec![0x00], reg(Value::Null, 5, 1, 1));
        regs.insert(b"\x02city".to_vec(), reg(Value::from("Lyon"), 9, 2, 7));
        regs.insert(b"\x02name".to_vec(), reg(Value::from("Dupont"), 5, 1, 1));
        regs
    }

    #[test]
    fn a_record_decodes_to_what_was_encoded_and_a_raw_record_encodes_the_same_bytes() {
        let regs = sample();
        let bytes = encode(&regs).unwrap();
        assert_eq!(decode(&bytes).unwrap(), regs);
        let raw = StoredRecord::from_stored(bytes.clone()).unwrap();
        assert_eq!(raw.encode().unwrap(), bytes);
        assert_eq!(
            raw.get(b"\x02city"),
            Some((
                Stamp::from_u64(9),
                Dot {
                    site: SiteId(2),
                    seq: 7
                }
            ))
        );
        assert_eq!(raw.dots().len(), 2);
    }

    #[test]
    fn registers_put_into_a_raw_record_encode_as_the_decoded_record_would() {
        let mut regs = sample();
        let mut raw = StoredRecord::from_registers(&regs).unwrap();
        let newer = reg(Value::from("Paris"), 12, 3, 2);
        let added = reg(Value::Int(4), 12, 3, 2);
        raw.put(b"\x02city", newer.stamp, newer.dot, &newer.value)
            .unwrap();
        raw.put(b"\x02age", added.stamp, added.dot, &added.value)
            .unwrap();
        regs.insert(b"\x02city".to_vec(), newer);
        regs.insert(b"\x02age".to_vec(), added);
        assert_eq!(raw.encode().unwrap(), encode(&regs).unwrap());
        assert_eq!(decode(&raw.encode().unwrap()).unwrap(), regs);
    }

    #[test]
    fn a_record_of_the_first_format_is_read_and_re_encoded_in_the_current_one() {
        let regs = sample();
        let list: Vec<(&Vec<u8>, &Register)> = regs.iter().collect();
        let mut old = vec![FORMAT_POSTCARD];
        old.extend(postcard::to_stdvec(&list).unwrap());
        assert_eq!(decode(&old).unwrap(), regs);
        let raw = StoredRecord::from_stored(old).unwrap();
        assert_eq!(raw.encode().unwrap(), encode(&regs).unwrap());
    }

    #[test]
    fn damaged_record_bytes_are_an_error_not_a_panic() {
        let bytes = encode(&sample()).unwrap();
        for cut in 1..bytes.len() {
            let _ = decode(&bytes[..cut]);
            let _ = StoredRecord::from_stored(bytes[..cut].to_vec());
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(&[7, 1, 2]).is_err());
        let mut swapped = vec![FORMAT];
        let regs = sample();
        let mut items: Vec<_> = regs.iter().collect();
        items.reverse();
        for (slot, r) in items {
            push_register(
                &mut swapped,
                slot,
                r.stamp,
                r.dot,
                &encode_value(&r.value).unwrap(),
            )
            .unwrap();
        }
        assert!(decode(&swapped).is_err());
    }
}

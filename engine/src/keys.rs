//! The order-preserving byte encoding of storage keys (documented in docs/storage-format.md).
//!
//! ```text
//! record prefix = table-name 0x00  escaped(key)  0x00 0x01
//! cell key      = record prefix  slot            slot: 0x00 (created) | 0x01 (tombstone)
//!                                                      | 0x02 field-name
//! dot key       = origin:u16 BE  seq:u64 BE  record prefix   (the dot index, layout 2)
//! ```
//! Table names never hold 0x00 (the schema allows `a-z 0-9 _`); in record keys 0x00 is escaped
//! as `0x00 0xFF`, so keys sort as their text does and a record's cells are one contiguous range.

use crate::knowledge::Dot;
use crate::record::Slot;
use crate::site::SiteId;

const TERMINATOR: [u8; 2] = [0x00, 0x01];
const ESCAPED_NUL: [u8; 2] = [0x00, 0xFF];
const SLOT_CREATED: u8 = 0x00;
const SLOT_TOMBSTONE: u8 = 0x01;
const SLOT_FIELD: u8 = 0x02;
/// Bytes of a dot at the start of a dot key.
pub(crate) const DOT_LEN: usize = 10;

/// The bytes every cell key of one record starts with.
pub(crate) fn record_prefix(table: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(table.len() + key.len() + 3);
    out.extend_from_slice(table.as_bytes());
    out.push(0x00);
    for b in key.bytes() {
        if b == 0x00 {
            out.extend_from_slice(&ESCAPED_NUL);
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(&TERMINATOR);
    out
}

/// The slot bytes of a record's creation register (a cell key after its record prefix).
pub(crate) const CREATED_SLOT: [u8; 1] = [SLOT_CREATED];

/// A slot's bytes: what follows the record prefix in its cell key.
pub(crate) fn slot_bytes(slot: &Slot) -> Vec<u8> {
    cell_key(&[], slot)
}

/// The key of one register of a record.
pub(crate) fn cell_key(prefix: &[u8], slot: &Slot) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 16);
    out.extend_from_slice(prefix);
    match slot {
        Slot::Created => out.push(SLOT_CREATED),
        Slot::Tombstone => out.push(SLOT_TOMBSTONE),
        Slot::Field(name) => {
            out.push(SLOT_FIELD);
            out.extend_from_slice(name.as_bytes());
        }
    }
    out
}

/// `[start, end)` covering every record of a table.
pub(crate) fn table_bounds(table: &str) -> (Vec<u8>, Vec<u8>) {
    let mut start = table.as_bytes().to_vec();
    start.push(0x00);
    let mut end = table.as_bytes().to_vec();
    end.push(0x01);
    (start, end)
}

/// The key of a record's creation register.
pub(crate) fn created_key(prefix: &[u8]) -> Vec<u8> {
    cell_key(prefix, &Slot::Created)
}

/// The first key after every key starting with `prefix` (a record prefix ends with 0x01).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last = last.saturating_add(1);
    }
    end
}

/// The length of the record prefix a cell key starts with; `None` when the bytes are not a
/// cell key (a corrupt store).
pub(crate) fn prefix_len(cell: &[u8]) -> Option<usize> {
    let mut i = cell.iter().position(|b| *b == 0x00)? + 1;
    loop {
        match (*cell.get(i)?, cell.get(i + 1).copied()) {
            (0x00, Some(0x01)) => return Some(i + 2),
            (0x00, Some(0xFF)) => i += 2,
            (0x00, _) => return None,
            _ => i += 1,
        }
    }
}

/// A cell key decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CellKey {
    pub table: String,
    pub key: String,
    pub slot: Slot,
    /// Length of the record prefix within the encoded key.
    pub prefix_len: usize,
}

/// Decodes a slot's bytes (what follows the record prefix in a cell key); `None` when they are
/// not a slot (a corrupt store).
pub(crate) fn decode_slot(bytes: &[u8]) -> Option<Slot> {
    match (*bytes.first()?, bytes.get(1..)?) {
        (SLOT_CREATED, []) => Some(Slot::Created),
        (SLOT_TOMBSTONE, []) => Some(Slot::Tombstone),
        (SLOT_FIELD, name) => Some(Slot::Field(std::str::from_utf8(name).ok()?.to_owned())),
        _ => None,
    }
}

/// Decodes a cell key; `None` when the bytes are not one (a corrupt store).
pub(crate) fn decode_cell_key(bytes: &[u8]) -> Option<CellKey> {
    let table_end = bytes.iter().position(|b| *b == 0x00)?;
    let table = std::str::from_utf8(bytes.get(..table_end)?)
        .ok()?
        .to_owned();
    let mut key = Vec::new();
    let mut i = table_end + 1;
    loop {
        match (bytes.get(i)?, bytes.get(i + 1)) {
            (0x00, Some(0xFF)) => {
                key.push(0x00);
                i += 2;
            }
            (0x00, Some(0x01)) => {
                i += 2;
                break;
            }
            (0x00, _) => return None,
            (b, _) => {
                key.push(*b);
                i += 1;
            }
        }
    }
    let prefix_len = i;
    let slot = decode_slot(bytes.get(i..)?)?;
    Some(CellKey {
        table,
        key: String::from_utf8(key).ok()?,
        slot,
        prefix_len,
    })
}

/// The start of a dot key: origin and sequence, big-endian so dots sort numerically.
pub(crate) fn dot_bytes(site: SiteId, seq: u64) -> [u8; DOT_LEN] {
    let mut out = [0u8; DOT_LEN];
    let (s, q) = out.split_at_mut(2);
    s.copy_from_slice(&site.0.to_be_bytes());
    q.copy_from_slice(&seq.to_be_bytes());
    out
}

/// The index key of a cell's winning dot.
pub(crate) fn dot_key(dot: Dot, cell: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(DOT_LEN + cell.len());
    out.extend_from_slice(&dot_bytes(dot.site, dot.seq));
    out.extend_from_slice(cell);
    out
}

/// Splits a dot key into its dot and cell key.
pub(crate) fn decode_dot_key(bytes: &[u8]) -> Option<(Dot, &[u8])> {
    let (head, cell) = bytes.split_at_checked(DOT_LEN)?;
    let (s, q) = head.split_at_checked(2)?;
    let site = SiteId(u16::from_be_bytes(s.try_into().ok()?));
    let seq = u64::from_be_bytes(q.try_into().ok()?);
    Some((Dot { site, seq }, cell))
}

/// `[start, end)` of the dot keys of `site` with `first <= seq <= last`.
pub(crate) fn dot_bounds(site: SiteId, first: u64, last: u64) -> (Vec<u8>, Vec<u8>) {
    let start = dot_bytes(site, first).to_vec();
    let end = match last.checked_add(1) {
        Some(next) => dot_bytes(site, next).to_vec(),
        None => match site.0.checked_add(1) {
            Some(next_site) => dot_bytes(SiteId(next_site), 0).to_vec(),
            None => vec![0xFF; DOT_LEN + 1],
        },
    };
    (start, end)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn cell_keys_round_trip_and_preserve_key_order(
            a in "[\\x00-\\x7f]{0,12}", b in "[\\x00-\\x7f]{0,12}", field in "[a-z_]{1,8}",
        ) {
            let slot = Slot::Field(field);
            let ka = cell_key(&record_prefix("customers", &a), &slot);
            let decoded = decode_cell_key(&ka).unwrap();
            prop_assert_eq!(&decoded.key, &a);
            prop_assert_eq!(&decoded.table, "customers");
            prop_assert_eq!(&decoded.slot, &slot);
            let pa = record_prefix("customers", &a);
            let pb = record_prefix("customers", &b);
            prop_assert_eq!(pa.cmp(&pb), a.as_bytes().cmp(b.as_bytes()));
            prop_assert!(ka.starts_with(&pa) && ka < prefix_end(&pa));
        }
    }

    #[test]
    fn tombstone_and_dot_keys_round_trip() {
        let cell = cell_key(&record_prefix("t", "k\0x"), &Slot::Tombstone);
        let d = decode_cell_key(&cell).unwrap();
        assert_eq!((d.key.as_str(), d.slot), ("k\0x", Slot::Tombstone));
        let dot = Dot {
            site: SiteId(3),
            seq: 77,
        };
        let key = dot_key(dot, &cell);
        assert_eq!(decode_dot_key(&key).unwrap(), (dot, cell.as_slice()));
        let (lo, hi) = dot_bounds(SiteId(3), 77, 77);
        assert!(key.as_slice() >= lo.as_slice() && key.as_slice() < hi.as_slice());
        assert!(decode_cell_key(b"t\0k").is_none());
        assert!(decode_cell_key(b"t\0k\0\x07\x00").is_none());
        let created = created_key(&record_prefix("t", "k"));
        assert_eq!(decode_cell_key(&created).unwrap().slot, Slot::Created);
        assert_eq!(prefix_len(&created), Some(record_prefix("t", "k").len()));
        assert_eq!(prefix_len(&cell), Some(record_prefix("t", "k\0x").len()));
        assert_eq!(prefix_len(b"t\0k\0\x07"), None);
    }
}

//! The fuzz targets' bodies, shared by the cargo-fuzz targets in `fuzz/` (which feed them
//! libFuzzer's inputs) and by `tests/fuzz_corpus.rs` (which replays every committed corpus
//! entry on stable, so a crash once found stays fixed). Each takes arbitrary bytes and must
//! neither panic nor leave a store breaking its invariants; a failed check panics, which is how
//! a fuzzer reports it. Not part of the embedding API.

use std::collections::BTreeMap;

use outpost_engine::{Change, Knowledge, ManualClock, Site, SiteId, Store, StoreConfig};
use outpost_replicator::flow::{FlowReader, Incoming, IncomingItem, Item};

/// A flow file is read whole and never more than this (the decoder's own bound).
const FLOW_BYTES_MAX: u64 = 64 << 20;

/// A fixed time, so that every run is the same.
const NOW_MS: u64 = 1_795_564_800_000;

/// Decodes arbitrary bytes as a flow (envelope, frames, compression): an error or the items,
/// never a panic, never more memory than the bound allows. The first byte chooses how: even,
/// the rest as it is; odd, the rest with its checksums made right (and its body plain), so that
/// the fuzzer gets past them into the header's and the frames' decoding.
pub fn flow_decode(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        decode_flow(rest);
    } else {
        decode_flow(&with_checksums_made_right(rest));
    }
}

fn decode_flow(data: &[u8]) {
    let Ok(mut reader) = FlowReader::open_with_limit(data, FLOW_BYTES_MAX) else {
        return;
    };
    // A receiver that already has every change of sites 0 to 7 reads the same flow alongside:
    // frame by frame, the same errors, the same changes in the same places.
    let Ok(mut knowing) = FlowReader::open_with_limit(data, FLOW_BYTES_MAX) else {
        panic!("the same bytes opened once and not twice");
    };
    let mut known = Knowledge::new();
    for site in 0..8 {
        known.insert_range(SiteId(site), 0, u64::MAX);
    }
    let mut changes = 0u64;
    loop {
        let item = reader.next_item();
        let lacking = knowing.next_item_lacking(&known);
        match (&item, &lacking) {
            (Ok(Some(Item::Changes(c))), Ok(Some(IncomingItem::Changes(l)))) => {
                let mut new = c.iter();
                for incoming in l {
                    let Some(change) = new.next() else {
                        panic!("the knowing reader handed out more changes");
                    };
                    match incoming {
                        Incoming::New(n) => {
                            // As text: a NaN value is not equal to itself.
                            assert_eq!(
                                format!("{n:?}"),
                                format!("{change:?}"),
                                "a change read differently"
                            );
                            assert!(!known.contains(n.dot), "a known change handed out whole");
                        }
                        Incoming::Known(dot) => {
                            assert_eq!(*dot, change.dot, "a known change out of place");
                            assert!(known.contains(*dot), "an unknown change marked known");
                        }
                    }
                }
                assert!(
                    new.next().is_none(),
                    "the knowing reader handed out fewer changes"
                );
            }
            (Ok(Some(Item::Rejections(a))), Ok(Some(IncomingItem::Rejections(b)))) => {
                assert_eq!(a.len(), b.len(), "rejections read differently");
            }
            (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
            _ => panic!("the readers disagree: {item:?} / {lacking:?}"),
        }
        match item {
            Ok(Some(Item::Changes(c))) => changes += c.len() as u64,
            Ok(Some(Item::Rejections(_))) => {}
            // Read to its end frame: the count the reader reports is what it handed out.
            Ok(None) => {
                assert_eq!(reader.n_changes(), changes, "the reader's count");
                assert_eq!(knowing.n_changes(), changes, "the knowing reader's count");
                return;
            }
            Err(_) => return,
        }
    }
}

/// The flow with its header checksum and each frame's checksum recomputed, and its body
/// marked plain (docs/flow-format.md); what does not parse that far is left as it is.
fn with_checksums_made_right(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let u32_at = |b: &[u8], at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let Some(header_len) = u32_at(&out, 12) else {
        return out;
    };
    if let Some(flags) = out.get_mut(10) {
        *flags &= !1;
    }
    let fix = |out: &mut Vec<u8>, from: usize, to: usize| -> bool {
        let Some(covered) = out.get(from..to) else {
            return false;
        };
        let crc = crc32fast::hash(covered).to_le_bytes();
        match out.get_mut(to..to + 4) {
            Some(slot) => {
                slot.copy_from_slice(&crc);
                true
            }
            None => false,
        }
    };
    let header_end = 16 + header_len;
    // From format version 3 the header's checksum covers the version first.
    let version = out
        .get(8..10)
        .and_then(|v| <[u8; 2]>::try_from(v).ok())
        .map_or(0, u16::from_le_bytes);
    if version >= 3 {
        let Some(header) = out.get(16..header_end) else {
            return out;
        };
        let mut crc = crc32fast::Hasher::new();
        crc.update(&version.to_le_bytes());
        crc.update(header);
        let crc = crc.finalize().to_le_bytes();
        match out.get_mut(header_end..header_end + 4) {
            Some(slot) => slot.copy_from_slice(&crc),
            None => return out,
        }
    } else if !fix(&mut out, 16, header_end) {
        return out;
    }
    let mut at = header_end + 4;
    while let Some(len) = u32_at(&out, at + 1) {
        let end = at + 5 + len;
        if !fix(&mut out, at, end) {
            break;
        }
        at = end + 4;
    }
    out
}

fn central_store() -> Store {
    let clock = ManualClock::new(NOW_MS);
    let site = Site::central(1, "ASOC").expect("a valid site");
    let store = Store::in_memory(StoreConfig::new(site, outpost::retail::schema(), clock))
        .expect("an in-memory store");
    store
        .add_site(Site::remote(2, "BSOC").expect("a valid site"))
        .expect("add BSOC");
    store
        .add_site(Site::remote(3, "CSOC").expect("a valid site"))
        .expect("add CSOC");
    store
}

/// Arbitrary bytes decoded as a batch of changes from BSOC with the knowledge it claims to
/// cover, applied at central against a reference: the guards refuse what they must (the
/// store's invariants hold), applying the same batch again changes nothing, and a second store
/// given the batch in two halves, the second half first, ends with the same content whenever
/// neither refused anything (last-writer-wins does not depend on arrival order).
pub fn apply_changes(data: &[u8]) {
    let Ok((changes, covers)) = postcard::from_bytes::<(Vec<Change>, Knowledge)>(data) else {
        return;
    };
    let a = central_store();
    let first = a.apply(SiteId(2), changes.clone(), &covers);
    a.check_invariants()
        .expect("invariants hold after any input");
    let Ok(first) = first else { return };
    let before = a.snapshot().and_then(|s| s.replicated_content());
    let again = a.apply(SiteId(2), changes.clone(), &covers);
    a.check_invariants()
        .expect("invariants hold after a replay");
    let after = a.snapshot().and_then(|s| s.replicated_content());
    if again.is_ok() {
        assert_eq!(
            before.as_ref().ok(),
            after.as_ref().ok(),
            "a replayed batch changed the store"
        );
    }

    let b = central_store();
    let half = changes.len() / 2;
    let (head, tail) = changes.split_at(half);
    let late = b.apply(SiteId(2), tail.to_vec(), &Knowledge::default());
    let early = b.apply(SiteId(2), head.to_vec(), &covers);
    b.check_invariants()
        .expect("invariants hold in the other order");
    if let (Ok(late), Ok(early)) = (late, early)
        && first.refused() == 0
        && late.refused() == 0
        && early.refused() == 0
    {
        assert_eq!(
            before.ok(),
            b.snapshot().and_then(|s| s.replicated_content()).ok(),
            "the same changes in another order gave another content"
        );
    }
}

/// Arbitrary bytes as a bootstrap file: a remote is initialised from it or refused with an
/// error; a store it makes satisfies its invariants.
pub fn bootstrap(data: &[u8]) {
    let made = outpost_replicator::remote::bootstrap(data, |site| {
        Store::in_memory(StoreConfig::new(
            site.clone(),
            outpost::retail::schema(),
            ManualClock::new(NOW_MS),
        ))
    });
    if let Ok(store) = made {
        store
            .check_invariants()
            .expect("a bootstrapped store satisfies its invariants");
    }
}

/// Arbitrary text through every parser of settings a person writes: a scenario, the daemon's
/// settings, a remote's network settings, a remote's sync settings (`name=value` lines).
pub fn config_parsers(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(s) = outpost_sim::scenario::parse(text, "fuzz") {
        for step in &s.step {
            let _ = step.describe();
        }
    }
    let _ = toml::from_str::<outpost_server::serve::ServeConfig>(text);
    let _ = toml::from_str::<outpost_server::sync::RemoteNet>(text);
    let settings: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    if let Ok(schedule) = outpost_replicator::config::RemoteSchedule::from_settings(&settings) {
        for t in &schedule.sync_types {
            let _ = t.to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use outpost_engine::{Creation, Dot, Slot, Stamp, Value};
    use outpost_replicator::flow::{FlowHeader, FlowId, FlowKind, FlowWriter, SyncMode};

    use super::*;

    /// A crash the fuzzer found in this body, not in the decoder: a NaN value is not equal to
    /// itself, so the two readers' changes are compared as text.
    #[test]
    fn flow_decode_reads_a_nan_value_alike_in_both_readers() {
        let mut input = vec![0u8];
        input.extend_from_slice(&nan_flow());
        flow_decode(&input);
    }

    /// The odd-byte mode reaches the header's decoding in every format version: from version 3
    /// the header's checksum covers the version too.
    #[test]
    fn checksums_made_right_include_the_version_from_format_3() {
        let mut bytes = nan_flow();
        let header_len = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
        let crc_at = 16 + header_len;
        bytes[crc_at..crc_at + 4].copy_from_slice(&[0; 4]);
        assert!(FlowReader::open(bytes.as_slice()).is_err());
        let fixed = with_checksums_made_right(&bytes);
        let reader = FlowReader::open(fixed.as_slice()).unwrap_or_else(|e| panic!("{e}"));
        reader.verify().unwrap_or_else(|e| panic!("{e}"));
    }

    /// An emission of one change whose value is NaN.
    fn nan_flow() -> Vec<u8> {
        let site = SiteId(37);
        let mut covered = Knowledge::new();
        covered.insert_range(site, 1, 1);
        let header = FlowHeader {
            id: FlowId { site, seq: 1 },
            kind: FlowKind::Emission,
            source: site,
            target: SiteId(1),
            mode: SyncMode::Immediate,
            link: None,
            knowledge: covered.clone(),
            covered,
            schema_fingerprint: 0,
            created_stamp: Stamp::new(NOW_MS, 0),
            created_wall_ms: NOW_MS,
            acks: Vec::new(),
            config: None,
        };
        let dot = Dot { site, seq: 1 };
        let mut w = FlowWriter::new(Vec::new(), &header, false).unwrap_or_else(|e| panic!("{e}"));
        w.push_change(Change {
            table: "t".into(),
            key: "k".into(),
            slot: Slot::Field("f".into()),
            value: Value::Float(f64::NAN),
            stamp: Stamp::new(NOW_MS, 0),
            dot,
            created: Creation {
                stamp: Stamp::new(NOW_MS, 0),
                dot,
            },
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let (bytes, _, _) = w.finish().unwrap_or_else(|e| panic!("{e}"));
        bytes
    }
}

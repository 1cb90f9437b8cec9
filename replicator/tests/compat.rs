//! The compatibility promise: flow files written by an earlier format version stay readable. The
//! files in `tests/data/` were written by versions 1, 2 and 3 and are committed; every later
//! version must decode them to exactly the content below. Never regenerate them to make this
//! test pass — that would break the promise. (`OUTPOST_WRITE_COMPAT_FLOWS=1` wrote the version 3
//! files once, with version 3; the version 1 and 2 files were written the same way by versions 1
//! and 2.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use outpost_engine::{
    Change, Creation, Dot, Knowledge, Refusal, Register, Rejection, Rule, Site, SiteId, Slot,
    Stamp, Value,
};
use outpost_replicator::flow::{
    ConfigSnapshot, FlowHeader, FlowId, FlowKind, FlowReader, FlowWriter, Item, ReturnAck,
    ReturnedRejection, SyncMode,
};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn header() -> FlowHeader {
    let mut knowledge = Knowledge::new();
    knowledge.insert_range(SiteId(1), 1, 40);
    knowledge.insert_range(SiteId(2), 1, 7);
    knowledge.insert_range(SiteId(2), 9, 12);
    let mut covered = knowledge.clone();
    covered.insert_range(SiteId(3), 1, 2);
    FlowHeader {
        id: FlowId {
            site: SiteId(1),
            seq: 42,
        },
        kind: FlowKind::Return,
        source: SiteId(1),
        target: SiteId(2),
        mode: SyncMode::Deferred,
        link: Some(FlowId {
            site: SiteId(2),
            seq: 17,
        }),
        knowledge,
        covered,
        schema_fingerprint: 0x0123_4567_89ab_cdef,
        created_stamp: Stamp::new(1_795_647_600_000, 3),
        created_wall_ms: 1_795_647_600_000,
        acks: vec![ReturnAck {
            id: FlowId {
                site: SiteId(1),
                seq: 41,
            },
            start_ms: 1_795_561_260_000,
            end_ms: 1_795_561_261_500,
            refused: false,
            reason: None,
        }],
        config: Some(ConfigSnapshot {
            sites: vec![
                Site::central(1, "ASOC").unwrap(),
                Site::remote(2, "BSOC").unwrap(),
            ],
            denied: vec![(SiteId(3), vec!["stock_documents".into()])],
            settings: BTreeMap::from([("emission_time".into(), "21:00".into())]),
        }),
    }
}

fn changes() -> Vec<Change> {
    let dot = |site, seq| Dot {
        site: SiteId(site),
        seq,
    };
    let created = Creation {
        stamp: Stamp::new(1_795_600_000_000, 0),
        dot: dot(2, 3),
    };
    let values = [
        (Slot::Created, Value::Null),
        (
            Slot::Field("name".into()),
            Value::Text("Dupont & fils — Lyon".into()),
        ),
        (
            Slot::Field("total".into()),
            Value::Decimal("1234.50".parse().unwrap()),
        ),
        (Slot::Field("quantity".into()), Value::Int(-12)),
        (Slot::Field("ratio".into()), Value::Float(0.25)),
        (Slot::Field("paid".into()), Value::Bool(true)),
        (
            Slot::Field("photo".into()),
            Value::Bytes(vec![0, 1, 2, 255]),
        ),
        (Slot::Tombstone, Value::Bool(true)),
    ];
    values
        .into_iter()
        .enumerate()
        .map(|(i, (slot, value))| Change {
            table: "sales_documents".into(),
            key: "BSOC-000003".into(),
            slot,
            value,
            stamp: Stamp::new(1_795_600_000_000 + i as u64, i as u16),
            dot: if i == 0 {
                dot(2, 3)
            } else {
                dot(1, 30 + i as u64)
            },
            created,
        })
        .collect()
}

fn rejections() -> Vec<ReturnedRejection> {
    let change = Change {
        table: "articles".into(),
        key: "ART-CHAIR".into(),
        slot: Slot::Field("price".into()),
        value: Value::Decimal("0.01".parse().unwrap()),
        stamp: Stamp::new(1_795_600_100_000, 0),
        dot: Dot {
            site: SiteId(2),
            seq: 12,
        },
        created: Creation {
            stamp: Stamp::new(1_795_500_000_000, 0),
            dot: Dot {
                site: SiteId(1),
                seq: 1,
            },
        },
    };
    vec![ReturnedRejection {
        rejection: Rejection {
            source: SiteId(2),
            refusal: Refusal {
                rule: Rule::R3,
                writer: SiteId(2),
                table: "articles".into(),
                key: "ART-CHAIR".into(),
                field: Some("price".into()),
                reason: "only central may modify articles; a remote cannot".into(),
            },
            change,
            at_ms: 1_795_600_200_000,
        },
        central: Some(Register {
            value: Value::Decimal("49.90".parse().unwrap()),
            stamp: Stamp::new(1_795_500_000_000, 0),
            dot: Dot {
                site: SiteId(1),
                seq: 1,
            },
        }),
    }]
}

fn write(compress: bool) -> Vec<u8> {
    let mut w = FlowWriter::new(Vec::new(), &header(), compress).unwrap();
    for c in changes() {
        w.push_change(c).unwrap();
    }
    w.push_rejections(&rejections()).unwrap();
    w.finish().unwrap().0
}

fn decode(name: &str) {
    let path = data(name);
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (the committed compatibility file)", path.display()));
    let mut reader = FlowReader::open(bytes.as_slice()).unwrap();
    assert_eq!(reader.header(), &header(), "{name}");
    let mut got_changes = Vec::new();
    let mut got_rejections = Vec::new();
    while let Some(item) = reader.next_item().unwrap() {
        match item {
            Item::Changes(c) => got_changes.extend(c),
            Item::Rejections(r) => got_rejections.extend(r),
        }
    }
    assert_eq!(got_changes, changes(), "{name}");
    assert_eq!(got_rejections, rejections(), "{name}");
}

#[test]
fn flow_files_of_format_version_1_still_decode() {
    decode("flow-v1.outpost");
    decode("flow-v1-zstd.outpost");
    assert_eq!(
        std::fs::read(data("flow-v1.outpost")).unwrap().get(8..10),
        Some(&1u16.to_le_bytes()[..])
    );
}

#[test]
fn flow_files_of_format_version_2_still_decode() {
    decode("flow-v2.outpost");
    decode("flow-v2-zstd.outpost");
    assert_eq!(
        std::fs::read(data("flow-v2.outpost")).unwrap().get(8..10),
        Some(&2u16.to_le_bytes()[..])
    );
}

#[test]
fn flow_files_of_format_version_3_still_decode() {
    for (name, compress) in [("flow-v3.outpost", false), ("flow-v3-zstd.outpost", true)] {
        if std::env::var_os("OUTPOST_WRITE_COMPAT_FLOWS").is_some() {
            std::fs::write(data(name), write(compress)).unwrap();
        }
        decode(name);
    }
    // The uncompressed encoding is also byte-for-byte what this version writes.
    assert_eq!(
        std::fs::read(data("flow-v3.outpost")).unwrap(),
        write(false)
    );
}

/// `bytes` (an uncompressed flow) with its first frame's tag set to `tag`, the frame's CRC
/// computed again: a file of one version carrying another version's frame.
fn with_first_frame_tag(mut bytes: Vec<u8>, tag: u8) -> Vec<u8> {
    let header_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let at = 16 + header_len + 4;
    let len = u32::from_le_bytes(bytes[at + 1..at + 5].try_into().unwrap()) as usize;
    bytes[at] = tag;
    let crc = crc32fast::hash(&bytes[at..at + 5 + len]);
    bytes[at + 5 + len..at + 9 + len].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// The error reading `bytes` ends with (it must not decode).
fn first_error(bytes: &[u8], what: &str) -> outpost_replicator::DecodeError {
    let mut reader = match FlowReader::open(bytes) {
        Ok(reader) => reader,
        Err(e) => return e,
    };
    loop {
        match reader.next_item() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("{what} decoded"),
            Err(e) => return e,
        }
    }
}

#[test]
fn each_version_reads_only_its_own_changes_frames() {
    // A version 2 file relabelled version 1 holds a packed frame (tag 3) version 1 never had,
    // and a version 1 file relabelled version 2 a plain frame (tag 1) version 2 never writes.
    for (name, relabel, tag) in [("flow-v2.outpost", 1u16, 3u8), ("flow-v1.outpost", 2, 1)] {
        let mut bytes = std::fs::read(data(name)).unwrap();
        bytes[8..10].copy_from_slice(&relabel.to_le_bytes());
        let err = first_error(&bytes, &format!("{name} relabelled {relabel}"));
        assert!(
            matches!(err, outpost_replicator::DecodeError::UnknownFrame(t) if t == tag),
            "{name}: {err}"
        );
    }
    // From version 3 the header's CRC covers the version: a version 3 file relabelled, or a
    // version 2 file relabelled 3, is refused at its header, never read in another layout.
    for (name, relabel) in [
        ("flow-v3.outpost", 2u16),
        ("flow-v3.outpost", 1),
        ("flow-v2.outpost", 3),
    ] {
        let mut bytes = std::fs::read(data(name)).unwrap();
        bytes[8..10].copy_from_slice(&relabel.to_le_bytes());
        let err = first_error(&bytes, &format!("{name} relabelled {relabel}"));
        assert!(
            matches!(err, outpost_replicator::DecodeError::Checksum(_)),
            "{name} relabelled {relabel}: {err}"
        );
    }
    // Versions 2 and 3 lay sequence numbers out differently in a packed frame: each refuses the
    // other's tag.
    for (name, tag) in [("flow-v3.outpost", 3u8), ("flow-v2.outpost", 4)] {
        let bytes = with_first_frame_tag(std::fs::read(data(name)).unwrap(), tag);
        let err = first_error(&bytes, &format!("{name} with a tag {tag} frame"));
        assert!(
            matches!(err, outpost_replicator::DecodeError::UnknownFrame(t) if t == tag),
            "{name} with a tag {tag} frame: {err}"
        );
    }
}

//! The properties the fuzz targets in `fuzz/` check, one per decoder. They live here so they can
//! reach the decoders' crate-private surface, and so the committed seed corpus (`fuzz/seeds/`)
//! is checked by an ordinary test on every run, not only when someone fuzzes.
//!
//! Every property is the same two promises: a decoder given any bytes returns an error or a
//! value, never panics and never allocates what the input merely claims; and what it accepts
//! re-encodes to bytes that decode to the same thing (the encoders are canonical, so re-encoding
//! twice gives identical bytes).

use std::path::Path;

use engram_wal::Lsn;

use crate::codec;
use crate::snapshot::SnapshotManifest;
use crate::tier::cold::{self, segment::Segment};

/// A WAL operation payload (`decode_op`).
pub fn wal_op(bytes: &[u8]) {
    let Ok(op) = codec::decode_op(bytes, Lsn::new(7)) else {
        return;
    };
    let again = codec::encode_op(&op);
    let op2 = codec::decode_op(&again, Lsn::new(7)).expect("a re-encoded operation decodes");
    assert_eq!(codec::encode_op(&op2), again, "encoding is not canonical");
}

/// A memory image (`decode_memory`: WAL puts, warm records, working heap entries, cold blocks).
pub fn memory_image(bytes: &[u8]) {
    let Ok(m) = codec::decode_memory(bytes, Lsn::new(7)) else {
        return;
    };
    let mut again = Vec::new();
    codec::encode_memory(&mut again, &m, m.embedding.is_some());
    let m2 = codec::decode_memory(&again, Lsn::new(7)).expect("a re-encoded image decodes");
    let mut third = Vec::new();
    codec::encode_memory(&mut third, &m2, m2.embedding.is_some());
    assert_eq!(third, again, "encoding is not canonical");
}

/// A warm tier attribute row (`decode_attr_row`).
pub fn attr_row(bytes: &[u8]) {
    let Ok(row) = codec::decode_attr_row(bytes) else {
        return;
    };
    let again = codec::encode_attr_row(&row);
    let row2 = codec::decode_attr_row(&again).expect("a re-encoded row decodes");
    assert_eq!(
        codec::encode_attr_row(&row2),
        again,
        "encoding is not canonical"
    );
}

/// A cold segment file: header, blocks, quantized section, footer and trailer. `scratch` is a
/// file the bytes are written to (segments are read with positioned reads from a file).
pub fn cold_segment(bytes: &[u8], scratch: &Path) {
    std::fs::write(scratch, bytes).expect("the scratch file is writable");
    let Ok(segment) = Segment::open(scratch) else {
        return;
    };
    let _ = segment.inspect();
    let _ = segment.for_each(|_| Ok(()));
    let ids: Vec<_> = segment.ids().take(4).collect();
    for id in &ids {
        let _ = segment.get(id);
    }
    let dimensions = segment.info().dimensions;
    if (1..=crate::model::MAX_DIMENSIONS).contains(&dimensions) {
        let query = vec![0.5f32; dimensions];
        let _ = segment.search(&query, 3, |_| true);
        let _ = segment.exact(&query, &ids);
    }
}

/// The cold tier's manifest (`cold/MANIFEST`).
pub fn cold_manifest(bytes: &[u8]) {
    let path = Path::new("cold/MANIFEST");
    let Ok(Some((lsn, ids))) = cold::parse_manifest(bytes, path) else {
        return;
    };
    let again = cold::manifest_json(lsn, ids.iter().map(|id| (*id, 0, 0)));
    let (lsn2, ids2) = cold::parse_manifest(&again, path)
        .expect("a re-written manifest parses")
        .expect("a re-written manifest is a manifest");
    assert_eq!((lsn2, ids2), (lsn, ids));
}

/// A snapshot's `MANIFEST.json`.
pub fn snapshot_manifest(bytes: &[u8]) {
    let path = Path::new("MANIFEST.json");
    let Ok(manifest) = SnapshotManifest::parse(bytes, path) else {
        return;
    };
    let again = serde_json::to_vec(&manifest.to_json()).expect("JSON values serialize");
    let manifest2 = SnapshotManifest::parse(&again, path).expect("a re-written manifest parses");
    assert_eq!(manifest2, manifest);
}

#[cfg(test)]
mod tests {
    //! The seed corpus: valid inputs for every target, built with the real encoders. The test
    //! checks each against its property; with `ENGRAM_FUZZ_SEEDS=DIR` it also writes them to
    //! `DIR/<target>/` (that is how `fuzz/seeds/` was made), and it runs the committed corpus.

    use std::path::PathBuf;

    use uuid::Uuid;

    use super::*;
    use crate::codec::{AccessDelta, AttrRow, Op, PutKind};
    use crate::model::{content_hash, EmbeddingStatus, Memory, SegmentId, Status, Tier};

    fn memory(i: u64, dimensions: usize) -> Memory {
        let content = format!("Seed memory {i}: the ferry leaves at nine, tickets at the kiosk.");
        Memory {
            id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + u128::from(i)),
            namespace: "seeds".into(),
            content_hash: content_hash(&content),
            content,
            embedding: (dimensions > 0)
                .then(|| (0..dimensions).map(|d| (d as f32 - 2.0) / 4.0).collect()),
            embedding_status: if dimensions > 0 {
                EmbeddingStatus::Ready
            } else {
                EmbeddingStatus::Failed("provider timed out".into())
            },
            embedding_model: (dimensions > 0).then(|| "all-MiniLM-L6-v2".into()),
            tier: Tier::Warm,
            status: Status::Active,
            importance: 0.5,
            access_count: i,
            last_accessed_at_us: Some(1_700_000_000_000_000),
            metadata_json: r#"{"source":"seed"}"#.into(),
            tags: vec!["travel".into(), format!("t{i}")],
            parent_id: (i % 2 == 1).then(|| Uuid::from_u128(42)),
            created_at_us: 1_690_000_000_000_000,
            updated_at_us: 1_690_000_000_000_001,
            expires_at_us: i.is_multiple_of(3).then_some(1_800_000_000_000_000),
            version: 2,
            superseded_by: None,
            actor: Some("seed".into()),
            lsn: Lsn::ZERO,
        }
    }

    fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
        let mut out = Vec::new();
        let ops = [
            Op::Put {
                kind: PutKind::Create,
                memory: memory(1, 4),
                previous_tier: None,
                previous_hash: None,
                history: Vec::new(),
            },
            Op::Put {
                kind: PutKind::Update,
                memory: memory(2, 0),
                previous_tier: Some(Tier::Working),
                previous_hash: Some([7; 32]),
                history: vec![crate::history::VersionDelta::between(
                    &Memory {
                        version: 1,
                        tags: vec![],
                        ..memory(2, 0)
                    },
                    &memory(2, 0),
                )],
            },
            Op::Purge {
                id: Uuid::from_u128(9),
                namespace: "seeds".into(),
                release_hash: Some([3; 32]),
                previous_tier: Tier::Cold,
            },
            Op::Access(vec![AccessDelta {
                id: Uuid::from_u128(9),
                count: 3,
                last_accessed_at_us: 1_700_000_000_000_000,
            }]),
            Op::ColdSeal {
                segment: SegmentId(4),
                memories: vec![(memory(3, 4), Tier::Warm), (memory(4, 0), Tier::Working)],
            },
            Op::ColdCompact {
                segment: Some(SegmentId(6)),
                sources: vec![SegmentId(4), SegmentId(5)],
                kept: vec![Uuid::from_u128(1)],
            },
            Op::ColdCompact {
                segment: None,
                sources: vec![SegmentId(4)],
                kept: vec![],
            },
            Op::SpaceVector {
                space: 2,
                id: Uuid::from_u128(1),
                content_hash: [5; 32],
                vector: vec![0.5, -0.25, 1.0, 0.0],
            },
            Op::DropOwnVectors {
                space: 2,
                model: "all-MiniLM-L6-v2".to_owned(),
            },
        ];
        for (i, op) in ops.iter().enumerate() {
            out.push(("wal_op", format!("op-{i}"), codec::encode_op(op)));
        }
        for (i, dimensions) in [0usize, 4, 384].into_iter().enumerate() {
            let mut image = Vec::new();
            codec::encode_memory(&mut image, &memory(i as u64, dimensions), dimensions > 0);
            out.push(("memory_image", format!("image-{i}"), image));
        }
        let row = AttrRow {
            namespace: "seeds".into(),
            importance: 0.75,
            created_at_us: 1_690_000_000_000_000,
            expires_at_us: Some(1_800_000_000_000_000),
            tags: vec!["travel".into()],
            doc_len: 11,
            vector_crc: Some(0xdead_beef),
            superseded: false,
            terms: vec![("ferri".into(), 1), ("ticket".into(), 2)],
        };
        out.push(("attr_row", "row-0".into(), codec::encode_attr_row(&row)));
        let dir = tempfile::tempdir().expect("tempdir");
        for (i, (count, dimensions)) in [(3u64, 4usize), (40, 8), (2, 0)].into_iter().enumerate() {
            let path = dir.path().join(format!("{i}.cold"));
            let memories: Vec<Memory> = (0..count).map(|n| memory(n, dimensions)).collect();
            cold::segment::write_segment(&path, i as u64 + 1, dimensions, 3, &memories)
                .expect("the seed segment is written");
            let bytes = std::fs::read(&path).expect("the seed segment reads back");
            out.push(("cold_segment", format!("segment-{i}"), bytes));
        }
        out.push((
            "cold_manifest",
            "manifest-0".into(),
            cold::manifest_json(
                Lsn::new(12),
                [(SegmentId(1), 3, 4096), (SegmentId(2), 40, 81920)],
            ),
        ));
        out.push((
            "cold_manifest",
            "manifest-empty".into(),
            cold::manifest_json(Lsn::ZERO, []),
        ));
        let manifest = SnapshotManifest {
            id: "20261130T180000Z-000012".into(),
            lsn: Lsn::new(12),
            commit_time_us: 1_700_000_000_000_000,
            replay_from: Lsn::new(10),
            created_at_us: 1_700_000_000_000_100,
            dimensions: 384,
            working_capacity: 100_000,
            working_heap_bytes: 64 << 20,
            files: vec![("wal/0000000000000001.wal".into(), 4096, 0x1234_5678)],
        };
        out.push((
            "snapshot_manifest",
            "manifest-0".into(),
            serde_json::to_vec_pretty(&manifest.to_json()).expect("JSON values serialize"),
        ));
        out
    }

    fn check(target: &str, bytes: &[u8], scratch: &Path) {
        match target {
            "wal_op" => wal_op(bytes),
            "memory_image" => memory_image(bytes),
            "attr_row" => attr_row(bytes),
            "cold_segment" => cold_segment(bytes, scratch),
            "cold_manifest" => cold_manifest(bytes),
            "snapshot_manifest" => snapshot_manifest(bytes),
            other => panic!("no property for fuzz target {other}"),
        }
    }

    #[test]
    fn seeds_decode_and_hold_their_properties() {
        let dir = tempfile::tempdir().expect("tempdir");
        let scratch = dir.path().join("scratch");
        let write_to = std::env::var_os("ENGRAM_FUZZ_SEEDS").map(PathBuf::from);
        for (target, name, bytes) in seeds() {
            check(target, &bytes, &scratch);
            // The property must not pass vacuously: every seed is accepted by its decoder.
            let accepted = match target {
                "wal_op" => codec::decode_op(&bytes, Lsn::FIRST).is_ok(),
                "memory_image" => codec::decode_memory(&bytes, Lsn::FIRST).is_ok(),
                "attr_row" => codec::decode_attr_row(&bytes).is_ok(),
                "cold_segment" => {
                    std::fs::write(&scratch, &bytes).expect("scratch");
                    Segment::open(&scratch).is_ok_and(|s| {
                        s.inspect().is_ok_and(|(r, q)| {
                            q.is_none() && r.iter().all(|b| b.problem.is_none())
                        })
                    })
                }
                "cold_manifest" => {
                    matches!(cold::parse_manifest(&bytes, Path::new("m")), Ok(Some(_)))
                }
                "snapshot_manifest" => SnapshotManifest::parse(&bytes, Path::new("m")).is_ok(),
                _ => false,
            };
            assert!(accepted, "seed {target}/{name} is rejected by its decoder");
            if let Some(root) = &write_to {
                let d = root.join(target);
                std::fs::create_dir_all(&d).expect("seed dir");
                std::fs::write(d.join(&name), &bytes).expect("seed file");
            }
        }
    }

    /// Every committed seed (and every crash reproducer added to the corpus later) holds.
    #[test]
    fn committed_corpus_holds_its_properties() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
        let dir = tempfile::tempdir().expect("tempdir");
        let scratch = dir.path().join("scratch");
        let mut checked = 0;
        for target in [
            "wal_op",
            "memory_image",
            "attr_row",
            "cold_segment",
            "cold_manifest",
            "snapshot_manifest",
        ] {
            let entries = std::fs::read_dir(root.join(target))
                .unwrap_or_else(|e| panic!("fuzz/seeds/{target}: {e}"));
            for entry in entries {
                let bytes = std::fs::read(entry.expect("dir entry").path()).expect("seed");
                check(target, &bytes, &scratch);
                checked += 1;
            }
        }
        assert!(checked >= 12, "only {checked} committed seeds");
    }
}

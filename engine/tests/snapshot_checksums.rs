//! A snapshot takes the checksums of the immutable files it shares with the previous snapshot
//! (the very same inode: an SST, a cold segment) from that snapshot's manifest instead of
//! reading them again. So a bit that flips in a shared file between two snapshots is reported by
//! `verify` of the newer one too, rather than blessed with a fresh checksum; and every file the
//! newer snapshot holds still matches its manifest.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use engram_engine::snapshot::{list_files, verify_snapshot, SnapshotManifest};
use engram_engine::{Engine, EngineConfig, Tier};

mod common;
use common::plain_memory;

fn config(dir: &Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.dimensions = 4;
    c.working_capacity = 1_000;
    c.working_heap_bytes = 1 << 24;
    c
}

fn create(engine: &Engine, n: usize) -> Vec<engram_engine::Uuid> {
    (0..n)
        .map(|i| {
            engine
                .create(plain_memory(
                    format!("memory {i} {}", rand::random::<u64>()),
                    vec![i as f32, 1.0, 0.5, -0.25],
                ))
                .expect("create")
                .id
        })
        .collect()
}

fn flip_bit(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).expect("read");
    b[0] ^= 0x10;
    f.write_all_at(&b, at).expect("write");
}

#[test]
fn shared_immutable_files_keep_their_recorded_checksums() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let (engine, _) = Engine::open(config(&data)).expect("open");
    let ids = create(&engine, 200);
    for id in &ids[..50] {
        engine.move_to(id, Tier::Cold).expect("seal");
    }
    engine.checkpoint().expect("checkpoint"); // SST files to share
    let first: SnapshotManifest = engine.create_snapshot().expect("first snapshot");
    let first_dir = data.join("snapshots").join(&first.id);
    assert!(verify_snapshot(&first_dir).is_empty());

    create(&engine, 100);
    let second = engine.create_snapshot().expect("second snapshot");
    let second_dir = data.join("snapshots").join(&second.id);
    assert!(
        verify_snapshot(&second_dir).is_empty(),
        "every file of the second snapshot matches its manifest: {:?}",
        verify_snapshot(&second_dir)
    );
    let shared: Vec<String> = list_files(&second_dir)
        .expect("list")
        .into_iter()
        .filter(|rel| {
            let a = std::fs::metadata(first_dir.join(rel));
            let b = std::fs::metadata(second_dir.join(rel)).expect("stat");
            a.is_ok_and(|a| a.ino() == b.ino() && a.dev() == b.dev())
        })
        .collect();
    assert!(
        shared
            .iter()
            .any(|r| r.starts_with("warm/") && r.ends_with(".sst")),
        "the snapshots share SST files: {shared:?}"
    );
    let segment = shared
        .iter()
        .find(|r| r.starts_with("cold/") && r.ends_with(".cold"))
        .expect("the snapshots share a cold segment")
        .clone();

    // A bit flips in the shared segment (through the first snapshot's link; the engine does not
    // read it meanwhile). The third snapshot records the checksum the file was written with.
    flip_bit(&first_dir.join(&segment), 40);
    std::fs::remove_dir_all(&first_dir).expect("drop the first snapshot");
    let third = engine.create_snapshot().expect("third snapshot");
    let third_dir = data.join("snapshots").join(&third.id);
    let recorded = |m: &SnapshotManifest| {
        m.files
            .iter()
            .find(|(rel, _, _)| *rel == segment)
            .map(|f| f.2)
            .expect("segment in manifest")
    };
    assert_eq!(recorded(&third), recorded(&second));
    let faults = verify_snapshot(&third_dir);
    assert_eq!(faults.len(), 1, "one fault: {faults:?}");
    assert!(faults[0].contains(&segment), "{faults:?}");
    drop(engine);
}

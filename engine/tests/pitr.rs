//! Point-in-time restore against an oracle.
//!
//! A seeded random workload of creates, updates, soft deletes, purges and tier moves (working,
//! warm and cold: seals) runs on a
//! real engine (real RocksDB, mmap files, WAL), one WAL record per operation, and the expected
//! state after every LSN is kept in memory. Two snapshots are taken mid-way. Then the store is
//! restored to at least 50 random LSNs (and to commit times) from the snapshots plus the WAL,
//! and each restored store is compared with the expected state memory by memory. The seed is
//! printed; `ENGRAM_PITR_SEED` replays a run.

use std::collections::BTreeMap;
use std::path::Path;

use engram_engine::restore_snapshot;
use engram_engine::snapshot::SnapshotManifest;
use engram_engine::{
    Engine, EngineConfig, ListFilter, Memory, MemoryPatch, NewMemory, Status, Tier, Uuid,
};
use engram_wal::Lsn;
use rand::{Rng, SeedableRng};

const DIMS: usize = 8;

/// The fields a restore must reproduce exactly.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    namespace: String,
    content: String,
    embedding: Option<Vec<f32>>,
    tier: Tier,
    status: Status,
    importance: f32,
    metadata_json: String,
    tags: Vec<String>,
    version: u64,
    created_at_us: i64,
}

fn expected(m: &Memory) -> Expected {
    Expected {
        namespace: m.namespace.clone(),
        content: m.content.clone(),
        embedding: m.embedding.clone(),
        tier: m.tier,
        status: m.status,
        importance: m.importance,
        metadata_json: m.metadata_json.clone(),
        tags: m.tags.clone(),
        version: m.version,
        created_at_us: m.created_at_us,
    }
}

fn config(dir: &Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.dimensions = DIMS;
    c.working_capacity = 10_000;
    c.working_heap_bytes = 1 << 26;
    c.wal_segment_bytes = 64 * 1024; // many segments: restores cross archived segments
    c
}

/// Everything stored, by id (all statuses).
fn dump(engine: &Engine) -> BTreeMap<Uuid, Expected> {
    let mut out = BTreeMap::new();
    for status in [None, Some(Status::Deleted)] {
        let mut after = None;
        loop {
            let page = engine
                .list(
                    &ListFilter {
                        status,
                        ..ListFilter::default()
                    },
                    after,
                    1000,
                )
                .expect("list");
            for m in &page.memories {
                out.insert(m.id, expected(m));
            }
            match page.next_after {
                Some(a) => after = Some(a),
                None => break,
            }
        }
    }
    out
}

#[test]
fn restore_to_random_moments_matches_the_oracle() {
    let seed: u64 = std::env::var("ENGRAM_PITR_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    println!("pitr seed {seed} (ENGRAM_PITR_SEED={seed} to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let (engine, _) = Engine::open(config(&data)).expect("open");
    let mut model: BTreeMap<Uuid, Expected> = BTreeMap::new();
    // states[lsn] = the expected store after record `lsn`.
    let mut states: Vec<BTreeMap<Uuid, Expected>> = vec![BTreeMap::new()];
    let mut snapshots: Vec<(std::path::PathBuf, SnapshotManifest)> = Vec::new();
    const OPS: usize = 600;
    for op in 0..OPS {
        if op == 150 || op == 380 {
            let dir = root.path().join(format!("snap-{op}"));
            let m = engine
                .snapshot(&dir, &format!("snap-{op}"))
                .expect("snapshot");
            assert_eq!(
                m.lsn.get() as usize,
                states.len() - 1,
                "a snapshot is at the applied LSN"
            );
            snapshots.push((dir, m));
        }
        let live: Vec<Uuid> = model
            .iter()
            .filter(|(_, e)| e.status != Status::Deleted)
            .map(|(id, _)| *id)
            .collect();
        let choice = if live.is_empty() {
            0
        } else {
            rng.random_range(0..10)
        };
        let result: Option<Memory> = match choice {
            0..=3 => {
                let m = engine
                    .create(NewMemory {
                        namespace: format!("ns{}", rng.random_range(0..3)),
                        content: format!("memory {op} {}", rng.random::<u32>()),
                        embedding: rng
                            .random_bool(0.7)
                            .then(|| (0..DIMS).map(|_| rng.random_range(-1.0..1.0)).collect()),
                        importance: rng.random_range(0.0..1.0),
                        metadata_json: format!(r#"{{"op":{op}}}"#),
                        tags: (0..rng.random_range(0..3))
                            .map(|t| format!("t{t}"))
                            .collect(),
                        parent_id: None,
                        created_at_us: None,
                        expires_at_us: None,
                        supersedes: vec![],
                        actor: None,
                    })
                    .expect("create");
                Some(m)
            }
            4..=5 => {
                let id = live[rng.random_range(0..live.len())];
                let patch = MemoryPatch {
                    content: rng
                        .random_bool(0.5)
                        .then(|| format!("updated {op} {}", rng.random::<u32>())),
                    importance: Some(rng.random_range(0.0..1.0)),
                    tags: Some(vec![format!("u{op}")]),
                    ..MemoryPatch::default()
                };
                Some(engine.update(&id, patch).expect("update"))
            }
            6 => {
                let id = live[rng.random_range(0..live.len())];
                // Cold moves are seals (one record each, like every other operation here);
                // a memory already cold goes to warm instead.
                // A move to the tier a memory is in changes nothing and logs nothing: another
                // tier is picked then.
                let tier = match rng.random_range(0..3) {
                    0 => Tier::Warm,
                    1 => Tier::Working,
                    _ if model[&id].tier == Tier::Cold => Tier::Warm,
                    _ => Tier::Cold,
                };
                let tier = match (tier == model[&id].tier, tier) {
                    (false, t) => t,
                    (true, Tier::Working) => Tier::Warm,
                    (true, _) => Tier::Working,
                };
                Some(engine.move_to(&id, tier).expect("move"))
            }
            7 => {
                let id = live[rng.random_range(0..live.len())];
                engine.delete(&id, false).expect("delete");
                Some(engine.get(&id).expect("get").expect("soft-deleted stays"))
            }
            8 => {
                let id = live[rng.random_range(0..live.len())];
                engine.delete(&id, true).expect("purge");
                model.remove(&id);
                None
            }
            _ => {
                let id = live[rng.random_range(0..live.len())];
                Some(
                    engine
                        .update(
                            &id,
                            MemoryPatch {
                                // Archiving an archived memory would change nothing.
                                status: Some(if model[&id].status == Status::Archived {
                                    Status::Active
                                } else {
                                    Status::Archived
                                }),
                                ..MemoryPatch::default()
                            },
                        )
                        .expect("archive"),
                )
            }
        };
        if let Some(m) = result {
            model.insert(m.id, expected(&m));
        }
        states.push(model.clone());
        assert_eq!(
            engine.stats().applied_lsn.get() as usize,
            states.len() - 1,
            "one record per operation"
        );
    }
    assert_eq!(dump(&engine), model, "the live store matches the model");
    engine.close().expect("close");

    let wal = data.join("wal");
    let archive = data.join("archive");
    let last = states.len() - 1;
    let first_restorable = snapshots[0].1.lsn.get() as usize;
    let mut targets: Vec<usize> = (0..50)
        .map(|_| rng.random_range(first_restorable..=last))
        .collect();
    targets.extend([first_restorable, snapshots[1].1.lsn.get() as usize, last]);
    for (i, target) in targets.iter().enumerate() {
        let (snap_dir, _) = snapshots
            .iter()
            .rev()
            .find(|(_, m)| m.lsn.get() as usize <= *target)
            .expect("a snapshot at or before the target");
        let dest = root.path().join(format!("restore-{i}"));
        let report = restore_snapshot(
            snap_dir,
            &[&wal, &archive],
            &dest,
            Some(Lsn::new(*target as u64)),
        )
        .unwrap_or_else(|e| panic!("restore to LSN {target}: {e}"));
        assert_eq!(report.restored_lsn.get() as usize, *target);
        let (restored, _) = Engine::open(config(&dest)).expect("open restored store");
        let got = dump(&restored);
        assert_eq!(
            got.len(),
            states[*target].len(),
            "restore to LSN {target}: memory count"
        );
        for (id, want) in &states[*target] {
            assert_eq!(
                got.get(id),
                Some(want),
                "restore to LSN {target}: memory {id}"
            );
        }
        restored.close().expect("close");
        std::fs::remove_dir_all(&dest).expect("cleanup");
    }

    // By time: the state after the last record committed at or before each moment.
    let mut times: Vec<(u64, i64)> = Vec::new();
    for (index, path) in engram_wal::export::collect_segments(&[&wal, &archive]).expect("segments")
    {
        engram_wal::export::scan_file(index, &path, |r, _, _| {
            times.push((r.lsn.get(), r.commit_time_us))
        })
        .expect("scan");
    }
    for i in 0..10 {
        let pick = times[rng.random_range(first_restorable..times.len())];
        let (lsn, _) = engram_wal::export::lsn_at_time(&[&wal, &archive], pick.1)
            .expect("lookup")
            .expect("found");
        assert!(lsn.get() >= pick.0, "the moment's own record is included");
        let want_lsn = times
            .iter()
            .filter(|(_, t)| *t <= pick.1)
            .map(|(l, _)| *l)
            .max()
            .expect("some");
        assert_eq!(lsn.get(), want_lsn);
        let (snap_dir, _) = snapshots
            .iter()
            .rev()
            .find(|(_, m)| m.lsn <= lsn)
            .expect("snapshot");
        let dest = root.path().join(format!("restore-time-{i}"));
        restore_snapshot(snap_dir, &[&wal, &archive], &dest, Some(lsn)).expect("restore by time");
        let (restored, _) = Engine::open(config(&dest)).expect("open");
        assert_eq!(
            dump(&restored),
            states[lsn.get() as usize],
            "restore to time {}",
            pick.1
        );
        restored.close().expect("close");
    }
}

#[test]
fn snapshot_taken_under_concurrent_writes_restores_every_acknowledged_write() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let (engine, _) = Engine::open(config(&data)).expect("open");
    let engine = std::sync::Arc::new(engine);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(u64, Uuid, String)>::new()));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (engine, stop, acked) = (engine.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let content = format!("writer {w} memory {n}");
                    let m = engine
                        .create(NewMemory {
                            namespace: "c".into(),
                            content: content.clone(),
                            embedding: Some(vec![w as f32 + 1.0; DIMS]),
                            importance: 0.5,
                            metadata_json: "{}".into(),
                            tags: vec![],
                            parent_id: None,
                            created_at_us: None,
                            expires_at_us: None,
                            supersedes: vec![],
                            actor: None,
                        })
                        .expect("create");
                    acked
                        .lock()
                        .expect("lock")
                        .push((m.lsn.get(), m.id, content));
                }
            })
        })
        .collect();
    while acked.lock().expect("lock").len() < 2000 {
        std::thread::yield_now();
    }
    let before: Vec<(u64, Uuid, String)> = acked.lock().expect("lock").clone();
    let snap = root.path().join("snap");
    let m = engine.snapshot(&snap, "under-load").expect("snapshot");
    let after_snapshot = acked.lock().expect("lock").len();
    while acked.lock().expect("lock").len() < after_snapshot + 2000 {
        std::thread::yield_now();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    assert!(
        m.lsn > m.replay_from,
        "writes went on during the snapshot, so it carries WAL"
    );
    let all: Vec<(u64, Uuid, String)> = acked.lock().expect("lock").clone();
    std::sync::Arc::into_inner(engine)
        .expect("sole owner")
        .close()
        .expect("close");
    let wal = data.join("wal");
    let archive = data.join("archive");
    // At the snapshot's own LSN: every write acknowledged before it was requested is there.
    let at_snapshot = root.path().join("at-snapshot");
    restore_snapshot(&snap, &[], &at_snapshot, None).expect("restore at snapshot");
    let (restored, _) = Engine::open(config(&at_snapshot)).expect("open");
    for (_, id, content) in &before {
        assert_eq!(
            &restored.get(id).expect("get").expect("present").content,
            content
        );
    }
    restored.close().expect("close");
    // Rolled forward to the end of the log: every acknowledged write.
    let last = all.iter().map(|(l, _, _)| *l).max().expect("writes");
    let forward = root.path().join("forward");
    restore_snapshot(&snap, &[&wal, &archive], &forward, Some(Lsn::new(last)))
        .expect("restore forward");
    let (restored, _) = Engine::open(config(&forward)).expect("open");
    for (_, id, content) in &all {
        assert_eq!(
            &restored.get(id).expect("get").expect("present").content,
            content
        );
    }
    restored.close().expect("close");
}

#[test]
fn restore_refuses_a_target_before_the_snapshot_or_beyond_the_log() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let (engine, _) = Engine::open(config(&data)).expect("open");
    for i in 0..20 {
        engine
            .create(NewMemory {
                namespace: "n".into(),
                content: format!("m{i}"),
                embedding: None,
                importance: 0.5,
                metadata_json: "{}".into(),
                tags: vec![],
                parent_id: None,
                created_at_us: None,
                expires_at_us: None,
                supersedes: vec![],
                actor: None,
            })
            .expect("create");
    }
    let snap = root.path().join("snap");
    let m = engine.snapshot(&snap, "s").expect("snapshot");
    assert_eq!(m.lsn, Lsn::new(20));
    engine.close().expect("close");
    let wal = data.join("wal");
    let before = restore_snapshot(&snap, &[&wal], &root.path().join("r1"), Some(Lsn::new(5)));
    assert!(before.is_err());
    let beyond = restore_snapshot(&snap, &[&wal], &root.path().join("r2"), Some(Lsn::new(21)));
    assert!(beyond.is_err(), "LSN 21 was never written");
    std::fs::create_dir_all(root.path().join("full")).expect("mkdir");
    std::fs::write(root.path().join("full").join("x"), b"x").expect("write");
    assert!(
        restore_snapshot(&snap, &[&wal], &root.path().join("full"), None).is_err(),
        "non-empty target"
    );
    let ok = restore_snapshot(&snap, &[&wal], &root.path().join("r3"), None).expect("restore");
    assert_eq!(ok.restored_lsn, Lsn::new(20));
}

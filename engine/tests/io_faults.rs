//! The I/O-error loop, as SQLite tests itself: a fixed workload (creates, batches, updates,
//! deletes, purges, moves to cold, checkpoints) runs once to count its I/O operations — WAL
//! writes and fsyncs, disk-space allocations (WAL segments, working-tier growth), checkpoint
//! write-backs and cold segment writes — then again for every N with the Nth operation failing:
//! once (transient) or from then on (persistent), with EIO and with ENOSPC.
//!
//! Each time: no call panics; a call that returned Ok is acknowledged and must survive; a
//! write refused as storage-full must not have happened; any other failed write may or may
//! not have; the store reopens without faults, passes `check`, and holds every memory in its
//! acknowledged state or (for a failed write) the state that write would have made, and
//! nothing else.
//!
//! `ENGRAM_IO_FAULT_ROUNDS` (default 1) repeats the loop with other workloads, starting at
//! workload `ENGRAM_IO_FAULT_FIRST_ROUND` (default 0; a long campaign can go on where another
//! stopped);
//! `ENGRAM_IO_FAULT_STRIDE` (default 5) tries every Nth operation (1: all of them);
//! `ENGRAM_IO_FAULT_THREADS` (default 2) runs that many at once.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use engram_engine::{
    Engine, EngineConfig, EngineError, FaultInjector, IoOp, MemoryPatch, NewMemory, Tier,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

mod common;
use common::{plain_memory, State};

const DIMS: usize = 8;

#[derive(Debug, Default)]
struct Oracle {
    /// id → (acknowledged state, the state a failed write would have made).
    memories: HashMap<Uuid, (State, Option<State>)>,
    /// Contents of failed creates: the store may hold them under an id nobody was told.
    doubtful_creates: HashSet<String>,
}

/// How the injected fault behaves.
#[derive(Debug, Clone, Copy)]
struct Fault {
    at: u64,
    persistent: bool,
    errno: i32,
}

const EIO: i32 = 5;
const ENOSPC: i32 = 28;

fn config(dir: &std::path::Path, faults: Option<FaultInjector>) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.dimensions = DIMS;
    c.working_capacity = 64;
    c.working_heap_bytes = 1 << 24;
    // Small segments: rotations, and spare segments made ahead, happen in the workload.
    c.wal_segment_bytes = 64 << 10;
    // Checkpoints only when the workload asks, so the operation count is the same every run.
    c.checkpoint_interval = Duration::from_secs(3600);
    c.migration.enabled = false;
    c.fault_injector = faults;
    c
}

fn vector(rng: &mut StdRng) -> Vec<f32> {
    (0..DIMS).map(|_| rng.random_range(0.1f32..1.0)).collect()
}

fn new_memory(content: String, rng: &mut StdRng) -> NewMemory {
    plain_memory(content, vector(rng))
}

/// A failed write: refused before it was logged (storage full), or in doubt.
fn doubt(e: &EngineError) -> bool {
    !matches!(e, EngineError::StorageFull(_))
}

/// Runs the workload of `seed`; returns the oracle of what was acknowledged.
fn workload(engine: &Engine, seed: u64) -> Oracle {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut oracle = Oracle::default();
    let mut ids: Vec<Uuid> = Vec::new();
    for step in 0..90 {
        // Contents of a few KB, so the working tier's heap grows during the run.
        let pad = "x".repeat(rng.random_range(100..3000));
        let pick = rng.random_range(0..100);
        if pick < 35 || ids.is_empty() {
            let content = format!("seed {seed} step {step} {pad}");
            let result = engine.create(new_memory(content.clone(), &mut rng));
            oracle.created(&mut ids, content, result);
        } else if pick < 45 {
            let items: Vec<NewMemory> = (0..4)
                .map(|i| new_memory(format!("seed {seed} step {step}.{i} {pad}"), &mut rng))
                .collect();
            let contents: Vec<String> = items.iter().map(|m| m.content.clone()).collect();
            for (result, content) in engine.create_batch(items).into_iter().zip(contents) {
                oracle.created(&mut ids, content, result);
            }
        } else if pick < 65 {
            let id = ids[rng.random_range(0..ids.len())];
            let Some((State::Live { .. }, _)) = oracle.memories.get(&id) else {
                continue;
            };
            let content = format!("seed {seed} step {step} updated {pad}");
            let importance = [0.1f32, 0.9][rng.random_range(0..2)];
            let patch = MemoryPatch {
                content: Some(content.clone()),
                embedding: Some(Some(vector(&mut rng))),
                importance: Some(importance),
                ..MemoryPatch::default()
            };
            let next = State::Live {
                content,
                importance,
            };
            settle(&mut oracle, id, next, engine.update(&id, patch).map(|_| ()));
        } else if pick < 75 {
            let id = ids[rng.random_range(0..ids.len())];
            let Some((State::Live { content, .. }, _)) = oracle.memories.get(&id) else {
                continue;
            };
            let next = State::Deleted {
                content: content.clone(),
            };
            settle(&mut oracle, id, next, engine.delete(&id, false).map(|_| ()));
        } else if pick < 82 {
            let id = ids[rng.random_range(0..ids.len())];
            if matches!(oracle.memories.get(&id), Some((State::Purged, _))) {
                continue;
            }
            settle(
                &mut oracle,
                id,
                State::Purged,
                engine.delete(&id, true).map(|_| ()),
            );
        } else if pick < 92 {
            // A seal: a cold segment written, then logged. The memory's fields stay.
            let id = ids[rng.random_range(0..ids.len())];
            if let Some((state @ State::Live { .. }, _)) = oracle.memories.get(&id) {
                let state = state.clone();
                let moved = engine.move_to(&id, Tier::Cold).map(|_| ());
                settle(&mut oracle, id, state, moved);
            }
        } else {
            let _ = engine.checkpoint();
        }
    }
    oracle
}

impl Oracle {
    /// Records the outcome of a create of `content`.
    fn created(
        &mut self,
        ids: &mut Vec<Uuid>,
        content: String,
        result: Result<engram_engine::Memory, EngineError>,
    ) {
        match result {
            Ok(m) => {
                ids.push(m.id);
                let state = State::Live {
                    content,
                    importance: 0.5,
                };
                self.memories.insert(m.id, (state, None));
            }
            Err(e) if doubt(&e) => {
                self.doubtful_creates.insert(content);
            }
            Err(_) => {}
        }
    }
}

/// Records the outcome of a change of `id` to `next`.
fn settle(oracle: &mut Oracle, id: Uuid, next: State, result: Result<(), EngineError>) {
    let entry = oracle.memories.get_mut(&id).expect("tracked");
    match result {
        Ok(()) => *entry = (next, None),
        Err(e) if doubt(&e) && entry.1.is_none() => entry.1 = Some(next),
        Err(_) => {}
    }
}

/// Reopens the store without faults and compares it with the oracle.
fn verify(dir: &std::path::Path, oracle: &Oracle, what: &str) {
    let (engine, _) = Engine::open(config(dir, None))
        .unwrap_or_else(|e| panic!("{what}: the store does not reopen: {e}"));
    let problems = engine.check().expect("check runs");
    assert!(problems.is_empty(), "{what}: check found {problems:?}");
    for (id, (acked, maybe)) in &oracle.memories {
        let found = State::of(engine.get(id).expect("get").as_ref());
        assert!(
            found == *acked || maybe.as_ref() == Some(&found),
            "{what}: memory {id} is {found:?}; acknowledged {acked:?}, in doubt {maybe:?}"
        );
    }
    engine
        .scan_all(None, |m| {
            if !oracle.memories.contains_key(&m.id) {
                assert!(
                    oracle.doubtful_creates.contains(&m.content),
                    "{what}: memory {} was never acknowledged nor in doubt",
                    m.id
                );
            }
            Ok(())
        })
        .expect("scan");
    engine.close().expect("close");
}

/// Counts the I/O operations of the fault-free workload.
fn count_ops(seed: u64) -> u64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let seen = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&seen);
    let injector: FaultInjector = Arc::new(move |_op: IoOp| {
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    });
    let (engine, _) = Engine::open(config(dir.path(), Some(injector))).expect("open");
    let oracle = workload(&engine, seed);
    engine.close().expect("close");
    verify(dir.path(), &oracle, "without faults");
    seen.load(Ordering::Relaxed)
}

/// One run with `fault`: returns what the fault met (the operation kind) if it fired.
fn run_with(seed: u64, fault: Fault) -> Option<IoOp> {
    let dir = tempfile::tempdir().expect("tempdir");
    let seen = Arc::new(AtomicU64::new(0));
    let hit: Arc<parking_lot::Mutex<Option<IoOp>>> = Arc::default();
    let (counter, first_hit) = (Arc::clone(&seen), Arc::clone(&hit));
    let injector: FaultInjector = Arc::new(move |op: IoOp| {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        if n == fault.at || (fault.persistent && n > fault.at) {
            first_hit.lock().get_or_insert(op);
            return Err(io::Error::from_raw_os_error(fault.errno));
        }
        Ok(())
    });
    let (engine, _) = Engine::open(config(dir.path(), Some(injector))).expect("open");
    let oracle = workload(&engine, seed);
    // Closing may fail (a poisoned log refuses its last sync); it must not panic.
    let _ = engine.close();
    let what = format!("seed {seed}, {fault:?}");
    verify(dir.path(), &oracle, &what);
    let hit = *hit.lock();
    hit
}

#[test]
fn every_failed_io_operation_is_refused_cleanly_and_loses_nothing() {
    let rounds: u64 = std::env::var("ENGRAM_IO_FAULT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let stride: u64 = std::env::var("ENGRAM_IO_FAULT_STRIDE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    // Runs wait on fsyncs more than they compute: a few at once.
    let threads: usize = std::env::var("ENGRAM_IO_FAULT_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .max(1);
    let mut injected = 0u64;
    let mut by_op: HashMap<String, u64> = HashMap::new();
    let first: u64 = std::env::var("ENGRAM_IO_FAULT_FIRST_ROUND")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    for round in first..first + rounds {
        let seed = 1000 + round;
        let total = count_ops(seed);
        assert!(total > 50, "the workload did only {total} I/O operations");
        let faults: Vec<Fault> = (0..total)
            .step_by(stride as usize)
            .flat_map(|at| {
                [(false, EIO), (false, ENOSPC), (true, EIO), (true, ENOSPC)].map(
                    |(persistent, errno)| Fault {
                        at,
                        persistent,
                        errno,
                    },
                )
            })
            .collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let hits: parking_lot::Mutex<Vec<IoOp>> = parking_lot::Mutex::default();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&fault) = faults.get(i) else {
                        break;
                    };
                    if let Some(op) = run_with(seed, fault) {
                        hits.lock().push(op);
                    }
                });
            }
        });
        for op in hits.into_inner() {
            injected += 1;
            *by_op.entry(format!("{op:?}")).or_default() += 1;
        }
        println!(
            "round {round}: {total} I/O operations per run; {injected} faults injected so far, by operation {by_op:?}"
        );
    }
    println!("I/O-error loop: {injected} runs with an injected fault, by operation {by_op:?}; 0 acknowledged writes lost");
    assert!(injected > 0);
}

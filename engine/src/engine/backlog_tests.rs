//! The graph's backlog bound (`search.hnsw_max_lagging`): new memories that would push others
//! out of a full working tier wait while the graph is that far behind, and go on once it
//! catches up; with no bound they never wait. The indexer is held still by taking the graph's
//! write lock, so the backlog grows exactly as the writes make it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::tests::new;
use super::Engine;
use crate::config::EngineConfig;
use crate::GRAPH_WAIT_MAX;

const CAPACITY: usize = 20;
const MAX_LAGGING: usize = 10;

fn open(dir: &std::path::Path, max_lagging: usize) -> Engine {
    let mut config = EngineConfig::new(dir);
    config.dimensions = super::tests::DIMS;
    config.working_capacity = CAPACITY;
    config.working_heap_bytes = 1 << 24;
    config.migration.enabled = false;
    config.search.max_lagging = max_lagging;
    Engine::open(config).expect("open").0
}

/// Creates one memory per call, each with its own content (and so its own vector's place).
fn create(engine: &Engine, i: usize) {
    engine
        .create_batch(vec![new(&format!("memory {i}"))])
        .pop()
        .expect("one result")
        .expect("created");
}

#[test]
fn writes_into_a_full_working_tier_wait_while_the_graph_is_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Arc::new(open(dir.path(), MAX_LAGGING));
    let hnsw = &engine.inner.search.hnsw;
    let held = hnsw.hold();

    // The working tier fills, then every create evicts to warm: the backlog grows to the bound
    // without a wait (each eviction moves up to a twentieth of the tier beyond what it needs, as far as the
    // backlog has room).
    let mut i = 0;
    while hnsw.lagging_len() < MAX_LAGGING {
        create(&engine, i);
        i += 1;
        assert!(i < 200, "the backlog never reached its bound");
    }
    assert_eq!(engine.counters().graph_waits.load(Ordering::Relaxed), 0);
    // Fill what room eviction left (background eviction stays idle: the backlog is full); the
    // next create needs an eviction and so waits.
    let lagging = hnsw.lagging_len();
    while engine.inner.writer.lock().working_projected < CAPACITY {
        create(&engine, i);
        i += 1;
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        hnsw.lagging_len(),
        lagging,
        "creates with room moved nothing"
    );
    assert!(engine.should_wait_for_graph(1));

    let writer = {
        let engine = Arc::clone(&engine);
        std::thread::spawn(move || {
            let started = Instant::now();
            create(&engine, 1_000_000);
            started.elapsed()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !writer.is_finished(),
        "the create went ahead of a lagging graph"
    );
    assert_eq!(
        hnsw.lagging_len(),
        lagging,
        "nothing moved to warm while it waited"
    );

    // The indexer catches up; the create goes on well before the longest wait.
    drop(held);
    let waited = writer.join().expect("writer");
    assert!(
        waited < GRAPH_WAIT_MAX,
        "waited {waited:?}: the graph's progress did not free it"
    );
    let counters = engine.counters();
    assert_eq!(counters.graph_waits.load(Ordering::Relaxed), 1);
    assert!(counters.graph_wait_us.load(Ordering::Relaxed) >= 300_000);
    assert_eq!(engine.stats().working + engine.stats().warm, i as u64 + 1);
    Arc::into_inner(engine)
        .expect("sole owner")
        .close()
        .expect("close");
}

#[test]
fn with_no_bound_writes_never_wait_for_the_graph() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), 0);
    let held = engine.inner.search.hnsw.hold();
    for i in 0..(CAPACITY + 5 * MAX_LAGGING) {
        create(&engine, i);
    }
    assert!(engine.inner.search.hnsw.lagging_len() > MAX_LAGGING);
    assert!(!engine.should_wait_for_graph(1));
    assert_eq!(engine.counters().graph_waits.load(Ordering::Relaxed), 0);
    drop(held);
    engine.close().expect("close");
}

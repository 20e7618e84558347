//! Closing does not wait for the vector index to catch up. After a bulk load the HNSW indexer
//! can be minutes behind; a close indexes what is queued for a moment, saves what the graph
//! holds and drops the rest, which the next open queues again. Nothing is lost: every memory is
//! found by vector search after the reopen, through the graph or the exact scan of lagging
//! vectors.

use engram_engine::search::{SearchMode, SearchQuery};
use engram_engine::{Engine, EngineConfig, NewMemory};

mod common;
use common::plain_memory;
use rand::{Rng, SeedableRng};

const DIMS: usize = 384;
const COUNT: usize = 40_000;

fn config(dir: &std::path::Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.dimensions = DIMS;
    c.working_capacity = 200; // nearly everything goes to warm, and so to the graph
    c.working_heap_bytes = 1 << 24;
    c
}

fn vector(rng: &mut impl Rng) -> Vec<f32> {
    (0..DIMS).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

#[test]
fn close_drops_the_index_backlog_and_the_next_open_catches_up() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (engine, _) = Engine::open(config(root.path())).expect("open");
    let mut probes = Vec::new();
    for batch in 0..COUNT / 1000 {
        let items: Vec<NewMemory> = (0..1000)
            .map(|i| plain_memory(format!("memory {batch} {i}"), vector(&mut rng)))
            .collect();
        for r in engine.create_batch(items) {
            let m = r.expect("create");
            if probes.len() < 20 && rng.random_bool(0.002) {
                probes.push((m.id, m.embedding.clone().expect("vector")));
            }
        }
    }
    let (_, lagging_before) = engine.vector_index_sizes();
    let started = std::time::Instant::now();
    engine.close().expect("close");
    println!(
        "closed in {:?} with {lagging_before} vectors waiting for the graph",
        started.elapsed()
    );

    let (engine, _) = Engine::open(config(root.path())).expect("reopen");
    let (graph, lagging) = engine.vector_index_sizes();
    assert!(
        lagging > 0,
        "the backlog was dropped at close, not drained (graph {graph}, lagging {lagging})"
    );
    assert!(!probes.is_empty());
    for (id, v) in &probes {
        let mut q = SearchQuery::new("n");
        q.mode = SearchMode::Semantic;
        q.embedding = Some(v.clone());
        q.limit = 1;
        let hits = engine.search(&q).expect("search").hits;
        assert_eq!(
            hits.first().map(|h| h.memory.id),
            Some(*id),
            "memory {id} is found"
        );
    }
    engine.close().expect("close again");
}

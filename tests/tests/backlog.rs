//! The graph's backlog bound (`search.hnsw_max_lagging`) through the daemon: batch creates
//! into a full working tier wait on the server's timer while the HNSW graph is that far
//! behind, the backlog stays near the bound, and every memory is stored and found once the
//! graph has caught up. An insert candidate list of 1,024 with degree 64 makes the graph
//! several times slower than the creates, so the bound is reached within a few batches.

use std::time::Instant;

use engram_tests::{embedding, wait_for_vector_index, Daemon};
use serde_json::{json, Value};

const CAPACITY: usize = 200;
const MAX_LAGGING: usize = 100;
const BATCH: usize = 50;
const BATCHES: usize = 60;
const DIMENSIONS: usize = 384;

fn metric(d: &Daemon, name: &str) -> f64 {
    d.get("/metrics")
        .text
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

#[test]
fn creates_into_a_full_working_tier_wait_for_a_lagging_graph() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(
        dir.path(),
        &[
            ("working.capacity", &CAPACITY.to_string()),
            ("search.hnsw_max_lagging", &MAX_LAGGING.to_string()),
            ("search.hnsw_expansion_add", "1024"),
            ("search.hnsw_connectivity", "64"),
        ],
    );
    let lagging = |d: &Daemon| metric(d, "engram_vector_index_vectors{state=\"lagging\"}");
    let started = Instant::now();
    let mut peak = 0.0_f64;
    for b in 0..BATCHES {
        let memories: Vec<Value> = (0..BATCH)
            .map(|i| {
                let n = (b * BATCH + i) as u64;
                json!({"content": format!("memory {n}"), "embedding": embedding(n, DIMENSIONS)})
            })
            .collect();
        let r = d.post("/api/v1/memories/batch", &json!({ "memories": memories }));
        assert_eq!(r.status, 200, "{}", r.text);
        let results = r.body["results"].as_array().expect("results");
        assert!(results.iter().all(|m| m["id"].is_string()), "{}", r.text);
        peak = peak.max(lagging(&d));
    }
    let waits = metric(&d, "engram_graph_waits_total");
    assert!(
        waits > 0.0,
        "no create waited (peak backlog {peak}, {:?})",
        started.elapsed()
    );
    // A batch that passes the bound moves what it needs; background eviction stops at it.
    let most = (MAX_LAGGING + BATCH + CAPACITY / 5) as f64;
    assert!(
        peak <= most,
        "the backlog reached {peak}, bound {MAX_LAGGING}"
    );
    assert!(metric(&d, "engram_graph_wait_seconds_total") > 0.0);

    wait_for_vector_index(&d);
    let total = BATCHES * BATCH;
    let in_tiers = metric(&d, "engram_tier_memories{tier=\"working\"}")
        + metric(&d, "engram_tier_memories{tier=\"warm\"}");
    assert_eq!(in_tiers as usize, total);
    // The first memory, long since evicted and in the graph, is its own nearest neighbour.
    let r = d.post(
        "/api/v1/search",
        &json!({"query_embedding": embedding(0, DIMENSIONS), "limit": 1, "search_type": "semantic"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["results"][0]["memory"]["content"], "memory 0",
        "{}",
        r.text
    );
}

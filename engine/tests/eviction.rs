//! The working tier under pressure: many concurrent creates into a tiny working tier. Every
//! create must succeed (evictions to warm make room, in the log's order) and the engine must
//! never run out of slots while applying, which would poison it.

use std::sync::Arc;

use engram_engine::{Engine, EngineConfig, NewMemory};

#[test]
fn concurrent_creates_into_a_tiny_working_tier_never_overflow_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = EngineConfig::new(dir.path());
    config.dimensions = 4;
    config.working_capacity = 40;
    config.working_heap_bytes = 1 << 24;
    let (engine, _) = Engine::open(config.clone()).expect("open");
    let engine = Arc::new(engine);
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let engine = Arc::clone(&engine);
            std::thread::spawn(move || {
                for i in 0..300 {
                    let items = (0..(i % 3 + 1))
                        .map(|k| NewMemory {
                            namespace: "p".into(),
                            content: format!("thread {t} item {i} part {k}"),
                            embedding: Some(vec![t as f32 + 1.0; 4]),
                            importance: ((t * 7 + i) % 10) as f32 / 10.0,
                            metadata_json: "{}".into(),
                            tags: vec![],
                            parent_id: None,
                            created_at_us: None,
                            expires_at_us: None,
                            supersedes: vec![],
                            actor: None,
                        })
                        .collect();
                    for r in engine.create_batch(items) {
                        r.expect("create succeeds under pressure");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    assert!(!engine.is_poisoned());
    let stats = engine.stats();
    assert!(stats.working <= 40, "working tier holds {}", stats.working);
    assert_eq!(stats.working + stats.warm, 16 * 300 * 2);
    Arc::into_inner(engine)
        .expect("sole owner")
        .close()
        .expect("close");
    let (engine, _) = Engine::open(config).expect("reopen");
    let stats = engine.stats();
    assert_eq!(stats.working + stats.warm, 16 * 300 * 2);
}

//! Criterion: reading memories by id from the working tier (a lock-free slot copy plus the heap
//! entry), through the engine's public API, with 10k memories of 384-d vectors.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engram_engine::{Engine, EngineConfig, NewMemory, DEFAULT_IMPORTANCE};

fn bench(c: &mut Criterion) {
    let dir =
        tempfile::tempdir_in(std::env::var("ENGRAM_BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .expect("tempdir");
    let mut config = EngineConfig::new(dir.path().join("data"));
    config.working_heap_bytes = 1 << 30;
    let (engine, _) = Engine::open(config).expect("open");
    let items: Vec<NewMemory> = (0..10_000)
        .map(|i| NewMemory {
            namespace: "bench".into(),
            content: format!(
                "working tier benchmark memory number {i} with a little more text to be typical"
            ),
            embedding: Some(
                (0..384)
                    .map(|d| ((i * 31 + d) % 97) as f32 / 97.0)
                    .collect(),
            ),
            importance: DEFAULT_IMPORTANCE,
            metadata_json: r#"{"source":"bench"}"#.into(),
            tags: vec!["bench".into()],
            parent_id: None,
            created_at_us: None,
            expires_at_us: None,
            supersedes: vec![],
            actor: None,
        })
        .collect();
    let mut ids = Vec::new();
    for chunk in items.chunks(1000) {
        for r in engine.create_batch(chunk.to_vec()) {
            ids.push(r.expect("create").id);
        }
    }
    let mut group = c.benchmark_group("working_tier");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function("get_by_id_384d", |b| {
        b.iter(|| {
            i = (i + 7919) % ids.len();
            engine.get(&ids[i]).expect("get").expect("present")
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

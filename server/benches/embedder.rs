//! The built-in embedder (all-MiniLM-L6-v2 on candle): one short query, and a batch of real
//! conversation turns from ../shared/data/locomo-dev (the background queue's work).
//! Needs the model files from scripts/setup.sh (`ENGRAM_EMBEDDING_MODEL_DIR` overrides).

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engram_server::embed::{Embedder, LocalEmbedder};

fn model_dir() -> PathBuf {
    std::env::var_os("ENGRAM_EMBEDDING_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/engram/models/all-MiniLM-L6-v2")
        })
}

fn turns() -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/locomo-dev/memories.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["content"].as_str().map(str::to_owned))
        .collect()
}

fn bench(c: &mut Criterion) {
    // As engramd runs it: single-threaded passes, one per core.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let model = LocalEmbedder::load(&model_dir(), threads).unwrap_or_else(|e| panic!("{e:#}"));
    let mut g = c.benchmark_group("embedder");
    g.sample_size(30);
    g.bench_function("one short query", |b| {
        b.iter(|| model.embed(&["When did Caroline go to the LGBTQ support group?"]))
    });
    let turns = turns();
    let batch: Vec<&str> = turns.iter().take(256).map(String::as_str).collect();
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.sample_size(10);
    g.bench_function("256 locomo turns", |b| b.iter(|| model.embed(&batch)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

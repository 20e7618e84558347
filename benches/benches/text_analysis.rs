//! Criterion: BM25 text analysis (segmentation, folding, stemming, counting), which runs for
//! every stored memory and text query, over the 788 real conversation turns of LoCoMo
//! (`../shared/data/locomo-dev`, or `ENGRAM_LOCOMO`). `reference` is the plain analysis the
//! analyzer must agree with (UAX #29 words, `to_lowercase`, Snowball for every word), run here
//! so the two are compared in one run.

use std::collections::HashMap;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engram_engine::text::Analyzer;
use unicode_segmentation::UnicodeSegmentation;

fn turns() -> Vec<String> {
    let path = std::env::var("ENGRAM_LOCOMO").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/data/locomo-dev/memories.jsonl"
        )
        .into()
    });
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["content"].as_str().expect("content").to_owned()
        })
        .collect()
}

fn reference(stemmer: &rust_stemmers::Stemmer, text: &str) -> (Vec<(String, u32)>, u32) {
    let mut counts: HashMap<String, u32> = HashMap::new();
    let mut len = 0;
    for word in text.unicode_words() {
        let term = stemmer.stem(&word.to_lowercase()).into_owned();
        if !term.is_empty() && term.len() <= engram_engine::text::MAX_TERM_BYTES {
            len += 1;
            *counts.entry(term).or_default() += 1;
        }
    }
    let mut v: Vec<(String, u32)> = counts.into_iter().collect();
    v.sort_unstable();
    (v, len)
}

fn bench(c: &mut Criterion) {
    let turns = turns();
    let stemmer = rust_stemmers::Stemmer::create(rust_stemmers::Algorithm::English);
    let analyzer = Analyzer::new(true);
    for t in &turns {
        assert_eq!(analyzer.frequencies(t), reference(&stemmer, t), "{t}");
    }
    let bytes: usize = turns.iter().map(String::len).sum();
    let mut g = c.benchmark_group("text_analysis");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("reference_788_turns", |b| {
        b.iter(|| turns.iter().map(|t| reference(&stemmer, t).1).sum::<u32>())
    });
    g.bench_function("analyzer_788_turns", |b| {
        b.iter(|| turns.iter().map(|t| analyzer.frequencies(t).1).sum::<u32>())
    });
    g.bench_function("analyzer_788_turns_cold_cache", |b| {
        b.iter_batched(
            || Analyzer::new(true),
            |fresh| turns.iter().map(|t| fresh.frequencies(t).1).sum::<u32>(),
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! `engram-bench recall`: retrieval quality on a labelled dataset, through the HTTP API.
//!
//! The dataset is a directory (or its `memories.jsonl`) with `memories.jsonl` (`id`, `namespace`,
//! `content`, optional `created_at` and `metadata`) and `queries.jsonl` (`id`, `namespace`,
//! `query`, `relevant` ids). Memories are written under a fresh namespace prefix (so runs never
//! collide), the embedder is waited for, then every query is searched in its namespace with each
//! mode and scored by recall@1/5/10 (fraction of relevant ids in the top k), MRR and nDCG@10
//! (binary relevance), overall and per query `category` when the dataset has one, so weak
//! spots show.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use crate::Conn;

#[derive(Debug, clap::Args)]
pub struct RecallArgs {
    /// Dataset directory holding memories.jsonl and queries.jsonl (or the memories file).
    #[arg(long)]
    dataset: PathBuf,
    #[arg(long, default_value = "http://127.0.0.1:3333")]
    url: String,
    /// Modes to score, comma-separated.
    #[arg(long, default_value = "semantic,text,hybrid")]
    modes: String,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{} line {}", path.display(), i + 1))
        })
        .collect()
}

#[derive(Default, Clone, Copy)]
struct Scores {
    r1: f64,
    r5: f64,
    r10: f64,
    mrr: f64,
    ndcg10: f64,
    n: usize,
}

impl Scores {
    fn add(&mut self, ranked: &[String], relevant: &[String]) {
        let recall = |k: usize| {
            let hits = relevant
                .iter()
                .filter(|r| ranked.iter().take(k).any(|x| x == *r))
                .count();
            hits as f64 / relevant.len() as f64
        };
        self.r1 += recall(1);
        self.r5 += recall(5);
        self.r10 += recall(10);
        if let Some(pos) = ranked.iter().position(|x| relevant.contains(x)) {
            self.mrr += 1.0 / (pos + 1) as f64;
        }
        self.ndcg10 += ndcg(ranked, relevant, 10);
        self.n += 1;
    }

    /// recall@1, recall@5, recall@10, MRR, nDCG@10: means over the queries added.
    fn mean(&self) -> [f64; 5] {
        let n = self.n.max(1) as f64;
        [
            self.r1 / n,
            self.r5 / n,
            self.r10 / n,
            self.mrr / n,
            self.ndcg10 / n,
        ]
    }

    fn to_json(self) -> Value {
        let [r1, r5, r10, mrr, ndcg10] = self.mean();
        json!({"queries": self.n, "recall@1": r1, "recall@5": r5, "recall@10": r10, "mrr": mrr, "ndcg@10": ndcg10})
    }
}

/// nDCG@k with binary relevance: the discounted gain of the relevant ids in the top k, over the
/// gain of a ranking with every relevant id first.
fn ndcg(ranked: &[String], relevant: &[String], k: usize) -> f64 {
    let gain = |rank: usize| 1.0 / ((rank + 2) as f64).log2();
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .filter(|(_, id)| relevant.contains(*id))
        .map(|(i, _)| gain(i))
        .sum();
    let ideal: f64 = (0..relevant.len().min(k)).map(gain).sum();
    if ideal == 0.0 {
        0.0
    } else {
        dcg / ideal
    }
}

/// A query category's name: the dataset's `category` field, as a string.
fn category_of(q: &Value) -> Option<String> {
    match &q["category"] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        v => Some(v.to_string()),
    }
}

async fn health(conn: &mut Conn) -> anyhow::Result<Value> {
    Ok(conn.call("GET", "/api/v1/health", None).await?)
}

pub async fn recall(args: RecallArgs) -> anyhow::Result<()> {
    let dir = if args.dataset.is_dir() {
        args.dataset.clone()
    } else {
        args.dataset
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    };
    let memories = read_jsonl(&dir.join("memories.jsonl"))?;
    let queries = read_jsonl(&dir.join("queries.jsonl"))?;
    let modes: Vec<&str> = args.modes.split(',').map(str::trim).collect();
    let mut conn = Conn::open(&args.url).await?;
    let has_embedder = health(&mut conn).await?["embedding"]["model"].is_string();
    let prefix = format!("recall-{:08x}-", rand::random::<u32>());

    // Ingest in batches, not waiting for embeddings: the embedder works in the background.
    let started = Instant::now();
    let mut engram_to_dataset: HashMap<String, String> = HashMap::new();
    for chunk in memories.chunks(100) {
        let items: Vec<Value> = chunk
            .iter()
            .map(|m| {
                let mut metadata = m["metadata"].as_object().cloned().unwrap_or_default();
                metadata.insert("dataset_id".into(), m["id"].clone());
                let mut item = json!({
                    "namespace": format!("{prefix}{}", m["namespace"].as_str().unwrap_or("default")),
                    "content": m["content"],
                    "metadata": metadata,
                });
                if let Some(c) = m["created_at"].as_str() {
                    item["created_at"] = json!(c);
                }
                item
            })
            .collect();
        for (id, m) in crate::post_batch(&mut conn, items)
            .await?
            .into_iter()
            .zip(chunk)
        {
            engram_to_dataset.insert(id, m["id"].as_str().unwrap_or("").to_owned());
        }
    }
    let ingest_secs = started.elapsed().as_secs_f64();
    let mut embed_secs = None;
    if has_embedder {
        loop {
            let pending = health(&mut conn).await?["embedding"]["pending"]
                .as_u64()
                .unwrap_or(0);
            if pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        embed_secs = Some(started.elapsed().as_secs_f64());
    }

    let mut results: Vec<(String, Scores, f64)> = Vec::new();
    // Per mode, per category (in the order categories appear in the dataset).
    let mut by_category: Vec<(String, Vec<(String, Scores)>)> = Vec::new();
    for mode in &modes {
        if *mode == "semantic" && !has_embedder {
            eprintln!("semantic: skipped (no embedding provider configured)");
            continue;
        }
        let mut scores = Scores::default();
        let mut categories: Vec<(String, Scores)> = Vec::new();
        let t = Instant::now();
        for q in &queries {
            let relevant: Vec<String> = q["relevant"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if relevant.is_empty() {
                continue;
            }
            let body = json!({
                "query_text": q["query"],
                "namespace": format!("{prefix}{}", q["namespace"].as_str().unwrap_or("default")),
                "search_type": mode,
                "limit": 10,
                "include_metadata": false,
            });
            let v = conn
                .call("POST", "/api/v1/search", Some(body.to_string()))
                .await?;
            let ranked: Vec<String> = v["results"]
                .as_array()
                .context("results")?
                .iter()
                .filter_map(|r| r["memory"]["id"].as_str())
                .filter_map(|id| engram_to_dataset.get(id).cloned())
                .collect();
            scores.add(&ranked, &relevant);
            if let Some(c) = category_of(q) {
                match categories.iter_mut().find(|(name, _)| *name == c) {
                    Some((_, s)) => s.add(&ranked, &relevant),
                    None => {
                        let mut s = Scores::default();
                        s.add(&ranked, &relevant);
                        categories.push((c, s));
                    }
                }
            }
        }
        let per_query_ms = t.elapsed().as_secs_f64() * 1000.0 / scores.n.max(1) as f64;
        results.push(((*mode).to_owned(), scores, per_query_ms));
        by_category.push(((*mode).to_owned(), categories));
    }

    if args.json {
        let modes: Vec<Value> = results
            .iter()
            .zip(&by_category)
            .map(|((m, s, ms), (_, cats))| {
                let mut v = s.to_json();
                v["mode"] = json!(m);
                v["ms_per_query"] = json!(ms);
                v["by_category"] = cats
                    .iter()
                    .map(|(c, s)| (c.clone(), s.to_json()))
                    .collect::<serde_json::Map<_, _>>()
                    .into();
                v
            })
            .collect();
        println!(
            "{}",
            json!({
                "dataset": dir.display().to_string(), "memories": memories.len(),
                "ingest_seconds": ingest_secs, "embedded_seconds": embed_secs,
                "embedded_per_second": embed_secs.map(|s| memories.len() as f64 / s),
                "modes": modes,
            })
        );
    } else {
        println!(
            "dataset {} — {} memories, {} queries; ingest {:.2} s{}",
            dir.display(),
            memories.len(),
            queries.len(),
            ingest_secs,
            embed_secs.map_or(String::new(), |s| format!(
                ", all embedded after {s:.2} s ({:.0} memories/s)",
                memories.len() as f64 / s
            ))
        );
        println!("| mode | recall@1 | recall@5 | recall@10 | MRR | nDCG@10 | ms/query |");
        println!("|---|---|---|---|---|---|---|");
        for (m, s, ms) in &results {
            let [r1, r5, r10, mrr, ndcg10] = s.mean();
            println!("| {m} | {r1:.3} | {r5:.3} | {r10:.3} | {mrr:.3} | {ndcg10:.3} | {ms:.1} |");
        }
        if by_category.iter().any(|(_, cats)| !cats.is_empty()) {
            println!();
            println!("| mode | category | queries | recall@5 | recall@10 | MRR | nDCG@10 |");
            println!("|---|---|---|---|---|---|---|");
            for (m, cats) in &by_category {
                let mut cats = cats.clone();
                cats.sort_by(|a, b| a.0.cmp(&b.0));
                for (c, s) in &cats {
                    let [_, r5, r10, mrr, ndcg10] = s.mean();
                    println!(
                        "| {m} | {c} | {} | {r5:.3} | {r10:.3} | {mrr:.3} | {ndcg10:.3} |",
                        s.n
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn ndcg_is_one_for_an_ideal_ranking_and_falls_with_rank() {
        let relevant = ids(&["a", "b"]);
        assert!((ndcg(&ids(&["a", "b", "x"]), &relevant, 10) - 1.0).abs() < 1e-12);
        assert!((ndcg(&ids(&["b", "a"]), &relevant, 10) - 1.0).abs() < 1e-12);
        // One relevant id at rank 2 of two relevant: (1/log2 3) / (1 + 1/log2 3).
        let g2 = 1.0 / 3f64.log2();
        let got = ndcg(&ids(&["x", "a"]), &relevant, 10);
        assert!((got - g2 / (1.0 + g2)).abs() < 1e-12, "{got}");
        assert_eq!(ndcg(&ids(&["x", "y"]), &relevant, 10), 0.0);
        // Beyond k counts nothing.
        assert_eq!(ndcg(&ids(&["x", "a"]), &relevant, 1), 0.0);
    }

    #[test]
    fn scores_average_recall_mrr_and_ndcg_over_queries() {
        let mut s = Scores::default();
        s.add(&ids(&["a", "x"]), &ids(&["a"]));
        s.add(&ids(&["x", "y"]), &ids(&["b"]));
        let [r1, r5, r10, mrr, ndcg10] = s.mean();
        assert_eq!((r1, r5, r10, mrr, ndcg10), (0.5, 0.5, 0.5, 0.5, 0.5));
        assert_eq!(category_of(&json!({"category": 2})), Some("2".to_owned()));
        assert_eq!(category_of(&json!({})), None);
    }
}

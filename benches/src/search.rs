//! `engram-bench search`: vector search throughput, latency and recall@10 against exact search.
//!
//! Loads `--preload` memories with clustered random unit vectors (a fraction `--selectivity`
//! tagged `rare`), waits until the HNSW graph holds every warm vector, measures recall@10 of
//! `--recall-sample` queries against brute force computed here, then drives `--clients`
//! connections of semantic searches for `--duration` seconds. With `--hybrid` each memory's
//! content also carries eight words of a 5,000-word vocabulary (log-uniform, so a few are
//! common and most rare) and the searches are hybrid: the vector plus three such words.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::{drive, Common, Conn};

#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    #[command(flatten)]
    common: Common,
    /// Memories to load first.
    #[arg(long, default_value_t = 100_000)]
    preload: usize,
    /// Cluster centres of the random vectors.
    #[arg(long, default_value_t = 256)]
    clusters: usize,
    /// Fraction of memories tagged `rare`; with --filtered, searches ask for that tag.
    #[arg(long, default_value_t = 0.01)]
    selectivity: f64,
    /// After the unfiltered run, run again with `tags: {all_of: ["rare"]}` (the same memories).
    #[arg(long)]
    filtered: bool,
    /// Queries whose recall@10 is checked against exact search.
    #[arg(long, default_value_t = 100)]
    recall_sample: usize,
    /// Tiers to search, comma-separated.
    #[arg(long, default_value = "working,warm")]
    tiers: String,
    /// Skip loading: search the memories a previous run with the same seed loaded.
    #[arg(long)]
    no_load: bool,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Hybrid searches (vector and three words) instead of semantic ones; no recall check.
    #[arg(long)]
    hybrid: bool,
    /// With --hybrid: send this `hybrid_weights.context` (default: the daemon's).
    #[arg(long)]
    context_weight: Option<f64>,
    /// With --hybrid: send only the words, so the daemon's embedder embeds each query (run the
    /// daemon with `embedding.provider=local`; memories keep the vectors sent at load).
    #[arg(long)]
    embed_queries: bool,
    /// Also write the memories' vectors and the queries to this directory (`vectors.f32`,
    /// `recall_queries.f32`, `queries.f32`: little-endian f32 rows of --dims), so a peer
    /// database can be measured on the same data (benches/peers).
    #[arg(long)]
    export: Option<std::path::PathBuf>,
}

/// Writes vectors as little-endian f32 rows.
fn export_rows(dir: &std::path::Path, name: &str, rows: &[Vec<f32>]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes: Vec<u8> = rows
        .iter()
        .flat_map(|r| r.iter().flat_map(|x| x.to_le_bytes()))
        .collect();
    std::fs::write(dir.join(name), bytes).with_context(|| format!("writing {name}"))
}

/// Words of the hybrid vocabulary.
const VOCABULARY: f64 = 5000.0;

/// `n` words `w<k>`, k log-uniform in 1..=5000: few common words, many rare ones.
fn words(rng: &mut impl Rng, n: usize) -> String {
    (0..n)
        .map(|_| format!("w{}", VOCABULARY.powf(rng.random::<f64>()).floor() as u64))
        .collect::<Vec<_>>()
        .join(" ")
}

fn unit(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// A point near one of the centres.
fn near(rng: &mut impl Rng, centres: &[Vec<f32>], spread: f32) -> Vec<f32> {
    let c = &centres[rng.random_range(0..centres.len())];
    let mut v: Vec<f32> = c
        .iter()
        .map(|x| x + spread * (rng.random::<f32>() + rng.random::<f32>() - 1.0))
        .collect();
    unit(&mut v);
    v
}

async fn lagging(conn: &mut Conn) -> anyhow::Result<u64> {
    let (_, body) = conn.send("GET", "/metrics", None).await?;
    let text = String::from_utf8_lossy(&body);
    Ok(text
        .lines()
        .find(|l| l.starts_with("engram_vector_index_vectors{state=\"lagging\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0) as u64)
}

pub async fn search(args: SearchArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let dims = common.dims;
    if dims == 0 {
        bail!("--dims must be above 0 for vector search");
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let centres: Vec<Vec<f32>> = (0..args.clusters.max(1))
        .map(|_| {
            let mut c: Vec<f32> = (0..dims).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            unit(&mut c);
            c
        })
        .collect();
    let spread = 0.08;
    let every = if args.selectivity > 0.0 {
        (1.0 / args.selectivity).round().max(1.0) as usize
    } else {
        usize::MAX
    };
    let vectors: Vec<Vec<f32>> = (0..args.preload)
        .map(|_| near(&mut rng, &centres, spread))
        .collect();
    if let Some(dir) = &args.export {
        export_rows(dir, "vectors.f32", &vectors)?;
    }
    // Words come from their own generator: the vectors are the same with and without them.
    let mut word_rng = rand::rngs::StdRng::seed_from_u64(args.seed ^ 0x776f_7264);
    let texts: Arc<Vec<String>> = Arc::new(
        (0..args.preload)
            .map(|_| {
                if args.hybrid {
                    format!(" {}", words(&mut word_rng, 8))
                } else {
                    String::new()
                }
            })
            .collect(),
    );

    // Load: 4 connections of 1000-memory batches. The id of memory i is learned from the reply.
    let mut ids: Vec<String> = vec![String::new(); vectors.len()];
    if !args.no_load {
        let started = Instant::now();
        let vectors = Arc::new(vectors.clone());
        let mut tasks = Vec::new();
        let conns = 4usize;
        for c in 0..conns {
            let (url, ns, vectors, texts) = (
                common.url.clone(),
                common.namespace.clone(),
                Arc::clone(&vectors),
                Arc::clone(&texts),
            );
            let seed = args.seed;
            tasks.push(tokio::spawn(async move {
                let mut conn = Conn::open(&url).await?;
                let mut out = Vec::new();
                let mut i = c * 1000;
                while i < vectors.len() {
                    let end = (i + 1000).min(vectors.len());
                    let items: Vec<Value> = (i..end)
                        .map(|j| {
                            let tags: Vec<&str> = if j % every == 0 { vec!["rare"] } else { vec![] };
                            json!({"namespace": ns, "content": format!("search bench {seed} memory {j}{}", texts[j]), "embedding": vectors[j], "tags": tags})
                        })
                        .collect();
                    let v = conn
                        .call(
                            "POST",
                            "/api/v1/memories/batch",
                            Some(json!({"memories": items}).to_string()),
                        )
                        .await?;
                    for (k, r) in v["results"].as_array().context("results")?.iter().enumerate() {
                        let id = r["id"].as_str().with_context(|| format!("item failed: {r}"))?;
                        out.push((i + k, id.to_owned()));
                    }
                    i += 1000 * conns;
                }
                Ok::<_, anyhow::Error>(out)
            }));
        }
        for t in tasks {
            for (i, id) in t.await?? {
                ids[i] = id;
            }
        }
        eprintln!(
            "loaded {} memories in {:.1} s",
            ids.len(),
            started.elapsed().as_secs_f64()
        );
    }
    let mut conn = Conn::open(&common.url).await?;
    if args.no_load {
        // Learn the ids of a previous load with this seed from the memories' content.
        let prefix = format!("search bench {} memory ", args.seed);
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/memories?namespace={}&limit=1000", common.namespace);
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let v = conn.call("GET", &path, None).await?;
            for m in v["memories"].as_array().context("memories")? {
                let j = m["content"]
                    .as_str()
                    .and_then(|c| c.strip_prefix(&prefix))
                    .and_then(|rest| rest.split(' ').next())
                    .and_then(|n| n.parse::<usize>().ok());
                if let (Some(j), Some(id)) = (j, m["id"].as_str()) {
                    if j < ids.len() {
                        ids[j] = id.to_owned();
                    }
                }
            }
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let missing = ids.iter().filter(|i| i.is_empty()).count();
        if missing > 0 {
            bail!(
                "{missing} of {} memories of seed {} are not in namespace {}",
                ids.len(),
                args.seed,
                common.namespace
            );
        }
    }
    let wait = Instant::now();
    loop {
        let n = lagging(&mut conn).await?;
        if n == 0 {
            break;
        }
        if wait.elapsed() > Duration::from_secs(3600) {
            bail!("vector index still {n} behind after an hour");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "vector index caught up after {:.1} s",
        wait.elapsed().as_secs_f64()
    );

    let mut conn_rng = rng.clone();
    for filtered in [false, true] {
        if filtered && !args.filtered {
            break;
        }
        measure(
            &args,
            &mut conn,
            &mut conn_rng,
            &centres,
            &vectors,
            &ids,
            every,
            filtered,
        )
        .await?;
    }
    Ok(())
}

#[expect(clippy::too_many_arguments, reason = "one measurement run's inputs")]
async fn measure(
    args: &SearchArgs,
    conn: &mut Conn,
    rng: &mut rand::rngs::StdRng,
    centres: &[Vec<f32>],
    vectors: &[Vec<f32>],
    ids: &[String],
    every: usize,
    filtered: bool,
) -> anyhow::Result<()> {
    let common = &args.common;
    let spread = 0.08;
    let tiers: Vec<&str> = args.tiers.split(',').map(str::trim).collect();
    let mut word_rng = rand::rngs::StdRng::seed_from_u64(args.seed ^ 0x7175_6572);
    let mut body_for = |q: &[f32]| -> String {
        let mut b = json!({
            "namespace": common.namespace, "query_embedding": q, "search_type": "semantic",
            "limit": 10, "include_metadata": false, "tiers": tiers,
        });
        if args.hybrid {
            b["search_type"] = json!("hybrid");
            b["query_text"] = json!(words(&mut word_rng, 3));
            if args.embed_queries {
                b.as_object_mut()
                    .expect("a JSON object")
                    .remove("query_embedding");
            }
            if let Some(w) = args.context_weight {
                b["hybrid_weights"] = json!({ "context": w });
            }
        }
        if filtered {
            b["tags"] = json!({"all_of": ["rare"]});
        }
        b.to_string()
    };

    // Recall against brute force (only when this run loaded, so ids are known); a hybrid
    // ranking has no exact answer to compare with.
    let mut recall = None;
    if args.recall_sample > 0 && !args.hybrid {
        let mut total = 0.0;
        let queries: Vec<Vec<f32>> = (0..args.recall_sample)
            .map(|_| near(rng, centres, spread))
            .collect();
        if let (Some(dir), false) = (&args.export, filtered) {
            export_rows(dir, "recall_queries.f32", &queries)?;
        }
        for q in queries {
            let mut exact: Vec<(f32, usize)> = vectors
                .iter()
                .enumerate()
                .filter(|(i, _)| !filtered || i % every == 0)
                .map(|(i, v)| (v.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>(), i))
                .collect();
            let k = 10.min(exact.len());
            exact.select_nth_unstable_by(k.saturating_sub(1), |a, b| b.0.total_cmp(&a.0));
            let truth: Vec<&str> = exact[..k].iter().map(|(_, i)| ids[*i].as_str()).collect();
            let v = conn
                .call("POST", "/api/v1/search", Some(body_for(&q)))
                .await?;
            let got: Vec<&str> = v["results"]
                .as_array()
                .context("results")?
                .iter()
                .filter_map(|r| r["memory"]["id"].as_str())
                .collect();
            let hits = truth.iter().filter(|t| got.contains(t)).count();
            total += hits as f64 / k.max(1) as f64;
        }
        recall = Some(total / args.recall_sample as f64);
    }

    let queries: Vec<Vec<f32>> = (0..1000).map(|_| near(rng, centres, spread)).collect();
    if let (Some(dir), false) = (&args.export, filtered) {
        export_rows(dir, "queries.f32", &queries)?;
    }
    let pool: Arc<Vec<String>> = Arc::new(queries.iter().map(|q| body_for(q)).collect());
    let outcome = drive(common, move |c, n| {
        let i = (c * 7919 + n as usize * 104_729) % pool.len();
        ("POST", "/api/v1/search".to_owned(), Some(pool[i].clone()))
    })
    .await?;
    let what = format!(
        "search{}{}{}{} preload={} tiers={}{}",
        if filtered { " filtered" } else { "" },
        if args.hybrid { " hybrid" } else { "" },
        if args.hybrid && args.embed_queries {
            " embedded-queries"
        } else {
            ""
        },
        match (args.hybrid, args.context_weight) {
            (true, Some(w)) => format!(" context={w}"),
            _ => String::new(),
        },
        args.preload,
        args.tiers,
        recall.map_or(String::new(), |r| format!(" recall@10={r:.4}"))
    );
    outcome.report(&what, 1, common);
    Ok(())
}

//! `engram-bench tiers`: the tiers issue's targets against a running daemon whose policy moves
//! every loaded memory to cold on request (start it with `tier_migration.enabled=false`,
//! `tier_migration.warm_to_cold_after=1s`, `tier_migration.strength=1s`,
//! `tier_migration.promote_after_accesses=0` and a small `working.capacity`, as
//! `benches/scripts/tiers.sh` does):
//! 1. bytes on disk per memory in warm (RocksDB + graph) and, after the move, in cold;
//! 2. the warm → cold migration rate, and create latency while it runs against idle;
//! 3. cold point reads by id (warm page cache, and after dropping caches with `--drop-caches`);
//! 4. exact search over the cold tier (i8 scan + f32 re-rank), with recall@10 against brute
//!    force over the same vectors.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::{drive, Common, Conn};

#[derive(Debug, clap::Args)]
pub struct TiersArgs {
    #[command(flatten)]
    common: Common,
    /// Memories to load, then move to cold.
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    /// Searches over the cold tier.
    #[arg(long, default_value_t = 20)]
    searches: usize,
    /// Also measure cold reads right after dropping the page cache (needs root).
    #[arg(long)]
    drop_caches: bool,
}

const WORDS: &[&str] = &[
    "the",
    "agent",
    "remembered",
    "that",
    "caroline",
    "moved",
    "to",
    "a",
    "new",
    "city",
    "after",
    "her",
    "sister",
    "visited",
    "in",
    "spring",
    "and",
    "they",
    "talked",
    "about",
    "painting",
    "hiking",
    "trips",
    "support",
    "group",
    "meetings",
    "with",
    "melanie",
    "kids",
    "camping",
    "weekend",
    "pottery",
    "class",
    "adoption",
    "plans",
    "music",
    "festival",
    "volunteering",
];

/// The vector of memory `i` of a run: regenerated for brute force, never stored here.
pub(crate) fn vector(run: u64, i: u64, dims: usize) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(run.wrapping_mul(0x9E37_79B9) ^ i);
    let v: Vec<f32> = (0..dims).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

/// About 200 characters of agent-memory-like text.
pub(crate) fn content(run: u64, i: u64) -> String {
    let mut rng = rand::rngs::StdRng::seed_from_u64(run ^ i.wrapping_mul(31));
    let mut s = format!("memory {i}:");
    while s.len() < 200 {
        s.push(' ');
        s.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    s
}

pub(crate) async fn load(common: &Common, run: u64, count: usize) -> anyhow::Result<Vec<String>> {
    let clients = 2usize;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (url, ns, dims) = (common.url.clone(), common.namespace.clone(), common.dims);
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&url).await?;
            let mut ids = Vec::new();
            let mine: Vec<u64> = (0..count as u64)
                .filter(|i| *i as usize % clients == c)
                .collect();
            for chunk in mine.chunks(1000) {
                let items: Vec<Value> = chunk
                    .iter()
                    .map(|i| {
                        json!({
                            "namespace": ns,
                            "content": content(run, *i),
                            "embedding": vector(run, *i, dims),
                            "importance_score": 0.3,
                            "tags": ["bench", format!("t{}", i % 10)],
                            "metadata": {"i": i, "source": "engram-bench tiers"},
                        })
                    })
                    .collect();
                for (id, i) in crate::post_batch(&mut conn, items)
                    .await?
                    .into_iter()
                    .zip(chunk)
                {
                    ids.push((*i, id));
                }
            }
            Ok::<_, anyhow::Error>(ids)
        }));
    }
    let mut all = Vec::with_capacity(count);
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_by_key(|(i, _)| *i);
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "loaded {count} memories in {secs:.1} s ({:.0}/s)",
        count as f64 / secs
    );
    Ok(all.into_iter().map(|(_, id)| id).collect())
}

/// Flushes RocksDB's memtables (a snapshot does) so the SST sizes count everything.
pub(crate) async fn flush(conn: &mut Conn) -> anyhow::Result<()> {
    let (status, body) = conn
        .send("POST", "/api/v1/admin/snapshots", Some(String::new()))
        .await?;
    anyhow::ensure!(
        status == 201,
        "snapshot: {}",
        String::from_utf8_lossy(&body)
    );
    let v: Value = serde_json::from_slice(&body)?;
    let id = v["id"].as_str().context("snapshot id")?;
    conn.call("DELETE", &format!("/api/v1/admin/snapshots/{id}"), None)
        .await?;
    Ok(())
}

fn quantiles(h: &Histogram<u64>) -> Value {
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    json!({"p50": q(0.5), "p99": q(0.99), "max": h.max() as f64 / 1000.0, "n": h.len()})
}

/// Single creates on one connection until `stop`; their latencies.
async fn creates_until(
    url: String,
    ns: String,
    dims: usize,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Histogram<u64>> {
    let mut conn = Conn::open(&url).await?;
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let run: u64 = rand::random();
    let mut i = 0u64;
    while !stop.load(Ordering::Acquire) {
        let body = json!({
            "namespace": format!("{ns}-live"),
            "content": content(run, i),
            "embedding": vector(run, i, dims),
        })
        .to_string();
        i += 1;
        let t = Instant::now();
        let (status, _) = conn.send("POST", "/api/v1/memories", Some(body)).await?;
        anyhow::ensure!(status == 201, "create answered {status}");
        h.saturating_record(t.elapsed().as_micros().max(1) as u64);
    }
    Ok(h)
}

async fn create_latency(
    common: &Common,
    during: impl std::future::Future<Output = anyhow::Result<Value>>,
) -> anyhow::Result<(Histogram<u64>, Value)> {
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(creates_until(
        common.url.clone(),
        common.namespace.clone(),
        common.dims,
        Arc::clone(&stop),
    ));
    let v = during.await;
    stop.store(true, Ordering::Release);
    let h = task.await??;
    Ok((h, v?))
}

pub(crate) fn tier(v: &Value, t: &str, field: &str) -> u64 {
    v["tiers"][t][field].as_u64().unwrap_or(0)
}

pub async fn tiers(args: TiersArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let run: u64 = rand::random();
    let mut admin = Conn::open(&common.url).await?;
    let ids = Arc::new(load(common, run, args.count).await?);
    // Let the HNSW indexer finish (it competes for the cores, and the warm tier's bytes
    // include the graph it saves).
    let started = Instant::now();
    loop {
        let (_, body) = admin.send("GET", "/metrics", None).await?;
        let text = String::from_utf8_lossy(&body);
        let lagging = text
            .lines()
            .find(|l| l.starts_with("engram_vector_index_vectors{state=\"lagging\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0);
        if lagging == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!(
        "vector index caught up after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    flush(&mut admin).await?;
    let before = admin.call("GET", "/api/v1/tiers", None).await?;
    let warm_bytes = tier(&before, "warm", "bytes_on_disk");
    let warm_count = tier(&before, "warm", "count");

    // Create latency while idle, then while the policy moves everything to cold.
    let (idle, _) = create_latency(common, async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(Value::Null)
    })
    .await?;
    let url = common.url.clone();
    let (during, migrated) = create_latency(common, async move {
        let mut c = Conn::open(&url).await?;
        Ok(c.call(
            "POST",
            "/api/v1/admin/migrate",
            Some(r#"{"dry_run":false}"#.to_owned()),
        )
        .await?)
    })
    .await?;
    let moved = migrated["by_route"]["warm_to_cold"].as_u64().unwrap_or(0);
    let took_s = migrated["took_ms"].as_f64().unwrap_or(0.0) / 1000.0;

    let compacted = admin
        .call("POST", "/api/v1/admin/compact", Some("{}".to_owned()))
        .await?;
    flush(&mut admin).await?;
    let after = admin.call("GET", "/api/v1/tiers", None).await?;
    let cold_bytes = tier(&after, "cold", "bytes_on_disk");
    let cold_count = tier(&after, "cold", "count");
    // What cold memories keep in RocksDB (postings, attributes, access state, location,
    // namespace and dedup index) counts as theirs.
    let residual = tier(&after, "warm", "bytes_on_disk");

    // Cold point reads: random ids of the loaded (now cold) memories.
    let reads = |clients: usize, secs: f64| {
        let ids = Arc::clone(&ids);
        let seed: u64 = rand::random();
        let c = Common {
            clients,
            duration: secs,
            ..common.clone()
        };
        async move {
            drive(&c, move |client, n| {
                let mut x = seed ^ ((client as u64) << 32) ^ n;
                x ^= x >> 33;
                x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
                x ^= x >> 33;
                let id = &ids[(x % ids.len() as u64) as usize];
                ("GET", format!("/api/v1/memories/{id}"), None)
            })
            .await
        }
    };
    let warm_cache_1 = reads(1, common.duration).await?;
    let warm_cache_n = reads(common.clients, common.duration).await?;
    let dropped = if args.drop_caches {
        std::process::Command::new("sync").status()?;
        std::fs::write("/proc/sys/vm/drop_caches", "3\n")
            .context("dropping the page cache needs root")?;
        Some(reads(1, 2.0).await?)
    } else {
        None
    };

    // Exact search over the cold tier, and recall@10 against brute force.
    let mut search_h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut recall_sum = 0.0;
    let mut rng = rand::rngs::StdRng::seed_from_u64(run);
    for _ in 0..args.searches {
        let target = rng.random_range(0..args.count as u64);
        // A query near a stored vector: the vector plus noise.
        let q: Vec<f32> = vector(run, target, common.dims)
            .into_iter()
            .map(|x| x + rng.random_range(-0.05f32..0.05))
            .collect();
        let body = json!({
            "namespace": common.namespace, "search_type": "semantic", "tiers": ["cold"],
            "query_embedding": q, "limit": 10,
        })
        .to_string();
        let t = Instant::now();
        let v = admin.call("POST", "/api/v1/search", Some(body)).await?;
        search_h.saturating_record(t.elapsed().as_micros().max(1) as u64);
        let got: std::collections::HashSet<&str> = v["results"]
            .as_array()
            .context("results")?
            .iter()
            .filter_map(|h| h["memory"]["id"].as_str())
            .collect();
        let mut exact: Vec<(f32, usize)> = (0..args.count)
            .map(|i| {
                let v = vector(run, i as u64, common.dims);
                (v.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>(), i)
            })
            .collect();
        exact.select_nth_unstable_by(9, |a, b| b.0.total_cmp(&a.0));
        let hits = exact[..10]
            .iter()
            .filter(|(_, i)| got.contains(ids[*i].as_str()))
            .count();
        recall_sum += hits as f64 / 10.0;
    }

    let report = json!({
        "benchmark": "tiers",
        "memories": args.count,
        "dims": common.dims,
        "warm": {"count": warm_count, "bytes_on_disk": warm_bytes,
                  "bytes_per_memory": warm_bytes as f64 / warm_count.max(1) as f64},
        "cold": {"count": cold_count, "segment_bytes": cold_bytes, "rocksdb_residual_bytes": residual,
                  "segment_bytes_per_memory": cold_bytes as f64 / cold_count.max(1) as f64,
                  "bytes_per_memory": (cold_bytes + residual) as f64 / cold_count.max(1) as f64,
                  "ratio_to_warm": ((cold_bytes + residual) as f64 / cold_count.max(1) as f64)
                      / (warm_bytes as f64 / warm_count.max(1) as f64),
                  "segments": after["tiers"]["cold"]["segments"]},
        "migration": {"moved": moved, "seconds": took_s, "per_second": moved as f64 / took_s.max(1e-9),
                       "create_latency_ms_idle": quantiles(&idle),
                       "create_latency_ms_during": quantiles(&during),
                       "p99_ratio": during.value_at_quantile(0.99) as f64 / idle.value_at_quantile(0.99).max(1) as f64},
        "compaction": compacted,
        "cold_reads_ms": {
            "one_client": quantiles(&warm_cache_1.latency_us),
            "one_client_per_second": warm_cache_1.ok as f64 / warm_cache_1.elapsed.as_secs_f64(),
            "clients": common.clients,
            "many_clients": quantiles(&warm_cache_n.latency_us),
            "many_clients_per_second": warm_cache_n.ok as f64 / warm_cache_n.elapsed.as_secs_f64(),
            "after_drop_caches": dropped.as_ref().map(|d| quantiles(&d.latency_us)),
        },
        "cold_search_ms": quantiles(&search_h),
        "cold_search_recall_at_10": recall_sum / args.searches.max(1) as f64,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

//! `engram-bench migration`: what an embedding migration costs. Against a daemon with the
//! built-in model's files on disk (`embedding.model_dir`; the store's own provider may be
//! `none`), `benches/scripts/migration.sh`:
//! 1. loads `--count` memories (the locomo-dev turns, repeated with a suffix to be distinct)
//!    with random vectors of `--dims` dimensions;
//! 2. re-embeds them into a new space with the local model, nothing else running: the rate;
//! 3. drops it and does it again while `--clients` clients search the store's own vectors
//!    back to back: the rate under load, and the searches per second meanwhile;
//! 4. the same searches with no migration, for as long as step 3 took: the baseline;
//! 5. the cut-over: a third migration made ready, then activated while the clients search
//!    (3 s before, 3 s after): the activate call's time and the searches' latency before,
//!    across and after the switch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::SeedableRng;
use serde_json::{json, Value};

use crate::{embedding_field, Common, Conn};

const MIGRATIONS: &str = "/api/v1/admin/embedding/migrations";

#[derive(Debug, clap::Args)]
pub struct MigrationArgs {
    #[command(flatten)]
    common: Common,
    /// Memories to load.
    #[arg(long, default_value_t = 4_000)]
    count: usize,
    /// Searches per second the clients send together while a migration runs (0: back to back,
    /// as fast as the daemon answers).
    #[arg(long, default_value_t = 0.0)]
    search_rate: f64,
    /// The texts (JSON lines with a `content` field).
    #[arg(long, default_value = "../shared/data/locomo-dev/memories.jsonl")]
    texts: std::path::PathBuf,
}

async fn send(
    conn: &mut Conn,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let (status, bytes) = conn.send(method, path, body.map(|b| b.to_string())).await?;
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        bail!("{method} {path}: {status} {v}");
    }
    Ok(v)
}

/// Starts a migration to the local model and waits until it is ready: (id, vectors, seconds).
async fn start_ready(conn: &mut Conn) -> anyhow::Result<(u64, u64, f64)> {
    let started = Instant::now();
    let m = send(
        conn,
        "POST",
        MIGRATIONS,
        Some(json!({"provider": "local", "dimensions": 384})),
    )
    .await?;
    let id = m["id"].as_u64().context("migration id")?;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let m = send(conn, "GET", &format!("{MIGRATIONS}/{id}"), None).await?;
        if m["state"] == "ready" {
            let secs = started.elapsed().as_secs_f64();
            return Ok((id, m["vectors"].as_u64().unwrap_or(0), secs));
        }
        if started.elapsed() > Duration::from_secs(3600) {
            bail!("migration {id} not ready after an hour: {m}");
        }
    }
}

/// Starts a migration to the local model, waits until it is ready and drops it:
/// (vectors, seconds).
async fn migrate(conn: &mut Conn) -> anyhow::Result<(u64, f64)> {
    let (id, vectors, secs) = start_ready(conn).await?;
    send(conn, "DELETE", &format!("{MIGRATIONS}/{id}"), None).await?;
    Ok((vectors, secs))
}

/// Searches across an activation: (activate ms, [before, across, after] as (count, p99 ms,
/// max ms)). A search is "across" if it was in flight at any moment of the activate call.
async fn cutover(common: &Common, ns: &str, conn: &mut Conn) -> anyhow::Result<Value> {
    let (id, _, _) = start_ready(conn).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let origin = Instant::now();
    let handles: Vec<_> = (0..common.clients)
        .map(|c| {
            let (url, ns, stop, dims) = (
                common.url.clone(),
                ns.to_owned(),
                Arc::clone(&stop),
                common.dims,
            );
            tokio::spawn(async move {
                let mut conn = Conn::open(&url).await?;
                let mut rng = rand::rngs::StdRng::seed_from_u64(100 + c as u64);
                let mut spans = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let emb = embedding_field(&mut rng, dims, true).replacen(
                        "\"embedding_b64\"",
                        "\"query_embedding_b64\"",
                        1,
                    );
                    let body = format!(
                        "{{\"namespace\":{}{emb},\"search_type\":\"semantic\",\"limit\":10}}",
                        serde_json::to_string(&ns)?
                    );
                    let t = Instant::now();
                    conn.call("POST", "/api/v1/search", Some(body)).await?;
                    spans.push((t - origin, t.elapsed()));
                }
                anyhow::Ok(spans)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t0 = origin.elapsed();
    send(conn, "POST", &format!("{MIGRATIONS}/{id}/activate"), None).await?;
    let t1 = origin.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut groups: [Vec<f64>; 3] = Default::default();
    for h in handles {
        for (start, took) in h.await?? {
            let end = start + took;
            let g = if end < t0 {
                0
            } else if start > t1 {
                2
            } else {
                1
            };
            groups[g].push(took.as_secs_f64() * 1000.0);
        }
    }
    send(conn, "POST", &format!("{MIGRATIONS}/{id}/deactivate"), None).await?;
    send(conn, "DELETE", &format!("{MIGRATIONS}/{id}"), None).await?;
    let summary = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let p99 = v
            .get((v.len() * 99 / 100).min(v.len().saturating_sub(1)))
            .copied();
        json!({"searches": v.len(), "p99_ms": p99, "max_ms": v.last()})
    };
    let [before, across, after] = &mut groups;
    Ok(json!({
        "activate_ms": (t1 - t0).as_secs_f64() * 1000.0,
        "before": summary(before),
        "across": summary(across),
        "after": summary(after),
    }))
}

/// Runs `clients` searchers until `stop`; returns the searches done.
fn search_load(
    common: &Common,
    namespace: &str,
    rate: f64,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<anyhow::Result<u64>>> {
    let done = Arc::new(AtomicU64::new(0));
    (0..common.clients)
        .map(|c| {
            let (url, ns, stop, dims) = (
                common.url.clone(),
                namespace.to_owned(),
                Arc::clone(&stop),
                common.dims,
            );
            let done = Arc::clone(&done);
            let clients = common.clients;
            tokio::spawn(async move {
                let mut conn = Conn::open(&url).await?;
                let mut rng = rand::rngs::StdRng::seed_from_u64(c as u64);
                let mut n = 0;
                // Each client's share of the rate, as a fixed schedule (no catching up).
                let every = (rate > 0.0).then(|| Duration::from_secs_f64(clients as f64 / rate));
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if let Some(every) = every {
                        next += every;
                        let now = Instant::now();
                        if next > now {
                            tokio::time::sleep(next - now).await;
                        } else {
                            next = now;
                        }
                    }
                    let emb = embedding_field(&mut rng, dims, true).replacen(
                        "\"embedding_b64\"",
                        "\"query_embedding_b64\"",
                        1,
                    );
                    let body = format!(
                        "{{\"namespace\":{}{emb},\"search_type\":\"semantic\",\"limit\":10}}",
                        serde_json::to_string(&ns)?
                    );
                    conn.call("POST", "/api/v1/search", Some(body)).await?;
                    n += 1;
                }
                done.fetch_add(n, Ordering::Relaxed);
                Ok(n)
            })
        })
        .collect()
}

async fn searched(
    handles: Vec<tokio::task::JoinHandle<anyhow::Result<u64>>>,
) -> anyhow::Result<u64> {
    let mut total = 0;
    for h in handles {
        total += h.await??;
    }
    Ok(total)
}

pub async fn migration(args: MigrationArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let texts: Vec<String> = std::fs::read_to_string(&args.texts)
        .with_context(|| format!("reading {}", args.texts.display()))?
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["content"].as_str().map(str::to_owned))
        .collect();
    if texts.is_empty() {
        bail!("no texts in {}", args.texts.display());
    }
    let mut conn = Conn::open(&common.url).await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let ns = &common.namespace;
    let loaded = Instant::now();
    for start in (0..args.count).step_by(1000) {
        let items: Vec<String> = (start..(start + 1000).min(args.count))
            .map(|i| {
                let text = &texts[i % texts.len()];
                let content = if i < texts.len() {
                    text.clone()
                } else {
                    format!("{text} [{}]", i / texts.len())
                };
                crate::memory_body(ns, &content, &embedding_field(&mut rng, common.dims, true))
            })
            .collect();
        let body = format!("{{\"memories\":[{}]}}", items.join(","));
        conn.call("POST", "/api/v1/memories/batch", Some(body))
            .await?;
    }
    let load_s = loaded.elapsed().as_secs_f64();

    let (alone_vectors, alone_s) = migrate(&mut conn).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let load = search_load(common, ns, args.search_rate, Arc::clone(&stop));
    let (busy_vectors, busy_s) = migrate(&mut conn).await?;
    stop.store(true, Ordering::Relaxed);
    let during = searched(load).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let load = search_load(common, ns, args.search_rate, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_secs_f64(busy_s)).await;
    stop.store(true, Ordering::Relaxed);
    let baseline = searched(load).await?;

    // A fresh connection: the daemon closes one left idle through the baseline.
    let mut conn = Conn::open(&common.url).await?;
    let cut = cutover(common, ns, &mut conn).await?;

    let out = json!({
        "cutover": cut,
        "memories": args.count,
        "load_seconds": load_s,
        "alone": {"vectors": alone_vectors, "seconds": alone_s, "per_second": alone_vectors as f64 / alone_s},
        "with_searches": {"vectors": busy_vectors, "seconds": busy_s, "per_second": busy_vectors as f64 / busy_s,
                          "searches_per_second": during as f64 / busy_s},
        "searches_alone_per_second": baseline as f64 / busy_s,
        "search_clients": common.clients,
        "search_rate_asked": args.search_rate,
    });
    if common.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

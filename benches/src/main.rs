//! `engram-bench`: a native HTTP load generator for engramd. Each client holds one keep-alive
//! HTTP/1.1 connection and sends requests back to back for the given duration; latencies go
//! into an HDR histogram per client, merged at the end.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
/// One keep-alive connection per client.
use engram_client::Connection as Conn;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

mod history;
mod mcp;
mod migration;
mod namespace;
mod recall;
mod search;
mod snapshot;
mod tiers;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(name = "engram-bench", about = "Load generator for engramd")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args, Clone)]
struct Common {
    /// Base URL of the daemon.
    #[arg(long, default_value = "http://127.0.0.1:3333")]
    url: String,
    /// Concurrent clients, one connection each.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Embedding dimensions to send (0: none).
    #[arg(long, default_value_t = 384)]
    dims: usize,
    /// Namespace to write to and read from.
    #[arg(long, default_value = "bench")]
    namespace: String,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

/// How creates are sent and answered.
#[derive(Debug, clap::Args, Clone, Copy)]
struct Wire {
    /// Send vectors as `embedding_b64` (base64 of little-endian f32s) instead of numbers.
    #[arg(long)]
    b64: bool,
    /// Ask for `return=minimal` replies (id, version and status only).
    #[arg(long)]
    minimal: bool,
    /// A random vector of its own for every memory (uniform components, unclustered). Without
    /// it each client sends one vector with all its memories, so once they leave the working
    /// tier the graph holds thousands of copies of each.
    #[arg(long)]
    distinct_vectors: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Durable creates (one memory per request, or --batch memories per batch request).
    Create {
        #[command(flatten)]
        common: Common,
        /// Memories per request through /api/v1/memories/batch (0: single creates).
        #[arg(long, default_value_t = 0)]
        batch: usize,
        #[command(flatten)]
        wire: Wire,
    },
    /// GET by id of memories created first (--preload of them).
    Get {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 10_000)]
        preload: usize,
    },
    /// Loads COUNT memories as fast as batches allow, then exits (for restart and size tests).
    Load {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Vector search throughput and latency, with recall@10 against exact search.
    Search(search::SearchArgs),
    /// Retrieval quality (recall@k, MRR) of each search mode on a labelled dataset.
    Recall(recall::RecallArgs),
    /// The cold tier: bytes per memory, migration rate, cold reads, cold exact search.
    Tiers(tiers::TiersArgs),
    /// Creates while online snapshots are taken: latency during the snapshots against the rest.
    Snapshot(snapshot::SnapshotArgs),
    /// MCP against REST: recall vs search latency, and remember throughput over sessions.
    Mcp(mcp::McpArgs),
    /// What versions cost: warm bytes per memory with 1 and with N versions, update rate.
    History(history::HistoryArgs),
    /// A namespace exported, purged and imported back over HTTP: rates and the purge's time.
    Namespace(namespace::NamespaceArgs),
    /// An embedding migration to the built-in model: its rate alone and while searches run.
    Migration(migration::MigrationArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Create {
                common,
                batch,
                wire,
            } => create(common, batch, wire).await,
            Command::Get { common, preload } => get(common, preload).await,
            Command::Load {
                common,
                count,
                batch,
            } => load(common, count, batch).await.map(|_| ()),
            Command::Search(args) => search::search(args).await,
            Command::Recall(args) => recall::recall(args).await,
            Command::Tiers(args) => tiers::tiers(args).await,
            Command::Snapshot(args) => snapshot::snapshot(args).await,
            Command::Mcp(args) => mcp::mcp(args).await,
            Command::History(args) => history::history(args).await,
            Command::Namespace(args) => namespace::namespace(args).await,
            Command::Migration(args) => migration::migration(args).await,
        }
    })
}

fn embedding_json(rng: &mut impl Rng, dims: usize) -> String {
    embedding_field(rng, dims, false)
}

/// `,"embedding":[…]` or, with `b64`, `,"embedding_b64":"…"` (empty for 0 dimensions).
fn embedding_field(rng: &mut impl Rng, dims: usize, b64: bool) -> String {
    if dims == 0 {
        return String::new();
    }
    let v: Vec<f32> = (0..dims).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    if b64 {
        use base64::Engine as _;
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        format!(",\"embedding_b64\":\"{text}\"")
    } else {
        format!(
            ",\"embedding\":{}",
            serde_json::to_string(&v).expect("floats serialize")
        )
    }
}

/// [`embedding_field`] of a vector of its own for memory `i` of request `n` from client `c`.
fn fresh_embedding(run: u64, c: usize, n: u64, i: usize, dims: usize, b64: bool) -> String {
    let seed = run ^ ((c as u64) << 48) ^ (n << 12) ^ i as u64;
    embedding_field(&mut rand::rngs::StdRng::seed_from_u64(seed), dims, b64)
}

fn memory_body(namespace: &str, content: &str, emb: &str) -> String {
    format!(
        "{{\"namespace\":{},\"content\":{}{emb}}}",
        serde_json::to_string(namespace).expect("string"),
        serde_json::to_string(content).expect("string")
    )
}

/// Posts `items` to the batch endpoint; the id of each, in order (any failed item is an error).
async fn post_batch(conn: &mut Conn, items: Vec<Value>) -> anyhow::Result<Vec<String>> {
    let v = conn
        .call(
            "POST",
            "/api/v1/memories/batch",
            Some(json!({ "memories": items }).to_string()),
        )
        .await?;
    v["results"]
        .as_array()
        .context("results")?
        .iter()
        .map(|r| {
            r["id"]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("a memory failed: {r}"))
        })
        .collect()
}

/// Results of one run.
struct Outcome {
    ok: u64,
    errors: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

impl Outcome {
    fn report(&self, what: &str, items_per_request: u64, common: &Common) {
        let secs = self.elapsed.as_secs_f64();
        let rps = self.ok as f64 / secs;
        let q = |p: f64| self.latency_us.value_at_quantile(p) as f64 / 1000.0;
        if common.json {
            println!(
                "{}",
                json!({
                    "benchmark": what, "clients": common.clients, "seconds": secs, "dims": common.dims,
                    "requests_ok": self.ok, "errors": self.errors, "requests_per_second": rps,
                    "items_per_second": rps * items_per_request as f64,
                    "latency_ms": {"p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": self.latency_us.max() as f64 / 1000.0},
                })
            );
        } else {
            println!(
                "{what}: clients={} dims={} ok={} errors={} {:.0} req/s ({:.0} items/s) latency ms p50={:.3} p99={:.3} p99.9={:.3} max={:.3}",
                common.clients, common.dims, self.ok, self.errors, rps, rps * items_per_request as f64,
                q(0.5), q(0.99), q(0.999), self.latency_us.max() as f64 / 1000.0
            );
        }
    }
}

/// Runs `clients` loops for `duration`; `next` builds request `n` of client `c`. A 2xx answer
/// counts as success.
async fn drive<F>(common: &Common, next: F) -> anyhow::Result<Outcome>
where
    F: Fn(usize, u64) -> (&'static str, String, Option<String>) + Send + Sync + 'static,
{
    drive_checked(common, next, |_| true).await
}

/// [`drive`], where success is also `accept(body)` (a protocol whose errors answer 200).
async fn drive_checked<F>(
    common: &Common,
    next: F,
    accept: fn(&[u8]) -> bool,
) -> anyhow::Result<Outcome>
where
    F: Fn(usize, u64) -> (&'static str, String, Option<String>) + Send + Sync + 'static,
{
    let next = Arc::new(next);
    let deadline = Instant::now() + Duration::from_secs_f64(common.duration);
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..common.clients {
        let url = common.url.clone();
        let next = Arc::clone(&next);
        let errors = Arc::clone(&errors);
        tasks.push(tokio::spawn(async move {
            let mut hist =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let mut conn = Conn::open(&url).await?;
            let mut n = 0u64;
            let mut ok = 0u64;
            while Instant::now() < deadline {
                let (method, path, body) = next(c, n);
                n += 1;
                let t = Instant::now();
                let (status, reply) = conn.send(method, &path, body).await?;
                let us = t.elapsed().as_micros() as u64;
                if (200..300).contains(&status) && accept(&reply) {
                    hist.saturating_record(us.max(1));
                    ok += 1;
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<_, anyhow::Error>((hist, ok))
        }));
    }
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut ok = 0;
    for t in tasks {
        let (h, n) = t.await??;
        latency_us.add(h).expect("same bounds");
        ok += n;
    }
    Ok(Outcome {
        ok,
        errors: errors.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        latency_us,
    })
}

async fn create(common: Common, batch: usize, wire: Wire) -> anyhow::Result<()> {
    let run: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(run);
    let embs: Vec<String> = (0..common.clients)
        .map(|_| embedding_field(&mut rng, common.dims, wire.b64))
        .collect();
    let ns = common.namespace.clone();
    let query = if wire.minimal { "?return=minimal" } else { "" };
    let (dims, distinct, b64) = (common.dims, wire.distinct_vectors, wire.b64);
    let outcome = if batch == 0 {
        drive(&common, move |c, n| {
            let fresh;
            let emb = if distinct {
                fresh = fresh_embedding(run, c, n, 0, dims, b64);
                &fresh
            } else {
                &embs[c]
            };
            let body = memory_body(&ns, &format!("bench {run} client {c} memory {n}"), emb);
            ("POST", format!("/api/v1/memories{query}"), Some(body))
        })
        .await?
    } else {
        drive(&common, move |c, n| {
            let items: Vec<String> = (0..batch)
                .map(|i| {
                    let fresh;
                    let emb = if distinct {
                        fresh = fresh_embedding(run, c, n, i, dims, b64);
                        &fresh
                    } else {
                        &embs[c]
                    };
                    memory_body(
                        &ns,
                        &format!("bench {run} client {c} batch {n} memory {i}"),
                        emb,
                    )
                })
                .collect();
            (
                "POST",
                format!("/api/v1/memories/batch{query}"),
                Some(format!("{{\"memories\":[{}]}}", items.join(","))),
            )
        })
        .await?
    };
    let mut what = if batch == 0 {
        "create".to_owned()
    } else {
        format!("batch-create x{batch}")
    };
    if wire.b64 {
        what.push_str(" b64");
    }
    if wire.minimal {
        what.push_str(" minimal");
    }
    if wire.distinct_vectors {
        what.push_str(" distinct");
    }
    outcome.report(&what, batch.max(1) as u64, &common);
    Ok(())
}

/// Creates `count` memories through batch requests on `clients` connections; returns their ids.
async fn load(common: Common, count: usize, batch: usize) -> anyhow::Result<Vec<String>> {
    let run: u64 = rand::random();
    let started = Instant::now();
    let per_client = count.div_ceil(common.clients.max(1));
    let mut tasks = Vec::new();
    for c in 0..common.clients {
        let (url, ns, dims) = (common.url.clone(), common.namespace.clone(), common.dims);
        let mine = per_client.min(count.saturating_sub(c * per_client));
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(run ^ c as u64);
            let mut conn = Conn::open(&url).await?;
            let mut ids = Vec::with_capacity(mine);
            let mut done = 0;
            while done < mine {
                let n = batch.min(mine - done);
                let items: Vec<String> = (0..n)
                    .map(|i| {
                        memory_body(
                            &ns,
                            &format!("load {run} client {c} memory {}", done + i),
                            &embedding_json(&mut rng, dims),
                        )
                    })
                    .collect();
                let v = conn
                    .call(
                        "POST",
                        "/api/v1/memories/batch",
                        Some(format!("{{\"memories\":[{}]}}", items.join(","))),
                    )
                    .await?;
                for r in v["results"].as_array().context("results")? {
                    match r["id"].as_str() {
                        Some(id) => ids.push(id.to_owned()),
                        None => bail!("a batch item failed: {r}"),
                    }
                }
                done += n;
            }
            Ok::<_, anyhow::Error>(ids)
        }));
    }
    let mut ids = Vec::with_capacity(count);
    for t in tasks {
        ids.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "loaded {} memories in {secs:.1} s ({:.0}/s)",
        ids.len(),
        ids.len() as f64 / secs
    );
    Ok(ids)
}

async fn get(common: Common, preload: usize) -> anyhow::Result<()> {
    let mut load_common = common.clone();
    load_common.clients = load_common.clients.min(4);
    let ids = Arc::new(load(load_common, preload, 1000).await?);
    let seed: u64 = rand::random();
    let outcome = drive(&common, move |c, n| {
        let mut x = seed ^ ((c as u64) << 32) ^ n;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        let id = &ids[(x % ids.len() as u64) as usize];
        ("GET", format!("/api/v1/memories/{id}"), None)
    })
    .await?;
    outcome.report("get", 1, &common);
    Ok(())
}

//! `engram-bench mcp`: what MCP costs over REST on the same daemon, in one run.
//!
//! 1. Latency: one client alternates blocks of REST text searches (`POST /api/v1/search`) and
//!    MCP `recall` calls (`POST /mcp`, `tools/call`, mode text) for the same queries, so both
//!    see the same machine state; the p50 of each and their difference.
//! 2. Throughput: `--clients` MCP sessions (one connection each, `initialize` first) call
//!    `remember` back to back; every reply is checked to be a stored memory, not an error.

use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::{drive_checked, Common, Conn};

#[derive(Debug, clap::Args)]
pub struct McpArgs {
    #[command(flatten)]
    common: Common,
    /// Memories loaded before the latency phase.
    #[arg(long, default_value_t = 5_000)]
    preload: usize,
    /// Requests per latency block (REST and MCP blocks alternate).
    #[arg(long, default_value_t = 200)]
    block: usize,
    /// Latency blocks of each kind.
    #[arg(long, default_value_t = 10)]
    blocks: usize,
}

const WORDS: &[&str] = &[
    "orchard", "river", "apples", "ferry", "kiosk", "budget", "garden", "lantern", "harbour",
    "violin", "glacier", "meadow", "compass", "tyres", "sunrise", "painting",
];

fn content(run: u64, i: usize) -> String {
    let w = |k: usize| WORDS[(i * 7 + k * 3) % WORDS.len()];
    format!(
        "note {run}-{i}: the {} by the {} near the {} and {}",
        w(0),
        w(1),
        w(2),
        w(3)
    )
}

fn query(i: usize) -> String {
    format!(
        "{} {}",
        WORDS[i % WORDS.len()],
        WORDS[(i * 5 + 1) % WORDS.len()]
    )
}

fn rpc(id: u64, method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

fn initialize_body() -> String {
    rpc(
        0,
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "engram-bench", "version": "1"}}),
    )
}

/// A tool call's reply is a JSON-RPC result that is not a tool error.
fn tool_ok(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body).is_ok_and(|v| v["result"]["isError"] == false)
}

pub async fn mcp(args: McpArgs) -> anyhow::Result<()> {
    let common = args.common;
    let run: u64 = rand::random();
    let ns = format!("{}-{run}", common.namespace);

    // Preload through the batch endpoint (no vectors: the comparison is text ranking).
    let mut conn = Conn::open(&common.url).await?;
    for chunk in (0..args.preload).collect::<Vec<_>>().chunks(1000) {
        let items: Vec<Value> = chunk
            .iter()
            .map(|&i| json!({"namespace": ns, "content": content(run, i)}))
            .collect();
        crate::post_batch(&mut conn, items).await?;
    }

    // Latency: alternate blocks on one connection each.
    let mut mcp_conn = Conn::open(&common.url).await?;
    let (status, body) = mcp_conn
        .send("POST", "/mcp", Some(initialize_body()))
        .await?;
    if status != 200 {
        bail!(
            "initialize answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let new_hist = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let (mut rest_us, mut mcp_us) = (new_hist(), new_hist());
    let mut q = 0usize;
    for _ in 0..args.blocks {
        for _ in 0..args.block {
            let body = json!({"namespace": ns, "query_text": query(q), "search_type": "text",
                              "limit": 8, "include_metadata": false})
            .to_string();
            let t = Instant::now();
            let (status, reply) = conn.send("POST", "/api/v1/search", Some(body)).await?;
            rest_us.saturating_record(t.elapsed().as_micros() as u64);
            if status != 200 {
                bail!(
                    "search answered {status}: {}",
                    String::from_utf8_lossy(&reply)
                );
            }
            q += 1;
        }
        q -= args.block;
        for _ in 0..args.block {
            let body = rpc(
                q as u64,
                "tools/call",
                json!({"name": "recall", "arguments": {"query": query(q), "namespace": ns, "mode": "text", "limit": 8}}),
            );
            let t = Instant::now();
            let (status, reply) = mcp_conn.send("POST", "/mcp", Some(body)).await?;
            mcp_us.saturating_record(t.elapsed().as_micros() as u64);
            if status != 200 || !tool_ok(&reply) {
                bail!(
                    "recall answered {status}: {}",
                    String::from_utf8_lossy(&reply)
                );
            }
            q += 1;
        }
    }
    let ms = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    let (rest_p50, mcp_p50) = (ms(&rest_us, 0.5), ms(&mcp_us, 0.5));

    // Throughput: sessions (connections) that initialize, then remember back to back.
    let sessions = common.clients;
    let init_started = Instant::now();
    let mut handshakes = Vec::new();
    for _ in 0..sessions {
        let url = common.url.clone();
        handshakes.push(tokio::spawn(async move {
            let mut c = Conn::open(&url).await?;
            let (status, _) = c.send("POST", "/mcp", Some(initialize_body())).await?;
            anyhow::ensure!(status == 200, "initialize answered {status}");
            Ok::<_, anyhow::Error>(())
        }));
    }
    for h in handshakes {
        h.await??;
    }
    let init_ms = init_started.elapsed().as_secs_f64() * 1000.0;
    let ns2 = Arc::new(ns.clone());
    let outcome = drive_checked(
        &common,
        move |c, n| {
            let body = rpc(
                n,
                "tools/call",
                json!({"name": "remember", "arguments": {
                    "content": format!("mcp remember {run} session {c} call {n}"),
                    "namespace": *ns2, "importance": 0.5, "tags": ["bench"]}}),
            );
            ("POST", "/mcp".to_owned(), Some(body))
        },
        tool_ok,
    )
    .await?;
    let secs = outcome.elapsed.as_secs_f64();
    let per_second = outcome.ok as f64 / secs;
    let q2 = |p: f64| outcome.latency_us.value_at_quantile(p) as f64 / 1000.0;
    let result = json!({
        "benchmark": "mcp",
        "preload": args.preload,
        "recall_vs_search": {
            "requests_each": args.block * args.blocks,
            "rest_search_ms": {"p50": rest_p50, "p99": ms(&rest_us, 0.99)},
            "mcp_recall_ms": {"p50": mcp_p50, "p99": ms(&mcp_us, 0.99)},
            "added_p50_ms": mcp_p50 - rest_p50,
        },
        "remember": {
            "sessions": sessions, "seconds": secs, "calls_ok": outcome.ok,
            "errors": outcome.errors, "calls_per_second": per_second,
            "latency_ms": {"p50": q2(0.5), "p99": q2(0.99)},
            "initialize_all_ms": init_ms,
        },
    });
    if common.json {
        println!("{result}");
    } else {
        println!(
            "mcp recall vs REST search (text, {} each): p50 {mcp_p50:.3} ms vs {rest_p50:.3} ms (+{:.3} ms); p99 {:.3} vs {:.3}",
            args.block * args.blocks,
            mcp_p50 - rest_p50,
            ms(&mcp_us, 0.99),
            ms(&rest_us, 0.99),
        );
        println!(
            "mcp remember: sessions={sessions} ok={} errors={} {per_second:.0} calls/s latency ms p50={:.3} p99={:.3}",
            outcome.ok,
            outcome.errors,
            q2(0.5),
            q2(0.99)
        );
    }
    if outcome.errors > 0 {
        bail!("{} remember calls failed", outcome.errors);
    }
    Ok(())
}

//! `engram-bench snapshot`: what online snapshots cost the writers. Clients create memories
//! back to back for the whole run while another connection asks for a snapshot every `--every`
//! seconds. Every create's start and latency is kept, and the creates are split into those that
//! overlapped a snapshot and those that did not, from the same run: a slow write that happens
//! as often outside the snapshots as during them is the machine's, not the snapshot's.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use rand::SeedableRng;
use serde_json::{json, Value};

use crate::{embedding_json, memory_body, Common, Conn};

#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    common: Common,
    /// Seconds between the start of one snapshot and the next.
    #[arg(long, default_value_t = 10.0)]
    every: f64,
    /// Seconds of creates before the first snapshot.
    #[arg(long, default_value_t = 5.0)]
    first: f64,
    /// A write slower than this many milliseconds is counted as a stall.
    #[arg(long, default_value_t = 50.0)]
    stall_ms: f64,
    /// Creates per second across all clients, evenly paced (0: each client as fast as it can).
    /// A paced run leaves the machine idle enough that a stall the snapshot causes stands out.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
}

/// One create: start (µs since the run began) and latency (µs).
type Sample = (u64, u64);

/// Latency summary of one class of creates.
fn summarize(samples: &[Sample], window_secs: f64, stall_us: u64) -> Value {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    for &(_, us) in samples {
        h.saturating_record(us.max(1));
    }
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    let stalls = samples.iter().filter(|s| s.1 > stall_us).count();
    json!({
        "creates": samples.len(),
        "seconds": window_secs,
        "creates_per_second": samples.len() as f64 / window_secs.max(1e-9),
        "latency_ms": {"p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": h.max() as f64 / 1000.0},
        "stalls": stalls,
        "stalls_per_minute": stalls as f64 * 60.0 / window_secs.max(1e-9),
    })
}

pub async fn snapshot(args: SnapshotArgs) -> anyhow::Result<()> {
    let common = args.common;
    let started = Instant::now();
    let unix_started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let deadline = started + Duration::from_secs_f64(common.duration);
    let run: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(run);
    let mut tasks = Vec::new();
    for c in 0..common.clients {
        let url = common.url.clone();
        let ns = common.namespace.clone();
        let emb = embedding_json(&mut rng, common.dims);
        // A paced client sends its n-th create at `offset + n × interval` (or at once if late).
        let interval =
            (args.rate > 0.0).then(|| Duration::from_secs_f64(common.clients as f64 / args.rate));
        let offset = interval.map_or(Duration::ZERO, |i| {
            i.mul_f64(c as f64 / common.clients as f64)
        });
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&url).await?;
            let mut samples: Vec<Sample> = Vec::new();
            let mut errors = 0u64;
            let mut n = 0u64;
            while Instant::now() < deadline {
                if let Some(interval) = interval {
                    let due = started + offset + interval.mul_f64(n as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let body = memory_body(&ns, &format!("bench {run} client {c} memory {n}"), &emb);
                n += 1;
                let t = Instant::now();
                let (status, _) = conn.send("POST", "/api/v1/memories", Some(body)).await?;
                let us = t.elapsed().as_micros() as u64;
                if (200..300).contains(&status) {
                    samples.push(((t - started).as_micros() as u64, us));
                } else {
                    errors += 1;
                }
            }
            Ok::<_, anyhow::Error>((samples, errors))
        }));
    }

    // Snapshots: (start µs, end µs, the daemon's answer).
    let mut windows: Vec<(u64, u64, Value)> = Vec::new();
    let mut admin = Conn::open(&common.url).await?;
    let mut next = started + Duration::from_secs_f64(args.first);
    while next + Duration::from_secs(1) < deadline {
        tokio::time::sleep_until(next.into()).await;
        let t0 = Instant::now();
        let (status, reply) = admin.send("POST", "/api/v1/admin/snapshots", None).await?;
        let t1 = Instant::now();
        if status != 201 {
            bail!(
                "POST /api/v1/admin/snapshots answered {status}: {}",
                String::from_utf8_lossy(&reply)
            );
        }
        let answer: Value = serde_json::from_slice(&reply).context("snapshot answer")?;
        windows.push((
            (t0 - started).as_micros() as u64,
            (t1 - started).as_micros() as u64,
            answer,
        ));
        next += Duration::from_secs_f64(args.every);
    }

    let mut samples = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (s, e) = t.await??;
        samples.extend(s);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let overlaps = |&(start, us): &Sample| {
        windows
            .iter()
            .any(|&(w0, w1, _)| start < w1 && start + us > w0)
    };
    let (during, outside): (Vec<Sample>, Vec<Sample>) = samples.iter().partition(|s| overlaps(s));
    let snapshot_secs: f64 = windows.iter().map(|(a, b, _)| (b - a) as f64 / 1e6).sum();
    let stall_us = (args.stall_ms * 1000.0) as u64;
    // Stall episodes: slow writes whose spans overlap, merged (a stall of the log holds up every
    // writer at once).
    let mut slow: Vec<Sample> = samples.iter().copied().filter(|s| s.1 > stall_us).collect();
    slow.sort_unstable();
    let mut episodes: Vec<(u64, u64, usize)> = Vec::new();
    for (start, us) in slow {
        match episodes.last_mut() {
            Some(e) if start < e.1 => {
                e.1 = e.1.max(start + us);
                e.2 += 1;
            }
            _ => episodes.push((start, start + us, 1)),
        }
    }
    let episodes: Vec<Value> = episodes
        .iter()
        .map(|&(a, b, n)| {
            json!({
                "at_s": a as f64 / 1e6,
                "ms": (b - a) as f64 / 1000.0,
                "writes": n,
                "during_snapshot": windows.iter().any(|&(w0, w1, _)| a < w1 && b > w0),
            })
        })
        .collect();
    let report = json!({
        "benchmark": "snapshot",
        "clients": common.clients,
        "rate": args.rate,
        "seconds": elapsed,
        "errors": errors,
        "stall_ms": args.stall_ms,
        "snapshots": windows.iter().map(|(a, b, answer)| json!({
            "at_s": *a as f64 / 1e6,
            "seconds": (b - a) as f64 / 1e6,
            "files": answer["files"],
            "bytes": answer["bytes"],
        })).collect::<Vec<_>>(),
        "during_snapshots": summarize(&during, snapshot_secs, stall_us),
        "outside_snapshots": summarize(&outside, elapsed - snapshot_secs, stall_us),
        "started_unix_s": unix_started,
        "stall_episodes": episodes,
    });
    if common.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

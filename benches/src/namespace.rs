//! `engram-bench namespace`: a whole namespace out, gone, and back in, over HTTP. Against a fresh
//! daemon (`benches/scripts/namespace.sh`):
//! 1. loads `--count` memories into `--namespace` (384-d, ~200-character texts): first
//!    `--cold-percent` of them, which the tier policy then moves to cold (the script starts the
//!    daemon with second-long retention and the policy off, and this runs it), then the rest;
//!    and `--others` into another namespace (what the export and purge must not walk);
//! 2. exports the namespace (JSON lines, then zstd), timing each to its last byte;
//! 3. purges it (`DELETE …?purge=true`: the purge and the scrub of the live files) while one
//!    client creates memories in the other namespace, one at a time, timing each: what the
//!    purge costs the rest of the store;
//! 4. imports the zstd export back, timing it;
//! 5. exports again and checks the stream is the same but for the tiers (cold comes back warm).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;

use serde_json::{json, Value};

use crate::tiers::load;
use crate::{Common, Conn};

#[derive(Debug, clap::Args)]
pub struct NamespaceArgs {
    #[command(flatten)]
    common: Common,
    /// Memories in the namespace exported, purged and imported.
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    /// Memories in another namespace, left alone.
    #[arg(long, default_value_t = 100_000)]
    others: usize,
    /// Share of the namespace moved to the cold tier first.
    #[arg(long, default_value_t = 30)]
    cold_percent: usize,
    /// Export (and so import) vectors as `embedding_b64` instead of arrays of floats.
    #[arg(long)]
    base64_vectors: bool,
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// The memory lines of an export, tiers left out (an import writes cold memories to warm).
fn lines_without_tier(export: &[u8]) -> anyhow::Result<Vec<String>> {
    let text = std::str::from_utf8(export)?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("{\"id\"")) {
        let mut v: Value = serde_json::from_str(line)?;
        v.as_object_mut()
            .ok_or_else(|| anyhow::anyhow!("not an object"))?
            .remove("tier");
        out.push(v.to_string());
    }
    out.sort_unstable();
    Ok(out)
}

pub async fn namespace(args: NamespaceArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let ns = common.namespace.clone();
    let run: u64 = rand::random();
    let started = Instant::now();
    let cold = args.count * args.cold_percent / 100;
    let mut admin = Conn::open(&common.url).await?;
    if cold > 0 {
        load(common, run, cold).await?;
        // Retention is seconds long: a few policy runs move them working → warm → cold.
        for _ in 0..30 {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            admin
                .call(
                    "POST",
                    "/api/v1/admin/migrate",
                    Some(r#"{"dry_run":false}"#.to_owned()),
                )
                .await?;
            let c = admin
                .call("GET", &format!("/api/v1/namespaces/{ns}"), None)
                .await?;
            if c["tiers"]["cold"].as_u64() >= Some(cold as u64) {
                break;
            }
        }
    }
    load(common, run ^ 0xc01d, args.count - cold).await?;
    if args.others > 0 {
        let others = Common {
            namespace: format!("{ns}-others"),
            ..common.clone()
        };
        load(&others, run ^ 0x5eed, args.others).await?;
    }
    let load_ms = ms(started);
    let counts = admin
        .call("GET", &format!("/api/v1/namespaces/{ns}"), None)
        .await?;
    let client =
        engram_client::Client::new(&common.url)?.with_timeout(std::time::Duration::from_secs(3600));

    let t = Instant::now();
    let b64 = args.base64_vectors;
    let plain = client.export_namespace_with(&ns, false, b64).await?;
    let export_ms = ms(t);
    let t = Instant::now();
    let packed = client.export_namespace_with(&ns, true, b64).await?;
    let export_zstd_ms = ms(t);

    // One client writing elsewhere for as long as the purge runs.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (url, stop) = (common.url.clone(), Arc::clone(&stop));
        let others = format!("{ns}-others");
        tokio::spawn(async move {
            let mut conn = Conn::open(&url).await?;
            let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
            let mut i = 0u64;
            let began = Instant::now();
            let mut slow = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let body = json!({"namespace": others, "content": format!("written during the purge {run} {i}")});
                let t = Instant::now();
                let (status, reply) = conn
                    .send(
                        "POST",
                        "/api/v1/memories?return=minimal",
                        Some(body.to_string()),
                    )
                    .await?;
                anyhow::ensure!(
                    status == 201,
                    "a create during the purge: {status} {}",
                    String::from_utf8_lossy(&reply)
                );
                latency.record(t.elapsed().as_micros().max(1) as u64)?;
                if t.elapsed().as_millis() >= 100 {
                    // (ms into the purge, ms the create took): to line up with the purge's steps.
                    slow.push((
                        t.duration_since(began).as_millis() as u64,
                        t.elapsed().as_millis() as u64,
                    ));
                }
                i += 1;
            }
            Ok::<_, anyhow::Error>((latency, slow))
        })
    };
    let t = Instant::now();
    let purged = client.delete_namespace(&ns, true).await?;
    let purge_ms = ms(t);
    stop.store(true, Ordering::Relaxed);
    let (during, slow_creates) = writer.await??;
    anyhow::ensure!(
        purged["purged"] == json!(args.count),
        "purge answered {purged}"
    );

    let t = Instant::now();
    let imported = client
        .import_namespace(&ns, packed.to_vec(), true, "fail")
        .await?;
    let import_ms = ms(t);
    anyhow::ensure!(
        imported["imported"] == json!(args.count) && imported["complete"] == json!(true),
        "import answered {imported}"
    );
    let again = client.export_namespace_with(&ns, false, b64).await?;
    anyhow::ensure!(
        lines_without_tier(&plain)? == lines_without_tier(&again)?,
        "the namespace came back different"
    );

    let n = args.count as f64;
    let out = json!({
        "memories": args.count,
        "other_memories": args.others,
        "vectors": if b64 { "base64" } else { "float" },
        "tiers_before": counts["tiers"],
        "load_ms": load_ms,
        "export_ms": export_ms,
        "export_per_second": n / export_ms * 1000.0,
        "export_bytes": plain.len(),
        "export_zstd_ms": export_zstd_ms,
        "export_zstd_per_second": n / export_zstd_ms * 1000.0,
        "export_zstd_bytes": packed.len(),
        "purge_ms": purge_ms,
        "purge_scrub": purged["scrub"],
        "creates_during_purge": during.len(),
        "create_during_purge_p50_ms": during.value_at_quantile(0.5) as f64 / 1000.0,
        "create_during_purge_p99_ms": during.value_at_quantile(0.99) as f64 / 1000.0,
        "create_during_purge_max_ms": during.max() as f64 / 1000.0,
        "creates_over_100ms_at_ms_into_purge": slow_creates,
        "import_ms": import_ms,
        "import_per_second": n / import_ms * 1000.0,
        "round_trip_identical": true,
    });
    if common.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

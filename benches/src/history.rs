//! `engram-bench history`: what versions cost. Against a fresh daemon (start it with
//! `tier_migration.enabled=false`, as `benches/scripts/history.sh` does):
//! 1. loads `--count` memories and moves them to the warm tier;
//! 2. measures RocksDB's bytes per memory (after a flush and a full compaction);
//! 3. updates every memory until it has `--versions` versions, `--clients` at a time, timing
//!    the updates (`--kind attrs`: importance, tags and metadata change; `--kind content`: new
//!    text and a new vector each time; `--kind edit`: a phrase in the middle of the text changes
//!    and the vector is new);
//! 4. measures the bytes per memory again: the ratio is what history costs in warm bytes;
//! 5. times top-10 semantic searches of the namespace as it is and as it was before the updates
//!    (`as_of`: every memory rewound through all its versions and scored exactly), one at a
//!    time, and reports the medians.
//!
//! Run it once with the daemon's default `history.keep_versions` and once with
//! `history.keep_versions=0` for the update rate without history.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use crate::tiers::{content, flush, load, tier, vector};
use crate::{Common, Conn};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Importance, tags and metadata change; the text and vector stay.
    Attrs,
    /// New text and a new vector every version.
    Content,
    /// A correction: one bracketed phrase in the middle of the text changes every version,
    /// with a new vector.
    Edit,
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    common: Common,
    /// Memories to load.
    #[arg(long, default_value_t = 5_000)]
    count: usize,
    /// Versions each memory ends with (the first is the create).
    #[arg(long, default_value_t = 20)]
    versions: u64,
    #[arg(long, value_enum, default_value_t = Kind::Attrs)]
    kind: Kind,
}

/// RocksDB's bytes after a flush and a full compaction (the tiers report's warm bytes).
async fn warm_bytes(admin: &mut Conn) -> anyhow::Result<u64> {
    admin
        .call("POST", "/api/v1/admin/compact", Some("{}".to_owned()))
        .await?;
    flush(admin).await?;
    let t = admin.call("GET", "/api/v1/tiers", None).await?;
    Ok(tier(&t, "warm", "bytes_on_disk"))
}

fn patch(kind: Kind, run: u64, i: u64, version: u64, dims: usize) -> Value {
    match kind {
        Kind::Attrs => json!({
            "importance_score": (version % 10) as f64 / 10.0,
            "tags": ["bench", format!("v{version}")],
            "metadata": {"i": i, "source": "engram-bench history", "version": version},
        }),
        Kind::Content => {
            let text = content(run ^ version.wrapping_mul(0x9E37), i);
            json!({
                "content": format!("{text} (version {version})"),
                "embedding": vector(run ^ version, i, dims),
            })
        }
        Kind::Edit => {
            let text = content(run, i);
            let cut = text[..text.len() / 2].rfind(' ').unwrap_or(0);
            json!({
                "content": format!("{} [revised {version}]{}", &text[..cut], &text[cut..]),
                "embedding": vector(run ^ version, i, dims),
            })
        }
    }
}

pub async fn history(args: HistoryArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let run: u64 = rand::random();
    let mut admin = Conn::open(&common.url).await?;
    let empty = warm_bytes(&mut admin).await?;
    let ids = Arc::new(load(common, run, args.count).await?);
    for id in ids.iter() {
        admin
            .call(
                "PATCH",
                &format!("/api/v1/memories/{id}"),
                Some(r#"{"tier":"warm"}"#.to_owned()),
            )
            .await?;
    }
    let one = warm_bytes(&mut admin).await?;
    // A moment when every memory had its first version: a marker written after the loads.
    let marker = crate::post_batch(
        &mut admin,
        vec![json!({"namespace": "engram-bench-marker", "content": "before the updates"})],
    )
    .await?;
    let marker = admin
        .call("GET", &format!("/api/v1/memories/{}", marker[0]), None)
        .await?;
    let before_updates = marker["created_at"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no created_at in {marker}"))?
        .to_owned();

    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let updates = (args.versions.saturating_sub(1)) * ids.len() as u64;
    let mut tasks = Vec::new();
    for _ in 0..common.clients {
        let (url, ids, next) = (common.url.clone(), Arc::clone(&ids), Arc::clone(&next));
        let (kind, dims) = (args.kind, common.dims);
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&url).await?;
            loop {
                // Every memory gets version 2, then every memory version 3, …
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= updates {
                    return Ok::<_, anyhow::Error>(());
                }
                let i = n % ids.len() as u64;
                let version = 2 + n / ids.len() as u64;
                let body = patch(kind, run, i, version, dims).to_string();
                let path = format!("/api/v1/memories/{}?return=minimal", ids[i as usize]);
                let v = conn.call("PATCH", &path, Some(body)).await?;
                anyhow::ensure!(v["version"] == version, "unexpected reply {v}");
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let many = warm_bytes(&mut admin).await?;
    let search_now = median_search_ms(&mut admin, common, run, None).await?;
    let search_then = median_search_ms(&mut admin, common, run, Some(&before_updates)).await?;
    let n = ids.len() as f64;
    let per_one = one.saturating_sub(empty) as f64 / n;
    let per_many = many.saturating_sub(empty) as f64 / n;
    let out = json!({
        "kind": format!("{:?}", args.kind).to_lowercase(),
        "memories": ids.len(),
        "versions": args.versions,
        "dims": common.dims,
        "warm_bytes_per_memory_1_version": per_one.round(),
        "warm_bytes_per_memory_n_versions": per_many.round(),
        "ratio": (per_many / per_one * 100.0).round() / 100.0,
        "updates": updates,
        "updates_per_s": (updates as f64 / secs).round(),
        "clients": common.clients,
        "search_median_ms": search_now,
        "as_of_search_median_ms": search_then,
    });
    if common.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

/// The median latency of 21 top-10 semantic searches of the bench namespace, one at a time, as
/// it is or as it was at `as_of`; `None` when the past cannot be searched (its versions were not
/// kept: `history.keep_versions=0`).
async fn median_search_ms(
    conn: &mut Conn,
    common: &Common,
    run: u64,
    as_of: Option<&str>,
) -> anyhow::Result<Option<f64>> {
    let mut ms = Vec::new();
    for q in 0..21u64 {
        let mut body = json!({
            "namespace": common.namespace,
            "search_type": "semantic",
            "query_embedding": vector(run ^ 0x5EA4C8, q, common.dims),
            "limit": 10,
        });
        if let Some(at) = as_of {
            body["as_of"] = json!(at);
        }
        let started = Instant::now();
        let r = conn
            .call("POST", "/api/v1/search", Some(body.to_string()))
            .await?;
        ms.push(started.elapsed().as_secs_f64() * 1e3);
        if as_of.is_some() && r["results"].as_array().is_some_and(|a| a.is_empty()) {
            return Ok(None);
        }
        anyhow::ensure!(
            r["results"].as_array().is_some_and(|a| a.len() == 10),
            "unexpected search reply {r}"
        );
    }
    ms.sort_by(f64::total_cmp);
    Ok(Some((ms[ms.len() / 2] * 100.0).round() / 100.0))
}

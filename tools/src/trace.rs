//! `engramctl check --find-namespace`: the proof of a namespace purge.

use std::path::Path;

use anyhow::bail;
use engram_engine::trace::TraceReport;
use serde_json::json;

/// The trace of `namespace` in a stopped store (the lock is held while it is read: a running
/// daemon keeps writing, so the answer would be stale before it is printed).
fn trace(data_dir: &Path, namespace: &str, extra: &[String]) -> anyhow::Result<TraceReport> {
    if !data_dir.is_dir() {
        bail!("{} is not a directory", data_dir.display());
    }
    let _lock = engram_engine::DataDir::new(data_dir).lock()?;
    Ok(engram_engine::trace::find_namespace(
        data_dir, namespace, extra,
    )?)
}

pub fn find_namespace(
    data_dir: &Path,
    namespace: &str,
    extra: &[String],
    as_json: bool,
) -> anyhow::Result<()> {
    let report = trace(data_dir, namespace, extra)?;
    if as_json {
        let live: Vec<_> = report
            .live
            .iter()
            .map(|t| json!({"path": t.path.display().to_string(), "what": t.what}))
            .collect();
        let archived: Vec<String> = report
            .archived_wal
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let hidden: Vec<_> = report
            .hidden
            .iter()
            .map(|(cf, n)| json!({"column_family": cf, "entries": n}))
            .collect();
        println!(
            "{}",
            json!({"namespace": namespace, "live": live, "hidden": hidden,
                   "clean": report.is_clean(), "snapshots": report.snapshots,
                   "archived_wal": archived})
        );
    } else {
        for t in &report.live {
            println!("live: {} holds {}", t.path.display(), t.what);
        }
        for s in &report.snapshots {
            println!("snapshot {s} holds it");
        }
        for p in &report.archived_wal {
            println!("archived WAL {} holds it", p.display());
        }
        for (cf, n) in &report.hidden {
            println!(
                "unproven: {n} entries of RocksDB column family {cf} are deleted or overwritten \
                 but not compacted away (compact with POST /api/v1/admin/compact, then check again)"
            );
        }
        if report.is_clean() {
            println!("no trace of namespace {namespace:?} in the live data");
        }
    }
    if !report.hidden.is_empty() && report.live.is_empty() {
        bail!(
            "RocksDB holds {} entries it does not show: the proof is not complete",
            report.hidden.iter().map(|(_, n)| n).sum::<u64>()
        );
    }
    if !report.live.is_empty() {
        bail!(
            "the live data holds namespace {namespace:?} in {} place(s)",
            report.live.len()
        );
    }
    Ok(())
}

/// `engramctl scrub --namespace NS`: after a purge, the snapshots and archived WAL that still
/// hold the namespace are given up (a fresh snapshot becomes the oldest restorable moment), and
/// the proof is run again.
pub fn scrub(
    data_dir: &Path,
    namespace: &str,
    extra: &[String],
    as_json: bool,
) -> anyhow::Result<()> {
    let before = trace(data_dir, namespace, extra)?;
    if !before.is_clean() {
        bail!(
            "the live data still holds namespace {namespace:?}: purge it first \
             (DELETE /api/v1/namespaces/{namespace}?purge=true), then scrub"
        );
    }
    if before.snapshots.is_empty() && before.archived_wal.is_empty() {
        if as_json {
            println!(
                "{}",
                json!({"namespace": namespace, "snapshots_deleted": [], "archived_segments_removed": 0, "clean": true})
            );
        } else {
            println!("no snapshot or archived WAL segment holds namespace {namespace:?}");
        }
        return Ok(());
    }
    let engine = crate::transfer::open_offline(data_dir, None)?;
    let (kept, deleted, removed) = engine.forget_past()?;
    engine.close()?;
    let after = trace(data_dir, namespace, extra)?;
    let clean = after.is_clean() && after.snapshots.is_empty() && after.archived_wal.is_empty();
    if as_json {
        println!(
            "{}",
            json!({"namespace": namespace, "snapshots_deleted": deleted,
                   "archived_segments_removed": removed, "snapshot": kept.id,
                   "restorable_from": crate::backup::format_time(kept.commit_time_us),
                   "clean": clean})
        );
    } else {
        println!(
            "deleted {} snapshot(s) and {removed} archived WAL segment(s); point-in-time restore \
             now reaches back to snapshot {} ({})",
            deleted.len(),
            kept.id,
            crate::backup::format_time(kept.commit_time_us)
        );
    }
    if !clean {
        bail!(
            "namespace {namespace:?} is still held: snapshots {:?}, archived WAL {:?}",
            after.snapshots,
            after.archived_wal
        );
    }
    Ok(())
}

//! The file half of a restore: lays a snapshot's tiers and the WAL it needs out as a data
//! directory. Replaying that WAL is opening the store, which the engine does (`restore_snapshot`).

use std::fs;
use std::path::Path;

use engram_wal::{export, Lsn};

use super::{dump, SnapshotManifest};
use crate::fsutil::list_files;
use crate::layout::DataDir;
use crate::tier::working::WorkingTier;
use crate::EngineError;

/// Lays out in `target` (which must be empty or absent) the snapshot's tiers and the WAL records
/// from the snapshot and `wal_sources` after its dump started, through `to_lsn` (default: the
/// snapshot's LSN). Returns the snapshot's manifest.
pub(crate) fn lay_out(
    snapshot: &Path,
    wal_sources: &[&Path],
    target: &DataDir,
    to_lsn: Option<Lsn>,
) -> Result<SnapshotManifest, EngineError> {
    let manifest = SnapshotManifest::read(snapshot)?;
    let to = to_lsn.unwrap_or(manifest.lsn);
    if to < manifest.lsn {
        return Err(EngineError::Invalid {
            field: "to_lsn",
            message: format!("{to} is before the snapshot's LSN {}", manifest.lsn),
        });
    }
    // Every file used is checked against the manifest before anything is written.
    let damaged = super::verify_snapshot(snapshot);
    if !damaged.is_empty() {
        return Err(EngineError::Corrupt {
            path: snapshot.to_path_buf(),
            detail: format!(
                "{} damaged file(s), nothing restored: {}",
                damaged.len(),
                damaged.join("; ")
            ),
        });
    }
    let root = target.root();
    if root.exists()
        && fs::read_dir(root)
            .map_err(|e| EngineError::io(root, e))?
            .next()
            .is_some()
    {
        return Err(EngineError::Invalid {
            field: "target_dir",
            message: format!("{} is not empty", root.display()),
        });
    }
    fs::create_dir_all(root).map_err(|e| EngineError::io(root, e))?;
    // The RocksDB checkpoint is copied (RocksDB will write to it); the vector index too, if the
    // snapshot has one (opening reconciles it with the warm tier); cold segments are immutable
    // and linked when the filesystem allows.
    let trees = [
        ("warm", target.warm(), false),
        ("search", target.search(), false),
        ("cold", target.cold(), true),
    ];
    for (name, dst_dir, link) in trees {
        let src_dir = snapshot.join(name);
        if !src_dir.is_dir() {
            continue;
        }
        for rel in list_files(&src_dir)? {
            let (src, dst) = (src_dir.join(&rel), dst_dir.join(&rel));
            if let Some(parent) = dst.parent() {
                fs::create_dir_all(parent).map_err(|e| EngineError::io(parent, e))?;
            }
            if !(link && fs::hard_link(&src, &dst).is_ok()) {
                fs::copy(&src, &dst).map_err(|e| EngineError::io(&dst, e))?;
            }
        }
    }
    // Working tier: rebuilt from the dump; its checkpoint is where the dump started.
    {
        let (working, _) = WorkingTier::open(
            &target.working(),
            manifest.dimensions,
            manifest.working_capacity,
            manifest.working_heap_bytes,
        )?;
        dump::read_working_dump(&snapshot.join(dump::WORKING_DUMP_FILE), |m| working.put(&m))?;
        working.checkpoint(manifest.replay_from)?;
    }
    // WAL: everything after the dump started, through the target.
    if to > manifest.replay_from {
        let snapshot_wal = snapshot.join("wal");
        let mut sources: Vec<&Path> = vec![&snapshot_wal];
        sources.extend_from_slice(wal_sources);
        export::export_range(
            &sources,
            manifest.replay_from.next(),
            to,
            &target.wal(),
            false,
        )?;
    }
    Ok(manifest)
}

//! The engine's side of snapshots: when one is taken (checkpoints held off meanwhile), which
//! parts of the store it reads, retention, and restore, which lays out a snapshot's files and
//! opens the result to replay the WAL.

use std::fs;
use std::path::Path;

use engram_wal::Lsn;

use super::{Engine, Inner};
use crate::config::EngineConfig;
use crate::layout::DataDir;
use crate::snapshot::{
    self, list_snapshots, remove_snapshot_dir, RestoreReport, SnapshotManifest, SnapshotParts,
    MANIFEST_FILE,
};
use crate::EngineError;

impl Engine {
    /// Creates a snapshot in `dest` (which must not exist) while writes go on. See the docs of
    /// the `snapshot` module for what it holds and why it is consistent.
    pub fn snapshot(&self, dest: &Path, id: &str) -> Result<SnapshotManifest, EngineError> {
        self.inner.snapshot_into(dest, id)
    }

    /// Creates a snapshot under `<data_dir>/snapshots/<id>`, `id` a UUIDv7 (sorts by time).
    pub fn create_snapshot(&self) -> Result<SnapshotManifest, EngineError> {
        self.inner.create_snapshot()
    }

    /// The snapshots under `<data_dir>/snapshots`, oldest first.
    pub fn list_snapshots(&self) -> Result<Vec<SnapshotManifest>, EngineError> {
        Ok(list_snapshots(&self.inner.layout.snapshots())?
            .into_iter()
            .map(|(_, m)| m)
            .collect())
    }

    /// Gives up the restorable past before a fresh snapshot: takes one, deletes every older
    /// snapshot, and removes the archived WAL segments that only restores from those needed.
    /// Point-in-time restore then reaches back to the new snapshot only. For data that must be
    /// forgotten (a purged namespace) and is still held by older snapshots and the archive:
    /// their records cannot be cut out in place, since every later record's LSN and the WAL's
    /// continuity depend on them. Returns the new snapshot, the ids deleted and the segments
    /// removed.
    pub fn forget_past(&self) -> Result<(SnapshotManifest, Vec<String>, usize), EngineError> {
        let kept = self.create_snapshot()?;
        let mut deleted = Vec::new();
        for (dir, m) in list_snapshots(&self.inner.layout.snapshots())? {
            if m.id != kept.id && m.lsn <= kept.lsn {
                remove_snapshot_dir(&dir)?;
                deleted.push(m.id);
            }
        }
        // Every archived segment, whatever its age, that ends before the new snapshot's replay.
        let all = std::time::SystemTime::now() + std::time::Duration::from_secs(86_400);
        let removed = self
            .inner
            .wal
            .prune_archive(all, self.inner.oldest_snapshot_replay_start()?)?;
        Ok((kept, deleted, removed))
    }

    /// Deletes snapshot `id`; `false` if there is none.
    pub fn delete_snapshot(&self, id: &str) -> Result<bool, EngineError> {
        if uuid::Uuid::try_parse(id).is_err() {
            return Ok(false);
        }
        let dir = self.inner.layout.snapshots().join(id);
        if !dir.join(MANIFEST_FILE).is_file() {
            return Ok(false);
        }
        remove_snapshot_dir(&dir)?;
        Ok(true)
    }
}

impl Inner {
    pub(super) fn create_snapshot(&self) -> Result<SnapshotManifest, EngineError> {
        let id = uuid::Uuid::now_v7().to_string();
        let dir = self.layout.snapshots();
        fs::create_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
        self.snapshot_into(&dir.join(&id), &id)
    }

    /// Keeps the newest `snapshots_kept` snapshots.
    pub(super) fn prune_snapshots(&self) -> Result<(), EngineError> {
        let all = list_snapshots(&self.layout.snapshots())?;
        let excess = all.len().saturating_sub(self.config.snapshots_kept.max(1));
        for (dir, _) in all.into_iter().take(excess) {
            remove_snapshot_dir(&dir)?;
        }
        Ok(())
    }

    fn snapshot_into(&self, dest: &Path, id: &str) -> Result<SnapshotManifest, EngineError> {
        // No checkpoint may trim WAL segments the snapshot still has to copy.
        let _no_checkpoint = self.checkpoint_lock.lock();
        let parts = SnapshotParts {
            layout: &self.layout,
            working: &self.working,
            warm: &self.warm,
            cold: &self.cold,
            applied_lsn: &self.applied_lsn,
            dimensions: self.config.dimensions,
            working_capacity: self.config.working_capacity,
            working_heap_bytes: self.config.working_heap_bytes,
        };
        snapshot::take(&parts, dest, id)
    }

    /// The first LSN that restoring from the oldest snapshot replays (`Lsn::MAX` when there is
    /// no snapshot): archived WAL from there on must be kept, however old.
    pub(super) fn oldest_snapshot_replay_start(&self) -> Result<Lsn, EngineError> {
        Ok(list_snapshots(&self.layout.snapshots())?
            .first()
            .map_or(Lsn::MAX, |(_, m)| m.replay_from.next()))
    }
}

/// Builds a data directory in `target` (which must be empty or absent) holding the state at
/// `to_lsn` (default: the snapshot's LSN): the snapshot's tiers, then WAL records from the
/// snapshot and `wal_sources` replayed through `to_lsn`. Offline: `target` is then a store
/// `engramd` can open.
pub fn restore_snapshot(
    snapshot_dir: &Path,
    wal_sources: &[&Path],
    target: &Path,
    to_lsn: Option<Lsn>,
) -> Result<RestoreReport, EngineError> {
    let manifest = snapshot::lay_out(snapshot_dir, wal_sources, &DataDir::new(target), to_lsn)?;
    let mut config = EngineConfig::new(target);
    config.search_structures = false;
    config.dimensions = manifest.dimensions;
    config.working_capacity = manifest.working_capacity;
    config.working_heap_bytes = manifest.working_heap_bytes;
    let (engine, report) = Engine::open(config)?;
    let restored_lsn = report.last_lsn;
    engine.close()?;
    Ok(RestoreReport {
        snapshot_lsn: manifest.lsn,
        restored_lsn,
        records_replayed: report.records_replayed,
        replay_time: report.took,
    })
}

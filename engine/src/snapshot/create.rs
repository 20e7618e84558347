//! Taking a snapshot from the parts of a running store (see the module docs of `snapshot`).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use engram_wal::{durable, export, AtomicLsn, Lsn};

use super::{dump, list_snapshots, SnapshotManifest, MANIFEST_FILE};
use crate::fsutil::{file_crc_resting, list_files, HalfCore};
use crate::layout::DataDir;
use crate::search::hnsw;
use crate::tier::cold::ColdTier;
use crate::tier::warm::WarmTier;
use crate::tier::working::WorkingTier;
use crate::EngineError;

/// What a snapshot reads from the running store. The caller holds checkpoints off for as long
/// as [`take`] runs, so no WAL segment it still has to copy is trimmed meanwhile.
pub(crate) struct SnapshotParts<'a> {
    pub layout: &'a DataDir,
    pub working: &'a WorkingTier,
    pub warm: &'a WarmTier,
    pub cold: &'a ColdTier,
    /// The store's applied LSN: read when the dump starts and again once the files are made.
    pub applied_lsn: &'a AtomicLsn,
    pub dimensions: usize,
    pub working_capacity: usize,
    pub working_heap_bytes: u64,
}

/// Takes a snapshot into `dest` (which must not exist) on the calling thread, at its normal
/// priority but resting (see [`HalfCore`]): it dumps the working tier, checkpoints RocksDB,
/// links the cold segments, copies the WAL written meanwhile, then checksums the new files and
/// writes the manifest last.
pub(crate) fn take(
    parts: &SnapshotParts<'_>,
    dest: &Path,
    id: &str,
) -> Result<SnapshotManifest, EngineError> {
    let started = std::time::Instant::now();
    if dest.exists() {
        return Err(EngineError::Invalid {
            field: "snapshot",
            message: format!("{} already exists", dest.display()),
        });
    }
    let tmp = dest.with_extension("partial");
    let made = snapshot_files(parts, &tmp)?;
    let copied = started.elapsed();
    let (files, read_bytes, known_bytes) = checksum_files(&tmp, &parts.layout.snapshots())?;
    let manifest = SnapshotManifest {
        id: id.to_owned(),
        lsn: made.lsn,
        commit_time_us: made.commit_time_us,
        replay_from: made.replay_from,
        created_at_us: crate::model::now_us(),
        dimensions: parts.dimensions,
        working_capacity: parts.working_capacity,
        working_heap_bytes: parts.working_heap_bytes,
        files,
    };
    let text = serde_json::to_vec_pretty(&manifest.to_json()).expect("manifest serializes");
    durable::write_atomic(&tmp.join(MANIFEST_FILE), &text).map_err(|e| EngineError::io(&tmp, e))?;
    durable::rename_durable(&tmp, dest).map_err(|e| EngineError::io(dest, e))?;
    tracing::info!(
        id,
        lsn = manifest.lsn.get(),
        files = manifest.files.len(),
        checksummed_bytes = read_bytes,
        checksums_reused_bytes = known_bytes,
        working_dump_ms = made.working_dump.as_millis() as u64,
        rocksdb_checkpoint_ms = made.rocksdb_checkpoint.as_millis() as u64,
        files_ms = copied.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        "snapshot taken"
    );
    Ok(manifest)
}

/// The snapshot's files in `tmp` (replaced if it exists): the working dump, the RocksDB
/// checkpoint, the cold segments, the vector index and the WAL records written meanwhile.
fn snapshot_files(parts: &SnapshotParts<'_>, tmp: &Path) -> Result<SnapshotFiles, EngineError> {
    if tmp.exists() {
        fs::remove_dir_all(tmp).map_err(|e| EngineError::io(tmp, e))?;
    }
    fs::create_dir_all(tmp).map_err(|e| EngineError::io(tmp, e))?;
    let replay_from = parts.applied_lsn.load(Ordering::Acquire);
    let started = std::time::Instant::now();
    dump::write_working_dump(parts.working, &tmp.join(dump::WORKING_DUMP_FILE))?;
    let working_dump = started.elapsed();
    parts.warm.rocksdb_checkpoint_to(&tmp.join("warm"))?;
    let rocksdb_checkpoint = started.elapsed() - working_dump;
    // Cold segments are immutable: hard links, with a manifest for `replay_from` (the cold
    // state linked holds every cold change up to it).
    parts.cold.link_into(&tmp.join("cold"), replay_from)?;
    link_vector_index(&parts.layout.search(), &tmp.join("search"));
    let lsn = parts.applied_lsn.load(Ordering::Acquire);
    let mut commit_time_us = 0;
    let wal_dirs = [parts.layout.wal(), parts.layout.archive()];
    let wal_dirs: Vec<&Path> = wal_dirs.iter().map(PathBuf::as_path).collect();
    if lsn > replay_from {
        let report =
            export::export_range(&wal_dirs, replay_from.next(), lsn, &tmp.join("wal"), true)?;
        commit_time_us = report.to_commit_time_us;
    } else if lsn > Lsn::ZERO {
        commit_time_us = commit_time_of(&wal_dirs, lsn)?;
    }
    Ok(SnapshotFiles {
        replay_from,
        lsn,
        commit_time_us,
        working_dump,
        rocksdb_checkpoint,
    })
}

/// Commit time of record `lsn`, looked up in the segments under `wal_dirs` (newest first);
/// 0 if no segment holds it any more.
fn commit_time_of(wal_dirs: &[&Path], lsn: Lsn) -> Result<i64, EngineError> {
    for (index, path) in export::collect_segments(wal_dirs)?.into_iter().rev() {
        let mut found = None;
        let info = export::scan_file(index, &path, |r, _, _| {
            if r.lsn == lsn {
                found = Some(r.commit_time_us);
            }
        })?;
        if let Some(t) = found {
            return Ok(t);
        }
        if info.lsns.is_some_and(|(first, _)| first < lsn) {
            break;
        }
    }
    Ok(0)
}

/// What `snapshot_files` made.
struct SnapshotFiles {
    replay_from: Lsn,
    lsn: Lsn,
    /// Commit time of record `lsn` (0 for an empty store).
    commit_time_us: i64,
    working_dump: std::time::Duration,
    rocksdb_checkpoint: std::time::Duration,
}

/// (path, bytes, CRC32) of every file under `dir`, taking the checksums of files shared with the
/// newest snapshot under `snapshots` from its manifest; and the bytes read and not read.
#[expect(
    clippy::type_complexity,
    reason = "a one-off (files, bytes read, bytes reused) triple"
)]
fn checksum_files(
    dir: &Path,
    snapshots: &Path,
) -> Result<(Vec<(String, u64, u32)>, u64, u64), EngineError> {
    let known = KnownChecksums::of_newest(snapshots);
    let mut rest = HalfCore::new();
    let (mut read_bytes, mut known_bytes) = (0, 0);
    let mut files = Vec::new();
    for rel in list_files(dir)? {
        let path = dir.join(&rel);
        let (bytes, crc) = match known.lookup(&rel, &path) {
            Some(k) => {
                known_bytes += k.0;
                k
            }
            None => {
                let k = file_crc_resting(&path, &mut rest)?;
                read_bytes += k.0;
                k
            }
        };
        files.push((rel, bytes, crc));
    }
    Ok((files, read_bytes, known_bytes))
}

/// Checksums recorded by the newest earlier snapshot, for the files a new one shares with it.
///
/// A file of the new snapshot that is the very same inode as the file an earlier snapshot
/// recorded under the same path is a hard link to one immutable file (an SST, a cold segment, a
/// saved vector index), so its size and CRC are the ones recorded then; reading it again would
/// cost a snapshot of 1M memories about 2 GB of I/O. The inodes are compared while both links
/// exist, so the number cannot have been reused. A bit that flipped in the shared file since is
/// then caught by `verify` of either snapshot, rather than written into the new manifest.
struct KnownChecksums {
    dir: PathBuf,
    files: std::collections::HashMap<String, (u64, u32)>,
}

impl KnownChecksums {
    /// Those of the newest snapshot under `snapshots` (none if there is none, or it is
    /// unreadable: then every file is read).
    fn of_newest(snapshots: &Path) -> KnownChecksums {
        let newest = list_snapshots(snapshots)
            .ok()
            .and_then(|all| all.into_iter().last());
        match newest {
            Some((dir, manifest)) => KnownChecksums {
                dir,
                files: manifest
                    .files
                    .into_iter()
                    .map(|(rel, bytes, crc)| (rel, (bytes, crc)))
                    .collect(),
            },
            None => KnownChecksums {
                dir: PathBuf::new(),
                files: Default::default(),
            },
        }
    }

    /// (bytes, CRC32) of `path` (at `rel` in the new snapshot) if it is known.
    fn lookup(&self, rel: &str, path: &Path) -> Option<(u64, u32)> {
        use std::os::unix::fs::MetadataExt;
        let &(bytes, crc) = self.files.get(rel)?;
        let ours = fs::metadata(path).ok()?;
        let theirs = fs::metadata(self.dir.join(rel)).ok()?;
        (ours.dev() == theirs.dev() && ours.ino() == theirs.ino() && ours.len() == bytes)
            .then_some((bytes, crc))
    }
}

/// Hard-links the last saved vector index into a snapshot. Optional: a restore without it (or
/// with one that does not match) rebuilds the graph from the warm tier, so any failure here
/// (the indexer replacing the files meanwhile) just leaves it out.
fn link_vector_index(src: &Path, dest: &Path) {
    if let Err(e) = hnsw::link_saved(src, dest) {
        tracing::info!(error = %e, "snapshot taken without the vector index; a restore rebuilds it");
        let _ = fs::remove_dir_all(dest);
    }
}

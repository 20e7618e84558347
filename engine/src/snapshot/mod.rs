//! Snapshots and restore.
//!
//! A snapshot directory holds a consistent image of the store at LSN `lsn`, built while writes go
//! on (no writer waits for it):
//! - `working.dump` — every working-tier memory, read one at a time after noting `replay_from`
//!   (the applied LSN then). Each memory is consistent; the set is "fuzzy" (memories changed
//!   while it was read may be newer than `replay_from`).
//! - `warm/` — a RocksDB checkpoint (hard links to immutable SST files); it records its own
//!   applied LSN, at least `replay_from`.
//! - `cold/` — hard links to the immutable cold segments and a cold manifest for `replay_from`.
//! - `wal/` — the WAL records from `replay_from + 1` through `lsn`.
//! - `MANIFEST.json` — written last (temp → fsync → rename), with every file's size and CRC32.
//!
//! Every WAL operation sets the state of one memory, so replaying `replay_from + 1 ..= lsn` over
//! the fuzzy dump yields exactly the state at `lsn`, as crash recovery does. Restoring to a later
//! LSN replays further records from archived WAL segments.
//!
//! This module owns the snapshot format (the manifest, the working dump) and the file work of
//! taking and restoring one; it knows the tiers, not the engine. The engine decides when a
//! snapshot is taken (holding checkpoints off meanwhile) and opens a restored store to replay it.

mod create;
mod dump;
mod restore;

use std::fs;
use std::path::{Path, PathBuf};

use engram_wal::{durable, Lsn};
use serde_json::{json, Value};

use crate::EngineError;

pub use crate::fsutil::{file_crc, list_files};

pub(crate) use create::{take, SnapshotParts};
pub(crate) use restore::lay_out;

/// Name of the manifest inside a snapshot directory; its presence means the snapshot is whole.
pub const MANIFEST_FILE: &str = "MANIFEST.json";
/// Version of the snapshot layout.
pub const SNAPSHOT_FORMAT_VERSION: u64 = 1;

/// A snapshot's manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotManifest {
    pub id: String,
    /// The state the snapshot restores to.
    pub lsn: Lsn,
    /// Commit time (µs) of record `lsn` (0 for an empty store).
    pub commit_time_us: i64,
    /// The working dump was started at this applied LSN; replay starts after it.
    pub replay_from: Lsn,
    pub created_at_us: i64,
    pub dimensions: usize,
    pub working_capacity: usize,
    pub working_heap_bytes: u64,
    /// (path relative to the snapshot directory, bytes, CRC32).
    pub files: Vec<(String, u64, u32)>,
}

impl SnapshotManifest {
    /// The manifest as JSON, with `manifest_crc32` over the rest of it (compact form), so a
    /// damaged manifest is caught even where it still parses.
    pub fn to_json(&self) -> Value {
        let mut v = self.body_json();
        let crc = crc32fast::hash(&serde_json::to_vec(&v).expect("JSON values serialize"));
        v["manifest_crc32"] = json!(crc);
        v
    }

    fn body_json(&self) -> Value {
        json!({
            "format_version": SNAPSHOT_FORMAT_VERSION,
            "id": self.id,
            "lsn": self.lsn,
            "commit_time_us": self.commit_time_us,
            "replay_from": self.replay_from,
            "created_at_us": self.created_at_us,
            "dimensions": self.dimensions,
            "working_capacity": self.working_capacity,
            "working_heap_bytes": self.working_heap_bytes,
            "files": self.files.iter().map(|(p, b, c)| json!({"path": p, "bytes": b, "crc32": c})).collect::<Vec<_>>(),
        })
    }

    pub fn from_json(v: &Value, path: &Path) -> Result<SnapshotManifest, EngineError> {
        let bad = |what: &str| EngineError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("manifest field {what} is missing or malformed"),
        };
        let u = |k: &str| v[k].as_u64().ok_or_else(|| bad(k));
        if u("format_version")? != SNAPSHOT_FORMAT_VERSION {
            return Err(bad("format_version"));
        }
        let mut files = Vec::new();
        for f in v["files"].as_array().ok_or_else(|| bad("files"))? {
            files.push((
                f["path"]
                    .as_str()
                    .ok_or_else(|| bad("files.path"))?
                    .to_owned(),
                f["bytes"].as_u64().ok_or_else(|| bad("files.bytes"))?,
                u32::try_from(f["crc32"].as_u64().ok_or_else(|| bad("files.crc32"))?)
                    .map_err(|_| bad("files.crc32"))?,
            ));
        }
        Ok(SnapshotManifest {
            id: v["id"].as_str().ok_or_else(|| bad("id"))?.to_owned(),
            lsn: Lsn::new(u("lsn")?),
            commit_time_us: v["commit_time_us"]
                .as_i64()
                .ok_or_else(|| bad("commit_time_us"))?,
            replay_from: Lsn::new(u("replay_from")?),
            created_at_us: v["created_at_us"]
                .as_i64()
                .ok_or_else(|| bad("created_at_us"))?,
            dimensions: usize::try_from(u("dimensions")?).map_err(|_| bad("dimensions"))?,
            working_capacity: usize::try_from(u("working_capacity")?)
                .map_err(|_| bad("working_capacity"))?,
            working_heap_bytes: u("working_heap_bytes")?,
            files,
        })
    }

    /// Reads `dir/MANIFEST.json`.
    pub fn read(dir: &Path) -> Result<SnapshotManifest, EngineError> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = fs::read(&path).map_err(|e| EngineError::io(&path, e))?;
        SnapshotManifest::parse(&bytes, &path)
    }

    /// Parses the bytes of the manifest at `path`, checking `manifest_crc32` when present.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<SnapshotManifest, EngineError> {
        let mut v: Value = serde_json::from_slice(bytes).map_err(|e| EngineError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("manifest is not JSON: {e}"),
        })?;
        let stored = v.as_object_mut().and_then(|o| o.remove("manifest_crc32"));
        let manifest = SnapshotManifest::from_json(&v, path)?;
        match stored.map(|c| c.as_u64()) {
            // Written before manifests carried their own checksum.
            None => {}
            Some(Some(crc))
                if u64::from(crc32fast::hash(
                    &serde_json::to_vec(&manifest.body_json()).expect("JSON values serialize"),
                )) == crc => {}
            Some(_) => {
                return Err(EngineError::Corrupt {
                    path: path.to_path_buf(),
                    detail: "manifest checksum mismatch".to_owned(),
                })
            }
        }
        Ok(manifest)
    }
}

/// Removes a snapshot directory: the manifest first, so a crash half-way leaves a directory that
/// no longer claims to be a whole snapshot.
pub(crate) fn remove_snapshot_dir(dir: &Path) -> Result<(), EngineError> {
    fs::remove_file(dir.join(MANIFEST_FILE)).map_err(|e| EngineError::io(dir, e))?;
    if let Some(parent) = dir.parent() {
        durable::sync_dir(parent).map_err(|e| EngineError::io(parent, e))?;
    }
    fs::remove_dir_all(dir).map_err(|e| EngineError::io(dir, e))
}

/// Problems found by [`verify_snapshot`], one line each (empty: the snapshot is whole).
pub fn verify_snapshot(dir: &Path) -> Vec<String> {
    let manifest = match SnapshotManifest::read(dir) {
        Ok(m) => m,
        Err(e) => return vec![e.to_string()],
    };
    let mut problems = Vec::new();
    for (rel, bytes, crc) in &manifest.files {
        let path = dir.join(rel);
        match file_crc(&path) {
            Ok((b, c)) if b == *bytes && c == *crc => {}
            Ok((b, c)) => problems.push(format!(
                "{}: expected {bytes} bytes with CRC32 {crc:#010x}, found {b} bytes with {c:#010x}",
                path.display()
            )),
            Err(e) => problems.push(e.to_string()),
        }
    }
    problems
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub snapshot_lsn: Lsn,
    pub restored_lsn: Lsn,
    pub records_replayed: u64,
    /// Time spent opening the restored store, WAL replay included.
    pub replay_time: std::time::Duration,
}

/// Snapshot directories under `dir` that have a manifest, oldest LSN first.
pub fn list_snapshots(dir: &Path) -> Result<Vec<(PathBuf, SnapshotManifest)>, EngineError> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    for entry in fs::read_dir(dir).map_err(|e| EngineError::io(dir, e))? {
        let path = entry.map_err(|e| EngineError::io(dir, e))?.path();
        if path.join(MANIFEST_FILE).is_file() {
            out.push((path.clone(), SnapshotManifest::read(&path)?));
        }
    }
    out.sort_by_key(|(_, m)| (m.lsn, m.created_at_us));
    Ok(out)
}

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

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use engram_wal::{durable, export, frame, Lsn};
use serde_json::{json, Value};

use crate::codec;
use crate::engine::{Engine, EngineConfig};
use crate::working::WorkingTier;
use crate::EngineError;

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
            lsn: u("lsn")?,
            commit_time_us: v["commit_time_us"]
                .as_i64()
                .ok_or_else(|| bad("commit_time_us"))?,
            replay_from: u("replay_from")?,
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
        let text = fs::read(&path).map_err(|e| EngineError::io(&path, e))?;
        let mut v: Value = serde_json::from_slice(&text).map_err(|e| EngineError::Corrupt {
            path: path.clone(),
            detail: format!("manifest is not JSON: {e}"),
        })?;
        let stored = v.as_object_mut().and_then(|o| o.remove("manifest_crc32"));
        let manifest = SnapshotManifest::from_json(&v, &path)?;
        match stored.map(|c| c.as_u64()) {
            // Written before manifests carried their own checksum.
            None => {}
            Some(Some(crc))
                if u64::from(crc32fast::hash(
                    &serde_json::to_vec(&manifest.body_json()).expect("JSON values serialize"),
                )) == crc => {}
            Some(_) => {
                return Err(EngineError::Corrupt {
                    path,
                    detail: "manifest checksum mismatch".to_owned(),
                })
            }
        }
        Ok(manifest)
    }
}

/// Every regular file under `root`, as paths relative to it, sorted.
pub fn list_files(root: &Path) -> Result<Vec<String>, EngineError> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), EngineError> {
        for entry in fs::read_dir(dir).map_err(|e| EngineError::io(dir, e))? {
            let entry = entry.map_err(|e| EngineError::io(dir, e))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| EngineError::io(&path, e))?;
            if kind.is_dir() {
                walk(root, &path, out)?;
            } else if kind.is_file() {
                let rel = path.strip_prefix(root).expect("walk stays under root");
                out.push(rel.to_string_lossy().into_owned());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

/// Size and CRC32 of a file, read in 1 MiB blocks.
pub fn file_crc(path: &Path) -> Result<(u64, u32), EngineError> {
    file_crc_resting(path, &mut HalfCore::unlimited())
}

/// Keeps a loop of CPU-bound work on the daemon's side of half a core: after every
/// [`HalfCore::STRETCH`] of work, `step` sleeps as long as the work took. A snapshot dumps the
/// working tier and checksums gigabytes while writes are served on the same two cores; at the
/// lowest priority instead it could be starved for many seconds, or be preempted while holding
/// a lock writers need.
struct HalfCore {
    since: std::time::Instant,
    limited: bool,
}

impl HalfCore {
    const STRETCH: std::time::Duration = std::time::Duration::from_millis(10);

    fn new() -> HalfCore {
        HalfCore {
            since: std::time::Instant::now(),
            limited: true,
        }
    }

    fn unlimited() -> HalfCore {
        HalfCore {
            limited: false,
            ..HalfCore::new()
        }
    }

    fn step(&mut self) {
        if self.limited {
            let worked = self.since.elapsed();
            if worked >= Self::STRETCH {
                std::thread::sleep(worked);
                self.since = std::time::Instant::now();
            }
        }
    }
}

fn file_crc_resting(path: &Path, rest: &mut HalfCore) -> Result<(u64, u32), EngineError> {
    use std::io::Read;
    let mut f = File::open(path).map_err(|e| EngineError::io(path, e))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| EngineError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
        rest.step();
    }
    Ok((total, hasher.finalize()))
}

/// Writes the working-tier dump: one WAL-framed record per memory (LSN = the memory's LSN,
/// payload = its image with the embedding).
fn write_working_dump(working: &WorkingTier, path: &Path) -> Result<u64, EngineError> {
    let file = File::create(path).map_err(|e| EngineError::io(path, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut frame_buf = Vec::with_capacity(4096);
    let mut image = Vec::with_capacity(4096);
    let mut count = 0;
    let mut rest = HalfCore::new();
    for id in working.ids() {
        rest.step();
        let Some(memory) = working.get(&id)? else {
            continue; // left the tier since the ids were listed: the WAL replays that
        };
        image.clear();
        codec::encode_memory(&mut image, &memory, true);
        frame_buf.clear();
        frame::encode(&mut frame_buf, memory.lsn.max(1), 0, &image);
        out.write_all(&frame_buf)
            .map_err(|e| EngineError::io(path, e))?;
        count += 1;
    }
    let file = out
        .into_inner()
        .map_err(|e| EngineError::io(path, e.into_error()))?;
    // About 170 MB at the default capacity: written back in steps (see `sync_gently`).
    durable::sync_gently(&file, 3).map_err(|e| EngineError::io(path, e))?;
    Ok(count)
}

/// Reads a working-tier dump back, calling `f` for each memory.
fn read_working_dump(
    path: &Path,
    mut f: impl FnMut(crate::Memory) -> Result<(), EngineError>,
) -> Result<(), EngineError> {
    let bytes = fs::read(path).map_err(|e| EngineError::io(path, e))?;
    let mut offset = 0;
    while offset < bytes.len() {
        match frame::decode(&bytes[offset..]) {
            Ok(frame::Decoded::Record(r, len)) => {
                let memory =
                    codec::decode_memory(r.payload, r.lsn).map_err(|e| EngineError::Corrupt {
                        path: path.to_path_buf(),
                        detail: format!("record at offset {offset}: {e}"),
                    })?;
                f(memory)?;
                offset += len;
            }
            Ok(frame::Decoded::End) => break,
            Err(e) => {
                return Err(EngineError::Corrupt {
                    path: path.to_path_buf(),
                    detail: format!("bad record at offset {offset}: {e:?}"),
                })
            }
        }
    }
    Ok(())
}

impl Engine {
    /// Creates a snapshot in `dest` (which must not exist) while writes go on. See the module
    /// docs for what it holds and why it is consistent.
    pub fn snapshot(&self, dest: &Path, id: &str) -> Result<SnapshotManifest, EngineError> {
        self.inner().snapshot_into(dest, id)
    }

    /// Creates a snapshot under `<data_dir>/snapshots/<id>`, `id` a UUIDv7 (sorts by time).
    pub fn create_snapshot(&self) -> Result<SnapshotManifest, EngineError> {
        self.inner().create_snapshot()
    }

    /// The snapshots under `<data_dir>/snapshots`, oldest first.
    pub fn list_snapshots(&self) -> Result<Vec<SnapshotManifest>, EngineError> {
        Ok(list_snapshots(&self.inner().snapshots_dir())?
            .into_iter()
            .map(|(_, m)| m)
            .collect())
    }

    /// Deletes snapshot `id`; `false` if there is none.
    pub fn delete_snapshot(&self, id: &str) -> Result<bool, EngineError> {
        if uuid::Uuid::try_parse(id).is_err() {
            return Ok(false);
        }
        let dir = self.inner().snapshots_dir().join(id);
        if !dir.join(MANIFEST_FILE).is_file() {
            return Ok(false);
        }
        remove_snapshot_dir(&dir)?;
        Ok(true)
    }
}

/// Removes a snapshot directory: the manifest first, so a crash half-way leaves a directory that
/// no longer claims to be a whole snapshot.
fn remove_snapshot_dir(dir: &Path) -> Result<(), EngineError> {
    fs::remove_file(dir.join(MANIFEST_FILE)).map_err(|e| EngineError::io(dir, e))?;
    if let Some(parent) = dir.parent() {
        durable::sync_dir(parent).map_err(|e| EngineError::io(parent, e))?;
    }
    fs::remove_dir_all(dir).map_err(|e| EngineError::io(dir, e))
}

impl crate::engine::Inner {
    pub(crate) fn create_snapshot(&self) -> Result<SnapshotManifest, EngineError> {
        let id = uuid::Uuid::now_v7().to_string();
        let dir = self.snapshots_dir();
        fs::create_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
        self.snapshot_into(&dir.join(&id), &id)
    }

    /// Keeps the newest `snapshots_kept` snapshots.
    pub(crate) fn prune_snapshots(&self) -> Result<(), EngineError> {
        let all = list_snapshots(&self.snapshots_dir())?;
        let excess = all
            .len()
            .saturating_sub(self.config().snapshots_kept.max(1));
        for (dir, _) in all.into_iter().take(excess) {
            remove_snapshot_dir(&dir)?;
        }
        Ok(())
    }

    /// Takes the snapshot on the calling thread, at its normal priority but resting (see
    /// [`HalfCore`]): it dumps the working tier, checkpoints RocksDB, links the cold segments,
    /// copies the WAL written meanwhile, then checksums the new files.
    pub(crate) fn snapshot_into(
        &self,
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
        // No checkpoint may trim WAL segments the snapshot still has to copy.
        let _no_checkpoint = self.checkpoint_guard();
        let tmp = dest.with_extension("partial");
        let made = self.snapshot_files(&tmp)?;
        let copied = started.elapsed();
        let (files, read_bytes, known_bytes) = checksum_files(&tmp, &self.snapshots_dir())?;
        let config = self.config();
        let manifest = SnapshotManifest {
            id: id.to_owned(),
            lsn: made.lsn,
            commit_time_us: made.commit_time_us,
            replay_from: made.replay_from,
            created_at_us: crate::model::now_us(),
            dimensions: config.dimensions,
            working_capacity: config.working_capacity,
            working_heap_bytes: config.working_heap_bytes,
            files,
        };
        let text = serde_json::to_vec_pretty(&manifest.to_json()).expect("manifest serializes");
        durable::write_atomic(&tmp.join(MANIFEST_FILE), &text)
            .map_err(|e| EngineError::io(&tmp, e))?;
        durable::rename_durable(&tmp, dest).map_err(|e| EngineError::io(dest, e))?;
        tracing::info!(
            id,
            lsn = manifest.lsn,
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
    fn snapshot_files(&self, tmp: &Path) -> Result<SnapshotFiles, EngineError> {
        if tmp.exists() {
            fs::remove_dir_all(tmp).map_err(|e| EngineError::io(tmp, e))?;
        }
        fs::create_dir_all(tmp).map_err(|e| EngineError::io(tmp, e))?;
        let replay_from = self.applied_lsn();
        let started = std::time::Instant::now();
        write_working_dump(self.working(), &tmp.join("working.dump"))?;
        let working_dump = started.elapsed();
        self.warm().checkpoint_to(&tmp.join("warm"))?;
        let rocksdb_checkpoint = started.elapsed() - working_dump;
        // Cold segments are immutable: hard links, with a manifest for `replay_from` (the cold
        // state linked holds every cold change up to it).
        self.cold().link_into(&tmp.join("cold"), replay_from)?;
        link_vector_index(&self.config().data_dir.join("search"), &tmp.join("search"));
        let lsn = self.applied_lsn();
        let mut commit_time_us = 0;
        if lsn > replay_from {
            let wal_dir = self.config().data_dir.join("wal");
            let archive = self.config().data_dir.join("archive");
            let report = export::export_range(
                &[&wal_dir, &archive],
                replay_from + 1,
                lsn,
                &tmp.join("wal"),
                true,
            )?;
            commit_time_us = report.to_commit_time_us;
        } else if lsn > 0 {
            commit_time_us = self.commit_time_of(lsn)?;
        }
        Ok(SnapshotFiles {
            replay_from,
            lsn,
            commit_time_us,
            working_dump,
            rocksdb_checkpoint,
        })
    }
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
#[allow(clippy::type_complexity)]
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
    let linked = (|| -> std::io::Result<()> {
        let keys = fs::read(src.join(crate::search::hnsw::KEYS_FILE))?;
        let generation = crate::search::hnsw::keys_generation(&keys)
            .ok_or_else(|| std::io::Error::other("unreadable keys file"))?;
        let index = crate::search::hnsw::index_file_name(generation);
        fs::create_dir_all(dest)?;
        fs::hard_link(src.join(&index), dest.join(&index))?;
        durable::write_atomic(&dest.join(crate::search::hnsw::KEYS_FILE), &keys)
    })();
    if let Err(e) = linked {
        tracing::info!(error = %e, "snapshot taken without the vector index; a restore rebuilds it");
        let _ = fs::remove_dir_all(dest);
    }
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

/// Builds a data directory in `target` (which must be empty or absent) holding the state at
/// `to_lsn` (default: the snapshot's LSN): the snapshot's tiers, then WAL records from the
/// snapshot and `wal_sources` replayed through `to_lsn`. Offline: `target` is then a store
/// `engramd` can open.
pub fn restore_snapshot(
    snapshot: &Path,
    wal_sources: &[&Path],
    target: &Path,
    to_lsn: Option<Lsn>,
) -> Result<RestoreReport, EngineError> {
    let manifest = SnapshotManifest::read(snapshot)?;
    let to = to_lsn.unwrap_or(manifest.lsn);
    if to < manifest.lsn {
        return Err(EngineError::Invalid {
            field: "to_lsn",
            message: format!("{to} is before the snapshot's LSN {}", manifest.lsn),
        });
    }
    if target.exists()
        && fs::read_dir(target)
            .map_err(|e| EngineError::io(target, e))?
            .next()
            .is_some()
    {
        return Err(EngineError::Invalid {
            field: "target_dir",
            message: format!("{} is not empty", target.display()),
        });
    }
    fs::create_dir_all(target).map_err(|e| EngineError::io(target, e))?;
    // Warm tier: copy the RocksDB checkpoint.
    let warm_src = snapshot.join("warm");
    let warm_dst = target.join("warm");
    for rel in list_files(&warm_src)? {
        let dst = warm_dst.join(&rel);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(|e| EngineError::io(parent, e))?;
        }
        fs::copy(warm_src.join(&rel), &dst).map_err(|e| EngineError::io(&dst, e))?;
    }
    // Vector index, if the snapshot has one (opening reconciles it with the warm tier).
    let search_src = snapshot.join("search");
    if search_src.is_dir() {
        let search_dst = target.join("search");
        fs::create_dir_all(&search_dst).map_err(|e| EngineError::io(&search_dst, e))?;
        for rel in list_files(&search_src)? {
            let dst = search_dst.join(&rel);
            fs::copy(search_src.join(&rel), &dst).map_err(|e| EngineError::io(&dst, e))?;
        }
    }
    // Cold tier: the segments and their manifest (immutable files: linked when possible).
    let cold_src = snapshot.join("cold");
    if cold_src.is_dir() {
        let cold_dst = target.join("cold");
        fs::create_dir_all(&cold_dst).map_err(|e| EngineError::io(&cold_dst, e))?;
        for rel in list_files(&cold_src)? {
            let (from, dst) = (cold_src.join(&rel), cold_dst.join(&rel));
            if fs::hard_link(&from, &dst).is_err() {
                fs::copy(&from, &dst).map_err(|e| EngineError::io(&dst, e))?;
            }
        }
    }
    // Working tier: rebuild from the dump; its checkpoint is where the dump started.
    {
        let (working, _) = WorkingTier::open(
            &target.join("working"),
            manifest.dimensions,
            manifest.working_capacity,
            manifest.working_heap_bytes,
        )?;
        read_working_dump(&snapshot.join("working.dump"), |m| working.put(&m))?;
        working.checkpoint(manifest.replay_from)?;
    }
    // WAL: everything after the dump started, through the target.
    if to > manifest.replay_from {
        let snapshot_wal = snapshot.join("wal");
        let mut sources: Vec<&Path> = vec![&snapshot_wal];
        sources.extend_from_slice(wal_sources);
        export::export_range(
            &sources,
            manifest.replay_from + 1,
            to,
            &target.join("wal"),
            false,
        )?;
    }
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

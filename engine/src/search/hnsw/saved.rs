//! The saved graph: `vectors-<generation>.usearch` (usearch's own serialization) and the keys
//! file naming it (`vectors.keys`: generation, dimensions, quantization and each key's id and
//! vector checksum), written after it; loading both, and linking them into a snapshot.

use std::path::{Path, PathBuf};

use usearch::{Index, IndexOptions, ScalarKind};
use uuid::Uuid;

use super::Shared;
use crate::idhash::IdMap;

const KEYS_FILE: &str = "vectors.keys";
const KEYS_MAGIC: &[u8; 8] = b"ENGRMHNS";
const KEYS_VERSION: u32 = 1;

/// A saved graph's write-back pauses this many times as long as each step took.
const GENTLE_IDLE: u32 = 3;

fn index_file_name(generation: u64) -> String {
    format!("vectors-{generation:016}.usearch")
}

fn index_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(index_file_name(generation))
}

/// The generation a keys file names (its header only; the body is checked at load).
fn keys_generation(keys: &[u8]) -> Option<u64> {
    (keys.len() >= 20 && &keys[..8] == KEYS_MAGIC)
        .then(|| u64::from_le_bytes(keys[12..20].try_into().expect("8 bytes")))
}

/// Hard-links the last graph saved in `src` into `dest` (created), with a copy of its keys
/// file: the snapshot's view of the vector index. The graph file is immutable once saved (each
/// save writes a new generation), so the link cannot change under the snapshot.
pub(crate) fn link_saved(src: &Path, dest: &Path) -> std::io::Result<()> {
    let keys = std::fs::read(src.join(KEYS_FILE))?;
    let generation =
        keys_generation(&keys).ok_or_else(|| std::io::Error::other("unreadable keys file"))?;
    let index = index_file_name(generation);
    std::fs::create_dir_all(dest)?;
    std::fs::hard_link(src.join(&index), dest.join(&index))?;
    engram_wal::durable::write_atomic(&dest.join(KEYS_FILE), &keys)
}

type Loaded = (Index, IdMap<u64, (Uuid, u32)>);

/// Reads the keys file and the graph it names. `Ok(None)` when nothing was saved.
pub(super) fn load(dir: &Path, options: &IndexOptions) -> Result<Option<Loaded>, String> {
    let keys_path = dir.join(KEYS_FILE);
    let bytes = match std::fs::read(&keys_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", keys_path.display())),
    };
    let bad = |what: &str| format!("{}: {what}", keys_path.display());
    if bytes.len() < 36 || &bytes[..8] != KEYS_MAGIC {
        return Err(bad("not a keys file"));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(tail.try_into().expect("4 bytes")) {
        return Err(bad("checksum mismatch"));
    }
    let u32_at = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    if u32_at(8) != KEYS_VERSION {
        return Err(bad("unknown version"));
    }
    let generation = u64_at(12);
    let dimensions = u32_at(20) as usize;
    let quantization = body[24];
    let count = u64_at(25) as usize;
    if dimensions != options.dimensions || quantization != quantization_code(options.quantization) {
        return Err(bad("saved with other dimensions or quantization"));
    }
    const ENTRY: usize = 8 + 16 + 4;
    if body.len() != 33 + count * ENTRY {
        return Err(bad("length does not match the key count"));
    }
    let mut indexed = IdMap::with_capacity_and_hasher(count, Default::default());
    for e in body[33..].chunks_exact(ENTRY) {
        let key = u64::from_le_bytes(e[..8].try_into().expect("8 bytes"));
        let id = Uuid::from_slice(&e[8..24]).map_err(|_| bad("bad id"))?;
        let crc = u32::from_le_bytes(e[24..].try_into().expect("4 bytes"));
        indexed.insert(key, (id, crc));
    }
    let path = index_path(dir, generation);
    let index = Index::new(options).map_err(|e| e.to_string())?;
    let path_str = path.to_str().ok_or_else(|| bad("path is not UTF-8"))?;
    index
        .load(path_str)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if index.size() != indexed.len() {
        return Err(format!(
            "{} holds {} vectors, the keys file {}",
            path.display(),
            index.size(),
            indexed.len()
        ));
    }
    Ok(Some((index, indexed)))
}

fn quantization_code(kind: ScalarKind) -> u8 {
    match kind {
        ScalarKind::F32 => 1,
        ScalarKind::BF16 => 2,
        // 3 was an i8 graph of usearch's own casts, 4 one of codes scaled per vector walked by
        // cosine: both refused, so the graph is rebuilt as one of codes on a common scale
        // walked by inner product. That scale (`stored_scale`) is part of what 5 means: a graph
        // of codes on another scale needs a code of its own.
        ScalarKind::I8 => 5,
        _ => 0,
    }
}

/// Saves the graph under a new generation, then the keys file naming it; removes older ones.
pub(super) fn save(shared: &Shared) -> Result<(), String> {
    let started = std::time::Instant::now();
    let generation = u64::try_from(crate::model::now_us()).unwrap_or(0);
    let path = index_path(&shared.dir, generation);
    let tmp = path.with_extension("usearch.tmp");
    let tmp_str = tmp.to_str().ok_or("index path is not UTF-8")?.to_owned();
    let indexed = {
        let index = shared.index.read();
        index
            .save(&tmp_str)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        shared.indexed.read().clone()
    };
    // A graph of 1M vectors is over 1 GB: written back in steps, so WAL syncs are not queued
    // behind all of it.
    std::fs::File::open(&tmp)
        .and_then(|f| engram_wal::durable::sync_gently(&f, GENTLE_IDLE))
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    engram_wal::durable::rename_durable(&tmp, &path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut body = Vec::with_capacity(33 + indexed.len() * 28 + 4);
    body.extend_from_slice(KEYS_MAGIC);
    body.extend_from_slice(&KEYS_VERSION.to_le_bytes());
    body.extend_from_slice(&generation.to_le_bytes());
    body.extend_from_slice(
        &u32::try_from(shared.dimensions)
            .expect("dimensions are bounded")
            .to_le_bytes(),
    );
    body.push(quantization_code(shared.options.quantization));
    body.extend_from_slice(&(indexed.len() as u64).to_le_bytes());
    for (key, (id, crc)) in &indexed {
        body.extend_from_slice(&key.to_le_bytes());
        body.extend_from_slice(id.as_bytes());
        body.extend_from_slice(&crc.to_le_bytes());
    }
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    let keys_path = shared.dir.join(KEYS_FILE);
    engram_wal::durable::write_atomic(&keys_path, &body)
        .map_err(|e| format!("{}: {e}", keys_path.display()))?;
    if let Ok(entries) = std::fs::read_dir(&shared.dir) {
        for entry in entries.flatten() {
            let p = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if p != path && name.starts_with("vectors-") {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    tracing::info!(
        vectors = indexed.len(),
        bytes = std::fs::metadata(&path).map_or(0, |m| m.len()),
        took_ms = started.elapsed().as_millis() as u64,
        "vector index saved"
    );
    Ok(())
}

//! Finding a namespace's traces in a stopped data directory, byte by byte: the proof behind a
//! namespace purge (`engramctl check --find-namespace`).
//!
//! What counts as a trace: the namespace as the codec writes it inside every memory image and
//! operation (a little-endian u32 length, then the name), a RocksDB key of the namespace
//! (`namespace 0x00 …`), a cold segment entry of the namespace, and any extra string asked for
//! (e.g. a text the namespace held). Files that may be compressed are read through their
//! format: RocksDB's keys and values through a read-only RocksDB, cold segments entry by entry
//! (dead entries too). Every other file is read raw, whole, past any logical end.

use std::path::{Path, PathBuf};

use aho_corasick::AhoCorasick;

use crate::layout::DataDir;
use crate::EngineError;

/// Where a trace was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub path: PathBuf,
    /// What matched: `namespace`, `key` (a RocksDB key of the namespace), `entry` (a cold
    /// segment entry of it), or the extra string.
    pub what: String,
}

/// The traces of one namespace in a data directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceReport {
    /// In the live data: the WAL's active segments, the working tier, RocksDB, cold segments,
    /// the vector index. Empty after a purge.
    pub live: Vec<Trace>,
    /// Snapshots (by id) still holding it.
    pub snapshots: Vec<String>,
    /// Archived WAL segments still holding it.
    pub archived_wal: Vec<PathBuf>,
    /// RocksDB entries of column families that can hold a namespace's data which are deleted
    /// or overwritten but not compacted away: RocksDB does not show them, so they cannot be
    /// checked (column family, how many). A compaction (the purge's own, or
    /// `POST /api/v1/admin/compact`) removes them; until then the proof is not complete.
    pub hidden: Vec<(String, u64)>,
}

impl TraceReport {
    /// Nothing of the namespace in the live data, and nothing left unread.
    pub fn is_clean(&self) -> bool {
        self.live.is_empty() && self.hidden.is_empty()
    }
}

/// Column families that hold no namespace's data (access counters, the applied LSN): their
/// overwritten entries need no compaction for the proof.
const NO_NAMESPACE_DATA: [&str; 3] = ["default", "access", "meta"];

struct Needles {
    namespace: String,
    finder: AhoCorasick,
    names: Vec<String>,
}

impl Needles {
    fn new(namespace: &str, extra: &[String]) -> Result<Needles, EngineError> {
        let len = u32::try_from(namespace.len()).unwrap_or(u32::MAX);
        let mut encoded = len.to_le_bytes().to_vec();
        encoded.extend_from_slice(namespace.as_bytes());
        let mut patterns: Vec<Vec<u8>> = vec![encoded];
        let mut names = vec!["namespace".to_owned()];
        for e in extra.iter().filter(|e| !e.is_empty()) {
            patterns.push(e.as_bytes().to_vec());
            names.push(e.clone());
        }
        let finder = AhoCorasick::new(&patterns).map_err(|e| EngineError::Config(e.to_string()))?;
        Ok(Needles {
            namespace: namespace.to_owned(),
            finder,
            names,
        })
    }

    fn find(&self, bytes: &[u8]) -> Option<&str> {
        self.finder
            .find(bytes)
            .map(|m| self.names[m.pattern().as_usize()].as_str())
    }

    fn key_prefix(&self) -> Vec<u8> {
        let mut k = self.namespace.as_bytes().to_vec();
        k.push(0);
        k
    }
}

/// Looks for `namespace` (and each of `extra`) in every file of `data_dir`, which must not be
/// open by a daemon.
pub fn find_namespace(
    data_dir: &Path,
    namespace: &str,
    extra: &[String],
) -> Result<TraceReport, EngineError> {
    let needles = Needles::new(namespace, extra)?;
    let layout = DataDir::new(data_dir);
    let mut report = TraceReport::default();
    report.live = scan_store(
        data_dir,
        &needles,
        &[layout.snapshots(), layout.archive()],
        Some(&mut report.hidden),
    )?;
    if let Ok(entries) = std::fs::read_dir(layout.snapshots()) {
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        for dir in dirs {
            if !scan_store(&dir, &needles, &[], None)?.is_empty() {
                let id = dir.file_name().map(|n| n.to_string_lossy().into_owned());
                report.snapshots.extend(id);
            }
        }
    }
    for path in files(&layout.archive())? {
        if raw(&path, &needles)?.is_some() {
            report.archived_wal.push(path);
        }
    }
    Ok(report)
}

/// The traces in one store's directory (the data directory or a snapshot), leaving out `skip`.
fn scan_store(
    dir: &Path,
    needles: &Needles,
    skip: &[PathBuf],
    hidden: Option<&mut Vec<(String, u64)>>,
) -> Result<Vec<Trace>, EngineError> {
    let warm = dir.join("warm");
    let cold = dir.join("cold");
    let mut out = Vec::new();
    for path in files(dir)? {
        if skip.iter().any(|s| path.starts_with(s)) {
            continue;
        }
        let what = if path.starts_with(&warm) && path.extension().is_some_and(|e| e == "sst") {
            None // read through RocksDB below
        } else if path.starts_with(&cold) && is_segment(&path) {
            cold_entries(&path, needles)?
        } else {
            raw(&path, needles)?
        };
        if let Some(what) = what {
            out.push(Trace { path, what });
        }
    }
    if warm.join("CURRENT").exists() {
        out.extend(rocksdb_traces(&warm, needles, hidden)?);
    }
    Ok(out)
}

fn is_segment(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "cold")
}

fn files(dir: &Path) -> Result<Vec<PathBuf>, EngineError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(EngineError::io(dir, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| EngineError::io(dir, e))?.path();
        if path.is_dir() {
            out.extend(files(&path)?);
        } else {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn raw(path: &Path, needles: &Needles) -> Result<Option<String>, EngineError> {
    let bytes = std::fs::read(path).map_err(|e| EngineError::io(path, e))?;
    Ok(needles.find(&bytes).map(str::to_owned))
}

/// A cold segment, entry by entry (dead ones too: a segment keeps them until rewritten).
fn cold_entries(path: &Path, needles: &Needles) -> Result<Option<String>, EngineError> {
    let segment = crate::tier::cold::segment::Segment::open(path)?;
    let mut found = None;
    segment.for_each(|m| {
        if found.is_none() {
            if m.namespace == needles.namespace {
                found = Some("entry".to_owned());
            } else if let Some(what) = needles
                .find(m.content.as_bytes())
                .or_else(|| needles.find(m.metadata_json.as_bytes()))
            {
                found = Some(what.to_owned());
            }
        }
        Ok(())
    })?;
    Ok(found)
}

/// Every key and value of every column family, through a read-only RocksDB (which reads the
/// compressed blocks of its tables). What RocksDB cannot show (entries deleted or overwritten
/// and not compacted away) is counted into `hidden`: the tables' entries, tombstones
/// included, against the keys an iteration sees.
fn rocksdb_traces(
    warm: &Path,
    needles: &Needles,
    hidden: Option<&mut Vec<(String, u64)>>,
) -> Result<Vec<Trace>, EngineError> {
    let rocks = |e: rocksdb::Error| EngineError::Corrupt {
        path: warm.to_path_buf(),
        detail: e.to_string(),
    };
    let opts = rocksdb::Options::default();
    let names = rocksdb::DB::list_cf(&opts, warm).map_err(rocks)?;
    let db = rocksdb::DB::open_cf_for_read_only(&opts, warm, &names, false).map_err(rocks)?;
    let prefix = needles.key_prefix();
    let mut out = Vec::new();
    let mut visible: Vec<(String, u64)> = Vec::new();
    for name in &names {
        let Some(cf) = db.cf_handle(name) else {
            continue; // listed, so always there
        };
        let mut it = db.raw_iterator_cf(&cf);
        it.seek_to_first();
        let mut keys = 0u64;
        let mut found = None;
        while it.valid() {
            keys += 1;
            let key = it.key().unwrap_or_default();
            let value = it.value().unwrap_or_default();
            if found.is_none() {
                found = if key.starts_with(&prefix) {
                    Some("key")
                } else {
                    needles.find(key).or_else(|| needles.find(value))
                };
            }
            it.next();
        }
        it.status().map_err(rocks)?;
        if let Some(what) = found {
            out.push(Trace {
                path: warm.join(format!("<column family {name}>")),
                what: what.to_owned(),
            });
        }
        visible.push((name.clone(), keys));
    }
    if let Some(hidden) = hidden {
        let files = db.live_files().map_err(rocks)?;
        for (name, keys) in visible {
            if NO_NAMESPACE_DATA.contains(&name.as_str()) {
                continue;
            }
            let entries: u64 = files
                .iter()
                .filter(|f| f.column_family_name == name)
                .map(|f| f.num_entries)
                .sum();
            if entries > keys {
                hidden.push((name, entries - keys));
            }
        }
    }
    Ok(out)
}

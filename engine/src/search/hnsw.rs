//! The warm tier's HNSW index (usearch, ordered by cosine), kept by one indexer thread.
//!
//! Appliers never wait for the graph: they put the new vector in the `lagging` set (scanned
//! exactly by every search) and queue a job; the indexer adds it, records which vector checksum
//! the graph holds for the key, and drops it from `lagging`. A search accepts a graph hit only if
//! the key's checksum matches the memory's current one, so an updated or deleted memory never
//! matches through a stale vector.
//!
//! The graph is saved (temp file, fsync, rename, directory fsync) after enough changes and at
//! close, with a keys file naming the generation and every key's id and checksum. At open it is
//! loaded and reconciled against the warm tier's persisted attributes: missing or changed
//! vectors are queued again, keys of memories that left are removed. A missing or damaged index
//! is rebuilt the same way from RocksDB.
//!
//! usearch needs one search context per concurrent thread (`reserve_capacity_and_threads`), so
//! searches take a permit; growing capacity takes the write lock, excluding adds and searches.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};
use usearch::ffi::Matches;
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};
use uuid::Uuid;

use crate::fsutil::dir_bytes;
use crate::idhash::IdMap;
use crate::EngineError;

mod saved;
pub(crate) use saved::link_saved;
use saved::{load, save};

/// Upserts gathered into one round (one capacity check and one `indexed` update per round).
const ADD_ROUND: usize = 512;

/// How vectors are stored in the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    F32,
    BF16,
    I8,
}

impl Quantization {
    pub fn parse(s: &str) -> Option<Quantization> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Some(Quantization::F32),
            "bf16" => Some(Quantization::BF16),
            "i8" => Some(Quantization::I8),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Quantization::F32 => "f32",
            Quantization::BF16 => "bf16",
            Quantization::I8 => "i8",
        }
    }

    fn scalar_kind(self) -> ScalarKind {
        match self {
            Quantization::F32 => ScalarKind::F32,
            Quantization::BF16 => ScalarKind::BF16,
            Quantization::I8 => ScalarKind::I8,
        }
    }
}

/// The graph key of a memory: the low 64 bits of its id (random in a UUIDv7). Two ids sharing
/// a key is possible in principle; the second stays in the exactly-scanned lagging set.
pub(crate) fn label(id: &Uuid) -> u64 {
    let b = id.as_bytes();
    u64::from_le_bytes(b[8..].try_into().expect("8 bytes"))
}

/// A vector as the graph is given it. usearch would cast f32 to i8 itself as
/// `trunc(127·x/‖x‖)`, which leaves a unit vector of 384 dimensions three or four bits per
/// component (recall@10 0.78–0.81 at 100k); an i8 graph is handed Engram's own codes instead.
///
/// Stored vectors are unit vectors times one scale for the whole graph ([`stored_scale`]), so
/// the graph walks by the plain inner product of the codes (usearch's `ip`, one product per
/// pair) and still orders by cosine: the angular kernel it used before (codes scaled per vector)
/// computed three products per pair. A query keeps a scale of its own (its largest component at
/// ±127): that scale is the same for every candidate, so it changes no order, and it is divided
/// out of the distances handed back.
enum GraphVector<'a> {
    F32(&'a [f32]),
    /// Codes, and the cosine one unit of their inner product with a stored vector's codes is.
    I8(Vec<i8>, f32),
}

impl<'a> GraphVector<'a> {
    /// A vector to store.
    fn stored(v: &'a [f32], options: &IndexOptions) -> GraphVector<'a> {
        if options.quantization != ScalarKind::I8 {
            return GraphVector::F32(v);
        }
        let scale = stored_scale(options.dimensions);
        let n = crate::vector::norm(v);
        let per = if n > 0.0 { scale / n } else { 0.0 };
        let codes = v
            .iter()
            .map(|x| (x * per).round().clamp(-127.0, 127.0) as i8)
            .collect();
        GraphVector::I8(codes, 1.0 / (scale * scale))
    }

    /// A vector to search by.
    fn query(v: &'a [f32], options: &IndexOptions) -> GraphVector<'a> {
        if options.quantization != ScalarKind::I8 {
            return GraphVector::F32(v);
        }
        let (step, codes) = crate::vector::quantize(v);
        let n = crate::vector::norm(v);
        let unit = if n > 0.0 {
            step / (n * stored_scale(options.dimensions))
        } else {
            0.0
        };
        GraphVector::I8(codes, unit)
    }

    /// usearch's distance as a cosine distance (`1 − cos`): an `ip` distance is `1 − Σ a·b`.
    fn cosine_distance(&self, distance: f32) -> f32 {
        match self {
            GraphVector::F32(_) => distance,
            GraphVector::I8(_, unit) => 1.0 - (1.0 - distance) * unit,
        }
    }

    fn add(&self, index: &Index, key: u64) -> Result<(), String> {
        match self {
            GraphVector::F32(v) => index.add(key, v),
            GraphVector::I8(c, _) => index.add(key, c.as_slice()),
        }
        .map_err(|e| e.to_string())
    }

    fn search(&self, index: &Index, count: usize) -> Result<Matches, String> {
        match self {
            GraphVector::F32(v) => index.search(v, count),
            GraphVector::I8(c, _) => index.search(c.as_slice(), count),
        }
        .map_err(|e| e.to_string())
    }

    fn filtered_search(
        &self,
        index: &Index,
        count: usize,
        filter: impl Fn(u64) -> bool,
    ) -> Result<Matches, String> {
        match self {
            GraphVector::F32(v) => index.filtered_search(v, count, filter),
            GraphVector::I8(c, _) => index.filtered_search(c.as_slice(), count, filter),
        }
        .map_err(|e| e.to_string())
    }
}

/// What a unit vector is multiplied by before rounding to i8 codes in the graph. A code must
/// fit in ±127, so the scale is set by the largest component it must hold: 0.4 (all-MiniLM-L6-v2
/// on the LoCoMo texts: median 0.159, largest 0.223 of 600), or 4/√dimensions when that is more,
/// up to 1 (a unit vector of few dimensions may be nearly one axis). A larger component is
/// clipped to ±127: that vector then looks farther from everything than it is while the graph
/// is walked. Precision is not what limits the scale: 10^5 clustered vectors of 384 dimensions
/// gave the same recall@10 (0.996–0.997 re-scoring 30 at ef 64) with the scale at 212, 317 or
/// 423, and 0.993 as cosine over codes scaled per vector.
fn stored_scale(dimensions: usize) -> f32 {
    let largest = (4.0 / (dimensions.max(1) as f32).sqrt()).clamp(0.4, 1.0);
    127.0 / largest
}

enum Job {
    Upsert {
        id: Uuid,
        crc: u32,
        vector: Arc<[f32]>,
    },
    Forget {
        id: Uuid,
    },
    Save(mpsc::SyncSender<Result<(), String>>),
    /// Start again from an empty graph.
    Clear,
}

/// A counting semaphore for usearch's per-thread search contexts.
struct Permits {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Permits {
    fn acquire(&self) -> PermitGuard<'_> {
        let mut free = self.free.lock();
        while *free == 0 {
            self.cv.wait(&mut free);
        }
        *free -= 1;
        PermitGuard(self)
    }
}

struct PermitGuard<'a>(&'a Permits);

impl Drop for PermitGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock() += 1;
        self.0.cv.notify_one();
    }
}

/// A vector not yet in the graph: its checksum and values.
type Lagging = (u32, Arc<[f32]>);

struct Shared {
    dimensions: usize,
    dir: PathBuf,
    options: IndexOptions,
    threads: usize,
    save_after_changes: u64,
    index: RwLock<Index>,
    /// Key → (id, checksum of the vector the graph holds).
    indexed: RwLock<IdMap<u64, (Uuid, u32)>>,
    /// Warm vectors not yet in the graph (or whose key is taken), scanned exactly.
    lagging: RwLock<IdMap<Uuid, Lagging>>,
    changes_since_save: AtomicU64,
    permits: Permits,
    /// Set at close: jobs still queued after this moment are dropped, not done.
    close_by: Mutex<Option<std::time::Instant>>,
}

impl Shared {
    /// Past the close deadline: queued adds and removals are dropped. The saved keys file names
    /// exactly what the graph holds, so the next open queues the dropped vectors again and
    /// removes the keys of memories gone (`reconcile`); a shutdown never waits for a backlog
    /// that can be minutes long after a bulk load.
    fn closing(&self) -> bool {
        self.close_by
            .lock()
            .is_some_and(|by| std::time::Instant::now() >= by)
    }
}

/// How long a close keeps indexing what is queued before it drops the rest.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The HNSW index and its indexer thread.
pub struct Hnsw {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Hnsw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hnsw")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

fn usearch_err(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Index(format!("{what}: {e}"))
}

fn io_err(path: &Path, e: std::io::Error) -> EngineError {
    EngineError::io(path, e)
}

impl Hnsw {
    /// Opens the saved index in `dir` (or starts empty) and starts the indexer thread.
    pub(crate) fn open(
        dir: &Path,
        dimensions: usize,
        config: &super::SearchConfig,
    ) -> Result<Hnsw, EngineError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let options = index_options(dimensions, config);
        let threads = config.threads.max(1);
        let (index, indexed) = match load(dir, &options) {
            Ok(Some(loaded)) => loaded,
            Ok(None) => (new_index(&options)?, IdMap::default()),
            Err(e) => {
                tracing::warn!(error = %e, "vector index not loaded; rebuilding it from the warm tier");
                (new_index(&options)?, IdMap::default())
            }
        };
        let capacity = (index.size() + index.size() / 4).max(1024);
        // One context per searcher, plus the indexer and a spare.
        index
            .reserve_capacity_and_threads(capacity, threads + 2)
            .map_err(|e| usearch_err("reserve", e))?;
        let shared = Arc::new(Shared {
            dimensions,
            dir: dir.to_path_buf(),
            options,
            threads,
            save_after_changes: config.save_after_changes.max(1),
            index: RwLock::new(index),
            indexed: RwLock::new(indexed),
            lagging: RwLock::new(IdMap::default()),
            changes_since_save: AtomicU64::new(0),
            permits: Permits {
                free: Mutex::new(threads),
                cv: Condvar::new(),
            },
            close_by: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel();
        let worker_shared = Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name("engram-indexer".to_owned())
            .spawn(move || indexer(&worker_shared, &rx))
            .map_err(|e| io_err(Path::new("<thread>"), e))?;
        Ok(Hnsw {
            shared,
            tx: Mutex::new(Some(tx)),
            worker: Mutex::new(Some(worker)),
        })
    }

    /// An empty graph with no indexer and no files: offline opens, which track nothing.
    pub(crate) fn detached(
        dimensions: usize,
        config: &super::SearchConfig,
    ) -> Result<Hnsw, EngineError> {
        let options = index_options(dimensions, config);
        let index = new_index(&options)?;
        Ok(Hnsw {
            shared: Arc::new(Shared {
                dimensions,
                dir: PathBuf::new(),
                options,
                threads: 1,
                save_after_changes: u64::MAX,
                index: RwLock::new(index),
                indexed: RwLock::new(IdMap::default()),
                lagging: RwLock::new(IdMap::default()),
                changes_since_save: AtomicU64::new(0),
                permits: Permits {
                    free: Mutex::new(1),
                    cv: Condvar::new(),
                },
                close_by: Mutex::new(None),
            }),
            tx: Mutex::new(None),
            worker: Mutex::new(None),
        })
    }

    fn send(&self, job: Job) {
        if let Some(tx) = self.tx.lock().as_ref() {
            // The indexer only stops at close, after the last apply.
            let _ = tx.send(job);
        }
    }

    /// A warm memory's vector is now `vector` (checksum `crc`).
    pub(crate) fn upsert(&self, id: Uuid, crc: u32, vector: Arc<[f32]>) {
        self.shared
            .lagging
            .write()
            .insert(id, (crc, Arc::clone(&vector)));
        self.send(Job::Upsert { id, crc, vector });
    }

    /// The memory has no warm vector any more.
    pub(crate) fn forget(&self, id: Uuid) {
        self.shared.lagging.write().remove(&id);
        self.send(Job::Forget { id });
    }

    /// Empties the graph (and what waits to enter it), and saves it empty.
    pub(crate) fn clear(&self) {
        self.shared.lagging.write().clear();
        self.send(Job::Clear);
    }

    /// Brings the graph in line with the warm tier's attributes after open: vectors missing or
    /// changed are queued (read with `vector_of`), keys of memories gone are removed.
    pub(crate) fn reconcile(
        &self,
        warm: &HashMap<Uuid, u32>,
        mut vector_of: impl FnMut(&Uuid) -> Result<Option<Vec<f32>>, EngineError>,
    ) -> Result<usize, EngineError> {
        let stale: Vec<Uuid> = self
            .shared
            .indexed
            .read()
            .values()
            .filter(|(id, crc)| warm.get(id) != Some(crc))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.send(Job::Forget { id });
        }
        let missing: Vec<(Uuid, u32)> = {
            let indexed = self.shared.indexed.read();
            warm.iter()
                .filter(|(id, crc)| indexed.get(&label(id)) != Some(&(**id, **crc)))
                .map(|(id, crc)| (*id, *crc))
                .collect()
        };
        let n = missing.len();
        for (id, crc) in missing {
            if let Some(v) = vector_of(&id)? {
                if v.len() == self.shared.dimensions {
                    self.upsert(id, crc, Arc::from(v));
                }
            }
        }
        Ok(n)
    }

    /// Approximate nearest neighbours among keys `accept(id, checksum)` allows, walked inside
    /// the graph: (id, cosine distance), nearest first.
    pub(crate) fn search(
        &self,
        query: &[f32],
        count: usize,
        accept: impl Fn(&Uuid, u32) -> bool,
    ) -> Result<Vec<(Uuid, f32)>, EngineError> {
        let _permit = self.shared.permits.acquire();
        let index = self.shared.index.read();
        if index.size() == 0 || count == 0 {
            return Ok(Vec::new());
        }
        let indexed = self.shared.indexed.read();
        let query = GraphVector::query(query, &self.shared.options);
        let matches = query
            .filtered_search(&index, count, |key| {
                indexed.get(&key).is_some_and(|(id, crc)| accept(id, *crc))
            })
            .map_err(|e| usearch_err("search", e))?;
        Ok(matches
            .keys
            .iter()
            .zip(matches.distances.iter())
            .filter_map(|(k, d)| {
                indexed
                    .get(k)
                    .map(|(id, _)| (*id, query.cosine_distance(*d)))
            })
            .collect())
    }

    /// Approximate nearest neighbours with no filter: (id, checksum, cosine distance). For a
    /// namespace that is nearly the whole graph, walking without a per-node filter and checking
    /// the few results after is far cheaper.
    pub(crate) fn search_unfiltered(
        &self,
        query: &[f32],
        count: usize,
    ) -> Result<Vec<(Uuid, u32, f32)>, EngineError> {
        let _permit = self.shared.permits.acquire();
        let index = self.shared.index.read();
        if index.size() == 0 || count == 0 {
            return Ok(Vec::new());
        }
        let query = GraphVector::query(query, &self.shared.options);
        let matches = query
            .search(&index, count)
            .map_err(|e| usearch_err("search", e))?;
        let indexed = self.shared.indexed.read();
        Ok(matches
            .keys
            .iter()
            .zip(matches.distances.iter())
            .filter_map(|(k, d)| {
                indexed
                    .get(k)
                    .map(|(id, crc)| (*id, *crc, query.cosine_distance(*d)))
            })
            .collect())
    }

    /// How many graph results to score again with f32 vectors for `pool` candidates: an i8
    /// graph orders near-ties by its codes, so up to 40 more (recall@10 of 100k at ef 256:
    /// 0.984 re-scoring 16, 1.0 re-scoring 30; a hybrid search's pool of 100 re-scores 140,
    /// not 300); a quarter more otherwise, as slack for results a check after the walk drops.
    pub(crate) fn candidates_for(&self, pool: usize) -> usize {
        if self.shared.options.quantization == ScalarKind::I8 {
            pool + 2 * pool.min(20)
        } else {
            pool + pool / 4 + 4
        }
    }

    /// Vectors in the graph.
    pub(crate) fn graph_len(&self) -> usize {
        self.shared.indexed.read().len()
    }

    /// Holds the graph's write lock: the indexer stops at its next add, and the backlog only
    /// grows (tests of a lagging graph).
    #[cfg(test)]
    pub(crate) fn hold(&self) -> parking_lot::RwLockWriteGuard<'_, Index> {
        self.shared.index.write()
    }

    /// Warm vectors the graph does not hold yet.
    pub(crate) fn lagging_len(&self) -> usize {
        self.shared.lagging.read().len()
    }

    /// Calls `f` with each warm vector the graph does not hold yet.
    pub(crate) fn for_each_lagging(&self, mut f: impl FnMut(&Uuid, u32, &[f32])) {
        for (id, (crc, v)) in self.shared.lagging.read().iter() {
            f(id, *crc, v);
        }
    }

    /// A warm vector still waiting for the graph.
    pub(crate) fn lagging_vector(&self, id: &Uuid) -> Option<Arc<[f32]>> {
        self.shared
            .lagging
            .read()
            .get(id)
            .map(|(_, v)| Arc::clone(v))
    }

    /// (vectors in the graph, vectors waiting for it).
    /// Bytes of the saved graph files on disk.
    pub(crate) fn file_bytes(&self) -> u64 {
        dir_bytes(&self.shared.dir)
    }

    pub fn sizes(&self) -> (usize, usize) {
        (
            self.shared.indexed.read().len(),
            self.shared.lagging.read().len(),
        )
    }

    /// Waits until every job queued so far is done, then saves the graph.
    pub(crate) fn save(&self) -> Result<(), EngineError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Job::Save(tx));
        match rx.recv() {
            Ok(r) => r.map_err(EngineError::Index),
            Err(_) => Ok(()),
        }
    }

    /// Saves and stops the indexer, indexing what is queued for at most [`CLOSE_GRACE`].
    pub(crate) fn close(&self) -> Result<(), EngineError> {
        *self.shared.close_by.lock() = Some(std::time::Instant::now() + CLOSE_GRACE);
        let saved = self.save();
        self.tx.lock().take();
        if let Some(w) = self.worker.lock().take() {
            let _ = w.join();
        }
        saved
    }
}

impl Drop for Hnsw {
    fn drop(&mut self) {
        *self.shared.close_by.lock() = Some(std::time::Instant::now());
        self.tx.lock().take();
        if let Some(w) = self.worker.lock().take() {
            let _ = w.join();
        }
    }
}

/// The graph's settings: cosine (an i8 graph: the inner product of codes made to order the
/// same way, see [`GraphVector`]), one vector per key.
fn index_options(dimensions: usize, config: &super::SearchConfig) -> IndexOptions {
    IndexOptions {
        dimensions,
        metric: if config.quantization == Quantization::I8 {
            MetricKind::IP
        } else {
            MetricKind::Cos
        },
        quantization: config.quantization.scalar_kind(),
        connectivity: config.connectivity,
        expansion_add: config.expansion_add,
        expansion_search: config.expansion_search,
        multi: false,
    }
}

fn new_index(options: &IndexOptions) -> Result<Index, EngineError> {
    Index::new(options).map_err(|e| usearch_err("create", e))
}

fn indexer(shared: &Shared, rx: &mpsc::Receiver<Job>) {
    let mut round: Vec<(Uuid, u32, Arc<[f32]>)> = Vec::new();
    let flush = |round: &mut Vec<(Uuid, u32, Arc<[f32]>)>| {
        if shared.closing() {
            round.clear();
        } else if !round.is_empty() {
            add_round(shared, std::mem::take(round));
        }
    };
    loop {
        let mut next = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(job) => Some(job),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                flush(&mut round);
                return;
            }
        };
        // Upserts of distinct ids gather into a round added together; anything else (and a
        // second upsert of an id already in the round) ends the round first, keeping job order.
        while let Some(job) = next.take() {
            match job {
                Job::Upsert { id, crc, vector } => {
                    if round.iter().any(|(r, _, _)| *r == id) {
                        flush(&mut round);
                    }
                    round.push((id, crc, vector));
                    if round.len() >= ADD_ROUND {
                        flush(&mut round);
                    }
                }
                Job::Forget { id } => {
                    flush(&mut round);
                    if !shared.closing() {
                        forget(shared, &id);
                    }
                }
                Job::Clear => {
                    round.clear();
                    if let Err(e) = clear(shared) {
                        tracing::error!(error = %e, "emptying the vector index failed");
                    }
                }
                Job::Save(reply) => {
                    flush(&mut round);
                    let _ = reply.send(save(shared));
                    shared.changes_since_save.store(0, Ordering::Relaxed);
                }
            }
            next = rx.try_recv().ok();
        }
        flush(&mut round);
        // Saving writes the whole graph: wait for a tenth of it to change (at least the
        // configured count), so a big graph is not rewritten every few seconds.
        let due = shared
            .save_after_changes
            .max(shared.indexed.read().len() as u64 / 10);
        if shared.changes_since_save.load(Ordering::Relaxed) >= due {
            if let Err(e) = save(shared) {
                tracing::error!(error = %e, "saving the vector index failed");
            }
            shared.changes_since_save.store(0, Ordering::Relaxed);
        }
    }
}

/// Replaces the graph by an empty one and saves it.
fn clear(shared: &Shared) -> Result<(), String> {
    let index = new_index(&shared.options).map_err(|e| e.to_string())?;
    index
        .reserve_capacity_and_threads(1024, shared.threads + 2)
        .map_err(|e| e.to_string())?;
    *shared.index.write() = index;
    shared.indexed.write().clear();
    shared.lagging.write().clear();
    shared.changes_since_save.store(0, Ordering::Relaxed);
    save(shared)
}

fn forget(shared: &Shared, id: &Uuid) {
    let key = label(id);
    let held = shared.indexed.read().get(&key).copied();
    if held.is_some_and(|(owner, _)| owner == *id) {
        let _ = shared.index.read().remove(key);
        shared.indexed.write().remove(&key);
        shared.changes_since_save.fetch_add(1, Ordering::Relaxed);
    }
}

fn add_round(shared: &Shared, round: Vec<(Uuid, u32, Arc<[f32]>)>) {
    let mut todo = Vec::with_capacity(round.len());
    let mut current = Vec::new();
    {
        let indexed = shared.indexed.read();
        for (id, crc, v) in round {
            match indexed.get(&label(&id)) {
                Some((owner, held)) if *owner == id && *held == crc => current.push((id, crc)),
                Some((owner, _)) if *owner != id => {
                    tracing::warn!(%id, other = %owner, "vector index key taken; this memory is scanned exactly");
                }
                _ => todo.push((id, crc, v)),
            }
        }
    }
    drop_lagging(shared, &current);
    if todo.is_empty() {
        return;
    }
    {
        let index = shared.index.read();
        for (id, _, _) in &todo {
            if index.contains(label(id)) {
                let _ = index.remove(label(id));
            }
        }
    }
    let need = shared.index.read().size() + todo.len();
    if need > shared.index.read().capacity() {
        let index = shared.index.write();
        let grown = (need * 2).max(1024);
        if let Err(e) = index.reserve_capacity_and_threads(grown, shared.threads + 2) {
            tracing::error!(error = %e, "growing the vector index failed; its vectors are scanned exactly");
            return;
        }
    }
    // One thread adds. usearch 2.26's concurrent `add` can leave a node stored but reachable by
    // no search (unum-cloud/USearch#735, fix unreleased): a memory no query could find again
    // while the graph counts it. Searches still run beside the adds.
    let added: Vec<bool> = {
        let index = shared.index.read();
        todo.iter()
            .map(|(id, _, v)| {
                match GraphVector::stored(v, &shared.options).add(&index, label(id)) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(%id, error = %e, "adding to the vector index failed");
                        false
                    }
                }
            })
            .collect()
    };
    {
        let mut indexed = shared.indexed.write();
        for ((id, crc, _), ok) in todo.iter().zip(&added) {
            if *ok {
                indexed.insert(label(id), (*id, *crc));
            } else {
                indexed.remove(&label(id));
            }
        }
    }
    shared
        .changes_since_save
        .fetch_add(todo.len() as u64, Ordering::Relaxed);
    let done: Vec<(Uuid, u32)> = todo
        .iter()
        .zip(&added)
        .filter(|(_, ok)| **ok)
        .map(|((id, crc, _), _)| (*id, *crc))
        .collect();
    drop_lagging(shared, &done);
}

/// Removes from `lagging` the vectors now in the graph (only if no newer one replaced them).
fn drop_lagging(shared: &Shared, done: &[(Uuid, u32)]) {
    if done.is_empty() {
        return;
    }
    let mut lagging = shared.lagging.write();
    for (id, crc) in done {
        if lagging.get(id).is_some_and(|(c, _)| c == crc) {
            lagging.remove(id);
        }
    }
}

#[cfg(test)]
mod tests;

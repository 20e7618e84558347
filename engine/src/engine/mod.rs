//! The engine: the facade [`Engine`] over one private [`Inner`], whose methods live in one
//! module per step of the pipeline.
//!
//! A write goes `writer` (validate, decide: dedup, versions, room in the working tier; append to
//! the WAL) → `apply` (wait for the group commit, then apply durable records in LSN order through
//! the [`apply::Applier`]) → readers see it. An async writer hands the wait to `commit`: one
//! thread that group-commits and applies for every awaiting [`Committing`] future. `read` serves gets, lists and searches; `tiering`
//! and `seal` move memories between tiers (eviction, promotion, the migration policy, expiry,
//! cold seals and compaction); `background` runs the periodic jobs and checkpoints; `recovery`
//! opens a store and replays the WAL through the same `Applier`; `report` answers for health,
//! metrics and `check`; `snapshots` hands the snapshot code the parts it reads.
//!
//! Locks are ranked (see [`locks`]): a thread takes them only in the order
//! `migration_lock` → `checkpoint_lock` → `apply_lock` → `writer` → `queue` → `expiry_of` →
//! `expiry` → the leaf maps, and taking one out of order panics. Readers take none of them:
//! they see what is applied, and a record is applied only after it is durable, so nothing a
//! reader sees can vanish in a crash.

mod apply;
mod background;
#[cfg(test)]
mod backlog_tests;
mod commit;
mod history;
#[cfg(test)]
mod history_tests;
mod locks;
mod namespaces;
mod own;
mod read;
mod recovery;
mod report;
mod seal;
mod snapshots;
#[cfg(test)]
mod space_tests;
mod spaces;
#[cfg(test)]
mod tests;
mod tiering;
mod transfer;
mod writer;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use engram_wal::{AtomicLsn, Lsn, Wal};
use parking_lot::Mutex;
use uuid::Uuid;

use crate::codec::Op;
use crate::config::EngineConfig;
use crate::layout::DataDir;
use crate::model::{ListFilter, Memory, MemoryPatch, NewMemory, Tier};
use crate::policy::{CompactionReport, MigrationReport};
use crate::search::{SearchIndex, SearchQuery, SearchResults};
use crate::tier::cold::{ColdSegmentStats, ColdTier};
use crate::tier::warm::WarmTier;
use crate::tier::working::WorkingTier;
use crate::EngineError;
use locks::RankedMutex;
use writer::WriterState;

pub use commit::Committing;
pub use history::{HistoryPage, MAX_HISTORY_LIMIT};
pub use namespaces::{NamespaceCounts, NamespacePurge};
pub use own::OwnVectors;
pub use read::{Page, LIST_SCAN_BUDGET, MAX_ACCESS_DELTAS_PER_RECORD, MAX_LIST_LIMIT};
pub use report::{ArchiveUsage, EngineCounters, EngineStats, OpenReport, TierReport};
pub use snapshots::restore_snapshot;
pub use spaces::{SpaceInfo, SpaceJob};
pub use tiering::{GRAPH_WAIT_MAX, GRAPH_WAIT_STEP};
pub use transfer::{ExportCount, ImportedAs};
pub use writer::{Deleted, EmbedJob, EmbedResult};

/// The state of an open store, shared by the facade, the background thread and the threads a
/// snapshot or checkpoint runs on.
pub(crate) struct Inner {
    config: EngineConfig,
    layout: DataDir,
    wal: Wal,
    working: WorkingTier,
    warm: WarmTier,
    cold: ColdTier,
    search: SearchIndex,
    /// Vector spaces beside the store's own (embedding migrations), by id.
    spaces: spaces::Spaces,
    /// The space the store's searches rank by (0: its own vectors).
    active_space: std::sync::atomic::AtomicU32,
    /// Set once the store's own vectors are dropped for the active space's (see [`own`]).
    own: parking_lot::RwLock<Option<crate::tier::warm::space::OwnDropped>>,
    /// The sweep that follows that drop.
    sweep: RankedMutex<own::Sweep>,
    /// Held by the one thread sweeping (the background thread, or a test).
    sweep_turn: Mutex<()>,
    /// Accesses since each memory's last move, counted while it is warm or cold (for promotion).
    accesses_since_move: RankedMutex<HashMap<Uuid, u64>>,
    /// Memories used enough to go up a tier, for the background thread.
    promote: RankedMutex<BTreeSet<Uuid>>,
    /// Serializes policy runs and compactions.
    migration_lock: RankedMutex<()>,
    /// Memories waiting for the background embedder (mirrors the `embed_queue` column family).
    embed_pending: RankedMutex<BTreeSet<Uuid>>,
    /// (expires_at, id) of memories with an expiry, for the purge job.
    expiry: RankedMutex<BTreeSet<(i64, Uuid)>>,
    /// The expiry each memory has in `expiry` (to find its entry when it changes).
    expiry_of: RankedMutex<HashMap<Uuid, i64>>,
    /// One writer at a time decides what a change is and appends it, so WAL order is decision
    /// order.
    writer: RankedMutex<WriterState>,
    /// Logged records not applied yet, in LSN order.
    queue: RankedMutex<VecDeque<(Lsn, Op)>>,
    /// One thread at a time applies durable records, in LSN order.
    apply_lock: RankedMutex<()>,
    /// Held by a checkpoint, and by a snapshot so no checkpoint trims WAL it still copies.
    checkpoint_lock: RankedMutex<()>,
    /// Every record up to this LSN is applied (`applied_lsn <= durable_lsn`, or written in
    /// `interval` sync mode).
    applied_lsn: AtomicLsn,
    poisoned: AtomicBool,
    /// Commits and applies for writers that await a [`Committing`] instead of blocking.
    committer: commit::Committer,
    /// Memories per tier, indexed by [`Tier::index`].
    tier_counts: [AtomicU64; 3],
    /// Accesses not logged yet: id → (count, last access µs).
    access_pending: RankedMutex<crate::idhash::IdMap<Uuid, (u64, i64)>>,
    /// The data directory's free space at the last look (see [`Inner::free_disk_bytes`]).
    free_disk_bytes: AtomicU64,
    /// RocksDB's memtable bytes at that look: room their flushes will need.
    unflushed_bytes: AtomicU64,
    /// When that look was, in ms since `opened`.
    free_disk_checked_ms: AtomicU64,
    /// The ballast is missing for want of room (released at open or to let RocksDB resume
    /// after a failed flush): writes are refused until it is allocated again, so that the
    /// room it freed goes to RocksDB and the WAL replay, not to new memories.
    ballast_missing: AtomicBool,
    opened: std::time::Instant,
    counters: EngineCounters,
    stop: AtomicBool,
    _lock_file: File,
}

/// An open store. All methods block (they may wait for an fsync or read a cold segment); call
/// them from threads that may block. The exception is [`Engine::create_batch_async`], which
/// only logs on the calling thread and leaves the wait to a future.
pub struct Engine {
    inner: Arc<Inner>,
    background: Mutex<Option<JoinHandle<()>>>,
    committer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("data_dir", &self.inner.config.data_dir)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens the store: lock, open tiers, replay the WAL from the lowest LSN any tier is missing,
    /// start the background thread.
    pub fn open(config: EngineConfig) -> Result<(Engine, OpenReport), EngineError> {
        recovery::open(config)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub fn counters(&self) -> &EngineCounters {
        &self.inner.counters
    }

    /// Registers a callback told the duration of every WAL fdatasync.
    pub fn set_fsync_observer(&self, observer: Box<dyn Fn(Duration) + Send + Sync>) {
        self.inner.wal.set_fsync_observer(observer);
    }

    /// Stores one memory durably.
    pub fn create(&self, new: NewMemory) -> Result<Memory, EngineError> {
        self.create_batch(vec![new])
            .pop()
            .expect("one input gives one result")
    }

    /// Stores up to [`crate::MAX_BATCH_ITEMS`] memories with one group commit; one result per
    /// input.
    pub fn create_batch(&self, items: Vec<NewMemory>) -> Vec<Result<Memory, EngineError>> {
        self.inner.wait_for_graph(items.len());
        self.inner.present_results(self.inner.create_batch(items))
    }

    /// Whether `incoming` new memories should wait before [`Engine::create_batch_async`]: the
    /// working tier is full and the graph has `search.hnsw_max_lagging` vectors to catch up on.
    /// Async callers poll this every [`GRAPH_WAIT_STEP`] for up to [`GRAPH_WAIT_MAX`], then
    /// report the wait with [`Engine::note_graph_wait`]; blocking calls wait by themselves.
    pub fn should_wait_for_graph(&self, incoming: usize) -> bool {
        self.inner.should_wait_for_graph(incoming)
    }

    /// Counts (and logs, at most once a second) a write's wait for the graph.
    pub fn note_graph_wait(&self, waited: Duration) {
        self.inner.note_graph_wait(waited);
    }

    /// [`Engine::create_batch`] for async callers: the memories are logged on the calling
    /// thread (the writer lock, dedup lookups, a copy into the WAL buffer; it blocks only
    /// briefly, or on a WAL write when its buffer is full), and the returned future resolves
    /// once the committer thread has made them durable and applied them.
    pub fn create_batch_async(&self, items: Vec<NewMemory>) -> Committing {
        let (results, lsn) = match self.inner.check_batch_size(items.len()) {
            Err(e) => (vec![Err(e)], engram_wal::Lsn::ZERO),
            Ok(()) => {
                let now = self.inner.now_us();
                self.inner
                    .log_items(items, |inner, w, item| inner.log_create(w, item, now))
            }
        };
        Committing::new(Arc::clone(&self.inner), lsn, results)
    }

    /// Stores exported memories exactly as they were, each with its kept past versions, with
    /// one group commit: the other half of an export. One result per input: content the
    /// namespace holds already is refused (`Duplicate`), and so is an id the store holds
    /// (`IdExists`) unless `replace` and it is in the same namespace (then the stored memory
    /// is purged with its versions first).
    pub fn import_batch(
        &self,
        items: Vec<crate::transfer::Exported>,
        replace: bool,
    ) -> Vec<Result<ImportedAs, EngineError>> {
        self.inner.wait_for_graph(items.len());
        let mut results = self.inner.import_batch(items, replace);
        if self.inner.own_vectors_dropped() {
            for r in &mut results {
                if let Ok(imported) = r {
                    match self.inner.present(imported.memory.clone()) {
                        Ok(m) => imported.memory = m,
                        Err(e) => *r = Err(e),
                    }
                }
            }
        }
        results
    }

    /// Calls `f` for every memory of `namespace` (every status) with its kept past versions,
    /// oldest first, while the store serves: each memory that exists throughout, exactly once.
    pub fn export_namespace(
        &self,
        namespace: &str,
        mut f: impl FnMut(crate::transfer::Exported) -> Result<(), EngineError>,
    ) -> Result<ExportCount, EngineError> {
        self.inner.export_namespace(namespace, |e| {
            f(crate::transfer::Exported {
                memory: self.inner.present(e.memory)?,
                versions: self.inner.present_past(e.versions)?,
            })
        })
    }

    /// The kept versions of `current` before it, oldest first.
    pub fn past_versions(&self, current: &Memory) -> Result<Vec<Memory>, EngineError> {
        self.inner.present_past(self.inner.past_versions(current)?)
    }

    /// Calls `f` for every stored memory (every status; `namespace` filters): the working tier in
    /// id order, then the warm tier in id order, then the cold tier segment by segment. For
    /// exports: a store being written meanwhile may show a memory that moves between tiers
    /// twice or not at all.
    pub fn scan_all(
        &self,
        namespace: Option<&str>,
        mut f: impl FnMut(Memory) -> Result<(), EngineError>,
    ) -> Result<u64, EngineError> {
        self.inner
            .scan_all(namespace, |m| f(self.inner.present(m)?))
    }

    /// Offline consistency check: every memory in exactly one tier with a content hash that
    /// matches, valid fields, and the namespace and dedup indexes agreeing with the memories in
    /// both directions. One line per problem (empty: consistent). Slot, heap and WAL checksums
    /// were already checked when the engine opened.
    pub fn check(&self) -> Result<Vec<String>, EngineError> {
        self.inner.check()
    }

    /// Reads a memory by id without counting an access. An expired memory is gone at once
    /// (`None`), before the background job purges it.
    pub fn get(&self, id: &Uuid) -> Result<Option<Memory>, EngineError> {
        self.inner.present_opt(self.inner.get(id)?)
    }

    /// Reads a memory by id and counts an access (soft state: batched into the WAL later).
    pub fn get_and_touch(&self, id: &Uuid) -> Result<Option<Memory>, EngineError> {
        self.inner.present_opt(self.inner.get_and_touch(id)?)
    }

    /// Reads a memory by id if that needs no cold segment (see [`Engine::get`]; `touch` counts
    /// an access): a lock-free working-tier copy or a RocksDB point lookup, fit for an async
    /// worker. `Ok(None)` when the memory is cold: read it with `get` on a blocking thread.
    pub fn get_unless_cold(
        &self,
        id: &Uuid,
        touch: bool,
    ) -> Result<Option<Option<Memory>>, EngineError> {
        match self.inner.get_unless_cold(id, touch, true)? {
            Some(m) => Ok(Some(self.inner.present_opt(m.map(|(m, _)| m))?)),
            None => Ok(None),
        }
    }

    /// [`Engine::get_unless_cold`] for a reply that leaves the vector out: a working-tier
    /// memory is read without it (its slot's header only). The `bool` says whether the
    /// memory has a vector; `embedding` may be `None` either way.
    pub fn get_unless_cold_without_vector(
        &self,
        id: &Uuid,
        touch: bool,
    ) -> Result<Option<Option<(Memory, bool)>>, EngineError> {
        if self.inner.own_vectors_dropped() {
            // What a memory shows then comes from the active space's rows, not its slot.
            return Ok(self.get_unless_cold(id, touch)?.map(|m| {
                m.map(|m| {
                    let has_embedding = m.embedding.is_some();
                    (m, has_embedding)
                })
            }));
        }
        self.inner.get_unless_cold(id, touch, false)
    }

    /// Counts an access to each id (soft state).
    pub fn record_access(&self, ids: &[Uuid]) {
        self.inner.record_access(ids)
    }

    /// Ranked recall over the tiers the query names (cold only when asked): vector, text, or
    /// both with importance and recency. Returned memories count as accessed.
    pub fn search(&self, q: &SearchQuery) -> Result<SearchResults, EngineError> {
        let mut results = self.inner.search(q)?;
        if self.inner.own_vectors_dropped() {
            for hit in &mut results.hits {
                hit.memory = self
                    .inner
                    .present_version(hit.memory.clone(), q.as_of_us.is_none())?;
            }
        }
        Ok(results)
    }

    /// (vectors in the warm tier's graph, warm vectors still waiting for it).
    pub fn vector_index_sizes(&self) -> (usize, usize) {
        self.inner.search.hnsw.sizes()
    }

    /// Up to `max` memories waiting for the background embedder, oldest first.
    pub fn pending_embeddings(&self, max: usize) -> Result<Vec<EmbedJob>, EngineError> {
        self.inner.pending_embeddings(max)
    }

    /// Memories waiting for the background embedder.
    pub fn pending_embedding_count(&self) -> usize {
        self.inner.embed_pending.lock().len()
    }

    /// Stores the embedder's results. A result for content that changed since is refused
    /// (`Invalid`, field `content`): the memory stays pending for its new content.
    pub fn set_embeddings(&self, results: Vec<EmbedResult>) -> Vec<Result<Memory, EngineError>> {
        self.inner.set_embeddings(results)
    }

    /// Applies a partial update; `version` + 1.
    pub fn update(&self, id: &Uuid, patch: MemoryPatch) -> Result<Memory, EngineError> {
        self.inner.present(self.inner.update(id, patch)?)
    }

    /// Soft-deletes (status `deleted`, hidden from lists) or, with `purge`, removes for good.
    pub fn delete(&self, id: &Uuid, purge: bool) -> Result<Deleted, EngineError> {
        self.inner.delete(id, purge, None)
    }

    /// [`Engine::delete`], saying who deletes (the deleted version's `actor`).
    pub fn delete_by(
        &self,
        id: &Uuid,
        purge: bool,
        actor: Option<&str>,
    ) -> Result<Deleted, EngineError> {
        self.inner.delete(id, purge, actor)
    }

    /// A page of `id`'s versions, newest first: those older than `before`, or from the
    /// current one.
    pub fn history(
        &self,
        id: &Uuid,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, EngineError> {
        let mut page = self.inner.history(id, before, limit)?;
        if self.inner.own_vectors_dropped() {
            for v in &mut page.versions {
                v.memory = self
                    .inner
                    .present_version(v.memory.clone(), v.valid_to_us.is_none())?;
            }
        }
        Ok(page)
    }

    /// Version `version` of `id` (`VersionNotFound` if it never was or is no longer kept).
    pub fn get_version(&self, id: &Uuid, version: u64) -> Result<Memory, EngineError> {
        self.inner
            .present_version(self.inner.version(id, version)?, false)
    }

    /// The version of `id` current at `at_us` (µs since the epoch, by write time).
    pub fn get_as_of(&self, id: &Uuid, at_us: i64) -> Result<Memory, EngineError> {
        self.inner
            .present_version(self.inner.as_of(id, at_us)?, false)
    }

    /// Makes a new version of `id` equal to its version `version`.
    pub fn revert(
        &self,
        id: &Uuid,
        version: u64,
        actor: Option<String>,
    ) -> Result<Memory, EngineError> {
        self.inner.check_writable()?;
        self.inner.present(self.inner.revert(id, version, actor)?)
    }

    /// Applies `history.keep_versions` and `history.keep_for` now (the background does it
    /// hourly).
    pub fn sweep_history(&self) -> Result<(), EngineError> {
        self.inner.sweep_history()
    }

    /// Bytes RocksDB holds for one column family (table files and memtables).
    pub fn warm_column_family_bytes(&self, column_family: &str) -> u64 {
        self.inner.warm.column_family_bytes(column_family)
    }

    /// One page of memories in id order (UUIDv7: creation order) after `after`.
    pub fn list(
        &self,
        filter: &ListFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Page, EngineError> {
        let mut page = self
            .inner
            .list(filter, after, limit.clamp(1, MAX_LIST_LIMIT))?;
        page.memories = self.inner.present_all(page.memories)?;
        Ok(page)
    }

    /// Every namespace that holds a memory (deleted ones included until purged), sorted.
    pub fn namespaces(&self) -> Result<Vec<String>, EngineError> {
        self.inner.warm.namespaces()
    }

    /// Per namespace (or only `namespace`), its memories per tier and how many are searchable.
    pub fn namespace_counts(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<NamespaceCounts>, EngineError> {
        self.inner.namespace_counts(namespace)
    }

    /// Deletes every memory of `namespace` (versions kept, as a single delete). Returns how
    /// many were deleted.
    pub fn delete_namespace(
        &self,
        namespace: &str,
        actor: Option<&str>,
    ) -> Result<usize, EngineError> {
        self.inner.delete_namespace(namespace, actor)
    }

    /// Purges every memory of `namespace` with its versions and removes their bytes from the
    /// live data files (see `engine::namespaces`).
    pub fn purge_namespace(&self, namespace: &str) -> Result<NamespacePurge, EngineError> {
        self.inner.purge_namespace(namespace)
    }

    /// Moves a memory to `tier` as a logged operation (to cold: a seal).
    pub fn move_to(&self, id: &Uuid, tier: Tier) -> Result<Memory, EngineError> {
        let patch = MemoryPatch {
            tier: Some(tier),
            ..MemoryPatch::default()
        };
        self.update(id, patch)
    }

    pub fn stats(&self) -> EngineStats {
        self.inner.stats()
    }

    /// Every live cold segment: its entries, how many are live, its size.
    pub fn cold_segments(&self) -> Vec<ColdSegmentStats> {
        let mut all = self.inner.cold.segment_stats();
        all.sort_by_key(|s| s.id);
        all
    }

    /// The archived WAL (nothing when archiving is off).
    pub fn archive_usage(&self) -> ArchiveUsage {
        let mut usage = ArchiveUsage::default();
        let Ok(entries) = std::fs::read_dir(self.inner.layout.archive()) else {
            return usage;
        };
        for m in entries.flatten().filter_map(|e| e.metadata().ok()) {
            if !m.is_file() {
                continue;
            }
            usage.segments += 1;
            usage.bytes += m.len();
            let modified = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
            usage.oldest_modified_us = match (usage.oldest_modified_us, modified) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        usage
    }

    /// Runs the tier migration policy now (`dry_run`: only report what it would move).
    pub fn migrate(&self, dry_run: bool) -> Result<MigrationReport, EngineError> {
        if !dry_run {
            self.inner.check_writable()?;
        }
        self.inner.migrate(dry_run)
    }

    /// Compacts cold segments now (every segment with a dead entry, and small ones merged),
    /// then RocksDB, so the space of moved and deleted memories is reclaimed at once.
    pub fn compact(&self) -> Result<CompactionReport, EngineError> {
        self.inner.check_writable()?;
        let mut report = self.inner.compact(true)?;
        let started = Instant::now();
        self.inner.warm.compact_all_to_bottom()?;
        report.took += started.elapsed();
        Ok(report)
    }

    /// Per tier (working, warm, cold): count, bytes on disk, average importance and access
    /// count, oldest access. Scans the access state of every warm and cold memory.
    pub fn tier_report(&self) -> Result<[TierReport; 3], EngineError> {
        self.inner.tier_report()
    }

    pub fn is_poisoned(&self) -> bool {
        self.inner.is_poisoned()
    }

    /// Makes every tier durable at the current applied LSN and trims the WAL.
    pub fn checkpoint(&self) -> Result<(), EngineError> {
        self.inner.flush_access()?;
        self.inner.checkpoint()
    }

    /// Registers a new vector space of `dimensions` for an embedding migration; `descriptor`
    /// (opaque to the engine) says what makes its vectors.
    pub fn create_space(
        &self,
        dimensions: usize,
        descriptor: String,
    ) -> Result<SpaceInfo, EngineError> {
        self.inner.create_space(dimensions, descriptor)
    }

    /// Every vector space beside the store's own, by id.
    pub fn spaces(&self) -> Result<Vec<SpaceInfo>, EngineError> {
        self.inner.spaces()
    }

    pub fn space(&self, id: u32) -> Result<SpaceInfo, EngineError> {
        self.inner.space(id)
    }

    /// Pauses or resumes a space's work (kept across restarts).
    pub fn set_space_paused(&self, id: u32, paused: bool) -> Result<SpaceInfo, EngineError> {
        self.inner.set_space_paused(id, paused)
    }

    /// Makes a caught-up space the one the store's searches rank by (an atomic switch).
    pub fn activate_space(&self, id: u32) -> Result<SpaceInfo, EngineError> {
        self.inner.activate_space(id)
    }

    /// The store's searches rank its own vectors again.
    pub fn deactivate_space(&self, id: u32) -> Result<SpaceInfo, EngineError> {
        self.inner.refuse_after_own_drop(id)?;
        self.inner.deactivate_space(id)
    }

    /// The active space's id and descriptor, if one is active (cheap: no counting).
    pub fn active_space(&self) -> Option<(u32, String)> {
        self.inner.active_space().map(|s| s.id_and_descriptor())
    }

    /// The active space's id, if one is active (an atomic load).
    pub fn active_space_id(&self) -> Option<u32> {
        let id = self
            .inner
            .active_space
            .load(std::sync::atomic::Ordering::Acquire);
        (id != 0).then_some(id)
    }

    /// Whether space `id` holds a vector of memory `mid`'s current content: a row, and no
    /// change waiting for the worker.
    pub fn space_vector_current(&self, id: u32, mid: &uuid::Uuid) -> Result<bool, EngineError> {
        self.inner.space_vector_current(id, mid)
    }

    /// Drops the store's own vectors for the active space's, named from now on by the model
    /// its descriptor gives (see `engine::own`): durable when this returns; a background sweep
    /// then rewrites what still holds one. 409 `MIGRATION_NOT_ACTIVE` without an active space.
    pub fn drop_own_vectors(&self) -> Result<OwnVectors, EngineError> {
        self.inner.check_writable()?;
        self.inner.drop_own_vectors()
    }

    /// The dimensions of the vectors reads show and writes take (exports, imports): the
    /// store's own, or the active space's once the own vectors are dropped.
    pub fn vector_dimensions(&self) -> Result<usize, EngineError> {
        self.inner.vector_dimensions()
    }

    /// Whether the store's own vectors were dropped, and how far the sweep has got.
    pub fn own_vectors(&self) -> OwnVectors {
        self.inner.own_vectors()
    }

    /// Removes a space with its vectors and graph.
    pub fn drop_space(&self, id: u32) -> Result<(), EngineError> {
        self.inner.drop_space(id)
    }

    /// Up to `max` memories to embed into space `id` (empty: caught up or paused).
    pub fn space_work(&self, id: u32, max: usize) -> Result<Vec<SpaceJob>, EngineError> {
        self.inner.space_work(id, max)
    }

    /// Stores the vectors computed for `jobs`, one per job; returns how many were kept.
    pub fn store_space_vectors(
        &self,
        id: u32,
        jobs: &[SpaceJob],
        vectors: Vec<Vec<f32>>,
    ) -> Result<usize, EngineError> {
        self.inner.store_space_vectors(id, jobs, vectors)
    }

    /// The `limit` memories of `namespace` nearest `query` in space `id`, with their cosine
    /// similarity, best first.
    pub fn search_space(
        &self,
        id: u32,
        query: &[f32],
        namespace: &str,
        limit: usize,
        include_superseded: bool,
    ) -> Result<Vec<(Memory, f32)>, EngineError> {
        self.inner
            .search_space(id, query, namespace, limit, include_superseded)
    }

    /// Graceful shutdown: stop background work, log pending access statistics, checkpoint,
    /// sync and close the WAL.
    pub fn close(self) -> Result<(), EngineError> {
        self.stop_background();
        let inner = &self.inner;
        if inner.is_poisoned() {
            return Err(EngineError::Poisoned);
        }
        inner.flush_access()?;
        inner.checkpoint()?;
        inner.wal.sync_all()?;
        // The graph is derived data: a failed save only means the next open catches it up.
        if let Err(e) = inner.search.hnsw.close() {
            tracing::warn!(error = %e, "saving the vector index at close failed; it is caught up at the next open");
        }
        inner.close_spaces();
        Ok(())
    }

    fn stop_background(&self) {
        self.inner.stop.store(true, Ordering::Release);
        if let Some(handle) = self.background.lock().take() {
            handle.thread().unpark();
            let _ = handle.join();
        }
        // The committer's last round commits what was requested before the stop.
        if let Some(handle) = self.committer.lock().take() {
            self.inner.committer.ring();
            let _ = handle.join();
        }
    }
}

impl Inner {
    /// The time of day, from the configured clock.
    fn now_us(&self) -> i64 {
        self.config.clock.now_us()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_background();
    }
}

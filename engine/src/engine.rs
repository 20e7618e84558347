//! The engine: the write path (validate → log → group commit → apply in LSN order), reads across
//! tiers, listing, eviction from the working tier, access statistics, checkpoints and recovery.
//!
//! Locks, in the only order they are ever taken:
//! 1. `writer` — one writer at a time decides what a change is (dedup, versions, eviction) and
//!    appends it to the WAL, so WAL order is decision order. Held for microseconds, never across
//!    an fsync.
//! 2. `apply_lock` — one thread at a time applies durable records to the tiers, in LSN order.
//! 3. `queue`, `access_pending` — short critical sections only.
//!
//! Readers take none of these: they see what is applied, and a record is applied only after it
//! is durable, so nothing a reader sees can vanish in a crash.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use engram_wal::{FaultInjector, Lsn, SyncMode, Wal, WalError, WalOptions};
use parking_lot::Mutex;
use uuid::Uuid;

use crate::codec::{self, AccessDelta, Op, PutKind};
use crate::coldtier::ColdTier;
use crate::model::{
    self, content_hash, is_valid_namespace, EmbeddingStatus, ListFilter, Memory, MemoryPatch,
    NewMemory, Status, Tier, MAX_BATCH_ITEMS, MAX_CONTENT_BYTES, MAX_DIMENSIONS,
    MAX_METADATA_BYTES, MAX_TAGS, MAX_TAG_BYTES,
};
use crate::policy::{CompactionReport, MigrationConfig, MigrationReport, PlannedMove};
use crate::search::hnsw::Hnsw;
use crate::search::{SearchConfig, SearchIndex, SearchQuery, SearchResults};
use crate::warm::WarmTier;
use crate::working::WorkingTier;
use crate::EngineError;

/// Ids a single list request may examine before it returns a (possibly short) page with a
/// cursor, so a selective filter cannot turn one request into a full scan.
pub const LIST_SCAN_BUDGET: usize = 10_000;
/// Largest page a list request may ask for.
pub const MAX_LIST_LIMIT: usize = 1000;
/// Access deltas per WAL record; more are split over several records, each logged and applied
/// on its own, so applying a burst of reads' counts never holds up writes for long.
pub const MAX_ACCESS_DELTAS_PER_RECORD: usize = 4096;
/// Records replayed per RocksDB write batch during recovery.
const REPLAY_BATCH_RECORDS: usize = 1024;
/// Most memories one eviction pass moves to warm beyond what is needed.
const EVICTION_CHUNK: usize = 8192;
/// Moves logged per hold of the writer lock by background eviction.
const EVICTION_LOCK_CHUNK: usize = 256;
/// Most memories one cold seal (one WAL record, one segment) carries.
const SEAL_MAX_MEMORIES: usize = 1024;
/// Most encoded bytes one cold seal carries (the WAL record limit is 16 MiB).
const SEAL_MAX_BYTES: usize = 12 << 20;
/// Segments with fewer entries are merged by compaction.
const COLD_SMALL_SEGMENT: usize = 8192;
/// Most live entries one compaction output holds.
const COLD_COMPACT_MAX: usize = 65_536;
/// How often the background thread wakes to look for work.
const BACKGROUND_TICK: Duration = Duration::from_millis(100);

/// How an engine is opened. Build with [`EngineConfig::new`] and adjust fields.
#[derive(Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    /// Dimensions every embedding must have.
    pub dimensions: usize,
    /// Memories the working tier holds before the least valuable move to warm.
    pub working_capacity: usize,
    /// Size of each of the two working-tier heap files (sparse).
    pub working_heap_bytes: u64,
    pub wal_segment_bytes: u64,
    pub sync_mode: SyncMode,
    /// Keep closed WAL segments in `archive/` (point-in-time restore reads them).
    pub wal_archive: bool,
    /// Archived segments older than this are removed at checkpoints (`None`: kept forever).
    pub wal_archive_retention: Option<Duration>,
    pub block_cache_bytes: usize,
    /// How often tiers are made durable and the WAL trimmed.
    pub checkpoint_interval: Duration,
    /// Also checkpoint once this much WAL was written since the last one: it bounds the replay
    /// after a crash, and so the time to serve again.
    pub checkpoint_wal_bytes: u64,
    /// How often batched access statistics are logged.
    pub access_flush_interval: Duration,
    /// Writes are refused (storage full) when the data dir's filesystem has less free space.
    pub min_free_disk_bytes: u64,
    /// Take a snapshot this often (`None`: only on request).
    pub snapshot_interval: Option<Duration>,
    /// Scheduled snapshots kept; older ones are deleted after each new one.
    pub snapshots_kept: usize,
    /// An embedder is configured: memories stored without a vector wait for it
    /// (`embedding_status: pending`).
    pub auto_embed: bool,
    pub search: SearchConfig,
    /// `[tier_migration]`: the policy that moves memories between tiers, and cold segments.
    pub migration: MigrationConfig,
    /// Load the in-memory search structures (graph, attributes, codes). Offline tools turn
    /// this off: opening is then fast and small, `search` is refused, and everything they
    /// write is indexed by the daemon's next open (postings and attributes are in RocksDB; the
    /// graph is reconciled).
    pub search_structures: bool,
    pub fault_injector: Option<FaultInjector>,
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("data_dir", &self.data_dir)
            .field("dimensions", &self.dimensions)
            .field("working_capacity", &self.working_capacity)
            .field("sync_mode", &self.sync_mode)
            .finish_non_exhaustive()
    }
}

impl EngineConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        EngineConfig {
            data_dir: data_dir.into(),
            dimensions: 384,
            working_capacity: 100_000,
            working_heap_bytes: 8 << 30,
            wal_segment_bytes: engram_wal::DEFAULT_SEGMENT_BYTES,
            sync_mode: SyncMode::Always,
            wal_archive: true,
            wal_archive_retention: Some(Duration::from_secs(7 * 86_400)),
            block_cache_bytes: 256 << 20,
            checkpoint_interval: Duration::from_secs(60),
            checkpoint_wal_bytes: 256 << 20,
            access_flush_interval: Duration::from_secs(1),
            min_free_disk_bytes: 64 << 20,
            snapshot_interval: None,
            snapshots_kept: 7,
            auto_embed: false,
            search: SearchConfig::default(),
            migration: MigrationConfig::default(),
            search_structures: true,
            fault_injector: None,
        }
    }
}

/// Counts of background work the engine did, for metrics (requests are counted by the server).
#[derive(Debug, Default)]
pub struct EngineCounters {
    /// Tier moves, `[from][to]` in working, warm, cold order.
    pub migrations: [[AtomicU64; 3]; 3],
    pub compactions: AtomicU64,
    pub compaction_micros: AtomicU64,
    /// Dead cold entries compaction dropped.
    pub compaction_dead_dropped: AtomicU64,
    /// Memories purged because their `expires_at` passed.
    pub memories_expired: AtomicU64,
    pub checkpoints: AtomicU64,
}

/// A point-in-time view for health and metrics.
#[derive(Debug, Clone)]
pub struct EngineStats {
    pub working: u64,
    pub warm: u64,
    pub cold: u64,
    pub durable_lsn: Lsn,
    pub applied_lsn: Lsn,
    pub poisoned: bool,
    pub wal_active_segments: usize,
    pub warm_disk_bytes: u64,
    pub working_heap_live_bytes: u64,
    pub cold_segments: usize,
    pub cold_disk_bytes: u64,
}

impl EngineCounters {
    pub fn migrated(&self, from: Tier, to: Tier) -> u64 {
        self.migrations[tier_index(from)][tier_index(to)].load(Ordering::Relaxed)
    }

    fn count_move(&self, from: Tier, to: Tier, n: u64) {
        self.migrations[tier_index(from)][tier_index(to)].fetch_add(n, Ordering::Relaxed);
    }
}

/// One tier as `GET /api/v1/tiers` reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TierReport {
    pub count: u64,
    pub bytes_on_disk: u64,
    /// Over active memories (0 when none).
    pub avg_importance: f64,
    pub avg_access_count: f64,
    /// Oldest last access (or last change, if never accessed), µs since the epoch.
    pub oldest_access_us: Option<i64>,
}

/// What recovery did at open, for logs.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    pub working_checkpoint_lsn: Lsn,
    pub warm_applied_lsn: Lsn,
    pub records_replayed: u64,
    pub last_lsn: Lsn,
    pub torn_tail: Option<(PathBuf, u64)>,
    pub took: Duration,
}

/// Outcome of a delete.
#[derive(Debug, Clone, PartialEq)]
pub struct Deleted {
    pub id: Uuid,
    pub deleted_at_us: i64,
    pub purged: bool,
}

/// A page of a list.
#[derive(Debug, Clone)]
pub struct Page {
    pub memories: Vec<Memory>,
    /// Pass back as `after` for the next page; `None` when the walk is complete.
    pub next_after: Option<Uuid>,
}

struct WriterState {
    /// Latest logged-but-not-yet-applied image per id (`None`: purged).
    pending: HashMap<Uuid, (Lsn, Option<Memory>)>,
    /// Dedup claims and releases not yet applied: `Some(id)` claimed, `None` released.
    pending_hashes: HashMap<(String, [u8; 32]), (Lsn, Option<Uuid>)>,
    /// Working-tier count once everything logged is applied.
    working_projected: usize,
}

pub(crate) struct Inner {
    config: EngineConfig,
    wal: Wal,
    working: WorkingTier,
    warm: WarmTier,
    cold: ColdTier,
    search: SearchIndex,
    /// Accesses since each memory's last move, counted while it is warm or cold (for promotion).
    hits: Mutex<HashMap<Uuid, u64>>,
    /// Memories used enough to go up a tier, for the background thread.
    promote: Mutex<BTreeSet<Uuid>>,
    /// Serializes policy runs and compactions.
    migration_lock: Mutex<()>,
    /// Memories waiting for the background embedder (mirrors the `embed_queue` column family).
    embed_pending: Mutex<BTreeSet<Uuid>>,
    /// (expires_at, id) of memories with an expiry, for the purge job.
    expiry: Mutex<BTreeSet<(i64, Uuid)>>,
    expiry_of: Mutex<HashMap<Uuid, i64>>,
    writer: Mutex<WriterState>,
    queue: Mutex<VecDeque<(Lsn, Op)>>,
    apply_lock: Mutex<()>,
    checkpoint_lock: Mutex<()>,
    applied_lsn: AtomicU64,
    poisoned: AtomicBool,
    tier_counts: [AtomicU64; 3],
    access_pending: Mutex<HashMap<Uuid, (u64, i64)>>,
    free_disk_bytes: AtomicU64,
    counters: EngineCounters,
    stop: AtomicBool,
    _lock_file: File,
}

/// An open store. All methods block (they may wait for an fsync); call them from threads that
/// may block.
pub struct Engine {
    inner: Arc<Inner>,
    background: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("data_dir", &self.inner.config.data_dir)
            .finish_non_exhaustive()
    }
}

pub(crate) fn tier_index(tier: Tier) -> usize {
    match tier {
        Tier::Working => 0,
        Tier::Warm => 1,
        Tier::Cold => 2,
    }
}

/// Takes the data directory's lock file, so two processes never open one store.
pub fn lock_data_dir(data_dir: &Path) -> Result<File, EngineError> {
    std::fs::create_dir_all(data_dir).map_err(|e| EngineError::io(data_dir, e))?;
    let path = data_dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| EngineError::io(&path, e))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {
            use std::io::Write;
            let mut f = &file;
            let _ = f.write_all(format!("{}\n", std::process::id()).as_bytes());
            Ok(file)
        }
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(EngineError::Locked { path }),
        Err(e) => Err(EngineError::io(&path, e.into())),
    }
}

fn free_disk_bytes(path: &Path) -> u64 {
    rustix::fs::statvfs(path)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .unwrap_or(u64::MAX)
}

impl Engine {
    /// Opens the store: lock, open tiers, replay the WAL from the lowest LSN any tier is missing,
    /// start the background thread.
    pub fn open(config: EngineConfig) -> Result<(Engine, OpenReport), EngineError> {
        let started = Instant::now();
        if config.dimensions == 0 || config.dimensions > MAX_DIMENSIONS {
            return Err(EngineError::Config(format!(
                "embedding.dimensions must be 1..={MAX_DIMENSIONS}, got {}",
                config.dimensions
            )));
        }
        if config.working_capacity == 0 {
            return Err(EngineError::Config(
                "working.capacity must be at least 1".to_owned(),
            ));
        }
        let lock_file = lock_data_dir(&config.data_dir)?;
        let (working, working_report) = WorkingTier::open(
            &config.data_dir.join("working"),
            config.dimensions,
            config.working_capacity,
            config.working_heap_bytes,
        )?;
        let (warm, warm_lsn) = WarmTier::open(
            &config.data_dir.join("warm"),
            config.block_cache_bytes,
            config.search.stemming,
        )?;
        let (cold, cold_lsn) = ColdTier::open(
            &config.data_dir.join("cold"),
            config.dimensions,
            config.migration.zstd_level,
        )?;
        let working_lsn = working_report.checkpoint_lsn;
        let cold_lsn = cold_lsn.unwrap_or(working_lsn.min(warm_lsn));
        let replay_from = working_lsn.min(warm_lsn).min(cold_lsn) + 1;
        let min_next = working_lsn.max(warm_lsn).max(cold_lsn) + 1;
        let mut wal_opts = WalOptions::new(config.data_dir.join("wal"));
        wal_opts.segment_bytes = config.wal_segment_bytes;
        wal_opts.sync_mode = config.sync_mode;
        wal_opts.archive_dir = config.wal_archive.then(|| config.data_dir.join("archive"));
        wal_opts.fault_injector = config.fault_injector.clone();

        let mut batch = Some(warm.batch());
        let mut batched = 0usize;
        let mut last_batched_lsn = 0;
        // The working-tier image after a crash is newer than its checkpoint, so replaying each
        // record in turn could re-insert memories that later left and overflow the slots.
        // Only the last operation per id matters for it: collect those, apply them at the end.
        let mut working_final = WorkingReplay::default();
        let (wal, wal_report) = Wal::open(wal_opts, replay_from, min_next, |record| {
            let op =
                codec::decode_op(record.payload, record.lsn).map_err(|e| EngineError::Corrupt {
                    path: config.data_dir.join("wal"),
                    detail: format!("record at LSN {}: {e}", record.lsn),
                })?;
            let to_rocks = record.lsn > warm_lsn;
            let to_working = record.lsn > working_lsn;
            if record.lsn > cold_lsn {
                cold_part(&cold, &op)?;
                if let Op::ColdCompact { sources, .. } = &op {
                    cold.drop_segments(record.lsn, sources)?;
                }
            }
            if to_rocks {
                if matches!(op, Op::Access(_)) {
                    // Access deltas read the current counters: commit what is batched first.
                    if let Some(b) = batch.take() {
                        b.commit(last_batched_lsn.max(warm_lsn))?;
                    }
                    batch = Some(warm.batch());
                    batched = 0;
                }
                let b = batch.get_or_insert_with(|| warm.batch());
                rocks_part(&warm, &working, b, &op)?;
                last_batched_lsn = record.lsn;
                batched += 1;
            }
            if to_working {
                working_final.record(record.lsn, op);
            }
            if batched >= REPLAY_BATCH_RECORDS {
                if let Some(b) = batch.take() {
                    b.commit(last_batched_lsn)?;
                }
                batched = 0;
            }
            Ok::<(), EngineError>(())
        })?;
        if let Some(b) = batch.take() {
            if last_batched_lsn > 0 {
                b.commit(last_batched_lsn)?;
            }
        }
        working_final.apply(&working)?;
        cold.load_locations(warm.cold_locations()?);
        let orphans = cold.remove_orphans()?;
        if orphans > 0 {
            tracing::info!(
                files = orphans,
                "removed cold segment files no record names"
            );
        }
        let (search, expiry) = open_search(&config, &working, &warm, &cold)?;
        let embed_pending: BTreeSet<Uuid> = warm.embed_queue()?.into_iter().collect();
        let last_lsn = wal.last_lsn();
        let working_count = working.len();
        let warm_count = warm.count_records()?;
        let cold_count = cold.len() as u64;
        let report = OpenReport {
            working_checkpoint_lsn: working_lsn,
            warm_applied_lsn: warm_lsn,
            records_replayed: wal_report.records_replayed,
            last_lsn,
            torn_tail: wal_report.truncated_tail.clone(),
            took: started.elapsed(),
        };
        let free = free_disk_bytes(&config.data_dir);
        let inner = Arc::new(Inner {
            wal,
            working,
            warm,
            cold,
            search,
            hits: Mutex::new(HashMap::new()),
            promote: Mutex::new(BTreeSet::new()),
            migration_lock: Mutex::new(()),
            embed_pending: Mutex::new(embed_pending),
            expiry: Mutex::new(expiry.iter().map(|(id, at)| (*at, *id)).collect()),
            expiry_of: Mutex::new(expiry),
            writer: Mutex::new(WriterState {
                pending: HashMap::new(),
                pending_hashes: HashMap::new(),
                working_projected: working_count,
            }),
            queue: Mutex::new(VecDeque::new()),
            apply_lock: Mutex::new(()),
            checkpoint_lock: Mutex::new(()),
            applied_lsn: AtomicU64::new(last_lsn),
            poisoned: AtomicBool::new(false),
            tier_counts: [
                AtomicU64::new(working_count as u64),
                AtomicU64::new(warm_count),
                AtomicU64::new(cold_count),
            ],
            access_pending: Mutex::new(HashMap::new()),
            free_disk_bytes: AtomicU64::new(free),
            counters: EngineCounters::default(),
            stop: AtomicBool::new(false),
            _lock_file: lock_file,
            config,
        });
        if report.records_replayed > 0 {
            // Make the replayed state durable now, so a crash loop does not replay it again.
            inner.checkpoint()?;
        }
        let bg = Arc::clone(&inner);
        let handle = std::thread::Builder::new()
            .name("engram-background".to_owned())
            .spawn(move || bg.background())
            .map_err(|e| EngineError::io(Path::new("<thread>"), e))?;
        Ok((
            Engine {
                inner,
                background: Mutex::new(Some(handle)),
            },
            report,
        ))
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

    /// Stores up to [`MAX_BATCH_ITEMS`] memories with one group commit; one result per input.
    pub fn create_batch(&self, items: Vec<NewMemory>) -> Vec<Result<Memory, EngineError>> {
        if items.len() > MAX_BATCH_ITEMS {
            return vec![Err(EngineError::Invalid {
                field: "memories",
                message: format!("at most {MAX_BATCH_ITEMS} memories per batch"),
            })];
        }
        let now = model::now_us();
        self.inner
            .log_batch(items, |inner, w, item| inner.log_create(w, item, now))
    }

    /// Stores memories exactly as given (id, versions, timestamps, tier, status, access counts)
    /// with one group commit: the other half of an export. One result per input; an id that
    /// exists already, or content a namespace already holds, is refused.
    pub fn import_batch(&self, items: Vec<Memory>) -> Vec<Result<Memory, EngineError>> {
        self.inner
            .log_batch(items, |inner, w, item| inner.log_import(w, item))
    }

    /// Calls `f` for every stored memory (every status; `namespace` filters): the working tier in
    /// id order, then the warm tier in id order, read sequentially, then the cold tier segment by
    /// segment. For exports: a store being
    /// written meanwhile may show a memory that moves between tiers twice or not at all.
    pub fn scan_all(
        &self,
        namespace: Option<&str>,
        mut f: impl FnMut(Memory) -> Result<(), EngineError>,
    ) -> Result<u64, EngineError> {
        let inner = &self.inner;
        let mut n = 0;
        let mut ids = inner.working.ids();
        ids.sort_unstable();
        for id in ids {
            if let Some(m) = inner.working.get(&id)? {
                if namespace.is_none_or(|ns| m.namespace == ns) {
                    f(m)?;
                    n += 1;
                }
            }
        }
        inner.warm.scan(|m| {
            if namespace.is_none_or(|ns| m.namespace == ns) {
                n += 1;
                f(m)
            } else {
                Ok(())
            }
        })?;
        inner.cold.scan(|mut m| {
            if namespace.is_none_or(|ns| m.namespace == ns) {
                if let Some((count, last)) = inner.warm.access(&m.id)? {
                    m.access_count = count;
                    m.last_accessed_at_us = last;
                }
                n += 1;
                f(m)
            } else {
                Ok(())
            }
        })?;
        Ok(n)
    }

    /// Offline consistency check: every memory in exactly one tier with a content hash that
    /// matches, valid fields, and the namespace and dedup indexes agreeing with the memories in
    /// both directions. One line per problem (empty: consistent). Slot, heap and WAL checksums
    /// were already checked when the engine opened.
    pub fn check(&self) -> Result<Vec<String>, EngineError> {
        let inner = &self.inner;
        let mut problems = Vec::new();
        let mut seen: HashMap<Uuid, (String, [u8; 32], Status)> = HashMap::new();
        let dims = inner.config.dimensions;
        self.scan_all(None, |m| {
            if seen.contains_key(&m.id) {
                problems.push(format!("memory {} is in more than one tier", m.id));
            }
            if m.content_hash != content_hash(&m.content) {
                problems.push(format!(
                    "memory {}: content hash does not match its content",
                    m.id
                ));
            }
            if !is_valid_namespace(&m.namespace) {
                problems.push(format!(
                    "memory {}: invalid namespace {:?}",
                    m.id, m.namespace
                ));
            }
            if m.embedding
                .as_ref()
                .is_some_and(|e| e.len() != dims || e.iter().any(|x| !x.is_finite()))
            {
                problems.push(format!(
                    "memory {}: embedding is not {dims} finite numbers",
                    m.id
                ));
            }
            if serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&m.metadata_json)
                .is_err()
            {
                problems.push(format!("memory {}: metadata is not a JSON object", m.id));
            }
            seen.insert(m.id, (m.namespace.clone(), m.content_hash, m.status));
            Ok(())
        })?;
        for (id, seg) in inner.cold.locations() {
            if !inner.cold.segment_has(seg, &id) {
                problems.push(format!(
                    "cold location of {id} names segment {seg}, which does not hold it"
                ));
            }
        }
        let (ns_index, hash_index) = inner.warm.index_entries()?;
        let mut indexed = std::collections::HashSet::new();
        for (ns, id) in &ns_index {
            match seen.get(id) {
                Some((n, _, _)) if n == ns => {}
                Some((n, _, _)) => problems.push(format!(
                    "namespace index puts {id} in {ns:?}, the memory says {n:?}"
                )),
                None => problems.push(format!(
                    "namespace index lists {id} in {ns:?}, but no tier holds it"
                )),
            }
            indexed.insert(*id);
        }
        for id in seen.keys() {
            if !indexed.contains(id) {
                problems.push(format!("memory {id} is missing from the namespace index"));
            }
        }
        let mut claimed = std::collections::HashSet::new();
        for (ns, hash, id) in &hash_index {
            match seen.get(id) {
                Some((n, h, status)) if n == ns && h == hash && *status != Status::Deleted => {
                    claimed.insert(*id);
                }
                _ => problems.push(format!(
                    "dedup index maps {ns:?}/{} to {id}, which does not hold that content",
                    crate::model::hex(hash)
                )),
            }
        }
        for (id, (_, _, status)) in &seen {
            if *status != Status::Deleted && !claimed.contains(id) {
                problems.push(format!("memory {id} is missing from the dedup index"));
            }
        }
        Ok(problems)
    }

    /// Reads a memory by id without counting an access.
    /// Reads a memory by id. An expired memory is gone at once (`None`), before the background
    /// job purges it.
    pub fn get(&self, id: &Uuid) -> Result<Option<Memory>, EngineError> {
        let m = self.inner.read_live(id)?;
        Ok(m.map(|m| self.inner.with_pending_access(m)))
    }

    /// Reads a memory by id and counts an access (soft state: batched into the WAL later).
    pub fn get_and_touch(&self, id: &Uuid) -> Result<Option<Memory>, EngineError> {
        let Some(m) = self.inner.read_live(id)? else {
            return Ok(None);
        };
        self.record_access(&[m.id]);
        Ok(Some(self.inner.with_pending_access(m)))
    }

    /// Counts an access to each id (soft state).
    pub fn record_access(&self, ids: &[Uuid]) {
        let now = model::now_us();
        let mut pending = self.inner.access_pending.lock();
        for id in ids {
            let e = pending.entry(*id).or_insert((0, now));
            e.0 += 1;
            e.1 = e.1.max(now);
        }
    }

    /// Ranked recall over the tiers the query names (cold only when asked): vector, text, or both with importance and
    /// recency. Returned memories count as accessed.
    pub fn search(&self, q: &SearchQuery) -> Result<SearchResults, EngineError> {
        let inner = &self.inner;
        if !inner.search.is_enabled() {
            return Err(EngineError::Config(
                "this store was opened without its search structures (offline)".to_owned(),
            ));
        }
        if let Some(e) = &q.embedding {
            inner.validate_embedding(e).map_err(|e| match e {
                EngineError::Invalid { message, .. } => EngineError::Invalid {
                    field: "query_embedding",
                    message,
                },
                other => other,
            })?;
        }
        let read = |id: &Uuid| inner.read(id);
        let ctx = crate::search::query::Ctx {
            index: &inner.search,
            warm: &inner.warm,
            cold: &inner.cold,
            read: &read,
            now_us: model::now_us(),
        };
        let (ranked, total_count) = crate::search::query::rank(&ctx, q)?;
        let mut hits = Vec::with_capacity(q.limit.min(ranked.len()));
        for r in ranked.into_iter().skip(q.offset) {
            if hits.len() >= q.limit {
                break;
            }
            // Changed between ranking and this read: skip rather than return it stale.
            let Some(m) = inner.read(&r.id)? else {
                continue;
            };
            if m.status != Status::Active
                || m.namespace != q.namespace
                || is_expired(&m, ctx.now_us)
            {
                continue;
            }
            hits.push(crate::search::SearchHit {
                memory: inner.with_pending_access(m),
                score: r.score,
                distance: r.similarity.map(|s| 1.0 - s),
                explanation: r.explanation,
            });
        }
        let ids: Vec<Uuid> = hits.iter().map(|h| h.memory.id).collect();
        self.record_access(&ids);
        Ok(SearchResults { hits, total_count })
    }

    /// (vectors in the warm tier's graph, warm vectors still waiting for it).
    pub fn vector_index_sizes(&self) -> (usize, usize) {
        self.inner.search.hnsw.sizes()
    }

    /// Up to `max` memories waiting for the background embedder, oldest first.
    pub fn pending_embeddings(&self, max: usize) -> Result<Vec<EmbedJob>, EngineError> {
        let ids: Vec<Uuid> = self
            .inner
            .embed_pending
            .lock()
            .iter()
            .take(max)
            .copied()
            .collect();
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            match self.inner.read(&id)? {
                Some(m)
                    if m.embedding_status == EmbeddingStatus::Pending
                        && m.status != Status::Deleted =>
                {
                    jobs.push(EmbedJob {
                        id,
                        content: m.content,
                        content_hash: m.content_hash,
                    })
                }
                // Applied since: no longer waiting.
                _ => {
                    self.inner.embed_pending.lock().remove(&id);
                }
            }
        }
        Ok(jobs)
    }

    /// Memories waiting for the background embedder.
    pub fn pending_embedding_count(&self) -> usize {
        self.inner.embed_pending.lock().len()
    }

    /// Stores the embedder's results. A result for content that changed since is refused
    /// (`Invalid`, field `content`): the memory stays pending for its new content.
    pub fn set_embeddings(&self, results: Vec<EmbedResult>) -> Vec<Result<Memory, EngineError>> {
        self.inner.log_batch(results, Inner::log_embed)
    }

    /// Applies a partial update; `version` + 1.
    pub fn update(&self, id: &Uuid, mut patch: MemoryPatch) -> Result<Memory, EngineError> {
        let inner = &self.inner;
        inner.check_writable()?;
        inner.validate_patch(&patch)?;
        if patch.tier == Some(Tier::Cold) {
            // Pinning to cold: apply the other fields (if any), then seal the result.
            patch.tier = None;
            let current = if patch == MemoryPatch::default() {
                inner.read_live(id)?.ok_or(EngineError::NotFound(*id))?
            } else {
                self.update(id, patch)?
            };
            if current.status == Status::Deleted {
                return Err(EngineError::NotFound(*id));
            }
            if current.tier != Tier::Cold {
                let moved = inner.seal(vec![current.id], true)?;
                if moved.is_empty() {
                    return Err(EngineError::Busy(
                        "the memory changed while moving to cold; retry",
                    ));
                }
            }
            return inner.read_live(id)?.ok_or(EngineError::NotFound(*id));
        }
        let memory = {
            let mut w = inner.writer.lock();
            inner.log_update(&mut w, id, patch)?
        };
        inner.commit(memory.lsn)?;
        Ok(memory)
    }

    /// Soft-deletes (status `deleted`, hidden from lists) or, with `purge`, removes for good.
    pub fn delete(&self, id: &Uuid, purge: bool) -> Result<Deleted, EngineError> {
        let inner = &self.inner;
        inner.check_writable()?;
        let (lsn, deleted) = {
            let mut w = inner.writer.lock();
            inner.log_delete(&mut w, id, purge)?
        };
        inner.commit(lsn)?;
        Ok(deleted)
    }

    /// One page of memories in id order (UUIDv7: creation order) after `after`.
    pub fn list(
        &self,
        filter: &ListFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Page, EngineError> {
        self.inner
            .list(filter, after, limit.clamp(1, MAX_LIST_LIMIT))
    }

    /// Moves a memory to `tier` (working or warm) as a logged operation.
    pub fn move_to(&self, id: &Uuid, tier: Tier) -> Result<Memory, EngineError> {
        self.update(
            id,
            MemoryPatch {
                tier: Some(tier),
                ..MemoryPatch::default()
            },
        )
    }

    pub fn stats(&self) -> EngineStats {
        let inner = &self.inner;
        EngineStats {
            working: inner.tier_counts[0].load(Ordering::Relaxed),
            warm: inner.tier_counts[1].load(Ordering::Relaxed),
            cold: inner.tier_counts[2].load(Ordering::Relaxed),
            durable_lsn: inner.wal.durable_lsn(),
            applied_lsn: inner.applied_lsn.load(Ordering::Acquire),
            poisoned: inner.is_poisoned(),
            wal_active_segments: inner.wal.active_segments(),
            warm_disk_bytes: inner.warm.disk_bytes(),
            working_heap_live_bytes: inner.working.heap_usage().0,
            cold_segments: inner.cold.segment_stats().len(),
            cold_disk_bytes: inner.cold.disk_bytes(),
        }
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
        self.inner.warm.compact_all();
        report.took += started.elapsed();
        Ok(report)
    }

    /// Per tier (working, warm, cold): count, bytes on disk, average importance and access
    /// count, oldest access. Scans the access state of every warm and cold memory.
    pub fn tier_report(&self) -> Result<[TierReport; 3], EngineError> {
        let inner = &self.inner;
        let mut out: [TierReport; 3] = Default::default();
        let mut importance = [(0f64, 0u64); 3];
        for (_, a) in inner.search.attrs.read().by_id.iter() {
            let e = &mut importance[tier_index(a.tier)];
            e.0 += f64::from(a.importance);
            e.1 += 1;
        }
        let mut access = [(0u64, 0u64, None::<i64>); 3];
        for s in inner.working.eviction_inputs() {
            let e = &mut access[0];
            e.0 += s.access_count;
            e.1 += 1;
            e.2 = Some(e.2.map_or(s.last_used_us, |o: i64| o.min(s.last_used_us)));
        }
        inner.warm.scan_access(|id, count, last| {
            let e = &mut access[if inner.cold.contains(&id) { 2 } else { 1 }];
            e.0 += count;
            e.1 += 1;
            if let Some(l) = last {
                e.2 = Some(e.2.map_or(l, |o: i64| o.min(l)));
            }
        })?;
        let bytes = [
            inner.working.disk_bytes(),
            inner.warm.disk_bytes() + inner.search.hnsw.file_bytes(),
            inner.cold.disk_bytes(),
        ];
        for (i, r) in out.iter_mut().enumerate() {
            r.count = inner.tier_counts[i].load(Ordering::Relaxed);
            r.bytes_on_disk = bytes[i];
            r.avg_importance = if importance[i].1 == 0 {
                0.0
            } else {
                importance[i].0 / importance[i].1 as f64
            };
            r.avg_access_count = if access[i].1 == 0 {
                0.0
            } else {
                access[i].0 as f64 / access[i].1 as f64
            };
            r.oldest_access_us = access[i].2;
        }
        Ok(out)
    }

    pub fn is_poisoned(&self) -> bool {
        self.inner.is_poisoned()
    }

    /// Makes every tier durable at the current applied LSN and trims the WAL.
    pub fn checkpoint(&self) -> Result<(), EngineError> {
        self.inner.flush_access()?;
        self.inner.checkpoint()
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
        Ok(())
    }

    fn stop_background(&self) {
        self.inner.stop.store(true, Ordering::Release);
        if let Some(handle) = self.background.lock().take() {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }
}

impl Engine {
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_background();
    }
}

/// A memory waiting for the background embedder.
#[derive(Debug, Clone)]
pub struct EmbedJob {
    pub id: Uuid,
    pub content: String,
    pub content_hash: [u8; 32],
}

/// What the embedder made of an [`EmbedJob`].
#[derive(Debug, Clone)]
pub struct EmbedResult {
    pub id: Uuid,
    /// The content hash the vector was computed for.
    pub content_hash: [u8; 32],
    /// The vector, or why there is none.
    pub outcome: Result<Vec<f32>, String>,
    pub model: String,
}

/// Opens the search structures: the saved vector index, the warm tier's persisted search
/// attributes and the working tier's memories; queues the vectors the index is missing. Also
/// returns the expiry dates it saw (active warm memories, every working-tier memory).
fn open_search(
    config: &EngineConfig,
    working: &WorkingTier,
    warm: &WarmTier,
    cold: &ColdTier,
) -> Result<(SearchIndex, HashMap<Uuid, i64>), EngineError> {
    let started = Instant::now();
    if !config.search_structures {
        let hnsw = Hnsw::detached(config.dimensions, &config.search)?;
        return Ok((
            SearchIndex::disabled(config.dimensions, &config.search, hnsw),
            HashMap::new(),
        ));
    }
    let hnsw = Hnsw::open(
        &config.data_dir.join("search"),
        config.dimensions,
        &config.search,
    )?;
    let index = SearchIndex::new(config.dimensions, &config.search, hnsw);
    let mut warm_vectors = HashMap::new();
    warm.scan_attrs(|id, row| {
        // Cold memories keep their attributes and postings in RocksDB; their vectors are in
        // the segments, not the graph.
        let tier = if cold.contains(&id) {
            Tier::Cold
        } else {
            if let Some(crc) = row.vector_crc {
                warm_vectors.insert(id, crc);
            }
            Tier::Warm
        };
        index.load_attrs(id, tier, row);
        Ok(())
    })?;
    for id in working.ids() {
        if let Some(m) = working.get(&id)? {
            index.put(&m);
        }
    }
    warm.scan_vectors(|id, v| {
        if let Some(crc) = warm_vectors.get(&id) {
            index.load_warm_vector(id, *crc, v);
        }
    })?;
    let queued = index.hnsw.reconcile(&warm_vectors, |id| warm.vector(id))?;
    tracing::info!(
        searchable = index.len(),
        vectors_to_index = queued,
        took_ms = started.elapsed().as_millis() as u64,
        "search structures loaded"
    );
    let mut expiry = HashMap::new();
    for (id, attr) in index.attrs.read().by_id.iter() {
        if let Some(at) = attr.expires_at_us {
            expiry.insert(*id, at);
        }
    }
    for id in working.ids() {
        if let Some(m) = working.get(&id)? {
            if let Some(at) = m.expires_at_us {
                expiry.insert(id, at);
            }
        }
    }
    Ok((index, expiry))
}

/// Whether `m`'s `expires_at` has passed.
fn is_expired(m: &Memory, now_us: i64) -> bool {
    m.expires_at_us.is_some_and(|at| at <= now_us)
}

/// The RocksDB part of applying `op`: blind writes only (no reads), except access deltas.
fn rocks_part(
    warm: &WarmTier,
    working: &WorkingTier,
    batch: &mut crate::warm::WarmBatch<'_>,
    op: &Op,
) -> Result<(), EngineError> {
    match op {
        Op::Put {
            kind,
            memory,
            previous_tier,
            previous_hash,
        } => {
            if *kind == PutKind::Create {
                batch.index_namespace(&memory.namespace, &memory.id);
            }
            if let Some(h) = previous_hash {
                if *h != memory.content_hash || memory.status == Status::Deleted {
                    batch.unindex_hash(&memory.namespace, h);
                }
            }
            if memory.status != Status::Deleted {
                batch.index_hash(&memory.namespace, &memory.content_hash, &memory.id);
            }
            if *previous_tier == Some(Tier::Cold) {
                // Leaving the cold tier: its segment entry is dead from now on.
                batch.delete_cold_location(&memory.id);
            }
            match memory.tier {
                Tier::Warm => batch.put_record(memory),
                _ => {
                    if *previous_tier == Some(Tier::Warm) {
                        batch.delete_record(&memory.id);
                    }
                }
            }
            batch.index_for_search(memory, *previous_tier)?;
        }
        Op::Purge {
            id,
            namespace,
            release_hash,
            previous_tier,
        } => {
            batch.unindex_namespace(namespace, id);
            if let Some(h) = release_hash {
                batch.unindex_hash(namespace, h);
            }
            match previous_tier {
                Tier::Warm => batch.delete_record(id),
                Tier::Cold => batch.delete_cold_location(id),
                Tier::Working => {}
            }
            batch.unindex_for_search(id)?;
        }
        Op::ColdSeal { segment, memories } => {
            for (m, from) in memories {
                match from {
                    // Postings, search attributes and access state stay: cold shares them.
                    Tier::Warm => batch.delete_warm_body(&m.id),
                    Tier::Working => {
                        batch.put_access(
                            &m.id,
                            m.access_count,
                            m.last_accessed_at_us.unwrap_or(i64::MIN),
                        );
                        batch.index_for_search(m, Some(Tier::Working))?;
                    }
                    Tier::Cold => {}
                }
                batch.put_cold_location(&m.id, *segment);
            }
        }
        Op::ColdCompact { segment, kept, .. } => {
            for id in kept {
                batch.put_cold_location(id, *segment);
            }
        }
        Op::Access(deltas) => {
            for d in deltas {
                if working.contains(&d.id) {
                    continue;
                }
                if let Some((count, last)) = warm.access(&d.id)? {
                    let last = last.map_or(d.last_accessed_at_us, |l| l.max(d.last_accessed_at_us));
                    batch.put_access(&d.id, count.saturating_add(d.count), last);
                }
            }
        }
    }
    Ok(())
}

/// The cold tier's part of applying `op`: register a sealed or compacted segment
/// (rebuilding its file if needed). Dropping a compaction's sources is separate.
fn cold_part(cold: &ColdTier, op: &Op) -> Result<(), EngineError> {
    match op {
        Op::ColdSeal { segment, memories } => cold.apply_seal(*segment, memories),
        Op::ColdCompact {
            segment,
            sources,
            kept,
        } => cold.register_compacted(*segment, sources, kept),
        _ => Ok(()),
    }
}

/// The working tier's share of a replay: the last operation per id, and access deltas newer
/// than that id's last image.
#[derive(Default)]
struct WorkingReplay {
    last: HashMap<Uuid, (Lsn, Option<Memory>)>,
    access: Vec<(Lsn, AccessDelta)>,
}

impl WorkingReplay {
    fn record(&mut self, lsn: Lsn, op: Op) {
        match op {
            Op::Put { memory, .. } => {
                let id = memory.id;
                let image = (memory.tier == Tier::Working).then_some(memory);
                self.last.insert(id, (lsn, image));
            }
            Op::Purge { id, .. } => {
                self.last.insert(id, (lsn, None));
            }
            Op::Access(deltas) => self.access.extend(deltas.into_iter().map(|d| (lsn, d))),
            Op::ColdSeal { memories, .. } => {
                for (m, _) in memories {
                    self.last.insert(m.id, (lsn, None));
                }
            }
            Op::ColdCompact { .. } => {}
        }
    }

    /// Removals first (they free slots), then puts, then the access deltas that came after
    /// each memory's last image.
    fn apply(self, working: &WorkingTier) -> Result<(), EngineError> {
        for (id, (_, m)) in &self.last {
            if m.is_none() {
                working.remove(id);
            }
        }
        for (_, m) in self.last.values() {
            if let Some(m) = m {
                working.put(m)?;
            }
        }
        for (lsn, d) in self.access {
            let newer = self
                .last
                .get(&d.id)
                .is_none_or(|(put_lsn, _)| lsn > *put_lsn);
            if newer {
                working.record_access(&d.id, d.count, d.last_accessed_at_us)?;
            }
        }
        Ok(())
    }
}

/// The working-tier part of applying `op`.
fn working_part(working: &WorkingTier, op: &Op) -> Result<(), EngineError> {
    match op {
        Op::Put { memory, .. } => {
            if memory.tier == Tier::Working {
                working.put(memory)?;
            } else {
                working.remove(&memory.id);
            }
        }
        Op::Purge { id, .. } => {
            working.remove(id);
        }
        Op::Access(deltas) => {
            for d in deltas {
                working.record_access(&d.id, d.count, d.last_accessed_at_us)?;
            }
        }
        Op::ColdSeal { memories, .. } => {
            for (m, from) in memories {
                if *from == Tier::Working {
                    working.remove(&m.id);
                }
            }
        }
        Op::ColdCompact { .. } => {}
    }
    Ok(())
}

impl Inner {
    pub(crate) fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub(crate) fn working(&self) -> &WorkingTier {
        &self.working
    }

    pub(crate) fn warm(&self) -> &WarmTier {
        &self.warm
    }

    pub(crate) fn cold(&self) -> &ColdTier {
        &self.cold
    }

    pub(crate) fn applied_lsn(&self) -> Lsn {
        self.applied_lsn.load(Ordering::Acquire)
    }

    /// Where `create_snapshot` puts snapshots.
    pub(crate) fn snapshots_dir(&self) -> PathBuf {
        self.config.data_dir.join("snapshots")
    }

    /// Held while a snapshot copies WAL segments, so no checkpoint trims them meanwhile.
    pub(crate) fn checkpoint_guard(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.checkpoint_lock.lock()
    }

    /// Commit time of record `lsn`, looked up in the active and archived segments.
    pub(crate) fn commit_time_of(&self, lsn: Lsn) -> Result<i64, EngineError> {
        let wal = self.config.data_dir.join("wal");
        let archive = self.config.data_dir.join("archive");
        for (index, path) in engram_wal::export::collect_segments(&[&wal, &archive])?
            .into_iter()
            .rev()
        {
            let mut found = None;
            let info = engram_wal::export::scan_file(index, &path, |r, _, _| {
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

    fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire) || self.wal.is_poisoned()
    }

    fn poison(&self, error: &EngineError) {
        if !self.poisoned.swap(true, Ordering::AcqRel) {
            tracing::error!(%error, "engine poisoned: refusing writes until restart");
        }
    }

    fn check_writable(&self) -> Result<(), EngineError> {
        if self.is_poisoned() {
            return Err(EngineError::Poisoned);
        }
        let free = self.free_disk_bytes.load(Ordering::Relaxed);
        if free < self.config.min_free_disk_bytes {
            return Err(EngineError::StorageFull(format!(
                "{free} bytes free on the data directory's filesystem, below storage.min_free_disk_bytes ({})",
                self.config.min_free_disk_bytes
            )));
        }
        Ok(())
    }

    fn validate_embedding(&self, embedding: &[f32]) -> Result<(), EngineError> {
        if embedding.len() != self.config.dimensions {
            return Err(EngineError::Invalid {
                field: "embedding",
                message: format!(
                    "has {} dimensions; this store uses {}",
                    embedding.len(),
                    self.config.dimensions
                ),
            });
        }
        if let Some(i) = embedding.iter().position(|x| !x.is_finite()) {
            return Err(EngineError::Invalid {
                field: "embedding",
                message: format!("value at index {i} is not a finite number"),
            });
        }
        Ok(())
    }

    fn validate_common(
        &self,
        content: Option<&str>,
        embedding: Option<&[f32]>,
        importance: Option<f32>,
        metadata_json: Option<&str>,
        tags: Option<&[String]>,
    ) -> Result<(), EngineError> {
        if let Some(c) = content {
            if c.is_empty() {
                return Err(EngineError::Invalid {
                    field: "content",
                    message: "must not be empty".to_owned(),
                });
            }
            if c.len() > MAX_CONTENT_BYTES {
                return Err(EngineError::TooLarge {
                    field: "content",
                    message: format!("is {} bytes; the limit is {MAX_CONTENT_BYTES}", c.len()),
                });
            }
        }
        if let Some(e) = embedding {
            self.validate_embedding(e)?;
        }
        if let Some(i) = importance {
            if !(0.0..=1.0).contains(&i) {
                return Err(EngineError::Invalid {
                    field: "importance_score",
                    message: format!("must be between 0.0 and 1.0, got {i}"),
                });
            }
        }
        if let Some(m) = metadata_json {
            if m.len() > MAX_METADATA_BYTES {
                return Err(EngineError::TooLarge {
                    field: "metadata",
                    message: format!(
                        "is {} bytes of JSON; the limit is {MAX_METADATA_BYTES}",
                        m.len()
                    ),
                });
            }
        }
        if let Some(tags) = tags {
            if tags.len() > MAX_TAGS {
                return Err(EngineError::Invalid {
                    field: "tags",
                    message: format!("has {} tags; the limit is {MAX_TAGS}", tags.len()),
                });
            }
            for tag in tags {
                if tag.is_empty() || tag.len() > MAX_TAG_BYTES {
                    return Err(EngineError::Invalid {
                        field: "tags",
                        message: format!("each tag must be 1 to {MAX_TAG_BYTES} bytes"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Every field of a memory about to be stored new (created or imported).
    fn validate_new(
        &self,
        namespace: &str,
        content: &str,
        embedding: Option<&[f32]>,
        importance: f32,
        metadata_json: &str,
        tags: &[String],
    ) -> Result<(), EngineError> {
        if !is_valid_namespace(namespace) {
            return Err(EngineError::Invalid {
                field: "namespace",
                message: "must be 1 to 128 characters of A-Z a-z 0-9 . _ : -".to_owned(),
            });
        }
        self.validate_common(
            Some(content),
            embedding,
            Some(importance),
            Some(metadata_json),
            Some(tags),
        )
    }

    fn validate_patch(&self, p: &MemoryPatch) -> Result<(), EngineError> {
        self.validate_common(
            p.content.as_deref(),
            p.embedding.as_ref().and_then(|e| e.as_deref()),
            p.importance,
            p.metadata_json.as_deref(),
            p.tags.as_deref(),
        )?;
        Ok(())
    }

    /// The latest state of `id` as the writer sees it: logged-but-unapplied first.
    fn current(&self, w: &WriterState, id: &Uuid) -> Result<Option<Memory>, EngineError> {
        if let Some((_, m)) = w.pending.get(id) {
            return Ok(m.clone());
        }
        self.read(id)
    }

    /// A memory that exists and has not expired.
    fn read_live(&self, id: &Uuid) -> Result<Option<Memory>, EngineError> {
        Ok(self.read(id)?.filter(|m| !is_expired(m, model::now_us())))
    }

    /// Purges memories whose `expires_at` has passed, a chunk per hold of the writer lock.
    fn purge_expired(&self) -> Result<(), EngineError> {
        let now = model::now_us();
        let due: Vec<Uuid> = {
            let expiry = self.expiry.lock();
            expiry
                .iter()
                .take_while(|(at, _)| *at <= now)
                .map(|(_, id)| *id)
                .collect()
        };
        for chunk in due.chunks(EVICTION_LOCK_CHUNK) {
            let mut last = None;
            let mut n = 0u64;
            {
                let mut w = self.writer.lock();
                for id in chunk {
                    // Re-checked under the writer lock: an update may have moved the date.
                    match self.current(&w, id)? {
                        Some(m) if is_expired(&m, now) => {
                            let (lsn, _) = self.log_delete(&mut w, id, true)?;
                            last = Some(lsn);
                            n += 1;
                        }
                        _ => {}
                    }
                }
            }
            if let Some(lsn) = last {
                self.commit(lsn)?;
                self.counters
                    .memories_expired
                    .fetch_add(n, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Who holds `hash` in `namespace`, counting logged-but-unapplied claims and releases.
    fn hash_holder(
        &self,
        w: &WriterState,
        namespace: &str,
        hash: &[u8; 32],
    ) -> Result<Option<Uuid>, EngineError> {
        if let Some((_, holder)) = w.pending_hashes.get(&(namespace.to_owned(), *hash)) {
            return Ok(*holder);
        }
        self.warm.find_hash(namespace, hash)
    }

    /// Appends `op` to the WAL and queues it for apply. The caller holds the writer lock.
    fn log(&self, w: &mut WriterState, mut op: Op) -> Result<Lsn, EngineError> {
        if let Op::Put { memory, .. } = &mut op {
            // Only a seal puts memories in cold (segments are immutable); callers redirect a
            // changed cold memory to warm themselves, this only guards the invariant.
            debug_assert!(memory.tier != Tier::Cold, "a Put into the cold tier");
            if memory.tier == Tier::Cold {
                memory.tier = Tier::Warm;
            }
        }
        let payload = codec::encode_op(&op);
        let (lsn, _) = self.wal.append(&payload).map_err(|e| match e {
            WalError::RecordTooLarge { len } => EngineError::TooLarge {
                field: "body",
                message: format!("the memory encodes to {len} bytes, above the WAL record limit"),
            },
            other => EngineError::from(other),
        })?;
        match &mut op {
            Op::Put {
                memory,
                previous_hash,
                ..
            } => {
                memory.lsn = lsn;
                if let Some(h) = previous_hash {
                    if *h != memory.content_hash || memory.status == Status::Deleted {
                        w.pending_hashes
                            .insert((memory.namespace.clone(), *h), (lsn, None));
                    }
                }
                if memory.status != Status::Deleted {
                    w.pending_hashes.insert(
                        (memory.namespace.clone(), memory.content_hash),
                        (lsn, Some(memory.id)),
                    );
                }
                w.pending.insert(memory.id, (lsn, Some(memory.clone())));
            }
            Op::Purge {
                id,
                namespace,
                release_hash,
                ..
            } => {
                if let Some(h) = release_hash {
                    w.pending_hashes
                        .insert((namespace.clone(), *h), (lsn, None));
                }
                w.pending.insert(*id, (lsn, None));
            }
            Op::ColdSeal { memories, .. } => {
                for (m, _) in memories.iter() {
                    w.pending.insert(m.id, (lsn, Some(m.clone())));
                }
            }
            Op::Access(_) | Op::ColdCompact { .. } => {}
        }
        self.queue.lock().push_back((lsn, op));
        Ok(lsn)
    }

    /// Logs every item under one hold of the writer lock, then makes them durable with one
    /// group commit. One result per item; if the commit fails, every logged item fails with it.
    fn log_batch<T>(
        &self,
        items: Vec<T>,
        log_one: impl Fn(&Inner, &mut WriterState, T) -> Result<Memory, EngineError>,
    ) -> Vec<Result<Memory, EngineError>> {
        if let Err(e) = self.check_writable() {
            return items.iter().map(|_| Err(e.clone_kind())).collect();
        }
        let mut results = Vec::with_capacity(items.len());
        let mut last_lsn = 0;
        {
            let mut w = self.writer.lock();
            for item in items {
                let result = log_one(self, &mut w, item);
                if let Ok(m) = &result {
                    last_lsn = m.lsn;
                }
                results.push(result);
            }
        }
        if last_lsn > 0 {
            if let Err(e) = self.commit(last_lsn) {
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(e.clone_kind());
                }
            }
        }
        results
    }

    fn log_create(
        &self,
        w: &mut WriterState,
        item: NewMemory,
        now: i64,
    ) -> Result<Memory, EngineError> {
        self.validate_new(
            &item.namespace,
            &item.content,
            item.embedding.as_deref(),
            item.importance,
            &item.metadata_json,
            &item.tags,
        )?;
        let hash = content_hash(&item.content);
        if let Some(existing) = self.hash_holder(w, &item.namespace, &hash)? {
            return Err(EngineError::Duplicate { existing });
        }
        // A new memory belongs in the working tier; if every memory there is an in-flight write
        // (nothing can be evicted yet), it starts in warm rather than failing.
        let tier = if self.make_room(w, 1)? {
            Tier::Working
        } else {
            Tier::Warm
        };
        let memory = Memory {
            id: Uuid::now_v7(),
            namespace: item.namespace,
            content: item.content,
            content_hash: hash,
            embedding_status: self.initial_embedding_status(item.embedding.is_some()),
            embedding: item.embedding,
            embedding_model: None,
            tier,
            status: Status::Active,
            importance: item.importance,
            access_count: 0,
            last_accessed_at_us: None,
            metadata_json: item.metadata_json,
            tags: item.tags,
            parent_id: item.parent_id,
            created_at_us: item.created_at_us.unwrap_or(now),
            updated_at_us: now,
            expires_at_us: item.expires_at_us,
            version: 1,
            lsn: 0,
        };
        self.log_new(w, memory)
    }

    /// Logs a memory that did not exist before (created or imported) in its tier.
    fn log_new(&self, w: &mut WriterState, memory: Memory) -> Result<Memory, EngineError> {
        let tier = memory.tier;
        let lsn = self.log(
            w,
            Op::Put {
                kind: PutKind::Create,
                memory: memory.clone(),
                previous_tier: None,
                previous_hash: None,
            },
        )?;
        self.adjust_projected(w, None, Some(tier));
        Ok(Memory { lsn, ..memory })
    }

    /// A memory stored with a vector is ready; without one it waits for the embedder if there
    /// is one.
    fn initial_embedding_status(&self, has_vector: bool) -> EmbeddingStatus {
        if has_vector {
            EmbeddingStatus::Ready
        } else if self.config.auto_embed {
            EmbeddingStatus::Pending
        } else {
            EmbeddingStatus::None
        }
    }

    fn log_embed(&self, w: &mut WriterState, r: EmbedResult) -> Result<Memory, EngineError> {
        let Some(current) = self.current(w, &r.id)? else {
            return Err(EngineError::NotFound(r.id));
        };
        if current.content_hash != r.content_hash
            || current.embedding_status != EmbeddingStatus::Pending
            || current.status == Status::Deleted
        {
            return Err(EngineError::Invalid {
                field: "content",
                message: "changed since the embedding was computed".to_owned(),
            });
        }
        let mut next = current.clone();
        match r.outcome {
            Ok(v) => {
                self.validate_embedding(&v)?;
                next.embedding = Some(v);
                next.embedding_status = EmbeddingStatus::Ready;
                next.embedding_model = Some(r.model);
            }
            Err(reason) => next.embedding_status = EmbeddingStatus::Failed(reason),
        }
        if next.tier == Tier::Cold {
            next.tier = Tier::Warm;
        }
        let lsn = self.log(
            w,
            Op::Put {
                kind: PutKind::Embed,
                memory: next.clone(),
                previous_tier: Some(current.tier),
                previous_hash: Some(current.content_hash),
            },
        )?;
        Ok(Memory { lsn, ..next })
    }

    fn log_import(&self, w: &mut WriterState, mut memory: Memory) -> Result<Memory, EngineError> {
        self.validate_new(
            &memory.namespace,
            &memory.content,
            memory.embedding.as_deref(),
            memory.importance,
            &memory.metadata_json,
            &memory.tags,
        )?;
        if memory.content_hash != content_hash(&memory.content) {
            return Err(EngineError::Invalid {
                field: "content_hash",
                message: "does not match the content".to_owned(),
            });
        }
        if self.current(w, &memory.id)?.is_some() {
            return Err(EngineError::Invalid {
                field: "id",
                message: format!("{} exists already", memory.id),
            });
        }
        if memory.status != Status::Deleted {
            if let Some(existing) = self.hash_holder(w, &memory.namespace, &memory.content_hash)? {
                return Err(EngineError::Duplicate { existing });
            }
        }
        if memory.embedding.is_some() {
            memory.embedding_status = EmbeddingStatus::Ready;
        } else if memory.embedding_status == EmbeddingStatus::Ready {
            memory.embedding_status = self.initial_embedding_status(false);
        }
        if memory.tier == Tier::Cold || (memory.tier == Tier::Working && !self.make_room(w, 1)?) {
            memory.tier = Tier::Warm;
        }
        self.log_new(w, memory)
    }

    fn log_update(
        &self,
        w: &mut WriterState,
        id: &Uuid,
        patch: MemoryPatch,
    ) -> Result<Memory, EngineError> {
        let Some(current) = self
            .current(w, id)?
            .filter(|m| !is_expired(m, model::now_us()))
        else {
            return Err(EngineError::NotFound(*id));
        };
        if current.status == Status::Deleted && patch.status.is_none() {
            return Err(EngineError::NotFound(*id));
        }
        let mut next = current.clone();
        let mut content_changed = false;
        if let Some(content) = patch.content {
            if content != current.content {
                next.content_hash = content_hash(&content);
                next.content = content;
                content_changed = true;
                // The old vector described the old text.
                next.embedding = None;
            }
        }
        let vector_given = patch.embedding.is_some();
        if let Some(e) = patch.embedding {
            next.embedding = e;
        }
        if content_changed || vector_given {
            next.embedding_model = None;
            next.embedding_status = self.initial_embedding_status(next.embedding.is_some());
        }
        if let Some(i) = patch.importance {
            next.importance = i;
        }
        if let Some(m) = patch.metadata_json {
            next.metadata_json = m;
        }
        if let Some(t) = patch.tags {
            next.tags = t;
        }
        if let Some(s) = patch.status {
            next.status = s;
        }
        if let Some(p) = patch.parent_id {
            next.parent_id = p;
        }
        if let Some(x) = patch.expires_at_us {
            next.expires_at_us = x;
        }
        if let Some(t) = patch.tier {
            next.tier = t;
        }
        // A cold segment is immutable: a changed memory leaves it (for warm, unless the patch
        // names a tier). Moving into cold is a seal, done by `Engine::update` after this.
        if next.tier == Tier::Cold {
            next.tier = Tier::Warm;
        }
        let holds_hash = current.status != Status::Deleted;
        let claims_hash = next.status != Status::Deleted;
        if claims_hash && (content_changed || !holds_hash) {
            if let Some(existing) = self.hash_holder(w, &next.namespace, &next.content_hash)? {
                if existing != *id {
                    return Err(EngineError::Duplicate { existing });
                }
            }
        }
        if next.tier == Tier::Working && current.tier != Tier::Working && !self.make_room(w, 1)? {
            return Err(EngineError::Busy(
                "the working tier is full of in-flight writes; retry",
            ));
        }
        next.version = current.version + 1;
        next.updated_at_us = model::now_us().max(current.updated_at_us);
        let lsn = self.log(
            w,
            Op::Put {
                kind: PutKind::Update,
                memory: next.clone(),
                previous_tier: Some(current.tier),
                previous_hash: holds_hash.then_some(current.content_hash),
            },
        )?;
        self.adjust_projected(w, Some(current.tier), Some(next.tier));
        Ok(Memory { lsn, ..next })
    }

    fn log_delete(
        &self,
        w: &mut WriterState,
        id: &Uuid,
        purge: bool,
    ) -> Result<(Lsn, Deleted), EngineError> {
        let Some(current) = self.current(w, id)? else {
            return Err(EngineError::NotFound(*id));
        };
        if !purge && is_expired(&current, model::now_us()) {
            return Err(EngineError::NotFound(*id));
        }
        let now = model::now_us().max(current.updated_at_us);
        let holds_hash = current.status != Status::Deleted;
        if purge {
            let lsn = self.log(
                w,
                Op::Purge {
                    id: *id,
                    namespace: current.namespace.clone(),
                    release_hash: holds_hash.then_some(current.content_hash),
                    previous_tier: current.tier,
                },
            )?;
            self.adjust_projected(w, Some(current.tier), None);
            return Ok((
                lsn,
                Deleted {
                    id: *id,
                    deleted_at_us: now,
                    purged: true,
                },
            ));
        }
        if current.status == Status::Deleted {
            return Err(EngineError::NotFound(*id));
        }
        let mut next = current.clone();
        next.status = Status::Deleted;
        next.version += 1;
        next.updated_at_us = now;
        if next.tier == Tier::Cold {
            // Segments are immutable: the deleted state is kept in warm.
            next.tier = Tier::Warm;
        }
        let lsn = self.log(
            w,
            Op::Put {
                kind: PutKind::Update,
                memory: next,
                previous_tier: Some(current.tier),
                previous_hash: Some(current.content_hash),
            },
        )?;
        Ok((
            lsn,
            Deleted {
                id: *id,
                deleted_at_us: now,
                purged: false,
            },
        ))
    }

    fn adjust_projected(&self, w: &mut WriterState, from: Option<Tier>, to: Option<Tier>) {
        if from == Some(Tier::Working) && to != Some(Tier::Working) {
            w.working_projected = w.working_projected.saturating_sub(1);
        }
        if to == Some(Tier::Working) && from != Some(Tier::Working) {
            w.working_projected += 1;
        }
    }

    /// Before `incoming` memories enter the working tier: if it would exceed its capacity, log
    /// moves of the least valuable (lowest importance, then least recently used) to warm.
    /// `Ok(false)` when there is still no room: everything in the tier is an in-flight write.
    fn make_room(&self, w: &mut WriterState, incoming: usize) -> Result<bool, EngineError> {
        let capacity = self.config.working_capacity;
        if w.working_projected + incoming <= capacity {
            return Ok(true);
        }
        // Evict a twentieth of the tier at a time (at most EVICTION_CHUNK): the scan that picks
        // victims reads every slot header, so it should run once per many creates.
        let started = Instant::now();
        let excess = w.working_projected + incoming - capacity;
        let want = excess + (capacity / 20).min(EVICTION_CHUNK);
        let mut moved = 0;
        for id in self.eviction_order() {
            if moved >= want {
                break;
            }
            if w.pending.contains_key(&id) {
                continue;
            }
            if self.log_move_to_warm(w, &id)?.is_some() {
                moved += 1;
            }
        }
        self.counters
            .count_move(Tier::Working, Tier::Warm, moved as u64);
        // Every writer waits for this: background eviction fell behind.
        tracing::info!(
            moved,
            took_ms = started.elapsed().as_millis() as u64,
            "working tier full: a writer evicted to warm"
        );
        Ok(w.working_projected + incoming <= capacity)
    }

    /// Working-tier memories, least valuable first: lowest importance, then least recently used.
    fn eviction_order(&self) -> Vec<Uuid> {
        let mut candidates = self.working.eviction_inputs();
        candidates.sort_by(|a, b| {
            a.importance
                .total_cmp(&b.importance)
                .then(a.last_used_us.cmp(&b.last_used_us))
        });
        candidates.into_iter().map(|c| c.id).collect()
    }

    /// Logs a move of `id` from the working tier to warm. `None` if it is no longer there.
    fn log_move_to_warm(&self, w: &mut WriterState, id: &Uuid) -> Result<Option<Lsn>, EngineError> {
        let Some(mut memory) = self.working.get(id)? else {
            return Ok(None);
        };
        memory.tier = Tier::Warm;
        let holds = memory.status != Status::Deleted;
        let hash = memory.content_hash;
        let lsn = self.log(
            w,
            Op::Put {
                kind: PutKind::Move,
                memory,
                previous_tier: Some(Tier::Working),
                previous_hash: holds.then_some(hash),
            },
        )?;
        w.working_projected -= 1;
        Ok(Some(lsn))
    }

    /// Background eviction: above 95% of capacity, move the least valuable memories to warm
    /// until 90%, a few hundred per hold of the writer lock, so writers never wait for the
    /// victim scan. `make_room` remains for bursts this cannot keep up with.
    fn evict_in_background(&self) -> Result<(), EngineError> {
        let capacity = self.config.working_capacity;
        let high = capacity - capacity / 20;
        let low = capacity - capacity / 10;
        let projected = self.writer.lock().working_projected;
        if projected <= high {
            return Ok(());
        }
        let mut want = projected - low;
        let mut order = self.eviction_order().into_iter();
        while want > 0 && !self.stop.load(Ordering::Acquire) {
            let mut last = None;
            let mut n = 0;
            {
                let mut w = self.writer.lock();
                while n < EVICTION_LOCK_CHUNK && want > 0 {
                    let Some(id) = order.next() else {
                        break;
                    };
                    if w.pending.contains_key(&id) {
                        continue;
                    }
                    if let Some(lsn) = self.log_move_to_warm(&mut w, &id)? {
                        last = Some(lsn);
                        want -= 1;
                        n += 1;
                    }
                }
            }
            let Some(last) = last else { break };
            self.counters
                .count_move(Tier::Working, Tier::Warm, n as u64);
            self.commit(last)?;
        }
        Ok(())
    }

    /// Moves `ids` (working or warm, not waiting for an embedding) into new cold segments:
    /// each segment is written first, then sealed by one WAL record carrying the images, under
    /// the writer lock and only if none of them changed since it was read (else the changed
    /// ones are left out and the segment is written again). Returns the memories moved, as
    /// they were before the move. `explicit`: a client asked (a pending embedding is no bar).
    fn seal(&self, ids: Vec<Uuid>, explicit: bool) -> Result<Vec<Memory>, EngineError> {
        // Pipelined: one thread reads the memories and writes segment files while this one
        // logs and applies the previous segment.
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<Memory>, u64, Vec<Memory>)>(1);
            let producer = scope.spawn(move || -> Result<(), EngineError> {
                let send = |batch: Vec<Memory>| -> Result<bool, EngineError> {
                    let (segment, images) = self.prepare_seal(&batch)?;
                    Ok(tx.send((batch, segment, images)).is_ok())
                };
                let mut batch: Vec<Memory> = Vec::new();
                let mut bytes = 0usize;
                for chunk in ids.chunks(256) {
                    // Warm memories with one batched read; anything else (working, or moved
                    // since) one by one.
                    let mut found = self.warm.get_many(chunk)?;
                    for (id, warm) in chunk.iter().zip(found.iter_mut()) {
                        let m = match warm.take() {
                            Some(m) => Some(m),
                            None => self.read(id)?,
                        };
                        let Some(m) = m.filter(|m| {
                            m.tier != Tier::Cold
                                && (explicit || m.embedding_status != EmbeddingStatus::Pending)
                        }) else {
                            continue;
                        };
                        bytes += m.content.len()
                            + m.metadata_json.len()
                            + m.embedding.as_ref().map_or(0, |e| e.len() * 4)
                            + 256;
                        batch.push(m);
                        if batch.len() >= SEAL_MAX_MEMORIES || bytes >= SEAL_MAX_BYTES {
                            if !send(std::mem::take(&mut batch))? {
                                return Ok(());
                            }
                            bytes = 0;
                        }
                    }
                }
                if !batch.is_empty() {
                    send(batch)?;
                }
                Ok(())
            });
            let mut moved = Vec::new();
            let mut failed = None;
            for (batch, segment, images) in rx {
                let sealed = match self.log_seal(batch, segment, images) {
                    Ok(Ok(m)) => Ok(m),
                    Ok(Err(rest)) => self.seal_batch(rest),
                    Err(e) => Err(e),
                };
                match sealed {
                    Ok(m) => moved.extend(m),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            let produced = producer.join().expect("the seal producer does not panic");
            if let Some(e) = failed {
                return Err(e);
            }
            produced?;
            Ok(moved)
        })
    }

    /// Writes `batch` as a new segment file: (segment id, the cold images).
    fn prepare_seal(&self, batch: &[Memory]) -> Result<(u64, Vec<Memory>), EngineError> {
        let segment = self.cold.allocate_id();
        let images: Vec<Memory> = batch
            .iter()
            .map(|m| Memory {
                tier: Tier::Cold,
                ..m.clone()
            })
            .collect();
        self.cold.write(segment, &images)?;
        Ok((segment, images))
    }

    /// One segment's worth of [`Inner::seal`], retried without the memories that changed.
    fn seal_batch(&self, mut batch: Vec<Memory>) -> Result<Vec<Memory>, EngineError> {
        loop {
            if batch.is_empty() {
                return Ok(batch);
            }
            let (segment, images) = self.prepare_seal(&batch)?;
            match self.log_seal(batch, segment, images)? {
                Ok(moved) => return Ok(moved),
                Err(rest) => batch = rest,
            }
        }
    }

    /// Logs and applies the seal of `batch` (written as `segment`) if none of its memories
    /// changed since they were read: `Ok(moved)`. Otherwise deletes the file and returns the
    /// unchanged rest: `Err(rest)`.
    fn log_seal(
        &self,
        mut batch: Vec<Memory>,
        segment: u64,
        images: Vec<Memory>,
    ) -> Result<Result<Vec<Memory>, Vec<Memory>>, EngineError> {
        let warm_ids: Vec<Uuid> = batch
            .iter()
            .filter(|m| m.tier == Tier::Warm)
            .map(|m| m.id)
            .collect();
        let logged = {
            let mut w = self.writer.lock();
            // Unchanged since read: nothing logged for it since, and the applied image has
            // the LSN read (one batched read of the warm records' LSNs, not a read of each
            // memory, to keep the writer lock short).
            let mut warm_lsns = warm_ids
                .iter()
                .copied()
                .zip(self.warm.record_lsns(&warm_ids)?)
                .collect::<HashMap<Uuid, Option<u64>>>();
            let mut changed = Vec::new();
            for (i, m) in batch.iter().enumerate() {
                let same = !w.pending.contains_key(&m.id)
                    && match m.tier {
                        Tier::Warm => warm_lsns.remove(&m.id).flatten() == Some(m.lsn),
                        _ => self.working.get(&m.id)?.is_some_and(|c| c.lsn == m.lsn),
                    };
                if !same {
                    changed.push(i);
                }
            }
            if changed.is_empty() {
                let op = Op::ColdSeal {
                    segment,
                    memories: images
                        .into_iter()
                        .zip(batch.iter().map(|m| m.tier))
                        .collect(),
                };
                let lsn = self.log(&mut w, op)?;
                for m in &batch {
                    self.adjust_projected(&mut w, Some(m.tier), Some(Tier::Cold));
                }
                Some(lsn)
            } else {
                for i in changed.into_iter().rev() {
                    batch.remove(i);
                }
                None
            }
        };
        match logged {
            Some(lsn) => {
                self.commit(lsn)?;
                for m in &batch {
                    self.counters.count_move(m.tier, Tier::Cold, 1);
                }
                Ok(Ok(batch))
            }
            None => {
                // Never logged: nothing names it.
                let path = self
                    .cold
                    .dir()
                    .join(crate::coldtier::segment_file_name(segment));
                let _ = std::fs::remove_file(path);
                Ok(Err(batch))
            }
        }
    }

    /// Moves `id` one tier up (cold → warm → working). `None` if it is not there any more.
    fn log_promotion(
        &self,
        w: &mut WriterState,
        id: &Uuid,
    ) -> Result<Option<(Lsn, Tier, Tier)>, EngineError> {
        let Some(current) = self.current(w, id)? else {
            return Ok(None);
        };
        if current.status == Status::Deleted || is_expired(&current, model::now_us()) {
            return Ok(None);
        }
        let to = match current.tier {
            Tier::Cold => Tier::Warm,
            Tier::Warm => Tier::Working,
            Tier::Working => return Ok(None),
        };
        if to == Tier::Working && !self.make_room(w, 1)? {
            return Ok(None);
        }
        let from = current.tier;
        let hash = current.content_hash;
        let lsn = self.log(
            w,
            Op::Put {
                kind: PutKind::Move,
                memory: Memory {
                    tier: to,
                    ..current
                },
                previous_tier: Some(from),
                previous_hash: Some(hash),
            },
        )?;
        self.adjust_projected(w, Some(from), Some(to));
        Ok(Some((lsn, from, to)))
    }

    /// Promotes the memories used often enough since their last move.
    fn promote_queued(&self) -> Result<Vec<PlannedMove>, EngineError> {
        let ids: Vec<Uuid> = std::mem::take(&mut *self.promote.lock())
            .into_iter()
            .collect();
        let mut moves = Vec::new();
        for chunk in ids.chunks(EVICTION_LOCK_CHUNK) {
            let mut last = None;
            {
                let mut w = self.writer.lock();
                for id in chunk {
                    if let Some((lsn, from, to)) = self.log_promotion(&mut w, id)? {
                        last = Some(lsn);
                        moves.push(PlannedMove {
                            id: *id,
                            from,
                            to,
                            retention: 1.0,
                            reason: "used again",
                        });
                    }
                }
            }
            if let Some(lsn) = last {
                self.commit(lsn)?;
            }
        }
        for m in &moves {
            self.counters.count_move(m.from, m.to, 1);
        }
        Ok(moves)
    }

    /// The policy's demotions: working and warm memories whose retention fell below their
    /// tier's threshold, least retained first.
    fn plan_demotions(&self) -> Result<Vec<PlannedMove>, EngineError> {
        let policy = &self.config.migration;
        let now = model::now_us();
        let idle = |last: i64| (now - last) as f64 / 1e6;
        let mut moves = Vec::new();
        for s in self.working.eviction_inputs() {
            if let Some((to, r)) = policy.demotion(
                Tier::Working,
                idle(s.last_used_us),
                s.access_count,
                s.importance,
            ) {
                moves.push(PlannedMove {
                    id: s.id,
                    from: Tier::Working,
                    to,
                    retention: r,
                    reason: "retention below working_to_warm_after",
                });
            }
        }
        // Warm: active memories (their attributes are in memory), with access state from
        // RocksDB.
        let mut access: HashMap<Uuid, (u64, Option<i64>)> = HashMap::new();
        self.warm.scan_access(|id, count, last| {
            access.insert(id, (count, last));
        })?;
        // Copy out under the read lock (appliers wait for it), decide outside.
        let warm: Vec<(Uuid, f32, i64)> = self
            .search
            .attrs
            .read()
            .by_id
            .iter()
            .filter(|(_, a)| {
                a.tier == Tier::Warm && a.importance < policy.min_importance_to_stay_warm
            })
            .map(|(id, a)| (*id, a.importance, a.created_at_us))
            .collect();
        for (id, importance, created) in warm {
            let (count, last) = access.get(&id).copied().unwrap_or((0, None));
            let last = last.unwrap_or(created);
            if let Some((to, r)) = policy.demotion(Tier::Warm, idle(last), count, importance) {
                moves.push(PlannedMove {
                    id,
                    from: Tier::Warm,
                    to,
                    retention: r,
                    reason: "retention below warm_to_cold_after",
                });
            }
        }
        moves.sort_by(|a, b| a.retention.total_cmp(&b.retention));
        Ok(moves)
    }

    /// Runs the migration policy now: promotions of memories used again, then demotions.
    pub(crate) fn migrate(&self, dry_run: bool) -> Result<MigrationReport, EngineError> {
        let _one = self.migration_lock.lock();
        let started = Instant::now();
        let planned = self.plan_demotions()?;
        if dry_run {
            let mut moves: Vec<PlannedMove> = self
                .promote
                .lock()
                .iter()
                .filter_map(|id| {
                    let m = self.read(id).ok().flatten()?;
                    let to = match m.tier {
                        Tier::Cold => Tier::Warm,
                        Tier::Warm => Tier::Working,
                        Tier::Working => return None,
                    };
                    Some(PlannedMove {
                        id: *id,
                        from: m.tier,
                        to,
                        retention: 1.0,
                        reason: "used again",
                    })
                })
                .collect();
            moves.extend(planned);
            return Ok(MigrationReport {
                dry_run,
                moves,
                skipped: 0,
                took: started.elapsed(),
            });
        }
        let mut moves = self.promote_queued()?;
        let mut skipped = 0;
        // Working → warm, a chunk per hold of the writer lock.
        let to_warm: Vec<&PlannedMove> = planned.iter().filter(|m| m.to == Tier::Warm).collect();
        for chunk in to_warm.chunks(EVICTION_LOCK_CHUNK) {
            let mut last = None;
            {
                let mut w = self.writer.lock();
                for m in chunk {
                    if w.pending.contains_key(&m.id) {
                        skipped += 1;
                        continue;
                    }
                    match self.log_move_to_warm(&mut w, &m.id)? {
                        Some(lsn) => {
                            last = Some(lsn);
                            moves.push((*m).clone());
                        }
                        None => skipped += 1,
                    }
                }
            }
            if let Some(lsn) = last {
                self.commit(lsn)?;
            }
        }
        self.counters.count_move(
            Tier::Working,
            Tier::Warm,
            moves.iter().filter(|m| m.from == Tier::Working).count() as u64,
        );
        // Warm → cold, a segment at a time.
        let to_cold: Vec<&PlannedMove> = planned.iter().filter(|m| m.to == Tier::Cold).collect();
        // Sealed in id order: the warm reads are then nearly sequential, and each segment
        // holds a range of ids (all planned moves are made, so retention order does not
        // matter here).
        let mut cold_ids: Vec<Uuid> = to_cold.iter().map(|m| m.id).collect();
        cold_ids.sort_unstable();
        let sealed: std::collections::HashSet<Uuid> = self
            .seal(cold_ids, false)?
            .into_iter()
            .map(|m| m.id)
            .collect();
        for m in to_cold {
            if sealed.contains(&m.id) {
                moves.push(m.clone());
            } else {
                skipped += 1;
            }
        }
        Ok(MigrationReport {
            dry_run,
            moves,
            skipped,
            took: started.elapsed(),
        })
    }

    /// Rewrites cold segments without their dead entries: those above the dead ratio (all of
    /// them with `force`), merged with small segments, into outputs of at most
    /// [`COLD_COMPACT_MAX`] entries.
    pub(crate) fn compact(&self, force: bool) -> Result<CompactionReport, EngineError> {
        let _one = self.migration_lock.lock();
        let started = Instant::now();
        let ratio = self.config.migration.compact_dead_ratio;
        let stats = self.cold.segment_stats();
        let chosen: Vec<&crate::coldtier::ColdSegmentStats> = stats
            .iter()
            .filter(|s| {
                let dead = s.entries - s.live.min(s.entries);
                (dead > 0 && (force || dead as f64 >= ratio * s.entries as f64))
                    || s.entries < COLD_SMALL_SEGMENT
            })
            .collect();
        // Compacting a single small segment with nothing dead gains nothing.
        let worth = chosen.iter().any(|s| s.live < s.entries) || chosen.len() > 1;
        let mut report = CompactionReport {
            bytes_before: self.cold.disk_bytes(),
            ..CompactionReport::default()
        };
        if !worth {
            return Ok(report);
        }
        let mut groups: Vec<Vec<u64>> = vec![Vec::new()];
        let mut live = 0;
        for s in &chosen {
            if live + s.live > COLD_COMPACT_MAX && !groups.last().is_some_and(Vec::is_empty) {
                groups.push(Vec::new());
                live = 0;
            }
            groups.last_mut().expect("one group").push(s.id);
            live += s.live;
        }
        for group in groups {
            if group.is_empty()
                || (group.len() == 1
                    && stats
                        .iter()
                        .any(|s| s.id == group[0] && s.live == s.entries))
            {
                continue;
            }
            let kept = self.cold.live_ids(&group);
            let memories = self.cold.collect(&group, &kept)?;
            let segment = if kept.is_empty() {
                0
            } else {
                let id = self.cold.allocate_id();
                self.cold.write(id, &memories)?;
                id
            };
            let lsn = {
                let mut w = self.writer.lock();
                // Entries that died since, or will when a logged change applies, are left out
                // of the record (the file then no longer matches it and is rebuilt when
                // applied): a kept id must still be cold when the record applies.
                let kept: Vec<Uuid> = self
                    .cold
                    .live_ids(&group)
                    .into_iter()
                    .filter(|id| !w.pending.contains_key(id))
                    .collect();
                self.log(
                    &mut w,
                    Op::ColdCompact {
                        segment,
                        sources: group.clone(),
                        kept,
                    },
                )?
            };
            self.commit(lsn)?;
            let entries: usize = stats
                .iter()
                .filter(|s| group.contains(&s.id))
                .map(|s| s.entries)
                .sum();
            report.segments_in += group.len();
            report.segments_out += usize::from(segment != 0);
            report.live_kept += memories.len();
            report.dead_dropped += entries.saturating_sub(memories.len());
        }
        report.bytes_after = self.cold.disk_bytes();
        report.took = started.elapsed();
        self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        self.counters
            .compaction_micros
            .fetch_add(report.took.as_micros() as u64, Ordering::Relaxed);
        self.counters
            .compaction_dead_dropped
            .fetch_add(report.dead_dropped as u64, Ordering::Relaxed);
        Ok(report)
    }

    /// Waits until `lsn` is durable, then applies everything durable in LSN order.
    fn commit(&self, lsn: Lsn) -> Result<(), EngineError> {
        if let Err(e) = self.wal.sync(lsn) {
            let e = EngineError::from(e);
            self.poison(&e);
            return Err(EngineError::Poisoned);
        }
        self.apply_durable(lsn)
    }

    /// Acknowledged LSN: fsync'd in `always` mode, written otherwise.
    fn ack_lsn(&self) -> Lsn {
        match self.wal.sync_mode() {
            SyncMode::Always => self.wal.durable_lsn(),
            _ => self.wal.written_lsn(),
        }
    }

    fn apply_durable(&self, lsn: Lsn) -> Result<(), EngineError> {
        if self.applied_lsn.load(Ordering::Acquire) >= lsn {
            return Ok(());
        }
        let _apply = self.apply_lock.lock();
        let ack = self.ack_lsn();
        let ready: Vec<(Lsn, Op)> = {
            let mut q = self.queue.lock();
            let n = q.iter().take_while(|(l, _)| *l <= ack).count();
            q.drain(..n).collect()
        };
        let mut start = 0;
        while start < ready.len() {
            let end = group_end(&ready, start);
            if let Err(e) = self.apply_group(&ready[start..end]) {
                self.poison(&e);
                return Err(e);
            }
            self.applied_lsn.store(ready[end - 1].0, Ordering::Release);
            start = end;
        }
        if !ready.is_empty() {
            let mut w = self.writer.lock();
            for (l, op) in &ready {
                for id in op_ids(op) {
                    if w.pending.get(&id).is_some_and(|(pl, _)| pl == l) {
                        w.pending.remove(&id);
                    }
                }
                for key in op_hashes(op) {
                    if w.pending_hashes.get(&key).is_some_and(|(pl, _)| pl == l) {
                        w.pending_hashes.remove(&key);
                    }
                }
            }
        }
        if self.applied_lsn.load(Ordering::Acquire) < lsn {
            return Err(EngineError::Busy(
                "record not applied after it became durable",
            ));
        }
        Ok(())
    }

    /// Applies durable records (distinct ids, see [`group_end`]) in an order that keeps each
    /// visible to lock-free readers at every moment and never needs more working-tier slots
    /// than the log's own order would:
    /// - a promotion into the working tier (alone in its group) is put there before RocksDB
    ///   drops it;
    /// - otherwise RocksDB first (a memory moving out is in warm before it leaves working), then
    ///   working-tier removals (freeing slots), then working-tier puts.
    fn apply_group(&self, group: &[(Lsn, Op)]) -> Result<(), EngineError> {
        if let [(lsn, op @ (Op::ColdSeal { .. } | Op::ColdCompact { .. }))] = group {
            return self.apply_cold(*lsn, op);
        }
        let into_working =
            |op: &Op| matches!(op, Op::Put { memory, .. } if memory.tier == Tier::Working);
        for (_, op) in group.iter().filter(|(_, op)| is_promotion(op)) {
            working_part(&self.working, op)?;
        }
        let mut batch = self.warm.batch();
        for (_, op) in group {
            rocks_part(&self.warm, &self.working, &mut batch, op)?;
        }
        batch.commit(group.last().expect("groups are not empty").0)?;
        for (_, op) in group.iter().filter(|(_, op)| !into_working(op)) {
            working_part(&self.working, op)?;
        }
        for (_, op) in group
            .iter()
            .filter(|(_, op)| into_working(op) && !is_promotion(op))
        {
            working_part(&self.working, op)?;
        }
        for (_, op) in group {
            // Leaving the cold tier: the segment entry is dead once warm or working has it.
            match op {
                Op::Put {
                    memory,
                    previous_tier: Some(Tier::Cold),
                    ..
                } if memory.tier != Tier::Cold => self.cold.remove_location(&memory.id),
                Op::Purge {
                    id,
                    previous_tier: Tier::Cold,
                    ..
                } => self.cold.remove_location(id),
                _ => {}
            }
            self.count_tiers(op);
            self.index_for_search(op);
        }
        Ok(())
    }

    /// Applies a seal or a compaction so that a lock-free reader (working → warm → cold) finds
    /// every memory at every moment: the segment is registered and the locations point to it
    /// before RocksDB drops the warm copies and the working tier its slots; a compaction's
    /// sources are dropped last.
    fn apply_cold(&self, lsn: Lsn, op: &Op) -> Result<(), EngineError> {
        cold_part(&self.cold, op)?;
        match op {
            Op::ColdSeal { segment, memories } => {
                for (m, _) in memories {
                    self.cold.set_location(m.id, *segment);
                }
            }
            Op::ColdCompact { segment, kept, .. } => {
                for id in kept {
                    self.cold.set_location(*id, *segment);
                }
            }
            _ => {}
        }
        let mut batch = self.warm.batch();
        rocks_part(&self.warm, &self.working, &mut batch, op)?;
        batch.commit(lsn)?;
        working_part(&self.working, op)?;
        if let Op::ColdCompact { sources, .. } = op {
            self.cold.drop_segments(lsn, sources)?;
        }
        self.count_tiers(op);
        self.index_for_search(op);
        Ok(())
    }

    /// Search structures and the embedding queue follow an applied operation.
    fn index_for_search(&self, op: &Op) {
        match op {
            Op::Put { memory, .. } => {
                self.search.put(memory);
                self.track_expiry(&memory.id, memory.expires_at_us);
                let mut queue = self.embed_pending.lock();
                if memory.embedding_status == EmbeddingStatus::Pending
                    && memory.status != Status::Deleted
                {
                    queue.insert(memory.id);
                } else {
                    queue.remove(&memory.id);
                }
            }
            Op::Purge { id, .. } => {
                self.search.remove(id);
                self.embed_pending.lock().remove(id);
                self.track_expiry(id, None);
                self.hits.lock().remove(id);
            }
            Op::Access(deltas) => self.count_hits(deltas),
            Op::ColdSeal { memories, .. } => {
                let mut hits = self.hits.lock();
                for (m, from) in memories {
                    // From warm only the tier changes; from working the text is indexed anew.
                    if *from != Tier::Warm || !self.search.mark_cold(&m.id) {
                        self.search.put(m);
                    }
                    hits.remove(&m.id);
                }
            }
            Op::ColdCompact { .. } => {}
        }
        if let Op::Put { memory, kind, .. } = op {
            if *kind != PutKind::Embed {
                self.hits.lock().remove(&memory.id);
            }
        }
    }

    /// Counts accesses to warm and cold memories; one used `promote_after_accesses` times since
    /// its last move is queued for promotion.
    fn count_hits(&self, deltas: &[AccessDelta]) {
        let needed = self.config.migration.promote_after_accesses;
        if needed == 0 {
            return;
        }
        let mut hits = self.hits.lock();
        let mut promote = Vec::new();
        for d in deltas {
            if self.working.contains(&d.id) {
                continue;
            }
            let n = hits.entry(d.id).or_default();
            *n += d.count;
            if *n >= needed {
                promote.push(d.id);
            }
        }
        drop(hits);
        if !promote.is_empty() {
            self.promote.lock().extend(promote);
        }
    }

    fn track_expiry(&self, id: &Uuid, at: Option<i64>) {
        let mut of = self.expiry_of.lock();
        let old = match at {
            Some(at) => of.insert(*id, at),
            None => of.remove(id),
        };
        if old == at {
            return;
        }
        let mut set = self.expiry.lock();
        if let Some(old) = old {
            set.remove(&(old, *id));
        }
        if let Some(at) = at {
            set.insert((at, *id));
        }
    }

    fn count_tiers(&self, op: &Op) {
        match op {
            Op::Put {
                memory,
                previous_tier,
                ..
            } => {
                if *previous_tier != Some(memory.tier) {
                    if let Some(p) = previous_tier {
                        self.tier_counts[tier_index(*p)].fetch_sub(1, Ordering::Relaxed);
                    }
                    self.tier_counts[tier_index(memory.tier)].fetch_add(1, Ordering::Relaxed);
                }
            }
            Op::Purge { previous_tier, .. } => {
                self.tier_counts[tier_index(*previous_tier)].fetch_sub(1, Ordering::Relaxed);
            }
            Op::ColdSeal { memories, .. } => {
                for (_, from) in memories {
                    self.tier_counts[tier_index(*from)].fetch_sub(1, Ordering::Relaxed);
                    self.tier_counts[2].fetch_add(1, Ordering::Relaxed);
                }
            }
            Op::Access(_) | Op::ColdCompact { .. } => {}
        }
    }

    /// Applied state of `id`, from whichever tier holds it.
    fn read(&self, id: &Uuid) -> Result<Option<Memory>, EngineError> {
        // A move applies into the new tier before leaving the old one, so looking in working,
        // warm, then cold can only miss a memory whose move finished between two lookups: look
        // once more in that case.
        for _ in 0..2 {
            if let Some(m) = self.working.get(id)? {
                return Ok(Some(m));
            }
            if let Some(m) = self.warm.get(id)? {
                return Ok(Some(m));
            }
            if let Some(mut m) = self.cold.get(id)? {
                // Access state lives beside the immutable image.
                if let Some((count, last)) = self.warm.access(id)? {
                    m.access_count = count;
                    m.last_accessed_at_us = last;
                }
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    fn with_pending_access(&self, mut m: Memory) -> Memory {
        if let Some((count, last)) = self.access_pending.lock().get(&m.id) {
            m.access_count += count;
            m.last_accessed_at_us = Some(m.last_accessed_at_us.map_or(*last, |l| l.max(*last)));
        }
        m
    }

    fn list(
        &self,
        filter: &ListFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Page, EngineError> {
        let now = model::now_us();
        let matches = |m: &Memory| {
            (filter.include_deleted || !is_expired(m, now))
                && filter.tier.is_none_or(|t| m.tier == t)
                && match filter.status {
                    Some(s) => m.status == s,
                    None => filter.include_deleted || m.status != Status::Deleted,
                }
                && filter
                    .tag
                    .as_ref()
                    .is_none_or(|t| m.tags.iter().any(|x| x == t))
                && filter.namespace.as_ref().is_none_or(|n| &m.namespace == n)
        };
        let mut out = Vec::with_capacity(limit.min(256));
        let mut cursor = after;
        let mut scanned = 0usize;
        let chunk = (limit * 2).clamp(64, 2048);
        // Ids in order: the namespace index covers every tier; without a namespace, merge the
        // sorted working-tier ids with the warm records.
        let working_sorted: Vec<Uuid> = if filter.namespace.is_none() {
            let mut ids = self.working.ids();
            ids.sort_unstable();
            ids
        } else {
            Vec::new()
        };
        loop {
            let ids: Vec<Uuid> = match &filter.namespace {
                Some(ns) => self.warm.ids_after(Some(ns), cursor, chunk)?,
                None => {
                    let warm = self.warm.ids_after(None, cursor, chunk)?;
                    let start = match cursor {
                        Some(c) => working_sorted.partition_point(|id| *id <= c),
                        None => 0,
                    };
                    let mut merged: Vec<Uuid> = working_sorted[start..]
                        .iter()
                        .take(chunk)
                        .copied()
                        .chain(warm)
                        .collect();
                    merged.sort_unstable();
                    merged.dedup();
                    merged.truncate(chunk);
                    merged
                }
            };
            if ids.is_empty() {
                return Ok(Page {
                    memories: out,
                    next_after: None,
                });
            }
            for id in ids {
                cursor = Some(id);
                scanned += 1;
                if let Some(m) = self.read(&id)? {
                    if matches(&m) {
                        out.push(self.with_pending_access(m));
                        if out.len() >= limit {
                            return Ok(Page {
                                memories: out,
                                next_after: cursor,
                            });
                        }
                    }
                }
                if scanned >= LIST_SCAN_BUDGET {
                    return Ok(Page {
                        memories: out,
                        next_after: cursor,
                    });
                }
            }
        }
    }

    /// Logs the batched access statistics (one WAL record per batch; not waited on by readers).
    fn flush_access(&self) -> Result<(), EngineError> {
        let drained: Vec<AccessDelta> = {
            let mut pending = self.access_pending.lock();
            if pending.is_empty() {
                return Ok(());
            }
            pending
                .drain()
                .map(|(id, (count, last))| AccessDelta {
                    id,
                    count,
                    last_accessed_at_us: last,
                })
                .collect()
        };
        if self.is_poisoned() {
            return Ok(());
        }
        for chunk in drained.chunks(MAX_ACCESS_DELTAS_PER_RECORD) {
            let lsn = self.log(&mut self.writer.lock(), Op::Access(chunk.to_vec()))?;
            self.commit(lsn)?;
        }
        Ok(())
    }

    fn checkpoint(&self) -> Result<(), EngineError> {
        let held = self.checkpoint_lock.lock();
        self.checkpoint_held(&held)
    }

    /// A checkpoint unless a snapshot is holding them off (`Ok(false)`): the background thread
    /// must not block for the length of a snapshot, or eviction and access flushing stop and
    /// writers end up evicting in the foreground.
    fn try_checkpoint(&self) -> Result<bool, EngineError> {
        let Some(held) = self.checkpoint_lock.try_lock() else {
            return Ok(false);
        };
        self.checkpoint_held(&held).map(|()| true)
    }

    fn checkpoint_held(&self, _held: &parking_lot::MutexGuard<'_, ()>) -> Result<(), EngineError> {
        if self.is_poisoned() {
            return Err(EngineError::Poisoned);
        }
        let started = Instant::now();
        let lsn = self.applied_lsn.load(Ordering::Acquire);
        let warm_lsn = self.warm.applied_lsn()?;
        self.warm.flush()?;
        self.working.checkpoint(lsn)?;
        // Every cold change up to `lsn` is applied, and each was made durable when applied.
        self.cold.write_manifest(lsn)?;
        self.wal.checkpoint(lsn.min(warm_lsn))?;
        if let Some(retention) = self.config.wal_archive_retention {
            let cutoff = std::time::SystemTime::now()
                .checked_sub(retention)
                .unwrap_or(std::time::UNIX_EPOCH);
            // Keep what restoring from the oldest snapshot needs, whatever its age.
            let keep_from = crate::snapshot::list_snapshots(&self.snapshots_dir())?
                .first()
                .map_or(Lsn::MAX, |(_, m)| m.replay_from + 1);
            self.wal.prune_archive(cutoff, keep_from)?;
        }
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            lsn,
            took_ms = started.elapsed().as_millis() as u64,
            "checkpoint"
        );
        Ok(())
    }

    fn background(self: &Arc<Self>) {
        // Scheduled snapshots run on a thread of their own, so eviction and access flushing go
        // on while one is taken; joined before this thread ends.
        let mut scheduled: Option<std::thread::JoinHandle<()>> = None;
        // Checkpoints too (a few seconds at 1M memories, writing back the working tier
        // gently): this thread must keep evicting meanwhile, or writers evict in the
        // foreground. The WAL bytes written when it started go with it.
        type Checkpointing = (std::thread::JoinHandle<Result<bool, EngineError>>, u64);
        let mut checkpointing: Option<Checkpointing> = None;
        let mut last_access_flush = Instant::now();
        let mut last_checkpoint = Instant::now();
        let mut wal_bytes_at_checkpoint = self.wal.bytes_written();
        let mut last_statvfs = Instant::now();
        let mut last_snapshot = Instant::now();
        let mut last_migration = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            std::thread::park_timeout(BACKGROUND_TICK);
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            if last_statvfs.elapsed() >= Duration::from_secs(1) {
                self.free_disk_bytes
                    .store(free_disk_bytes(&self.config.data_dir), Ordering::Relaxed);
                last_statvfs = Instant::now();
            }
            if self.is_poisoned() {
                continue;
            }
            if let Err(e) = self.purge_expired() {
                tracing::error!(error = %e, "purging expired memories failed");
            }
            if let Err(e) = self.evict_in_background() {
                tracing::error!(error = %e, "moving memories from the working tier to warm failed");
            }
            if !self.promote.lock().is_empty() {
                if let Err(e) = self.promote_queued() {
                    tracing::error!(error = %e, "promoting memories failed");
                }
            }
            let policy = &self.config.migration;
            if policy.enabled
                && self.search.is_enabled()
                && last_migration.elapsed() >= policy.interval
            {
                last_migration = Instant::now();
                match self.migrate(false) {
                    Ok(r) if !r.moves.is_empty() => {
                        tracing::info!(
                            moves = r.moves.len(),
                            skipped = r.skipped,
                            took_ms = r.took.as_millis() as u64,
                            "tier migration"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "tier migration failed"),
                }
                match self.compact(false) {
                    Ok(r) if r.segments_in > 0 => {
                        tracing::info!(
                            segments_in = r.segments_in,
                            dead_dropped = r.dead_dropped,
                            "cold compaction"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "cold compaction failed"),
                }
            }
            if last_access_flush.elapsed() >= self.config.access_flush_interval {
                if let Err(e) = self.flush_access() {
                    tracing::error!(error = %e, "logging access statistics failed");
                }
                last_access_flush = Instant::now();
            }
            if let Some(every) = self.config.snapshot_interval {
                if last_snapshot.elapsed() >= every
                    && scheduled.as_ref().is_none_or(|h| h.is_finished())
                {
                    last_snapshot = Instant::now();
                    if let Some(done) = scheduled.take() {
                        let _ = done.join();
                    }
                    let inner = Arc::clone(self);
                    match std::thread::Builder::new()
                        .name("engram-scheduled-snapshot".to_owned())
                        .spawn(move || {
                            if let Err(e) = inner
                                .create_snapshot()
                                .and_then(|_| inner.prune_snapshots())
                            {
                                tracing::error!(error = %e, "scheduled snapshot failed");
                            }
                        }) {
                        Ok(handle) => scheduled = Some(handle),
                        Err(e) => {
                            tracing::error!(error = %e, "could not start a scheduled snapshot")
                        }
                    }
                }
            }
            // A checkpoint finished: note when, and how much WAL it covered.
            if checkpointing.as_ref().is_some_and(|(h, _)| h.is_finished()) {
                let (handle, covered) = checkpointing.take().expect("checked above");
                match handle
                    .join()
                    .unwrap_or(Err(EngineError::Busy("the checkpoint thread panicked")))
                {
                    Ok(true) => {
                        last_checkpoint = Instant::now();
                        wal_bytes_at_checkpoint = covered;
                    }
                    Ok(false) => {} // a snapshot holds checkpoints off: try again next tick
                    Err(e) => {
                        tracing::error!(error = %e, "checkpoint failed");
                        self.poison(&e);
                        last_checkpoint = Instant::now();
                        wal_bytes_at_checkpoint = covered;
                    }
                }
            }
            let wal_bytes = self.wal.bytes_written();
            // While a snapshot holds checkpoints off, starting a thread would only find it held.
            if checkpointing.is_none()
                && !self.checkpoint_lock.is_locked()
                && (last_checkpoint.elapsed() >= self.config.checkpoint_interval
                    || wal_bytes - wal_bytes_at_checkpoint >= self.config.checkpoint_wal_bytes)
            {
                let inner = Arc::clone(self);
                match std::thread::Builder::new()
                    .name("engram-checkpoint".to_owned())
                    .spawn(move || inner.try_checkpoint())
                {
                    Ok(handle) => checkpointing = Some((handle, wal_bytes)),
                    Err(e) => tracing::error!(error = %e, "could not start a checkpoint"),
                }
            }
        }
        if let Some((running, _)) = checkpointing.take() {
            let _ = running.join();
        }
        if let Some(running) = scheduled.take() {
            let _ = running.join();
        }
    }
}

/// Most records applied with one RocksDB write batch.
const APPLY_GROUP_RECORDS: usize = 256;

/// A move from another tier into the working tier: it must be in working before it leaves warm.
fn is_promotion(op: &Op) -> bool {
    matches!(op, Op::Put { memory, previous_tier: Some(p), .. } if memory.tier == Tier::Working && *p != Tier::Working)
}

/// End of the group starting at `start`: consecutive records touching distinct ids (so their
/// order within the group does not matter), at most [`APPLY_GROUP_RECORDS`]. An access record
/// reads RocksDB and a promotion needs its own ordering, so each is applied alone.
fn group_end(ready: &[(Lsn, Op)], start: usize) -> usize {
    if matches!(
        ready[start].1,
        Op::Access(_) | Op::ColdSeal { .. } | Op::ColdCompact { .. }
    ) || is_promotion(&ready[start].1)
    {
        return start + 1;
    }
    let mut ids = std::collections::HashSet::new();
    let mut end = start;
    while end < ready.len() && end - start < APPLY_GROUP_RECORDS && !is_promotion(&ready[end].1) {
        match op_id(&ready[end].1) {
            Some(id) if ids.insert(id) => end += 1,
            _ => break,
        }
    }
    end.max(start + 1)
}

fn op_id(op: &Op) -> Option<Uuid> {
    match op {
        Op::Put { memory, .. } => Some(memory.id),
        Op::Purge { id, .. } => Some(*id),
        Op::Access(_) | Op::ColdSeal { .. } | Op::ColdCompact { .. } => None,
    }
}

/// Every id whose pending image `op` may be the latest of.
fn op_ids(op: &Op) -> Vec<Uuid> {
    match op {
        Op::ColdSeal { memories, .. } => memories.iter().map(|(m, _)| m.id).collect(),
        _ => op_id(op).into_iter().collect(),
    }
}

fn op_hashes(op: &Op) -> Vec<(String, [u8; 32])> {
    match op {
        Op::Put {
            memory,
            previous_hash,
            ..
        } => {
            let mut v = vec![(memory.namespace.clone(), memory.content_hash)];
            if let Some(h) = previous_hash {
                v.push((memory.namespace.clone(), *h));
            }
            v
        }
        Op::Purge {
            namespace,
            release_hash: Some(h),
            ..
        } => vec![(namespace.clone(), *h)],
        _ => Vec::new(),
    }
}

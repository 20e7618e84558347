//! Opening a store: lock the data directory, open the tiers, replay the WAL from the lowest LSN
//! any tier is missing (through the same [`Applier`] live writes use), load the search
//! structures, start the background thread.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Instant;

use engram_wal::{AtomicLsn, Lsn, Wal, WalOptions};
use parking_lot::Mutex;
use uuid::Uuid;

use super::apply::Applier;
use super::locks::{Rank, RankedMutex};
use super::writer::WriterState;
use super::{Engine, EngineCounters, Inner, OpenReport};
use crate::codec::{self, AccessDelta, Op};
use crate::config::EngineConfig;
use crate::layout::DataDir;
use crate::model::{Memory, Tier, MAX_DIMENSIONS};
use crate::search::hnsw::Hnsw;
use crate::search::SearchIndex;
use crate::tier::cold::ColdTier;
use crate::tier::warm::WarmTier;
use crate::tier::working::WorkingTier;
use crate::EngineError;

/// Records replayed per RocksDB write batch during recovery.
const REPLAY_BATCH_RECORDS: usize = 1024;

/// Opens the store: lock, open tiers, replay the WAL from the lowest LSN any tier is missing,
/// start the background thread.
pub(super) fn open(config: EngineConfig) -> Result<(Engine, OpenReport), EngineError> {
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
    let layout = DataDir::new(&config.data_dir);
    let lock_file = layout.lock()?;
    layout.release_ballast()?;
    let (mut working, working_report) = WorkingTier::open(
        &layout.working(),
        config.dimensions,
        config.working_capacity,
        config.working_heap_bytes,
    )?;
    let (warm, warm_lsn) = WarmTier::open(
        &layout.warm(),
        config.block_cache_bytes,
        config.search.stemming,
    )?;
    let (mut cold, cold_lsn) = ColdTier::open(
        &layout.cold(),
        config.dimensions,
        config.migration.zstd_level,
    )?;
    working.set_fault_injector(config.fault_injector.clone());
    cold.set_fault_injector(config.fault_injector.clone());
    let working_lsn = working_report.checkpoint_lsn;
    let cold_lsn = cold_lsn.unwrap_or(working_lsn.min(warm_lsn));
    let replay_from = working_lsn.min(warm_lsn).min(cold_lsn).next();
    let min_next = working_lsn.max(warm_lsn).max(cold_lsn).next();
    let mut wal_opts = WalOptions::new(layout.wal());
    wal_opts.segment_bytes = config.wal_segment_bytes;
    wal_opts.sync_mode = config.sync_mode;
    wal_opts.archive_dir = config.wal_archive.then(|| layout.archive());
    wal_opts.fault_injector = config.fault_injector.clone();

    let applier = Applier {
        working: &working,
        warm: &warm,
        cold: &cold,
        keep_versions: config.history_keep_versions,
    };
    let mut batch = Some(warm.batch());
    let mut batched = 0usize;
    let mut last_batched_lsn = Lsn::ZERO;
    // The working-tier image after a crash is newer than its checkpoint, so replaying each
    // record in turn could re-insert memories that later left and overflow the slots.
    // Only the last operation per id matters for it: collect those, apply them at the end.
    let mut working_final = WorkingReplay::default();
    let (wal, wal_report) = Wal::open(wal_opts, replay_from, min_next, |record| {
        let op =
            codec::decode_op(record.payload, record.lsn).map_err(|e| EngineError::Corrupt {
                path: layout.wal(),
                detail: format!("record at LSN {}: {e}", record.lsn),
            })?;
        let to_rocks = record.lsn > warm_lsn;
        let to_working = record.lsn > working_lsn;
        if record.lsn > cold_lsn {
            applier.cold(&op)?;
            if let Op::ColdCompact { sources, .. } = &op {
                cold.drop_segments(record.lsn, sources)?;
            }
        }
        if to_rocks {
            if matches!(op, Op::Access(_)) {
                // Access deltas read the current counters: commit what is batched first.
                if let Some(b) = batch.take() {
                    b.write(last_batched_lsn.max(warm_lsn))?;
                }
                batch = Some(warm.batch());
                batched = 0;
            }
            let b = batch.get_or_insert_with(|| warm.batch());
            applier.rocks(b, &op)?;
            last_batched_lsn = record.lsn;
            batched += 1;
        }
        if to_working {
            working_final.record(record.lsn, op);
        }
        if batched >= REPLAY_BATCH_RECORDS {
            if let Some(b) = batch.take() {
                b.write(last_batched_lsn)?;
            }
            batched = 0;
        }
        Ok::<(), EngineError>(())
    })?;
    if let Some(b) = batch.take() {
        if last_batched_lsn > Lsn::ZERO {
            b.write(last_batched_lsn)?;
        }
    }
    for (slot, id, lsn) in &working_report.suspects {
        if !working_final.touches(id) {
            return Err(EngineError::Corrupt {
                path: layout.working().join("slots.bin"),
                detail: format!(
                    "working-tier slot {slot} (memory {id}, LSN {lsn}) fails its checksum; the checkpoint at LSN {working_lsn} covers it and no later record rewrote it"
                ),
            });
        }
    }
    if !working_report.suspects.is_empty() {
        tracing::warn!(
            slots = working_report.suspects.len(),
            "working-tier slots torn by a power cut after the checkpoint; the WAL restores them"
        );
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
    let own_dropped = warm.own_dropped()?;
    if own_dropped.is_some() {
        cold.strip_vectors();
    }
    let (search, expiry) = open_search(
        &config,
        &layout,
        &working,
        &warm,
        &cold,
        own_dropped.is_some(),
    )?;
    let (spaces, active_space) = if config.search_structures {
        super::spaces::open_spaces(&layout, &warm, &config)?
    } else {
        (Default::default(), 0)
    };
    // With the own vectors dropped nothing is embedded into them any more.
    let embed_pending: BTreeSet<Uuid> = if own_dropped.is_some() {
        BTreeSet::new()
    } else {
        warm.embed_queue()?.into_iter().collect()
    };
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
    // Take the ballast back now, not at the background thread's first free-space check: a
    // disk can fill within that second, and a store with no ballast may not open again on it.
    let ballast_missing = layout.restore_ballast(config.min_free_disk_bytes);
    let free = layout.free_bytes();
    let inner = Arc::new(Inner {
        wal,
        working,
        warm,
        cold,
        search,
        spaces,
        active_space: std::sync::atomic::AtomicU32::new(active_space),
        own: parking_lot::RwLock::new(own_dropped),
        sweep: RankedMutex::new(Rank::Leaf, Default::default()),
        sweep_turn: parking_lot::Mutex::new(()),
        accesses_since_move: RankedMutex::new(Rank::Leaf, HashMap::new()),
        promote: RankedMutex::new(Rank::Leaf, BTreeSet::new()),
        migration_lock: RankedMutex::new(Rank::Migration, ()),
        embed_pending: RankedMutex::new(Rank::Leaf, embed_pending),
        expiry: RankedMutex::new(
            Rank::Expiry,
            expiry.iter().map(|(id, at)| (*at, *id)).collect(),
        ),
        expiry_of: RankedMutex::new(Rank::ExpiryOf, expiry),
        writer: RankedMutex::new(
            Rank::Writer,
            WriterState {
                pending: Default::default(),
                pending_hashes: HashMap::new(),
                working_projected: working_count,
                working_reserved: std::collections::VecDeque::new(),
                working_reserved_bytes: 0,
                writer_evictions: Default::default(),
                victims: VecDeque::new(),
                victims_at: None,
                last_logged: Lsn::ZERO,
            },
        ),
        queue: RankedMutex::new(Rank::Queue, VecDeque::new()),
        apply_lock: RankedMutex::new(Rank::Apply, ()),
        checkpoint_lock: RankedMutex::new(Rank::Checkpoint, ()),
        applied_lsn: AtomicLsn::new(last_lsn),
        poisoned: AtomicBool::new(false),
        committer: super::commit::Committer::new(),
        tier_counts: [
            AtomicU64::new(working_count as u64),
            AtomicU64::new(warm_count),
            AtomicU64::new(cold_count),
        ],
        access_pending: RankedMutex::new(Rank::Leaf, Default::default()),
        free_disk_bytes: AtomicU64::new(free),
        ballast_missing: AtomicBool::new(ballast_missing),
        unflushed_bytes: AtomicU64::new(0),
        free_disk_checked_ms: AtomicU64::new(0),
        opened: std::time::Instant::now(),
        counters: EngineCounters::default(),
        stop: AtomicBool::new(false),
        _lock_file: lock_file,
        layout,
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
        .map_err(|e| EngineError::io(std::path::Path::new("<thread>"), e))?;
    let committer = Arc::clone(&inner);
    let committer = match std::thread::Builder::new()
        .name("engram-commit".to_owned())
        .spawn(move || committer.commit_loop())
    {
        Ok(c) => c,
        Err(e) => {
            inner.stop.store(true, std::sync::atomic::Ordering::Release);
            handle.thread().unpark();
            let _ = handle.join();
            return Err(EngineError::io(std::path::Path::new("<thread>"), e));
        }
    };
    Ok((
        Engine {
            inner,
            background: Mutex::new(Some(handle)),
            committer: Mutex::new(Some(committer)),
        },
        report,
    ))
}

/// Opens the search structures: the saved vector index, the warm tier's persisted search
/// attributes and the working tier's memories; queues the vectors the index is missing. Also
/// returns the expiry dates it saw (active warm memories, every working-tier memory).
fn open_search(
    config: &EngineConfig,
    layout: &DataDir,
    working: &WorkingTier,
    warm: &WarmTier,
    cold: &ColdTier,
    own_dropped: bool,
) -> Result<(SearchIndex, HashMap<Uuid, i64>), EngineError> {
    let started = Instant::now();
    if !config.search_structures {
        let hnsw = Hnsw::detached(config.dimensions, &config.search)?;
        return Ok((
            SearchIndex::disabled(config.dimensions, &config.search, hnsw),
            HashMap::new(),
        ));
    }
    if own_dropped {
        // The saved graph holds vectors given up: not loaded, and emptied.
        let dir = layout.search();
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
        }
    }
    let hnsw = Hnsw::open(&layout.search(), config.dimensions, &config.search)?;
    let index = SearchIndex::new(config.dimensions, &config.search, hnsw);
    if own_dropped {
        index.drop_vectors();
    }
    let mut warm_vectors = HashMap::new();
    warm.scan_attrs(|id, row| {
        // Cold memories keep their attributes and postings in RocksDB; their vectors are in
        // the segments, not the graph.
        let tier = if cold.contains(&id) {
            Tier::Cold
        } else {
            if let Some(crc) = row.vector_crc.filter(|_| !own_dropped) {
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

/// The working tier's share of a replay: the last operation per id, and access deltas newer
/// than that id's last image.
#[derive(Default)]
struct WorkingReplay {
    last: HashMap<Uuid, (Lsn, Option<Memory>)>,
    access: Vec<(Lsn, AccessDelta)>,
}

impl WorkingReplay {
    /// Whether a record after the working tier's checkpoint touched memory `id`.
    fn touches(&self, id: &Uuid) -> bool {
        self.last.contains_key(id) || self.access.iter().any(|(_, d)| d.id == *id)
    }

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
            Op::ColdCompact { .. } | Op::SpaceVector { .. } | Op::DropOwnVectors { .. } => {}
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

//! How an engine is opened: [`EngineConfig`] and its defaults.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use engram_wal::{FaultInjector, SyncMode};

use crate::policy::MigrationConfig;
use crate::search::SearchConfig;

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
    /// `history.keep_versions`: replaced versions kept per memory (0: none).
    pub history_keep_versions: u64,
    /// `history.keep_for`: a replaced version is removed this long after it was replaced
    /// (`None`: kept until `history_keep_versions` pushes it out).
    pub history_keep_for: Option<Duration>,
    /// `history.keep_vectors`: `false` keeps a replaced version's text and fields but not its
    /// vector (an as-of search then finds that version by its words only).
    pub history_keep_vectors: bool,
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
    /// The time of day the engine reads (a manual clock in tests).
    pub clock: Clock,
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
            history_keep_versions: 20,
            history_keep_for: Some(Duration::from_secs(90 * 86_400)),
            history_keep_vectors: true,
            auto_embed: false,
            search: SearchConfig::default(),
            migration: MigrationConfig::default(),
            search_structures: true,
            fault_injector: None,
            clock: Clock::System,
        }
    }
}

/// Where the engine reads the time of day (expiry, versions' `updated_at`, access times, the
/// retention policy): the system clock, or one that tests move forward instead of sleeping.
/// WAL commit times always come from the system clock.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    /// Microseconds since the epoch, as the test last set them; stands still in between.
    Manual(Arc<AtomicI64>),
    /// The system clock plus a shift (µs) that only grows: time runs as usual and a test can
    /// jump ahead. What a test daemon runs on (`ENGRAM_TEST_CLOCK=adjustable`).
    Adjustable(Arc<AtomicI64>),
}

impl Clock {
    /// A manual clock reading `start_us`.
    pub fn manual(start_us: i64) -> Clock {
        Clock::Manual(Arc::new(AtomicI64::new(start_us)))
    }

    /// The system clock, adjustable forward, starting with no shift.
    pub fn adjustable() -> Clock {
        Clock::Adjustable(Arc::new(AtomicI64::new(0)))
    }

    pub fn now_us(&self) -> i64 {
        match self {
            Clock::System => crate::model::now_us(),
            Clock::Manual(us) => us.load(Ordering::Acquire),
            Clock::Adjustable(shift) => {
                crate::model::now_us().saturating_add(shift.load(Ordering::Acquire))
            }
        }
    }

    /// How far this clock reads ahead of the system clock, in µs (exact for an adjustable one).
    pub fn ahead_of_system_us(&self) -> i64 {
        match self {
            Clock::System => 0,
            Clock::Manual(us) => us.load(Ordering::Acquire) - crate::model::now_us(),
            Clock::Adjustable(shift) => shift.load(Ordering::Acquire),
        }
    }

    /// Whether [`Clock::advance`] moves this clock.
    pub fn is_adjustable(&self) -> bool {
        !matches!(self, Clock::System)
    }

    /// Moves a manual or adjustable clock forward (a no-op on the system clock). Never back:
    /// expiry and the policy assume time does not reverse.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        match self {
            Clock::System => {}
            Clock::Manual(us) | Clock::Adjustable(us) => {
                us.fetch_add(by, Ordering::AcqRel);
            }
        }
    }
}

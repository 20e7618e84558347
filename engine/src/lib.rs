//! `engram-engine`: Engram's storage engine.
//!
//! It owns the memory model, the write path (validate → WAL → group commit → apply), the three
//! tiers (working: a memory-mapped slot arena with lock-free reads; warm: RocksDB with an HNSW
//! graph; cold: immutable zstd segments), search, the tier policy, snapshots, recovery and
//! checkpoints. `ARCHITECTURE.md` maps the modules.
//!
//! Invariants:
//! - A change is applied to a tier only after its WAL record is durable, and records are applied
//!   in LSN order; so a reader never sees state a crash could take back.
//! - Every memory is in exactly one tier once recovery finishes.
//! - Each tier records the LSN its durable image reflects; recovery replays the WAL from the
//!   lowest of them, and each WAL operation is self-contained, so every tier replays exactly the
//!   suffix it is missing.
//! - After a failed write or fsync, or a broken invariant, the engine is poisoned and refuses
//!   writes until reopened.
//! - Engine locks are taken in one order, checked at run time (`engine/locks.rs`).
//!
//! The public surface is what this file re-exports; `decode_op`, `encode_op`, `Op`, the `cold`
//! segment format and `stored_layout` are a tooling surface for `engramctl` and tests, and may
//! change with the on-disk formats.
//!
//! What it deliberately does not do: speak HTTP or JSON wire types (the server does), compute
//! embeddings, or retry a failed fsync.

mod codec;
mod config;
mod engine;
mod error;
mod fsutil;
/// The decoders' fuzz properties, for `fuzz/` (not a stable surface).
#[doc(hidden)]
pub mod fuzzing;
pub mod history;
mod idhash;
mod layout;
mod model;
mod policy;
pub mod search;
pub mod snapshot;
pub mod text;
mod tier;
pub mod trace;
pub mod transfer;
mod validate;
mod vector;

pub use codec::{decode_op, encode_op, AccessDelta, DecodeError, Op, PutKind};
pub use config::{Clock, EngineConfig};
pub use engine::{
    restore_snapshot, ArchiveUsage, Committing, Deleted, EmbedJob, EmbedResult, Engine,
    EngineCounters, EngineStats, ExportCount, HistoryPage, ImportedAs, NamespaceCounts,
    NamespacePurge, OpenReport, OwnVectors, Page, SpaceInfo, SpaceJob, TierReport, GRAPH_WAIT_MAX,
    GRAPH_WAIT_STEP, LIST_SCAN_BUDGET, MAX_ACCESS_DELTAS_PER_RECORD, MAX_HISTORY_LIMIT,
    MAX_LIST_LIMIT,
};
pub use engram_wal::{FaultInjector, IoOp, Lsn, SyncMode};
pub use error::EngineError;
pub use layout::DataDir;
pub use model::{
    content_hash, hex, is_valid_namespace, namespace_rule, now_us, EmbeddingStatus, ListFilter,
    Memory, MemoryPatch, NewMemory, Status, Tier, UnknownName, DEFAULT_IMPORTANCE,
    DEFAULT_NAMESPACE, MAX_ACTOR_BYTES, MAX_BATCH_ITEMS, MAX_CONTENT_BYTES, MAX_DIMENSIONS,
    MAX_METADATA_BYTES, MAX_NAMESPACE_BYTES, MAX_SUPERSEDES, MAX_TAGS, MAX_TAG_BYTES,
};
pub use policy::{CompactionReport, MigrationConfig, MigrationReport, PlannedMove};
pub use tier::warm::space::OwnDropped;
pub use tier::warm::{WarmMemory, WARM_MAX_OPEN_FILES};
pub use tier::working::stored_layout;
pub use uuid::Uuid;

/// The cold segment file format, for the offline tools (`engramctl segment inspect`) and tests.
pub mod cold {
    pub use crate::tier::cold::segment::{
        write_segment, BlockReport, Segment, SegmentInfo, BLOCK_TARGET_BYTES,
    };
    pub use crate::tier::cold::ColdSegmentStats;
}

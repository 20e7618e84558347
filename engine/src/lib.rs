//! `engram-engine`: Engram's storage engine.
//!
//! It owns the memory model, the write path (validate → WAL → group commit → apply), the working
//! tier (a memory-mapped slot arena with lock-free reads), the warm tier (RocksDB), recovery and
//! checkpoints.
//!
//! Invariants:
//! - A change is applied to a tier only after its WAL record is durable, and records are applied
//!   in LSN order; so a reader never sees state a crash could take back.
//! - Every memory is in exactly one tier once recovery finishes.
//! - Each tier records the LSN its durable image reflects; recovery replays the WAL from the
//!   lowest of them, and each WAL operation is self-contained, so every tier replays exactly the
//!   suffix it is missing.
//! - After a failed write or fsync the engine is poisoned and refuses writes until reopened.
//!
//! What it deliberately does not do: speak HTTP or JSON wire types (the server does), compute
//! embeddings, or retry a failed fsync.

mod codec;
pub mod cold;
mod coldtier;
mod engine;
mod model;
mod policy;
pub mod search;
pub mod snapshot;
mod warm;
mod working;

use std::path::{Path, PathBuf};

pub use codec::{decode_op, encode_op, AccessDelta, DecodeError, Op, PutKind};
pub use engine::{
    lock_data_dir, Deleted, EmbedJob, EmbedResult, Engine, EngineConfig, EngineCounters,
    EngineStats, OpenReport, Page, TierReport, LIST_SCAN_BUDGET, MAX_LIST_LIMIT,
};
pub use engram_wal::{FaultInjector, IoOp, Lsn, SyncMode};
pub use model::{
    content_hash, hex, is_valid_namespace, now_us, EmbeddingStatus, ListFilter, Memory,
    MemoryPatch, NewMemory, Status, Tier, DEFAULT_IMPORTANCE, DEFAULT_NAMESPACE, MAX_BATCH_ITEMS,
    MAX_CONTENT_BYTES, MAX_DIMENSIONS, MAX_METADATA_BYTES, MAX_NAMESPACE_BYTES, MAX_TAGS,
    MAX_TAG_BYTES,
};
pub use policy::{CompactionReport, MigrationConfig, MigrationReport, PlannedMove};
pub use uuid::Uuid;
pub use working::stored_layout;

/// Everything that can go wrong in the engine.
///
/// - caller error: `Invalid`, `TooLarge`, `NotFound`, `Duplicate`;
/// - capacity: `StorageFull`, `Busy`;
/// - corruption: `Corrupt`;
/// - I/O: `Io`, `Rocks`, `Wal`, `Locked`, `Config`;
/// - poisoned: `Poisoned`.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{field} {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{field} {message}")]
    TooLarge {
        field: &'static str,
        message: String,
    },
    #[error("memory {0} not found")]
    NotFound(Uuid),
    #[error("a memory with the same content already exists in this namespace: {existing}")]
    Duplicate { existing: Uuid },
    #[error("storage full: {0}")]
    StorageFull(String),
    #[error("busy: {0}")]
    Busy(&'static str),
    #[error("corruption in {path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("RocksDB error in {path}: {message}")]
    Rocks { path: PathBuf, message: String },
    #[error(transparent)]
    Wal(#[from] engram_wal::WalError),
    #[error("data directory is locked by another process ({path})")]
    Locked { path: PathBuf },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("the engine is poisoned by a failed write or fsync; restart to recover from the WAL")]
    Poisoned,
}

impl EngineError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> EngineError {
        EngineError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A copy for fanning one failure out to several callers (I/O sources become text).
    pub fn clone_kind(&self) -> EngineError {
        match self {
            EngineError::Invalid { field, message } => EngineError::Invalid {
                field,
                message: message.clone(),
            },
            EngineError::TooLarge { field, message } => EngineError::TooLarge {
                field,
                message: message.clone(),
            },
            EngineError::NotFound(id) => EngineError::NotFound(*id),
            EngineError::Duplicate { existing } => EngineError::Duplicate {
                existing: *existing,
            },
            EngineError::StorageFull(m) => EngineError::StorageFull(m.clone()),
            EngineError::Busy(m) => EngineError::Busy(m),
            EngineError::Corrupt { path, detail } => EngineError::Corrupt {
                path: path.clone(),
                detail: detail.clone(),
            },
            EngineError::Io { path, source } => EngineError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            EngineError::Rocks { path, message } => EngineError::Rocks {
                path: path.clone(),
                message: message.clone(),
            },
            EngineError::Wal(e) => match e {
                engram_wal::WalError::Poisoned => EngineError::Poisoned,
                other => EngineError::Busy(if matches!(other, engram_wal::WalError::Io { .. }) {
                    "WAL I/O failed"
                } else {
                    "WAL refused the write"
                }),
            },
            EngineError::Locked { path } => EngineError::Locked { path: path.clone() },
            EngineError::Config(m) => EngineError::Config(m.clone()),
            EngineError::Poisoned => EngineError::Poisoned,
        }
    }
}

//! `engram-wal`: Engram's write-ahead log.
//!
//! The log is the truth of an Engram store: every change is a record here before any tier sees
//! it, and recovery rebuilds the tiers by replaying it. This crate knows nothing of memories; a
//! record is an opaque payload with an LSN and a commit time.
//!
//! Invariants:
//! - LSNs are consecutive: the record after LSN `n` is `n + 1`, across segments too.
//! - Commit times never decrease with LSN.
//! - `durable_lsn <= written_lsn <= last_lsn`.
//! - Only the newest segment may end in a torn record; anything else that fails its checksum is
//!   corruption and opening refuses, naming the file and offset.
//! - After a failed write or fsync the log is poisoned and refuses appends until reopened.
//!
//! What it does not do: interpret payloads, decide when to checkpoint (the engine tells it which
//! LSN the tiers have made durable), or delete archived segments (retention is the caller's).

pub mod durable;
pub mod export;
pub mod frame;
mod log;
mod lsn;
mod options;
pub mod segment;

use std::path::PathBuf;

pub use frame::{Lsn, RecordRef, MAX_RECORD_BYTES};
pub use log::Wal;
pub use lsn::AtomicLsn;
pub use options::{
    FaultInjector, FsyncObserver, IoOp, RecoveryReport, SyncMode, WalOptions,
    DEFAULT_SEGMENT_BYTES, MAX_BUFFERED_BYTES, MIN_SEGMENT_BYTES,
};

/// Everything that can go wrong in the log.
///
/// - caller error: [`WalError::RecordTooLarge`], [`WalError::InvalidOptions`];
/// - corruption: [`WalError::Corrupt`], [`WalError::Gap`];
/// - I/O: [`WalError::Io`];
/// - poisoned: [`WalError::Poisoned`].
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O failed on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt WAL record in {path} at offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error(
        "WAL records from LSN {needed} are needed for recovery but the log starts at LSN {first}"
    )]
    Gap { needed: Lsn, first: Lsn },
    #[error("WAL is poisoned by an earlier failed write or fsync; restart to recover")]
    Poisoned,
    #[error("record of {len} bytes is empty or larger than a segment or MAX_RECORD_BYTES")]
    RecordTooLarge { len: usize },
    #[error("invalid WAL options: {0}")]
    InvalidOptions(String),
}

//! [`EngineError`]: everything that can go wrong in the engine, by class.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use uuid::Uuid;

/// Everything that can go wrong in the engine.
///
/// - caller error: `Invalid`, `TooLarge`, `NotFound`, `VersionNotFound`, `SpaceNotFound`, `SpaceConflict`, `Duplicate`,
///   `IdExists`;
/// - capacity: `StorageFull`, `Busy`;
/// - corruption: `Corrupt`, `Invariant` (state the engine cannot trust: it poisons itself);
/// - I/O and environment: `Io`, `Rocks`, `Index`, `Wal`, `Locked`, `Config`;
/// - poisoned: `Poisoned` (a failed write or fsync, or a broken invariant, earlier).
///
/// Cloning never changes the class: sources are shared (`Arc`), so one failure fanned out to
/// every item of a batch reaches each caller as the same error. A poisoned WAL always becomes
/// `Poisoned`, on every path.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
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
    /// The memory exists but not the version asked for (never was, or no longer kept).
    #[error("memory {id} {detail}")]
    VersionNotFound { id: Uuid, detail: String },
    /// No embedding migration (vector space) has this id.
    #[error("embedding migration {0} not found")]
    SpaceNotFound(u32),
    /// The migration is not in a state that allows the change (`code` says which).
    #[error("embedding migration {id}: {message}")]
    SpaceConflict {
        id: u32,
        code: &'static str,
        message: String,
    },
    #[error("a memory with the same content already exists in this namespace: {existing}")]
    Duplicate { existing: Uuid },
    /// An import names an id the store holds already.
    #[error("memory {0} exists already")]
    IdExists(Uuid),
    #[error("storage full: {0}")]
    StorageFull(String),
    #[error("busy: {0}")]
    Busy(&'static str),
    #[error("corruption in {path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("internal invariant broken: {0}")]
    Invariant(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("RocksDB error in {path}: {message}")]
    Rocks { path: PathBuf, message: String },
    #[error("vector index: {0}")]
    Index(String),
    #[error(transparent)]
    Wal(Arc<engram_wal::WalError>),
    #[error("data directory is locked by another process ({path})")]
    Locked { path: PathBuf },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("the engine is poisoned by a failed write or fsync; restart to recover from the WAL")]
    Poisoned,
}

impl EngineError {
    pub fn io(path: &Path, source: std::io::Error) -> EngineError {
        EngineError::Io {
            path: path.to_path_buf(),
            source: Arc::new(source),
        }
    }

    /// The filesystem is full (ENOSPC, EDQUOT), from any layer: nothing was written wrong, and
    /// the same step succeeds once space is freed.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            EngineError::StorageFull(_) => true,
            EngineError::Io { source, .. } => crate::fsutil::is_out_of_space(source),
            // RocksDB reports errno as text only.
            EngineError::Rocks { message, .. } => {
                message.contains("No space left on device") || message.contains("Disk quota")
            }
            EngineError::Wal(w) => matches!(
                w.as_ref(),
                engram_wal::WalError::Io { source, .. } if crate::fsutil::is_out_of_space(source)
            ),
            _ => false,
        }
    }

    /// Out of descriptors or of disk space: work that only makes durable what the WAL already
    /// holds (a checkpoint) or that logged nothing yet (a background job) tries again later.
    pub fn is_resource_shortage(&self) -> bool {
        self.is_out_of_descriptors() || self.is_out_of_space()
    }

    /// The process or the system ran out of file descriptors (EMFILE, ENFILE): nothing was
    /// written wrong, and the same step succeeds once descriptors are free again. Work that
    /// only makes durable what the WAL already holds (a checkpoint) retries it later instead of
    /// poisoning the engine.
    pub fn is_out_of_descriptors(&self) -> bool {
        const EMFILE: i32 = 24;
        const ENFILE: i32 = 23;
        match self {
            EngineError::Io { source, .. } => {
                matches!(source.raw_os_error(), Some(EMFILE | ENFILE))
            }
            // RocksDB reports errno as text only.
            EngineError::Rocks { message, .. } => {
                message.contains("Too many open files") // EMFILE, and ENFILE's "… in system"
            }
            EngineError::Wal(w) => matches!(
                w.as_ref(),
                engram_wal::WalError::Io { source, .. }
                    if matches!(source.raw_os_error(), Some(EMFILE | ENFILE))
            ),
            _ => false,
        }
    }
}

impl From<engram_wal::WalError> for EngineError {
    fn from(e: engram_wal::WalError) -> EngineError {
        match e {
            engram_wal::WalError::Poisoned => EngineError::Poisoned,
            other => EngineError::Wal(Arc::new(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_wal_is_poisoned_and_clones_keep_their_class() {
        assert!(matches!(
            EngineError::from(engram_wal::WalError::Poisoned),
            EngineError::Poisoned
        ));
        let io = EngineError::io(Path::new("/x"), std::io::Error::other("disk on fire"));
        let copy = io.clone();
        assert!(matches!(copy, EngineError::Io { .. }));
        assert_eq!(copy.to_string(), io.to_string());
        let source = std::error::Error::source(&copy).expect("the I/O error is the source");
        assert_eq!(source.to_string(), "disk on fire");
    }

    #[test]
    fn running_out_of_descriptors_is_told_apart() {
        let emfile = EngineError::io(Path::new("/x"), std::io::Error::from_raw_os_error(24));
        assert!(emfile.is_out_of_descriptors());
        let eio = EngineError::io(Path::new("/x"), std::io::Error::from_raw_os_error(5));
        assert!(!eio.is_out_of_descriptors());
        let rocks = EngineError::Rocks {
            path: "/w".into(),
            message:
                "IO error: While open a file for appending: /w/000012.sst: Too many open files"
                    .into(),
        };
        assert!(rocks.is_out_of_descriptors());
        assert!(!EngineError::Poisoned.is_out_of_descriptors());
    }
}

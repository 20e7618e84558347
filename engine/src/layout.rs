//! The data directory's layout: every path the engine, snapshots and the offline tools use
//! inside it comes from [`DataDir`], so the names are written once.
//!
//! ```text
//! <root>/LOCK        flock'd by the process that has the store open
//!        wal/        active WAL segments
//!        archive/    closed WAL segments kept for point-in-time restore
//!        working/    the working tier's slot and heap files and its checkpoint
//!        warm/       RocksDB
//!        search/     the saved HNSW graph and its keys file
//!        cold/       cold segments and their manifest
//!        snapshots/  online snapshots, one directory each
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::EngineError;

/// A data directory (it need not exist yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

/// Size of the data directory's ballast file (see [`DataDir::ballast`]): what RocksDB wants
/// free before it resumes after a failed flush (its largest memtable), and a MiB more.
pub const BALLAST_BYTES: u64 = crate::tier::warm::WARM_WRITE_BUFFER_BYTES as u64 + (1 << 20);

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn lock_file(&self) -> PathBuf {
        self.root.join("LOCK")
    }

    pub fn wal(&self) -> PathBuf {
        self.root.join("wal")
    }

    pub fn archive(&self) -> PathBuf {
        self.root.join("archive")
    }

    pub fn working(&self) -> PathBuf {
        self.root.join("working")
    }

    pub fn warm(&self) -> PathBuf {
        self.root.join("warm")
    }

    pub fn search(&self) -> PathBuf {
        self.root.join("search")
    }

    /// The saved graph of vector space `id` (derived from its rows in RocksDB).
    pub fn space(&self, id: u32) -> PathBuf {
        self.root.join("spaces").join(id.to_string())
    }

    pub fn cold(&self) -> PathBuf {
        self.root.join("cold")
    }

    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Takes the directory's lock file (creating the directory), so two processes never open
    /// one store. Held until the returned file is dropped.
    pub fn lock(&self) -> Result<File, EngineError> {
        std::fs::create_dir_all(&self.root).map_err(|e| EngineError::io(&self.root, e))?;
        let path = self.lock_file();
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
                // The holder's pid, for an operator who finds the store locked; best effort.
                let _ = f.write_all(format!("{}\n", std::process::id()).as_bytes());
                Ok(file)
            }
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(EngineError::Locked { path }),
            Err(e) => Err(EngineError::io(&path, e.into())),
        }
    }

    /// A file of [`BALLAST_BYTES`] the store keeps allocated while the disk has room and
    /// deletes first thing when it opens, and when a RocksDB flush meets a full disk: its space
    /// is what RocksDB needs to open (a new MANIFEST and OPTIONS file), the WAL replay to
    /// apply, and RocksDB to resume after the failed flush.
    pub fn ballast(&self) -> PathBuf {
        self.root.join("ballast")
    }

    /// Deletes the ballast, if there is one (at open, before anything else writes; and when
    /// RocksDB meets a full disk). Returns whether there was one.
    pub fn release_ballast(&self) -> Result<bool, EngineError> {
        let path = self.ballast();
        match std::fs::remove_file(&path) {
            Ok(()) => engram_wal::durable::sync_dir(&self.root)
                .map(|()| true)
                .map_err(|e| EngineError::io(&self.root, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(EngineError::io(&path, e)),
        }
    }

    /// Allocates the ballast if it is missing and the disk has room for it beyond `margin`
    /// free bytes. Returns whether it is missing for want of room: a filesystem that cannot
    /// allocate it at all (no `fallocate`) keeps none, and that is not waited for.
    pub fn restore_ballast(&self, margin: u64) -> bool {
        let path = self.ballast();
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == BALLAST_BYTES) {
            return false;
        }
        if self.free_bytes() < margin.saturating_add(BALLAST_BYTES) {
            return true;
        }
        let made = std::fs::File::create(&path).and_then(|f| {
            rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, BALLAST_BYTES)
                .map_err(std::io::Error::from)
        });
        match made {
            Ok(()) => false,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                let no_room = e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error());
                if !no_room {
                    tracing::warn!(error = %e, "this filesystem cannot allocate the disk-space ballast; the store keeps none");
                }
                no_room
            }
        }
    }

    /// Bytes free to unprivileged users on the directory's filesystem (`u64::MAX` if unknown,
    /// so an unreadable statvfs never refuses writes by itself).
    pub fn free_bytes(&self) -> u64 {
        rustix::fs::statvfs(&self.root)
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
            .unwrap_or(u64::MAX)
    }
}

//! How a log is opened and what opening it found: segment size, sync mode, the archive, the
//! test hooks (fault injection, fsync observation), and the recovery report.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::frame::Lsn;

/// Default segment size: big enough that rotation (three fsyncs) is rare.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Smallest segment size accepted; tests use small segments to exercise rotation.
pub const MIN_SEGMENT_BYTES: u64 = 4096;
/// Appenders wait while this many bytes are buffered and not yet written, so a stalled disk
/// cannot make the buffer grow without bound.
pub const MAX_BUFFERED_BYTES: usize = 64 * 1024 * 1024;

/// When an acknowledged append is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// `sync` returns after `fdatasync`: nothing acknowledged is lost, even on power failure.
    Always,
    /// `sync` returns after `write`; a background thread calls `fdatasync` at this interval. A
    /// process crash loses nothing; a power failure loses at most the last interval.
    Interval(Duration),
    /// `sync` returns after `write`; `fdatasync` only at rotation and shutdown. A process crash
    /// loses nothing; a power failure may lose everything since the last rotation.
    NoSync,
}

/// The kind of I/O an injected fault interrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    /// A WAL segment write.
    Write,
    /// A WAL fdatasync.
    Sync,
    /// Allocating disk space: a new WAL segment, a working-tier file growing.
    Allocate,
    /// Writing a memory-mapped file back (the working tier's checkpoint).
    MapFlush,
    /// Writing a cold segment file.
    SegmentWrite,
}

/// Test and drill hook: called before each of the operations [`IoOp`] names; an `Err` is
/// treated exactly like the same error from the kernel.
pub type FaultInjector = Arc<dyn Fn(IoOp) -> io::Result<()> + Send + Sync>;

/// Told the duration of every fdatasync (for metrics).
pub type FsyncObserver = Box<dyn Fn(Duration) + Send + Sync>;

/// How to open a log.
#[derive(Clone)]
pub struct WalOptions {
    /// Active segments live here.
    pub dir: PathBuf,
    /// Closed segments are hard-linked here (never overwritten) for point-in-time restore.
    pub archive_dir: Option<PathBuf>,
    pub segment_bytes: u64,
    pub sync_mode: SyncMode,
    pub fault_injector: Option<FaultInjector>,
}

impl std::fmt::Debug for WalOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalOptions")
            .field("dir", &self.dir)
            .field("archive_dir", &self.archive_dir)
            .field("segment_bytes", &self.segment_bytes)
            .field("sync_mode", &self.sync_mode)
            .field("fault_injector", &self.fault_injector.is_some())
            .finish()
    }
}

impl WalOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WalOptions {
            dir: dir.into(),
            archive_dir: None,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            sync_mode: SyncMode::Always,
            fault_injector: None,
        }
    }
}

/// What recovery found, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records_scanned: u64,
    pub records_replayed: u64,
    /// Set when a torn record at the tail of the last segment was cut off: (file, offset).
    pub truncated_tail: Option<(PathBuf, u64)>,
    pub last_lsn: Lsn,
}

//! The write-ahead log: append, group commit, rotation, archive, recovery on open.
//!
//! Concurrency: appenders take `state` only to assign an LSN and copy their frame into the shared
//! buffer (microseconds). One of the waiting callers becomes the *leader*: it takes the buffer,
//! writes it, calls `fdatasync` once and wakes every caller whose LSN is now durable. Only the
//! leader touches the segment file, so rotation needs no further locking.
//!
//! Invariants: `durable_lsn <= written_lsn <= next_lsn - 1`; the frames in the buffer have
//! consecutive LSNs starting at `written_lsn + 1`; after a failed write or fsync the log is
//! poisoned and never writes again (a failed fsync may have dropped dirty pages: retrying it
//! could report success for data that is gone).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex};

use crate::durable;
use crate::frame::{self, Lsn, RecordRef, MAX_RECORD_BYTES};
use crate::lsn::AtomicLsn;
use crate::options::{
    FsyncObserver, IoOp, RecoveryReport, SyncMode, WalOptions, MAX_BUFFERED_BYTES,
    MIN_SEGMENT_BYTES,
};
use crate::segment::{self, ScanEnd, SEGMENT_HEADER_BYTES};
use crate::WalError;

/// A closed segment still in the active directory.
#[derive(Debug, Clone)]
struct ClosedSegment {
    index: u64,
    path: PathBuf,
    last_lsn: Lsn,
}

struct Writer {
    file: File,
    index: u64,
    path: PathBuf,
    /// Next write position; frames occupy `[SEGMENT_HEADER_BYTES, offset)`.
    offset: u64,
    /// LSN of the last record in this segment, or of the last one before it.
    last_lsn: Lsn,
    closed: Vec<ClosedSegment>,
    /// Whether bytes were written since the last fdatasync.
    dirty: bool,
}

struct AppendState {
    buf: Vec<u8>,
    spare: Vec<u8>,
    next_lsn: Lsn,
    last_commit_time_us: i64,
}

struct Shared {
    opts: WalOptions,
    state: Mutex<AppendState>,
    /// Wakes appenders blocked on a full buffer.
    buffer_space: Condvar,
    /// Held by the leader for the whole write + fsync. Lock order: `writer` before `state`; the
    /// leader takes `state` only to swap the buffer.
    writer: Mutex<Writer>,
    leader: Mutex<bool>,
    leader_done: Condvar,
    written_lsn: AtomicLsn,
    durable_lsn: AtomicLsn,
    poisoned: AtomicBool,
    shutting_down: AtomicBool,
    fsync_count: AtomicU64,
    /// Frame bytes written since open.
    bytes_written: AtomicU64,
    /// Frame bytes appended since open (buffered, being written, or written).
    bytes_appended: AtomicU64,
    last_fsync_us: AtomicI64,
    fsync_observer: Mutex<Option<FsyncObserver>>,
    /// The next segment, made ahead of need so that rotation never allocates disk space: a full
    /// disk is met by [`Wal::ensure_spare`], which refuses a write before it is appended,
    /// instead of by the leader, which could only poison the log with the records it holds.
    spare: Mutex<Option<segment::SpareSegment>>,
    /// Index of the segment receiving appends, and the bytes written to it.
    current_index: AtomicU64,
    current_offset: AtomicU64,
}

/// A write-ahead log open for appends. Cheap to share behind an `Arc`.
pub struct Wal {
    shared: Arc<Shared>,
    syncer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.opts.dir)
            .field("durable_lsn", &self.durable_lsn())
            .finish()
    }
}

fn io_err(path: &Path, source: io::Error) -> WalError {
    WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn now_us() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}

impl Wal {
    /// Opens (or creates) the log in `opts.dir`, scans every segment, cuts off a torn tail, calls
    /// `replay` for each record with `lsn >= replay_from` in LSN order, and returns the log ready
    /// for appends. The next LSN is above both the last record and `min_next_lsn` (the tiers may
    /// reflect records whose segments were already removed).
    pub fn open<E: From<WalError>>(
        opts: WalOptions,
        replay_from: Lsn,
        min_next_lsn: Lsn,
        mut replay: impl FnMut(RecordRef<'_>) -> Result<(), E>,
    ) -> Result<(Wal, RecoveryReport), E> {
        if opts.segment_bytes < MIN_SEGMENT_BYTES {
            return Err(WalError::InvalidOptions(format!(
                "segment_bytes {} is below the minimum {MIN_SEGMENT_BYTES}",
                opts.segment_bytes
            ))
            .into());
        }
        std::fs::create_dir_all(&opts.dir).map_err(|e| io_err(&opts.dir, e))?;
        if let Some(archive) = &opts.archive_dir {
            std::fs::create_dir_all(archive).map_err(|e| io_err(archive, e))?;
        }
        let segments = segment::list_segments(&opts.dir).map_err(|e| io_err(&opts.dir, e))?;
        let mut report = RecoveryReport {
            segments: segments.len(),
            ..RecoveryReport::default()
        };
        let mut expected: Option<Lsn> = None;
        let mut closed = Vec::new();
        let mut tail: Option<(u64, PathBuf, u64)> = None; // (index, path, end offset)
        let mut last_lsn = Lsn::ZERO;
        let mut first_lsn: Option<Lsn> = None;
        for (i, (index, path)) in segments.iter().enumerate() {
            let is_last = i + 1 == segments.len();
            let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
            if let Err(reason) = segment::check_header(&bytes, *index) {
                if is_last && bytes.len() < SEGMENT_HEADER_BYTES && bytes.iter().all(|&b| b == 0) {
                    // A segment whose creation was cut short before its header was written:
                    // it never held a record.
                    std::fs::remove_file(path).map_err(|e| io_err(path, e))?;
                    continue;
                }
                return Err(WalError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    reason: format!("bad segment header: {reason}"),
                }
                .into());
            }
            let end = segment::scan(&bytes, &mut expected, |record, _offset| {
                report.records_scanned += 1;
                first_lsn.get_or_insert(record.lsn);
                last_lsn = record.lsn;
                if record.lsn >= replay_from {
                    report.records_replayed += 1;
                    replay(record)?;
                }
                Ok::<(), E>(())
            })?;
            let end_offset = match end {
                ScanEnd::Clean { end_offset } => end_offset,
                ScanEnd::Bad { offset, reason } => {
                    let later = if is_last {
                        segment::valid_frame_after(&bytes, offset as usize, last_lsn)
                    } else {
                        None
                    };
                    if !is_last || later.is_some() {
                        return Err(WalError::Corrupt {
                            path: path.clone(),
                            offset,
                            reason: match later {
                                Some(at) => format!(
                                    "{reason}; a valid record follows at offset {at}, so this is not a torn tail"
                                ),
                                None => reason.to_string(),
                            },
                        }
                        .into());
                    }
                    // Torn tail: cut the file at the bad frame and re-extend it with zeros.
                    let file = OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(|e| io_err(path, e))?;
                    file.set_len(offset).map_err(|e| io_err(path, e))?;
                    segment::preallocate(&file, opts.segment_bytes.max(offset))
                        .map_err(|e| io_err(path, e))?;
                    file.sync_all().map_err(|e| io_err(path, e))?;
                    tracing::warn!(
                        file = %path.display(),
                        offset,
                        %reason,
                        "cut a torn record off the tail of the WAL"
                    );
                    report.truncated_tail = Some((path.clone(), offset));
                    offset
                }
            };
            if is_last {
                tail = Some((*index, path.clone(), end_offset));
            } else {
                closed.push(ClosedSegment {
                    index: *index,
                    path: path.clone(),
                    last_lsn,
                });
            }
        }
        if let Some(first) = first_lsn {
            if first > replay_from.max(Lsn::FIRST) {
                return Err(WalError::Gap {
                    needed: replay_from,
                    first,
                }
                .into());
            }
        }
        report.last_lsn = last_lsn;
        let next_lsn = last_lsn.next().max(min_next_lsn).max(Lsn::FIRST);

        let writer = match tail {
            Some((index, path, offset)) if last_lsn.next() == next_lsn => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| io_err(&path, e))?;
                Writer {
                    file,
                    index,
                    path,
                    offset,
                    last_lsn,
                    closed,
                    dirty: false,
                }
            }
            other => {
                // No segment yet, or the log must continue at a higher LSN than its last record
                // (the tiers are ahead of a log whose tail was lost): start a fresh segment so
                // LSNs stay consecutive inside every segment.
                if let Some((index, path, _)) = other {
                    closed.push(ClosedSegment {
                        index,
                        path,
                        last_lsn,
                    });
                }
                let index = closed.last().map_or(1, |c| c.index + 1);
                let (file, path) = segment::create_segment(&opts.dir, index, opts.segment_bytes)
                    .map_err(|e| io_err(&opts.dir, e))?;
                Writer {
                    file,
                    index,
                    path,
                    offset: SEGMENT_HEADER_BYTES as u64,
                    last_lsn: next_lsn.prev(),
                    closed,
                    dirty: false,
                }
            }
        };

        let sync_mode = opts.sync_mode;
        let (writer_index, writer_offset) = (writer.index, writer.offset);
        let shared = Arc::new(Shared {
            opts,
            state: Mutex::new(AppendState {
                buf: Vec::with_capacity(1 << 20),
                spare: Vec::with_capacity(1 << 20),
                next_lsn,
                last_commit_time_us: 0,
            }),
            buffer_space: Condvar::new(),
            writer: Mutex::new(writer),
            leader: Mutex::new(false),
            leader_done: Condvar::new(),
            written_lsn: AtomicLsn::new(next_lsn.prev()),
            durable_lsn: AtomicLsn::new(next_lsn.prev()),
            poisoned: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            fsync_count: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            bytes_appended: AtomicU64::new(0),
            last_fsync_us: AtomicI64::new(0),
            fsync_observer: Mutex::new(None),
            spare: Mutex::new(None),
            current_index: AtomicU64::new(writer_index),
            current_offset: AtomicU64::new(writer_offset),
        });
        let syncer = match sync_mode {
            SyncMode::Interval(every) => {
                let shared = Arc::clone(&shared);
                Some(
                    std::thread::Builder::new()
                        .name("engram-wal-sync".to_owned())
                        .spawn(move || interval_syncer(&shared, every))
                        .map_err(|e| io_err(Path::new("<thread>"), e))?,
                )
            }
            _ => None,
        };
        Ok((Wal { shared, syncer }, report))
    }

    /// Registers a callback told the duration of every fdatasync (for metrics).
    pub fn set_fsync_observer(&self, observer: FsyncObserver) {
        *self.shared.fsync_observer.lock() = Some(observer);
    }

    /// Assigns the next LSN to `payload` and buffers its frame. Not yet written: call
    /// [`Wal::sync`] with the returned LSN before acknowledging.
    pub fn append(&self, payload: &[u8]) -> Result<(Lsn, i64), WalError> {
        let shared = &self.shared;
        if payload.is_empty() || payload.len() > MAX_RECORD_BYTES {
            return Err(WalError::RecordTooLarge { len: payload.len() });
        }
        let flen = frame::frame_len(payload.len()) as u64;
        if flen > shared.opts.segment_bytes - SEGMENT_HEADER_BYTES as u64 {
            return Err(WalError::RecordTooLarge { len: payload.len() });
        }
        let mut state = shared.state.lock();
        loop {
            if shared.poisoned.load(Ordering::Acquire) {
                return Err(WalError::Poisoned);
            }
            if state.buf.len() < MAX_BUFFERED_BYTES {
                break;
            }
            // Back-pressure: let the leader drain the buffer. Nudge a leader into existence in
            // case every other caller is also here.
            drop(state);
            let target = shared.written_lsn.load(Ordering::Acquire).next();
            self.write_through(target, false)?;
            state = shared.state.lock();
        }
        let lsn = state.next_lsn;
        // Commit time never goes backwards, even if the wall clock does.
        let commit_time_us = now_us().max(state.last_commit_time_us);
        state.last_commit_time_us = commit_time_us;
        state.next_lsn = state.next_lsn.next();
        frame::encode(&mut state.buf, lsn, commit_time_us, payload);
        shared.bytes_appended.fetch_add(flen, Ordering::Release);
        Ok((lsn, commit_time_us))
    }

    /// Returns once record `lsn` is as durable as the sync mode promises: fdatasync'd in
    /// `Always`, written to the kernel otherwise.
    pub fn sync(&self, lsn: Lsn) -> Result<(), WalError> {
        let fsync = matches!(self.shared.opts.sync_mode, SyncMode::Always);
        self.write_through(lsn, fsync)
    }

    /// Writes and fdatasyncs everything appended so far, whatever the sync mode (shutdown,
    /// checkpoints).
    pub fn sync_all(&self) -> Result<(), WalError> {
        let last = self.shared.state.lock().next_lsn.prev();
        self.write_through(last, true)
    }

    fn write_through(&self, lsn: Lsn, fsync: bool) -> Result<(), WalError> {
        let shared = &self.shared;
        let done = |shared: &Shared| {
            if fsync {
                shared.durable_lsn.load(Ordering::Acquire) >= lsn
            } else {
                shared.written_lsn.load(Ordering::Acquire) >= lsn
            }
        };
        loop {
            if done(shared) {
                return Ok(());
            }
            if shared.poisoned.load(Ordering::Acquire) {
                return Err(WalError::Poisoned);
            }
            let mut leader = shared.leader.lock();
            if done(shared) {
                return Ok(());
            }
            if *leader {
                shared.leader_done.wait(&mut leader);
                continue;
            }
            *leader = true;
            drop(leader);
            let result = lead(shared, fsync);
            let mut leader = shared.leader.lock();
            *leader = false;
            shared.leader_done.notify_all();
            drop(leader);
            result?;
        }
    }

    /// Highest LSN that is fdatasync'd.
    pub fn durable_lsn(&self) -> Lsn {
        self.shared.durable_lsn.load(Ordering::Acquire)
    }

    /// Highest LSN handed to the kernel.
    pub fn written_lsn(&self) -> Lsn {
        self.shared.written_lsn.load(Ordering::Acquire)
    }

    /// LSN the next append will get, minus one.
    pub fn last_lsn(&self) -> Lsn {
        self.shared.state.lock().next_lsn.prev()
    }

    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::Acquire)
    }

    /// Frame bytes written since the log was opened.
    pub fn bytes_written(&self) -> u64 {
        self.shared.bytes_written.load(Ordering::Relaxed)
    }

    /// Number of fdatasync calls so far.
    pub fn fsync_count(&self) -> u64 {
        self.shared.fsync_count.load(Ordering::Relaxed)
    }

    pub fn sync_mode(&self) -> SyncMode {
        self.shared.opts.sync_mode
    }

    /// The tiers durably reflect every record up to `lsn`: closed segments holding nothing newer
    /// leave the active directory (they stay in the archive, if one is configured). Returns how
    /// many segments were removed.
    pub fn checkpoint(&self, lsn: Lsn) -> Result<usize, WalError> {
        let mut writer = self.shared.writer.lock();
        let dir = self.shared.opts.dir.clone();
        let mut removed = 0;
        let mut keep = Vec::with_capacity(writer.closed.len());
        for segment in writer.closed.drain(..) {
            if segment.last_lsn <= lsn {
                std::fs::remove_file(&segment.path).map_err(|e| io_err(&segment.path, e))?;
                removed += 1;
            } else {
                keep.push(segment);
            }
        }
        writer.closed = keep;
        if removed > 0 {
            durable::sync_dir(&dir).map_err(|e| io_err(&dir, e))?;
        }
        Ok(removed)
    }

    /// Closes the current segment now, if it holds any record, and starts the next one: so
    /// that a later [`Wal::checkpoint`] can remove every record written so far from the active
    /// directory (a namespace purge leaves none of its records there). Everything appended
    /// before is written and synced first.
    pub fn rotate_now(&self) -> Result<(), WalError> {
        self.sync_all()?;
        let mut writer = self.shared.writer.lock();
        if writer.offset > SEGMENT_HEADER_BYTES as u64 {
            rotate(&self.shared, &mut writer)?;
        }
        Ok(())
    }

    /// Removes archived segments last modified before `cutoff` (retention) whose records are
    /// all below `keep_from_lsn` (still needed, e.g. to replay from the oldest snapshot).
    /// Returns how many. Segments still in the active directory are unaffected: the archive
    /// holds hard links.
    pub fn prune_archive(&self, cutoff: SystemTime, keep_from_lsn: Lsn) -> Result<usize, WalError> {
        let Some(archive) = &self.shared.opts.archive_dir else {
            return Ok(0);
        };
        let mut removed = 0;
        let segments = segment::list_segments(archive).map_err(|e| io_err(archive, e))?;
        for (index, path) in segments {
            let modified = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .map_err(|e| io_err(&path, e))?;
            if modified >= cutoff {
                break; // archived in order: everything after is younger
            }
            let info = crate::export::scan_file(index, &path, |_, _, _| {})?;
            if info.lsns.is_some_and(|(_, last)| last >= keep_from_lsn) {
                break;
            }
            std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
            removed += 1;
        }
        if removed > 0 {
            durable::sync_dir(archive).map_err(|e| io_err(archive, e))?;
        }
        Ok(removed)
    }

    /// Call before appending a record of `len` bytes: makes sure the log can take it without
    /// allocating disk space when it is written. While what is appended (written, buffered, or
    /// being written) stays within half the current segment, it has room; past that, the next
    /// segment is made now, ahead of rotation (so an empty store holds one segment, not two).
    /// Past one and a half segments the caller waits for the pending records to be written
    /// (rotating into the spare), so that what is in flight always fits the current segment
    /// and the spare. An error (ENOSPC on a full disk) changes nothing: the caller refuses the
    /// record and may try again later. Exact when the caller serializes its appends.
    pub fn ensure_spare(&self, len: usize) -> Result<(), WalError> {
        let shared = &self.shared;
        let segment = shared.opts.segment_bytes;
        loop {
            // Everything appended and not yet written counts. `bytes_written` is read before
            // `current_offset` (the leader stores them in the other order), so the sum never
            // comes out short.
            let written = shared.bytes_written.load(Ordering::Acquire);
            let offset = shared.current_offset.load(Ordering::Acquire);
            let pending = shared
                .bytes_appended
                .load(Ordering::Acquire)
                .saturating_sub(written);
            let projected = offset + pending + frame::frame_len(len) as u64;
            if projected <= segment / 2 {
                return Ok(());
            }
            if projected <= segment + segment / 2 {
                let next = shared.current_index.load(Ordering::Acquire) + 1;
                if shared
                    .spare
                    .lock()
                    .as_ref()
                    .is_some_and(|s| s.index == next)
                {
                    return Ok(());
                }
                return make_spare(shared);
            }
            if pending == 0 {
                // A record bigger than half a segment on a fresh one: the spare is enough.
                return make_spare(shared);
            }
            let last = shared.state.lock().next_lsn.prev();
            self.write_through(last, false)?;
        }
    }

    /// Number of segments (closed and current) in the active directory.
    pub fn active_segments(&self) -> usize {
        self.shared.writer.lock().closed.len() + 1
    }

    /// Writes and syncs what is buffered and stops the interval syncer. Appends after this fail.
    pub fn close(mut self) -> Result<(), WalError> {
        let result = if self.is_poisoned() {
            Err(WalError::Poisoned)
        } else {
            self.sync_all()
        };
        self.stop_syncer();
        result
    }

    fn stop_syncer(&mut self) {
        self.shared.shutting_down.store(true, Ordering::Release);
        if let Some(handle) = self.syncer.take() {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.stop_syncer();
    }
}

fn interval_syncer(shared: &Shared, every: Duration) {
    while !shared.shutting_down.load(Ordering::Acquire) {
        std::thread::park_timeout(every);
        if shared.poisoned.load(Ordering::Acquire) || shared.shutting_down.load(Ordering::Acquire) {
            continue;
        }
        let mut leader = shared.leader.lock();
        while *leader {
            shared.leader_done.wait(&mut leader);
        }
        *leader = true;
        drop(leader);
        let result = lead(shared, true);
        let mut leader = shared.leader.lock();
        *leader = false;
        shared.leader_done.notify_all();
        drop(leader);
        if let Err(e) = result {
            tracing::error!(error = %e, "WAL interval fsync failed; the log is poisoned");
        }
    }
}

fn inject(shared: &Shared, op: IoOp) -> io::Result<()> {
    match &shared.opts.fault_injector {
        Some(f) => f(op),
        None => Ok(()),
    }
}

fn poison(shared: &Shared, error: WalError) -> WalError {
    shared.poisoned.store(true, Ordering::Release);
    shared.buffer_space.notify_all();
    tracing::error!(error = %error, "WAL I/O failed; refusing writes until restart");
    error
}

/// The leader's work: write the buffered frames (rotating when a segment fills), then fsync if
/// asked. Runs with the `leader` flag held, so it is the only writer of segment files.
fn lead(shared: &Shared, fsync: bool) -> Result<(), WalError> {
    let mut writer = shared.writer.lock();
    let (buf, last_lsn) = {
        let mut state = shared.state.lock();
        let spare = std::mem::take(&mut state.spare);
        let buf = std::mem::replace(&mut state.buf, spare);
        (buf, state.next_lsn.prev())
    };
    shared.buffer_space.notify_all();
    if !buf.is_empty() {
        if let Err(e) = write_frames(shared, &mut writer, &buf) {
            return Err(poison(shared, e));
        }
        debug_assert_eq!(writer.last_lsn, last_lsn);
        shared.written_lsn.store(last_lsn, Ordering::Release);
    }
    let mut buf = buf;
    buf.clear();
    {
        let mut state = shared.state.lock();
        if state.spare.capacity() < buf.capacity() {
            state.spare = buf;
        }
    }
    if fsync {
        if writer.dirty {
            sync_file(shared, &mut writer)?;
        }
        shared.durable_lsn.store(
            shared.written_lsn.load(Ordering::Acquire),
            Ordering::Release,
        );
    }
    Ok(())
}

fn sync_file(shared: &Shared, writer: &mut Writer) -> Result<(), WalError> {
    let started = Instant::now();
    let result = inject(shared, IoOp::Sync).and_then(|()| writer.file.sync_data());
    if let Err(e) = result {
        return Err(poison(shared, io_err(&writer.path, e)));
    }
    writer.dirty = false;
    let took = started.elapsed();
    shared.fsync_count.fetch_add(1, Ordering::Relaxed);
    shared.last_fsync_us.store(
        i64::try_from(took.as_micros()).unwrap_or(i64::MAX),
        Ordering::Relaxed,
    );
    if let Some(observer) = shared.fsync_observer.lock().as_ref() {
        observer(took);
    }
    Ok(())
}

fn write_frames(shared: &Shared, writer: &mut Writer, buf: &[u8]) -> Result<(), WalError> {
    let capacity = shared.opts.segment_bytes;
    let mut pos = 0usize;
    while pos < buf.len() {
        let room = capacity.saturating_sub(writer.offset) as usize;
        let mut end = pos;
        let mut last_lsn = writer.last_lsn;
        while end < buf.len() {
            let len = u32::from_le_bytes(buf[end..end + 4].try_into().expect("4 bytes")) as usize;
            let flen = frame::frame_len(len);
            if end + flen - pos > room {
                break;
            }
            last_lsn = Lsn::from_le_bytes(buf[end + 8..end + 16].try_into().expect("8 bytes"));
            end += flen;
        }
        if end == pos {
            rotate(shared, writer)?;
            continue;
        }
        inject(shared, IoOp::Write)
            .and_then(|()| writer.file.write_all_at(&buf[pos..end], writer.offset))
            .map_err(|e| io_err(&writer.path, e))?;
        writer.offset += (end - pos) as u64;
        shared
            .current_offset
            .store(writer.offset, Ordering::Release);
        shared
            .bytes_written
            .fetch_add((end - pos) as u64, Ordering::Release);
        writer.last_lsn = last_lsn;
        writer.dirty = true;
        pos = end;
    }
    Ok(())
}

/// Closes the current segment (fsync'd, so only the newest segment can ever hold a torn tail),
/// archives it, and starts the next one.
fn rotate(shared: &Shared, writer: &mut Writer) -> Result<(), WalError> {
    if writer.dirty {
        sync_file(shared, writer)?;
    }
    let closing = ClosedSegment {
        index: writer.index,
        path: writer.path.clone(),
        last_lsn: writer.last_lsn,
    };
    if let Some(archive) = &shared.opts.archive_dir {
        let target = archive.join(segment::segment_file_name(closing.index));
        match std::fs::hard_link(&closing.path, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&target, e)),
        }
        durable::sync_dir(archive).map_err(|e| io_err(archive, e))?;
    }
    let index = writer.index + 1;
    let dir = &shared.opts.dir;
    let spare = shared.spare.lock().take();
    let made = match spare {
        Some(s) if s.index == index => s.install(dir),
        other => {
            if let Some(stale) = other {
                stale.discard();
            }
            inject(shared, IoOp::Allocate)
                .and_then(|()| segment::create_segment(dir, index, shared.opts.segment_bytes))
        }
    };
    let (file, path) = made.map_err(|e| io_err(dir, e))?;
    writer.closed.push(closing);
    writer.file = file;
    writer.path = path;
    writer.index = index;
    writer.offset = SEGMENT_HEADER_BYTES as u64;
    writer.dirty = false;
    shared
        .current_offset
        .store(SEGMENT_HEADER_BYTES as u64, Ordering::Release);
    shared.current_index.store(index, Ordering::Release);
    Ok(())
}

/// Makes the segment after the current one as the spare (replacing a stale spare).
fn make_spare(shared: &Shared) -> Result<(), WalError> {
    let mut spare = shared.spare.lock();
    let next = shared.current_index.load(Ordering::Acquire) + 1;
    if spare.as_ref().is_some_and(|s| s.index == next) {
        return Ok(());
    }
    if let Some(stale) = spare.take() {
        stale.discard();
    }
    let dir = &shared.opts.dir;
    *spare = Some(
        inject(shared, IoOp::Allocate)
            .and_then(|()| segment::prepare_segment(dir, next, shared.opts.segment_bytes, true))
            .map_err(|e| io_err(dir, e))?,
    );
    Ok(())
}

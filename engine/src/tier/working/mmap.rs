//! The working tier's memory-mapped files, and the crate's only unsafe code beside the
//! vector casts: every byte of a mapping is read and written as an aligned `AtomicU64`, so a
//! lock-free reader racing the writer (a stale reader copying a heap entry that compaction is
//! overwriting) sees whole words, old or new, and throws the copy away by its checks. No plain
//! (non-atomic) access ever touches mapped memory, so there is no data race in Rust's model.
#![allow(
    unsafe_code,
    reason = "the only unsafe code of the engine: shared atomic views of mapped memory"
)]

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use crate::EngineError;

/// A memory-mapped file that is written by one writer and read concurrently.
///
/// The mapping is as long as the file may ever grow; the file itself holds only what has been
/// reserved (`backed`), every block of it allocated with fallocate. Nothing past `backed` is
/// ever touched: a page past the end of the file would be SIGBUS, and a sparse page would need
/// a block at the moment it is first written, which a full disk cannot give (SIGBUS again).
pub(super) struct Mapped {
    map: MmapRaw,
    file: File,
    pub(super) path: PathBuf,
    /// Length of the file: the reserved, allocated prefix of the mapping.
    backed: AtomicU64,
}

impl Mapped {
    /// Maps `map_len` bytes of `path` (created empty if missing), or the whole file if it is
    /// longer. The file is not grown: see [`Mapped::reserve`].
    pub(super) fn open(path: &Path, map_len: u64) -> Result<Mapped, EngineError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| EngineError::io(path, e))?;
        let current = file.metadata().map_err(|e| EngineError::io(path, e))?.len();
        let map = MmapOptions::new()
            .len(usize::try_from(map_len.max(current)).expect("64-bit target"))
            .map_raw(&file)
            .map_err(|e| EngineError::io(path, e))?;
        Ok(Mapped {
            map,
            file,
            path: path.to_path_buf(),
            backed: AtomicU64::new(current),
        })
    }

    /// Bytes of the file: everything below is allocated and may be read and written.
    pub(super) fn backed(&self) -> u64 {
        self.backed.load(Ordering::Acquire)
    }

    /// Grows the file to `len` bytes with every new block allocated, so no page fault in it
    /// ever needs disk space. A full disk is `StorageFull` and changes nothing.
    ///
    /// # Panics
    /// If `len` is past the mapping.
    pub(super) fn reserve(&self, len: u64) -> Result<(), EngineError> {
        let backed = self.backed();
        if len <= backed {
            return Ok(());
        }
        assert!(
            len <= self.len() as u64,
            "{}: reserving {len} bytes past the mapping of {}",
            self.path.display(),
            self.len()
        );
        rustix::fs::fallocate(
            &self.file,
            rustix::fs::FallocateFlags::empty(),
            backed,
            len - backed,
        )
        .map_err(|e| {
            let e = std::io::Error::from(e);
            if crate::fsutil::is_out_of_space(&e) {
                EngineError::StorageFull(format!(
                    "no disk space to grow {} to {len} bytes",
                    self.path.display()
                ))
            } else {
                EngineError::io(&self.path, e)
            }
        })?;
        self.backed.store(len, Ordering::Release);
        Ok(())
    }

    /// Cuts the file to `len` bytes. Only while nothing reads the mapping past `len` (at
    /// open, before readers exist).
    pub(super) fn truncate(&self, len: u64) -> Result<(), EngineError> {
        if len >= self.backed() {
            return Ok(());
        }
        self.file
            .set_len(len)
            .map_err(|e| EngineError::io(&self.path, e))?;
        self.backed.store(len, Ordering::Release);
        Ok(())
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// The `n` words starting at byte offset `off`, as atomics.
    ///
    /// # Panics
    /// If `off` is not 8-aligned or the words reach past the mapping.
    fn words(&self, off: usize, n: usize) -> &[AtomicU64] {
        let end = n.checked_mul(8).and_then(|b| b.checked_add(off));
        assert!(
            off.is_multiple_of(8) && end.is_some_and(|end| end <= self.len()),
            "{n} words at offset {off} out of bounds of {} bytes",
            self.len()
        );
        let first = self.map.as_ptr().wrapping_add(off).cast::<AtomicU64>();
        // SAFETY: the words are 8-aligned (the mapping is page-aligned and `off` a multiple of 8)
        // and inside the mapping (both asserted above); the mapping lives as long as `self`;
        // `AtomicU64` has the size and alignment of `u64`, every bit pattern is valid, and every
        // access to mapped memory goes through atomics (this module has no other), so shared
        // references to these words are sound.
        unsafe { std::slice::from_raw_parts(first, n) }
    }

    /// The word at byte offset `off` (8-aligned), as an atomic.
    pub(super) fn word(&self, off: usize) -> &AtomicU64 {
        &self.words(off, 1)[0]
    }

    /// Copies `dst.len()` bytes from offset `off` (8-aligned) with relaxed word loads; `false`
    /// if the range is out of bounds. Used for heap entries, which are padded to whole words:
    /// the caller validates the copy (CRC and the slot sequence), so a concurrent overwrite is
    /// detected and the copy discarded.
    pub(super) fn copy_out(&self, off: usize, dst: &mut [u8]) -> bool {
        let n = dst.len().div_ceil(8);
        let in_bounds = n
            .checked_mul(8)
            .and_then(|b| b.checked_add(off))
            .is_some_and(|end| end as u64 <= self.backed());
        if !in_bounds || !off.is_multiple_of(8) {
            return false;
        }
        for (chunk, word) in dst.chunks_mut(8).zip(self.words(off, n)) {
            let bytes = word.load(Ordering::Relaxed).to_ne_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        true
    }

    /// Writes `src` (whole words) at offset `off` (8-aligned) with relaxed word stores. Only the
    /// single writer calls this, on heap bytes that no slot points at yet; readers learn of them
    /// through a slot's sequence (a release store).
    ///
    /// # Panics
    /// If `src` is not whole words, or the range is misaligned or not reserved.
    pub(super) fn copy_in(&self, off: usize, src: &[u8]) {
        assert!(src.len().is_multiple_of(8), "heap writes are whole words");
        assert!(
            (off + src.len()) as u64 <= self.backed(),
            "{}: writing past the reserved {} bytes",
            self.path.display(),
            self.backed()
        );
        for (chunk, word) in src.chunks_exact(8).zip(self.words(off, src.len() / 8)) {
            let bytes: [u8; 8] = chunk.try_into().expect("chunks of 8");
            word.store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
        }
    }

    /// Overwrites the reserved bytes in `from..to` (8-aligned, clamped to what is reserved)
    /// with zeros, by relaxed word stores: for bytes no slot points at any more. A stale reader
    /// that still copies them fails its checks and looks again.
    pub(super) fn zero(&self, from: u64, to: u64) {
        let to = to.min(self.backed());
        if from >= to {
            return;
        }
        let (from, to) = (
            usize::try_from(from).expect("64-bit target"),
            usize::try_from(to).expect("64-bit target"),
        );
        assert!(from.is_multiple_of(8), "zeroing from a misaligned offset");
        for word in self.words(from, (to - from) / 8) {
            word.store(0, Ordering::Relaxed);
        }
    }

    /// Makes the mapping durable. The pages written since the last checkpoint (up to a few
    /// hundred MB) are written back in steps first (see `sync_gently`), so the WAL syncs issued
    /// meanwhile do not queue behind all of them; the msync then finds little left.
    pub(super) fn sync(&self) -> Result<(), EngineError> {
        engram_wal::durable::sync_gently(&self.file, 1)
            .map_err(|e| EngineError::io(&self.path, e))?;
        self.map.flush().map_err(|e| EngineError::io(&self.path, e))
    }
}

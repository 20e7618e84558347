//! The working tier: a memory-mapped arena of fixed-size slots (header + vector) plus two
//! append-only heap files holding each memory's encoded image.
//!
//! One writer (the engine's apply step, serialized by the engine), many lock-free readers. A slot
//! carries a sequence number that is odd while the writer changes it; a reader copies the slot and
//! the heap entry it points to, then re-reads the sequence and retries if it moved. All slot words
//! are read and written as `AtomicU64`, so slot copies are data-race free; heap entries are
//! immutable once a slot publishes them (until a compaction has moved every slot off that heap).
//!
//! The files are a cache of the WAL: `checkpoint` msyncs them and records the LSN they reflect;
//! on open every live slot and heap entry is checked (CRC32) and the engine replays the WAL from
//! that LSN. See `docs/format.md` for the layouts.

mod format;
mod mmap;

pub use format::stored_layout;

use engram_wal::Lsn;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, Ordering};

use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

use crate::codec;
use crate::idhash::IdMap;
#[cfg(test)]
use crate::model::Status;
use crate::model::{Memory, Tier};
use crate::EngineError;
use format::{
    entry_span, is_live, pack_pointer, parse_header, rd_u32, read_checkpoint, read_file_header,
    slot_bytes, slot_crc, write_file_header, FileHeader, SlotHeader, HEAP_ENTRY_HEADER_BYTES,
    MAX_READ_RETRIES, NO_TIME, OFF_ACCESS_COUNT, OFF_CRC, OFF_CREATED, OFF_EXPIRES,
    OFF_HAS_EMBEDDING, OFF_HEAP_GEN, OFF_HEAP_LEN, OFF_HEAP_OFFSET, OFF_ID, OFF_IMPORTANCE,
    OFF_LAST_ACCESS, OFF_LSN, OFF_SEQ, OFF_STATE, OFF_STATUS, OFF_UPDATED, SLOT_HEADER_BYTES,
    STATE_EMPTY, STATE_LIVE, WORKING_FILE_HEADER_BYTES,
};
use mmap::Mapped;

/// Whole heap entries found by a scan: id → (offset, length).
type HeapCopies = HashMap<Uuid, (u64, u32)>;

/// The working tier's files grow by at least this much (or an eighth of their size) at a time.
const GROWTH_STEP_BYTES: usize = 4 << 20;

/// The length to grow a file of `backed` bytes to so that it holds `required`: at least a step
/// more, never past `cap`.
fn grown(backed: u64, required: u64, cap: u64) -> u64 {
    if required <= backed {
        return backed;
    }
    let step = (backed / 8).max(GROWTH_STEP_BYTES as u64);
    required.max(backed + step).min(cap)
}

/// What eviction and the migration policy read of a working-tier memory: its slot header.
#[derive(Debug, Clone, Copy)]
pub struct SlotSummary {
    pub id: Uuid,
    pub importance: f32,
    /// Last access, or last change if never accessed.
    pub last_used_us: i64,
    pub access_count: u64,
}

/// A heap is compacted early, long before it is full, once its tail is past this and at least
/// three quarters of it is dead entries (images replaced or removed): when the next write is
/// reserved ([`WorkingTier::reserve`]). Without it a small store
/// with steady updates grew its heap files to `working.heap_bytes` (8 GiB by default) of disk,
/// and as much page cache, before the first compaction (found by the soak). Each heap file so
/// stays near max(this, 4 × the live bytes).
pub(crate) const EARLY_COMPACTION_MIN_TAIL: u64 = 64 << 20;

/// The single writer's state: free slots and where the next heap entry goes.
struct HeapWriter {
    free: Vec<u32>,
    /// Heap receiving new entries (0 or 1) and the next write offset in it.
    heap_gen: u8,
    heap_tail: u64,
    /// Bytes of heap entries referenced by live slots.
    live_heap_bytes: u64,
}

impl HeapWriter {
    /// Whether most of the current heap is dead and it is big enough to be worth compacting.
    fn mostly_dead(&self) -> bool {
        self.heap_tail >= EARLY_COMPACTION_MIN_TAIL
            && self.live_heap_bytes.saturating_mul(4) < self.heap_tail
    }
}

/// The working tier. See the module docs for the concurrency protocol.
pub struct WorkingTier {
    dimensions: usize,
    slot_bytes: usize,
    slot_count: usize,
    heap_capacity_bytes: u64,
    slots: Mapped,
    heaps: [Mapped; 2],
    /// id → slot. Readers take the read lock for one hash lookup; the slot data itself is read
    /// lock-free. The writer holds the write lock only to insert or remove an entry.
    /// Slot of each id (ids are random in their last bytes: no SipHash needed).
    index: RwLock<IdMap<Uuid, u32>>,
    /// Serializes writers (the engine already applies one record at a time; this makes the
    /// tier safe on its own).
    writer: Mutex<HeapWriter>,
    dir: PathBuf,
    /// Test hook: consulted before a file grows and before a checkpoint's write-back.
    faults: Option<engram_wal::FaultInjector>,
}

impl std::fmt::Debug for WorkingTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkingTier")
            .field("dir", &self.dir)
            .field("slots", &self.slot_count)
            .field("live", &self.len())
            .finish()
    }
}

/// What opening the tier found.
#[derive(Debug, Clone, Default)]
pub struct WorkingOpenReport {
    /// LSN the last checkpoint recorded; the WAL must be replayed after it.
    pub checkpoint_lsn: Lsn,
    pub live: usize,
    /// Slots written after the checkpoint that failed their checksum (the WAL rebuilds them).
    pub discarded_torn: usize,
    /// Slots that fail their checksum although their LSN is covered by the checkpoint: (slot,
    /// the id its header names, its LSN). A power cut tears such a slot when it was reused
    /// after the checkpoint and straddles a page boundary (the page holding the header kept
    /// the checkpointed image, the next one took the new): then a record after the checkpoint
    /// touched that memory, and replaying the WAL restores it. If none did, the checkpointed
    /// image is lost: the engine reports it as corruption (see `engine::recovery`).
    pub suspects: Vec<(u32, Uuid, Lsn)>,
}

impl WorkingTier {
    /// Opens or creates the tier in `dir` with room for at least `capacity` memories.
    pub fn open(
        dir: &Path,
        dimensions: usize,
        capacity: usize,
        heap_capacity_bytes: u64,
    ) -> Result<(WorkingTier, WorkingOpenReport), EngineError> {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
        let checkpoint_lsn = read_checkpoint(&dir.join("checkpoint"))?;
        let slots_path = dir.join("slots.bin");
        let slot_bytes = slot_bytes(dimensions);
        let existing = read_file_header(&slots_path, dimensions, slot_bytes)?;
        // One spare slot beyond the capacity: every write is copy-on-write into a free slot.
        let slot_count = (capacity + 1).max(existing.as_ref().map_or(0, |h| h.slot_count));
        let heap_capacity_bytes =
            heap_capacity_bytes.max(existing.as_ref().map_or(0, |h| h.heap_bytes));
        let slots_len = (WORKING_FILE_HEADER_BYTES + slot_count * slot_bytes) as u64;
        let slots = Mapped::open(&slots_path, slots_len)?;
        slots.reserve(WORKING_FILE_HEADER_BYTES as u64)?;
        write_file_header(
            &slots,
            &FileHeader {
                dimensions,
                slot_count,
                slot_bytes,
                heap_bytes: heap_capacity_bytes,
                sparse: false,
            },
        );
        let heaps = [
            Mapped::open(&dir.join("heap-0.bin"), heap_capacity_bytes)?,
            Mapped::open(&dir.join("heap-1.bin"), heap_capacity_bytes)?,
        ];
        let tier = WorkingTier {
            dimensions,
            slot_bytes,
            slot_count,
            heap_capacity_bytes,
            slots,
            heaps,
            index: RwLock::new(IdMap::default()),
            writer: Mutex::new(HeapWriter {
                free: Vec::new(),
                heap_gen: 0,
                heap_tail: 0,
                live_heap_bytes: 0,
            }),
            dir: dir.to_path_buf(),
            faults: None,
        };
        let report = tier.load(checkpoint_lsn)?;
        if existing.is_some_and(|h| h.sparse) {
            tier.shrink_to_used()?;
        }
        Ok((tier, report))
    }

    /// Scans every slot: validates checksums, rebuilds the index and free list, and finishes a
    /// heap compaction a crash interrupted.
    fn load(&self, checkpoint_lsn: Lsn) -> Result<WorkingOpenReport, EngineError> {
        let mut report = WorkingOpenReport {
            checkpoint_lsn,
            ..WorkingOpenReport::default()
        };
        let mut index: IdMap<Uuid, u32> = IdMap::default();
        let mut free = Vec::new();
        let mut tails = [0u64; 2];
        let mut live_bytes = 0u64;
        let mut buf = vec![0u8; self.slot_bytes];
        for slot in (0..self.backed_slots() as u32).rev() {
            self.copy_slot_raw(slot, &mut buf);
            let header = parse_header(&buf);
            if header.state == STATE_EMPTY && header.seq.is_multiple_of(2) {
                free.push(slot);
                continue;
            }
            let valid = is_live(header.state)
                && rd_u32(&buf, OFF_CRC) == slot_crc(&buf)
                && header.heap_gen < 2
                && self.read_heap_entry(&header).is_some();
            if !header.seq.is_multiple_of(2) {
                if valid {
                    // Died during an in-place access update, which the CRC does not cover: the
                    // slot is whole.
                    self.settle_seq(slot);
                } else {
                    // Died while writing this slot afresh. Such writes go to a slot that was
                    // free (copy-on-write), so the previous image of that memory is intact
                    // elsewhere.
                    report.discarded_torn += 1;
                    self.clear_slot(slot);
                    free.push(slot);
                    continue;
                }
            }
            if !valid {
                if header.lsn <= checkpoint_lsn {
                    report.suspects.push((slot, header.id, header.lsn));
                }
                // Written after the checkpoint and damaged: the WAL replay rebuilds it.
                report.discarded_torn += 1;
                self.clear_slot(slot);
                free.push(slot);
                continue;
            }
            if let Some(&other) = index.get(&header.id) {
                // A crash between writing the new copy and clearing the old one: keep the newer
                // (higher LSN, then more accesses; equal images are interchangeable).
                let mut other_buf = vec![0u8; self.slot_bytes];
                self.copy_slot_raw(other, &mut other_buf);
                let o = parse_header(&other_buf);
                let other_newer = (o.lsn, o.access_count) >= (header.lsn, header.access_count);
                let (keep, drop_slot) = if other_newer {
                    (other, slot)
                } else {
                    (slot, other)
                };
                self.clear_slot(drop_slot);
                free.push(drop_slot);
                index.insert(header.id, keep);
                continue;
            }
            index.insert(header.id, slot);
        }
        // Heap tails and live bytes from the surviving slots.
        let mut gens_used = [false; 2];
        for &slot in index.values() {
            self.copy_slot_raw(slot, &mut buf);
            let h = parse_header(&buf);
            let end = h.heap_offset + entry_span(h.heap_len);
            let g = usize::from(h.heap_gen);
            tails[g] = tails[g].max(end);
            gens_used[g] = true;
            live_bytes += entry_span(h.heap_len);
        }
        report.live = index.len();
        let mut copies = None;
        let current = match gens_used {
            [true, true] => {
                let (target, found) = self.compaction_target(&index, &tails);
                copies = Some(found);
                target
            }
            [false, true] => 1,
            _ => 0,
        };
        *self.index.write() = index;
        {
            let mut w = self.writer.lock();
            w.free = free;
            w.heap_gen = current;
            w.heap_tail = tails[usize::from(current)];
            w.live_heap_bytes = live_bytes;
        }
        if let Some(copies) = copies {
            // A compaction was cut short: point what is left on the old heap at the copies it
            // had already made durable, and move anything else.
            self.finish_compaction(current, &copies)?;
        }
        Ok(report)
    }

    /// Which heap an interrupted compaction was filling, and the whole entries found in it
    /// (id → offset, length). A compaction copies every live entry into its target from offset
    /// 0 and makes them durable before it repoints any slot, so the target is the heap holding
    /// a copy of every memory still on the other one.
    fn compaction_target(&self, index: &IdMap<Uuid, u32>, tails: &[u64; 2]) -> (u8, HeapCopies) {
        let mut buf = vec![0u8; self.slot_bytes];
        let mut best: Option<(u8, HeapCopies)> = None;
        for g in [0u8, 1] {
            let found = self.scan_heap(g);
            let covers = index.values().all(|&slot| {
                self.copy_slot_raw(slot, &mut buf);
                let h = parse_header(&buf);
                h.heap_gen == g || found.get(&h.id).is_some_and(|&(_, len)| len == h.heap_len)
            });
            if covers
                && best
                    .as_ref()
                    .is_none_or(|(b, _)| tails[usize::from(g)] < tails[usize::from(*b)])
            {
                best = Some((g, found));
            }
        }
        // None covers (the files are damaged): the smaller heap, as before; what is missing
        // from it is moved there.
        best.unwrap_or_else(|| (u8::from(tails[0] > tails[1]), HashMap::new()))
    }

    /// The whole entries of heap `g`, from offset 0 to the first that is not.
    fn scan_heap(&self, g: u8) -> HeapCopies {
        let heap = &self.heaps[usize::from(g)];
        let mut found = HashMap::new();
        let mut off = 0u64;
        let mut head = [0u8; HEAP_ENTRY_HEADER_BYTES];
        while heap.copy_out(off as usize, &mut head) {
            let len = rd_u32(&head, 0);
            let mut body = vec![0u8; len as usize];
            if len == 0
                || !heap.copy_out(off as usize + HEAP_ENTRY_HEADER_BYTES, &mut body)
                || crc32fast::hash(&body) != rd_u32(&head, 4)
            {
                break;
            }
            let Ok(m) = codec::decode_memory(&body, Lsn::ZERO) else {
                break;
            };
            // The first entry of an id is the compaction's copy: past the copies, the heap
            // still holds whole entries from its previous use, older images.
            found.entry(m.id).or_insert((off, len));
            off += entry_span(len);
        }
        found
    }

    /// Completes a compaction into heap `target` that a crash or power cut interrupted: slots
    /// still on the other heap point at their durable copies in `copies` (or, without one,
    /// are moved as a compaction moves them); then the slots are made durable.
    fn finish_compaction(&self, target: u8, copies: &HeapCopies) -> Result<(), EngineError> {
        let mut w = self.writer.lock();
        let slots: Vec<u32> = self.index.read().values().copied().collect();
        let mut buf = vec![0u8; self.slot_bytes];
        for slot in slots {
            self.copy_slot_raw(slot, &mut buf);
            let h = parse_header(&buf);
            match copies.get(&h.id) {
                Some(&(offset, len)) if h.heap_gen != target && len == h.heap_len => {
                    if buf[OFF_STATE] == STATE_LIVE {
                        let word = self.slots.word(self.slot_offset(slot) + OFF_HEAP_OFFSET);
                        word.store(pack_pointer(target, offset), Ordering::Release);
                    } else {
                        buf[OFF_HEAP_OFFSET..OFF_HEAP_OFFSET + 8]
                            .copy_from_slice(&offset.to_le_bytes());
                        buf[OFF_HEAP_GEN] = target;
                        let bytes = self.current_form(&buf);
                        self.replace_slot(&mut w, h.id, Some(slot), &bytes)?;
                    }
                    w.heap_tail = w.heap_tail.max(offset + entry_span(len));
                }
                _ => {}
            }
        }
        // Whatever had no copy is moved now (this also makes the slots durable).
        self.move_slots_off_locked(&mut w, 1 - target)?;
        self.slots.sync()
    }

    /// Cuts the files of a format-1 tier (sparse, as long as their capacity) to what live
    /// memories use, at open before any reader: from then on they grow by reservations. The
    /// files of this format keep their length across restarts, so the space reserved for
    /// records not yet checkpointed is still there when the WAL replays them.
    fn shrink_to_used(&self) -> Result<(), EngineError> {
        let mut w = self.writer.lock();
        let used_slots = self.index.read().values().map(|&s| s as usize + 1).max();
        let used_slots = used_slots.unwrap_or(0);
        self.slots
            .truncate((WORKING_FILE_HEADER_BYTES + used_slots * self.slot_bytes) as u64)?;
        w.free.retain(|&s| (s as usize) < used_slots);
        let current = usize::from(w.heap_gen);
        self.heaps[current].truncate(w.heap_tail)?;
        // No slot points into the other heap.
        self.heaps[1 - current].truncate(0)
    }

    /// Slots the slot file holds (reserved), of `slot_count`.
    fn backed_slots(&self) -> usize {
        let backed = usize::try_from(self.slots.backed()).expect("64-bit target");
        (backed.saturating_sub(WORKING_FILE_HEADER_BYTES) / self.slot_bytes).min(self.slot_count)
    }

    /// Reserves disk space for writes the engine is about to log, so that applying them can
    /// never meet a full disk: at least `slots` free slots and `heap_bytes` of heap past the
    /// tail (or, when a heap compaction will come first, in the other heap). A full disk is
    /// `StorageFull` before anything is logged.
    pub fn reserve(&self, slots: usize, heap_bytes: u64) -> Result<(), EngineError> {
        let mut w = self.writer.lock();
        self.reserve_slots(&mut w, slots)?;
        let cap = self.heap_capacity_bytes;
        if w.mostly_dead() {
            // Here, before anything is logged, a full disk is a clean refusal: the other heap
            // is grown to hold the live entries first, so the compaction itself needs no space.
            let other = &self.heaps[usize::from(1 - w.heap_gen)];
            self.grow(other, w.live_heap_bytes.min(cap), cap)?;
            self.compact_locked(&mut w)?;
        }
        let current = &self.heaps[usize::from(w.heap_gen)];
        let wanted = w.heap_tail.saturating_add(heap_bytes);
        self.grow(current, wanted.min(cap), cap)?;
        if wanted > cap {
            let other = &self.heaps[usize::from(1 - w.heap_gen)];
            self.grow(
                other,
                w.live_heap_bytes.saturating_add(heap_bytes).min(cap),
                cap,
            )?;
        }
        Ok(())
    }

    /// Installs the test hook that fails file growth and checkpoint write-backs.
    pub fn set_fault_injector(&mut self, faults: Option<engram_wal::FaultInjector>) {
        self.faults = faults;
    }

    fn inject(&self, op: engram_wal::IoOp, path: &Path) -> Result<(), EngineError> {
        match &self.faults {
            Some(f) => f(op).map_err(|e| {
                if crate::fsutil::is_out_of_space(&e) {
                    EngineError::StorageFull(format!("no disk space to grow {}", path.display()))
                } else {
                    EngineError::io(path, e)
                }
            }),
            None => Ok(()),
        }
    }

    /// Makes `file` hold `required` bytes: a step more when the disk has room for it, else
    /// just what is required.
    fn grow(&self, file: &Mapped, required: u64, cap: u64) -> Result<(), EngineError> {
        let backed = file.backed();
        if required <= backed {
            return Ok(());
        }
        self.inject(engram_wal::IoOp::Allocate, &file.path)?;
        file.reserve(grown(backed, required, cap))
            .or_else(|_| file.reserve(required))
    }

    /// Grows the slot file until at least `n` slots are free (or every slot is in the file).
    fn reserve_slots(&self, w: &mut HeapWriter, n: usize) -> Result<(), EngineError> {
        if w.free.len() >= n {
            return Ok(());
        }
        let backed = self.backed_slots();
        let needed = (backed + n - w.free.len()).min(self.slot_count);
        if needed == backed {
            return Ok(());
        }
        let bytes = |slots: usize| (WORKING_FILE_HEADER_BYTES + slots * self.slot_bytes) as u64;
        // A step at a time, in whole slots; on a nearly full disk, what is needed.
        let cap = bytes(self.slot_count);
        let step = grown(bytes(backed), bytes(needed), cap);
        let target = ((step as usize - WORKING_FILE_HEADER_BYTES) / self.slot_bytes).max(needed);
        self.inject(engram_wal::IoOp::Allocate, &self.slots.path)?;
        if self.slots.reserve(bytes(target)).is_err() {
            self.slots.reserve(bytes(needed))?;
        }
        let target = self.backed_slots();
        // Lowest first off the stack, as at open.
        w.free.extend((backed as u32..target as u32).rev());
        Ok(())
    }

    /// Bytes the tier's files occupy on disk.
    pub fn disk_bytes(&self) -> u64 {
        crate::fsutil::dir_bytes(&self.dir)
    }

    /// Number of memories in the tier.
    pub fn len(&self) -> usize {
        self.index.read().len()
    }

    /// Heap bytes referenced by live memories, and the capacity of one heap file.
    pub fn heap_usage(&self) -> (u64, u64) {
        (self.writer.lock().live_heap_bytes, self.heap_capacity_bytes)
    }

    pub fn contains(&self, id: &Uuid) -> bool {
        self.index.read().contains_key(id)
    }

    /// Bytes `id` takes here: its heap entry and, with a vector, the vector's part of its
    /// slot. `None` if it is not in this tier.
    pub fn stored_bytes(&self, id: &Uuid) -> Option<u64> {
        let mut buf = vec![0u8; SLOT_HEADER_BYTES];
        for _ in 0..MAX_READ_RETRIES {
            let slot = self.index.read().get(id).copied()?;
            self.read_slot(slot, &mut buf)?;
            let h = parse_header(&buf);
            if !is_live(h.state) || h.id != *id {
                // The slot was reused between the index lookup and the copy: look again.
                continue;
            }
            let vector = if buf[OFF_HAS_EMBEDDING] == 1 {
                (self.dimensions * 4) as u64
            } else {
                0
            };
            return Some(entry_span(h.heap_len) + vector);
        }
        None
    }

    /// Every id in the tier (unordered).
    pub fn ids(&self) -> Vec<Uuid> {
        self.index.read().keys().copied().collect()
    }

    fn slot_offset(&self, slot: u32) -> usize {
        assert!(
            (slot as usize) < self.slot_count,
            "slot {slot} out of range"
        );
        WORKING_FILE_HEADER_BYTES + slot as usize * self.slot_bytes
    }

    /// Copies a slot's bytes word by word without checking the sequence (open-time scans and
    /// the writer, which has no concurrent writer to race with).
    fn copy_slot_raw(&self, slot: u32, buf: &mut [u8]) {
        let base = self.slot_offset(slot);
        for (i, chunk) in buf.chunks_exact_mut(8).enumerate() {
            let v = self.slots.word(base + i * 8).load(Ordering::Relaxed);
            chunk.copy_from_slice(&v.to_le_bytes());
        }
    }

    /// Seqlock read: a consistent copy of the slot and the sequence it had.
    fn read_slot(&self, slot: u32, buf: &mut [u8]) -> Option<u64> {
        let base = self.slot_offset(slot);
        let seq_word = self.slots.word(base + OFF_SEQ);
        for attempt in 0..MAX_READ_RETRIES {
            let before = seq_word.load(Ordering::Acquire);
            if !before.is_multiple_of(2) {
                // The writer is inside this slot (an access update writes in place). Spin a
                // little, then give the core away: on a busy machine the writer may have been
                // descheduled mid-write, and spinning would only delay it.
                if attempt < 64 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
            for (i, chunk) in buf.chunks_exact_mut(8).enumerate() {
                let v = self.slots.word(base + i * 8).load(Ordering::Relaxed);
                chunk.copy_from_slice(&v.to_le_bytes());
            }
            fence(Ordering::Acquire);
            if seq_word.load(Ordering::Relaxed) == before {
                return Some(before);
            }
        }
        None
    }

    fn slot_seq(&self, slot: u32) -> u64 {
        self.slots
            .word(self.slot_offset(slot) + OFF_SEQ)
            .load(Ordering::Acquire)
    }

    /// Writer-side: publishes `bytes` (a full slot image, seq word ignored) into `slot`.
    fn write_slot(&self, slot: u32, bytes: &[u8]) {
        let base = self.slot_offset(slot);
        let seq_word = self.slots.word(base + OFF_SEQ);
        let seq = seq_word.load(Ordering::Relaxed);
        let seq = seq + (seq & 1); // an odd sequence left by a crash counts as even again
        seq_word.store(seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        for (i, chunk) in bytes.chunks_exact(8).enumerate().skip(1) {
            let v = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            self.slots.word(base + i * 8).store(v, Ordering::Relaxed);
        }
        seq_word.store(seq + 2, Ordering::Release);
    }

    fn clear_slot(&self, slot: u32) {
        let zeros = vec![0u8; self.slot_bytes];
        self.write_slot(slot, &zeros);
    }

    /// Reads and checks the heap entry a slot header points to.
    fn read_heap_entry(&self, h: &SlotHeader) -> Option<Vec<u8>> {
        let heap = self.heaps.get(usize::from(h.heap_gen))?;
        let off = usize::try_from(h.heap_offset).ok()?;
        let mut head = [0u8; HEAP_ENTRY_HEADER_BYTES];
        if !heap.copy_out(off, &mut head) {
            return None;
        }
        let len = rd_u32(&head, 0);
        if len != h.heap_len {
            return None;
        }
        let mut body = vec![0u8; len as usize];
        if !heap.copy_out(off + HEAP_ENTRY_HEADER_BYTES, &mut body) {
            return None;
        }
        (crc32fast::hash(&body) == rd_u32(&head, 4)).then_some(body)
    }

    /// Reads a memory by id, lock-free on the slot. `Ok(None)` if it is not in this tier.
    pub fn get(&self, id: &Uuid) -> Result<Option<Memory>, EngineError> {
        Ok(self.read(id, true)?.map(|(m, _)| m))
    }

    /// [`Self::get`] without the vector: only the slot's header is copied, not the 4 bytes a
    /// dimension behind it. Also says whether the memory has a vector.
    pub fn get_without_vector(&self, id: &Uuid) -> Result<Option<(Memory, bool)>, EngineError> {
        self.read(id, false)
    }

    fn read(&self, id: &Uuid, with_vector: bool) -> Result<Option<(Memory, bool)>, EngineError> {
        let mut buf = vec![
            0u8;
            if with_vector {
                self.slot_bytes
            } else {
                SLOT_HEADER_BYTES
            }
        ];
        for _ in 0..MAX_READ_RETRIES {
            let Some(slot) = self.index.read().get(id).copied() else {
                return Ok(None);
            };
            let Some(seq) = self.read_slot(slot, &mut buf) else {
                // It waited long enough already.
                break;
            };
            let h = parse_header(&buf);
            if !is_live(h.state) || h.id != *id {
                // The slot was reused between the index lookup and the copy: look again.
                continue;
            }
            let entry = self.read_heap_entry(&h);
            if self.slot_seq(slot) != seq {
                continue;
            }
            let pointer = self.slots.word(self.slot_offset(slot) + OFF_HEAP_OFFSET);
            if entry.is_none()
                && pointer.load(Ordering::Acquire) != pack_pointer(h.heap_gen, h.heap_offset)
            {
                // A compaction moved the entry (and may have zeroed the old copy): look again.
                continue;
            }
            let Some(entry) = entry else {
                return Err(EngineError::Corrupt {
                    path: self.heaps[usize::from(h.heap_gen.min(1))].path.clone(),
                    detail: format!(
                        "heap entry of memory {id} at offset {} fails its checksum",
                        h.heap_offset
                    ),
                });
            };
            let mut memory =
                codec::decode_memory(&entry, h.lsn).map_err(|e| EngineError::Corrupt {
                    path: self.slots.path.clone(),
                    detail: format!("memory {id}: {e}"),
                })?;
            memory.tier = Tier::Working;
            memory.access_count = h.access_count;
            memory.last_accessed_at_us =
                (h.last_accessed_at_us != NO_TIME).then_some(h.last_accessed_at_us);
            let has_embedding = buf[OFF_HAS_EMBEDDING] == 1;
            memory.embedding = (has_embedding && with_vector).then(|| {
                buf[SLOT_HEADER_BYTES..SLOT_HEADER_BYTES + self.dimensions * 4]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect()
            });
            if has_embedding && memory.embedding_status == crate::model::EmbeddingStatus::None {
                // A version-1 image: its vector was the client's.
                memory.embedding_status = crate::model::EmbeddingStatus::Ready;
            }
            return Ok(Some((memory, has_embedding)));
        }
        Err(EngineError::Busy(
            "working-tier slot kept changing during a read",
        ))
    }

    /// The slot header summary of every memory in the tier (eviction and migration inputs).
    pub fn eviction_inputs(&self) -> Vec<SlotSummary> {
        let slots: Vec<u32> = self.index.read().values().copied().collect();
        let mut buf = vec![0u8; SLOT_HEADER_BYTES];
        let mut out = Vec::with_capacity(slots.len());
        for slot in slots {
            // Header words only; a torn copy is harmless here (it only ranks a candidate).
            let base = self.slot_offset(slot);
            for (i, chunk) in buf.chunks_exact_mut(8).enumerate() {
                let v = self.slots.word(base + i * 8).load(Ordering::Relaxed);
                chunk.copy_from_slice(&v.to_le_bytes());
            }
            let h = parse_header(&buf);
            if is_live(h.state) {
                let last = if h.last_accessed_at_us == NO_TIME {
                    h.updated_at_us.max(h.created_at_us)
                } else {
                    h.last_accessed_at_us
                };
                out.push(SlotSummary {
                    id: h.id,
                    importance: h.importance,
                    last_used_us: last,
                    access_count: h.access_count,
                });
            }
        }
        out
    }

    fn encode_slot(
        &self,
        memory: &Memory,
        heap_gen: u8,
        heap_offset: u64,
        heap_len: u32,
    ) -> Vec<u8> {
        let mut b = vec![0u8; self.slot_bytes];
        b[OFF_LSN..OFF_LSN + 8].copy_from_slice(&memory.lsn.to_le_bytes());
        b[OFF_ID..OFF_ID + 16].copy_from_slice(memory.id.as_bytes());
        b[OFF_HEAP_OFFSET..OFF_HEAP_OFFSET + 8]
            .copy_from_slice(&pack_pointer(heap_gen, heap_offset).to_le_bytes());
        b[OFF_HEAP_LEN..OFF_HEAP_LEN + 4].copy_from_slice(&heap_len.to_le_bytes());
        // Only informative in this form (the pointer word names the heap), and covered by the
        // CRC, so a repoint leaves it as it was.
        b[OFF_HEAP_GEN] = heap_gen;
        b[OFF_STATE] = STATE_LIVE;
        b[OFF_STATUS] = memory.status.code();
        b[OFF_IMPORTANCE..OFF_IMPORTANCE + 4].copy_from_slice(&memory.importance.to_le_bytes());
        b[OFF_CREATED..OFF_CREATED + 8].copy_from_slice(&memory.created_at_us.to_le_bytes());
        b[OFF_UPDATED..OFF_UPDATED + 8].copy_from_slice(&memory.updated_at_us.to_le_bytes());
        b[OFF_ACCESS_COUNT..OFF_ACCESS_COUNT + 8]
            .copy_from_slice(&memory.access_count.to_le_bytes());
        b[OFF_LAST_ACCESS..OFF_LAST_ACCESS + 8]
            .copy_from_slice(&memory.last_accessed_at_us.unwrap_or(NO_TIME).to_le_bytes());
        b[OFF_EXPIRES..OFF_EXPIRES + 8]
            .copy_from_slice(&memory.expires_at_us.unwrap_or(NO_TIME).to_le_bytes());
        if let Some(v) = &memory.embedding {
            assert_eq!(
                v.len(),
                self.dimensions,
                "embedding dimensions were validated by the engine"
            );
            b[OFF_HAS_EMBEDDING] = 1;
            for (i, x) in v.iter().enumerate() {
                let at = SLOT_HEADER_BYTES + i * 4;
                b[at..at + 4].copy_from_slice(&x.to_le_bytes());
            }
        }
        let crc = slot_crc(&b);
        b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Appends a heap entry to the current heap, compacting into the other heap first when it is
    /// full. Returns (gen, offset, len).
    fn append_heap(&self, w: &mut HeapWriter, body: &[u8]) -> Result<(u8, u64, u32), EngineError> {
        let len = u32::try_from(body.len()).expect("images are bounded by MAX_RECORD_BYTES");
        let span = entry_span(len);
        if w.heap_tail + span > self.heap_capacity_bytes {
            self.compact_locked(w)?;
            if w.heap_tail + span > self.heap_capacity_bytes {
                return Err(EngineError::StorageFull(format!(
                    "working-tier heap holds {} live bytes of {}; raise working.heap_bytes or lower the working capacity",
                    w.live_heap_bytes, self.heap_capacity_bytes
                )));
            }
        }
        let mut entry = Vec::with_capacity(span as usize);
        entry.extend_from_slice(&len.to_le_bytes());
        entry.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        entry.extend_from_slice(body);
        entry.resize(span as usize, 0);
        let offset = w.heap_tail;
        self.reserve_heap_tail(w, span)?;
        self.heaps[usize::from(w.heap_gen)].copy_in(offset as usize, &entry);
        w.heap_tail += span;
        Ok((w.heap_gen, offset, len))
    }

    /// Makes room for `span` bytes at the current heap's tail. Live writes were reserved for
    /// before they were logged ([`WorkingTier::reserve`]), so this grows a file only while
    /// the WAL is replayed at open.
    fn reserve_heap_tail(&self, w: &HeapWriter, span: u64) -> Result<(), EngineError> {
        let cap = self.heap_capacity_bytes;
        self.grow(
            &self.heaps[usize::from(w.heap_gen)],
            w.heap_tail + span,
            cap,
        )
    }

    /// Inserts or replaces a memory (writer only).
    pub fn put(&self, memory: &Memory) -> Result<(), EngineError> {
        let mut w = self.writer.lock();
        let mut body = Vec::with_capacity(memory.content.len() + memory.metadata_json.len() + 128);
        let mut image = memory.clone();
        image.embedding = None;
        image.tier = Tier::Working;
        codec::encode_memory(&mut body, &image, false);
        let existing = self.index.read().get(&memory.id).copied();
        let old = existing.map(|slot| {
            let mut old = vec![0u8; SLOT_HEADER_BYTES];
            self.copy_slot_prefix(slot, &mut old);
            parse_header(&old)
        });
        // The same image again (a WAL replay after a crash, whose slots are newer than the
        // checkpoint; an update that changed only slot fields) keeps its heap entry: a replay
        // on a full disk must not need room for copies of what is already there.
        let same = old.as_ref().filter(|h| {
            h.heap_gen == w.heap_gen
                && h.heap_len as usize == body.len()
                && self.read_heap_entry(h).is_some_and(|b| b == body)
        });
        let (gen, offset, len) = match same {
            Some(h) => (h.heap_gen, h.heap_offset, h.heap_len),
            None => self.append_heap(&mut w, &body)?,
        };
        let bytes = self.encode_slot(memory, gen, offset, len);
        if let Some(h) = &old {
            w.live_heap_bytes -= entry_span(h.heap_len);
        }
        self.replace_slot(&mut w, memory.id, existing, &bytes)?;
        w.live_heap_bytes += entry_span(len);
        Ok(())
    }

    /// Copy-on-write: writes `bytes` into a free slot, points the index at it, then clears the
    /// old slot. A crash at any point leaves at least one intact image of the memory.
    fn replace_slot(
        &self,
        w: &mut HeapWriter,
        id: Uuid,
        old: Option<u32>,
        bytes: &[u8],
    ) -> Result<(), EngineError> {
        // Live writes reserved their slot before they were logged; a replay at open may grow
        // the file here.
        self.reserve_slots(w, 1)?;
        let slot = w.free.pop().ok_or_else(|| {
            EngineError::StorageFull(format!("working tier is full ({} slots)", self.slot_count))
        })?;
        self.write_slot(slot, bytes);
        self.index.write().insert(id, slot);
        if let Some(old) = old {
            self.clear_slot(old);
            w.free.push(old);
        }
        Ok(())
    }

    fn copy_slot_prefix(&self, slot: u32, buf: &mut [u8]) {
        let base = self.slot_offset(slot);
        for (i, chunk) in buf.chunks_exact_mut(8).enumerate() {
            let v = self.slots.word(base + i * 8).load(Ordering::Relaxed);
            chunk.copy_from_slice(&v.to_le_bytes());
        }
    }

    /// Removes a memory (writer only). Returns whether it was here.
    pub fn remove(&self, id: &Uuid) -> bool {
        let mut w = self.writer.lock();
        let Some(slot) = self.index.write().remove(id) else {
            return false;
        };
        let mut old = vec![0u8; SLOT_HEADER_BYTES];
        self.copy_slot_prefix(slot, &mut old);
        w.live_heap_bytes -= entry_span(parse_header(&old).heap_len);
        self.clear_slot(slot);
        w.free.push(slot);
        true
    }

    /// Adds an access delta to a memory's counters (writer only). Returns whether it was here.
    pub fn record_access(
        &self,
        id: &Uuid,
        count: u64,
        last_accessed_at_us: i64,
    ) -> Result<bool, EngineError> {
        let mut w = self.writer.lock();
        let Some(slot) = self.index.read().get(id).copied() else {
            return Ok(false);
        };
        let mut bytes = vec![0u8; self.slot_bytes];
        self.copy_slot_raw(slot, &mut bytes);
        let h = parse_header(&bytes);
        let last = if h.last_accessed_at_us == NO_TIME {
            last_accessed_at_us
        } else {
            h.last_accessed_at_us.max(last_accessed_at_us)
        };
        bytes[OFF_ACCESS_COUNT..OFF_ACCESS_COUNT + 8]
            .copy_from_slice(&h.access_count.saturating_add(count).to_le_bytes());
        bytes[OFF_LAST_ACCESS..OFF_LAST_ACCESS + 8].copy_from_slice(&last.to_le_bytes());
        if h.state == STATE_LIVE {
            // In place: the CRC does not cover the counters, so however a crash or a power cut
            // leaves these words, the slot stays whole. (Relocating it, as a copy-on-write
            // write would, is not safe from a power cut: no WAL record carries the image, and
            // the old copy's clearing may reach the disk before the new copy.)
            self.write_slot(slot, &bytes);
        } else {
            let bytes = self.current_form(&bytes);
            self.replace_slot(&mut w, *id, Some(slot), &bytes)?;
        }
        Ok(true)
    }

    /// Leaves no byte of a removed memory in the tier's files: compacts the heap now (every
    /// live entry moves to the other heap, and the slots are made durable), then zeros the
    /// heap it left and the other heap past the moved entries (bytes from that heap's last
    /// use), and syncs both. Freed slots are zeroed when freed. Returns the bytes zeroed.
    pub fn scrub(&self) -> Result<u64, EngineError> {
        let zeroed = {
            let mut w = self.writer.lock();
            let from = usize::from(w.heap_gen);
            self.compact_locked(&mut w)?;
            let to = usize::from(w.heap_gen);
            let stale = self.heaps[to].backed().saturating_sub(w.heap_tail);
            self.heaps[to].zero(w.heap_tail, u64::MAX);
            let left = self.heaps[from].backed();
            self.heaps[from].zero(0, u64::MAX);
            stale + left
        };
        // The zeros are written back without the writer lock (the write-back paces itself and
        // took most of a second for a 90 MB heap): writes go on meanwhile, and the pages they
        // touch are theirs to make durable.
        for heap in &self.heaps {
            heap.sync()?;
        }
        Ok(zeroed)
    }

    fn compact_locked(&self, w: &mut HeapWriter) -> Result<(), EngineError> {
        let from = w.heap_gen;
        w.heap_gen = 1 - from;
        w.heap_tail = 0;
        self.move_slots_off_locked(w, from)
    }

    /// Re-appends every entry on heap `from` to the current heap and repoints its slot. The old
    /// heap's bytes stay readable until the next compaction reuses that heap, by which time no
    /// slot points there.
    ///
    /// No WAL record carries what a compaction moves, so it keeps a durable copy of every image
    /// at every moment, for a power cut as for a crash: the new entries are written and made
    /// durable first; then each slot is repointed in place by one atomic word store (its CRC
    /// does not cover the pointer), so a cut leaves it pointing at the old entry or the new,
    /// both whole; then the slots are made durable, before a later compaction can overwrite
    /// the old heap. Slots of the older form are rewritten copy-on-write into the current one.
    fn move_slots_off_locked(&self, w: &mut HeapWriter, from: u8) -> Result<(), EngineError> {
        assert_ne!(from, w.heap_gen, "cannot compact a heap into itself");
        let slots: Vec<u32> = self.index.read().values().copied().collect();
        let mut bytes = vec![0u8; self.slot_bytes];
        let mut live = 0u64;
        let mut moved: Vec<(u32, u64)> = Vec::new();
        for &slot in &slots {
            self.copy_slot_raw(slot, &mut bytes);
            let h = parse_header(&bytes);
            live += entry_span(h.heap_len);
            if h.heap_gen != from {
                continue;
            }
            let body = self
                .read_heap_entry(&h)
                .ok_or_else(|| EngineError::Corrupt {
                    path: self.heaps[usize::from(from)].path.clone(),
                    detail: format!("heap entry at offset {} fails its checksum", h.heap_offset),
                })?;
            let len = u32::try_from(body.len()).expect("entry length came from a u32");
            let span = entry_span(len);
            if w.heap_tail + span > self.heap_capacity_bytes {
                return Err(EngineError::StorageFull(
                    "working-tier heap cannot hold its live entries".to_owned(),
                ));
            }
            let mut entry = Vec::with_capacity(span as usize);
            entry.extend_from_slice(&len.to_le_bytes());
            entry.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
            entry.extend_from_slice(&body);
            entry.resize(span as usize, 0);
            let offset = w.heap_tail;
            self.reserve_heap_tail(w, span)?;
            self.heaps[usize::from(w.heap_gen)].copy_in(offset as usize, &entry);
            w.heap_tail += span;
            moved.push((slot, offset));
        }
        if moved.is_empty() {
            w.live_heap_bytes = live;
            return Ok(());
        }
        self.inject(
            engram_wal::IoOp::MapFlush,
            &self.heaps[usize::from(w.heap_gen)].path,
        )?;
        self.heaps[usize::from(w.heap_gen)].sync()?;
        for (slot, offset) in moved {
            self.copy_slot_raw(slot, &mut bytes);
            if bytes[OFF_STATE] == STATE_LIVE {
                let word = self.slots.word(self.slot_offset(slot) + OFF_HEAP_OFFSET);
                word.store(pack_pointer(w.heap_gen, offset), Ordering::Release);
            } else {
                let h = parse_header(&bytes);
                bytes[OFF_HEAP_OFFSET..OFF_HEAP_OFFSET + 8].copy_from_slice(&offset.to_le_bytes());
                bytes[OFF_HEAP_GEN] = w.heap_gen;
                let bytes = self.current_form(&bytes);
                self.replace_slot(w, h.id, Some(slot), &bytes)?;
            }
        }
        self.inject(engram_wal::IoOp::MapFlush, &self.slots.path)?;
        self.slots.sync()?;
        w.live_heap_bytes = live;
        Ok(())
    }

    /// A slot image of the older form (see [`STATE_LIVE`]) rewritten in the current one.
    fn current_form(&self, legacy: &[u8]) -> Vec<u8> {
        let h = parse_header(legacy);
        let mut b = legacy.to_vec();
        b[OFF_STATE] = STATE_LIVE;
        b[OFF_HEAP_OFFSET..OFF_HEAP_OFFSET + 8]
            .copy_from_slice(&pack_pointer(h.heap_gen, h.heap_offset).to_le_bytes());
        let crc = slot_crc(&b);
        b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Makes an odd sequence (a write the process died in) even again, for a slot found whole.
    fn settle_seq(&self, slot: u32) {
        let word = self.slots.word(self.slot_offset(slot) + OFF_SEQ);
        let seq = word.load(Ordering::Relaxed);
        word.store(seq + (seq & 1), Ordering::Release);
    }

    /// Makes the files durable and records that they reflect every record up to `lsn`. The
    /// caller reads `lsn` before calling, so the files hold at least that state.
    pub fn checkpoint(&self, lsn: Lsn) -> Result<(), EngineError> {
        self.inject(engram_wal::IoOp::MapFlush, &self.slots.path)?;
        for heap in &self.heaps {
            heap.sync()?;
        }
        self.slots.sync()?;
        let mut bytes = Vec::with_capacity(12);
        bytes.extend_from_slice(&lsn.to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&lsn.to_le_bytes()).to_le_bytes());
        let path = self.dir.join("checkpoint");
        engram_wal::durable::write_atomic(&path, &bytes).map_err(|e| EngineError::io(&path, e))
    }
}

#[cfg(test)]
mod tests;

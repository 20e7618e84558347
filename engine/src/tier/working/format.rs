//! The working tier's on-disk layout: the slot file's header, the slot header's fields and
//! checksum, and heap entry framing. `docs/format.md` draws the same bytes.

use engram_wal::Lsn;
use std::path::Path;
use std::sync::atomic::Ordering;

use uuid::Uuid;

use super::mmap::Mapped;
use crate::EngineError;

/// Bytes of the file header before slot 0 (one page, so slots stay page-aligned in sum).
pub const WORKING_FILE_HEADER_BYTES: usize = 4096;
/// Bytes of a slot before its vector.
pub const SLOT_HEADER_BYTES: usize = 128;
pub(super) const SLOT_ALIGN_BYTES: usize = 64;
pub(super) const FILE_MAGIC: [u8; 8] = *b"ENGRMWRK";
/// Version 2 records the heap capacity in the header (the heap files grow in steps, so their
/// length no longer tells it); version 1 files are read and rewritten as version 2 on open.
pub(super) const FILE_FORMAT_VERSION: u32 = 2;
pub(super) const HEAP_ENTRY_HEADER_BYTES: usize = 8;
/// A reader gives up (and reports the slot as busy) after this many torn copies or waits in a
/// row; one writer changing one slot cannot cause more than a handful, and after the first
/// few each wait yields the core (so a descheduled writer gets to finish).
pub(super) const MAX_READ_RETRIES: usize = 100_000;
pub(super) const NO_TIME: i64 = i64::MIN;

pub(super) const STATE_EMPTY: u8 = 0;
/// A live slot as versions before 2026-12 wrote it: `heap_gen` in byte 44, and a CRC over
/// every field. Read, and rewritten in the current form when the slot next changes.
pub(super) const STATE_LIVE_V1: u8 = 1;
/// A live slot: the heap pointer is one word (offset, with the heap in the top bit), and the
/// CRC leaves out the pointer and the access counters, so that a heap compaction repoints a
/// slot and an access updates it in place, each with stores a crash cannot half-do in a way
/// the CRC would catch (the pointer is one atomic word; the counters are not covered).
pub(super) const STATE_LIVE: u8 = 2;
/// The heap-pointer word's bit that names heap 1.
pub(super) const POINTER_GEN_BIT: u64 = 1 << 63;

/// Whether a slot's state byte says live (either form).
pub(super) fn is_live(state: u8) -> bool {
    state == STATE_LIVE || state == STATE_LIVE_V1
}

/// The heap-pointer word of a current-form slot.
pub(super) fn pack_pointer(heap_gen: u8, heap_offset: u64) -> u64 {
    debug_assert!(heap_offset < POINTER_GEN_BIT && heap_gen < 2);
    heap_offset | if heap_gen == 1 { POINTER_GEN_BIT } else { 0 }
}

// Slot header field offsets (bytes).
pub(super) const OFF_SEQ: usize = 0;
pub(super) const OFF_LSN: usize = 8;
pub(super) const OFF_ID: usize = 16;
pub(super) const OFF_HEAP_OFFSET: usize = 32;
pub(super) const OFF_HEAP_LEN: usize = 40;
pub(super) const OFF_HEAP_GEN: usize = 44;
pub(super) const OFF_STATE: usize = 45;
pub(super) const OFF_STATUS: usize = 46;
pub(super) const OFF_HAS_EMBEDDING: usize = 47;
pub(super) const OFF_IMPORTANCE: usize = 48;
pub(super) const OFF_CRC: usize = 52;
pub(super) const OFF_CREATED: usize = 56;
pub(super) const OFF_UPDATED: usize = 64;
pub(super) const OFF_ACCESS_COUNT: usize = 72;
pub(super) const OFF_LAST_ACCESS: usize = 80;
pub(super) const OFF_EXPIRES: usize = 88;

/// Size of one slot for `dimensions`-dimensional vectors.
pub fn slot_bytes(dimensions: usize) -> usize {
    (SLOT_HEADER_BYTES + dimensions * 4).next_multiple_of(SLOT_ALIGN_BYTES)
}

/// A decoded slot header.
#[derive(Debug, Clone, Copy)]
pub(super) struct SlotHeader {
    pub(super) seq: u64,
    pub(super) lsn: Lsn,
    pub(super) id: Uuid,
    pub(super) heap_offset: u64,
    pub(super) heap_len: u32,
    pub(super) heap_gen: u8,
    pub(super) state: u8,
    pub(super) importance: f32,
    pub(super) created_at_us: i64,
    pub(super) updated_at_us: i64,
    pub(super) access_count: u64,
    pub(super) last_accessed_at_us: i64,
}

pub(super) fn rd_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}
pub(super) fn rd_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}
pub(super) fn rd_i64(b: &[u8], off: usize) -> i64 {
    i64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// The slot's checksum, by the rule of its form (see [`STATE_LIVE`]).
pub(super) fn slot_crc(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    if bytes[OFF_STATE] == STATE_LIVE {
        h.update(&bytes[OFF_LSN..OFF_HEAP_OFFSET]);
        h.update(&bytes[OFF_HEAP_OFFSET + 8..OFF_CRC]);
        h.update(&bytes[OFF_CRC + 4..OFF_ACCESS_COUNT]);
        h.update(&bytes[OFF_LAST_ACCESS + 8..]);
    } else {
        h.update(&bytes[OFF_LSN..OFF_CRC]);
        h.update(&bytes[OFF_CRC + 4..]);
    }
    h.finalize()
}

pub(super) fn parse_header(b: &[u8]) -> SlotHeader {
    SlotHeader {
        seq: rd_u64(b, OFF_SEQ),
        lsn: Lsn::new(rd_u64(b, OFF_LSN)),
        id: Uuid::from_bytes(b[OFF_ID..OFF_ID + 16].try_into().expect("16 bytes")),
        heap_offset: if b[OFF_STATE] == STATE_LIVE {
            rd_u64(b, OFF_HEAP_OFFSET) & !POINTER_GEN_BIT
        } else {
            rd_u64(b, OFF_HEAP_OFFSET)
        },
        heap_len: rd_u32(b, OFF_HEAP_LEN),
        heap_gen: if b[OFF_STATE] == STATE_LIVE {
            u8::from(rd_u64(b, OFF_HEAP_OFFSET) & POINTER_GEN_BIT != 0)
        } else {
            b[OFF_HEAP_GEN]
        },
        state: b[OFF_STATE],
        importance: f32::from_le_bytes(
            b[OFF_IMPORTANCE..OFF_IMPORTANCE + 4].try_into().expect("4"),
        ),
        created_at_us: rd_i64(b, OFF_CREATED),
        updated_at_us: rd_i64(b, OFF_UPDATED),
        access_count: rd_u64(b, OFF_ACCESS_COUNT),
        last_accessed_at_us: rd_i64(b, OFF_LAST_ACCESS),
    }
}

// The slot header's fields fit in it, words stay 8-aligned (slot words are read as `AtomicU64`),
// and slots start on their alignment after the file header.
const _: () = assert!(OFF_EXPIRES + 8 <= SLOT_HEADER_BYTES);
const _: () = assert!(SLOT_HEADER_BYTES.is_multiple_of(8) && SLOT_ALIGN_BYTES.is_multiple_of(8));
const _: () = assert!(WORKING_FILE_HEADER_BYTES.is_multiple_of(SLOT_ALIGN_BYTES));
const _: () = assert!(OFF_SEQ == 0 && OFF_LSN == 8 && OFF_CRC + 4 == OFF_CREATED);
// The fields a current-form CRC leaves out are whole words, in order.
const _: () = assert!(OFF_HEAP_OFFSET.is_multiple_of(8) && OFF_HEAP_OFFSET + 8 <= OFF_CRC);
const _: () = assert!(OFF_ACCESS_COUNT + 8 == OFF_LAST_ACCESS && OFF_CREATED < OFF_ACCESS_COUNT);
// A heap entry is (len u32, crc u32) then the body, padded to 8 bytes.
const _: () = assert!(HEAP_ENTRY_HEADER_BYTES == 8);

/// Bytes a heap entry with a `len`-byte body occupies (header, body, padding to 8).
pub(super) fn entry_span(len: u32) -> u64 {
    (HEAP_ENTRY_HEADER_BYTES as u64 + u64::from(len)).next_multiple_of(8)
}

pub(super) fn read_checkpoint(path: &Path) -> Result<Lsn, EngineError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            if bytes.len() != 12 || crc32fast::hash(&bytes[0..8]) != rd_u32(&bytes, 8) {
                return Err(EngineError::Corrupt {
                    path: path.to_path_buf(),
                    detail: "working-tier checkpoint fails its checksum".to_owned(),
                });
            }
            Ok(Lsn::new(rd_u64(&bytes, 0)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Lsn::ZERO),
        Err(e) => Err(EngineError::io(path, e)),
    }
}

/// The layout a store's working tier was made with: (dimensions, capacity, heap bytes), or
/// `None` when `data_dir` has no working tier yet.
pub fn stored_layout(data_dir: &Path) -> Result<Option<(usize, usize, u64)>, EngineError> {
    let slots = data_dir.join("working").join("slots.bin");
    let Some(header) = read_header_bytes(&slots)? else {
        return Ok(None);
    };
    let header = check_header(&slots, &header)?;
    let capacity = header.slot_count.saturating_sub(1).max(1);
    Ok(Some((header.dimensions, capacity, header.heap_bytes)))
}

/// The slot file header, checked.
pub(super) struct FileHeader {
    pub(super) dimensions: usize,
    pub(super) slot_count: usize,
    pub(super) slot_bytes: usize,
    /// Capacity of one heap file.
    pub(super) heap_bytes: u64,
    /// Written by format version 1, whose files were sparse and as long as their capacity.
    pub(super) sparse: bool,
}

/// The header's first bytes, or `None` when the file is missing, short or all zeros (new).
fn read_header_bytes(path: &Path) -> Result<Option<[u8; 36]>, EngineError> {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 36];
    match std::fs::File::open(path) {
        Ok(f) => match f.read_exact_at(&mut b, 0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(EngineError::io(path, e)),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EngineError::io(path, e)),
    }
    Ok((!b.iter().all(|&x| x == 0)).then_some(b))
}

fn check_header(path: &Path, b: &[u8; 36]) -> Result<FileHeader, EngineError> {
    let corrupt = |detail: String| EngineError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    if b[0..8] != FILE_MAGIC {
        return Err(corrupt("working-tier file header is damaged".to_owned()));
    }
    let version = rd_u32(b, 8);
    let heap_bytes = match version {
        1 if crc32fast::hash(&b[0..24]) == rd_u32(b, 24) => {
            // Version 1 heaps were sparse files as long as their capacity.
            let heap = path.with_file_name("heap-0.bin");
            std::fs::metadata(&heap)
                .map_err(|e| EngineError::io(&heap, e))?
                .len()
        }
        2 if crc32fast::hash(&b[0..32]) == rd_u32(b, 32) => {
            u64::from_le_bytes(b[24..32].try_into().expect("8 bytes"))
        }
        1 | 2 => return Err(corrupt("working-tier file header is damaged".to_owned())),
        v => {
            return Err(corrupt(format!(
                "working-tier format version {v} is not supported"
            )))
        }
    };
    Ok(FileHeader {
        dimensions: rd_u32(b, 12) as usize,
        slot_count: rd_u32(b, 16) as usize,
        slot_bytes: rd_u32(b, 20) as usize,
        heap_bytes,
        sparse: version == 1,
    })
}

/// Reads the slot file header; `Ok(None)` for a new file. Refuses a file made for other
/// dimensions.
pub(super) fn read_file_header(
    path: &Path,
    dimensions: usize,
    slot_bytes: usize,
) -> Result<Option<FileHeader>, EngineError> {
    let Some(bytes) = read_header_bytes(path)? else {
        return Ok(None);
    };
    let header = check_header(path, &bytes)?;
    if header.dimensions != dimensions {
        return Err(EngineError::Config(format!(
            "embedding.dimensions is {dimensions} but the working tier in {} was made for {}",
            path.display(),
            header.dimensions
        )));
    }
    if header.slot_bytes != slot_bytes {
        return Err(EngineError::Corrupt {
            path: path.to_path_buf(),
            detail: "working-tier slot size does not match its dimensions".to_owned(),
        });
    }
    Ok(Some(header))
}

pub(super) fn write_file_header(slots: &Mapped, header: &FileHeader) {
    let mut b = [0u8; 40];
    b[0..8].copy_from_slice(&FILE_MAGIC);
    b[8..12].copy_from_slice(&FILE_FORMAT_VERSION.to_le_bytes());
    let u32_of = |v: usize| u32::try_from(v).expect("header fields are bounded");
    b[12..16].copy_from_slice(&u32_of(header.dimensions).to_le_bytes());
    b[16..20].copy_from_slice(&u32_of(header.slot_count).to_le_bytes());
    b[20..24].copy_from_slice(&u32_of(header.slot_bytes).to_le_bytes());
    b[24..32].copy_from_slice(&header.heap_bytes.to_le_bytes());
    let crc = crc32fast::hash(&b[0..32]);
    b[32..36].copy_from_slice(&crc.to_le_bytes());
    for (i, chunk) in b.chunks_exact(8).enumerate() {
        slots.word(i * 8).store(
            u64::from_le_bytes(chunk.try_into().expect("8 bytes")),
            Ordering::Relaxed,
        );
    }
}

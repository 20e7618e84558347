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
pub(super) const FILE_FORMAT_VERSION: u32 = 1;
pub(super) const HEAP_ENTRY_HEADER_BYTES: usize = 8;
/// A reader gives up (and reports the slot as busy) after this many torn copies in a row; one
/// writer changing one slot cannot cause more than a handful.
pub(super) const MAX_READ_RETRIES: usize = 10_000;
pub(super) const NO_TIME: i64 = i64::MIN;

pub(super) const STATE_EMPTY: u8 = 0;
pub(super) const STATE_LIVE: u8 = 1;

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

pub(super) fn slot_crc(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[OFF_LSN..OFF_CRC]);
    h.update(&bytes[OFF_CRC + 4..]);
    h.finalize()
}

pub(super) fn parse_header(b: &[u8]) -> SlotHeader {
    SlotHeader {
        seq: rd_u64(b, OFF_SEQ),
        lsn: Lsn::new(rd_u64(b, OFF_LSN)),
        id: Uuid::from_bytes(b[OFF_ID..OFF_ID + 16].try_into().expect("16 bytes")),
        heap_offset: rd_u64(b, OFF_HEAP_OFFSET),
        heap_len: rd_u32(b, OFF_HEAP_LEN),
        heap_gen: b[OFF_HEAP_GEN],
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
    let mut bytes = [0u8; 32];
    match std::fs::File::open(&slots) {
        Ok(f) => {
            use std::os::unix::fs::FileExt;
            if f.read_exact_at(&mut bytes, 0).is_err() {
                return Ok(None);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EngineError::io(&slots, e)),
    }
    if bytes[0..8] != FILE_MAGIC || crc32fast::hash(&bytes[0..24]) != rd_u32(&bytes, 24) {
        return Err(EngineError::Corrupt {
            path: slots,
            detail: "working-tier file header is damaged".to_owned(),
        });
    }
    let dimensions = rd_u32(&bytes, 12) as usize;
    let capacity = (rd_u32(&bytes, 16) as usize).saturating_sub(1).max(1);
    let heap = data_dir.join("working").join("heap-0.bin");
    let heap_bytes = std::fs::metadata(&heap)
        .map_err(|e| EngineError::io(&heap, e))?
        .len();
    Ok(Some((dimensions, capacity, heap_bytes)))
}

/// Reads the slot file header; `Ok(None)` for a new file. Refuses a file made for other
/// dimensions.
pub(super) fn read_file_header(
    path: &Path,
    dimensions: usize,
    slot_bytes: usize,
) -> Result<Option<usize>, EngineError> {
    let bytes = match std::fs::File::open(path) {
        Ok(f) => {
            use std::os::unix::fs::FileExt;
            let mut b = vec![0u8; 32];
            match f.read_exact_at(&mut b, 0) {
                Ok(()) => b,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(EngineError::io(path, e)),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EngineError::io(path, e)),
    };
    if bytes.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let corrupt = |detail: String| EngineError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    if bytes[0..8] != FILE_MAGIC || crc32fast::hash(&bytes[0..24]) != rd_u32(&bytes, 24) {
        return Err(corrupt("working-tier file header is damaged".to_owned()));
    }
    let version = rd_u32(&bytes, 8);
    if version != FILE_FORMAT_VERSION {
        return Err(corrupt(format!(
            "working-tier format version {version} is not supported"
        )));
    }
    let file_dimensions = rd_u32(&bytes, 12) as usize;
    if file_dimensions != dimensions {
        return Err(EngineError::Config(format!(
            "embedding.dimensions is {dimensions} but the working tier in {} was made for {file_dimensions}",
            path.display()
        )));
    }
    if rd_u32(&bytes, 20) as usize != slot_bytes {
        return Err(corrupt(
            "working-tier slot size does not match its dimensions".to_owned(),
        ));
    }
    Ok(Some(rd_u32(&bytes, 16) as usize))
}

pub(super) fn write_file_header(
    slots: &Mapped,
    dimensions: usize,
    slot_count: usize,
    slot_bytes: usize,
) {
    let mut b = [0u8; 32];
    b[0..8].copy_from_slice(&FILE_MAGIC);
    b[8..12].copy_from_slice(&FILE_FORMAT_VERSION.to_le_bytes());
    b[12..16].copy_from_slice(
        &u32::try_from(dimensions)
            .expect("dimensions bounded")
            .to_le_bytes(),
    );
    b[16..20].copy_from_slice(
        &u32::try_from(slot_count)
            .expect("slot count bounded")
            .to_le_bytes(),
    );
    b[20..24].copy_from_slice(
        &u32::try_from(slot_bytes)
            .expect("slot size bounded")
            .to_le_bytes(),
    );
    let crc = crc32fast::hash(&b[0..24]);
    b[24..28].copy_from_slice(&crc.to_le_bytes());
    for (i, chunk) in b.chunks_exact(8).enumerate() {
        slots.word(i * 8).store(
            u64::from_le_bytes(chunk.try_into().expect("8 bytes")),
            Ordering::Relaxed,
        );
    }
}

//! Segment files: naming, the 32-byte header, creation with preallocation, and the recovery scan of
//! one segment's frames.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::durable;
use crate::frame::{self, Decoded, Lsn, RecordRef, FRAME_ALIGN_BYTES};

/// Magic at offset 0 of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"ENGRMWAL";
/// Version of the segment and frame layout described in `docs/format.md`.
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
/// Bytes before the first frame.
pub const SEGMENT_HEADER_BYTES: usize = 32;
/// File name suffix of a segment.
pub const SEGMENT_SUFFIX: &str = ".wal";

/// `0000000000000042.wal` for segment index 42: names sort in index order.
pub fn segment_file_name(index: u64) -> String {
    format!("{index:016}{SEGMENT_SUFFIX}")
}

/// Parses a segment file name back to its index; `None` for any other file.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    if stem.len() != 16 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Segment files in `dir`, sorted by index.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(index) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            segments.push((index, entry.path()));
        }
    }
    segments.sort_unstable_by_key(|(index, _)| *index);
    Ok(segments)
}

fn encode_header(index: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&index.to_le_bytes());
    let crc = crc32fast::hash(&header[0..24]);
    header[24..28].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Checks a segment header; returns a reason when it is not valid for `expected_index`.
pub fn check_header(bytes: &[u8], expected_index: u64) -> Result<(), String> {
    if bytes.len() < SEGMENT_HEADER_BYTES {
        return Err(format!(
            "file is {} bytes, shorter than the {SEGMENT_HEADER_BYTES}-byte header",
            bytes.len()
        ));
    }
    if bytes[0..8] != SEGMENT_MAGIC {
        return Err("bad magic".to_owned());
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != SEGMENT_FORMAT_VERSION {
        return Err(format!("unsupported format version {version}"));
    }
    let stored = u32::from_le_bytes(bytes[24..28].try_into().expect("4 bytes"));
    if stored != crc32fast::hash(&bytes[0..24]) {
        return Err("header checksum mismatch".to_owned());
    }
    let index = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    if index != expected_index {
        return Err(format!(
            "header says segment {index}, file name says {expected_index}"
        ));
    }
    Ok(())
}

/// Creates segment `index` in `dir`, preallocated to `segment_bytes`, durable before it is used:
/// written under a temp name, fsync'd, renamed, directory fsync'd.
pub fn create_segment(dir: &Path, index: u64, segment_bytes: u64) -> io::Result<(File, PathBuf)> {
    prepare_segment(dir, index, segment_bytes)?.install(dir)
}

/// A segment made ahead of need: preallocated, its header written and fsync'd, still under its
/// temp name (recovery ignores it) until [`SpareSegment::install`] renames it into place.
#[derive(Debug)]
pub struct SpareSegment {
    pub index: u64,
    file: File,
    tmp_path: PathBuf,
}

/// Makes segment `index` as a [`SpareSegment`]. On failure (a full disk) nothing is left behind.
pub fn prepare_segment(dir: &Path, index: u64, segment_bytes: u64) -> io::Result<SpareSegment> {
    let tmp_path = dir.join(format!("{}.tmp", segment_file_name(index)));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp_path)?;
    let made = preallocate(&file, segment_bytes)
        .and_then(|()| file.write_all_at(&encode_header(index), 0))
        .and_then(|()| file.sync_all());
    if let Err(e) = made {
        drop(file);
        let _ = std::fs::remove_file(&tmp_path);
        return Err(e);
    }
    Ok(SpareSegment {
        index,
        file,
        tmp_path,
    })
}

impl SpareSegment {
    /// Renames the segment into place (durably) and returns it open for appends.
    pub fn install(self, dir: &Path) -> io::Result<(File, PathBuf)> {
        let path = dir.join(segment_file_name(self.index));
        std::fs::rename(&self.tmp_path, &path)?;
        durable::sync_dir(dir)?;
        Ok((self.file, path))
    }

    /// Removes an unused spare (made for an index the log has moved past).
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.tmp_path);
    }
}

/// Reserves disk blocks for the whole segment, so appends never allocate (and never hit ENOSPC)
/// mid-segment; the reserved range reads as zeros.
pub fn preallocate(file: &File, segment_bytes: u64) -> io::Result<()> {
    rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, segment_bytes)
        .map_err(io::Error::from)
}

/// Where the scan of one segment stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanEnd {
    /// All-zero bytes or the end of the file after the last valid frame.
    Clean { end_offset: u64 },
    /// A frame at `offset` failed to decode, or broke the LSN sequence.
    Bad { offset: u64, reason: BadReason },
}

/// Why a frame is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadReason {
    Frame(frame::FrameError),
    LsnOutOfSequence { expected: Lsn, found: Lsn },
}

impl std::fmt::Display for BadReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadReason::Frame(frame::FrameError::Truncated) => write!(f, "truncated record"),
            BadReason::Frame(frame::FrameError::BadLength(len)) => {
                write!(f, "record length {len} out of range")
            }
            BadReason::Frame(frame::FrameError::BadPadding) => {
                write!(f, "non-zero bytes in the record's padding")
            }
            BadReason::Frame(frame::FrameError::BadChecksum { stored, computed }) => write!(
                f,
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            BadReason::LsnOutOfSequence { expected, found } => {
                write!(f, "LSN {found} where {expected} was expected")
            }
        }
    }
}

/// Scans the frames of one segment image (header included), calling `visit` for each valid record
/// in order. `expected_lsn` is the LSN the first record must carry, if known; it is updated as
/// records are seen.
pub fn scan<E>(
    bytes: &[u8],
    expected_lsn: &mut Option<Lsn>,
    mut visit: impl FnMut(RecordRef<'_>, u64) -> Result<(), E>,
) -> Result<ScanEnd, E> {
    let mut offset = SEGMENT_HEADER_BYTES;
    loop {
        if offset >= bytes.len() {
            return Ok(ScanEnd::Clean {
                end_offset: offset as u64,
            });
        }
        match frame::decode(&bytes[offset..]) {
            Ok(Decoded::End) => {
                return Ok(ScanEnd::Clean {
                    end_offset: offset as u64,
                })
            }
            Ok(Decoded::Record(record, len)) => {
                if let Some(expected) = *expected_lsn {
                    if record.lsn != expected {
                        return Ok(ScanEnd::Bad {
                            offset: offset as u64,
                            reason: BadReason::LsnOutOfSequence {
                                expected,
                                found: record.lsn,
                            },
                        });
                    }
                }
                visit(record, offset as u64)?;
                *expected_lsn = Some(record.lsn.next());
                offset += len;
            }
            Err(e) => {
                return Ok(ScanEnd::Bad {
                    offset: offset as u64,
                    reason: BadReason::Frame(e),
                })
            }
        }
    }
}

/// After a bad frame at `bad_offset` in the last segment: is there any valid frame later, with an
/// LSN above `last_good_lsn`? If so the bad frame is corruption in the middle of the log, not a
/// torn write at its tail.
pub fn valid_frame_after(bytes: &[u8], bad_offset: usize, last_good_lsn: Lsn) -> Option<u64> {
    let mut offset = bad_offset + FRAME_ALIGN_BYTES;
    while offset + frame::FRAME_HEADER_BYTES <= bytes.len() {
        if let Ok(Decoded::Record(record, _)) = frame::decode(&bytes[offset..]) {
            if record.lsn > last_good_lsn {
                return Some(offset as u64);
            }
        }
        offset += FRAME_ALIGN_BYTES;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_others() {
        assert_eq!(segment_file_name(42), "0000000000000042.wal");
        assert_eq!(parse_segment_file_name("0000000000000042.wal"), Some(42));
        assert_eq!(parse_segment_file_name("0000000000000042.wal.tmp"), None);
        assert_eq!(parse_segment_file_name("42.wal"), None);
    }

    #[test]
    fn header_checks() {
        let header = encode_header(9);
        assert_eq!(check_header(&header, 9), Ok(()));
        assert!(check_header(&header, 10).is_err());
        let mut bad = header;
        bad[17] ^= 1;
        assert!(check_header(&bad, 9).is_err());
    }
}

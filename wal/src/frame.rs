//! WAL record framing: a 24-byte header (length, CRC32, LSN, commit time) and the payload, padded
//! to 8 bytes. See `docs/format.md` for the byte diagram.

/// Bytes before the payload: `len u32 | crc u32 | lsn u64 | commit_time_us i64`, little endian.
pub const FRAME_HEADER_BYTES: usize = 24;
/// Every frame starts at a multiple of this, so a scan for later valid frames can step by it.
pub const FRAME_ALIGN_BYTES: usize = 8;
/// Largest payload one record may carry. A 1 MiB memory plus metadata fits with room to spare; a
/// length above this in a header is corruption, not a big record.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

pub use crate::lsn::Lsn;

/// One decoded record, borrowing its payload from the scanned buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub lsn: Lsn,
    /// Wall-clock commit time in microseconds since the Unix epoch; never decreases with LSN.
    pub commit_time_us: i64,
    pub payload: &'a [u8],
}

/// Why the bytes at an offset are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes remain than the header or the length it declares.
    Truncated,
    /// The declared length is zero or above [`MAX_RECORD_BYTES`].
    BadLength(u32),
    /// The CRC32 in the header does not match the bytes.
    BadChecksum { stored: u32, computed: u32 },
    /// The padding after the payload (not covered by the CRC) is not all zeros.
    BadPadding,
}

/// What is found at a frame offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid record and the total bytes it occupies, padding included.
    Record(RecordRef<'a>, usize),
    /// An all-zero header: the written part of the segment ends here.
    End,
}

/// Total bytes a record with `payload_len` payload bytes occupies in a segment.
pub fn frame_len(payload_len: usize) -> usize {
    (FRAME_HEADER_BYTES + payload_len).next_multiple_of(FRAME_ALIGN_BYTES)
}

fn checksum(len: u32, lsn: Lsn, commit_time_us: i64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(&lsn.to_le_bytes());
    hasher.update(&commit_time_us.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Appends one framed record to `out`, padding with zeros to the alignment.
///
/// The caller guarantees `1 <= payload.len() <= MAX_RECORD_BYTES`.
pub fn encode(out: &mut Vec<u8>, lsn: Lsn, commit_time_us: i64, payload: &[u8]) {
    assert!(
        !payload.is_empty() && payload.len() <= MAX_RECORD_BYTES,
        "payload length {} outside 1..={MAX_RECORD_BYTES}",
        payload.len()
    );
    let len = u32::try_from(payload.len()).expect("MAX_RECORD_BYTES fits in u32");
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(len, lsn, commit_time_us, payload).to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&commit_time_us.to_le_bytes());
    out.extend_from_slice(payload);
    out.resize(start + frame_len(payload.len()), 0);
}

/// Decodes the frame at the start of `buf`.
pub fn decode(buf: &[u8]) -> Result<Decoded<'_>, FrameError> {
    if buf.len() < FRAME_HEADER_BYTES {
        return if buf.iter().all(|&b| b == 0) {
            Ok(Decoded::End)
        } else {
            Err(FrameError::Truncated)
        };
    }
    let header = &buf[..FRAME_HEADER_BYTES];
    if header.iter().all(|&b| b == 0) {
        return Ok(Decoded::End);
    }
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let stored = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let lsn = Lsn::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let commit_time_us = i64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    if len == 0 || len as usize > MAX_RECORD_BYTES {
        return Err(FrameError::BadLength(len));
    }
    let end = FRAME_HEADER_BYTES + len as usize;
    if buf.len() < end {
        return Err(FrameError::Truncated);
    }
    let payload = &buf[FRAME_HEADER_BYTES..end];
    let computed = checksum(len, lsn, commit_time_us, payload);
    if computed != stored {
        return Err(FrameError::BadChecksum { stored, computed });
    }
    let total = frame_len(len as usize).min(buf.len());
    if buf[end..total].iter().any(|&b| b != 0) {
        return Err(FrameError::BadPadding);
    }
    Ok(Decoded::Record(
        RecordRef {
            lsn,
            commit_time_us,
            payload,
        },
        total,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_alignment() {
        let mut buf = Vec::new();
        encode(&mut buf, Lsn::new(7), 1_700_000_000_000_000, b"hello");
        assert_eq!(buf.len(), 32);
        match decode(&buf).expect("valid") {
            Decoded::Record(r, n) => {
                assert_eq!(
                    (r.lsn, r.commit_time_us, r.payload, n),
                    (Lsn::new(7), 1_700_000_000_000_000, &b"hello"[..], 32)
                );
            }
            Decoded::End => panic!("expected a record"),
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode(&mut buf, Lsn::new(42), 123, b"some payload bytes");
        let used = FRAME_HEADER_BYTES + 18;
        for bit in 0..used * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode(&bad), Ok(Decoded::Record(r, _)) if r.payload == b"some payload bytes" && r.lsn == Lsn::new(42)),
                "bit {bit} flip went unnoticed"
            );
        }
    }

    #[test]
    fn non_zero_padding_is_rejected() {
        let mut buf = Vec::new();
        encode(&mut buf, Lsn::new(3), 9, b"odd");
        assert_eq!(buf.len(), 32);
        buf[31] = 0x32;
        assert_eq!(decode(&buf), Err(FrameError::BadPadding));
    }

    #[test]
    fn zeros_are_end_and_truncation_is_reported() {
        assert_eq!(decode(&[0u8; 40]), Ok(Decoded::End));
        assert_eq!(decode(&[]), Ok(Decoded::End));
        let mut buf = Vec::new();
        encode(&mut buf, Lsn::FIRST, 1, b"abcdefgh");
        for cut in 1..FRAME_HEADER_BYTES + 8 {
            assert!(decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn length_limit_plus_one_is_rejected() {
        let mut header = vec![0u8; FRAME_HEADER_BYTES];
        let too_long = u32::try_from(MAX_RECORD_BYTES + 1).expect("fits");
        header[0..4].copy_from_slice(&too_long.to_le_bytes());
        assert_eq!(decode(&header), Err(FrameError::BadLength(too_long)));
    }
}

//! The working-tier dump of a snapshot: one WAL-framed record per memory (LSN = the memory's
//! LSN, payload = its image with the embedding), so the WAL's own frame checks cover it.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

use engram_wal::{durable, frame, Lsn};

use crate::codec;
use crate::fsutil::HalfCore;
use crate::tier::working::WorkingTier;
use crate::EngineError;

/// The dump's name inside a snapshot directory.
pub(super) const WORKING_DUMP_FILE: &str = "working.dump";

/// Writes the working-tier dump: one WAL-framed record per memory (LSN = the memory's LSN,
/// payload = its image with the embedding).
pub(super) fn write_working_dump(working: &WorkingTier, path: &Path) -> Result<u64, EngineError> {
    let file = File::create(path).map_err(|e| EngineError::io(path, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut frame_buf = Vec::with_capacity(4096);
    let mut image = Vec::with_capacity(4096);
    let mut count = 0;
    let mut rest = HalfCore::new();
    for id in working.ids() {
        rest.step();
        let Some(memory) = working.get(&id)? else {
            continue; // left the tier since the ids were listed: the WAL replays that
        };
        image.clear();
        codec::encode_memory(&mut image, &memory, true);
        frame_buf.clear();
        frame::encode(&mut frame_buf, memory.lsn.max(Lsn::FIRST), 0, &image);
        out.write_all(&frame_buf)
            .map_err(|e| EngineError::io(path, e))?;
        count += 1;
    }
    let file = out
        .into_inner()
        .map_err(|e| EngineError::io(path, e.into_error()))?;
    // About 170 MB at the default capacity: written back in steps (see `sync_gently`).
    durable::sync_gently(&file, 3).map_err(|e| EngineError::io(path, e))?;
    Ok(count)
}

/// Reads a working-tier dump back, calling `f` for each memory.
pub(super) fn read_working_dump(
    path: &Path,
    mut f: impl FnMut(crate::model::Memory) -> Result<(), EngineError>,
) -> Result<(), EngineError> {
    let bytes = fs::read(path).map_err(|e| EngineError::io(path, e))?;
    let mut offset = 0;
    while offset < bytes.len() {
        match frame::decode(&bytes[offset..]) {
            Ok(frame::Decoded::Record(r, len)) => {
                let memory =
                    codec::decode_memory(r.payload, r.lsn).map_err(|e| EngineError::Corrupt {
                        path: path.to_path_buf(),
                        detail: format!("record at offset {offset}: {e}"),
                    })?;
                f(memory)?;
                offset += len;
            }
            Ok(frame::Decoded::End) => break,
            Err(e) => {
                return Err(EngineError::Corrupt {
                    path: path.to_path_buf(),
                    detail: format!("bad record at offset {offset}: {e:?}"),
                })
            }
        }
    }
    Ok(())
}

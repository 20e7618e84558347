//! File-system helpers with no knowledge of the engine's formats: walking a directory, sizing
//! it, and checksumming files, optionally paced so a long checksum shares the machine.
//!
//! A leaf module, like `vector`, `text` and `idhash`.

use std::fs::{self, File};
use std::path::Path;

use crate::EngineError;

/// Every regular file under `root`, as paths relative to it, sorted.
pub fn list_files(root: &Path) -> Result<Vec<String>, EngineError> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), EngineError> {
        for entry in fs::read_dir(dir).map_err(|e| EngineError::io(dir, e))? {
            let entry = entry.map_err(|e| EngineError::io(dir, e))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| EngineError::io(&path, e))?;
            if kind.is_dir() {
                walk(root, &path, out)?;
            } else if kind.is_file() {
                let rel = path.strip_prefix(root).expect("walk stays under root");
                out.push(rel.to_string_lossy().into_owned());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

/// Size and CRC32 of a file, read in 1 MiB blocks.
pub fn file_crc(path: &Path) -> Result<(u64, u32), EngineError> {
    file_crc_resting(path, &mut HalfCore::unlimited())
}

/// Bytes the files directly in `dir` occupy on disk (allocated blocks: sparse files count what
/// they use).
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// Keeps a loop of CPU-bound work on the daemon's side of half a core: after every
/// [`HalfCore::STRETCH`] of work, `step` sleeps as long as the work took. A snapshot dumps the
/// working tier and checksums gigabytes while writes are served on the same two cores; at the
/// lowest priority instead it could be starved for many seconds, or be preempted while holding
/// a lock writers need.
pub(crate) struct HalfCore {
    since: std::time::Instant,
    limited: bool,
}

impl HalfCore {
    const STRETCH: std::time::Duration = std::time::Duration::from_millis(10);

    pub(crate) fn new() -> HalfCore {
        HalfCore {
            since: std::time::Instant::now(),
            limited: true,
        }
    }

    fn unlimited() -> HalfCore {
        HalfCore {
            limited: false,
            ..HalfCore::new()
        }
    }

    pub(crate) fn step(&mut self) {
        if self.limited {
            let worked = self.since.elapsed();
            if worked >= Self::STRETCH {
                std::thread::sleep(worked);
                self.since = std::time::Instant::now();
            }
        }
    }
}

pub(crate) fn file_crc_resting(
    path: &Path,
    rest: &mut HalfCore,
) -> Result<(u64, u32), EngineError> {
    use std::io::Read;
    let mut f = File::open(path).map_err(|e| EngineError::io(path, e))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| EngineError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
        rest.step();
    }
    Ok((total, hasher.finalize()))
}

/// The filesystem is full (ENOSPC) or the quota is used up (EDQUOT): the same step succeeds
/// once space is freed, so it is refused, not fatal.
pub fn is_out_of_space(e: &std::io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
}

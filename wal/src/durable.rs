//! The one place that writes state files so they survive a crash: temp → fsync → rename → fsync dir.
//!
//! Every file whose loss or half-written state would corrupt the store (checkpoints, manifests,
//! saved indexes) goes through [`write_atomic`]. Code elsewhere must not write state with ad-hoc
//! `std::fs::write`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// Writes `bytes` to `path` so that after a crash the file holds either its old content or all of
/// `bytes`, never a mixture: write a sibling temp file, fsync it, rename over `path`, fsync the
/// directory so the rename itself is durable.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(".tmp");
    let tmp_path = dir.join(tmp_name);
    {
        let mut tmp = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp_path)?;
        tmp.write_all(bytes)?;
        if bytes.len() as u64 > GENTLE_CHUNK {
            // A big file (a WAL segment copied into a snapshot, an index's keys): in steps, so
            // at most one step is queued ahead of a WAL sync; no pauses, as offline tools
            // (restore, backup) write these too and should run at full speed.
            sync_gently(&tmp, 0)?;
        }
        tmp.sync_all()?;
    }
    fs::rename(&tmp_path, path)?;
    sync_dir(dir)
}

/// Bytes [`sync_gently`] writes back per step.
const GENTLE_CHUNK: u64 = 4 << 20;

/// Makes a large file durable without flooding the disk: its dirty pages are written back
/// `GENTLE_CHUNK` bytes at a time, each step waited for and followed by a pause of `idle` times
/// as long as it took, then the file is fdatasync'd. A single fdatasync of a few hundred MB (a
/// working-tier dump, a saved vector index) queues all of it ahead of every WAL fdatasync
/// issued meanwhile, and each writer waits for the whole of it; in steps, a WAL sync waits for
/// one step at most. Clean ranges cost almost nothing, so this suits sparse or memory-mapped
/// files whose dirty part is small.
pub fn sync_gently(file: &File, idle: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = file.metadata()?.len();
    let mut offset = 0;
    while offset < len {
        let n = GENTLE_CHUNK.min(len - offset);
        let started = Instant::now();
        #[allow(
            unsafe_code,
            reason = "rustix has no sync_file_range; the WAL's only unsafe call outside tests"
        )]
        // SAFETY: sync_file_range takes a file descriptor and integers and touches no memory of
        // ours; the descriptor stays open for the borrow of `file`.
        let rc = unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                i64::try_from(offset).unwrap_or(i64::MAX),
                i64::try_from(n).unwrap_or(i64::MAX),
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let took = started.elapsed();
        // Steps that wrote nothing (clean pages) take microseconds: no pause.
        if took > Duration::from_micros(200) {
            std::thread::sleep(took * idle);
        }
        offset += n;
    }
    file.sync_data()
}

/// fsyncs a directory so that entries created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Renames `from` to `to` and makes the rename durable in both directories.
pub fn rename_durable(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    let to_dir = parent_dir(to)?;
    sync_dir(to_dir)?;
    let from_dir = parent_dir(from)?;
    if from_dir != to_dir {
        sync_dir(from_dir)?;
    }
    Ok(())
}

fn parent_dir(path: &Path) -> io::Result<&Path> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Ok(Path::new(".")),
        Some(p) => Ok(p),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path has no parent directory",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state");
        write_atomic(&path, b"one").expect("first write");
        write_atomic(&path, b"two").expect("second write");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state")]);
    }

    #[test]
    fn big_files_are_written_in_steps_and_read_back_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big");
        // Several steps and a partial last one, through write_atomic.
        let bytes: Vec<u8> = (0..(GENTLE_CHUNK * 2 + 12_345))
            .map(|i| (i % 251) as u8)
            .collect();
        write_atomic(&path, &bytes).expect("write");
        assert_eq!(fs::read(&path).expect("read"), bytes);
        // A read-only descriptor of a file written through another one (as the vector index
        // save does), and an empty file.
        sync_gently(&File::open(&path).expect("open"), 2).expect("sync read-only");
        let empty = dir.path().join("empty");
        File::create(&empty).expect("create");
        sync_gently(&File::open(&empty).expect("open"), 2).expect("sync empty");
    }
}

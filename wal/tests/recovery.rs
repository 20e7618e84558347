//! Recovery and durability tests for the WAL, run against real files in a temp directory.
//!
//! Each test writes records through the public API, damages or reopens the segment files the way
//! a crash or a bad disk would (truncation at every byte of the last record, zeroed tails, bit
//! flips in the middle of the log), and checks what `Wal::open` replays or refuses.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use engram_wal::{segment, IoOp, Lsn, SyncMode, Wal, WalError, WalOptions};

fn options(dir: &Path, segment_bytes: u64) -> WalOptions {
    let mut opts = WalOptions::new(dir.join("wal"));
    opts.segment_bytes = segment_bytes;
    opts.archive_dir = Some(dir.join("archive"));
    opts
}

fn payload(i: u64) -> Vec<u8> {
    format!("record number {i} {}", "x".repeat((i % 37) as usize)).into_bytes()
}

/// Replayed records: (LSN, payload).
type Replayed = Vec<(Lsn, Vec<u8>)>;

/// Opens the log and collects every replayed record.
fn open_collect(opts: WalOptions) -> Result<(Wal, Replayed), WalError> {
    let mut seen = Vec::new();
    let (wal, _) = Wal::open(opts, Lsn::FIRST, Lsn::FIRST, |r| {
        seen.push((r.lsn, r.payload.to_vec()));
        Ok::<(), WalError>(())
    })?;
    Ok((wal, seen))
}

fn write_records(opts: WalOptions, count: u64) {
    let (wal, existing) = open_collect(opts).expect("open");
    let start = existing.len() as u64 + 1;
    for i in start..start + count {
        let (lsn, _) = wal.append(&payload(i)).expect("append");
        assert_eq!(lsn, Lsn::new(i));
        wal.sync(lsn).expect("sync");
    }
    wal.close().expect("close");
}

fn only_segment(dir: &Path) -> PathBuf {
    let segs = segment::list_segments(&dir.join("wal")).expect("list");
    segs.last().expect("a segment").1.clone()
}

/// Offset of the frame with `lsn` inside the segment at `path`.
fn frame_offset(path: &Path, lsn: Lsn) -> (u64, u64) {
    let bytes = std::fs::read(path).expect("read");
    let mut found = None;
    let mut expected = None;
    let mut prev: Option<(Lsn, u64)> = None;
    let end = segment::scan(&bytes, &mut expected, |r, off| {
        if let Some((plsn, poff)) = prev {
            if plsn == lsn {
                found = Some((poff, off));
            }
        }
        prev = Some((r.lsn, off));
        Ok::<(), ()>(())
    })
    .expect("scan");
    if found.is_none() {
        if let (Some((plsn, poff)), segment::ScanEnd::Clean { end_offset }) = (prev, end) {
            if plsn == lsn {
                found = Some((poff, end_offset));
            }
        }
    }
    found.expect("frame present")
}

#[test]
fn records_survive_reopen_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_records(options(dir.path(), 1 << 20), 100);
    write_records(options(dir.path(), 1 << 20), 50);
    let (wal, seen) = open_collect(options(dir.path(), 1 << 20)).expect("reopen");
    assert_eq!(seen.len(), 150);
    for (i, (lsn, bytes)) in seen.iter().enumerate() {
        assert_eq!(*lsn, Lsn::new(i as u64 + 1));
        assert_eq!(bytes, &payload(lsn.get()));
    }
    assert_eq!(wal.last_lsn(), Lsn::new(150));
    assert_eq!(wal.durable_lsn(), Lsn::new(150));
}

#[test]
fn torn_tail_at_every_byte_of_the_last_record_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_records(options(dir.path(), 1 << 20), 10);
    let seg = only_segment(dir.path());
    let (start, frame_end) = frame_offset(&seg, Lsn::new(10));
    // Bytes the record really occupies; after them comes zero padding to the 8-byte boundary.
    let end = start + (engram_wal::frame::FRAME_HEADER_BYTES + payload(10).len()) as u64;
    assert!(end <= frame_end);
    let pristine = std::fs::read(&seg).expect("read");
    for cut in start..end {
        for zero_fill in [false, true] {
            // Either the file was cut short, or (preallocated) its tail reads back as zeros.
            let file = OpenOptions::new().write(true).open(&seg).expect("open seg");
            file.set_len(0).expect("reset");
            file.write_all_at(&pristine, 0).expect("restore");
            if zero_fill {
                let zeros = vec![0u8; (end - cut) as usize];
                file.write_all_at(&zeros, cut).expect("zero");
            } else {
                file.set_len(cut).expect("truncate");
            }
            drop(file);
            let (wal, seen) = open_collect(options(dir.path(), 1 << 20))
                .unwrap_or_else(|e| panic!("cut at {cut} (zero_fill {zero_fill}): {e}"));
            assert_eq!(seen.len(), 9, "cut at {cut}");
            // The log continues with the LSN of the lost record.
            let (lsn, _) = wal.append(b"after the tear").expect("append");
            assert_eq!(lsn, Lsn::new(10));
            wal.sync(lsn).expect("sync");
            wal.close().expect("close");
            let (_, seen) = open_collect(options(dir.path(), 1 << 20)).expect("reopen");
            assert_eq!(seen.len(), 10);
            assert_eq!(seen[9].1, b"after the tear");
        }
    }
}

#[test]
fn bit_flip_mid_log_refuses_to_open_naming_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_records(options(dir.path(), 1 << 20), 20);
    let seg = only_segment(dir.path());
    let (start, _) = frame_offset(&seg, Lsn::new(5));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)
        .expect("open");
    let mut byte = [0u8; 1];
    let at = start + 30;
    file.read_exact_at(&mut byte, at).expect("read");
    byte[0] ^= 0x10;
    file.write_all_at(&byte, at).expect("flip");
    drop(file);
    match open_collect(options(dir.path(), 1 << 20)) {
        Err(WalError::Corrupt { path, offset, .. }) => {
            assert_eq!(path, seg);
            assert_eq!(offset, start);
        }
        other => panic!("expected corruption, got {:?}", other.map(|(_, s)| s.len())),
    }
}

#[test]
fn rotation_archives_closed_segments_and_replays_across_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = options(dir.path(), 4096);
    write_records(opts.clone(), 300);
    let active = segment::list_segments(&dir.path().join("wal")).expect("list");
    assert!(
        active.len() > 3,
        "expected several segments, got {}",
        active.len()
    );
    let archived = segment::list_segments(&dir.path().join("archive")).expect("list");
    assert_eq!(
        archived.len(),
        active.len() - 1,
        "every closed segment is archived"
    );
    let (wal, seen) = open_collect(opts.clone()).expect("reopen");
    assert_eq!(seen.len(), 300);
    assert!(seen
        .iter()
        .enumerate()
        .all(|(i, (lsn, _))| *lsn == Lsn::new(i as u64 + 1)));
    // A checkpoint at LSN 300 frees every closed segment from the active directory.
    let removed = wal.checkpoint(Lsn::new(300)).expect("checkpoint");
    assert_eq!(removed, active.len() - 1);
    assert_eq!(wal.active_segments(), 1);
    wal.close().expect("close");
    // Replaying from after the checkpoint works; asking for older records is a gap.
    let (_, report) = Wal::open(opts.clone(), Lsn::new(301), Lsn::new(301), |_| {
        Ok::<(), WalError>(())
    })
    .expect("open");
    assert_eq!(report.records_replayed, 0);
    let err = Wal::open(opts, Lsn::FIRST, Lsn::FIRST, |_| Ok::<(), WalError>(())).expect_err("gap");
    assert!(
        matches!(
            err,
            WalError::Gap {
                needed: Lsn::FIRST,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn archive_retention_removes_only_old_archived_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = options(dir.path(), 4096);
    write_records(opts.clone(), 200);
    let archived = segment::list_segments(&dir.path().join("archive")).expect("list");
    assert!(archived.len() >= 3);
    // Age the first archived segment by a day.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
    std::fs::File::options()
        .write(true)
        .open(&archived[0].1)
        .expect("open")
        .set_modified(old)
        .expect("set mtime");
    let (wal, _) = open_collect(opts).expect("open");
    let cutoff = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    // Nothing goes while an older LSN must be kept; then only the aged segment goes.
    assert_eq!(wal.prune_archive(cutoff, Lsn::FIRST).expect("prune"), 0);
    assert_eq!(wal.prune_archive(cutoff, Lsn::MAX).expect("prune"), 1);
    let left = segment::list_segments(&dir.path().join("archive")).expect("list");
    assert_eq!(left.len(), archived.len() - 1);
    assert!(!left.iter().any(|(i, _)| *i == archived[0].0));
}

#[test]
fn bit_flip_in_a_closed_segment_is_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = options(dir.path(), 4096);
    write_records(opts.clone(), 200);
    let segs = segment::list_segments(&dir.path().join("wal")).expect("list");
    let first = &segs[0].1;
    // Flip a payload bit of the last record in the first (closed) segment: the torn-tail rule
    // does not apply to it.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(first)
        .expect("open");
    let at = segment::SEGMENT_HEADER_BYTES as u64 + 30;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at).expect("read");
    byte[0] ^= 1;
    file.write_all_at(&byte, at).expect("write");
    drop(file);
    let err = open_collect(opts).expect_err("corrupt");
    assert!(
        matches!(err, WalError::Corrupt { ref path, .. } if path == first),
        "{err}"
    );
}

#[test]
fn group_commit_shares_fsyncs_between_concurrent_writers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open_collect(options(dir.path(), 1 << 22)).expect("open");
    let wal = Arc::new(wal);
    let threads: Vec<_> = (0..32)
        .map(|t| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                for i in 0..50u64 {
                    let (lsn, _) = wal.append(&payload(t * 1000 + i)).expect("append");
                    wal.sync(lsn).expect("sync");
                    assert!(wal.durable_lsn() >= lsn);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer thread");
    }
    assert_eq!(wal.durable_lsn(), Lsn::new(1600));
    let fsyncs = wal.fsync_count();
    assert!(
        fsyncs < 1600,
        "{fsyncs} fsyncs for 1600 records: no grouping"
    );
    Arc::into_inner(wal)
        .expect("sole owner")
        .close()
        .expect("close");
    let (_, seen) = open_collect(options(dir.path(), 1 << 22)).expect("reopen");
    assert_eq!(seen.len(), 1600);
}

#[test]
fn failed_fsync_poisons_and_is_never_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fail = Arc::new(AtomicBool::new(false));
    let mut opts = options(dir.path(), 1 << 20);
    let flag = Arc::clone(&fail);
    opts.fault_injector = Some(Arc::new(move |op| {
        if op == IoOp::Sync && flag.load(Ordering::SeqCst) {
            Err(std::io::Error::other("injected EIO"))
        } else {
            Ok(())
        }
    }));
    let (wal, _) = open_collect(opts.clone()).expect("open");
    let (lsn, _) = wal.append(b"good").expect("append");
    wal.sync(lsn).expect("sync");
    fail.store(true, Ordering::SeqCst);
    let (lsn, _) = wal.append(b"doomed").expect("append");
    assert!(matches!(wal.sync(lsn), Err(WalError::Io { .. })));
    assert!(wal.is_poisoned());
    fail.store(false, Ordering::SeqCst);
    // Even with the disk healthy again, the log does not retry: it stays poisoned.
    assert!(matches!(wal.append(b"later"), Err(WalError::Poisoned)));
    assert!(matches!(wal.sync(lsn), Err(WalError::Poisoned)));
    assert_eq!(wal.durable_lsn(), Lsn::FIRST);
    drop(wal);
    let (_, seen) = open_collect(opts).expect("reopen after restart");
    assert_eq!(seen[0].1, b"good");
}

#[test]
fn interval_and_nosync_modes_write_through_before_returning() {
    for mode in [
        SyncMode::Interval(std::time::Duration::from_millis(5)),
        SyncMode::NoSync,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut opts = options(dir.path(), 1 << 20);
        opts.sync_mode = mode;
        let (wal, _) = open_collect(opts.clone()).expect("open");
        for i in 1..=20 {
            let (lsn, _) = wal.append(&payload(i)).expect("append");
            wal.sync(lsn).expect("sync");
            assert!(wal.written_lsn() >= lsn);
        }
        // Simulate a process crash: no close, no final sync. The kernel has every write.
        drop(wal);
        let (_, seen) = open_collect(opts).expect("reopen");
        assert_eq!(seen.len(), 20, "{mode:?}");
    }
}

#[test]
fn oversized_record_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open_collect(options(dir.path(), 4096)).expect("open");
    assert!(matches!(
        wal.append(&[1u8; 4096]),
        Err(WalError::RecordTooLarge { .. })
    ));
    assert!(matches!(
        wal.append(&vec![1u8; engram_wal::MAX_RECORD_BYTES + 1]),
        Err(WalError::RecordTooLarge { .. })
    ));
    assert!(matches!(
        wal.append(&[]),
        Err(WalError::RecordTooLarge { .. })
    ));
    assert_eq!(wal.last_lsn(), Lsn::ZERO);
}

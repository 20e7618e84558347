//! Reading a log offline: summaries of segments, finding the LSN in force at a moment, and
//! exporting an LSN range as segment files (for snapshots, backups and point-in-time restore).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::frame::Lsn;
use crate::segment::{self, ScanEnd};
use crate::{durable, WalError};

/// What one segment file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub index: u64,
    pub path: PathBuf,
    pub records: u64,
    /// First and last LSN, when the segment holds records.
    pub lsns: Option<(Lsn, Lsn)>,
    /// First and last commit time (µs since the epoch).
    pub times: Option<(i64, i64)>,
    /// Offset just past the last valid record.
    pub end_offset: u64,
    /// Set when the scan stopped at a bad record: (offset, reason).
    pub problem: Option<(u64, String)>,
}

fn io_err(path: &Path, source: io::Error) -> WalError {
    WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads and scans one segment; `on_record` sees each record with its offset and frame end.
pub fn scan_file(
    index: u64,
    path: &Path,
    mut on_record: impl FnMut(crate::RecordRef<'_>, u64, u64),
) -> Result<SegmentInfo, WalError> {
    let bytes = fs::read(path).map_err(|e| io_err(path, e))?;
    segment::check_header(&bytes, index).map_err(|reason| WalError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason: format!("bad segment header: {reason}"),
    })?;
    let mut info = SegmentInfo {
        index,
        path: path.to_path_buf(),
        records: 0,
        lsns: None,
        times: None,
        end_offset: segment::SEGMENT_HEADER_BYTES as u64,
        problem: None,
    };
    let mut expected = None;
    let end = segment::scan(&bytes, &mut expected, |r, offset| {
        let frame_end = offset + crate::frame::frame_len(r.payload.len()) as u64;
        info.records += 1;
        info.lsns = Some(info.lsns.map_or((r.lsn, r.lsn), |(a, _)| (a, r.lsn)));
        info.times = Some(
            info.times
                .map_or((r.commit_time_us, r.commit_time_us), |(a, _)| {
                    (a, r.commit_time_us)
                }),
        );
        on_record(r, offset, frame_end);
        Ok::<(), ()>(())
    })
    .map_err(|()| WalError::InvalidOptions("scan callback failed".to_owned()))?;
    match end {
        ScanEnd::Clean { end_offset } => info.end_offset = end_offset,
        ScanEnd::Bad { offset, reason } => {
            info.end_offset = offset;
            info.problem = Some((offset, reason.to_string()));
        }
    }
    Ok(info)
}

/// Segment files found in `dirs` by index. An index present in several dirs is a copy of one
/// segment cut at different points (a snapshot's copy ends at the snapshot): the longest file is
/// taken.
pub fn collect_segments(dirs: &[&Path]) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut all: std::collections::BTreeMap<u64, (u64, PathBuf)> =
        std::collections::BTreeMap::new();
    for dir in dirs {
        if !dir.is_dir() {
            continue;
        }
        for (index, path) in segment::list_segments(dir).map_err(|e| io_err(dir, e))? {
            let len = fs::metadata(&path).map_err(|e| io_err(&path, e))?.len();
            match all.get(&index) {
                Some((have, _)) if *have >= len => {}
                _ => {
                    all.insert(index, (len, path));
                }
            }
        }
    }
    Ok(all.into_iter().map(|(i, (_, p))| (i, p)).collect())
}

/// Summaries of every segment in `dirs`, in log order.
pub fn summarize(dirs: &[&Path]) -> Result<Vec<SegmentInfo>, WalError> {
    collect_segments(dirs)?
        .into_iter()
        .map(|(index, path)| scan_file(index, &path, |_, _, _| {}))
        .collect()
}

/// The last record committed at or before `time_us`: its LSN and commit time.
pub fn lsn_at_time(dirs: &[&Path], time_us: i64) -> Result<Option<(Lsn, i64)>, WalError> {
    let mut found = None;
    for (index, path) in collect_segments(dirs)? {
        let mut past = false;
        scan_file(index, &path, |r, _, _| {
            if r.commit_time_us <= time_us {
                found = Some((r.lsn, r.commit_time_us));
            } else {
                past = true;
            }
        })?;
        if past {
            break;
        }
    }
    Ok(found)
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    pub segments: usize,
    pub bytes: u64,
    /// Commit time of the record `to`.
    pub to_commit_time_us: i64,
}

/// Writes segment files into `dest` holding every record from `from` through `to`: whole
/// segments where they end at or before `to`, the segment holding `to` cut just after it. With
/// `link`, whole segments other than the newest source segment (still being appended to) are
/// hard-linked instead of copied. Fails with [`WalError::Gap`] when a record in the range is in
/// no source.
pub fn export_range(
    sources: &[&Path],
    from: Lsn,
    to: Lsn,
    dest: &Path,
    link: bool,
) -> Result<ExportReport, WalError> {
    fs::create_dir_all(dest).map_err(|e| io_err(dest, e))?;
    let segments = collect_segments(sources)?;
    let newest = segments.last().map(|(i, _)| *i);
    // Newest first, stopping at the segment that holds `from`.
    let mut chosen: Vec<(SegmentInfo, Option<u64>)> = Vec::new();
    let mut to_time = None;
    for (index, path) in segments.iter().rev() {
        let mut cut = None;
        let info = scan_file(*index, path, |r, _, frame_end| {
            if r.lsn == to {
                cut = Some(frame_end);
                to_time = Some(r.commit_time_us);
            }
        })?;
        let Some((first, last)) = info.lsns else {
            continue;
        };
        if first > to {
            continue;
        }
        let starts_range = first <= from;
        let cut = if last > to { cut } else { None };
        chosen.push((info, cut));
        if starts_range {
            break;
        }
    }
    chosen.reverse();
    // Continuity: the first segment holds `from`, each next one starts where the previous ended,
    // and the last one reaches `to`.
    let first_lsn = chosen.first().and_then(|(i, _)| i.lsns).map(|l| l.0);
    if first_lsn.is_none_or(|f| f > from) {
        return Err(WalError::Gap {
            needed: from,
            first: first_lsn.unwrap_or(Lsn::ZERO),
        });
    }
    for pair in chosen.windows(2) {
        let (a, b) = (
            pair[0].0.lsns.expect("has records"),
            pair[1].0.lsns.expect("has records"),
        );
        if b.0 != a.1.next() {
            return Err(WalError::Gap {
                needed: a.1.next(),
                first: b.0,
            });
        }
    }
    let reaches = chosen.last().and_then(|(i, _)| i.lsns).map(|l| l.1);
    if reaches.is_none_or(|l| l < to) {
        return Err(WalError::Gap {
            needed: reaches.map_or(from, Lsn::next),
            first: to,
        });
    }
    let mut report = ExportReport {
        segments: chosen.len(),
        bytes: 0,
        to_commit_time_us: to_time.unwrap_or(0),
    };
    for (info, cut) in &chosen {
        let target = dest.join(segment::segment_file_name(info.index));
        let whole = cut.is_none() && Some(info.index) != newest;
        if whole && link {
            match fs::hard_link(&info.path, &target) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(&target, e)),
            }
            report.bytes += info.end_offset;
        } else {
            let end = cut.unwrap_or(info.end_offset);
            let bytes = fs::read(&info.path).map_err(|e| io_err(&info.path, e))?;
            let end = usize::try_from(end).expect("segment offsets fit in memory");
            durable::write_atomic(&target, &bytes[..end.min(bytes.len())])
                .map_err(|e| io_err(&target, e))?;
            report.bytes += end as u64;
        }
    }
    durable::sync_dir(dest).map_err(|e| io_err(dest, e))?;
    Ok(report)
}

//! `engramctl backup`, `verify` and `restore`.
//!
//! A backup directory holds `snapshots/<id>/` (whole snapshots, copied once: they never change)
//! and `wal/` (every WAL segment, archived and active, cut after its last complete record; a
//! closed segment already there with the same size is not copied again). Restoring to a moment
//! takes the newest snapshot at or before it and replays `wal/` up to it.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use engram_engine::snapshot::{self, SnapshotManifest};
use engram_engine::{DataDir, Engine, EngineConfig, EngineError};
use engram_wal::{durable, export, Lsn};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

/// A spinner on stderr with a message (hidden for --json, and when stderr is not a terminal).
fn spinner(as_json: bool, message: &str) -> ProgressBar {
    if as_json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("static template"),
    );
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// Takes a snapshot of a stopped store (opening it offline).
fn offline_snapshot(data_dir: &Path) -> anyhow::Result<SnapshotManifest> {
    match DataDir::new(data_dir).lock() {
        Ok(lock) => drop(lock),
        Err(EngineError::Locked { .. }) => bail!(
            "{} is in use by a running engramd: pass --url to ask it for a snapshot",
            data_dir.display()
        ),
        Err(e) => return Err(e.into()),
    }
    let Some((dimensions, capacity, heap_bytes)) = engram_engine::stored_layout(data_dir)? else {
        bail!(
            "{} is not an Engram data directory (no working tier)",
            data_dir.display()
        );
    };
    let mut config = EngineConfig::new(data_dir);
    config.search_structures = false;
    config.dimensions = dimensions;
    config.working_capacity = capacity;
    config.working_heap_bytes = heap_bytes;
    let (engine, _) = Engine::open(config).context("opening the store offline")?;
    let manifest = engine.create_snapshot()?;
    engine.close()?;
    Ok(manifest)
}

/// Asks a running daemon for a snapshot.
fn online_snapshot(url: &str, api_key: Option<&str>) -> anyhow::Result<String> {
    let mut client = engram_client::Client::new(url)?;
    if let Some(k) = api_key {
        client = client.with_api_key(k);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let snapshot = runtime
        .block_on(client.create_snapshot())
        .map_err(|e| match e {
            engram_client::Error::Transport(t) => anyhow::anyhow!("cannot reach {url}: {t}"),
            e => anyhow::anyhow!("the daemon answered {e}"),
        })?;
    Ok(snapshot.id)
}

fn copy_dir(src: &Path, dst: &Path) -> anyhow::Result<u64> {
    let mut bytes = 0;
    for rel in snapshot::list_files(src)? {
        let to = dst.join(&rel);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        bytes += fs::copy(src.join(&rel), &to).with_context(|| format!("copying {rel}"))?;
    }
    Ok(bytes)
}

pub fn backup(
    data_dir: &Path,
    out: &Path,
    url: Option<&str>,
    api_key: Option<&str>,
    as_json: bool,
) -> anyhow::Result<()> {
    if !data_dir.is_dir() {
        bail!("{} is not a directory", data_dir.display());
    }
    let bar = spinner(as_json, "taking a snapshot");
    let snapshot_id = match url {
        Some(url) => online_snapshot(url, api_key)?,
        None => offline_snapshot(data_dir)?.id,
    };
    let manifest = SnapshotManifest::read(&DataDir::new(data_dir).snapshots().join(&snapshot_id))?;
    let snaps_out = out.join("snapshots");
    fs::create_dir_all(&snaps_out).with_context(|| format!("creating {}", snaps_out.display()))?;
    let mut copied_bytes = 0;
    let mut skipped_files = 0usize;
    // Every snapshot the data directory keeps, not only the new one: with the archived WAL
    // since the oldest, any moment since the oldest kept snapshot can be restored.
    let kept = snapshot::list_snapshots(&DataDir::new(data_dir).snapshots())?;
    for (src, kept_manifest) in &kept {
        let id = &kept_manifest.id;
        let dst = snaps_out.join(id);
        if dst.join(snapshot::MANIFEST_FILE).is_file() {
            skipped_files += kept_manifest.files.len();
            continue;
        }
        bar.set_message(format!("copying snapshot {id}"));
        let tmp = snaps_out.join(format!("{id}.partial"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        copied_bytes += copy_dir(src, &tmp)?;
        durable::rename_durable(&tmp, &dst)?;
    }
    // WAL: archived and active segments, each cut after its last complete record.
    let wal_out = out.join("wal");
    fs::create_dir_all(&wal_out)?;
    let archive = DataDir::new(data_dir).archive();
    let wal = DataDir::new(data_dir).wal();
    let segments = export::collect_segments(&[&archive, &wal])?;
    let newest = segments.last().map(|(i, _)| *i);
    let mut copied_segments = 0;
    for (n, (index, path)) in segments.iter().enumerate() {
        bar.set_message(format!(
            "copying WAL segment {} of {}",
            n + 1,
            segments.len()
        ));
        let info = export::scan_file(*index, path, |_, _, _| {})?;
        let target = wal_out.join(path.file_name().context("segment name")?);
        let existing = fs::metadata(&target).map(|m| m.len()).ok();
        if Some(*index) != newest && existing == Some(info.end_offset) {
            skipped_files += 1;
            continue;
        }
        let bytes = fs::read(path)?;
        let end = usize::try_from(info.end_offset)?.min(bytes.len());
        durable::write_atomic(&target, &bytes[..end])?;
        copied_bytes += end as u64;
        copied_segments += 1;
    }
    let summary = export::summarize(&[&wal_out])?;
    let first = summary.iter().find_map(|s| s.lsns.map(|l| l.0));
    let last = summary.iter().rev().find_map(|s| s.lsns.map(|l| l.1));
    let report = json!({
        "backup": out.display().to_string(),
        "snapshot": snapshot_id,
        "snapshots": kept.iter().map(|(_, m)| m.id.clone()).collect::<Vec<_>>(),
        "restorable_from": kept.first().map(|(_, m)| format_time(m.commit_time_us)),
        "snapshot_lsn": manifest.lsn,
        "wal_first_lsn": first,
        "wal_last_lsn": last,
        "copied_bytes": copied_bytes,
        "copied_segments": copied_segments,
        "skipped_files": skipped_files,
    });
    durable::write_atomic(
        &out.join("BACKUP.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    if as_json {
        println!("{report}");
    } else {
        println!(
            "backup {}: snapshot {snapshot_id} (LSN {}), WAL LSN {} to {}, {copied_bytes} bytes copied, {skipped_files} files already there",
            out.display(),
            manifest.lsn,
            first.map_or("-".to_owned(), |l| l.to_string()),
            last.map_or("-".to_owned(), |l| l.to_string()),
        );
    }
    Ok(())
}

/// Every problem in a backup, one line each, naming the file.
pub fn problems(backup: &Path) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    let snaps = backup.join("snapshots");
    if !snaps.is_dir() {
        problems.push(format!("{}: missing", snaps.display()));
    } else {
        let mut found = 0;
        for entry in fs::read_dir(&snaps)? {
            let dir = entry?.path();
            if !dir.is_dir() || dir.extension().is_some_and(|e| e == "partial") {
                continue;
            }
            found += 1;
            problems.extend(snapshot::verify_snapshot(&dir));
        }
        if found == 0 {
            problems.push(format!("{}: no snapshot", snaps.display()));
        }
    }
    problems.extend(segment_problems(&[&backup.join("wal")], false)?);
    Ok(problems)
}

/// Damaged or missing records in the WAL segments of `dirs`, and gaps between them. A backup's
/// segments end at their last record; a data directory's (`preallocated`) may end in zeros.
fn segment_problems(dirs: &[&Path], preallocated: bool) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut previous: Option<(PathBuf, Lsn)> = None;
    for (index, path) in export::collect_segments(dirs)? {
        match export::scan_file(index, &path, |_, _, _| {}) {
            Err(e) => problems.push(e.to_string()),
            Ok(info) => {
                let len = fs::metadata(&path)?.len();
                if let Some((offset, reason)) = &info.problem {
                    problems.push(format!(
                        "{}: bad record at offset {offset}: {reason}",
                        path.display()
                    ));
                } else if info.end_offset != len && !preallocated {
                    problems.push(format!(
                        "{}: {} bytes after the last record at offset {}",
                        path.display(),
                        len - info.end_offset,
                        info.end_offset
                    ));
                }
                if let (Some((prev_path, prev_last)), Some((first, _))) = (&previous, info.lsns) {
                    if first != prev_last.next() {
                        problems.push(format!(
                            "{}: starts at LSN {first} but {} ended at LSN {prev_last}",
                            path.display(),
                            prev_path.display()
                        ));
                    }
                }
                if let Some((_, last)) = info.lsns {
                    previous = Some((path.clone(), last));
                }
            }
        }
    }
    Ok(problems)
}

pub fn verify(backup: &Path, as_json: bool) -> anyhow::Result<()> {
    if !backup.is_dir() {
        bail!("{} is not a directory", backup.display());
    }
    let bar = spinner(as_json, "checking every checksum");
    let found = problems(backup)?;
    bar.finish_and_clear();
    if as_json {
        println!(
            "{}",
            json!({ "backup": backup.display().to_string(), "ok": found.is_empty(), "problems": found })
        );
    } else if found.is_empty() {
        println!(
            "{}: every checksum, manifest and the WAL's continuity are good",
            backup.display()
        );
    } else {
        for p in &found {
            eprintln!("{p}");
        }
    }
    if !found.is_empty() {
        bail!("{} problem(s) in {}", found.len(), backup.display());
    }
    Ok(())
}

fn parse_time(s: &str) -> anyhow::Result<i64> {
    use time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::parse(s, &Rfc3339)
        .with_context(|| format!("--to-time {s:?} is not an RFC 3339 time"))?;
    Ok(i64::try_from(t.unix_timestamp_nanos() / 1000)?)
}

pub fn format_time(us: i64) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| us.to_string())
}

pub fn restore(
    backup: &Path,
    target: &Path,
    to_time: Option<&str>,
    to_lsn: Option<Lsn>,
    as_json: bool,
) -> anyhow::Result<()> {
    let out = restore_quietly(backup, target, to_time, to_lsn, as_json)?;
    if as_json {
        println!("{out}");
    } else {
        println!(
            "restored {} to LSN {} from snapshot {} (LSN {}), {} WAL records replayed",
            target.display(),
            out["restored_lsn"],
            out["snapshot"].as_str().unwrap_or_default(),
            out["snapshot_lsn"],
            out["records_replayed"]
        );
    }
    Ok(())
}

/// [`restore`] without printing: its report.
pub fn restore_quietly(
    backup: &Path,
    target: &Path,
    to_time: Option<&str>,
    to_lsn: Option<Lsn>,
    as_json: bool,
) -> anyhow::Result<serde_json::Value> {
    let snapshots = snapshot::list_snapshots(&backup.join("snapshots"))?;
    let Some((_, oldest)) = snapshots.first() else {
        bail!("{} holds no snapshot", backup.display());
    };
    // A backup keeps its WAL in `wal/`, cut after the last record. A data directory (restoring
    // from its own kept snapshots and archive, no backup needed) has `archive/` and the
    // preallocated segments in `wal/`.
    let data_dir = backup.join("archive").is_dir();
    let wal_dirs: Vec<PathBuf> = if data_dir {
        vec![backup.join("archive"), backup.join("wal")]
    } else {
        vec![backup.join("wal")]
    };
    let wal_refs: Vec<&Path> = wal_dirs.iter().map(PathBuf::as_path).collect();
    if target.exists() && fs::read_dir(target)?.next().is_some() {
        bail!(
            "{} is not empty: restore only into an empty or new directory",
            target.display()
        );
    }
    // Everything the restore may read is checked before the target is written: the WAL here,
    // the chosen snapshot's files (against its manifest) by the engine.
    let damaged = segment_problems(&wal_refs, data_dir)?;
    if !damaged.is_empty() {
        for p in &damaged {
            eprintln!("{p}");
        }
        bail!(
            "{} problem(s) in the WAL of {}: nothing restored",
            damaged.len(),
            backup.display()
        );
    }
    let summary = export::summarize(&wal_refs)?;
    let newest_snapshot = snapshots.last().map(|(_, m)| m).expect("not empty");
    let last_lsn = summary
        .iter()
        .rev()
        .find_map(|s| s.lsns.map(|l| l.1))
        .unwrap_or(Lsn::ZERO)
        .max(newest_snapshot.lsn);
    let last_time = summary
        .iter()
        .rev()
        .find_map(|s| s.times.map(|t| t.1))
        .unwrap_or(0)
        .max(newest_snapshot.commit_time_us);
    let range = format!(
        "LSN {} to {} ({} to {})",
        oldest.lsn,
        last_lsn,
        format_time(oldest.commit_time_us),
        format_time(last_time)
    );
    let target_lsn = match (to_lsn, to_time) {
        (Some(n), _) => n,
        (None, Some(t)) => {
            let us = parse_time(t)?;
            let mut sources: Vec<PathBuf> = wal_dirs.clone();
            sources.extend(snapshots.iter().map(|(d, _)| d.join("wal")));
            let refs: Vec<&Path> = sources.iter().map(PathBuf::as_path).collect();
            match export::lsn_at_time(&refs, us)? {
                Some((lsn, _)) if us >= oldest.commit_time_us => lsn,
                _ => bail!("--to-time {t} is outside the backup's range: {range}"),
            }
        }
        (None, None) => last_lsn,
    };
    if target_lsn < oldest.lsn || target_lsn > last_lsn {
        bail!("LSN {target_lsn} is outside the backup's range: {range}");
    }
    let (snap_dir, snap) = snapshots
        .iter()
        .rev()
        .find(|(_, m)| m.lsn <= target_lsn)
        .expect("the oldest snapshot is at or before the target");
    let bar = spinner(
        as_json,
        &format!(
            "restoring snapshot {} and replaying the WAL to LSN {target_lsn}",
            snap.id
        ),
    );
    let report = engram_engine::restore_snapshot(snap_dir, &wal_refs, target, Some(target_lsn))
        .with_context(|| format!("restoring into {}", target.display()))?;
    bar.finish_and_clear();
    let out = json!({
        "target_dir": target.display().to_string(),
        "snapshot": snap.id,
        "snapshot_lsn": report.snapshot_lsn,
        "restored_lsn": report.restored_lsn,
        "records_replayed": report.records_replayed,
        "replay_seconds": report.replay_time.as_secs_f64(),
        "replay_records_per_second": report.records_replayed as f64 / report.replay_time.as_secs_f64().max(1e-9),
    });
    Ok(out)
}

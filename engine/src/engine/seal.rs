//! Moves into the cold tier: seals (a segment written first, then one WAL record carrying the
//! images, only if none of them changed meanwhile) and compaction of cold segments.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use engram_wal::Lsn;
use uuid::Uuid;

use super::Inner;
use crate::codec::Op;
use crate::model::{EmbeddingStatus, Memory, SegmentId, Tier};
use crate::policy::CompactionReport;
use crate::EngineError;

/// Most memories one cold seal (one WAL record, one segment) carries.
const SEAL_MAX_MEMORIES: usize = 1024;
/// Most encoded bytes one cold seal carries, estimated; well under the WAL record limit.
const SEAL_MAX_BYTES: usize = 12 << 20;
const _: () = assert!(SEAL_MAX_BYTES < engram_wal::MAX_RECORD_BYTES);
/// Memories read per batched warm lookup while filling a seal.
const SEAL_READ_CHUNK: usize = 256;
/// Estimated bytes a memory's image adds beyond its content, metadata and vector.
const SEAL_IMAGE_OVERHEAD_BYTES: usize = 256;
/// Segments with fewer entries are merged by compaction.
const COLD_SMALL_SEGMENT: usize = 8192;
/// Most live entries one compaction output holds.
const COLD_COMPACT_MAX: usize = 65_536;

/// What became of one segment's seal.
enum SealOutcome {
    /// Logged and applied: these memories (as they were before the move) are cold now.
    Sealed(Vec<Memory>),
    /// Some memories changed since they were read: nothing was logged, and these are the
    /// unchanged rest, to seal again.
    Changed(Vec<Memory>),
}

impl Inner {
    /// Moves `ids` (working or warm, not waiting for an embedding) into new cold segments:
    /// each segment is written first, then sealed by one WAL record carrying the images, under
    /// the writer lock and only if none of them changed since it was read (else the changed
    /// ones are left out and the segment is written again). Returns the memories moved, as
    /// they were before the move. `explicit`: a client asked (a pending embedding is no bar).
    pub(super) fn seal(&self, ids: Vec<Uuid>, explicit: bool) -> Result<Vec<Memory>, EngineError> {
        // Pipelined: one thread reads the memories and writes segment files while this one
        // logs and applies the previous segment.
        std::thread::scope(|scope| {
            let (tx, rx) =
                std::sync::mpsc::sync_channel::<(Vec<Memory>, SegmentId, Vec<Memory>)>(1);
            let producer = scope.spawn(move || -> Result<(), EngineError> {
                let send = |batch: Vec<Memory>| -> Result<bool, EngineError> {
                    let (segment, images) = self.prepare_seal(&batch)?;
                    Ok(tx.send((batch, segment, images)).is_ok())
                };
                let mut batch: Vec<Memory> = Vec::new();
                let mut bytes = 0usize;
                for chunk in ids.chunks(SEAL_READ_CHUNK) {
                    // Warm memories with one batched read; anything else (working, or moved
                    // since) one by one.
                    let mut found = self.warm.get_many(chunk)?;
                    for (id, warm) in chunk.iter().zip(found.iter_mut()) {
                        let m = match warm.take() {
                            Some(m) => Some(m),
                            None => self.read(id)?,
                        };
                        let Some(m) = m.filter(|m| {
                            m.tier != Tier::Cold
                                && (explicit || m.embedding_status != EmbeddingStatus::Pending)
                        }) else {
                            continue;
                        };
                        bytes += m.content.len()
                            + m.metadata_json.len()
                            + m.embedding.as_ref().map_or(0, |e| e.len() * 4)
                            + SEAL_IMAGE_OVERHEAD_BYTES;
                        batch.push(m);
                        if batch.len() >= SEAL_MAX_MEMORIES || bytes >= SEAL_MAX_BYTES {
                            if !send(std::mem::take(&mut batch))? {
                                return Ok(());
                            }
                            bytes = 0;
                        }
                    }
                }
                if !batch.is_empty() {
                    send(batch)?;
                }
                Ok(())
            });
            let mut moved = Vec::new();
            let mut failed = None;
            for (batch, segment, images) in rx {
                let sealed = match self.log_seal(batch, segment, images) {
                    Ok(SealOutcome::Sealed(m)) => Ok(m),
                    Ok(SealOutcome::Changed(rest)) => self.seal_batch(rest),
                    Err(e) => Err(e),
                };
                match sealed {
                    Ok(m) => moved.extend(m),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            let produced = producer.join().expect("the seal producer does not panic");
            if let Some(e) = failed {
                return Err(e);
            }
            produced?;
            Ok(moved)
        })
    }

    /// Writes `batch` as a new segment file: (segment id, the cold images).
    fn prepare_seal(&self, batch: &[Memory]) -> Result<(SegmentId, Vec<Memory>), EngineError> {
        let segment = self.cold.allocate_id();
        let images: Vec<Memory> = batch
            .iter()
            .map(|m| Memory {
                tier: Tier::Cold,
                ..m.clone()
            })
            .collect();
        self.cold.write(segment, &images)?;
        Ok((segment, images))
    }

    /// One segment's worth of [`Inner::seal`], retried without the memories that changed.
    fn seal_batch(&self, mut batch: Vec<Memory>) -> Result<Vec<Memory>, EngineError> {
        loop {
            if batch.is_empty() {
                return Ok(batch);
            }
            let (segment, images) = self.prepare_seal(&batch)?;
            match self.log_seal(batch, segment, images)? {
                SealOutcome::Sealed(moved) => return Ok(moved),
                SealOutcome::Changed(rest) => batch = rest,
            }
        }
    }

    /// Logs and applies the seal of `batch` (written as `segment`) if none of its memories
    /// changed since they were read. Otherwise deletes the file and returns the unchanged rest.
    fn log_seal(
        &self,
        mut batch: Vec<Memory>,
        segment: SegmentId,
        images: Vec<Memory>,
    ) -> Result<SealOutcome, EngineError> {
        let warm_ids: Vec<Uuid> = batch
            .iter()
            .filter(|m| m.tier == Tier::Warm)
            .map(|m| m.id)
            .collect();
        let logged = {
            let mut w = self.writer.lock();
            // Unchanged since read: nothing logged for it since, and the applied image has
            // the LSN read (one batched read of the warm records' LSNs, not a read of each
            // memory, to keep the writer lock short).
            let mut warm_lsns = warm_ids
                .iter()
                .copied()
                .zip(self.warm.record_lsns(&warm_ids)?)
                .collect::<HashMap<Uuid, Option<Lsn>>>();
            let mut changed = Vec::new();
            for (i, m) in batch.iter().enumerate() {
                let same = !w.pending.contains_key(&m.id)
                    && match m.tier {
                        Tier::Warm => warm_lsns.remove(&m.id).flatten() == Some(m.lsn),
                        _ => self.working.get(&m.id)?.is_some_and(|c| c.lsn == m.lsn),
                    };
                if !same {
                    changed.push(i);
                }
            }
            if changed.is_empty() {
                let op = Op::ColdSeal {
                    segment,
                    memories: images
                        .into_iter()
                        .zip(batch.iter().map(|m| m.tier))
                        .collect(),
                };
                let lsn = self.log(&mut w, op)?;
                for m in &batch {
                    self.adjust_projected(&mut w, Some(m.tier), Some(Tier::Cold));
                }
                Some(lsn)
            } else {
                for i in changed.into_iter().rev() {
                    batch.remove(i);
                }
                None
            }
        };
        match logged {
            Some(lsn) => {
                self.sync_and_apply(lsn)?;
                for m in &batch {
                    self.counters.count_move(m.tier, Tier::Cold, 1);
                }
                Ok(SealOutcome::Sealed(batch))
            }
            None => {
                self.cold.discard_unlogged(segment);
                Ok(SealOutcome::Changed(batch))
            }
        }
    }

    /// Rewrites cold segments without their dead entries: those above the dead ratio (all of
    /// them with `force`), merged with small segments, into outputs of at most
    /// [`COLD_COMPACT_MAX`] entries.
    /// Replaces the segments `group` by one holding their live memories (none if nothing is
    /// live), as a logged `ColdCompact`: the memories kept, and the new segment. The caller
    /// holds the migration lock.
    pub(super) fn rewrite_segments(
        &self,
        group: &[SegmentId],
    ) -> Result<(usize, Option<SegmentId>), EngineError> {
        let kept = self.cold.live_ids(group);
        let memories = self.cold.collect(group, &kept)?;
        let segment = if kept.is_empty() {
            None
        } else {
            let id = self.cold.allocate_id();
            self.cold.write(id, &memories)?;
            Some(id)
        };
        let lsn = {
            let mut w = self.writer.lock();
            // Entries that died since, or will when a logged change applies, are left out
            // of the record (the file then no longer matches it and is rebuilt when
            // applied): a kept id must still be cold when the record applies.
            let kept: Vec<Uuid> = self
                .cold
                .live_ids(group)
                .into_iter()
                .filter(|id| !w.pending.contains_key(id))
                .collect();
            self.log(
                &mut w,
                Op::ColdCompact {
                    segment,
                    sources: group.to_vec(),
                    kept,
                },
            )?
        };
        self.sync_and_apply(lsn)?;
        Ok((memories.len(), segment))
    }

    pub(super) fn compact(&self, force: bool) -> Result<CompactionReport, EngineError> {
        let _one = self.migration_lock.lock();
        let started = Instant::now();
        let ratio = self.config.migration.compact_dead_ratio;
        let stats = self.cold.segment_stats();
        let chosen: Vec<&crate::tier::cold::ColdSegmentStats> = stats
            .iter()
            .filter(|s| {
                let dead = s.entries - s.live.min(s.entries);
                (dead > 0 && (force || dead as f64 >= ratio * s.entries as f64))
                    || s.entries < COLD_SMALL_SEGMENT
            })
            .collect();
        // Compacting a single small segment with nothing dead gains nothing.
        let worth = chosen.iter().any(|s| s.live < s.entries) || chosen.len() > 1;
        let mut report = CompactionReport {
            bytes_before: self.cold.disk_bytes(),
            ..CompactionReport::default()
        };
        if !worth {
            return Ok(report);
        }
        let mut groups: Vec<Vec<SegmentId>> = vec![Vec::new()];
        let mut live = 0;
        for s in &chosen {
            if live + s.live > COLD_COMPACT_MAX && !groups.last().is_some_and(Vec::is_empty) {
                groups.push(Vec::new());
                live = 0;
            }
            groups.last_mut().expect("one group").push(s.id);
            live += s.live;
        }
        for group in groups {
            if group.is_empty()
                || (group.len() == 1
                    && stats
                        .iter()
                        .any(|s| s.id == group[0] && s.live == s.entries))
            {
                continue;
            }
            let (kept, segment) = self.rewrite_segments(&group)?;
            let entries: usize = stats
                .iter()
                .filter(|s| group.contains(&s.id))
                .map(|s| s.entries)
                .sum();
            report.segments_in += group.len();
            report.segments_out += usize::from(segment.is_some());
            report.live_kept += kept;
            report.dead_dropped += entries.saturating_sub(kept);
        }
        report.bytes_after = self.cold.disk_bytes();
        report.took = started.elapsed();
        self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        self.counters
            .compaction_us
            .fetch_add(report.took.as_micros() as u64, Ordering::Relaxed);
        self.counters
            .compaction_dead_dropped
            .fetch_add(report.dead_dropped as u64, Ordering::Relaxed);
        Ok(report)
    }
}

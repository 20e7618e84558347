//! Durability and apply: wait for a record's group commit, then apply every durable record in
//! LSN order — to the tiers through the [`Applier`] (which recovery uses too), then to the
//! derived state (tier counts, search structures, the embedding queue, expiry, promotion hits).

use std::sync::atomic::Ordering;

use engram_wal::{Lsn, SyncMode};
use uuid::Uuid;

use super::Inner;
use crate::codec::{AccessDelta, Op, PutKind};
use crate::model::{EmbeddingStatus, Status, Tier};
use crate::tier::cold::ColdTier;
use crate::tier::warm::{WarmBatch, WarmTier};
use crate::tier::working::WorkingTier;
use crate::EngineError;

/// Applies operations to the tiers: the one place that turns a WAL operation into tier
/// changes, used by recovery (record by record, RocksDB in batches, the working tier's share
/// collected first) and by live apply (in groups, in the order [`Inner::apply_group`] gives).
pub(super) struct Applier<'a> {
    pub working: &'a WorkingTier,
    pub warm: &'a WarmTier,
    pub cold: &'a ColdTier,
    /// `history.keep_versions`.
    pub keep_versions: u64,
}

impl Applier<'_> {
    /// The RocksDB part of applying `op`, added to `batch`. Writes only, except that access
    /// deltas read the counters they add to, and re-indexing a memory for search reads its
    /// stored attribute row.
    pub(super) fn rocks(&self, batch: &mut WarmBatch<'_>, op: &Op) -> Result<(), EngineError> {
        match op {
            Op::Put {
                kind,
                memory,
                previous_tier,
                history,
                ..
            } => {
                if *kind == PutKind::Create {
                    batch.index_namespace(&memory.namespace, &memory.id);
                }
                if matches!(kind, PutKind::Create | PutKind::Update) {
                    batch.mark_space_dirty(&memory.id, memory.lsn.get());
                }
                for delta in history {
                    batch.put_version(&memory.id, delta, self.keep_versions);
                }
                let dedup = DedupChange::of(op);
                if let Some((namespace, hash)) = dedup.release {
                    batch.unindex_hash(namespace, &hash);
                }
                if let Some((namespace, hash, id)) = dedup.claim {
                    batch.index_hash(namespace, &hash, &id);
                }
                if *previous_tier == Some(Tier::Cold) {
                    // Leaving the cold tier: its segment entry is dead from now on.
                    batch.delete_cold_location(&memory.id);
                }
                match memory.tier {
                    Tier::Warm => batch.put_record(memory),
                    _ => {
                        if *previous_tier == Some(Tier::Warm) {
                            batch.delete_record(&memory.id);
                        }
                    }
                }
                batch.index_for_search(memory, *previous_tier)?;
            }
            Op::Purge {
                id,
                namespace,
                release_hash,
                previous_tier,
            } => {
                batch.unindex_namespace(namespace, id);
                batch.delete_versions(id);
                batch.delete_space_rows(id);
                if let Some(h) = release_hash {
                    batch.unindex_hash(namespace, h);
                }
                match previous_tier {
                    Tier::Warm => batch.delete_record(id),
                    Tier::Cold => batch.delete_cold_location(id),
                    Tier::Working => {}
                }
                batch.unindex_for_search(id)?;
            }
            Op::ColdSeal { segment, memories } => {
                for (m, from) in memories {
                    match from {
                        // Postings, search attributes and access state stay: cold shares them.
                        Tier::Warm => batch.delete_warm_body(&m.id),
                        Tier::Working => {
                            batch.put_access(
                                &m.id,
                                m.access_count,
                                m.last_accessed_at_us.unwrap_or(i64::MIN),
                            );
                            batch.index_for_search(m, Some(Tier::Working))?;
                        }
                        Tier::Cold => {}
                    }
                    batch.put_cold_location(&m.id, *segment);
                }
            }
            Op::ColdCompact {
                segment: Some(segment),
                kept,
                ..
            } => {
                for id in kept {
                    batch.put_cold_location(id, *segment);
                }
            }
            // Nothing kept: the sources' entries were all dead.
            Op::ColdCompact { segment: None, .. } => {}
            Op::SpaceVector {
                space,
                id,
                content_hash,
                vector,
            } => batch.put_space_vector(*space, id, content_hash, vector),
            Op::DropOwnVectors { space, model } => batch.drop_own_vectors(*space, model),
            Op::Access(deltas) => {
                for d in deltas {
                    if self.working.contains(&d.id) {
                        continue;
                    }
                    if let Some((count, last)) = self.warm.access(&d.id)? {
                        let last =
                            last.map_or(d.last_accessed_at_us, |l| l.max(d.last_accessed_at_us));
                        batch.put_access(&d.id, count.saturating_add(d.count), last);
                    }
                }
            }
        }
        Ok(())
    }

    /// The cold tier's part of applying `op`: register a sealed or compacted segment
    /// (rebuilding its file if needed). Dropping a compaction's sources is separate.
    pub(super) fn cold(&self, op: &Op) -> Result<(), EngineError> {
        match op {
            Op::ColdSeal { segment, memories } => self.cold.apply_seal(*segment, memories),
            Op::ColdCompact {
                segment,
                sources,
                kept,
            } => self.cold.register_compacted(*segment, sources, kept),
            _ => Ok(()),
        }
    }

    /// The working-tier part of applying `op`.
    pub(super) fn working(&self, op: &Op) -> Result<(), EngineError> {
        match op {
            Op::Put { memory, .. } => {
                if memory.tier == Tier::Working {
                    self.working.put(memory)?;
                } else {
                    self.working.remove(&memory.id);
                }
            }
            Op::Purge { id, .. } => {
                self.working.remove(id);
            }
            Op::Access(deltas) => {
                for d in deltas {
                    self.working
                        .record_access(&d.id, d.count, d.last_accessed_at_us)?;
                }
            }
            Op::ColdSeal { memories, .. } => {
                for (m, from) in memories {
                    if *from == Tier::Working {
                        self.working.remove(&m.id);
                    }
                }
            }
            Op::ColdCompact { .. } | Op::SpaceVector { .. } | Op::DropOwnVectors { .. } => {}
        }
        Ok(())
    }
}

/// The dedup index changes an operation makes. A memory holds its content hash in its
/// namespace while it is not deleted; it releases it when the content changes, or on delete or
/// purge.
pub(super) struct DedupChange<'a> {
    /// (namespace, hash) no longer held.
    pub release: Option<(&'a str, [u8; 32])>,
    /// (namespace, hash, holder) now held.
    pub claim: Option<(&'a str, [u8; 32], Uuid)>,
}

impl<'a> DedupChange<'a> {
    pub(super) fn of(op: &'a Op) -> DedupChange<'a> {
        match op {
            Op::Put {
                memory,
                previous_hash,
                ..
            } => {
                let deleted = memory.status == Status::Deleted;
                DedupChange {
                    release: previous_hash
                        .filter(|h| *h != memory.content_hash || deleted)
                        .map(|h| (memory.namespace.as_str(), h)),
                    claim: (!deleted).then_some((
                        memory.namespace.as_str(),
                        memory.content_hash,
                        memory.id,
                    )),
                }
            }
            Op::Purge {
                namespace,
                release_hash,
                ..
            } => DedupChange {
                release: release_hash.map(|h| (namespace.as_str(), h)),
                claim: None,
            },
            Op::Access(_)
            | Op::ColdSeal { .. }
            | Op::ColdCompact { .. }
            | Op::SpaceVector { .. }
            | Op::DropOwnVectors { .. } => DedupChange {
                release: None,
                claim: None,
            },
        }
    }

    /// The (namespace, hash) keys this change touches.
    pub(super) fn keys(&self) -> impl Iterator<Item = (String, [u8; 32])> + '_ {
        let release = self.release.map(|(ns, h)| (ns.to_owned(), h));
        let claim = self.claim.map(|(ns, h, _)| (ns.to_owned(), h));
        release.into_iter().chain(claim)
    }
}

impl Inner {
    fn applier(&self) -> Applier<'_> {
        Applier {
            working: &self.working,
            warm: &self.warm,
            cold: &self.cold,
            keep_versions: self.config.history_keep_versions,
        }
    }

    /// Waits until `lsn` is durable, then applies everything durable in LSN order.
    pub(super) fn sync_and_apply(&self, lsn: Lsn) -> Result<(), EngineError> {
        if let Err(e) = self.wal.sync(lsn) {
            let e = EngineError::from(e);
            self.poison(&e);
            return Err(EngineError::Poisoned);
        }
        self.apply_durable(lsn)
    }

    /// Acknowledged LSN: fsync'd in `always` mode, written otherwise.
    pub(super) fn ack_lsn(&self) -> Lsn {
        match self.wal.sync_mode() {
            SyncMode::Always => self.wal.durable_lsn(),
            _ => self.wal.written_lsn(),
        }
    }

    pub(super) fn apply_durable(&self, lsn: Lsn) -> Result<(), EngineError> {
        if self.applied_lsn.load(Ordering::Acquire) >= lsn {
            return Ok(());
        }
        let _apply = self.apply_lock.lock();
        let ack = self.ack_lsn();
        let ready: Vec<(Lsn, Op)> = {
            let mut q = self.queue.lock();
            let n = q.iter().take_while(|(l, _)| *l <= ack).count();
            q.drain(..n).collect()
        };
        // Every append is queued in LSN order under the writer lock, and every record up to
        // `applied_lsn` is applied: what is ready continues it without a gap.
        let mut expected = self.applied_lsn.load(Ordering::Acquire).next();
        for (l, _) in &ready {
            if *l != expected {
                return Err(self.invariant_failed(format!(
                    "record {l} is ready to apply, but the next unapplied LSN is {expected}"
                )));
            }
            expected = expected.next();
        }
        let mut start = 0;
        while start < ready.len() {
            let end = group_end(&ready, start);
            if let Err(e) = self.apply_group(&ready[start..end]) {
                self.poison(&e);
                return Err(e);
            }
            self.applied_lsn.store(ready[end - 1].0, Ordering::Release);
            start = end;
        }
        if let Some(&(last, _)) = ready.last() {
            let mut w = self.writer.lock();
            while let Some(&(l, bytes)) = w.working_reserved.front() {
                if l > last {
                    break;
                }
                w.working_reserved.pop_front();
                w.working_reserved_bytes -= bytes;
            }
            for (l, op) in &ready {
                for id in op_ids(op) {
                    if w.pending.get(&id).is_some_and(|(pl, _)| pl == l) {
                        w.pending.remove(&id);
                    }
                }
                for key in DedupChange::of(op).keys() {
                    if w.pending_hashes.get(&key).is_some_and(|(pl, _)| pl == l) {
                        w.pending_hashes.remove(&key);
                    }
                }
            }
        }
        if !ready.is_empty() {
            // Whoever applies wakes the futures waiting for it: a blocking caller (an update,
            // a tier move, a snapshot's checkpoint) may apply records a `Committing` waits for,
            // and the committer then finds nothing left to do.
            self.wake_committed();
        }
        let applied = self.applied_lsn.load(Ordering::Acquire);
        if applied < lsn {
            // Another committer drained this record and failed to apply it: it poisoned the
            // engine. Anything else is a broken invariant.
            if self.is_poisoned() {
                return Err(EngineError::Poisoned);
            }
            return Err(self.invariant_failed(format!(
                "record {lsn} is durable but not applied (applied through {applied})"
            )));
        }
        Ok(())
    }

    /// The RocksDB part of a group, in one batch. A full disk does not fail it: the records
    /// are durable in the WAL and must apply, so it is built and written again until RocksDB
    /// has recovered from the failed flush (it does by itself once space is free; new writes
    /// are refused with 507 meanwhile, and this one's caller waits). The ballast is given up
    /// at the first failure: the daemon's own reservations (a WAL segment, a heap growth step)
    /// can take a disk's last bytes between two free-space checks, and then nothing but the
    /// ballast would ever free the room the flush needs.
    fn write_rocks(&self, applier: &Applier<'_>, group: &[(Lsn, Op)]) -> Result<(), EngineError> {
        let lsn = group.last().expect("groups are not empty").0;
        let mut wait = std::time::Duration::from_millis(10);
        let mut waited = std::time::Duration::ZERO;
        loop {
            let mut batch = self.warm.batch();
            for (_, op) in group {
                applier.rocks(&mut batch, op)?;
            }
            match batch.write(lsn) {
                Err(e) if e.is_out_of_space() && !self.stop.load(Ordering::Acquire) => {
                    if waited.is_zero() {
                        self.ballast_missing.store(true, Ordering::Release);
                        match self.layout.release_ballast() {
                            Ok(true) => tracing::warn!(
                                "the disk filled up under RocksDB: the ballast is released for its flush and taken back once the disk has room"
                            ),
                            Ok(false) => {}
                            Err(e) => tracing::warn!(error = %e, "could not release the ballast"),
                        }
                    }
                    if waited.is_zero() || waited.as_secs() / 10 != (waited + wait).as_secs() / 10 {
                        tracing::warn!(error = %e, waited_s = waited.as_secs(), "RocksDB is out of disk space; the apply waits for space and retries");
                    }
                    // Waiting on the disk to have space again: no event to wait for.
                    std::thread::sleep(wait);
                    waited += wait;
                    wait = (wait * 2).min(std::time::Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    /// Applies durable records (distinct ids but for space vectors, see [`group_end`]) in an order that keeps each
    /// visible to lock-free readers at every moment and never needs more working-tier slots
    /// than the log's own order would:
    /// - a promotion into the working tier (alone in its group) is put there before RocksDB
    ///   drops it;
    /// - otherwise RocksDB first (a memory moving out is in warm before it leaves working), then
    ///   working-tier removals (freeing slots), then working-tier puts.
    pub(super) fn apply_group(&self, group: &[(Lsn, Op)]) -> Result<(), EngineError> {
        if let [(lsn, op @ (Op::ColdSeal { .. } | Op::ColdCompact { .. }))] = group {
            return self.apply_cold(*lsn, op);
        }
        let applier = self.applier();
        let into_working =
            |op: &Op| matches!(op, Op::Put { memory, .. } if memory.tier == Tier::Working);
        for (_, op) in group.iter().filter(|(_, op)| is_promotion(op)) {
            applier.working(op)?;
        }
        self.write_rocks(&applier, group)?;
        for (_, op) in group.iter().filter(|(_, op)| !into_working(op)) {
            applier.working(op)?;
        }
        for (_, op) in group
            .iter()
            .filter(|(_, op)| into_working(op) && !is_promotion(op))
        {
            applier.working(op)?;
        }
        for (_, op) in group {
            // Leaving the cold tier: the segment entry is dead once warm or working has it.
            match op {
                Op::Put {
                    memory,
                    previous_tier: Some(Tier::Cold),
                    ..
                } if memory.tier != Tier::Cold => self.cold.remove_location(&memory.id),
                Op::Purge {
                    id,
                    previous_tier: Tier::Cold,
                    ..
                } => self.cold.remove_location(id),
                _ => {}
            }
            // One tier per memory: what left the working tier is gone from it, and what
            // entered it has no live cold copy.
            if let Op::Put { memory, .. } = op {
                let in_working = self.working.contains(&memory.id);
                if in_working != (memory.tier == Tier::Working)
                    || (in_working && self.cold.contains(&memory.id))
                {
                    return Err(self.invariant_failed(format!(
                        "memory {} applied to the {} tier is also in another",
                        memory.id,
                        memory.tier.as_str()
                    )));
                }
            }
            self.count_tiers(op);
            self.index_for_search(op);
        }
        Ok(())
    }

    /// Applies a seal or a compaction so that a lock-free reader (working → warm → cold) finds
    /// every memory at every moment: the segment is registered and the locations point to it
    /// before RocksDB drops the warm copies and the working tier its slots; a compaction's
    /// sources are dropped last.
    pub(super) fn apply_cold(&self, lsn: Lsn, op: &Op) -> Result<(), EngineError> {
        let applier = self.applier();
        applier.cold(op)?;
        match op {
            Op::ColdSeal { segment, memories } => {
                for (m, _) in memories {
                    self.cold.set_location(m.id, *segment);
                }
            }
            Op::ColdCompact {
                segment: Some(segment),
                kept,
                ..
            } => {
                for id in kept {
                    self.cold.set_location(*id, *segment);
                }
            }
            _ => {}
        }
        let mut batch = self.warm.batch();
        applier.rocks(&mut batch, op)?;
        batch.write(lsn)?;
        applier.working(op)?;
        if let Op::ColdCompact { sources, .. } = op {
            self.cold.drop_segments(lsn, sources)?;
        }
        self.count_tiers(op);
        self.index_for_search(op);
        Ok(())
    }

    /// Search structures and the embedding queue follow an applied operation.
    pub(super) fn index_for_search(&self, op: &Op) {
        match op {
            Op::Put { memory, .. } => {
                self.search.put(memory);
                self.track_expiry(&memory.id, memory.expires_at_us);
                let mut queue = self.embed_pending.lock();
                if memory.embedding_status == EmbeddingStatus::Pending
                    && memory.status != Status::Deleted
                {
                    queue.insert(memory.id);
                } else {
                    queue.remove(&memory.id);
                }
            }
            Op::Purge { id, .. } => {
                self.search.remove(id);
                self.forget_in_spaces(id);
                self.embed_pending.lock().remove(id);
                self.track_expiry(id, None);
                self.accesses_since_move.lock().remove(id);
            }
            Op::Access(deltas) => self.count_accesses_since_move(deltas),
            Op::ColdSeal { memories, .. } => {
                let mut hits = self.accesses_since_move.lock();
                for (m, from) in memories {
                    // From warm only the tier changes; from working the text is indexed anew.
                    if *from != Tier::Warm || !self.search.mark_cold(&m.id) {
                        self.search.put(m);
                    }
                    hits.remove(&m.id);
                }
            }
            Op::ColdCompact { .. } => {}
            Op::SpaceVector {
                space, id, vector, ..
            } => self.apply_space_vector(*space, id, vector),
            Op::DropOwnVectors { space, model } => self.apply_drop_own_vectors(*space, model),
        }
        if let Op::Put { memory, kind, .. } = op {
            if *kind != PutKind::Embed {
                self.accesses_since_move.lock().remove(&memory.id);
            }
        }
    }

    /// Counts accesses to warm and cold memories; one used `promote_after_accesses` times since
    /// its last move is queued for promotion.
    ///
    /// Accesses are logged up to `storage.access_flush_interval` after they happen, so a delta
    /// can name a memory purged meanwhile (or one that is not active any more): counting it
    /// would keep an entry no purge removes again, one per such memory for the life of the
    /// process. Only active warm memories (in the search attributes) and cold ones count.
    pub(super) fn count_accesses_since_move(&self, deltas: &[AccessDelta]) {
        let needed = self.config.migration.promote_after_accesses;
        if needed == 0 {
            return;
        }
        // One lock at a time: the attributes, then the cold tier's locations.
        let warm: Vec<bool> = {
            let attrs = self.search.attrs.read();
            deltas
                .iter()
                .map(|d| attrs.by_id.get(&d.id).is_some_and(|a| a.tier == Tier::Warm))
                .collect()
        };
        let counted: Vec<&AccessDelta> = deltas
            .iter()
            .zip(warm)
            .filter(|(d, warm)| *warm || self.cold.contains(&d.id))
            .map(|(d, _)| d)
            .collect();
        if counted.is_empty() {
            return;
        }
        let mut hits = self.accesses_since_move.lock();
        let mut promote = Vec::new();
        for d in counted {
            let n = hits.entry(d.id).or_default();
            *n += d.count;
            if *n >= needed {
                promote.push(d.id);
            }
        }
        drop(hits);
        if !promote.is_empty() {
            self.promote.lock().extend(promote);
        }
    }

    pub(super) fn track_expiry(&self, id: &Uuid, at: Option<i64>) {
        let mut of = self.expiry_of.lock();
        let old = match at {
            Some(at) => of.insert(*id, at),
            None => of.remove(id),
        };
        if old == at {
            return;
        }
        let mut set = self.expiry.lock();
        if let Some(old) = old {
            set.remove(&(old, *id));
        }
        if let Some(at) = at {
            set.insert((at, *id));
        }
    }

    pub(super) fn count_tiers(&self, op: &Op) {
        match op {
            Op::Put {
                memory,
                previous_tier,
                ..
            } => {
                if *previous_tier != Some(memory.tier) {
                    if let Some(p) = previous_tier {
                        self.tier_counts[p.index()].fetch_sub(1, Ordering::Relaxed);
                    }
                    self.tier_counts[memory.tier.index()].fetch_add(1, Ordering::Relaxed);
                }
            }
            Op::Purge { previous_tier, .. } => {
                self.tier_counts[previous_tier.index()].fetch_sub(1, Ordering::Relaxed);
            }
            Op::ColdSeal { memories, .. } => {
                for (_, from) in memories {
                    self.tier_counts[from.index()].fetch_sub(1, Ordering::Relaxed);
                    self.tier_counts[Tier::Cold.index()].fetch_add(1, Ordering::Relaxed);
                }
            }
            Op::Access(_)
            | Op::ColdCompact { .. }
            | Op::SpaceVector { .. }
            | Op::DropOwnVectors { .. } => {}
        }
    }
}

/// Most records applied with one RocksDB write batch.
pub(super) const APPLY_GROUP_RECORDS: usize = 256;

/// A move from another tier into the working tier: it must be in working before it leaves warm.
fn is_promotion(op: &Op) -> bool {
    matches!(op, Op::Put { memory, previous_tier: Some(p), .. } if memory.tier == Tier::Working && *p != Tier::Working)
}

/// End of the group starting at `start`: consecutive records touching distinct ids (so their
/// order within the group does not matter), at most [`APPLY_GROUP_RECORDS`]; a space vector may
/// join the group of its memory's put (it is applied after it, in log order). An access record
/// reads RocksDB and a promotion needs its own ordering, so each is applied alone.
pub(super) fn group_end(ready: &[(Lsn, Op)], start: usize) -> usize {
    if matches!(
        ready[start].1,
        Op::Access(_) | Op::ColdSeal { .. } | Op::ColdCompact { .. } | Op::DropOwnVectors { .. }
    ) || is_promotion(&ready[start].1)
    {
        return start + 1;
    }
    let mut ids = std::collections::HashSet::new();
    let mut end = start;
    while end < ready.len() && end - start < APPLY_GROUP_RECORDS && !is_promotion(&ready[end].1) {
        match &ready[end].1 {
            // A client's vector for a space follows its memory's put, often in the same group:
            // the group is written to RocksDB and indexed in log order, so the put's mark is
            // set before the vector clears it, and its attributes are there for the space.
            Op::SpaceVector { .. } => end += 1,
            op => match op_id(op) {
                Some(id) if ids.insert(id) => end += 1,
                _ => break,
            },
        }
    }
    end.max(start + 1)
}

fn op_id(op: &Op) -> Option<Uuid> {
    match op {
        Op::Put { memory, .. } => Some(memory.id),
        Op::Purge { id, .. } | Op::SpaceVector { id, .. } => Some(*id),
        Op::Access(_)
        | Op::ColdSeal { .. }
        | Op::ColdCompact { .. }
        | Op::DropOwnVectors { .. } => None,
    }
}

/// Every id whose pending image `op` may be the latest of.
fn op_ids(op: &Op) -> Vec<Uuid> {
    match op {
        Op::ColdSeal { memories, .. } => memories.iter().map(|(m, _)| m.id).collect(),
        // A memory's vector in another space is not part of its image.
        Op::SpaceVector { .. } => Vec::new(),
        _ => op_id(op).into_iter().collect(),
    }
}

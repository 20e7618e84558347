//! What the engine reports about itself: counters and stats for metrics and health, the
//! per-tier report, what recovery did, and the offline consistency check.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use engram_wal::Lsn;
use uuid::Uuid;

use super::Inner;
use crate::model::{content_hash, is_valid_namespace, Status, Tier};
use crate::EngineError;

/// Counts of background work the engine did, for metrics (requests are counted by the server).
#[derive(Debug, Default)]
pub struct EngineCounters {
    /// Tier moves, `[from][to]` in working, warm, cold order.
    pub migrations: [[AtomicU64; 3]; 3],
    pub compactions: AtomicU64,
    pub compaction_us: AtomicU64,
    /// Dead cold entries compaction dropped.
    pub compaction_dead_dropped: AtomicU64,
    /// Memories purged because their `expires_at` passed.
    pub memories_expired: AtomicU64,
    pub checkpoints: AtomicU64,
    /// Writes that waited for the graph to catch up (see `search.hnsw_max_lagging`), and how
    /// long they waited in all.
    pub graph_waits: AtomicU64,
    pub graph_wait_us: AtomicU64,
    /// When a wait was last logged (µs since the epoch), so it is said at most once a second.
    pub(super) graph_wait_logged_us: std::sync::atomic::AtomicI64,
}

/// A point-in-time view for health and metrics.
#[derive(Debug, Clone)]
pub struct EngineStats {
    pub working: u64,
    pub warm: u64,
    pub cold: u64,
    pub durable_lsn: Lsn,
    pub applied_lsn: Lsn,
    pub poisoned: bool,
    pub wal_active_segments: usize,
    pub warm_disk_bytes: u64,
    pub working_heap_live_bytes: u64,
    pub cold_segments: usize,
    pub cold_disk_bytes: u64,
    /// Entries of cold segments whose memory has changed or gone since (what compaction drops).
    pub cold_dead_entries: u64,
    /// Free space on the data directory's file system at the last look (at most a second old).
    pub free_disk_bytes: u64,
    /// What RocksDB holds in memory.
    pub warm_memory: crate::tier::warm::WarmMemory,
}

impl EngineCounters {
    pub fn migrated(&self, from: Tier, to: Tier) -> u64 {
        self.migrations[from.index()][to.index()].load(Ordering::Relaxed)
    }

    pub(super) fn count_move(&self, from: Tier, to: Tier, n: u64) {
        self.migrations[from.index()][to.index()].fetch_add(n, Ordering::Relaxed);
    }
}

/// The archived WAL segments of a data directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveUsage {
    pub segments: usize,
    pub bytes: u64,
    /// When the oldest was last written (µs since the Unix epoch): how far back the archive
    /// reaches, to compare with `wal.archive_retention`.
    pub oldest_modified_us: Option<i64>,
}

/// One tier as `GET /api/v1/tiers` reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TierReport {
    pub count: u64,
    pub bytes_on_disk: u64,
    /// Over active memories (0 when none).
    pub avg_importance: f64,
    pub avg_access_count: f64,
    /// Oldest last access (or last change, if never accessed), µs since the epoch.
    pub oldest_access_us: Option<i64>,
}

/// What recovery did at open, for logs.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    pub working_checkpoint_lsn: Lsn,
    pub warm_applied_lsn: Lsn,
    pub records_replayed: u64,
    pub last_lsn: Lsn,
    pub torn_tail: Option<(PathBuf, u64)>,
    pub took: Duration,
}

impl Inner {
    pub(super) fn stats(&self) -> EngineStats {
        let segments = self.cold.segment_stats();
        EngineStats {
            working: self.tier_counts[Tier::Working.index()].load(Ordering::Relaxed),
            warm: self.tier_counts[Tier::Warm.index()].load(Ordering::Relaxed),
            cold: self.tier_counts[Tier::Cold.index()].load(Ordering::Relaxed),
            durable_lsn: self.wal.durable_lsn(),
            applied_lsn: self.applied_lsn.load(Ordering::Acquire),
            poisoned: self.is_poisoned(),
            wal_active_segments: self.wal.active_segments(),
            warm_disk_bytes: self.warm.disk_bytes(),
            working_heap_live_bytes: self.working.heap_usage().0,
            cold_segments: segments.len(),
            cold_disk_bytes: self.cold.disk_bytes(),
            cold_dead_entries: segments
                .iter()
                .map(|s| s.entries.saturating_sub(s.live) as u64)
                .sum(),
            free_disk_bytes: self.free_disk_bytes.load(Ordering::Relaxed),
            warm_memory: self.warm.memory(),
        }
    }

    /// Per tier (working, warm, cold): count, bytes on disk, average importance and access
    /// count, oldest access. Scans the access state of every warm and cold memory.
    pub(super) fn tier_report(&self) -> Result<[TierReport; 3], EngineError> {
        let mut out: [TierReport; 3] = Default::default();
        let mut importance = [(0f64, 0u64); 3];
        for (_, a) in self.search.attrs.read().by_id.iter() {
            let e = &mut importance[a.tier.index()];
            e.0 += f64::from(a.importance);
            e.1 += 1;
        }
        let mut access = [(0u64, 0u64, None::<i64>); 3];
        for s in self.working.eviction_inputs() {
            let e = &mut access[0];
            e.0 += s.access_count;
            e.1 += 1;
            e.2 = Some(e.2.map_or(s.last_used_us, |o: i64| o.min(s.last_used_us)));
        }
        self.warm.scan_access(|id, count, last| {
            let e = &mut access[if self.cold.contains(&id) { 2 } else { 1 }];
            e.0 += count;
            e.1 += 1;
            if let Some(l) = last {
                e.2 = Some(e.2.map_or(l, |o: i64| o.min(l)));
            }
        })?;
        let bytes = [
            self.working.disk_bytes(),
            self.warm.disk_bytes() + self.search.hnsw.file_bytes(),
            self.cold.disk_bytes(),
        ];
        for (i, r) in out.iter_mut().enumerate() {
            r.count = self.tier_counts[i].load(Ordering::Relaxed);
            r.bytes_on_disk = bytes[i];
            r.avg_importance = if importance[i].1 == 0 {
                0.0
            } else {
                importance[i].0 / importance[i].1 as f64
            };
            r.avg_access_count = if access[i].1 == 0 {
                0.0
            } else {
                access[i].0 as f64 / access[i].1 as f64
            };
            r.oldest_access_us = access[i].2;
        }
        Ok(out)
    }

    /// Offline consistency check: every memory in exactly one tier with a content hash that
    /// matches, valid fields, and the namespace and dedup indexes agreeing with the memories in
    /// both directions. One line per problem (empty: consistent). Slot, heap and WAL checksums
    /// were already checked when the engine opened.
    pub(super) fn check(&self) -> Result<Vec<String>, EngineError> {
        let mut problems = Vec::new();
        let mut seen: HashMap<Uuid, (String, [u8; 32], Status)> = HashMap::new();
        let dimensions = self.config.dimensions;
        self.scan_all(None, |m| {
            if seen.contains_key(&m.id) {
                problems.push(format!("memory {} is in more than one tier", m.id));
            }
            if m.content_hash != content_hash(&m.content) {
                problems.push(format!(
                    "memory {}: content hash does not match its content",
                    m.id
                ));
            }
            if !is_valid_namespace(&m.namespace) {
                problems.push(format!(
                    "memory {}: invalid namespace {:?}",
                    m.id, m.namespace
                ));
            }
            if m.embedding
                .as_ref()
                .is_some_and(|e| e.len() != dimensions || e.iter().any(|x| !x.is_finite()))
            {
                problems.push(format!(
                    "memory {}: embedding is not {dimensions} finite numbers",
                    m.id
                ));
            }
            if serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&m.metadata_json)
                .is_err()
            {
                problems.push(format!("memory {}: metadata is not a JSON object", m.id));
            }
            seen.insert(m.id, (m.namespace.clone(), m.content_hash, m.status));
            Ok(())
        })?;
        for (id, seg) in self.cold.locations() {
            if !self.cold.segment_has(seg, &id) {
                problems.push(format!(
                    "cold location of {id} names segment {seg}, which does not hold it"
                ));
            }
        }
        let (ns_index, hash_index) = self.warm.index_entries()?;
        let mut indexed = std::collections::HashSet::new();
        for (ns, id) in &ns_index {
            match seen.get(id) {
                Some((n, _, _)) if n == ns => {}
                Some((n, _, _)) => problems.push(format!(
                    "namespace index puts {id} in {ns:?}, the memory says {n:?}"
                )),
                None => problems.push(format!(
                    "namespace index lists {id} in {ns:?}, but no tier holds it"
                )),
            }
            indexed.insert(*id);
        }
        for id in seen.keys() {
            if !indexed.contains(id) {
                problems.push(format!("memory {id} is missing from the namespace index"));
            }
        }
        let mut claimed = std::collections::HashSet::new();
        for (ns, hash, id) in &hash_index {
            match seen.get(id) {
                Some((n, h, status)) if n == ns && h == hash && *status != Status::Deleted => {
                    claimed.insert(*id);
                }
                _ => problems.push(format!(
                    "dedup index maps {ns:?}/{} to {id}, which does not hold that content",
                    crate::model::hex(hash)
                )),
            }
        }
        for (id, (_, _, status)) in &seen {
            if *status != Status::Deleted && !claimed.contains(id) {
                problems.push(format!("memory {id} is missing from the dedup index"));
            }
        }
        Ok(problems)
    }
}

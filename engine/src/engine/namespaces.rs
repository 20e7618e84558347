//! Whole namespaces: what each holds per tier, deleting all of one, and the purge that leaves
//! no byte of it in the live data (docs/operations.md, "Purging a namespace").

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use engram_wal::Lsn;
use uuid::Uuid;

use super::tiering::Logged;
use super::Inner;
use crate::model::Tier;
use crate::EngineError;

/// What one namespace holds: memories per tier (deleted ones included until purged) and how
/// many of them a search can find.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceCounts {
    pub namespace: String,
    pub working: u64,
    pub warm: u64,
    pub cold: u64,
    /// Active and superseded memories (indexed for search).
    pub searchable: u64,
    /// Bytes the memories take in each tier as stored (see [`Inner::namespace_counts`]).
    pub working_bytes: u64,
    pub warm_bytes: u64,
    pub cold_bytes: u64,
}

impl NamespaceCounts {
    pub fn memories(&self) -> u64 {
        self.working + self.warm + self.cold
    }

    pub fn bytes(&self) -> u64 {
        self.working_bytes + self.warm_bytes + self.cold_bytes
    }
}

/// What a namespace purge did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespacePurge {
    pub namespace: String,
    /// Memories purged (deleted ones included), with every version of each.
    pub purged: usize,
    /// Working-tier heap bytes overwritten with zeros.
    pub working_bytes_zeroed: u64,
    /// Cold segments rewritten without the purged entries, and what replaced them.
    pub cold_segments_rewritten: usize,
    pub cold_segments_written: usize,
    /// The checkpoint after the purge: the active WAL holds no record at or below it.
    pub checkpoint_lsn: Lsn,
    pub took: Duration,
}

/// Ids read from the namespace index per step.
const ID_PAGE: usize = 4096;

/// Rounds of purging: creates into the namespace that race the purge are purged by the next
/// round; a namespace still receiving writes after the last one keeps those.
const PURGE_ROUNDS: usize = 3;

impl Inner {
    /// Every id in `namespace` (deleted memories included until purged), in id order.
    pub(super) fn namespace_ids(&self, namespace: &str) -> Result<Vec<Uuid>, EngineError> {
        let mut ids = Vec::new();
        loop {
            let page = self
                .warm
                .ids_after(Some(namespace), ids.last().copied(), ID_PAGE)?;
            if page.is_empty() {
                return Ok(ids);
            }
            ids.extend(page);
        }
    }

    /// Per namespace, its memories per tier, how many are searchable, and the bytes they take:
    /// a walk of the namespace index (keys only), an in-memory lookup per id, and for the warm
    /// ones a batched lookup of their values' sizes per page. Bytes are each memory's current
    /// image and vector as stored (working: heap entry and vector; warm: record and vector
    /// before RocksDB's compression; cold: its share of its segment's compressed bytes), not
    /// kept versions or indexes.
    pub(super) fn namespace_counts(
        &self,
        only: Option<&str>,
    ) -> Result<Vec<NamespaceCounts>, EngineError> {
        let names = match only {
            Some(ns) => vec![ns.to_owned()],
            None => self.warm.namespaces()?,
        };
        let mut out = Vec::with_capacity(names.len());
        for namespace in names {
            let mut c = NamespaceCounts {
                searchable: self.search.searchable_in(&namespace),
                ..NamespaceCounts::default()
            };
            let mut after = None;
            loop {
                let page = self.warm.ids_after(Some(&namespace), after, ID_PAGE)?;
                let Some(last) = page.last().copied() else {
                    break;
                };
                after = Some(last);
                let mut warm = Vec::new();
                for id in &page {
                    // A memory that moves between the lookups counts where it was found.
                    if let Some(b) = self.working.stored_bytes(id) {
                        c.working += 1;
                        c.working_bytes += b;
                    } else if let Some(b) = self.cold.stored_bytes(id) {
                        c.cold += 1;
                        c.cold_bytes += b;
                    } else {
                        warm.push(*id);
                    }
                }
                c.warm += warm.len() as u64;
                c.warm_bytes += self.warm.stored_bytes(&warm)?.iter().sum::<u64>();
            }
            c.namespace = namespace;
            if only.is_none() || c.memories() > 0 {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// The tier `id` lives in, by the working tier's and the cold tier's in-memory maps
    /// (anything else in the namespace index is warm).
    pub(super) fn tier_of(&self, id: &Uuid) -> Tier {
        if self.working.contains(id) {
            Tier::Working
        } else if self.cold.contains(id) {
            Tier::Cold
        } else {
            Tier::Warm
        }
    }

    /// Deletes every memory of `namespace` that is not deleted (each keeps its versions, as a
    /// single delete does). Returns how many.
    pub(super) fn delete_namespace(
        &self,
        namespace: &str,
        actor: Option<&str>,
    ) -> Result<usize, EngineError> {
        self.check_writable()?;
        crate::validate::actor(actor)?;
        let ids = self.namespace_ids(namespace)?;
        let deleted = self.log_in_chunks(ids, |w, id| {
            match self.log_delete(w, &id, false, actor) {
                Ok((lsn, _)) => Ok(Logged::Yes(lsn)),
                // Deleted already, expired, or purged meanwhile.
                Err(EngineError::NotFound(_)) => Ok(Logged::No),
                Err(e) => Err(e),
            }
        })?;
        self.closing_check()?;
        Ok(deleted)
    }

    /// Purges every memory of `namespace` (deleted ones too) with all their versions, then
    /// removes what still holds their bytes in the live data: the working tier's heap is
    /// compacted and the space it left zeroed, cold segments holding a purged entry are
    /// rewritten, the WAL segment holding the purge is closed and a checkpoint removes every
    /// segment up to it from the active directory (the archive keeps them), and RocksDB is
    /// flushed and compacted to its last level, which drops the deleted keys and values.
    pub(super) fn purge_namespace(&self, namespace: &str) -> Result<NamespacePurge, EngineError> {
        self.check_writable()?;
        let started = Instant::now();
        let mut report = NamespacePurge {
            namespace: namespace.to_owned(),
            ..NamespacePurge::default()
        };
        for _ in 0..PURGE_ROUNDS {
            let ids = self.namespace_ids(namespace)?;
            if ids.is_empty() {
                break;
            }
            report.purged +=
                self.log_in_chunks(ids, |w, id| match self.log_delete(w, &id, true, None) {
                    Ok((lsn, _)) => Ok(Logged::Yes(lsn)),
                    Err(EngineError::NotFound(_)) => Ok(Logged::No),
                    Err(e) => Err(e),
                })?;
            self.closing_check()?;
        }
        let purged_at = started.elapsed();
        report.working_bytes_zeroed = self.working.scrub()?;
        let working_at = started.elapsed();
        let cold = self.compact(true)?;
        report.cold_segments_rewritten = cold.segments_in;
        report.cold_segments_written = cold.segments_out;
        let cold_at = started.elapsed();
        // Close the segment holding the purge, let every record before the close be applied,
        // then checkpoint: the closed segments leave the active directory.
        self.wal.rotate_now()?;
        self.sync_and_apply(self.wal.last_lsn())?;
        self.flush_access()?;
        self.checkpoint()?;
        report.checkpoint_lsn = self.applied_lsn.load(Ordering::Acquire);
        let checkpoint_at = started.elapsed();
        self.warm.compact_all_to_bottom()?;
        report.took = started.elapsed();
        let ms = |d: Duration| d.as_millis() as u64;
        tracing::info!(
            namespace,
            purged = report.purged,
            purge_ms = ms(purged_at),
            working_scrub_ms = ms(working_at - purged_at),
            cold_rewrite_ms = ms(cold_at - working_at),
            checkpoint_ms = ms(checkpoint_at - cold_at),
            rocksdb_compaction_ms = ms(report.took - checkpoint_at),
            took_ms = ms(report.took),
            "namespace purged"
        );
        Ok(report)
    }

    /// An error if the engine began closing (a chunked operation stopped early).
    fn closing_check(&self) -> Result<(), EngineError> {
        if self.stop.load(Ordering::Acquire) {
            return Err(EngineError::Busy("the daemon is shutting down; retry"));
        }
        Ok(())
    }
}

//! Past versions: listing a memory's history, reading a version by number or by moment,
//! reverting, and the retention sweep. Versions are rebuilt from the current image and the
//! warm tier's reverse deltas (`crate::history`), newest first.

use uuid::Uuid;

use super::Inner;
use crate::history::{Version, VersionDelta};
use crate::model::{EmbeddingStatus, Memory, MemoryPatch};
use crate::search::{SearchHit, SearchQuery, SearchResults};
use crate::EngineError;

/// Most versions one history page lists.
pub const MAX_HISTORY_LIMIT: usize = 100;

/// One page of a memory's history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    /// Newest first.
    pub versions: Vec<Version>,
    /// Pass as `before` for the next (older) page; `None` when no older version is kept.
    pub next_before: Option<u64>,
}

/// The kept deltas of `current`, newest first, cut at the first gap (kept versions are a
/// contiguous run below the current one; anything below a gap cannot be rebuilt).
fn contiguous(current: &Memory, mut deltas: Vec<VersionDelta>) -> Vec<VersionDelta> {
    let run = deltas
        .iter()
        .enumerate()
        .take_while(|(i, d)| d.version + 1 + *i as u64 == current.version)
        .count();
    deltas.truncate(run);
    deltas
}

fn not_kept(id: &Uuid, what: String) -> EngineError {
    EngineError::VersionNotFound {
        id: *id,
        detail: what,
    }
}

impl Inner {
    /// What `newer` keeps of the version it replaces: a reverse delta, without the vector when
    /// `history.keep_vectors` is off.
    pub(super) fn replaced(&self, older: &Memory, newer: &Memory) -> VersionDelta {
        let mut delta = VersionDelta::between(older, newer);
        if !self.config.history_keep_vectors {
            delta.strip_embedding();
        }
        delta
    }

    fn current_for_history(&self, id: &Uuid) -> Result<Memory, EngineError> {
        let m = self.read_live(id)?.ok_or(EngineError::NotFound(*id))?;
        Ok(self.with_pending_access(m))
    }

    /// Versions of `id` older than `before` (the current one included when `before` is
    /// `None`), newest first, at most `limit`.
    pub(super) fn history(
        &self,
        id: &Uuid,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, EngineError> {
        let limit = limit.clamp(1, MAX_HISTORY_LIMIT);
        let current = self.current_for_history(id)?;
        let top = before.map_or(current.version, |b| {
            b.saturating_sub(1).min(current.version)
        });
        // Versions top, top-1, … down to `lowest`; the delta below `lowest` tells what
        // `lowest` changed and whether an older page exists.
        let lowest = top.saturating_sub(limit as u64 - 1).max(1);
        let wanted = (current.version - lowest + 1) as usize;
        let deltas = contiguous(&current, self.warm.versions(id, current.version, wanted)?);
        let mut versions = Vec::new();
        let mut m = current.clone();
        let mut valid_to = None;
        let listed = |m: &Memory, valid_to: Option<i64>, versions: &mut Vec<Version>| {
            if m.version <= top && m.version >= lowest {
                versions.push(Version {
                    memory: m.clone(),
                    valid_from_us: m.updated_at_us,
                    valid_to_us: valid_to,
                    changed: None,
                });
            }
        };
        listed(&m, valid_to, &mut versions);
        for d in &deltas {
            // What the version above `d` changed.
            if let Some(v) = versions
                .iter_mut()
                .find(|v| v.memory.version == d.version + 1)
            {
                v.changed = Some(d.changed);
            }
            d.restore(&mut m);
            valid_to = Some(d.valid_to_us);
            listed(&m, valid_to, &mut versions);
        }
        let oldest_kept = deltas.last().map_or(current.version, |d| d.version);
        let next_before = versions
            .last()
            .map(|v| v.memory.version)
            .filter(|v| *v > oldest_kept && *v > 1);
        Ok(HistoryPage {
            versions,
            next_before,
        })
    }

    /// Version `version` of `id`.
    pub(super) fn version(&self, id: &Uuid, version: u64) -> Result<Memory, EngineError> {
        let current = self.current_for_history(id)?;
        if version == current.version {
            return Ok(current);
        }
        if version == 0 || version > current.version {
            return Err(not_kept(
                id,
                format!(
                    "has versions 1 to {}; there is no version {version}",
                    current.version
                ),
            ));
        }
        let wanted = (current.version - version) as usize;
        let deltas = contiguous(&current, self.warm.versions(id, current.version, wanted)?);
        let mut m = current;
        for d in &deltas {
            d.restore(&mut m);
            if m.version == version {
                return Ok(m);
            }
        }
        Err(not_kept(
            id,
            format!(
                "version {version} is no longer kept (history.keep_versions, history.keep_for)"
            ),
        ))
    }

    /// The version of `id` that was current at `at_us` (by the times versions were written).
    pub(super) fn as_of(&self, id: &Uuid, at_us: i64) -> Result<Memory, EngineError> {
        let current = self.current_for_history(id)?;
        if current.updated_at_us <= at_us {
            return Ok(current);
        }
        let wanted = current.version as usize;
        let deltas = contiguous(&current, self.warm.versions(id, current.version, wanted)?);
        let mut m = current;
        for d in &deltas {
            d.restore(&mut m);
            if d.valid_from_us <= at_us {
                return Ok(m);
            }
        }
        Err(not_kept(
            id,
            if m.version == 1 {
                "did not exist at that moment (its first version was written later)".to_owned()
            } else {
                format!(
                    "has no version kept from that moment: the oldest kept, {}, was written later",
                    m.version
                )
            },
        ))
    }

    /// Makes a new version equal to version `version` (history is never rewritten): its
    /// content, vector, importance, metadata, tags, status, parent and expiry. The current
    /// version, when already equal, is returned as it is.
    pub(super) fn revert(
        &self,
        id: &Uuid,
        version: u64,
        actor: Option<String>,
    ) -> Result<Memory, EngineError> {
        // The target is rebuilt from applied state and logged under the writer lock only if no
        // other version was made meanwhile; a concurrent update makes it try again.
        crate::validate::actor(actor.as_deref())?;
        for _ in 0..50 {
            let applied = self.current_for_history(id)?.version;
            let target = self.version(id, version)?;
            let patch = MemoryPatch {
                content: Some(target.content.clone()),
                embedding: (target.embedding_status == EmbeddingStatus::Ready)
                    .then(|| target.embedding.clone()),
                importance: Some(target.importance),
                metadata_json: Some(target.metadata_json.clone()),
                tags: Some(target.tags.clone()),
                status: Some(target.status),
                tier: None,
                parent_id: Some(target.parent_id),
                expires_at_us: Some(target.expires_at_us),
                superseded_by: Some(target.superseded_by),
                actor: actor.clone(),
            };
            let memory = {
                let mut w = self.writer.lock();
                match self.current(&w, id)? {
                    Some(m) if m.version == applied => {}
                    Some(_) => {
                        // A newer version is logged and not applied yet: let it land.
                        drop(w);
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        continue;
                    }
                    None => return Err(EngineError::NotFound(*id)),
                }
                self.log_update(&mut w, id, patch)?
            };
            self.sync_and_apply(memory.lsn)?;
            return Ok(memory);
        }
        Err(EngineError::Busy(
            "the memory kept changing while reverting; retry",
        ))
    }

    /// `q` over the namespace as it was at `at_us`: every memory of the namespace (deleted and
    /// superseded ones too, since they may have been current then) rewound to its version of
    /// that moment and scored exactly (`search::past`), holding a few dozen bytes per memory;
    /// the hits returned are read again. Reads every memory of the namespace and the versions
    /// of those changed since; counts no access.
    pub(super) fn search_past(
        &self,
        q: &SearchQuery,
        at_us: i64,
    ) -> Result<SearchResults, EngineError> {
        let mut ranker = crate::search::past::Ranker::new(q, &self.search.analyzer, at_us);
        let mut after = None;
        loop {
            let ids = self.warm.ids_after(Some(&q.namespace), after, 1024)?;
            let Some(last) = ids.last().copied() else {
                break;
            };
            after = Some(last);
            for id in ids {
                if let Some(past) = self.read_as_of(&id, at_us)? {
                    // Without own vectors, a version is ranked by the active space's vector
                    // of its content, if the space has one.
                    ranker.add(&self.present_version(past, false)?);
                }
            }
        }
        let (ranked, total_count) = ranker.rank();
        let mut hits = Vec::with_capacity(q.limit.min(ranked.len()));
        for r in ranked.into_iter().skip(q.offset).take(q.limit) {
            // Gone since (purged between the scan and now): left out.
            let Some(memory) = self.read_as_of(&r.id, at_us)? else {
                continue;
            };
            hits.push(SearchHit {
                distance: r.explanation.similarity.map(|s| 1.0 - s),
                score: r.score,
                explanation: r.explanation,
                memory,
            });
        }
        Ok(SearchResults { hits, total_count })
    }

    /// `id` as it was at `at_us` (`None`: unknown, not written yet then, or that version is no
    /// longer kept).
    fn read_as_of(&self, id: &Uuid, at_us: i64) -> Result<Option<Memory>, EngineError> {
        match self.read(id)? {
            Some(m) => self.rewind(m, at_us),
            None => Ok(None),
        }
    }

    /// `current` as it was at `at_us` (`None`: not written yet then, or that version is no
    /// longer kept).
    fn rewind(&self, current: Memory, at_us: i64) -> Result<Option<Memory>, EngineError> {
        if current.updated_at_us <= at_us {
            return Ok(Some(current));
        }
        let deltas = contiguous(
            &current,
            self.warm
                .versions(&current.id, current.version, current.version as usize)?,
        );
        let mut m = current;
        for d in &deltas {
            d.restore(&mut m);
            if d.valid_from_us <= at_us {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    /// Removes versions past `history.keep_versions` and `history.keep_for`.
    pub(super) fn sweep_history(&self) -> Result<(), EngineError> {
        let before = self.config.history_keep_for.map(|d| {
            self.now_us()
                .saturating_sub(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        });
        let report = self
            .warm
            .sweep_history(self.config.history_keep_versions, before)?;
        if report.versions_removed > 0 {
            tracing::info!(
                removed = report.versions_removed,
                kept = report.versions_kept,
                "history retention"
            );
        }
        Ok(())
    }
}

//! A namespace out and in while the store serves. Export (`GET /api/v1/namespaces/{ns}/export`):
//! every memory with its kept past versions, read by the namespace index, not by a walk of the
//! whole store. Import: each exported memory logged as one `Put` carrying the deltas of all its
//! kept versions, under the writer lock like any write. The lines' format is `crate::transfer`'s.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::writer::WriterState;
use super::Inner;
use crate::history::VersionDelta;
use crate::model::{content_hash, EmbeddingStatus, Memory, SegmentId, Status, Tier};
use crate::transfer::Exported;
use crate::validate;
use crate::EngineError;

/// Ids read from the working and warm tiers per step (one batched RocksDB lookup).
const EXPORT_CHUNK: usize = 512;

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportCount {
    pub memories: u64,
    /// Past versions, inside the memories' lines.
    pub versions: u64,
}

/// An imported memory as stored, and whether it replaced one of the same id.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedAs {
    pub memory: Memory,
    pub replaced: bool,
}

impl Inner {
    /// Stores memories exactly as given (id, versions and their past, timestamps, tier,
    /// status, access counts) with one group commit: the other half of an export. One result
    /// per input. Content a namespace already holds is refused (`Duplicate`); so is an id that
    /// exists already (`IdExists`), unless `replace` and it is in the same namespace: then the
    /// stored memory is purged with its versions and the imported one takes its place.
    pub(super) fn import_batch(
        &self,
        items: Vec<Exported>,
        replace: bool,
    ) -> Vec<Result<ImportedAs, EngineError>> {
        if let Err(e) = self.check_batch_size(items.len()) {
            return vec![Err(e)];
        }
        self.log_batch(items, |inner, w, item| inner.log_import(w, item, replace))
    }

    pub(super) fn log_import(
        &self,
        w: &mut WriterState,
        item: Exported,
        replace: bool,
    ) -> Result<ImportedAs, EngineError> {
        let Exported {
            mut memory,
            mut versions,
        } = item;
        // Without own vectors, the memory's vector is the active space's (checked against its
        // dimensions, logged after the memory), and past versions keep none.
        let space_vector = if self.own_vectors_dropped() {
            for v in &mut versions {
                super::own::strip(v);
            }
            let vector = self.take_client_vector(&mut memory.embedding)?;
            super::own::strip(&mut memory);
            vector
        } else {
            None
        };
        validate::new_memory(
            self.config.dimensions,
            &memory.namespace,
            &memory.content,
            memory.embedding.as_deref(),
            memory.importance,
            &memory.metadata_json,
            &memory.tags,
        )?;
        if memory.content_hash != content_hash(&memory.content) {
            return Err(EngineError::Invalid {
                field: "content_hash",
                message: "does not match the content".to_owned(),
            });
        }
        let history = self.imported_history(&memory, versions)?;
        let existing = self.current(w, &memory.id)?;
        if let Some(e) = &existing {
            // Never across namespaces: a key allowed into this one may not erase another's.
            if !replace || e.namespace != memory.namespace {
                return Err(EngineError::IdExists(memory.id));
            }
        }
        if memory.status != Status::Deleted {
            if let Some(holder) =
                self.live_hash_holder(w, &memory.namespace, &memory.content_hash)?
            {
                if holder != memory.id {
                    return Err(EngineError::Duplicate { existing: holder });
                }
            }
        }
        let replaced = existing.is_some();
        if replaced {
            self.log_delete(w, &memory.id, true, None)?;
        }
        if memory.embedding.is_some() {
            memory.embedding_status = EmbeddingStatus::Ready;
        } else if memory.embedding_status == EmbeddingStatus::Ready {
            memory.embedding_status = self.initial_embedding_status(false);
        }
        if memory.tier == Tier::Cold || (memory.tier == Tier::Working && !self.make_room(w, 1)?) {
            memory.tier = Tier::Warm;
        }
        let memory = self.log_new(w, memory, history)?;
        if let Some(vector) = space_vector {
            self.log_client_vector(w, &memory, vector)?;
        }
        Ok(ImportedAs { memory, replaced })
    }

    /// The deltas that rebuild an imported memory's past `versions` (oldest first) from it:
    /// each must be one version below the next, no later than it, and a valid memory of this
    /// store. Only the newest `history.keep_versions` are kept.
    fn imported_history(
        &self,
        memory: &Memory,
        mut versions: Vec<Memory>,
    ) -> Result<Vec<VersionDelta>, EngineError> {
        let bad = |message: String| EngineError::Invalid {
            field: "versions",
            message,
        };
        let keep = usize::try_from(self.config.history_keep_versions).unwrap_or(usize::MAX);
        if versions.len() > keep {
            versions.drain(..versions.len() - keep);
        }
        for v in &mut versions {
            validate::new_memory(
                self.config.dimensions,
                &memory.namespace,
                &v.content,
                v.embedding.as_deref(),
                v.importance,
                &v.metadata_json,
                &v.tags,
            )?;
            // What is not versioned is the memory's own.
            v.id = memory.id;
            v.namespace.clone_from(&memory.namespace);
            v.created_at_us = memory.created_at_us;
            v.tier = memory.tier;
            v.access_count = memory.access_count;
            v.last_accessed_at_us = memory.last_accessed_at_us;
        }
        let mut deltas = Vec::with_capacity(versions.len());
        for (i, older) in versions.iter().enumerate() {
            let newer = versions.get(i + 1).unwrap_or(memory);
            if older.version + 1 != newer.version || older.version == 0 {
                return Err(bad(format!(
                    "version {} is followed by {}: versions run one by one up to the memory's",
                    older.version, newer.version
                )));
            }
            if older.updated_at_us > newer.updated_at_us {
                return Err(bad(format!(
                    "version {} was written after version {}",
                    older.version, newer.version
                )));
            }
            deltas.push(self.replaced(older, newer));
        }
        Ok(deltas)
    }

    /// The kept versions of `current` before it, oldest first (rebuilt from the warm tier's
    /// deltas; a gap ends them, as in `history`).
    pub(super) fn past_versions(&self, current: &Memory) -> Result<Vec<Memory>, EngineError> {
        if current.version <= 1 {
            return Ok(Vec::new());
        }
        let wanted = usize::try_from(current.version - 1).unwrap_or(usize::MAX);
        let deltas = self.warm.versions(&current.id, current.version, wanted)?;
        let mut out = Vec::with_capacity(deltas.len());
        let mut m = current.clone();
        for (i, d) in deltas.iter().enumerate() {
            if d.version + 1 + i as u64 != current.version {
                break;
            }
            d.restore(&mut m);
            out.push(m.clone());
        }
        out.reverse();
        Ok(out)
    }

    /// Calls `f` once for every memory of `namespace` (every status), with its past versions.
    /// Ids come from the namespace index, taken at the start: a memory created later is left
    /// out, one purged meanwhile is skipped, and one moving between tiers is read where it
    /// lands (each exactly once). Working and warm memories are read in id order, batch by
    /// batch; cold ones last, a segment at a time.
    pub(super) fn export_namespace(
        &self,
        namespace: &str,
        mut f: impl FnMut(Exported) -> Result<(), EngineError>,
    ) -> Result<ExportCount, EngineError> {
        let mut count = ExportCount::default();
        let mut emit = |m: Memory, count: &mut ExportCount| -> Result<(), EngineError> {
            let m = self.with_pending_access(m);
            let versions = self.past_versions(&m)?;
            count.memories += 1;
            count.versions += versions.len() as u64;
            f(Exported {
                memory: m,
                versions,
            })
        };
        let ids = self.namespace_ids(namespace)?;
        let mut cold: HashMap<SegmentId, HashSet<Uuid>> = HashMap::new();
        let mut warm_ids = Vec::with_capacity(EXPORT_CHUNK);
        for chunk in ids.chunks(EXPORT_CHUNK) {
            warm_ids.clear();
            for id in chunk {
                match self.tier_of(id) {
                    Tier::Working => match self.working.get(id)? {
                        Some(m) => emit(m, &mut count)?,
                        None => warm_ids.push(*id),
                    },
                    Tier::Cold => match self.cold.location(id) {
                        Some(seg) => {
                            cold.entry(seg).or_default().insert(*id);
                        }
                        None => warm_ids.push(*id),
                    },
                    Tier::Warm => warm_ids.push(*id),
                }
            }
            for (id, m) in warm_ids.iter().zip(self.warm.get_many(&warm_ids)?) {
                match m {
                    Some(m) => emit(m, &mut count)?,
                    // Moved since the look: read it wherever it is now (or purged).
                    None => {
                        if let Some(m) = self.read(id)? {
                            emit(m, &mut count)?;
                        }
                    }
                }
            }
        }
        let mut segments: Vec<SegmentId> = cold.keys().copied().collect();
        segments.sort_unstable();
        for seg in segments {
            let mut want = cold.remove(&seg).unwrap_or_default();
            self.cold.scan_some(seg, &want.clone(), |mut m| {
                want.remove(&m.id);
                if let Some((n, last)) = self.warm.access(&m.id)? {
                    m.access_count = n;
                    m.last_accessed_at_us = last;
                }
                emit(m, &mut count)
            })?;
            // Left cold (or compacted into another segment) since the look.
            let mut rest: Vec<Uuid> = want.into_iter().collect();
            rest.sort_unstable();
            for id in rest {
                if let Some(m) = self.read(&id)? {
                    emit(m, &mut count)?;
                }
            }
        }
        Ok(count)
    }
}

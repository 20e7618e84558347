//! Vector spaces beside the store's own: what an embedding-model migration builds while the
//! store goes on serving from its current vectors.
//!
//! A space has its own vectors (RocksDB rows, see `tier::warm::space`), its own HNSW graph
//! (`spaces/<id>/`, rebuilt from the rows when missing) and its own dimensions. Its worker (the
//! server's, which owns the embedder) asks [`Inner::space_work`] for memories to embed — first
//! those changed since the space was registered (marked dirty by the apply batch of the change),
//! then the next stretch of a pass over every stored memory — and hands the vectors back to
//! [`Inner::store_space_vectors`]. Rows name the content they embed, so a crash, a restart or a
//! change racing the worker only means the worker looks again; a space is caught up when its
//! pass is done and nothing is marked. A space search ranks only that space's vectors.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

use super::Inner;
use crate::idhash::IdMap;
use crate::model::{Memory, MAX_DIMENSIONS};
use crate::search::hnsw::Hnsw;
use crate::tier::warm::space::SpaceRecord;
use crate::EngineError;

/// Spaces that may exist at once: each has a worker and a graph in memory.
pub const MAX_SPACES: usize = 4;

/// One open space.
pub(crate) struct Space {
    record: Mutex<SpaceRecord>,
    hnsw: Hnsw,
    /// id → checksum of the vector its row holds.
    rows: RwLock<IdMap<Uuid, u32>>,
    /// The rows' vectors as i8 codes, for scoring a namespace's or a tag's candidates.
    codes: RwLock<crate::search::WarmCodes>,
    /// Where the pass over every stored memory has got to (a namespace-index key), and whether
    /// it reached the end since the space was opened.
    pass: Mutex<(Vec<u8>, bool)>,
    /// The last call for work found none after the pass ended: with no dirty mark left, every
    /// searchable memory has a current vector (nothing is in flight).
    idle: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Space {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Space")
            .field("id", &self.record.lock().id)
            .finish_non_exhaustive()
    }
}

/// The open spaces of a store.
pub(crate) type Spaces = RwLock<BTreeMap<u32, Arc<Space>>>;

/// What a space holds and how far its worker has got.
#[derive(Debug, Clone, PartialEq)]
pub struct SpaceInfo {
    pub id: u32,
    pub dimensions: u32,
    pub descriptor: String,
    pub paused: bool,
    pub created_at_us: i64,
    /// When a full pass first found nothing left to embed.
    pub backfilled_at_us: Option<i64>,
    /// Memories with a vector in the space (current or not).
    pub vectors: u64,
    /// Memories changed since their vector was computed, or not yet looked at again.
    pub dirty: u64,
    /// Memories a search can find (what the space should cover).
    pub searchable: u64,
    /// Vectors in the space's graph; the rest are scanned exactly.
    pub indexed: u64,
    /// The pass over every memory is done and nothing is marked: every searchable memory has
    /// a vector of its current content.
    pub caught_up: bool,
    /// The store's searches rank this space's vectors.
    pub active: bool,
}

/// A memory whose content the worker should embed into a space.
#[derive(Debug, Clone, PartialEq)]
pub struct SpaceJob {
    pub id: Uuid,
    pub content: String,
    pub content_hash: [u8; 32],
    /// The dirty mark this job answers (`None`: the pass found it).
    mark: Option<u64>,
}

/// A query vector must have the space's dimensions.
fn check_query(space: &Space, query: &[f32]) -> Result<(), EngineError> {
    let dimensions = space.record.lock().dimensions as usize;
    crate::validate::embedding(query, dimensions).map_err(|e| match e {
        EngineError::Invalid { message, .. } => EngineError::Invalid {
            field: "query_embedding",
            message: message.replace("this store uses", "this embedding space uses"),
        },
        other => other,
    })
}

impl Space {
    pub(super) fn id_and_descriptor(&self) -> (u32, String) {
        let r = self.record.lock();
        (r.id, r.descriptor.clone())
    }

    pub(super) fn check_query(&self, query: &[f32]) -> Result<(), EngineError> {
        check_query(self, query)
    }

    /// `vector` is `mid`'s vector in this space now (its row is written).
    fn remember(&self, mid: Uuid, vector: &[f32]) {
        let crc = crate::vector::vector_crc(vector);
        self.rows.write().insert(mid, crc);
        self.codes.write().put(mid, crc, vector);
        self.hnsw.upsert(mid, crc, Arc::from(vector));
    }

    /// `mid` has no vector in this space any more.
    fn forget(&self, mid: &Uuid) {
        if self.rows.write().remove(mid).is_some() {
            let dimensions = self.record.lock().dimensions as usize;
            self.codes.write().remove(mid, dimensions);
            self.hnsw.forget(*mid);
        }
    }
}

fn unknown(id: u32) -> EngineError {
    EngineError::SpaceNotFound(id)
}

/// Opens the spaces `warm` has registered, each with its graph (reconciled against its rows).
/// Also returns the active space's id (0: none; the highest if a crash left two marked).
pub(super) fn open_spaces(
    layout: &crate::layout::DataDir,
    warm: &crate::tier::warm::WarmTier,
    config: &crate::config::EngineConfig,
) -> Result<(Spaces, u32), EngineError> {
    let mut out = BTreeMap::new();
    let mut active = 0;
    for record in warm.space_records()? {
        let id = record.id;
        if record.active {
            active = id;
        }
        out.insert(id, Arc::new(open_space(layout, warm, config, record)?));
    }
    Ok((RwLock::new(out), active))
}

fn open_space(
    layout: &crate::layout::DataDir,
    warm: &crate::tier::warm::WarmTier,
    config: &crate::config::EngineConfig,
    record: SpaceRecord,
) -> Result<Space, EngineError> {
    let hnsw = Hnsw::open(
        &layout.space(record.id),
        record.dimensions as usize,
        &config.search,
    )?;
    let mut crcs = HashMap::new();
    let mut rows = IdMap::default();
    let mut codes = crate::search::WarmCodes::default();
    warm.for_each_space_row(record.id, |id, row| {
        crcs.insert(id, row.crc);
        rows.insert(id, row.crc);
        codes.put(id, row.crc, &row.vector);
    })?;
    hnsw.reconcile(&crcs, |id| {
        Ok(warm.space_row(record.id, id)?.map(|r| r.vector))
    })?;
    Ok(Space {
        record: Mutex::new(record),
        hnsw,
        rows: RwLock::new(rows),
        codes: RwLock::new(codes),
        pass: Mutex::new((Vec::new(), false)),
        idle: std::sync::atomic::AtomicBool::new(false),
    })
}

impl Inner {
    fn space_of(&self, id: u32) -> Result<Arc<Space>, EngineError> {
        self.spaces
            .read()
            .get(&id)
            .cloned()
            .ok_or_else(|| unknown(id))
    }

    fn space_info(&self, space: &Space) -> Result<SpaceInfo, EngineError> {
        let record = space.record.lock().clone();
        let dirty = self.warm.space_dirty_count(record.id)?;
        let idle = space.idle.load(std::sync::atomic::Ordering::Acquire);
        Ok(SpaceInfo {
            id: record.id,
            dimensions: record.dimensions,
            descriptor: record.descriptor,
            paused: record.paused,
            created_at_us: record.created_at_us,
            backfilled_at_us: record.backfilled_at_us,
            vectors: space.rows.read().len() as u64,
            dirty,
            searchable: self.search.len() as u64,
            indexed: space.hnsw.sizes().0 as u64,
            caught_up: idle && dirty == 0,
            active: record.active,
        })
    }

    /// Registers a new space of `dimensions` (durably) and opens it.
    pub(super) fn create_space(
        &self,
        dimensions: usize,
        descriptor: String,
    ) -> Result<SpaceInfo, EngineError> {
        if !self.search.is_enabled() {
            return Err(EngineError::Config(
                "this store was opened without its search structures (offline)".to_owned(),
            ));
        }
        if dimensions == 0 || dimensions > MAX_DIMENSIONS {
            return Err(EngineError::Invalid {
                field: "dimensions",
                message: format!("must be between 1 and {MAX_DIMENSIONS}, got {dimensions}"),
            });
        }
        // Registered under the apply lock: every change applied after this marks the memory
        // dirty, and every one applied before is in the namespace index the pass walks.
        let _apply = self.apply_lock.lock();
        let mut spaces = self.spaces.write();
        if spaces.len() >= MAX_SPACES {
            return Err(EngineError::Invalid {
                field: "provider",
                message: format!(
                    "at most {MAX_SPACES} embedding migrations may exist at once; drop one first"
                ),
            });
        }
        let id = spaces.keys().next_back().map_or(1, |last| last + 1);
        let record = SpaceRecord {
            id,
            dimensions: dimensions as u32,
            descriptor,
            paused: false,
            created_at_us: self.now_us(),
            backfilled_at_us: None,
            active: false,
        };
        // A graph left by a space of the same id that was dropped is not this one's.
        let dir = self.layout.space(id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
        }
        self.warm.put_space_record(&record)?;
        let space = Arc::new(open_space(&self.layout, &self.warm, &self.config, record)?);
        spaces.insert(id, Arc::clone(&space));
        drop(spaces);
        self.space_info(&space)
    }

    pub(super) fn spaces(&self) -> Result<Vec<SpaceInfo>, EngineError> {
        let all: Vec<Arc<Space>> = self.spaces.read().values().cloned().collect();
        all.iter().map(|s| self.space_info(s)).collect()
    }

    pub(super) fn space(&self, id: u32) -> Result<SpaceInfo, EngineError> {
        let space = self.space_of(id)?;
        self.space_info(&space)
    }

    /// Pauses or resumes a space's worker (durably: a paused space stays paused across a
    /// restart). Changes are still marked while it is paused.
    pub(super) fn set_space_paused(&self, id: u32, paused: bool) -> Result<SpaceInfo, EngineError> {
        let space = self.space_of(id)?;
        if paused && space.record.lock().active {
            return Err(EngineError::SpaceConflict {
                id,
                code: "MIGRATION_ACTIVE",
                message: "is active: searches need it to follow changes; deactivate it first"
                    .to_owned(),
            });
        }
        let record = {
            let mut r = space.record.lock();
            r.paused = paused;
            r.clone()
        };
        self.warm.put_space_record(&record)?;
        self.space_info(&space)
    }

    /// Removes a space: its rows, marks, record and graph.
    pub(super) fn drop_space(&self, id: u32) -> Result<(), EngineError> {
        if self.space_of(id)?.record.lock().active {
            return Err(EngineError::SpaceConflict {
                id,
                code: "MIGRATION_ACTIVE",
                message: "is active: searches rank its vectors; deactivate it first".to_owned(),
            });
        }
        let space = {
            let _apply = self.apply_lock.lock();
            let space = self.spaces.write().remove(&id).ok_or_else(|| unknown(id))?;
            self.warm.drop_space(id)?;
            space
        };
        self.warm.compact_space(id);
        if let Err(e) = space.hnsw.close() {
            tracing::warn!(space = id, error = %e, "closing a dropped space's graph failed");
        }
        drop(space);
        let dir = self.layout.space(id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
        }
        Ok(())
    }

    /// Up to `max` memories to embed into space `id`: the ones marked dirty first, then the
    /// next stretch of the pass over every stored memory. Marks that need no vector (the memory
    /// is gone, not searchable, or its row already embeds its content) are settled here. An
    /// empty answer means the space is caught up (or paused).
    pub(super) fn space_work(&self, id: u32, max: usize) -> Result<Vec<SpaceJob>, EngineError> {
        let space = self.space_of(id)?;
        if space.record.lock().paused || max == 0 {
            return Ok(Vec::new());
        }
        let mut jobs = Vec::new();
        // Marks whose memory needs nothing: (id, mark, keep its row?).
        let mut settled: Vec<(Uuid, u64, bool)> = Vec::new();
        for (mid, mark) in self.warm.space_dirty(id, max)? {
            match self.space_need(id, &mid)? {
                Need::Embed(content, content_hash) => jobs.push(SpaceJob {
                    id: mid,
                    content,
                    content_hash,
                    mark: Some(mark),
                }),
                Need::Current => settled.push((mid, mark, true)),
                Need::Remove => settled.push((mid, mark, false)),
            }
        }
        if !settled.is_empty() {
            self.settle_marks(&space, id, &settled)?;
        }
        // Marks settled without work leave room: the pass goes on either way, so a steady
        // stream of changes cannot starve it.
        let mut pass = space.pass.lock();
        let mut looked = 0;
        while jobs.len() < max && !pass.1 && looked < 4 * max {
            let want = max - jobs.len();
            let (ids, last) = self.warm.ns_index_after(&pass.0, want)?;
            looked += ids.len();
            if let Some(last) = last {
                pass.0 = last;
            }
            if ids.len() < want {
                pass.1 = true;
            }
            for mid in ids {
                if jobs.iter().any(|j: &SpaceJob| j.id == mid) {
                    continue;
                }
                if let Need::Embed(content, content_hash) = self.space_need(id, &mid)? {
                    jobs.push(SpaceJob {
                        id: mid,
                        content,
                        content_hash,
                        mark: None,
                    });
                }
            }
        }
        let pass_done = pass.1;
        drop(pass);
        space.idle.store(
            pass_done && jobs.is_empty(),
            std::sync::atomic::Ordering::Release,
        );
        if pass_done && jobs.is_empty() {
            let record = {
                let mut r = space.record.lock();
                if r.backfilled_at_us.is_some() {
                    None
                } else {
                    r.backfilled_at_us = Some(self.now_us());
                    Some(r.clone())
                }
            };
            if let Some(record) = record {
                self.warm.put_space_record(&record)?;
            }
        }
        Ok(jobs)
    }

    /// Whether `mid` needs a (new) vector in space `id`.
    fn space_need(&self, id: u32, mid: &Uuid) -> Result<Need, EngineError> {
        let Some(m) = self.read_live(mid)? else {
            return Ok(Need::Remove);
        };
        if !m.status.is_searchable() {
            return Ok(Need::Remove);
        }
        match self.warm.space_row(id, mid)? {
            Some(row) if row.content_hash == m.content_hash => Ok(Need::Current),
            _ => Ok(Need::Embed(m.content, m.content_hash)),
        }
    }

    /// Clears marks that need no vector (keeping or removing the row), unless the memory
    /// changed again meanwhile (its mark moved on).
    fn settle_marks(
        &self,
        space: &Space,
        id: u32,
        settled: &[(Uuid, u64, bool)],
    ) -> Result<(), EngineError> {
        let _apply = self.apply_lock.lock();
        let mut cleared = Vec::new();
        let mut removed = Vec::new();
        for (mid, mark, keep) in settled {
            if self.warm.space_dirty_mark(id, mid)? == Some(*mark) {
                cleared.push(*mid);
                if !keep {
                    removed.push((*mid, None));
                }
            }
        }
        self.warm.write_space_rows(id, &removed, &cleared)?;
        for (mid, _) in &removed {
            space.forget(mid);
        }
        Ok(())
    }

    /// Stores the vectors the worker computed for `jobs` (one per job, in order). A job's mark
    /// is cleared only if the memory did not change again meanwhile; a memory that stopped
    /// being searchable meanwhile gets no row.
    pub(super) fn store_space_vectors(
        &self,
        id: u32,
        jobs: &[SpaceJob],
        vectors: Vec<Vec<f32>>,
    ) -> Result<usize, EngineError> {
        let space = self.space_of(id)?;
        let dimensions = space.record.lock().dimensions as usize;
        if vectors.len() != jobs.len() {
            return Err(EngineError::Invalid {
                field: "vectors",
                message: format!("{} vectors for {} memories", vectors.len(), jobs.len()),
            });
        }
        for v in &vectors {
            crate::validate::embedding(v, dimensions)?;
        }
        let _apply = self.apply_lock.lock();
        let mut rows = Vec::with_capacity(jobs.len());
        let mut cleared = Vec::new();
        // A client's vector (an `Op::SpaceVector`) may have settled a job meanwhile: it clears
        // the mark a job answers, or writes the row a pass job would. It is kept, not replaced.
        let mut settled = Vec::with_capacity(jobs.len());
        let pass_jobs: Vec<Uuid> = jobs
            .iter()
            .filter(|j| j.mark.is_none())
            .map(|j| j.id)
            .collect();
        let mut stored_rows = self.warm.space_rows(id, &pass_jobs)?.into_iter();
        for job in jobs {
            let now = match job.mark {
                Some(mark) => {
                    let current = self.warm.space_dirty_mark(id, &job.id)?;
                    if current == Some(mark) {
                        cleared.push(job.id);
                    }
                    current.is_none()
                }
                None => stored_rows
                    .next()
                    .flatten()
                    .is_some_and(|r| r.content_hash == job.content_hash),
            };
            settled.push(now);
        }
        {
            let attrs = self.search.attrs.read();
            for ((job, v), settled) in jobs.iter().zip(&vectors).zip(settled) {
                if !attrs.by_id.contains_key(&job.id) {
                    rows.push((job.id, None));
                } else if !settled {
                    rows.push((job.id, Some((job.content_hash, v.as_slice()))));
                }
            }
        }
        self.warm.write_space_rows(id, &rows, &cleared)?;
        let mut stored = 0;
        for (mid, row) in rows {
            match row {
                Some((_, v)) => {
                    space.remember(mid, v);
                    stored += 1;
                }
                None => space.forget(&mid),
            }
        }
        Ok(stored)
    }

    /// The `limit` memories of `namespace` nearest `query` in space `id`, with their cosine
    /// similarity, best first. Only memories with a vector in the space can be found; a vector
    /// of content that changed since is still used until the worker replaces it.
    pub(super) fn search_space(
        &self,
        id: u32,
        query: &[f32],
        namespace: &str,
        limit: usize,
        include_superseded: bool,
    ) -> Result<Vec<(Memory, f32)>, EngineError> {
        let space = self.space_of(id)?;
        check_query(&space, query)?;
        let now = self.now_us();
        let scored = {
            let attrs = self.search.attrs.read();
            let accept = |mid: &Uuid| {
                attrs.by_id.get(mid).is_some_and(|a| {
                    &*a.namespace == namespace
                        && (include_superseded || !a.superseded)
                        && a.expires_at_us.is_none_or(|at| at > now)
                })
            };
            let small: Option<Vec<Uuid>> = attrs
                .by_namespace
                .get(namespace)
                .filter(|s| s.len() <= self.search.exact_candidates_max)
                .map(|s| s.iter().copied().collect());
            self.nearest(&space, query, limit, small.as_deref(), &accept)?
        };
        let mut out = Vec::with_capacity(scored.len());
        for (mid, sim) in scored {
            if let Some(m) = self.read_live(&mid)? {
                out.push((m, sim));
            }
        }
        Ok(out)
    }

    /// The `want` memories nearest `query` in `space` that `accept` lets through, with their
    /// exact cosine similarity (f32 rows), best first: `small` (a namespace's or a tag's few
    /// memories) scored one by one, or else the space's graph walked with the filter, plus the
    /// vectors not in it yet. A graph hit counts only if its checksum is the row's.
    pub(super) fn nearest(
        &self,
        space: &Space,
        query: &[f32],
        want: usize,
        small: Option<&[Uuid]>,
        accept: &dyn Fn(&Uuid) -> bool,
    ) -> Result<Vec<(Uuid, f32)>, EngineError> {
        let id = space.record.lock().id;
        let query_norm = crate::vector::norm(query);
        let candidates: Vec<Uuid> = match small {
            Some(ids) => {
                // Scored from the codes in memory; the best four times the page are re-scored
                // in f32 below.
                let unit: Vec<f32> = query
                    .iter()
                    .map(|x| {
                        if query_norm > 0.0 {
                            x / query_norm
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let (q_scale, q_codes) = crate::vector::quantize(&unit);
                let rows = space.rows.read();
                let codes = space.codes.read();
                let mut rough: Vec<(f32, Uuid)> = ids
                    .iter()
                    .filter_map(|m| {
                        let crc = *rows.get(m)?;
                        if !accept(m) {
                            return None;
                        }
                        codes.cosine(m, crc, (q_scale, &q_codes)).map(|s| (s, *m))
                    })
                    .collect();
                let keep = (want * 4).max(40);
                if rough.len() > keep {
                    rough.select_nth_unstable_by(keep, |a, b| b.0.total_cmp(&a.0));
                    rough.truncate(keep);
                }
                rough.into_iter().map(|(_, m)| m).collect()
            }
            None => {
                let rows = space.rows.read();
                let ok = |mid: &Uuid, crc: u32| rows.get(mid) == Some(&crc) && accept(mid);
                let mut ids: Vec<Uuid> = space
                    .hnsw
                    .search(query, space.hnsw.candidates_for(want), ok)?
                    .into_iter()
                    .map(|(mid, _)| mid)
                    .collect();
                space.hnsw.for_each_lagging(|mid, crc, _| {
                    if ok(mid, crc) {
                        ids.push(*mid);
                    }
                });
                ids
            }
        };
        let mut candidates = candidates;
        candidates.sort_unstable();
        candidates.dedup();
        let mut scored: Vec<(Uuid, f32)> = Vec::with_capacity(candidates.len());
        for (mid, row) in candidates
            .iter()
            .zip(self.warm.space_rows(id, &candidates)?)
        {
            if let Some(row) = row {
                let n = crate::vector::norm(&row.vector) * query_norm;
                let sim = if n > 0.0 {
                    crate::vector::dot(query, &row.vector) / n
                } else {
                    0.0
                };
                scored.push((*mid, sim));
            }
        }
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(want);
        Ok(scored)
    }

    /// A vector a write carries while an embedding space is active belongs to that space: it
    /// is checked against the space's dimensions and taken out of the write (the store's own
    /// vector is left to its own embedder), to be logged as an [`Op::SpaceVector`] after it.
    pub(super) fn take_client_vector(
        &self,
        embedding: &mut Option<Vec<f32>>,
    ) -> Result<Option<(u32, Vec<f32>)>, EngineError> {
        if embedding.is_none() {
            return Ok(None);
        }
        let Some(space) = self.active_space() else {
            return self.no_space_for_client_vector();
        };
        let (id, dimensions) = {
            let r = space.record.lock();
            (r.id, r.dimensions as usize)
        };
        let vector = embedding.take().expect("checked above");
        crate::validate::embedding(&vector, dimensions).map_err(|e| match e {
            EngineError::Invalid { message, .. } => EngineError::Invalid {
                field: "embedding",
                message: message.replace(
                    "this store uses",
                    &format!("the active embedding space (migration {id}) uses"),
                ),
            },
            other => other,
        })?;
        Ok(Some((id, vector)))
    }

    /// Logs the vector [`Self::take_client_vector`] took for `memory`, in the same hold of the
    /// writer lock as the memory's own record.
    pub(super) fn log_client_vector(
        &self,
        w: &mut super::writer::WriterState,
        memory: &Memory,
        (space, vector): (u32, Vec<f32>),
    ) -> Result<(), EngineError> {
        self.log(
            w,
            crate::codec::Op::SpaceVector {
                space,
                id: memory.id,
                content_hash: memory.content_hash,
                vector,
            },
        )?;
        Ok(())
    }

    /// A client's vector was applied to space `id`'s rows: the space's search structures
    /// follow (a space dropped meanwhile has none).
    pub(super) fn apply_space_vector(&self, id: u32, mid: &Uuid, vector: &[f32]) {
        let Some(space) = self.spaces.read().get(&id).cloned() else {
            return;
        };
        if !self.search.attrs.read().by_id.contains_key(mid) {
            // Not searchable (deleted or purged since): the row waits for the worker's check.
            return;
        }
        space.remember(*mid, vector);
    }

    pub(super) fn space_vector_current(&self, id: u32, mid: &Uuid) -> Result<bool, EngineError> {
        let space = self.space_of(id)?;
        let has_row = space.rows.read().contains_key(mid);
        Ok(has_row && self.warm.space_dirty_mark(id, mid)?.is_none())
    }

    /// The space the store's searches rank by, if one is active.
    pub(super) fn active_space(&self) -> Option<Arc<Space>> {
        let id = self.active_space.load(Ordering::Acquire);
        (id != 0)
            .then(|| self.spaces.read().get(&id).cloned())
            .flatten()
    }

    /// Makes space `id` the one the store's searches rank by. Only a space that is caught up
    /// and running may be: from this moment on, every search's vector part is its.
    pub(super) fn activate_space(&self, id: u32) -> Result<SpaceInfo, EngineError> {
        let space = self.space_of(id)?;
        let info = self.space_info(&space)?;
        let conflict = |message: String| EngineError::SpaceConflict {
            id,
            code: "MIGRATION_NOT_READY",
            message,
        };
        if info.paused {
            return Err(conflict("is paused; resume it first".to_owned()));
        }
        if !info.caught_up {
            return Err(conflict(format!(
                "is not ready: {} of {} searchable memories have a vector, {} changes pending",
                info.vectors, info.searchable, info.dirty
            )));
        }
        let record = {
            let mut r = space.record.lock();
            r.active = true;
            r.clone()
        };
        self.warm.put_space_record(&record)?;
        let previous = self.active_space.swap(id, Ordering::AcqRel);
        if previous != 0 && previous != id {
            if let Some(old) = self.spaces.read().get(&previous).cloned() {
                let record = {
                    let mut r = old.record.lock();
                    r.active = false;
                    r.clone()
                };
                self.warm.put_space_record(&record)?;
            }
        }
        tracing::info!(
            space = id,
            "embedding space activated: searches rank its vectors"
        );
        self.space_info(&space)
    }

    /// The store's searches rank its own vectors again.
    pub(super) fn deactivate_space(&self, id: u32) -> Result<SpaceInfo, EngineError> {
        let space = self.space_of(id)?;
        let _ = self
            .active_space
            .compare_exchange(id, 0, Ordering::AcqRel, Ordering::Acquire);
        let record = {
            let mut r = space.record.lock();
            r.active = false;
            r.clone()
        };
        self.warm.put_space_record(&record)?;
        self.space_info(&space)
    }

    /// A purged memory leaves every space (its rows went in the purge's own batch).
    pub(super) fn forget_in_spaces(&self, mid: &Uuid) {
        for space in self.spaces.read().values() {
            space.forget(mid);
        }
    }

    /// Saves every space's graph (at close).
    pub(super) fn close_spaces(&self) {
        for (id, space) in self.spaces.read().iter() {
            if let Err(e) = space.hnsw.close() {
                tracing::warn!(space = id, error = %e, "saving a space's graph at close failed; it is rebuilt from its rows at the next open");
            }
        }
    }
}

enum Need {
    /// Its content and the content's hash.
    Embed(String, [u8; 32]),
    Current,
    Remove,
}

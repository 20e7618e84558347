//! Reads: by id across the tiers, lists, search, the scan for exports, the embedding queue,
//! and the batching of access statistics (soft state, logged once a second).

use uuid::Uuid;

use super::writer::EmbedJob;
use super::Inner;
use crate::codec::{AccessDelta, Op};
use crate::model::{EmbeddingStatus, ListFilter, Memory, Status};
use crate::search::{SearchHit, SearchQuery, SearchResults};
use crate::validate;
use crate::EngineError;

/// Ids a single list request may examine before it returns a (possibly short) page with a
/// cursor, so a selective filter cannot turn one request into a full scan.
pub const LIST_SCAN_BUDGET: usize = 10_000;
/// Largest page a list request may ask for.
pub const MAX_LIST_LIMIT: usize = 1000;
/// Access deltas per WAL record; more are split over several records, each logged and applied
/// on its own, so applying a burst of reads' counts never holds up writes for long.
pub const MAX_ACCESS_DELTAS_PER_RECORD: usize = 4096;

/// What one look at the working and warm tiers found.
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per read and matched at once; boxing would allocate per read"
)]
enum Hot {
    /// The memory (without its vector if none was asked for), and whether it has one.
    Found(Memory, bool),
    /// A cold segment holds it.
    Cold,
    Absent,
}

/// A page of a list.
#[derive(Debug, Clone)]
pub struct Page {
    pub memories: Vec<Memory>,
    /// Pass back as `after` for the next page; `None` when the walk is complete.
    pub next_after: Option<Uuid>,
}

impl Inner {
    /// Reads a memory by id without counting an access. An expired memory is gone at once
    /// (`None`), before the background job purges it.
    pub(super) fn get(&self, id: &Uuid) -> Result<Option<Memory>, EngineError> {
        let m = self.read_live(id)?;
        Ok(m.map(|m| self.with_pending_access(m)))
    }

    /// Reads a memory by id and counts an access (soft state: batched into the WAL later).
    pub(super) fn get_and_touch(&self, id: &Uuid) -> Result<Option<Memory>, EngineError> {
        let Some(m) = self.read_live(id)? else {
            return Ok(None);
        };
        self.record_access(&[m.id]);
        Ok(Some(self.with_pending_access(m)))
    }

    /// Reads `id` unless that needs a cold segment: `Ok(None)` then (read it with
    /// [`Inner::get`] on a thread that may block). A working-tier read is a lock-free slot copy
    /// and a warm read a RocksDB point lookup; only a cold read decompresses a block. `touch`
    /// counts an access, as [`Inner::get_and_touch`].
    /// Without `with_vector` a working-tier memory comes without its vector (the slot's header
    /// is all that is copied); the `bool` says whether it has one.
    pub(super) fn get_unless_cold(
        &self,
        id: &Uuid,
        touch: bool,
        with_vector: bool,
    ) -> Result<Option<Option<(Memory, bool)>>, EngineError> {
        // Looked at twice before it means "absent", as in `read`.
        let mut found = None;
        for _ in 0..2 {
            match self.look_up_hot(id, with_vector)? {
                Hot::Found(m, has_embedding) => {
                    found = Some((m, has_embedding));
                    break;
                }
                Hot::Cold => return Ok(None),
                Hot::Absent => {}
            }
        }
        let Some((m, has_embedding)) = found.filter(|(m, _)| !is_expired(m, self.now_us())) else {
            return Ok(Some(None));
        };
        if touch {
            self.record_access(&[m.id]);
        }
        Ok(Some(Some((self.with_pending_access(m), has_embedding))))
    }

    /// Counts an access to each id (soft state).
    pub(super) fn record_access(&self, ids: &[Uuid]) {
        let now = self.now_us();
        let mut pending = self.access_pending.lock();
        for id in ids {
            let e = pending.entry(*id).or_insert((0, now));
            e.0 += 1;
            e.1 = e.1.max(now);
        }
    }

    /// Calls `f` for every stored memory (every status; `namespace` filters): the working tier in
    /// id order, then the warm tier in id order, read sequentially, then the cold tier segment by
    /// segment. For exports: a store being written meanwhile may show a memory that moves
    /// between tiers twice or not at all.
    pub(super) fn scan_all(
        &self,
        namespace: Option<&str>,
        mut f: impl FnMut(Memory) -> Result<(), EngineError>,
    ) -> Result<u64, EngineError> {
        let mut n = 0;
        let mut ids = self.working.ids();
        ids.sort_unstable();
        for id in ids {
            if let Some(m) = self.working.get(&id)? {
                if namespace.is_none_or(|ns| m.namespace == ns) {
                    f(m)?;
                    n += 1;
                }
            }
        }
        self.warm.scan(|m| {
            if namespace.is_none_or(|ns| m.namespace == ns) {
                n += 1;
                f(m)
            } else {
                Ok(())
            }
        })?;
        self.cold.scan(|mut m| {
            if namespace.is_none_or(|ns| m.namespace == ns) {
                if let Some((count, last)) = self.warm.access(&m.id)? {
                    m.access_count = count;
                    m.last_accessed_at_us = last;
                }
                n += 1;
                f(m)
            } else {
                Ok(())
            }
        })?;
        Ok(n)
    }

    /// Ranked recall over the tiers the query names (cold only when asked): vector, text, or
    /// both with importance and recency. Returned memories count as accessed.
    pub(super) fn search(&self, q: &SearchQuery) -> Result<SearchResults, EngineError> {
        if !self.search.is_enabled() {
            return Err(EngineError::Config(
                "this store was opened without its search structures (offline)".to_owned(),
            ));
        }
        // The past is searched with the store's own vectors (unless they were dropped: then
        // with the active space's); the present with the active embedding space's, if any.
        let active = if q.as_of_us.is_none() || self.own_vectors_dropped() {
            self.active_space()
        } else {
            None
        };
        if let Some(e) = &q.embedding {
            match &active {
                Some(space) => space.check_query(e)?,
                None => validate::embedding(e, self.config.dimensions).map_err(|e| match e {
                    EngineError::Invalid { message, .. } => EngineError::Invalid {
                        field: "query_embedding",
                        message,
                    },
                    other => other,
                })?,
            }
        }
        if let Some(at) = q.as_of_us {
            return self.search_past(q, at);
        }
        let read = |id: &Uuid| self.read(id);
        let nearest =
            |query: &[f32], want: usize, small: Option<&[Uuid]>, accept: &dyn Fn(&Uuid) -> bool| {
                let space = active.as_ref().expect("called only with an active space");
                self.nearest(space, query, want, small, accept)
            };
        let ctx = crate::search::query::Ctx {
            index: &self.search,
            warm: &self.warm,
            cold: &self.cold,
            read: &read,
            now_us: self.now_us(),
            space: active
                .is_some()
                .then_some(&nearest as &crate::search::query::SpaceNearest<'_>),
        };
        let (ranked, total_count) = crate::search::query::rank(&ctx, q)?;
        let mut hits = Vec::with_capacity(q.limit.min(ranked.len()));
        let mut ranked = ranked.into_iter().skip(q.offset).peekable();
        // The page's memories are read together (one RocksDB lookup for the warm ones); a
        // memory skipped below is replaced from the next ranks.
        while hits.len() < q.limit && ranked.peek().is_some() {
            let page: Vec<_> = ranked.by_ref().take(q.limit - hits.len()).collect();
            let ids: Vec<Uuid> = page.iter().map(|r| r.id).collect();
            for (r, m) in page.into_iter().zip(self.read_many(&ids)?) {
                // Changed between ranking and this read: skip rather than return it stale.
                let Some(m) = m else {
                    continue;
                };
                let wanted = m.status == Status::Active
                    || (m.status == Status::Superseded && q.include_superseded);
                if !wanted || m.namespace != q.namespace || is_expired(&m, ctx.now_us) {
                    continue;
                }
                hits.push(SearchHit {
                    memory: self.with_pending_access(m),
                    score: r.score,
                    distance: r.similarity.map(|s| 1.0 - s),
                    explanation: r.explanation,
                });
            }
        }
        let ids: Vec<Uuid> = hits.iter().map(|h| h.memory.id).collect();
        self.record_access(&ids);
        Ok(SearchResults { hits, total_count })
    }

    /// Up to `max` memories waiting for the background embedder, oldest first.
    pub(super) fn pending_embeddings(&self, max: usize) -> Result<Vec<EmbedJob>, EngineError> {
        let ids: Vec<Uuid> = self
            .embed_pending
            .lock()
            .iter()
            .take(max)
            .copied()
            .collect();
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            match self.read(&id)? {
                Some(m)
                    if m.embedding_status == EmbeddingStatus::Pending
                        && m.status != Status::Deleted =>
                {
                    jobs.push(EmbedJob {
                        id,
                        content: m.content,
                        content_hash: m.content_hash,
                    })
                }
                // Applied since: no longer waiting.
                _ => {
                    self.embed_pending.lock().remove(&id);
                }
            }
        }
        Ok(jobs)
    }

    /// Applied state of `id`, from whichever tier holds it.
    pub(super) fn read(&self, id: &Uuid) -> Result<Option<Memory>, EngineError> {
        // A move applies into the new tier before leaving the old one, so looking in working,
        // warm, then cold can only miss a memory whose move finished between two lookups: look
        // once more in that case.
        for _ in 0..2 {
            match self.look_up_hot(id, true)? {
                Hot::Found(m, _) => return Ok(Some(m)),
                Hot::Cold => {
                    if let Some(mut m) = self.cold.get(id)? {
                        // Access state lives beside the immutable image.
                        if let Some((count, last)) = self.warm.access(id)? {
                            m.access_count = count;
                            m.last_accessed_at_us = last;
                        }
                        return Ok(Some(m));
                    }
                }
                Hot::Absent => {}
            }
        }
        Ok(None)
    }

    /// [`Inner::read`] of each id, in order: the working tier's slot copies, then one batched
    /// RocksDB lookup for the rest, then `read` for what neither held (cold, or moved between
    /// the two looks).
    pub(super) fn read_many(&self, ids: &[Uuid]) -> Result<Vec<Option<Memory>>, EngineError> {
        let mut found = Vec::with_capacity(ids.len());
        let mut not_working = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let m = self.working.get(id)?;
            if m.is_none() {
                not_working.push(i);
            }
            found.push(m);
        }
        if not_working.is_empty() {
            return Ok(found);
        }
        let warm_ids: Vec<Uuid> = not_working.iter().map(|&i| ids[i]).collect();
        for (i, m) in not_working.into_iter().zip(self.warm.get_many(&warm_ids)?) {
            found[i] = match m {
                Some(m) => Some(m),
                None => self.read(&ids[i])?,
            };
        }
        Ok(found)
    }

    /// One look in the working tier (a lock-free slot copy) and warm (a RocksDB point lookup),
    /// and whether a cold segment holds `id`; no cold read.
    fn look_up_hot(&self, id: &Uuid, with_vector: bool) -> Result<Hot, EngineError> {
        if with_vector {
            if let Some(m) = self.working.get(id)? {
                let has_embedding = m.embedding.is_some();
                return Ok(Hot::Found(m, has_embedding));
            }
        } else if let Some((m, has_embedding)) = self.working.get_without_vector(id)? {
            return Ok(Hot::Found(m, has_embedding));
        }
        if let Some(m) = self.warm.get(id)? {
            let has_embedding = m.embedding.is_some();
            return Ok(Hot::Found(m, has_embedding));
        }
        Ok(if self.cold.contains(id) {
            Hot::Cold
        } else {
            Hot::Absent
        })
    }

    /// A memory that exists and has not expired.
    pub(super) fn read_live(&self, id: &Uuid) -> Result<Option<Memory>, EngineError> {
        Ok(self.read(id)?.filter(|m| !is_expired(m, self.now_us())))
    }

    pub(super) fn with_pending_access(&self, mut m: Memory) -> Memory {
        if let Some((count, last)) = self.access_pending.lock().get(&m.id) {
            m.access_count += count;
            m.last_accessed_at_us = Some(m.last_accessed_at_us.map_or(*last, |l| l.max(*last)));
        }
        m
    }

    /// Logs the batched access statistics (one WAL record per batch; not waited on by readers).
    pub(super) fn flush_access(&self) -> Result<(), EngineError> {
        let drained: Vec<AccessDelta> = {
            let mut pending = self.access_pending.lock();
            if pending.is_empty() {
                return Ok(());
            }
            pending
                .drain()
                .map(|(id, (count, last))| AccessDelta {
                    id,
                    count,
                    last_accessed_at_us: last,
                })
                .collect()
        };
        if self.is_poisoned() {
            return Ok(());
        }
        for chunk in drained.chunks(MAX_ACCESS_DELTAS_PER_RECORD) {
            let lsn = self.log(&mut self.writer.lock(), Op::Access(chunk.to_vec()))?;
            self.sync_and_apply(lsn)?;
        }
        Ok(())
    }

    pub(super) fn list(
        &self,
        filter: &ListFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Page, EngineError> {
        let now = self.now_us();
        let matches = |m: &Memory| {
            (filter.include_deleted || !is_expired(m, now))
                && filter.tier.is_none_or(|t| m.tier == t)
                && match filter.status {
                    Some(s) => m.status == s,
                    None => match m.status {
                        Status::Deleted => filter.include_deleted,
                        Status::Superseded => filter.include_deleted || filter.include_superseded,
                        Status::Active | Status::Archived => true,
                    },
                }
                && filter
                    .tag
                    .as_ref()
                    .is_none_or(|t| m.tags.iter().any(|x| x == t))
                && filter.namespace.as_ref().is_none_or(|n| &m.namespace == n)
        };
        let mut out = Vec::with_capacity(limit.min(256));
        let mut cursor = after;
        let mut scanned = 0usize;
        let chunk = (limit * 2).clamp(64, 2048);
        // Ids in order: the namespace index covers every tier; without a namespace, merge the
        // sorted working-tier ids with the warm records.
        let working_sorted: Vec<Uuid> = if filter.namespace.is_none() {
            let mut ids = self.working.ids();
            ids.sort_unstable();
            ids
        } else {
            Vec::new()
        };
        loop {
            let ids: Vec<Uuid> = match &filter.namespace {
                Some(ns) => self.warm.ids_after(Some(ns), cursor, chunk)?,
                None => {
                    let warm = self.warm.ids_after(None, cursor, chunk)?;
                    let start = match cursor {
                        Some(c) => working_sorted.partition_point(|id| *id <= c),
                        None => 0,
                    };
                    let mut merged: Vec<Uuid> = working_sorted[start..]
                        .iter()
                        .take(chunk)
                        .copied()
                        .chain(warm)
                        .collect();
                    merged.sort_unstable();
                    merged.dedup();
                    merged.truncate(chunk);
                    merged
                }
            };
            if ids.is_empty() {
                return Ok(Page {
                    memories: out,
                    next_after: None,
                });
            }
            for id in ids {
                cursor = Some(id);
                scanned += 1;
                if let Some(m) = self.read(&id)? {
                    if matches(&m) {
                        out.push(self.with_pending_access(m));
                        if out.len() >= limit {
                            return Ok(Page {
                                memories: out,
                                next_after: cursor,
                            });
                        }
                    }
                }
                if scanned >= LIST_SCAN_BUDGET {
                    return Ok(Page {
                        memories: out,
                        next_after: cursor,
                    });
                }
            }
        }
    }
}

/// Whether `m`'s `expires_at` has passed.
pub(super) fn is_expired(m: &Memory, now_us: i64) -> bool {
    m.expires_at_us.is_some_and(|at| at <= now_us)
}

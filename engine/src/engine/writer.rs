//! The write decision: what a create, import, update, delete or embedding result becomes, under
//! the writer lock — validation, dedup against logged-but-unapplied claims, versions, room in
//! the working tier — and its append to the WAL. Durability and apply are `apply`'s.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;

use engram_wal::{Lsn, WalError};
use uuid::Uuid;

use super::read::is_expired;
use super::Inner;
use crate::codec::{self, Op, PutKind};
use crate::history::VersionDelta;
use crate::model::{
    content_hash, EmbeddingStatus, Memory, MemoryPatch, NewMemory, Status, Tier, MAX_BATCH_ITEMS,
};
use crate::validate;
use crate::EngineError;

/// What the writer knows beyond the applied state: records logged but not applied yet.
pub(super) struct WriterState {
    /// Latest logged-but-not-yet-applied image per id (`None`: purged).
    pub(super) pending: crate::idhash::IdMap<Uuid, (Lsn, Option<Memory>)>,
    /// Dedup claims and releases not yet applied: `Some(id)` claimed, `None` released.
    pub(super) pending_hashes: HashMap<(String, [u8; 32]), (Lsn, Option<Uuid>)>,
    /// Working-tier count once everything logged is applied.
    pub(super) working_projected: usize,
    /// Working-tier puts logged and not yet applied, with the heap bytes reserved for each
    /// (see [`crate::tier::working::WorkingTier::reserve`]), in LSN order.
    pub(super) working_reserved: VecDeque<(Lsn, u64)>,
    /// Sum of the bytes in `working_reserved`.
    pub(super) working_reserved_bytes: u64,
    /// Evictions writers made themselves since the last log line about them, and when that
    /// line was written: under a sustained overload every create evicts, and a line each
    /// would be a log write per create.
    pub(super) writer_evictions: WriterEvictions,
    /// The rest of the last victim scan's order (least valuable first), for writers that
    /// evict: the scan reads every slot header, so it runs once per many evictions. Used for
    /// at most [`super::tiering::VICTIMS_FRESH`] after the scan (`victims_at`).
    pub(super) victims: VecDeque<Uuid>,
    pub(super) victims_at: Option<std::time::Instant>,
    /// The LSN of the last record logged: what a write that logged several records (a create
    /// with supersedes, or with a vector for the active embedding space) must wait for.
    pub(super) last_logged: Lsn,
}

/// See [`WriterState::writer_evictions`].
#[derive(Default)]
pub(super) struct WriterEvictions {
    pub(super) times: u64,
    pub(super) moved: u64,
    pub(super) logged_at: Option<std::time::Instant>,
}

/// How old a look at the free disk space may be before a write looks again.
const FREE_SPACE_FRESH_MS: u64 = 20;

/// Outcome of a delete.
#[derive(Debug, Clone, PartialEq)]
pub struct Deleted {
    pub id: Uuid,
    pub deleted_at_us: i64,
    pub purged: bool,
}

/// A memory waiting for the background embedder.
#[derive(Debug, Clone)]
pub struct EmbedJob {
    pub id: Uuid,
    pub content: String,
    pub content_hash: [u8; 32],
}

/// What the embedder made of an [`EmbedJob`].
#[derive(Debug, Clone)]
pub struct EmbedResult {
    pub id: Uuid,
    /// The content hash the vector was computed for.
    pub content_hash: [u8; 32],
    /// The vector, or why there is none.
    pub outcome: Result<Vec<f32>, String>,
    pub model: String,
}

impl Inner {
    /// Stores up to [`MAX_BATCH_ITEMS`] memories with one group commit; one result per input.
    pub(super) fn create_batch(&self, items: Vec<NewMemory>) -> Vec<Result<Memory, EngineError>> {
        if let Err(e) = self.check_batch_size(items.len()) {
            return vec![Err(e)];
        }
        let now = self.now_us();
        self.log_batch(items, |inner, w, item| inner.log_create(w, item, now))
    }

    /// Stores the embedder's results. A result for content that changed since is refused
    /// (`Invalid`, field `content`): the memory stays pending for its new content.
    pub(super) fn set_embeddings(
        &self,
        results: Vec<EmbedResult>,
    ) -> Vec<Result<Memory, EngineError>> {
        self.log_batch(results, Inner::log_embed)
    }

    /// Applies a partial update; `version` + 1.
    pub(super) fn update(&self, id: &Uuid, mut patch: MemoryPatch) -> Result<Memory, EngineError> {
        self.check_writable()?;
        let client_vector = match patch.embedding.as_mut() {
            Some(given) => self.take_client_vector(given)?,
            None => None,
        };
        if client_vector.is_some() {
            // The vector is the active space's; the store's own stays as it is.
            patch.embedding = None;
        }
        self.update_with(id, patch, client_vector)
    }

    fn update_with(
        &self,
        id: &Uuid,
        mut patch: MemoryPatch,
        client_vector: Option<(u32, Vec<f32>)>,
    ) -> Result<Memory, EngineError> {
        validate::patch(&patch, self.config.dimensions)?;
        if patch.tier == Some(Tier::Cold) {
            // Pinning to cold: apply the other fields (if any), then seal the result.
            patch.tier = None;
            let current = if patch == MemoryPatch::default() && client_vector.is_none() {
                self.read_live(id)?.ok_or(EngineError::NotFound(*id))?
            } else {
                self.update_with(id, patch, client_vector)?
            };
            if current.status == Status::Deleted {
                return Err(EngineError::NotFound(*id));
            }
            if current.tier != Tier::Cold {
                let moved = self.seal(vec![current.id], true)?;
                if moved.is_empty() {
                    return Err(EngineError::Busy(
                        "the memory changed while moving to cold; retry",
                    ));
                }
            }
            return self.read_live(id)?.ok_or(EngineError::NotFound(*id));
        }
        let (memory, last) = {
            let mut w = self.writer.lock();
            let memory = self.log_update(&mut w, id, patch)?;
            match client_vector {
                Some(v) => {
                    self.log_client_vector(&mut w, &memory, v)?;
                    (memory, w.last_logged)
                }
                None => {
                    let lsn = memory.lsn;
                    (memory, lsn)
                }
            }
        };
        self.sync_and_apply(last)?;
        Ok(memory)
    }

    /// Soft-deletes (status `deleted`, hidden from lists) or, with `purge`, removes for good.
    /// A soft delete is a version made by `actor`; a purge removes every version.
    pub(super) fn delete(
        &self,
        id: &Uuid,
        purge: bool,
        actor: Option<&str>,
    ) -> Result<Deleted, EngineError> {
        self.check_writable()?;
        validate::actor(actor)?;
        let (lsn, deleted) = {
            let mut w = self.writer.lock();
            self.log_delete(&mut w, id, purge, actor)?
        };
        self.sync_and_apply(lsn)?;
        Ok(deleted)
    }

    pub(super) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire) || self.wal.is_poisoned()
    }

    pub(super) fn poison(&self, error: &EngineError) {
        if !self.poisoned.swap(true, Ordering::AcqRel) {
            tracing::error!(%error, "engine poisoned: refusing writes until restart");
        }
    }

    /// A broken invariant: the engine's state cannot be trusted, so it stops taking writes as
    /// after a failed fsync. Returns the error to report.
    pub(super) fn invariant_failed(&self, detail: String) -> EngineError {
        let error = EngineError::Invariant(detail);
        self.poison(&error);
        error
    }

    pub(super) fn check_writable(&self) -> Result<(), EngineError> {
        if self.is_poisoned() {
            return Err(EngineError::Poisoned);
        }
        let free = self.free_disk_bytes();
        if free < self.config.min_free_disk_bytes {
            return Err(EngineError::StorageFull(format!(
                "{free} bytes free on the data directory's filesystem, below storage.min_free_disk_bytes ({})",
                self.config.min_free_disk_bytes
            )));
        }
        // RocksDB's memtables must flush into that space too: a flush that meets a full disk
        // stops RocksDB, and the write being applied waits for space. Faster ingest makes
        // bigger memtables between checkpoints, so the margin alone did not always cover them.
        let unflushed = self.unflushed_bytes.load(Ordering::Relaxed);
        if free < self.config.min_free_disk_bytes.saturating_add(unflushed) {
            return Err(EngineError::StorageFull(format!(
                "{free} bytes free on the data directory's filesystem, below storage.min_free_disk_bytes ({}) plus the {unflushed} bytes RocksDB's memtables will flush",
                self.config.min_free_disk_bytes
            )));
        }
        if self.ballast_missing.load(Ordering::Acquire) {
            return Err(EngineError::StorageFull(format!(
                "the disk has no room for the store's {} MiB ballast beyond storage.min_free_disk_bytes ({}): it was given to RocksDB or to the start on a full disk, and writes resume once it is allocated again",
                crate::layout::BALLAST_BYTES >> 20,
                self.config.min_free_disk_bytes
            )));
        }
        if !self.warm.writable() {
            return Err(EngineError::StorageFull(
                "RocksDB stopped taking writes when the disk filled up; it resumes by itself once space is free".to_owned(),
            ));
        }
        Ok(())
    }

    /// Free space on the data directory's filesystem, looked up again when the last look is
    /// older than [`FREE_SPACE_FRESH_MS`]: another process can fill a disk in far less than
    /// the background thread's second. (A statvfs costs about a microsecond.)
    pub(super) fn free_disk_bytes(&self) -> u64 {
        let now_ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        let checked = self.free_disk_checked_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(checked) < FREE_SPACE_FRESH_MS {
            return self.free_disk_bytes.load(Ordering::Relaxed);
        }
        self.free_disk_checked_ms.store(now_ms, Ordering::Relaxed);
        let free = self.layout.free_bytes();
        self.free_disk_bytes.store(free, Ordering::Relaxed);
        self.unflushed_bytes
            .store(self.warm.memtable_bytes(), Ordering::Relaxed);
        free
    }

    /// The latest state of `id` as the writer sees it: logged-but-unapplied first.
    pub(super) fn current(
        &self,
        w: &WriterState,
        id: &Uuid,
    ) -> Result<Option<Memory>, EngineError> {
        let mut m = match w.pending.get(id) {
            Some((_, m)) => m.clone(),
            None => self.read(id)?,
        };
        if self.own_vectors_dropped() {
            if let Some(m) = m.as_mut() {
                super::own::strip(m);
            }
        }
        Ok(m)
    }

    /// Who holds `hash` in `namespace`, counting logged-but-unapplied claims and releases.
    pub(super) fn hash_holder(
        &self,
        w: &WriterState,
        namespace: &str,
        hash: &[u8; 32],
    ) -> Result<Option<Uuid>, EngineError> {
        if let Some((_, holder)) = w.pending_hashes.get(&(namespace.to_owned(), *hash)) {
            return Ok(*holder);
        }
        self.warm.find_hash(namespace, hash)
    }

    /// Who holds `hash` in `namespace` and keeps it: a holder already expired (not yet purged by
    /// the background job) is purged here, so its content can be written again at once.
    pub(super) fn live_hash_holder(
        &self,
        w: &mut WriterState,
        namespace: &str,
        hash: &[u8; 32],
    ) -> Result<Option<Uuid>, EngineError> {
        let Some(holder) = self.hash_holder(w, namespace, hash)? else {
            return Ok(None);
        };
        match self.current(w, &holder)? {
            Some(m) if is_expired(&m, self.now_us()) => {
                self.log_delete(w, &holder, true, None)?;
                self.counters
                    .memories_expired
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.hash_holder(w, namespace, hash)
            }
            _ => Ok(Some(holder)),
        }
    }

    /// Appends `op` to the WAL and queues it for apply. The caller holds the writer lock.
    pub(super) fn log(&self, w: &mut WriterState, mut op: Op) -> Result<Lsn, EngineError> {
        self.strip_op(&mut op);
        if let Op::Put { memory, .. } = &mut op {
            // Only a seal puts memories in cold (segments are immutable); callers redirect a
            // changed cold memory to warm themselves, this only guards the invariant.
            debug_assert!(memory.tier != Tier::Cold, "a Put into the cold tier");
            if memory.tier == Tier::Cold {
                memory.tier = Tier::Warm;
            }
        }
        let payload = codec::encode_op(&op);
        // Disk space for applying the record is taken before it is logged: once logged it must
        // apply, and a full disk must refuse the write, not fail it halfway. The image the
        // working tier stores is the memory without its vector, shorter than the record.
        let into_working = matches!(&op, Op::Put { memory, .. } if memory.tier == Tier::Working);
        let heap_bytes = if into_working {
            payload.len() as u64
        } else {
            0
        };
        self.working.reserve(
            w.working_reserved.len() + 1,
            w.working_reserved_bytes + heap_bytes,
        )?;
        self.wal.ensure_spare(payload.len()).map_err(|e| match e {
            WalError::Io { ref source, .. } if crate::fsutil::is_out_of_space(source) => {
                EngineError::StorageFull(format!("no disk space for the next WAL segment: {e}"))
            }
            other => EngineError::from(other),
        })?;
        let (lsn, _) = self.wal.append(&payload).map_err(|e| match e {
            WalError::RecordTooLarge { len } => EngineError::TooLarge {
                field: "body",
                message: format!("the memory encodes to {len} bytes, above the WAL record limit"),
            },
            other => EngineError::from(other),
        })?;
        if into_working {
            w.working_reserved.push_back((lsn, heap_bytes));
            w.working_reserved_bytes += heap_bytes;
        }
        match &mut op {
            Op::Put {
                memory,
                previous_hash,
                ..
            } => {
                memory.lsn = lsn;
                if let Some(h) = previous_hash {
                    if *h != memory.content_hash || memory.status == Status::Deleted {
                        w.pending_hashes
                            .insert((memory.namespace.clone(), *h), (lsn, None));
                    }
                }
                if memory.status != Status::Deleted {
                    w.pending_hashes.insert(
                        (memory.namespace.clone(), memory.content_hash),
                        (lsn, Some(memory.id)),
                    );
                }
                w.pending.insert(memory.id, (lsn, Some(memory.clone())));
            }
            Op::Purge {
                id,
                namespace,
                release_hash,
                ..
            } => {
                if let Some(h) = release_hash {
                    w.pending_hashes
                        .insert((namespace.clone(), *h), (lsn, None));
                }
                w.pending.insert(*id, (lsn, None));
            }
            Op::ColdSeal { memories, .. } => {
                for (m, _) in memories.iter() {
                    w.pending.insert(m.id, (lsn, Some(m.clone())));
                }
            }
            Op::Access(_)
            | Op::ColdCompact { .. }
            | Op::SpaceVector { .. }
            | Op::DropOwnVectors { .. } => {}
        }
        w.last_logged = lsn;
        self.queue.lock().push_back((lsn, op));
        Ok(lsn)
    }

    /// Logs every item under one hold of the writer lock, then makes them durable with one
    /// group commit. One result per item; if the commit fails, every logged item fails with it.
    pub(super) fn log_batch<T, R>(
        &self,
        items: Vec<T>,
        log_one: impl Fn(&Inner, &mut WriterState, T) -> Result<R, EngineError>,
    ) -> Vec<Result<R, EngineError>> {
        let (mut results, last_lsn) = self.log_items(items, log_one);
        if last_lsn > Lsn::ZERO {
            if let Err(e) = self.sync_and_apply(last_lsn) {
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(e.clone());
                }
            }
        }
        results
    }

    /// Logs every item under one hold of the writer lock, without waiting for durability:
    /// one result per item, and the last LSN logged (`ZERO`: none).
    pub(super) fn log_items<T, R>(
        &self,
        items: Vec<T>,
        log_one: impl Fn(&Inner, &mut WriterState, T) -> Result<R, EngineError>,
    ) -> (Vec<Result<R, EngineError>>, Lsn) {
        if let Err(e) = self.check_writable() {
            return (items.iter().map(|_| Err(e.clone())).collect(), Lsn::ZERO);
        }
        let mut results = Vec::with_capacity(items.len());
        let mut w = self.writer.lock();
        let before = w.last_logged;
        for item in items {
            results.push(log_one(self, &mut w, item));
        }
        // Every record logged here, including those an item logs after its own (a superseded
        // memory's update, a vector for the active space), is in the commit waited for.
        let last_lsn = if w.last_logged > before {
            w.last_logged
        } else {
            Lsn::ZERO
        };
        (results, last_lsn)
    }

    /// The checks [`Inner::create_batch`] makes before logging anything.
    pub(super) fn check_batch_size(&self, n: usize) -> Result<(), EngineError> {
        if n > MAX_BATCH_ITEMS {
            return Err(EngineError::Invalid {
                field: "memories",
                message: format!("at most {MAX_BATCH_ITEMS} memories per batch"),
            });
        }
        Ok(())
    }

    pub(super) fn log_create(
        &self,
        w: &mut WriterState,
        mut item: NewMemory,
        now: i64,
    ) -> Result<Memory, EngineError> {
        // With an active embedding space, a vector sent with the memory is that space's.
        let client_vector = self.take_client_vector(&mut item.embedding)?;
        validate::new_memory(
            self.config.dimensions,
            &item.namespace,
            &item.content,
            item.embedding.as_deref(),
            item.importance,
            &item.metadata_json,
            &item.tags,
        )?;
        validate::actor(item.actor.as_deref())?;
        validate::supersedes(&item.supersedes)?;
        let hash = content_hash(&item.content);
        if let Some(existing) = self.live_hash_holder(w, &item.namespace, &hash)? {
            return Err(EngineError::Duplicate { existing });
        }
        let replaced = self.superseded_targets(w, &item.namespace, &item.supersedes)?;
        // A new memory belongs in the working tier; if every memory there is an in-flight write
        // (nothing can be evicted yet), it starts in warm rather than failing.
        let tier = if self.make_room(w, 1)? {
            Tier::Working
        } else {
            Tier::Warm
        };
        let memory = Memory {
            id: Uuid::now_v7(),
            namespace: item.namespace,
            content: item.content,
            content_hash: hash,
            embedding_status: self.initial_embedding_status(item.embedding.is_some()),
            embedding: item.embedding,
            embedding_model: None,
            tier,
            status: Status::Active,
            importance: item.importance,
            access_count: 0,
            last_accessed_at_us: None,
            metadata_json: item.metadata_json,
            tags: item.tags,
            parent_id: item.parent_id,
            created_at_us: item.created_at_us.unwrap_or(now),
            updated_at_us: now,
            expires_at_us: item.expires_at_us,
            version: 1,
            superseded_by: None,
            actor: item.actor.clone(),
            lsn: Lsn::ZERO,
        };
        let created = self.log_new(w, memory, Vec::new())?;
        // In the same hold of the writer lock, so in the create's group commit.
        for id in replaced {
            let patch = MemoryPatch {
                status: Some(Status::Superseded),
                superseded_by: Some(Some(created.id)),
                actor: item.actor.clone(),
                ..MemoryPatch::default()
            };
            self.log_update(w, &id, patch)?;
        }
        if let Some(v) = client_vector {
            self.log_client_vector(w, &created, v)?;
        }
        Ok(created)
    }

    /// The memories a create may supersede: each must exist in `namespace` and not be deleted
    /// (one already superseded is superseded again, by the new memory). Checked before anything
    /// is logged, so a bad id stores nothing.
    fn superseded_targets(
        &self,
        w: &WriterState,
        namespace: &str,
        ids: &[Uuid],
    ) -> Result<Vec<Uuid>, EngineError> {
        let mut out: Vec<Uuid> = Vec::with_capacity(ids.len());
        for id in ids {
            if out.contains(id) {
                continue;
            }
            let current = self
                .current(w, id)?
                .filter(|m| m.status != Status::Deleted && !is_expired(m, self.now_us()));
            match current {
                None => {
                    return Err(EngineError::Invalid {
                        field: "supersedes",
                        message: format!("no memory {id}"),
                    })
                }
                Some(m) if m.namespace != namespace => {
                    return Err(EngineError::Invalid {
                        field: "supersedes",
                        message: format!(
                            "{id} is in namespace {:?}, not {namespace:?}",
                            m.namespace
                        ),
                    })
                }
                Some(_) => out.push(*id),
            }
        }
        Ok(out)
    }

    /// Logs a memory that did not exist before (created or imported) in its tier.
    pub(super) fn log_new(
        &self,
        w: &mut WriterState,
        memory: Memory,
        history: Vec<VersionDelta>,
    ) -> Result<Memory, EngineError> {
        let tier = memory.tier;
        let lsn = self.log(
            w,
            Op::Put {
                kind: PutKind::Create,
                memory: memory.clone(),
                previous_tier: None,
                previous_hash: None,
                history,
            },
        )?;
        self.adjust_projected(w, None, Some(tier));
        Ok(Memory { lsn, ..memory })
    }

    /// A memory stored with a vector is ready; without one it waits for the embedder if there
    /// is one.
    pub(super) fn initial_embedding_status(&self, has_vector: bool) -> EmbeddingStatus {
        if self.own_vectors_dropped() {
            // The active space's worker embeds it; the store keeps no vector of its own.
            EmbeddingStatus::None
        } else if has_vector {
            EmbeddingStatus::Ready
        } else if self.config.auto_embed {
            EmbeddingStatus::Pending
        } else {
            EmbeddingStatus::None
        }
    }

    pub(super) fn log_embed(
        &self,
        w: &mut WriterState,
        r: EmbedResult,
    ) -> Result<Memory, EngineError> {
        let Some(current) = self.current(w, &r.id)? else {
            return Err(EngineError::NotFound(r.id));
        };
        if self.own_vectors_dropped() {
            return Err(EngineError::Invalid {
                field: "embedding",
                message: "the store's own vectors are dropped: an embedding space holds them"
                    .to_owned(),
            });
        }
        if current.content_hash != r.content_hash
            || current.embedding_status != EmbeddingStatus::Pending
            || current.status == Status::Deleted
        {
            return Err(EngineError::Invalid {
                field: "content",
                message: "changed since the embedding was computed".to_owned(),
            });
        }
        let mut next = current.clone();
        match r.outcome {
            Ok(v) => {
                validate::embedding(&v, self.config.dimensions)?;
                next.embedding = Some(v);
                next.embedding_status = EmbeddingStatus::Ready;
                next.embedding_model = Some(r.model);
            }
            Err(reason) => next.embedding_status = EmbeddingStatus::Failed(reason),
        }
        if next.tier == Tier::Cold {
            next.tier = Tier::Warm;
        }
        let lsn = self.log(
            w,
            Op::Put {
                kind: PutKind::Embed,
                memory: next.clone(),
                previous_tier: Some(current.tier),
                previous_hash: Some(current.content_hash),
                history: Vec::new(),
            },
        )?;
        Ok(Memory { lsn, ..next })
    }

    pub(super) fn log_update(
        &self,
        w: &mut WriterState,
        id: &Uuid,
        mut patch: MemoryPatch,
    ) -> Result<Memory, EngineError> {
        let actor = patch.actor.take();
        let Some(current) = self
            .current(w, id)?
            .filter(|m| !is_expired(m, self.now_us()))
        else {
            return Err(EngineError::NotFound(*id));
        };
        if current.status == Status::Deleted && patch.status.is_none() {
            return Err(EngineError::NotFound(*id));
        }
        let mut next = current.clone();
        let applied = patch.apply_to(&mut next);
        if applied.content_changed || applied.vector_given {
            next.embedding_model = None;
            next.embedding_status = self.initial_embedding_status(next.embedding.is_some());
        }
        if next == current {
            // Nothing changes (the same values again): nothing is logged, the version stays.
            return Ok(current);
        }
        // A patch that only names another tier is a move, and a move keeps the version.
        let only_moves = {
            let tier = std::mem::replace(&mut next.tier, current.tier);
            let same = next == current;
            next.tier = tier;
            same
        };
        // A cold segment is immutable: a changed memory leaves it (for warm, unless the patch
        // names a tier). Moving into cold is a seal, done by `Engine::update` after this.
        if next.tier == Tier::Cold {
            next.tier = Tier::Warm;
        }
        let holds_hash = current.status != Status::Deleted;
        let claims_hash = next.status != Status::Deleted;
        if claims_hash && (applied.content_changed || !holds_hash) {
            if let Some(existing) = self.live_hash_holder(w, &next.namespace, &next.content_hash)? {
                if existing != *id {
                    return Err(EngineError::Duplicate { existing });
                }
            }
        }
        if next.tier == Tier::Working && current.tier != Tier::Working && !self.make_room(w, 1)? {
            return Err(EngineError::Busy(
                "the working tier is full of in-flight writes; retry",
            ));
        }
        let mut history = Vec::new();
        if !only_moves {
            next.version = current.version + 1;
            next.updated_at_us = self.now_us().max(current.updated_at_us);
            next.actor = actor;
            history.push(self.replaced(&current, &next));
        }
        let lsn = self.log(
            w,
            Op::Put {
                kind: PutKind::Update,
                memory: next.clone(),
                previous_tier: Some(current.tier),
                previous_hash: holds_hash.then_some(current.content_hash),
                history,
            },
        )?;
        self.adjust_projected(w, Some(current.tier), Some(next.tier));
        Ok(Memory { lsn, ..next })
    }

    pub(super) fn log_delete(
        &self,
        w: &mut WriterState,
        id: &Uuid,
        purge: bool,
        actor: Option<&str>,
    ) -> Result<(Lsn, Deleted), EngineError> {
        let Some(current) = self.current(w, id)? else {
            return Err(EngineError::NotFound(*id));
        };
        if !purge && is_expired(&current, self.now_us()) {
            return Err(EngineError::NotFound(*id));
        }
        let now = self.now_us().max(current.updated_at_us);
        let holds_hash = current.status != Status::Deleted;
        if purge {
            let lsn = self.log(
                w,
                Op::Purge {
                    id: *id,
                    namespace: current.namespace.clone(),
                    release_hash: holds_hash.then_some(current.content_hash),
                    previous_tier: current.tier,
                },
            )?;
            self.adjust_projected(w, Some(current.tier), None);
            return Ok((
                lsn,
                Deleted {
                    id: *id,
                    deleted_at_us: now,
                    purged: true,
                },
            ));
        }
        if current.status == Status::Deleted {
            return Err(EngineError::NotFound(*id));
        }
        let mut next = current.clone();
        next.status = Status::Deleted;
        next.superseded_by = None;
        next.version += 1;
        next.updated_at_us = now;
        next.actor = actor.map(str::to_owned);
        if next.tier == Tier::Cold {
            // Segments are immutable: the deleted state is kept in warm.
            next.tier = Tier::Warm;
        }
        let history = vec![self.replaced(&current, &next)];
        let lsn = self.log(
            w,
            Op::Put {
                kind: PutKind::Update,
                memory: next,
                previous_tier: Some(current.tier),
                previous_hash: Some(current.content_hash),
                history,
            },
        )?;
        Ok((
            lsn,
            Deleted {
                id: *id,
                deleted_at_us: now,
                purged: false,
            },
        ))
    }

    pub(super) fn adjust_projected(
        &self,
        w: &mut WriterState,
        from: Option<Tier>,
        to: Option<Tier>,
    ) {
        if from == Some(Tier::Working) && to != Some(Tier::Working) {
            w.working_projected = w.working_projected.saturating_sub(1);
        }
        if to == Some(Tier::Working) && from != Some(Tier::Working) {
            w.working_projected += 1;
        }
    }
}

//! Dropping the store's own vectors once an embedding space has taken over.
//!
//! After a migration is activated the store's own vectors (in every tier's records, the own
//! graph, the i8 codes, the working tier's vectors) only cost memory and disk. Dropping them
//! is one WAL record, [`Op::DropOwnVectors`], naming the active space; once it is applied:
//!
//! - the own graph, codes and working vectors are emptied, and the search index ignores any
//!   vector put into it;
//! - every record the writer logs from then on is stripped of its own vector ([`strip`]): the
//!   writer's view of a memory ([`Inner::current`]) is stripped, and [`Inner::log`] strips
//!   what it appends (a tier move copies an image);
//! - a sweep on the background thread rewrites every working and warm memory that still holds
//!   an own vector (a `Put` of kind `Embed`, through the WAL, so replay and point-in-time
//!   restore see the same), then every cold segment (a logged `ColdCompact` of the segment
//!   alone; the cold tier writes segments without vectors from the drop on), then the kept
//!   versions' deltas, compacts the `vectors` and `history` column families, and records
//!   that it is done;
//! - reads, exports and as-of searches take a memory's vector from the space
//!   ([`Inner::present`]): the space's row when it embeds the memory's content, else none
//!   (`pending` while the space's worker has not embedded it).
//!
//! Some space stays active for good: the active one cannot be deactivated, paused or dropped,
//! but a later migration may be activated in its place (reads then take its vectors), after
//! which the earlier one can be dropped.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::writer::WriterState;
use super::Inner;
use crate::codec::{Op, PutKind};
use crate::model::{EmbeddingStatus, Memory, SegmentId, Tier};
use crate::tier::warm::space::OwnDropped;
use crate::EngineError;

/// Memories read per step of the sweep.
const SWEEP_BATCH: usize = 512;
/// How long one background tick sweeps before the thread's other jobs run.
const SWEEP_SLICE: Duration = Duration::from_millis(250);

/// Where the sweep after a drop stands.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sweep {
    /// Working-tier memories still to look at (listed when the sweep starts).
    working: Option<Vec<Uuid>>,
    /// The last warm or cold id looked at.
    after: Option<Uuid>,
    /// Cold segments still to rewrite (listed once the warm tier is done).
    cold: Option<Vec<SegmentId>>,
    /// Memories rewritten without their own vector since the daemon started.
    pub stripped: u64,
    /// Cold segments rewritten without them since the daemon started.
    pub segments: u64,
    /// Kept versions rewritten without them since the daemon started.
    pub versions: u64,
}

/// One step of the sweep.
enum Step {
    /// Memories to look at, and the warm id to go on after (`None`: working-tier ones).
    Memories(Vec<Uuid>, Option<Uuid>),
    Segment(SegmentId),
    Done,
}

/// The store's own vectors, as the admin API shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnVectors {
    /// `None`: the store still has them.
    pub dropped: Option<OwnDropped>,
    /// Memories rewritten without their own vector since the daemon started.
    pub stripped: u64,
    /// Cold segments rewritten without them since the daemon started.
    pub segments: u64,
    /// Kept versions rewritten without them since the daemon started.
    pub versions: u64,
}

/// `m` without a vector of the store's own.
pub(super) fn strip(m: &mut Memory) {
    m.embedding = None;
    m.embedding_status = EmbeddingStatus::None;
    m.embedding_model = None;
}

/// The model a space's descriptor names (the server writes it as JSON with a `model`; the
/// descriptor itself if it has none).
fn model_of(descriptor: &str) -> String {
    serde_json::from_str::<serde_json::Value>(descriptor)
        .ok()
        .and_then(|v| v.get("model")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| descriptor.to_owned())
}

/// Whether `m` holds anything of the store's own embedding.
fn holds_own(m: &Memory) -> bool {
    m.embedding.is_some()
        || m.embedding_status != EmbeddingStatus::None
        || m.embedding_model.is_some()
}

impl Inner {
    /// The drop of the own vectors, if there was one.
    pub(super) fn own_dropped(&self) -> Option<OwnDropped> {
        self.own.read().clone()
    }

    pub(super) fn own_vectors_dropped(&self) -> bool {
        self.own.read().is_some()
    }

    /// The drop, naming the space that holds the store's vectors now.
    pub(super) fn own_vectors(&self) -> OwnVectors {
        let (stripped, segments, versions) = {
            let sweep = self.sweep.lock();
            (sweep.stripped, sweep.segments, sweep.versions)
        };
        OwnVectors {
            dropped: self.own_dropped().map(|d| {
                let (space, model) = self.vector_space(&d);
                OwnDropped { space, model, ..d }
            }),
            stripped,
            segments,
            versions,
        }
    }

    /// Drops the store's own vectors for those of the active space (named by the model its
    /// descriptor gives from now on). 409 unless a space is active. Dropping again answers the
    /// state as it is.
    pub(super) fn drop_own_vectors(&self) -> Result<OwnVectors, EngineError> {
        if self.own_vectors_dropped() {
            return Ok(self.own_vectors());
        }
        if !self.search.is_enabled() {
            return Err(EngineError::Config(
                "this store was opened without its search structures (offline)".to_owned(),
            ));
        }
        let Some(space) = self.active_space() else {
            return Err(EngineError::SpaceConflict {
                id: 0,
                code: "MIGRATION_NOT_ACTIVE",
                message: "no embedding migration is active: activate one before the store's own vectors can be dropped".to_owned(),
            });
        };
        let (id, descriptor) = space.id_and_descriptor();
        let model = model_of(&descriptor);
        let mut results = self.log_batch(vec![()], |inner, w, ()| {
            inner.log(
                w,
                Op::DropOwnVectors {
                    space: id,
                    model: model.clone(),
                },
            )
        });
        results.pop().expect("one result per item")?;
        tracing::info!(
            space = id,
            "the store's own vectors are dropped; a sweep rewrites the records that hold them"
        );
        Ok(self.own_vectors())
    }

    /// Once the own vectors are dropped, some space must stay active: going back to the own
    /// vectors is refused, 409 `OWN_VECTORS_DROPPED` (activating another space is not).
    pub(super) fn refuse_after_own_drop(&self, id: u32) -> Result<(), EngineError> {
        match self.own_dropped() {
            Some(_) => Err(EngineError::SpaceConflict {
                id,
                code: "OWN_VECTORS_DROPPED",
                message: "cannot be deactivated: the store's own vectors were dropped, so an embedding migration stays active (activate another to switch)".to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// The space that holds the store's vectors after the drop, and its model: the active one
    /// (a later migration may have been activated since). An offline open has no space open,
    /// but the records and rows are there: the one marked active, else the one the drop named.
    fn vector_space(&self, dropped: &OwnDropped) -> (u32, String) {
        let active = self
            .active_space()
            .map(|s| s.id_and_descriptor())
            .or_else(|| {
                let records = self.warm.space_records().ok()?;
                let r = records.into_iter().find(|r| r.active)?;
                Some((r.id, r.descriptor))
            });
        match active {
            Some((id, _)) if id == dropped.space => (id, dropped.model.clone()),
            Some((id, descriptor)) => (id, model_of(&descriptor)),
            None => (dropped.space, dropped.model.clone()),
        }
    }

    /// The dimensions of the vectors reads show and writes take: the store's own, or after the
    /// drop the space's that holds them.
    pub(super) fn vector_dimensions(&self) -> Result<usize, EngineError> {
        let Some(dropped) = self.own_dropped() else {
            return Ok(self.config.dimensions);
        };
        let (space, _) = self.vector_space(&dropped);
        Ok(self
            .warm
            .space_records()?
            .into_iter()
            .find(|r| r.id == space)
            .map_or(self.config.dimensions, |r| r.dimensions as usize))
    }

    /// A client's vector with no active space: the store's own, unless those were dropped.
    pub(super) fn no_space_for_client_vector(
        &self,
    ) -> Result<Option<(u32, Vec<f32>)>, EngineError> {
        if self.own_vectors_dropped() {
            return Err(EngineError::Invalid {
                field: "embedding",
                message: "this store keeps no vectors of its own, and the embedding space that holds them is not open".to_owned(),
            });
        }
        Ok(None)
    }

    /// The drop record is applied: from here on the search index holds no own vector and the
    /// embedder has nothing to do. (Its RocksDB part, the `meta` entry, is in the batch.)
    pub(super) fn apply_drop_own_vectors(&self, space: u32, model: &str) {
        *self.own.write() = Some(OwnDropped {
            space,
            model: model.to_owned(),
            swept: false,
        });
        *self.sweep.lock() = Sweep::default();
        self.cold.strip_vectors();
        self.search.drop_vectors();
        self.embed_pending.lock().clear();
    }

    /// One slice of the sweep (a background job): rewrites working and warm memories that hold
    /// an own vector, then cold segments, until done or [`SWEEP_SLICE`] has passed; the last
    /// step strips the kept versions and compacts.
    pub(super) fn sweep_own_vectors(&self) -> Result<(), EngineError> {
        let Some(dropped) = self.own_dropped().filter(|d| !d.swept) else {
            return Ok(());
        };
        let Some(_turn) = self.sweep_turn.try_lock() else {
            return Ok(());
        };
        let started = Instant::now();
        while started.elapsed() < SWEEP_SLICE && !self.stop.load(Ordering::Acquire) {
            match self.next_sweep_step()? {
                Step::Memories(ids, last) => self.strip_memories(&ids, last)?,
                Step::Segment(id) => {
                    let _one = self.migration_lock.lock();
                    // Gone since (compacted into a segment written without vectors): skip.
                    if self.cold.segment_stats().iter().any(|s| s.id == id) {
                        self.rewrite_segments(&[id])?;
                        self.sweep.lock().segments += 1;
                    }
                }
                Step::Done => {
                    let versions = self.warm.strip_history_vectors()?;
                    self.sweep.lock().versions += versions;
                    self.warm.compact_own_vectors()?;
                    self.warm.set_own_swept(&dropped)?;
                    if let Some(d) = self.own.write().as_mut() {
                        d.swept = true;
                    }
                    let sweep = self.sweep.lock();
                    tracing::info!(
                        stripped = sweep.stripped,
                        segments = sweep.segments,
                        versions = sweep.versions,
                        "the sweep after dropping the store's own vectors is done"
                    );
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// What the sweep does next: working-tier memories, then warm ones (in id order), then
    /// each cold segment.
    fn next_sweep_step(&self) -> Result<Step, EngineError> {
        let mut sweep = self.sweep.lock();
        let working = sweep.working.get_or_insert_with(|| self.working.ids());
        if !working.is_empty() {
            let n = working.len().min(SWEEP_BATCH);
            return Ok(Step::Memories(working.drain(..n).collect(), None));
        }
        if sweep.cold.is_none() {
            let ids = self.warm.ids_after(None, sweep.after, SWEEP_BATCH)?;
            if let Some(last) = ids.last().copied() {
                return Ok(Step::Memories(ids, Some(last)));
            }
            sweep.cold = Some(self.cold.segment_stats().iter().map(|s| s.id).collect());
        }
        Ok(sweep
            .cold
            .as_mut()
            .and_then(Vec::pop)
            .map_or(Step::Done, Step::Segment))
    }

    /// Rewrites the working and warm memories among `ids` that hold an own vector.
    fn strip_memories(&self, ids: &[Uuid], last: Option<Uuid>) -> Result<(), EngineError> {
        let todo: Vec<Uuid> = self
            .read_many(ids)?
            .into_iter()
            .flatten()
            .filter(|m| m.tier != Tier::Cold && holds_own(m))
            .map(|m| m.id)
            .collect();
        let mut stripped = 0;
        for r in self.log_batch(todo, Inner::log_strip) {
            if r? {
                stripped += 1;
            }
        }
        let mut sweep = self.sweep.lock();
        sweep.stripped += stripped;
        if last.is_some() {
            sweep.after = last;
        }
        Ok(())
    }

    /// Rewrites `id` without its own vector (the writer's view is already stripped; logging it
    /// makes the tier's record so). A memory gone or sealed into cold since is left.
    fn log_strip(&self, w: &mut WriterState, id: Uuid) -> Result<bool, EngineError> {
        let Some(current) = self.current(w, &id)? else {
            return Ok(false);
        };
        if current.tier == Tier::Cold {
            return Ok(false);
        }
        self.log(
            w,
            Op::Put {
                kind: PutKind::Embed,
                previous_tier: Some(current.tier),
                previous_hash: Some(current.content_hash),
                history: Vec::new(),
                memory: current,
            },
        )?;
        Ok(true)
    }

    /// What the writer appends after the drop holds no own vector.
    pub(super) fn strip_op(&self, op: &mut Op) {
        if !self.own_vectors_dropped() {
            return;
        }
        match op {
            Op::Put { memory, .. } => strip(memory),
            Op::ColdSeal { memories, .. } => {
                for (m, _) in memories {
                    strip(m);
                }
            }
            _ => {}
        }
    }

    /// `m` as reads show it: after the drop, with the active space's vector of its content
    /// (if the space has one) instead of the store's own.
    pub(super) fn present(&self, m: Memory) -> Result<Memory, EngineError> {
        self.present_version(m, true)
    }

    /// [`Self::present`] for the current version (`current`: a memory without a vector yet is
    /// `pending`) or a past one (whose content, if it differs from today's, has no vector in
    /// the space).
    pub(super) fn present_version(
        &self,
        mut m: Memory,
        current: bool,
    ) -> Result<Memory, EngineError> {
        let Some(dropped) = self.own_dropped() else {
            return Ok(m);
        };
        strip(&mut m);
        let (space, model) = self.vector_space(&dropped);
        match self.warm.space_row(space, &m.id)? {
            Some(row) if row.content_hash == m.content_hash => {
                m.embedding = Some(row.vector);
                m.embedding_status = EmbeddingStatus::Ready;
                m.embedding_model = Some(model);
            }
            _ if current && m.status.is_searchable() && self.spaces.read().contains_key(&space) => {
                // The space's worker embeds every searchable memory.
                m.embedding_status = EmbeddingStatus::Pending;
            }
            _ => {}
        }
        Ok(m)
    }

    pub(super) fn present_all(&self, ms: Vec<Memory>) -> Result<Vec<Memory>, EngineError> {
        if !self.own_vectors_dropped() {
            return Ok(ms);
        }
        ms.into_iter().map(|m| self.present(m)).collect()
    }

    /// Past versions, as [`Self::present_version`] shows them.
    pub(super) fn present_past(&self, ms: Vec<Memory>) -> Result<Vec<Memory>, EngineError> {
        if !self.own_vectors_dropped() {
            return Ok(ms);
        }
        ms.into_iter()
            .map(|m| self.present_version(m, false))
            .collect()
    }

    pub(super) fn present_opt(&self, m: Option<Memory>) -> Result<Option<Memory>, EngineError> {
        m.map(|m| self.present(m)).transpose()
    }

    /// Write results, as reads show them.
    pub(super) fn present_results(
        &self,
        results: Vec<Result<Memory, EngineError>>,
    ) -> Vec<Result<Memory, EngineError>> {
        if !self.own_vectors_dropped() {
            return results;
        }
        results
            .into_iter()
            .map(|r| r.and_then(|m| self.present(m)))
            .collect()
    }
}

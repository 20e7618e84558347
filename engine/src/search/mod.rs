//! Search: the in-memory side of recall.
//!
//! - **Attributes**: every active memory in the working and warm tiers has an [`Attr`] here
//!   (namespace, tier, importance, times, tags, document length, vector checksum). Filters are
//!   evaluated against it while vectors and postings are walked, so nothing is over-fetched.
//!   Warm attributes are persisted in RocksDB (`search_attrs`) with the record they describe and
//!   read back at open; working ones are rebuilt from the working tier.
//! - **Working tier**: vectors packed per namespace for an exact scan, and BM25 postings in
//!   memory.
//! - **Warm tier**: BM25 postings in RocksDB (written in the record's batch, so never stale) and
//!   an HNSW index ([`hnsw`]) maintained by its own thread; until that thread has indexed a
//!   vector, the vector sits in a small "lagging" set that every search scans exactly.
//!
//! Only `active` memories are searchable (and `superseded` ones, for a search that asks for
//! them); deleted, archived and expired ones never match.

mod filter;
pub(crate) mod hnsw;
pub(crate) mod past;
pub(crate) mod query;
mod request;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use uuid::Uuid;

use crate::codec::AttrRow;
use crate::idhash::IdMap;
use crate::model::{Memory, Status, Tier};
use crate::text::Analyzer;
use crate::vector::vector_crc;

pub use filter::{MetadataCondition, MetadataFilter};
pub use hnsw::Quantization;
pub use request::{
    Component, Explanation, HybridWeights, SearchHit, SearchMode, SearchQuery, SearchResults,
};

/// How the search structures are built.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchConfig {
    /// English stemming of terms (changing it needs a rebuild of the warm postings).
    pub stemming: bool,
    /// HNSW graph degree.
    pub connectivity: usize,
    /// HNSW candidate list size while inserting.
    pub expansion_add: usize,
    /// HNSW candidate list size while searching.
    pub expansion_search: usize,
    pub quantization: Quantization,
    /// Concurrent HNSW searches (usearch reserves one context per thread); more wait.
    pub threads: usize,
    /// Save the HNSW index after this many changes (and at close).
    pub save_after_changes: u64,
    /// A namespace or tag filter with at most this many memories is scored from in-memory
    /// i8 codes instead of walking the graph (0: always walk).
    pub exact_candidates_max: usize,
    /// Most warm vectors waiting for the graph before new memories that would push more
    /// memories out of a full working tier wait for it to catch up (0: no bound).
    pub max_lagging: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            stemming: true,
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 256,
            quantization: Quantization::I8,
            threads: 32,
            save_after_changes: 50_000,
            exact_candidates_max: 20_000,
            max_lagging: 100_000,
        }
    }
}

/// What search keeps of an active memory.
#[derive(Debug, Clone)]
pub(crate) struct Attr {
    pub namespace: Arc<str>,
    pub tier: Tier,
    pub importance: f32,
    pub created_at_us: i64,
    pub expires_at_us: Option<i64>,
    pub tags: Box<[Box<str>]>,
    pub doc_len: u32,
    pub vector_crc: Option<u32>,
    /// Status `superseded`: found only by a search that includes superseded memories.
    pub superseded: bool,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct NsStats {
    pub docs: u64,
    pub total_len: u64,
    /// Superseded memories among `docs`: while there are any, every candidate is checked.
    pub superseded: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Attrs {
    pub by_id: crate::idhash::IdMap<Uuid, Attr>,
    pub stats: HashMap<Arc<str>, NsStats>,
    names: HashMap<Box<str>, Arc<str>>,
    /// (namespace, tag) → the memories carrying it: lets a selective tag filter enumerate its
    /// few candidates instead of walking the graph.
    pub by_tag: HashMap<(Arc<str>, Box<str>), crate::idhash::IdSet<Uuid>>,
    /// namespace → its memories: a small namespace in a big graph is scored directly.
    pub by_namespace: HashMap<Arc<str>, crate::idhash::IdSet<Uuid>>,
    /// namespace → its memories in `created_at` order: a hybrid search finds a result's
    /// neighbours (the turns around it in a conversation) here.
    pub by_time: HashMap<Arc<str>, std::collections::BTreeSet<(i64, Uuid)>>,
}

impl Attrs {
    fn intern(&mut self, ns: &str) -> Arc<str> {
        if let Some(a) = self.names.get(ns) {
            return Arc::clone(a);
        }
        let a: Arc<str> = Arc::from(ns);
        self.names.insert(Box::from(ns), Arc::clone(&a));
        a
    }

    fn insert(&mut self, id: Uuid, attr: Attr) {
        self.remove(&id);
        let s = self.stats.entry(Arc::clone(&attr.namespace)).or_default();
        s.docs += 1;
        s.total_len += u64::from(attr.doc_len);
        s.superseded += u64::from(attr.superseded);
        for tag in attr.tags.iter() {
            self.by_tag
                .entry((Arc::clone(&attr.namespace), tag.clone()))
                .or_default()
                .insert(id);
        }
        self.by_namespace
            .entry(Arc::clone(&attr.namespace))
            .or_default()
            .insert(id);
        self.by_time
            .entry(Arc::clone(&attr.namespace))
            .or_default()
            .insert((attr.created_at_us, id));
        self.by_id.insert(id, attr);
    }

    fn remove(&mut self, id: &Uuid) -> Option<Attr> {
        let old = self.by_id.remove(id)?;
        if let Some(s) = self.stats.get_mut(&old.namespace) {
            s.docs = s.docs.saturating_sub(1);
            s.total_len = s.total_len.saturating_sub(u64::from(old.doc_len));
            s.superseded = s.superseded.saturating_sub(u64::from(old.superseded));
        }
        if let Some(set) = self.by_namespace.get_mut(&old.namespace) {
            set.remove(id);
        }
        if let Some(timeline) = self.by_time.get_mut(&old.namespace) {
            timeline.remove(&(old.created_at_us, *id));
            if timeline.is_empty() {
                self.by_time.remove(&old.namespace);
            }
        }
        for tag in old.tags.iter() {
            let key = (Arc::clone(&old.namespace), tag.clone());
            if let Some(set) = self.by_tag.get_mut(&key) {
                set.remove(id);
                if set.is_empty() {
                    self.by_tag.remove(&key);
                }
            }
        }
        Some(old)
    }
}

/// Rows per storage chunk of [`Packed`].
const CHUNK_ROWS: usize = 4096;

/// Rows of `dimensions` values per id, packed for a sequential scan, with a small per-row value `M`
/// beside them; removal moves the last row into the hole. The rows live in chunks of
/// [`CHUNK_ROWS`], so the storage grows a chunk at a time: one contiguous vector would be
/// reallocated and copied whole as it doubles (the warm tier's codes are 460 MB at 1.2M
/// vectors), under a lock every applier needs.
#[derive(Debug)]
pub(crate) struct Packed<T, M> {
    pub ids: Vec<Uuid>,
    chunks: Vec<Box<[T]>>,
    pub meta: Vec<M>,
    pos: crate::idhash::IdMap<Uuid, usize>,
}

impl<T, M> Default for Packed<T, M> {
    fn default() -> Self {
        Packed {
            ids: Vec::new(),
            chunks: Vec::new(),
            meta: Vec::new(),
            pos: crate::idhash::IdMap::default(),
        }
    }
}

impl<T: Copy + Default, M> Packed<T, M> {
    fn row(&self, i: usize, dimensions: usize) -> &[T] {
        let at = (i % CHUNK_ROWS) * dimensions;
        &self.chunks[i / CHUNK_ROWS][at..at + dimensions]
    }

    fn row_mut(&mut self, i: usize, dimensions: usize) -> &mut [T] {
        let at = (i % CHUNK_ROWS) * dimensions;
        &mut self.chunks[i / CHUNK_ROWS][at..at + dimensions]
    }

    fn put(&mut self, id: Uuid, row: &[T], meta: M) {
        let dimensions = row.len();
        match self.pos.get(&id) {
            Some(&i) => {
                self.row_mut(i, dimensions).copy_from_slice(row);
                self.meta[i] = meta;
            }
            None => {
                let i = self.ids.len();
                if i == self.chunks.len() * CHUNK_ROWS {
                    self.chunks
                        .push(vec![T::default(); CHUNK_ROWS * dimensions].into_boxed_slice());
                }
                self.row_mut(i, dimensions).copy_from_slice(row);
                self.pos.insert(id, i);
                self.ids.push(id);
                self.meta.push(meta);
            }
        }
    }

    fn remove(&mut self, id: &Uuid, dimensions: usize) {
        let Some(i) = self.pos.remove(id) else {
            return;
        };
        let last = self.ids.len() - 1;
        if i != last {
            self.ids.swap(i, last);
            self.meta.swap(i, last);
            self.pos.insert(self.ids[i], i);
            let (hole, hole_at) = (i / CHUNK_ROWS, (i % CHUNK_ROWS) * dimensions);
            let (from, from_at) = (last / CHUNK_ROWS, (last % CHUNK_ROWS) * dimensions);
            if hole == from {
                self.chunks[hole].copy_within(from_at..from_at + dimensions, hole_at);
            } else {
                // i < last, so the hole's chunk comes first.
                let (head, tail) = self.chunks.split_at_mut(from);
                head[hole][hole_at..hole_at + dimensions]
                    .copy_from_slice(&tail[0][from_at..from_at + dimensions]);
            }
        }
        self.ids.pop();
        self.meta.pop();
        // The chunk that held only the last row is empty now.
        if last.is_multiple_of(CHUNK_ROWS) {
            self.chunks.pop();
        }
    }

    /// The row of `id` and its value.
    pub fn get(&self, id: &Uuid, dimensions: usize) -> Option<(&[T], &M)> {
        self.pos
            .get(id)
            .map(|&i| (self.row(i, dimensions), &self.meta[i]))
    }

    /// Every row in order (row `i` belongs to `ids[i]`).
    pub fn rows(&self, dimensions: usize) -> impl Iterator<Item = &[T]> {
        self.chunks
            .iter()
            .flat_map(move |c| c.chunks_exact(dimensions))
            .take(self.ids.len())
    }
}

/// Vectors of one namespace's working-tier memories: the f32 rows, with each vector's norm
/// and expiry (`i64::MAX`: never) beside it so the scan reads nothing else, and the same rows
/// as i8 codes ([`crate::vector::quantize`]) with each one's code scale divided by its norm.
/// Both are changed by the same puts and removes, so row `i` is the same memory in each. A
/// large namespace is scanned in its codes (a quarter of the bytes: the f32 scan of 100,000
/// rows read 150 MB per query) and its best rows re-scored in f32.
#[derive(Debug, Default)]
pub(crate) struct Arena {
    rows: Packed<f32, (f32, i64)>,
    codes: Packed<i8, f32>,
}

impl Arena {
    fn put_vector(&mut self, id: Uuid, v: &[f32], expires_at_us: Option<i64>) {
        let n = crate::vector::norm(v);
        self.rows.put(id, v, (n, expires_at_us.unwrap_or(i64::MAX)));
        let (scale, codes) = crate::vector::quantize(v);
        self.codes
            .put(id, &codes, if n > 0.0 { scale / n } else { 0.0 });
        debug_assert_eq!(self.rows.ids.len(), self.codes.ids.len());
    }

    fn remove(&mut self, id: &Uuid, dimensions: usize) {
        self.rows.remove(id, dimensions);
        self.codes.remove(id, dimensions);
    }

    pub fn vector(&self, id: &Uuid, dimensions: usize) -> Option<&[f32]> {
        self.rows.get(id, dimensions).map(|(v, _)| v)
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.rows.ids.len()
    }

    /// Row `i`'s id, norm and expiry.
    pub fn entry(&self, i: usize) -> (&Uuid, f32, i64) {
        let (n, expires) = self.rows.meta[i];
        (&self.rows.ids[i], n, expires)
    }

    /// Every f32 row, in order.
    pub fn rows(&self, dimensions: usize) -> impl Iterator<Item = &[f32]> {
        self.rows.rows(dimensions)
    }

    /// Every row's i8 codes and factor (code scale over norm), in the order of [`Arena::rows`].
    pub fn code_rows(&self, dimensions: usize) -> impl Iterator<Item = (&[i8], f32)> {
        self.codes
            .rows(dimensions)
            .zip(self.codes.meta.iter().copied())
    }
}

/// i8 codes of every warm vector, packed: a selective filter scores its candidates from these
/// (about a quarter of the f32 size) and re-scores the best few with the f32 originals. Beside
/// each: the code scale divided by the vector's norm (so `dot(codes, q) × it` is the cosine
/// with a unit query) and the vector's checksum.
#[derive(Debug, Default)]
pub(crate) struct WarmCodes(Packed<i8, (f32, u32)>);

impl WarmCodes {
    pub(crate) fn put(&mut self, id: Uuid, crc: u32, v: &[f32]) {
        let (scale, codes) = crate::vector::quantize(v);
        let n = crate::vector::norm(v);
        self.0
            .put(id, &codes, (if n > 0.0 { scale / n } else { 0.0 }, crc));
    }

    pub(crate) fn remove(&mut self, id: &Uuid, dimensions: usize) {
        self.0.remove(id, dimensions);
    }

    /// Approximate cosine of `id`'s vector with a unit query quantized as `(scale, codes)`
    /// (see [`crate::vector::quantize`]), if its codes are for `crc`. Integer multiply-adds:
    /// several times faster than converting the codes to floats.
    pub fn cosine(&self, id: &Uuid, crc: u32, query: (f32, &[i8])) -> Option<f32> {
        let (q_scale, q) = query;
        let dimensions = q.len();
        let (codes, &(factor, held)) = self.0.get(id, dimensions)?;
        if held != crc {
            return None;
        }
        let dot = crate::vector::i8_dot(codes, q);
        Some(dot as f32 * q_scale * factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_rows_follow_puts_and_removals_across_chunks() {
        use rand::{Rng, SeedableRng};
        let dimensions = 3;
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut packed: Packed<i32, u32> = Packed::default();
        let mut model: std::collections::HashMap<Uuid, (Vec<i32>, u32)> = Default::default();
        let mut ids: Vec<Uuid> = Vec::new();
        // Grow past two chunks, shrink back below one, grow again: chunks are added and
        // dropped at the boundaries, and removal moves the last row across chunks.
        for round in 0..3 {
            let target = [CHUNK_ROWS * 2 + 17, CHUNK_ROWS / 2, CHUNK_ROWS + 5][round];
            while model.len() != target {
                let grow = model.len() < target;
                if grow || rng.random_bool(0.1) {
                    let id = if !grow || ids.is_empty() || rng.random_bool(0.9) {
                        Uuid::from_u128(rng.random())
                    } else {
                        ids[rng.random_range(0..ids.len())] // an update in place
                    };
                    let row: Vec<i32> = (0..dimensions).map(|_| rng.random()).collect();
                    let meta = rng.random();
                    packed.put(id, &row, meta);
                    if model.insert(id, (row, meta)).is_none() {
                        ids.push(id);
                    }
                } else {
                    let id = ids.swap_remove(rng.random_range(0..ids.len()));
                    packed.remove(&id, dimensions);
                    model.remove(&id);
                }
            }
            assert_eq!(packed.ids.len(), model.len());
            assert_eq!(packed.chunks.len(), model.len().div_ceil(CHUNK_ROWS));
            for (id, (row, meta)) in &model {
                assert_eq!(packed.get(id, dimensions), Some((row.as_slice(), meta)));
            }
            let scanned: Vec<&[i32]> = packed.rows(dimensions).collect();
            assert_eq!(scanned.len(), model.len());
            for (i, row) in scanned.iter().enumerate() {
                assert_eq!(*row, model[&packed.ids[i]].0.as_slice());
            }
        }
    }

    #[test]
    fn warm_codes_approximate_cosine_and_follow_removals() {
        let dimensions = 48;
        let vecs: Vec<Vec<f32>> = (0..50u32)
            .map(|i| {
                (0..dimensions as u32)
                    .map(|d| ((i * 31 + d * 7) % 23) as f32 - 11.0)
                    .collect()
            })
            .collect();
        let ids: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
        let mut codes = WarmCodes::default();
        for (id, v) in ids.iter().zip(&vecs) {
            codes.put(*id, vector_crc(v), v);
        }
        let q = &vecs[7];
        let n = crate::vector::norm(q);
        let unit: Vec<f32> = q.iter().map(|x| x / n).collect();
        let (qs, qc) = crate::vector::quantize(&unit);
        for (id, v) in ids.iter().zip(&vecs) {
            let exact = crate::vector::dot(&unit, v) / crate::vector::norm(v);
            let approx = codes.cosine(id, vector_crc(v), (qs, &qc)).expect("present");
            assert!((exact - approx).abs() < 0.02, "{exact} vs {approx}");
        }
        // A stale checksum is not answered; removal moves the last entry into the hole.
        assert_eq!(codes.cosine(&ids[3], 12345, (qs, &qc)), None);
        codes.remove(&ids[3], dimensions);
        assert_eq!(codes.cosine(&ids[3], vector_crc(&vecs[3]), (qs, &qc)), None);
        let last = codes
            .cosine(&ids[49], vector_crc(&vecs[49]), (qs, &qc))
            .expect("moved, still found");
        assert!(
            (last - crate::vector::dot(&unit, &vecs[49]) / crate::vector::norm(&vecs[49])).abs()
                < 0.02
        );
    }
}

/// BM25 postings of the working tier: namespace → term → id → term frequency, and each
/// document's distinct terms so they can be removed.
#[derive(Debug, Default)]
pub(crate) struct WorkingText {
    /// Terms are what clients write, so their maps keep SipHash; ids hash with [`IdMap`]'s
    /// cheap hasher (SipHash of the id was most of an import's postings cost).
    pub postings: HashMap<Arc<str>, HashMap<String, IdMap<Uuid, u32>>>,
    docs: IdMap<Uuid, (Arc<str>, Vec<String>)>,
}

impl WorkingText {
    fn put(&mut self, id: Uuid, ns: Arc<str>, terms: Vec<(String, u32)>) {
        self.remove(&id);
        let by_term = self.postings.entry(Arc::clone(&ns)).or_default();
        let mut names = Vec::with_capacity(terms.len());
        for (t, tf) in terms {
            // A term seen before needs no copy of its name.
            match by_term.get_mut(&t) {
                Some(p) => {
                    p.insert(id, tf);
                }
                None => {
                    by_term.entry(t.clone()).or_default().insert(id, tf);
                }
            }
            names.push(t);
        }
        self.docs.insert(id, (ns, names));
    }

    fn remove(&mut self, id: &Uuid) {
        let Some((ns, terms)) = self.docs.remove(id) else {
            return;
        };
        if let Some(by_term) = self.postings.get_mut(&ns) {
            for t in terms {
                if let Some(p) = by_term.get_mut(&t) {
                    p.remove(id);
                    if p.is_empty() {
                        by_term.remove(&t);
                    }
                }
            }
        }
    }
}

/// The search structures of one open store.
pub(crate) struct SearchIndex {
    dimensions: usize,
    pub(crate) analyzer: Analyzer,
    pub(crate) attrs: RwLock<Attrs>,
    pub(crate) working_vectors: RwLock<HashMap<Arc<str>, Arena>>,
    pub(crate) working_text: RwLock<WorkingText>,
    pub(crate) hnsw: hnsw::Hnsw,
    pub(crate) warm_codes: RwLock<WarmCodes>,
    /// `false`: opened offline without search structures; changes are not tracked here.
    enabled: bool,
    /// The store's own vectors were dropped (searches rank an embedding space's): vectors of
    /// memories put here are ignored, and the graph, codes and working vectors stay empty.
    vectors_off: std::sync::atomic::AtomicBool,
    pub(crate) exact_candidates_max: usize,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex")
            .field("dimensions", &self.dimensions)
            .field("memories", &self.attrs.read().by_id.len())
            .finish_non_exhaustive()
    }
}

impl SearchIndex {
    pub(crate) fn new(dimensions: usize, config: &SearchConfig, hnsw: hnsw::Hnsw) -> SearchIndex {
        SearchIndex {
            dimensions,
            analyzer: Analyzer::new(config.stemming),
            attrs: RwLock::new(Attrs::default()),
            working_vectors: RwLock::new(HashMap::new()),
            working_text: RwLock::new(WorkingText::default()),
            hnsw,
            warm_codes: RwLock::new(WarmCodes::default()),
            enabled: true,
            vectors_off: std::sync::atomic::AtomicBool::new(false),
            exact_candidates_max: config.exact_candidates_max,
        }
    }

    /// Search structures that track nothing (offline tools).
    pub(crate) fn disabled(
        dimensions: usize,
        config: &SearchConfig,
        hnsw: hnsw::Hnsw,
    ) -> SearchIndex {
        SearchIndex {
            enabled: false,
            ..SearchIndex::new(dimensions, config, hnsw)
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Gives up the store's own vectors: empties the graph (saved empty), the i8 codes and the
    /// working tier's vectors, and ignores every vector put from now on.
    pub(crate) fn drop_vectors(&self) {
        self.vectors_off
            .store(true, std::sync::atomic::Ordering::Release);
        self.working_vectors.write().clear();
        *self.warm_codes.write() = WarmCodes::default();
        self.hnsw.clear();
    }

    pub(crate) fn vectors_dropped(&self) -> bool {
        self.vectors_off.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Number of searchable memories.
    pub(crate) fn len(&self) -> usize {
        self.attrs.read().by_id.len()
    }

    /// Loads a warm or cold memory's persisted attributes at open.
    /// Memories of `namespace` a search can find (active and superseded).
    pub(crate) fn searchable_in(&self, namespace: &str) -> u64 {
        self.attrs.read().stats.get(namespace).map_or(0, |s| s.docs)
    }

    pub(crate) fn load_attrs(&self, id: Uuid, tier: Tier, row: AttrRow) {
        let mut attrs = self.attrs.write();
        let namespace = attrs.intern(&row.namespace);
        attrs.insert(
            id,
            Attr {
                namespace,
                tier,
                importance: row.importance,
                created_at_us: row.created_at_us,
                expires_at_us: row.expires_at_us,
                tags: row.tags.into_iter().map(String::into_boxed_str).collect(),
                doc_len: row.doc_len,
                vector_crc: row.vector_crc,
                superseded: row.superseded,
            },
        );
    }

    /// Takes in a memory's new image (after it is applied to its tier).
    pub(crate) fn put(&self, memory: &Memory) {
        if !self.enabled {
            return;
        }
        let id = memory.id;
        let old = self.remove_inner(&id);
        if !memory.status.is_searchable() {
            if old.is_some_and(|a| a.tier == Tier::Warm) {
                self.hnsw.forget(id);
            }
            return;
        }
        let (terms, doc_len) = self.analyzer.frequencies(&memory.content);
        let embedding = if self.vectors_dropped() {
            &None
        } else {
            &memory.embedding
        };
        let crc = embedding.as_deref().map(vector_crc);
        let namespace = {
            let mut attrs = self.attrs.write();
            let namespace = attrs.intern(&memory.namespace);
            attrs.insert(
                id,
                Attr {
                    namespace: Arc::clone(&namespace),
                    tier: memory.tier,
                    importance: memory.importance,
                    created_at_us: memory.created_at_us,
                    expires_at_us: memory.expires_at_us,
                    tags: memory.tags.iter().map(|t| Box::from(t.as_str())).collect(),
                    doc_len,
                    vector_crc: crc,
                    superseded: memory.status == Status::Superseded,
                },
            );
            namespace
        };
        match memory.tier {
            Tier::Working => {
                if old.is_some_and(|a| a.tier == Tier::Warm) {
                    self.hnsw.forget(id);
                }
                if let Some(v) = embedding {
                    self.working_vectors
                        .write()
                        .entry(Arc::clone(&namespace))
                        .or_default()
                        .put_vector(id, v, memory.expires_at_us);
                }
                self.working_text.write().put(id, namespace, terms);
            }
            Tier::Warm => match (embedding, crc) {
                (Some(v), Some(crc)) => {
                    self.warm_codes.write().put(id, crc, v);
                    self.hnsw.upsert(id, crc, Arc::from(v.as_slice()));
                }
                _ => {
                    self.warm_codes.write().remove(&id, self.dimensions);
                    self.hnsw.forget(id);
                }
            },
            Tier::Cold => {
                if old.is_some_and(|a| a.tier == Tier::Warm) {
                    self.hnsw.forget(id);
                }
            }
        }
    }

    /// A warm memory moved to cold unchanged: it keeps its attributes (tier now cold) and
    /// leaves the graph and the i8 codes. `false` if it has no warm attributes here.
    pub(crate) fn mark_cold(&self, id: &Uuid) -> bool {
        if !self.enabled {
            return true;
        }
        {
            let mut attrs = self.attrs.write();
            match attrs.by_id.get_mut(id) {
                Some(a) if a.tier == Tier::Warm => a.tier = Tier::Cold,
                _ => return false,
            }
        }
        self.warm_codes.write().remove(id, self.dimensions);
        self.hnsw.forget(*id);
        true
    }

    /// Drops a memory from search.
    pub(crate) fn remove(&self, id: &Uuid) {
        if !self.enabled {
            return;
        }
        if self.remove_inner(id).is_some_and(|a| a.tier == Tier::Warm) {
            self.hnsw.forget(*id);
        }
    }

    /// A warm vector read at open (the codes are not persisted).
    pub(crate) fn load_warm_vector(&self, id: Uuid, crc: u32, v: &[f32]) {
        if v.len() == self.dimensions && !self.vectors_dropped() {
            self.warm_codes.write().put(id, crc, v);
        }
    }

    /// Removes the attributes and working-tier entries of `id`; returns the old attributes.
    fn remove_inner(&self, id: &Uuid) -> Option<Attr> {
        let old = self.attrs.write().remove(id)?;
        if old.tier == Tier::Warm {
            self.warm_codes.write().remove(id, self.dimensions);
        }
        if old.tier == Tier::Working {
            if let Some(arena) = self.working_vectors.write().get_mut(&old.namespace) {
                arena.remove(id, self.dimensions);
            }
            self.working_text.write().remove(id);
        }
        Some(old)
    }
}

//! Running a search: candidates from each tier by vector and by text, filters evaluated during
//! the walk, then one ranking.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use uuid::Uuid;

use super::request::{Component, Explanation, SearchMode, SearchQuery, CONTEXT_LENDERS};
use super::{Attr, SearchIndex};
use crate::model::{Memory, Tier};
use crate::text::{bm25_term, idf};
use crate::tier::warm::WarmTier;
use crate::vector::{cosine, dot, norm};
use crate::EngineError;

/// A ranked candidate before its memory is read.
#[derive(Debug, Clone)]
pub(crate) struct Ranked {
    pub id: Uuid,
    pub score: f32,
    pub similarity: Option<f32>,
    pub explanation: Explanation,
}

/// The vector candidates of an active embedding space: `(query, want, small, accept)` →
/// `(id, cosine)` best first, where `small` are the few memories to score one by one (else the
/// space's graph is walked) and `accept` is the query's filter.
pub(crate) type SpaceNearest<'a> = dyn Fn(
        &[f32],
        usize,
        Option<&[Uuid]>,
        &dyn Fn(&Uuid) -> bool,
    ) -> Result<Vec<(Uuid, f32)>, EngineError>
    + 'a;

/// What a search needs of the engine.
pub(crate) struct Ctx<'a> {
    pub index: &'a SearchIndex,
    pub warm: &'a WarmTier,
    pub cold: &'a crate::tier::cold::ColdTier,
    pub read: &'a dyn Fn(&Uuid) -> Result<Option<Memory>, EngineError>,
    pub now_us: i64,
    /// An active embedding space: when set, the vector part ranks its vectors (every tier's
    /// memories) instead of the tiers' own, which are then not looked at.
    pub space: Option<&'a SpaceNearest<'a>>,
}

#[derive(PartialEq)]
struct Scored(f32, Uuid);
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    // Reversed: the heap's top is the worst kept candidate.
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.total_cmp(&self.0).then(self.1.cmp(&other.1))
    }
}

/// Keeps the `n` best (highest) scores.
struct TopN {
    n: usize,
    heap: BinaryHeap<Scored>,
}

impl TopN {
    fn new(n: usize) -> TopN {
        TopN {
            n,
            heap: BinaryHeap::with_capacity(n + 1),
        }
    }
    fn push(&mut self, score: f32, id: Uuid) {
        if self.heap.len() < self.n {
            self.heap.push(Scored(score, id));
        } else if self.heap.peek().is_some_and(|w| score > w.0) {
            self.heap.pop();
            self.heap.push(Scored(score, id));
        }
    }
    fn into_map(self) -> HashMap<Uuid, f32> {
        self.heap.into_iter().map(|s| (s.1, s.0)).collect()
    }
}

impl SearchQuery {
    /// Whether any filter beyond namespace, tier and expiry applies.
    fn filters_attributes(&self) -> bool {
        !self.tags_all.is_empty()
            || !self.tags_any.is_empty()
            || !self.metadata.is_empty()
            || self.importance_min.is_some()
            || self.importance_max.is_some()
            || self.created_start_us.is_some()
            || self.created_end_us.is_some()
    }
}

impl Ctx<'_> {
    fn attr_ok(&self, q: &SearchQuery, attr: &Attr) -> bool {
        *attr.namespace == *q.namespace
            && (!attr.superseded || q.include_superseded)
            && q.tiers.contains(&attr.tier)
            && attr.expires_at_us.is_none_or(|e| e > self.now_us)
            && q.importance_min.is_none_or(|m| attr.importance >= m)
            && q.importance_max.is_none_or(|m| attr.importance <= m)
            && q.created_start_us.is_none_or(|s| attr.created_at_us >= s)
            && q.created_end_us.is_none_or(|e| attr.created_at_us <= e)
            && q.tags_all
                .iter()
                .all(|t| attr.tags.iter().any(|x| **x == **t))
            && (q.tags_any.is_empty()
                || q.tags_any
                    .iter()
                    .any(|t| attr.tags.iter().any(|x| **x == **t)))
    }
}

/// Above this many memories, a namespace that is (nearly) the whole graph is searched with an
/// unfiltered walk, not by scoring each memory's i8 codes: the scan costs ~90 ns a memory here
/// (three map lookups and 384 multiply-adds), an unfiltered walk of 5,000 to 100,000 vectors
/// 0.3–0.5 ms. Measured at 16 clients on 5,000 memories: 1,986–2,048 q/s scanning, 2,507–2,614
/// walking (recall@10 0.9975); at 20,000: 514–556 against 1,618–1,661. `exact_candidates_max`
/// still bounds the scan for a filter or a namespace that is a small part of the graph, where a
/// walk would reject most of the nodes it reaches.
const EXACT_WHOLE_GRAPH_MAX: usize = 4_096;

/// A namespace's working-tier vectors are scanned in f32 up to this many rows (or four times
/// the re-score, if more); above, in their i8 codes, with the best
/// `pool × WORKING_RESCORE_FACTOR + WORKING_RESCORE_EXTRA` re-scored in f32.
const WORKING_EXACT_ROWS: usize = 2_048;
const WORKING_RESCORE_FACTOR: usize = 4;
const WORKING_RESCORE_EXTRA: usize = 16;

/// Runs `q`: the ranked candidates (best first) and how many memories matched: every memory
/// holding a query term that passed the filters, plus the vector candidates (a vector search
/// cannot count the whole namespace; it counts the candidates it ranked).
pub(crate) fn rank(ctx: &Ctx<'_>, q: &SearchQuery) -> Result<(Vec<Ranked>, usize), EngineError> {
    let index = ctx.index;
    let want = q.offset + q.limit;
    let use_vectors = q.mode != SearchMode::Text && q.embedding.is_some();
    let use_text =
        q.mode != SearchMode::Semantic && q.text.as_deref().is_some_and(|t| !t.trim().is_empty());
    let pool = if q.mode == SearchMode::Hybrid {
        (want * 4).max(100)
    } else {
        want
    };

    // Metadata filters need the memory itself; read it once per candidate.
    let meta_cache: RefCell<HashMap<Uuid, bool>> = RefCell::new(HashMap::new());
    let read_error: RefCell<Option<EngineError>> = RefCell::new(None);
    let meta_ok = |id: &Uuid| -> bool {
        if q.metadata.is_empty() {
            return true;
        }
        if let Some(v) = meta_cache.borrow().get(id) {
            return *v;
        }
        let ok = match (ctx.read)(id) {
            Ok(Some(m)) => {
                match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(
                    &m.metadata_json,
                ) {
                    Ok(map) => q.metadata.iter().all(|f| f.matches(&map)),
                    Err(_) => false,
                }
            }
            Ok(None) => false,
            Err(e) => {
                read_error.borrow_mut().get_or_insert(e);
                false
            }
        };
        meta_cache.borrow_mut().insert(*id, ok);
        ok
    };

    let attrs = index.attrs.read();
    let ok = |id: &Uuid, tier: Tier| -> Option<&Attr> {
        attrs
            .by_id
            .get(id)
            .filter(|a| a.tier == tier && ctx.attr_ok(q, a))
    };

    // Vector candidates.
    let unit_query: Option<Vec<f32>> = if use_vectors {
        q.embedding.as_ref().map(|e| {
            let n = norm(e);
            e.iter()
                .map(|x| if n > 0.0 { x / n } else { 0.0 })
                .collect()
        })
    } else {
        None
    };
    let mut similarity: HashMap<Uuid, f32> = HashMap::new();
    if let Some(uq) = &unit_query {
        let mut top = TopN::new(pool);
        if let Some(space) = ctx.space {
            let accept = |id: &Uuid| {
                attrs
                    .by_id
                    .get(id)
                    .is_some_and(|a| q.tiers.contains(&a.tier) && ctx.attr_ok(q, a))
                    && meta_ok(id)
            };
            let small = small_candidate_set(&attrs, q, index.exact_candidates_max);
            for (id, s) in space(uq, pool, small.as_deref(), &accept)? {
                top.push(s, id);
            }
        }
        if ctx.space.is_none() && q.tiers.contains(&Tier::Working) {
            let arenas = index.working_vectors.read();
            if let Some(arena) = arenas.get(q.namespace.as_str()) {
                let dimensions = index.dimensions;
                // The arena is this namespace's working tier: only other filters (or superseded
                // memories to leave out) need the attributes.
                let ns = attrs.stats.get(q.namespace.as_str());
                let check = q.filters_attributes() || ns.is_some_and(|s| s.superseded > 0);
                let wanted = |i: usize| {
                    let (id, n, expires) = arena.entry(i);
                    let ok = expires > ctx.now_us
                        && (!check || (ok(id, Tier::Working).is_some() && meta_ok(id)));
                    ok.then_some((id, n))
                };
                let rescore = pool * WORKING_RESCORE_FACTOR + WORKING_RESCORE_EXTRA;
                if arena.len() <= WORKING_EXACT_ROWS.max(rescore * 4) {
                    for (i, v) in arena.rows(dimensions).enumerate() {
                        if let Some((id, n)) = wanted(i) {
                            top.push(if n == 0.0 { 0.0 } else { dot(uq, v) / n }, *id);
                        }
                    }
                } else {
                    // Rank by the i8 codes, re-score the best in f32: ranks and scores are
                    // exact for every row that reaches the re-score.
                    let (q_scale, q_codes) = crate::vector::quantize(uq);
                    let mut rough = TopN::new(rescore);
                    for (i, (c, factor)) in arena.code_rows(dimensions).enumerate() {
                        if let Some((id, _)) = wanted(i) {
                            let s = crate::vector::i8_dot(c, &q_codes) as f32 * q_scale * factor;
                            rough.push(s, *id);
                        }
                    }
                    for id in rough.into_map().into_keys() {
                        if let Some(v) = arena.vector(&id, dimensions) {
                            top.push(cosine(uq, v), id);
                        }
                    }
                }
            }
        }
        if ctx.space.is_none() && q.tiers.contains(&Tier::Warm) {
            index.hnsw.for_each_lagging(|id, crc, v| {
                if ok(id, Tier::Warm).is_some_and(|a| a.vector_crc == Some(crc)) && meta_ok(id) {
                    top.push(cosine(uq, v), *id);
                }
            });
            let accept = |id: &Uuid, crc: u32| {
                ok(id, Tier::Warm).is_some_and(|a| a.vector_crc == Some(crc)) && meta_ok(id)
            };
            let graph = index.hnsw.graph_len();
            let ns_docs = attrs
                .stats
                .get(q.namespace.as_str())
                .map_or(0, |s| s.docs as usize);
            // The namespace is (nearly) the whole graph and nothing else narrows the search.
            let whole_graph = !q.filters_attributes() && ns_docs * 10 >= graph * 9;
            let exact = if whole_graph && ns_docs > EXACT_WHOLE_GRAPH_MAX {
                None
            } else {
                small_candidate_set(&attrs, q, index.exact_candidates_max)
            };
            if let Some(candidates) = exact {
                // A selective tag filter or a small namespace: score its few candidates from
                // the in-memory i8 codes, no walk; the best are re-scored with their f32
                // vectors below.
                let mut rough = TopN::new(pool * 4);
                let (q_scale, q_codes) = crate::vector::quantize(uq);
                {
                    let codes = index.warm_codes.read();
                    for id in candidates {
                        let Some(crc) = ok(&id, Tier::Warm).and_then(|a| a.vector_crc) else {
                            continue;
                        };
                        if !meta_ok(&id) {
                            continue;
                        }
                        if let Some(s) = codes.cosine(&id, crc, (q_scale, &q_codes)) {
                            rough.push(s, id);
                        }
                    }
                }
                let mut best: Vec<Uuid> = rough.into_map().into_keys().collect();
                best.sort_unstable();
                for (id, v) in best.iter().zip(ctx.warm.vectors(&best)?) {
                    if let Some(v) = v {
                        top.push(cosine(uq, &v), *id);
                    }
                }
            } else {
                let walk = index.hnsw.candidates_for(pool);
                let mut hits = if whole_graph {
                    // Walk without a per-node filter, check the results, and walk filtered
                    // only if too few pass.
                    let passed: Vec<(Uuid, f32)> = index
                        .hnsw
                        .search_unfiltered(uq, walk)?
                        .into_iter()
                        .filter(|(id, crc, _)| accept(id, *crc))
                        .map(|(id, _, d)| (id, d))
                        .collect();
                    if passed.len() >= pool.min(graph) {
                        passed
                    } else {
                        index.hnsw.search(uq, walk, accept)?
                    }
                } else {
                    index.hnsw.search(uq, walk, accept)?
                };
                // The graph's distances come from quantized vectors: score its candidates
                // again with their f32 vectors (one batched read), so ranks and scores are
                // exact and do not depend on which path found a memory.
                hits.sort_unstable_by_key(|(id, _)| *id);
                let ids: Vec<Uuid> = hits.iter().map(|(id, _)| *id).collect();
                for ((id, distance), v) in hits.into_iter().zip(ctx.warm.vectors(&ids)?) {
                    top.push(v.map_or(1.0 - distance, |v| cosine(uq, &v)), id);
                }
            }
        }
        if ctx.space.is_none() && q.tiers.contains(&Tier::Cold) {
            // Cold: an i8 scan of each segment's live entries, re-ranked with the f32
            // originals inside the segment, so these similarities are exact already.
            for (id, s) in ctx
                .cold
                .search(uq, pool, |id| ok(id, Tier::Cold).is_some() && meta_ok(id))?
            {
                top.push(s, id);
            }
        }
        similarity = top.into_map();
        if let Some(t) = q.similarity_threshold {
            similarity.retain(|_, s| *s >= t);
        }
    }

    // Text candidates: BM25 over every document holding a query term.
    let mut bm25: HashMap<Uuid, f32> = HashMap::new();
    if use_text {
        let terms = index
            .analyzer
            .query_terms(q.text.as_deref().unwrap_or_default());
        let stats = attrs
            .stats
            .get(q.namespace.as_str())
            .copied()
            .unwrap_or_default();
        let avg_len = if stats.docs == 0 {
            1.0
        } else {
            stats.total_len as f32 / stats.docs as f32
        };
        let working_text = index.working_text.read();
        let working_postings = working_text.postings.get(q.namespace.as_str());
        for term in &terms {
            let mut hits: Vec<(Uuid, u32, u32, Tier)> = Vec::new();
            if let Some(p) = working_postings.and_then(|p| p.get(term)) {
                for (id, tf) in p {
                    let len = attrs.by_id.get(id).map_or(1, |a| a.doc_len);
                    hits.push((*id, *tf, len, Tier::Working));
                }
            }
            // Warm and cold memories share the postings in RocksDB.
            for (id, tf, len) in ctx.warm.postings(&q.namespace, term)? {
                let tier = attrs.by_id.get(&id).map_or(Tier::Warm, |a| a.tier);
                hits.push((id, tf, len, tier));
            }
            let term_idf = idf(stats.docs.max(hits.len() as u64), hits.len() as u64);
            for (id, tf, len, tier) in hits {
                if ok(&id, tier).is_some() {
                    *bm25.entry(id).or_default() += bm25_term(term_idf, tf, len, avg_len);
                }
            }
        }
        drop(working_text);
        // Metadata last: it reads the memory.
        bm25.retain(|id, _| meta_ok(id));
    }
    // Candidates: the best `pool` by each signal.
    let mut candidates: Vec<Uuid> = similarity.keys().copied().collect();
    if use_text {
        let mut top = TopN::new(pool);
        for (id, s) in &bm25 {
            top.push(*s, *id);
        }
        candidates.extend(
            top.into_map()
                .into_keys()
                .filter(|id| !similarity.contains_key(id)),
        );
    }

    let total = similarity.len()
        + bm25
            .keys()
            .filter(|id| !similarity.contains_key(id))
            .count();
    let best_bm25 = bm25.values().copied().fold(0f32, f32::max);
    let (w_sem, w_text, w_imp, w_rec, w_ctx) = match q.mode {
        SearchMode::Semantic => (1.0, 0.0, 0.0, 0.0, 0.0),
        SearchMode::Text => (0.0, 1.0, 0.0, 0.0, 0.0),
        SearchMode::Hybrid => (
            if use_vectors { q.weights.semantic } else { 0.0 },
            if use_text { q.weights.text } else { 0.0 },
            q.weights.importance,
            q.weights.recency,
            if q.context_window_us > 0 {
                q.weights.context
            } else {
                0.0
            },
        ),
    };
    // Hybrid rescales similarity over the vector candidates (min-max): a model's cosines sit in
    // a narrow band of its own, BM25 is already divided by its best.
    let (sim_lo, sim_hi) = similarity
        .values()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), s| {
            (lo.min(*s), hi.max(*s))
        });
    let half_life = q.recency_half_life_hours.max(1e-6);
    let recency_of = |attr: &Attr| {
        let age_hours = ((ctx.now_us - attr.created_at_us).max(0) as f64) / 3.6e9;
        0.5f64.powf(age_hours / half_life) as f32
    };
    let component = |value: f32, weight: f32| Component { value, weight };
    let mut out = Vec::with_capacity(candidates.len());
    for id in candidates {
        let Some(attr) = attrs.by_id.get(&id) else {
            continue;
        };
        let sim = match similarity.get(&id) {
            Some(s) => Some(*s),
            None => match &unit_query {
                Some(uq) => vector_of(ctx, &id, attr)?.map(|v| cosine(uq, &v)),
                None => None,
            },
        };
        if let (Some(t), Some(s)) = (q.similarity_threshold, sim) {
            if use_vectors && s < t {
                continue;
            }
        }
        if use_vectors && q.similarity_threshold.is_some() && sim.is_none() {
            continue;
        }
        let raw_bm25 = bm25.get(&id).copied().unwrap_or(0.0);
        let text_value = match q.mode {
            SearchMode::Text => raw_bm25,
            _ if best_bm25 > 0.0 => raw_bm25 / best_bm25,
            _ => 0.0,
        };
        let sem_value = match (q.mode, sim) {
            (SearchMode::Semantic, s) => s.unwrap_or(0.0),
            (_, None) => 0.0,
            (_, Some(s)) if sim_hi > sim_lo => ((s - sim_lo) / (sim_hi - sim_lo)).clamp(0.0, 1.0),
            (_, Some(s)) => s.max(0.0),
        };
        let explanation = Explanation {
            semantic: component(sem_value, w_sem),
            text: component(text_value, w_text),
            importance: component(attr.importance, w_imp),
            recency: component(recency_of(attr), w_rec),
            context: component(0.0, w_ctx),
            bm25: raw_bm25,
            similarity: sim,
        };
        out.push(Ranked {
            id,
            score: explanation.base(),
            similarity: sim,
            explanation,
        });
    }

    // Context: the best candidates by base score (as many as asked for, at least
    // CONTEXT_LENDERS) lend it to their neighbours in time, the best lender counting; a
    // neighbour in neither pool joins the candidates. Lending from the pools' tails added
    // nothing on the dev set and made results hang on which near-ties an approximate walk found.
    if w_ctx > 0.0 {
        if let Some(timeline) = attrs.by_time.get(q.namespace.as_str()) {
            out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
            let lenders = want.max(CONTEXT_LENDERS).min(out.len());
            let mut lent: HashMap<Uuid, f32> = HashMap::new();
            for r in &out[..lenders] {
                let Some(attr) = attrs.by_id.get(&r.id) else {
                    continue;
                };
                let key = (attr.created_at_us, r.id);
                let before = timeline.range(..key).next_back();
                let after = timeline
                    .range((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded))
                    .next();
                for (t, n) in before.into_iter().chain(after) {
                    if (t - attr.created_at_us).abs() <= q.context_window_us {
                        let best = lent.entry(*n).or_insert(0.0);
                        *best = best.max(r.score);
                    }
                }
            }
            let position: HashMap<Uuid, usize> =
                out.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
            let mut joined: Vec<(Uuid, f32)> = Vec::new();
            for (id, value) in lent {
                match position.get(&id) {
                    Some(&i) => {
                        let r = &mut out[i];
                        r.explanation.context.value = value;
                        r.score = r.explanation.score();
                    }
                    // With a similarity threshold every result needs a similarity.
                    None if q.similarity_threshold.is_none() => joined.push((id, value)),
                    None => {}
                }
            }
            joined.sort_unstable_by_key(|(id, _)| *id);
            for (id, value) in joined {
                let Some(attr) = attrs.by_id.get(&id) else {
                    continue;
                };
                if !ctx.attr_ok(q, attr) || !meta_ok(&id) {
                    continue;
                }
                let explanation = Explanation {
                    semantic: component(0.0, w_sem),
                    text: component(0.0, w_text),
                    importance: component(attr.importance, w_imp),
                    recency: component(recency_of(attr), w_rec),
                    context: component(value, w_ctx),
                    bm25: 0.0,
                    similarity: None,
                };
                out.push(Ranked {
                    id,
                    score: explanation.score(),
                    similarity: None,
                    explanation,
                });
            }
        }
    }
    if let Some(e) = read_error.into_inner() {
        return Err(e);
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    // A similarity threshold drops candidates after counting: count what is left.
    let total = if q.similarity_threshold.is_some() {
        out.len()
    } else {
        total.max(out.len())
    };
    Ok((out, total))
}

/// The smallest set of memories known to hold every match, if it has at most `limit`: the
/// namespace's, or a tag filter's (the smallest `all_of` tag's set, else the union of the
/// `any_of` sets). The other conditions are checked per candidate.
fn small_candidate_set(attrs: &super::Attrs, q: &SearchQuery, limit: usize) -> Option<Vec<Uuid>> {
    let ns: std::sync::Arc<str> = std::sync::Arc::from(q.namespace.as_str());
    let set_of = |tag: &String| {
        attrs
            .by_tag
            .get(&(std::sync::Arc::clone(&ns), Box::from(tag.as_str())))
    };
    let in_namespace = attrs.by_namespace.get(&ns);
    let namespace_size = in_namespace.map_or(0, |s| s.len());
    // Sizes first: collecting a big set only to drop it would cost more than the walk.
    let tags_size = if !q.tags_all.is_empty() {
        q.tags_all
            .iter()
            .map(|t| set_of(t).map_or(0, |s| s.len()))
            .min()
    } else if !q.tags_any.is_empty() {
        Some(
            q.tags_any
                .iter()
                .map(|t| set_of(t).map_or(0, |s| s.len()))
                .sum(),
        )
    } else {
        None
    };
    if tags_size.is_some_and(|t| t <= namespace_size) {
        let t = tags_size.unwrap_or(0);
        if t > limit {
            return None;
        }
        if !q.tags_all.is_empty() {
            let smallest = q
                .tags_all
                .iter()
                .min_by_key(|t| set_of(t).map_or(0, |s| s.len()))?;
            return Some(
                set_of(smallest)
                    .map(|s| s.iter().copied().collect())
                    .unwrap_or_default(),
            );
        }
        let mut out: Vec<Uuid> = q
            .tags_any
            .iter()
            .filter_map(set_of)
            .flat_map(|s| s.iter().copied())
            .collect();
        out.sort_unstable();
        out.dedup();
        return Some(out);
    }
    if namespace_size > limit {
        return None;
    }
    Some(
        in_namespace
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default(),
    )
}

/// The vector of a searchable memory, wherever it is.
fn vector_of(ctx: &Ctx<'_>, id: &Uuid, attr: &Attr) -> Result<Option<Vec<f32>>, EngineError> {
    attr.vector_crc.map_or(Ok(None), |_| match attr.tier {
        Tier::Working => Ok(ctx
            .index
            .working_vectors
            .read()
            .get(&attr.namespace)
            .and_then(|a| a.vector(id, ctx.index.dimensions).map(<[f32]>::to_vec))),
        Tier::Warm => match ctx.index.hnsw.lagging_vector(id) {
            Some(v) => Ok(Some(v.to_vec())),
            None => ctx.warm.vector(id),
        },
        Tier::Cold => Ok((ctx.read)(id)?.and_then(|m| m.embedding)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_n_keeps_the_best() {
        let mut t = TopN::new(2);
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
        for (i, id) in ids.iter().enumerate() {
            t.push(i as f32, *id);
        }
        let m = t.into_map();
        assert_eq!(m.len(), 2);
        assert!(m.contains_key(&ids[3]) && m.contains_key(&ids[2]));
    }

    #[test]
    fn cosine_of_parallel_and_orthogonal() {
        let q = [1.0, 0.0, 0.0];
        assert!((cosine(&q, &[2.0, 0.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&q, &[0.0, 3.0, 0.0]).abs() < 1e-6);
        assert_eq!(cosine(&q, &[0.0, 0.0, 0.0]), 0.0);
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let naive: f32 = a.iter().map(|x| x * x).sum();
        assert!((dot(&a, &a) - naive).abs() < 1e-3);
    }
}

//! Ranking the past: an as-of search scores every memory of a namespace as it was at one
//! moment. No index holds the past, so the scoring is exact over those versions: cosine against
//! each version's own vector, BM25 with statistics of that moment's documents, importance, and
//! recency as seen from that moment. The context component is not used.

use uuid::Uuid;

use super::filter::MetadataFilter;
use super::request::{Component, Explanation, SearchMode, SearchQuery};
use crate::model::{Memory, Status};
use crate::text::{bm25_term, idf, Analyzer};
use crate::vector::{cosine, norm};

/// A ranked past version: its id, its score and why.
#[derive(Debug, Clone)]
pub(crate) struct PastRanked {
    pub id: Uuid,
    pub score: f32,
    pub explanation: Explanation,
}

/// What ranking needs of one past version that passed the filters: a few dozen bytes, so a
/// namespace of millions is scored without holding its memories.
#[derive(Debug, Clone)]
struct Candidate {
    id: Uuid,
    similarity: Option<f32>,
    /// Occurrences of each query term, in the order of `Ranker::terms`.
    tf: Vec<u32>,
    len: u32,
    importance: f32,
    created_at_us: i64,
}

/// Whether `m` (a version current at `at_us`) passes the query's filters.
fn passes(q: &SearchQuery, m: &Memory, at_us: i64) -> bool {
    let status_ok =
        m.status == Status::Active || (m.status == Status::Superseded && q.include_superseded);
    let has = |t: &String| m.tags.iter().any(|x| x == t);
    status_ok
        && m.namespace == q.namespace
        && m.expires_at_us.is_none_or(|e| e > at_us)
        && q.importance_min.is_none_or(|x| m.importance >= x)
        && q.importance_max.is_none_or(|x| m.importance <= x)
        && q.created_start_us.is_none_or(|s| m.created_at_us >= s)
        && q.created_end_us.is_none_or(|e| m.created_at_us <= e)
        && q.tags_all.iter().all(has)
        && (q.tags_any.is_empty() || q.tags_any.iter().any(has))
        && (q.metadata.is_empty() || metadata_ok(&q.metadata, &m.metadata_json))
}

fn metadata_ok(filters: &[MetadataFilter], json: &str) -> bool {
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json) {
        Ok(map) => filters.iter().all(|f| f.matches(&map)),
        Err(_) => false,
    }
}

/// Scores one query over the versions of one moment, fed one at a time ([`Ranker::add`]),
/// then ranked together ([`Ranker::rank`]): BM25 statistics are those of the documents of that
/// moment that passed the filters.
pub(crate) struct Ranker<'a> {
    q: &'a SearchQuery,
    analyzer: &'a Analyzer,
    at_us: i64,
    unit_query: Option<Vec<f32>>,
    terms: Vec<String>,
    candidates: Vec<Candidate>,
    /// Documents that passed the filters, and their total length (for BM25's statistics).
    n_docs: u64,
    total_len: u64,
    df: Vec<u64>,
}

impl<'a> Ranker<'a> {
    pub(crate) fn new(q: &'a SearchQuery, analyzer: &'a Analyzer, at_us: i64) -> Self {
        let unit_query: Option<Vec<f32>> = (q.mode != SearchMode::Text)
            .then_some(q.embedding.as_ref())
            .flatten()
            .map(|e| {
                let n = norm(e);
                e.iter()
                    .map(|x| if n > 0.0 { x / n } else { 0.0 })
                    .collect()
            });
        let terms: Vec<String> = match (&q.text, q.mode) {
            (Some(t), SearchMode::Hybrid | SearchMode::Text) => analyzer.query_terms(t),
            _ => Vec::new(),
        };
        Ranker {
            q,
            analyzer,
            at_us,
            unit_query,
            df: vec![0; terms.len()],
            terms,
            candidates: Vec::new(),
            n_docs: 0,
            total_len: 0,
        }
    }

    /// Takes `m`, the version of one memory current at the moment.
    pub(crate) fn add(&mut self, m: &Memory) {
        let q = self.q;
        if !passes(q, m, self.at_us) {
            return;
        }
        let mut tf = vec![0u32; self.terms.len()];
        let mut len = 0;
        if !self.terms.is_empty() {
            let (freqs, l) = self.analyzer.frequencies(&m.content);
            len = l;
            for (term, f) in freqs {
                if let Some(k) = self.terms.iter().position(|t| *t == term) {
                    tf[k] = f;
                    self.df[k] += 1;
                }
            }
            self.n_docs += 1;
            self.total_len += u64::from(len);
        }
        let similarity = match (&self.unit_query, &m.embedding) {
            (Some(uq), Some(v)) if v.len() == uq.len() => Some(cosine(uq, v)),
            _ => None,
        };
        if let (Some(t), Some(_)) = (q.similarity_threshold, &self.unit_query) {
            if similarity.is_none_or(|s| s < t) {
                return;
            }
        }
        self.candidates.push(Candidate {
            id: m.id,
            similarity,
            tf,
            len,
            importance: m.importance,
            created_at_us: m.created_at_us,
        });
    }

    /// Every candidate that matched by vector or words, best first, and their count.
    pub(crate) fn rank(self) -> (Vec<PastRanked>, usize) {
        let q = self.q;
        let avg_len = if self.n_docs == 0 {
            1.0
        } else {
            self.total_len as f32 / self.n_docs as f32
        };
        let idfs: Vec<f32> = self.df.iter().map(|d| idf(self.n_docs, *d)).collect();
        let scored: Vec<(&Candidate, f32)> = self
            .candidates
            .iter()
            .map(|c| {
                let bm25: f32 = (0..self.terms.len())
                    .filter(|k| c.tf[*k] > 0)
                    .map(|k| bm25_term(idfs[k], c.tf[k], c.len, avg_len))
                    .sum();
                (c, bm25)
            })
            .filter(|(c, bm25)| match q.mode {
                SearchMode::Semantic => c.similarity.is_some(),
                SearchMode::Text => *bm25 > 0.0,
                SearchMode::Hybrid => c.similarity.is_some() || *bm25 > 0.0,
            })
            .collect();
        let best_bm25 = scored.iter().map(|s| s.1).fold(0f32, f32::max);
        let (lo, hi) = scored
            .iter()
            .filter_map(|s| s.0.similarity)
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), s| {
                (lo.min(s), hi.max(s))
            });
        let (w_sem, w_text, w_imp, w_rec) = match q.mode {
            SearchMode::Semantic => (1.0, 0.0, 0.0, 0.0),
            SearchMode::Text => (0.0, 1.0, 0.0, 0.0),
            SearchMode::Hybrid => (
                if self.unit_query.is_some() {
                    q.weights.semantic
                } else {
                    0.0
                },
                if self.terms.is_empty() {
                    0.0
                } else {
                    q.weights.text
                },
                q.weights.importance,
                q.weights.recency,
            ),
        };
        let half_life = q.recency_half_life_hours.max(1e-6);
        let component = |value: f32, weight: f32| Component { value, weight };
        let total = scored.len();
        let mut out: Vec<PastRanked> = scored
            .into_iter()
            .map(|(c, bm25)| {
                let sem = match (q.mode, c.similarity) {
                    (SearchMode::Semantic, s) => s.unwrap_or(0.0),
                    (_, None) => 0.0,
                    (_, Some(s)) if hi > lo => ((s - lo) / (hi - lo)).clamp(0.0, 1.0),
                    (_, Some(s)) => s.max(0.0),
                };
                let text = match q.mode {
                    SearchMode::Text => bm25,
                    _ if best_bm25 > 0.0 => bm25 / best_bm25,
                    _ => 0.0,
                };
                let age_hours = ((self.at_us - c.created_at_us).max(0) as f64) / 3.6e9;
                let explanation = Explanation {
                    semantic: component(sem, w_sem),
                    text: component(text, w_text),
                    importance: component(c.importance, w_imp),
                    recency: component(0.5f64.powf(age_hours / half_life) as f32, w_rec),
                    context: component(0.0, 0.0),
                    bm25,
                    similarity: c.similarity,
                };
                PastRanked {
                    id: c.id,
                    score: explanation.score(),
                    explanation,
                }
            })
            .collect();
        out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        (out, total)
    }
}

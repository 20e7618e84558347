//! What a search asks and what it answers: the mode, the hybrid weights, the query with its
//! filters, and the scored hits with the explanation of each score. Running one is
//! [`super::query`]'s.

use super::filter::MetadataFilter;
use crate::model::{Memory, Tier};

/// Which signals rank the results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchMode {
    #[default]
    Hybrid,
    Semantic,
    Text,
}

impl SearchMode {
    pub fn parse(s: &str) -> Option<SearchMode> {
        match s {
            "hybrid" => Some(SearchMode::Hybrid),
            "semantic" => Some(SearchMode::Semantic),
            "text" => Some(SearchMode::Text),
            _ => None,
        }
    }
}

/// Weights of the hybrid score's components.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HybridWeights {
    pub semantic: f32,
    pub text: f32,
    pub importance: f32,
    pub recency: f32,
    /// Of the best base score among a memory's neighbours (see [`Explanation::context`]).
    pub context: f32,
}

impl Default for HybridWeights {
    /// Chosen on the conversational set in `../shared/data/locomo-dev` with each conversation
    /// held out in turn (docs/benchmarks.md, "Recall").
    fn default() -> Self {
        HybridWeights {
            semantic: 0.3,
            text: 0.7,
            importance: 0.05,
            recency: 0.05,
            context: 0.4,
        }
    }
}

/// Fewest candidates that lend context (see [`Explanation::context`]).
pub const CONTEXT_LENDERS: usize = 10;

/// Default for [`SearchQuery::context_window_us`]: ten minutes.
pub const DEFAULT_CONTEXT_WINDOW_US: i64 = 600_000_000;

/// A search request, validated by the caller.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub namespace: String,
    pub text: Option<String>,
    pub embedding: Option<Vec<f32>>,
    pub mode: SearchMode,
    pub tiers: Vec<Tier>,
    pub tags_all: Vec<String>,
    pub tags_any: Vec<String>,
    pub metadata: Vec<MetadataFilter>,
    pub importance_min: Option<f32>,
    pub importance_max: Option<f32>,
    pub created_start_us: Option<i64>,
    pub created_end_us: Option<i64>,
    pub limit: usize,
    pub offset: usize,
    pub similarity_threshold: Option<f32>,
    pub weights: HybridWeights,
    pub recency_half_life_hours: f64,
    /// How far apart in `created_at` two memories of a namespace may be and still be
    /// neighbours for the context component (0: no neighbours).
    pub context_window_us: i64,
    /// Superseded memories match too.
    pub include_superseded: bool,
    /// Search the namespace as it was at this moment (µs), exactly (see `search::past`).
    pub as_of_us: Option<i64>,
}

impl SearchQuery {
    /// A query with defaults: hybrid, working and warm tiers, 10 results, no filters.
    pub fn new(namespace: impl Into<String>) -> SearchQuery {
        SearchQuery {
            namespace: namespace.into(),
            text: None,
            embedding: None,
            mode: SearchMode::Hybrid,
            tiers: vec![Tier::Working, Tier::Warm],
            tags_all: Vec::new(),
            tags_any: Vec::new(),
            metadata: Vec::new(),
            importance_min: None,
            importance_max: None,
            created_start_us: None,
            created_end_us: None,
            limit: 10,
            offset: 0,
            similarity_threshold: None,
            weights: HybridWeights::default(),
            recency_half_life_hours: 168.0,
            context_window_us: DEFAULT_CONTEXT_WINDOW_US,
            include_superseded: false,
            as_of_us: None,
        }
    }
}

/// One part of a score: `value × weight`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Component {
    pub value: f32,
    pub weight: f32,
}

impl Component {
    pub fn contribution(&self) -> f32 {
        self.value * self.weight
    }
}

/// Why a result scored what it did: the score is the sum of the components' contributions.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// Cosine similarity; in hybrid rescaled over the vector candidates, `(s − lowest) /
    /// (highest − lowest)` clamped to 0..1, so the best match is 1 whatever the model's range.
    pub semantic: Component,
    /// BM25, divided by the best BM25 among the candidates in hybrid.
    pub text: Component,
    pub importance: Component,
    /// `0.5 ^ (age_hours / half_life_hours)`, age since `created_at`.
    pub recency: Component,
    /// Hybrid only: the best base score (the four components above summed) among the memory's
    /// neighbours that lend — the best candidates by base score (as many as the search asks
    /// for, at least [`CONTEXT_LENDERS`]) just before and after it in its namespace by
    /// `created_at`, at most the context window apart. Conversations put the answer next to
    /// the turn that matches the question; a neighbour that was in neither candidate pool joins
    /// the results by this component alone (its semantic and text values are 0).
    pub context: Component,
    /// The raw BM25 score.
    pub bm25: f32,
    /// The raw cosine similarity, when the memory has a vector and the query one.
    pub similarity: Option<f32>,
}

impl Explanation {
    /// The score without the context component: what a memory lends its neighbours.
    pub fn base(&self) -> f32 {
        self.semantic.contribution()
            + self.text.contribution()
            + self.importance.contribution()
            + self.recency.contribution()
    }

    /// The whole score: the sum of every component's contribution.
    pub fn score(&self) -> f32 {
        self.base() + self.context.contribution()
    }
}

#[derive(Debug, Clone)]
pub struct SearchHit {
    pub memory: Memory,
    pub score: f32,
    /// Cosine distance (1 − similarity), when both have vectors.
    pub distance: Option<f32>,
    pub explanation: Explanation,
}

#[derive(Debug, Clone)]
pub struct SearchResults {
    pub hits: Vec<SearchHit>,
    /// Candidates that passed every filter and were ranked (before `offset`/`limit`).
    pub total_count: usize,
}

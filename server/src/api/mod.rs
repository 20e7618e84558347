//! JSON wire types of the v1 API and their conversion to and from engine types. Engine types are
//! never serialized directly: this module is the only place that knows the wire shape.

pub mod history;
pub mod migrations;
pub mod namespaces;
pub mod openapi;
pub mod replies;
pub mod vector;

pub use replies::MemoryOut;

use engram_engine::search::{
    HybridWeights, MetadataCondition, MetadataFilter, SearchMode, SearchQuery,
};
use engram_engine::{
    is_valid_namespace, namespace_rule, MemoryPatch, NewMemory, Tier, UnknownName, Uuid,
    DEFAULT_IMPORTANCE, DEFAULT_NAMESPACE,
};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::ApiError;
use vector::VectorFormat;

/// A value that must be a JSON object. serde's derived `Deserialize` for a struct also accepts
/// a JSON array (its fields in order), so `[true]` would pass for `{"dry_run": true}`; every
/// request body, and every object inside one, goes through this instead.
pub(crate) struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Fields<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Fields(std::marker::PhantomData))
            .map(Object)
    }
}

/// An optional field that, when present and not `null`, must be a JSON object.
fn optional_object<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Ok(Option::<Object<T>>::deserialize(d)?.map(|Object(t)| t))
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn nullable<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMemory {
    /// Namespace (default `default`): 1 to 128 characters of A-Z a-z 0-9 . _ : -
    #[schemars(regex(pattern = r"^[A-Za-z0-9._:-]{1,128}$"))]
    pub namespace: Option<String>,
    /// The memory's text (at most 1 MiB; unique per namespace among live memories).
    pub content: String,
    /// A vector of `embedding.dimensions` finite numbers; without it (and without
    /// `embedding_b64`) the configured embedder computes one in the background.
    pub embedding: Option<Vec<f32>>,
    /// The same vector as base64 of its little-endian 32-bit floats (OpenAI's
    /// `encoding_format: "base64"`); instead of `embedding`, cheaper to send and to parse.
    pub embedding_b64: Option<String>,
    /// 0 to 1 (default 0.5).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub importance_score: Option<f64>,
    /// A JSON object (at most 64 KiB serialized).
    pub metadata: Option<Map<String, Value>>,
    /// At most 64 tags of at most 128 bytes each.
    pub tags: Option<Vec<String>>,
    /// Id of a related memory.
    pub parent_id: Option<String>,
    /// RFC 3339 time the memory is about (default now).
    pub created_at: Option<String>,
    /// RFC 3339 time after which the memory is gone.
    pub expires_at: Option<String>,
    /// Ids of memories (in the same namespace) this one replaces: each becomes `superseded`
    /// (hidden from search, lists and recall unless asked for) in the same group commit.
    #[schemars(length(max = 100))]
    pub supersedes: Option<Vec<String>>,
    /// Who writes it (kept with the version; the `X-Engram-Actor` header says the same).
    pub actor: Option<String>,
}

/// `POST /api/v1/admin/migrate` (the body is optional).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// Plan the moves and report them without making them.
    pub dry_run: Option<bool>,
}

/// `POST /api/v1/admin/test-clock`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestClockRequest {
    /// How far to move the engine's clock forward, in milliseconds (at most a year).
    #[schemars(range(max = 31_622_400_000u64))]
    pub advance_ms: u64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
/// `POST /api/v1/memories/batch`: 1 to 1,000 memories.
pub struct BatchCreate {
    /// Each item is a `CreateMemory`, parsed and validated on its own: an item that is not
    /// valid is answered with its error in its place while the others are stored. (Kept as raw
    /// JSON so each item is parsed once.)
    #[schemars(with = "Vec<Value>", length(min = 1, max = 1000))]
    pub memories: Vec<Box<RawValue>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
/// `PATCH /api/v1/memories/{id}`: the fields given change, the rest stay; `null` clears
/// `embedding`, `parent_id` and `expires_at`.
pub struct PatchMemory {
    /// Must equal the memory's namespace if given (namespaces cannot change).
    #[schemars(regex(pattern = r"^[A-Za-z0-9._:-]{1,128}$"))]
    pub namespace: Option<String>,
    /// New content (the memory is embedded again).
    pub content: Option<String>,
    /// A new vector (`null`: drop the vector; the configured embedder computes one).
    #[serde(default, deserialize_with = "nullable")]
    pub embedding: Option<Option<Vec<f32>>>,
    /// A new vector as base64 of little-endian 32-bit floats, instead of `embedding`.
    pub embedding_b64: Option<String>,
    #[schemars(range(min = 0.0, max = 1.0))]
    pub importance_score: Option<f64>,
    pub metadata: Option<Map<String, Value>>,
    pub tags: Option<Vec<String>>,
    /// `active`, `archived` or `deleted` (setting `active` restores a deleted or superseded
    /// memory; `superseded` is set only by a create's `supersedes`).
    #[schemars(extend("enum" = ["active", "archived", "deleted", null]))]
    pub status: Option<String>,
    /// Move to `working`, `warm` or `cold`.
    #[schemars(extend("enum" = ["working", "warm", "cold", null]))]
    pub tier: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub parent_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub expires_at: Option<Option<String>>,
    /// Who makes the change (kept with the new version; or the `X-Engram-Actor` header).
    pub actor: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
/// Tags a result must carry: every one of `all_of`, at least one of `any_of`.
pub struct TagFilter {
    pub all_of: Option<Vec<String>>,
    pub any_of: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
/// Inclusive bounds, 0 to 1.
pub struct NumRange {
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min: Option<f64>,
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
/// Inclusive RFC 3339 bounds.
pub struct DateRange {
    pub start: Option<String>,
    pub end: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
/// Weights of the hybrid score's components (0 to 1000 each, not all zero); a weight not given
/// keeps its default.
pub struct Weights {
    /// Default 0.3. Applies to the similarity rescaled over the vector candidates.
    pub semantic: Option<f64>,
    /// Default 0.7. Applies to BM25 divided by the best BM25.
    pub text: Option<f64>,
    /// Default 0.05.
    pub importance: Option<f64>,
    /// Default 0.05.
    pub recency: Option<f64>,
    /// Default 0.4. Applies to the best score among the memory's neighbours in time (0: off).
    pub context: Option<f64>,
}

/// `POST /api/v1/search`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// Words to match (BM25) and, without `query_embedding`, to embed (at most 64 KiB).
    pub query_text: Option<String>,
    /// A query vector of `embedding.dimensions` numbers.
    pub query_embedding: Option<Vec<f32>>,
    /// The query vector as base64 of little-endian 32-bit floats, instead of `query_embedding`.
    pub query_embedding_b64: Option<String>,
    /// `hybrid` (default), `semantic` or `text`.
    #[schemars(extend("enum" = ["hybrid", "semantic", "text", null]))]
    pub search_type: Option<String>,
    /// Namespace to search (default `default`).
    #[schemars(regex(pattern = r"^[A-Za-z0-9._:-]{1,128}$"))]
    pub namespace: Option<String>,
    /// Tiers to search (default `working` and `warm`).
    pub tiers: Option<Vec<String>>,
    /// Also search the cold tier.
    pub include_cold: Option<bool>,
    #[serde(default, deserialize_with = "optional_object")]
    pub tags: Option<TagFilter>,
    /// `{"key": value}` for equality, or `{"key": {"$eq"|"$in"|"$gt"|"$gte"|"$lt"|"$lte": …}}`.
    pub metadata_filters: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "optional_object")]
    pub importance_range: Option<NumRange>,
    /// On `created_at`.
    #[serde(default, deserialize_with = "optional_object")]
    pub date_range: Option<DateRange>,
    /// 1 to 1000 (default 10).
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<i64>,
    /// 0 to 10,000 (default 0).
    #[schemars(range(min = 0, max = 10000))]
    pub offset: Option<i64>,
    /// Minimum cosine similarity, -1 to 1.
    #[schemars(range(min = -1.0, max = 1.0))]
    pub similarity_threshold: Option<f64>,
    #[serde(default, deserialize_with = "optional_object")]
    pub hybrid_weights: Option<Weights>,
    /// Half-life of the recency component (default 168).
    pub recency_half_life_hours: Option<f64>,
    /// How far apart in `created_at` two memories may be and still lend each other score as
    /// neighbours (hybrid's `context` component), 0 to 604,800 (default 600; 0: off).
    #[schemars(range(min = 0.0, max = 604800.0))]
    pub context_window_seconds: Option<f64>,
    /// Add each result's score components.
    pub explain_score: Option<bool>,
    /// Include metadata in results (default true).
    pub include_metadata: Option<bool>,
    /// Include vectors in results (default false).
    pub include_embedding: Option<bool>,
    /// How included vectors are written: `float` (default, `embedding`) or `base64`
    /// (`embedding_b64`).
    #[schemars(extend("enum" = ["float", "base64", null]))]
    pub embedding_format: Option<String>,
    /// Find superseded memories too (default false: only current ones).
    pub include_superseded: Option<bool>,
    /// Search the namespace as it was at this moment (RFC 3339): every memory that existed
    /// then, with its contents then, scored exactly (no index; tiers do not apply to the past,
    /// and the context component is not used).
    pub as_of: Option<String>,
}

/// Widest `context_window_seconds`: a week.
pub const MAX_CONTEXT_WINDOW_SECONDS: f64 = 604_800.0;

/// Largest `offset` a search accepts: deep pages cost a full ranking each.
pub const MAX_SEARCH_OFFSET: i64 = 10_000;
/// Longest `query_text`, in bytes.
pub const MAX_QUERY_TEXT_BYTES: usize = 64 * 1024;

/// How the reply is shaped (not part of the engine query).
#[derive(Debug, Clone, Copy)]
pub struct SearchShape {
    pub explain: bool,
    pub include_metadata: bool,
    /// Whether results carry their vectors, and in which form.
    pub embedding: Option<VectorFormat>,
}

fn unit_weight(field: &'static str, v: Option<f64>, default: f32) -> Result<f32, ApiError> {
    match v {
        None => Ok(default),
        Some(x) if x.is_finite() && (0.0..=1000.0).contains(&x) => Ok(x as f32),
        Some(x) => Err(ApiError::invalid(
            field,
            format!("must be a number from 0 to 1000, got {x}"),
        )),
    }
}

fn metadata_filters(m: Map<String, Value>) -> Result<Vec<MetadataFilter>, ApiError> {
    let mut out = Vec::new();
    for (key, v) in m {
        let field = || format!("metadata_filters.{key}");
        let ops = match &v {
            Value::Object(o) if !o.is_empty() && o.keys().all(|k| k.starts_with('$')) => o,
            _ => {
                out.push(MetadataFilter {
                    key,
                    condition: MetadataCondition::Eq(v),
                });
                continue;
            }
        };
        for (op, arg) in ops {
            let num = || {
                arg.as_f64().ok_or_else(|| {
                    ApiError::invalid(&field(), format!("{op} needs a number, got {arg}"))
                })
            };
            let condition = match op.as_str() {
                "$eq" => MetadataCondition::Eq(arg.clone()),
                "$in" => MetadataCondition::In(
                    arg.as_array()
                        .ok_or_else(|| {
                            ApiError::invalid(&field(), format!("$in needs an array, got {arg}"))
                        })?
                        .clone(),
                ),
                "$gt" => MetadataCondition::Gt(num()?),
                "$gte" => MetadataCondition::Gte(num()?),
                "$lt" => MetadataCondition::Lt(num()?),
                "$lte" => MetadataCondition::Lte(num()?),
                other => {
                    return Err(ApiError::invalid(
                        &field(),
                        format!("unknown operator {other}; use $eq, $in, $gt, $gte, $lt or $lte"),
                    ))
                }
            };
            out.push(MetadataFilter {
                key: key.clone(),
                condition,
            });
        }
    }
    Ok(out)
}

impl SearchRequest {
    /// Validates the request into an engine query (without a query vector computed from the
    /// text: the caller does that) and the reply's shape.
    pub fn into_query(
        self,
        forced: Option<SearchMode>,
    ) -> Result<(SearchQuery, SearchShape), ApiError> {
        let namespace = self
            .namespace
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        check_namespace(&namespace)?;
        let mut q = SearchQuery::new(namespace);
        // A search_type is checked even where the path fixes the mode: `fuzzy` is no mode.
        let named = self
            .search_type
            .as_deref()
            .map(|t| {
                SearchMode::parse(t).ok_or_else(|| {
                    ApiError::invalid(
                        "search_type",
                        format!("must be hybrid, semantic or text, got {t:?}"),
                    )
                })
            })
            .transpose()?;
        q.mode = forced.or(named).unwrap_or(SearchMode::Hybrid);
        if let Some(t) = &self.query_text {
            if t.len() > MAX_QUERY_TEXT_BYTES {
                return Err(ApiError::invalid(
                    "query_text",
                    format!("is {} bytes; the limit is {MAX_QUERY_TEXT_BYTES}", t.len()),
                ));
            }
        }
        q.text = self.query_text.filter(|t| !t.trim().is_empty());
        q.embedding = vector::either(
            ("query_embedding", self.query_embedding),
            ("query_embedding_b64", self.query_embedding_b64),
        )?;
        if q.mode == SearchMode::Text && q.text.is_none() {
            return Err(ApiError::invalid(
                "query_text",
                "is required (and must not be blank) for a text search",
            ));
        }
        if let Some(tiers) = self.tiers {
            if tiers.is_empty() {
                return Err(ApiError::invalid("tiers", "must name at least one tier"));
            }
            q.tiers = tiers
                .iter()
                .map(|t| parse_name("tiers", t))
                .collect::<Result<_, _>>()?;
        }
        if self.include_cold == Some(true) && !q.tiers.contains(&Tier::Cold) {
            q.tiers.push(Tier::Cold);
        }
        if let Some(tags) = self.tags {
            q.tags_all = tags.all_of.unwrap_or_default();
            q.tags_any = tags.any_of.unwrap_or_default();
        }
        if let Some(m) = self.metadata_filters {
            q.metadata = metadata_filters(m)?;
        }
        if let Some(r) = self.importance_range {
            let bound = |field: &'static str, v: Option<f64>| -> Result<Option<f32>, ApiError> {
                v.map(|x| {
                    if x.is_finite() && (0.0..=1.0).contains(&x) {
                        Ok(x as f32)
                    } else {
                        Err(ApiError::invalid(
                            field,
                            format!("must be between 0.0 and 1.0, got {x}"),
                        ))
                    }
                })
                .transpose()
            };
            q.importance_min = bound("importance_range.min", r.min)?;
            q.importance_max = bound("importance_range.max", r.max)?;
            if let (Some(a), Some(b)) = (q.importance_min, q.importance_max) {
                if a > b {
                    return Err(ApiError::invalid("importance_range", "min is above max"));
                }
            }
        }
        if let Some(d) = self.date_range {
            q.created_start_us = d
                .start
                .as_deref()
                .map(|s| parse_time("date_range.start", s))
                .transpose()?;
            q.created_end_us = d
                .end
                .as_deref()
                .map(|s| parse_time("date_range.end", s))
                .transpose()?;
            if let (Some(a), Some(b)) = (q.created_start_us, q.created_end_us) {
                if a > b {
                    return Err(ApiError::invalid("date_range", "start is after end"));
                }
            }
        }
        q.limit = match self.limit {
            None => 10,
            Some(n) if (1..=1000).contains(&n) => n as usize,
            Some(n) => {
                return Err(ApiError::invalid(
                    "limit",
                    format!("must be 1 to 1000, got {n}"),
                ))
            }
        };
        q.offset = match self.offset {
            None => 0,
            Some(n) if (0..=MAX_SEARCH_OFFSET).contains(&n) => n as usize,
            Some(n) => {
                return Err(ApiError::invalid(
                    "offset",
                    format!("must be 0 to {MAX_SEARCH_OFFSET}, got {n}"),
                ))
            }
        };
        q.similarity_threshold = match self.similarity_threshold {
            None => None,
            Some(x) if x.is_finite() && (-1.0..=1.0).contains(&x) => Some(x as f32),
            Some(x) => {
                return Err(ApiError::invalid(
                    "similarity_threshold",
                    format!("must be between -1.0 and 1.0, got {x}"),
                ))
            }
        };
        if let Some(w) = self.hybrid_weights {
            let d = HybridWeights::default();
            q.weights = HybridWeights {
                semantic: unit_weight("hybrid_weights.semantic", w.semantic, d.semantic)?,
                text: unit_weight("hybrid_weights.text", w.text, d.text)?,
                importance: unit_weight("hybrid_weights.importance", w.importance, d.importance)?,
                recency: unit_weight("hybrid_weights.recency", w.recency, d.recency)?,
                context: unit_weight("hybrid_weights.context", w.context, d.context)?,
            };
            // Context lends the other components' sum: it cannot score alone.
            let sum =
                q.weights.semantic + q.weights.text + q.weights.importance + q.weights.recency;
            if sum <= 0.0 {
                return Err(ApiError::invalid(
                    "hybrid_weights",
                    "semantic, text, importance and recency must not all be zero",
                ));
            }
        }
        if let Some(h) = self.recency_half_life_hours {
            if !(h.is_finite() && h > 0.0) {
                return Err(ApiError::invalid(
                    "recency_half_life_hours",
                    format!("must be a positive number, got {h}"),
                ));
            }
            q.recency_half_life_hours = h;
        }
        if let Some(w) = self.context_window_seconds {
            if !(w.is_finite() && (0.0..=MAX_CONTEXT_WINDOW_SECONDS).contains(&w)) {
                return Err(ApiError::invalid(
                    "context_window_seconds",
                    format!("must be between 0 and {MAX_CONTEXT_WINDOW_SECONDS}, got {w}"),
                ));
            }
            q.context_window_us = (w * 1e6).round() as i64;
        }
        q.include_superseded = self.include_superseded.unwrap_or(false);
        q.as_of_us = self
            .as_of
            .as_deref()
            .map(|s| parse_time("as_of", s))
            .transpose()?;
        let shape = SearchShape {
            explain: self.explain_score.unwrap_or(false),
            include_metadata: self.include_metadata.unwrap_or(true),
            embedding: embedding_view(
                self.include_embedding.unwrap_or(false),
                self.embedding_format.as_deref(),
            )?,
        };
        Ok((q, shape))
    }
}

/// Whether a reply includes vectors (`include_embedding`) and in which form
/// (`embedding_format`, which alone changes nothing).
pub fn embedding_view(
    include: bool,
    format: Option<&str>,
) -> Result<Option<VectorFormat>, ApiError> {
    let format = format
        .map(|f| VectorFormat::parse("embedding_format", f))
        .transpose()?
        .unwrap_or_default();
    Ok(include.then_some(format))
}

/// Refuses an invalid namespace, saying what a valid one is.
pub fn check_namespace(namespace: &str) -> Result<(), ApiError> {
    if is_valid_namespace(namespace) {
        Ok(())
    } else {
        Err(ApiError::invalid("namespace", namespace_rule()))
    }
}

/// Parses a tier or a status; the error names the field and the allowed names.
pub fn parse_name<T: std::str::FromStr<Err = UnknownName>>(
    field: &'static str,
    s: &str,
) -> Result<T, ApiError> {
    s.parse()
        .map_err(|e: UnknownName| ApiError::invalid(field, e.to_string()))
}

/// Parses an RFC 3339 timestamp to microseconds since the epoch, UTC.
pub fn parse_time(field: &'static str, s: &str) -> Result<i64, ApiError> {
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
        ApiError::invalid(
            field,
            format!("must be an RFC 3339 timestamp like 2024-05-01T12:00:00Z, got {s:?}"),
        )
    })?;
    i64::try_from(t.unix_timestamp_nanos() / 1000)
        .map_err(|_| ApiError::invalid(field, "is out of range"))
}

/// Formats microseconds since the epoch as RFC 3339 UTC.
pub fn format_time(us: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

pub fn parse_id(field: &'static str, s: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(s).map_err(|_| ApiError::invalid(field, format!("must be a UUID, got {s:?}")))
}

fn importance(x: f64) -> Result<f32, ApiError> {
    if x.is_finite() && (0.0..=1.0).contains(&x) {
        Ok(x as f32)
    } else {
        Err(ApiError::invalid(
            "importance_score",
            format!("must be between 0.0 and 1.0, got {x}"),
        ))
    }
}

fn metadata_text(m: Map<String, Value>) -> String {
    serde_json::to_string(&Value::Object(m)).expect("a JSON map always serializes")
}

impl CreateMemory {
    pub fn into_new(self) -> Result<NewMemory, ApiError> {
        let parent_id = self
            .parent_id
            .as_deref()
            .map(|s| parse_id("parent_id", s))
            .transpose()?;
        let created_at_us = self
            .created_at
            .as_deref()
            .map(|s| parse_time("created_at", s))
            .transpose()?;
        let expires_at_us = self
            .expires_at
            .as_deref()
            .map(|s| parse_time("expires_at", s))
            .transpose()?;
        let supersedes = self
            .supersedes
            .unwrap_or_default()
            .iter()
            .map(|s| parse_id("supersedes", s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NewMemory {
            supersedes,
            actor: self.actor,
            namespace: self
                .namespace
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
            content: self.content,
            embedding: vector::either(
                ("embedding", self.embedding),
                ("embedding_b64", self.embedding_b64),
            )?,
            importance: self
                .importance_score
                .map(importance)
                .transpose()?
                .unwrap_or(DEFAULT_IMPORTANCE),
            metadata_json: self
                .metadata
                .map(metadata_text)
                .unwrap_or_else(|| "{}".to_owned()),
            tags: self.tags.unwrap_or_default(),
            parent_id,
            created_at_us,
            expires_at_us,
        })
    }
}

impl PatchMemory {
    /// Converts to an engine patch; `current_namespace` lets a client send the unchanged
    /// namespace back.
    pub fn into_patch(self) -> Result<(MemoryPatch, Option<String>), ApiError> {
        let patch = MemoryPatch {
            content: self.content,
            // `null` clears the vector; otherwise the same rules as a create's.
            embedding: match (self.embedding, self.embedding_b64) {
                (Some(None), None) => Some(None),
                (Some(None), Some(_)) => {
                    return Err(ApiError::invalid(
                        "embedding_b64",
                        "cannot be given together with embedding",
                    ))
                }
                (floats, b64) => {
                    vector::either(("embedding", floats.flatten()), ("embedding_b64", b64))?
                        .map(Some)
                }
            },
            importance: self.importance_score.map(importance).transpose()?,
            metadata_json: self.metadata.map(metadata_text),
            tags: self.tags,
            status: self.status.map(|s| parse_name("status", &s)).transpose()?,
            tier: self.tier.map(|s| parse_name("tier", &s)).transpose()?,
            parent_id: self
                .parent_id
                .map(|p| p.map(|s| parse_id("parent_id", &s)).transpose())
                .transpose()?,
            expires_at_us: self
                .expires_at
                .map(|p| p.map(|s| parse_time("expires_at", &s)).transpose())
                .transpose()?,
            superseded_by: None,
            actor: None,
        };
        if patch == MemoryPatch::default() && self.namespace.is_none() {
            return Err(ApiError::invalid("body", "names no field to update"));
        }
        Ok((
            MemoryPatch {
                actor: self.actor,
                ..patch
            },
            self.namespace,
        ))
    }
}

/// List cursors are opaque to clients: `m1_` and the last id of the previous page.
pub fn encode_cursor(id: Uuid) -> String {
    format!("m1_{}", id.simple())
}

pub fn decode_cursor(s: &str) -> Result<Uuid, ApiError> {
    s.strip_prefix("m1_")
        .and_then(|rest| Uuid::try_parse(rest).ok())
        .ok_or_else(|| ApiError::invalid("cursor", "is not a cursor this server issued"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_with_microseconds() {
        let us = parse_time("t", "2023-05-08T13:56:30.123456Z").expect("valid");
        assert_eq!(format_time(us), "2023-05-08T13:56:30.123456Z");
        let with_offset = parse_time("t", "2023-05-08T15:56:30+02:00").expect("valid");
        assert_eq!(format_time(with_offset), "2023-05-08T13:56:30Z");
        assert!(parse_time("t", "yesterday").is_err());
    }

    #[test]
    fn cursors() {
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(id)).expect("valid"), id);
        assert!(decode_cursor("m1_zz").is_err());
        assert!(decode_cursor(&id.to_string()).is_err());
    }

    #[test]
    fn a_path_that_fixes_the_mode_still_checks_search_type() {
        let req = |v: serde_json::Value| -> SearchRequest {
            serde_json::from_value(v).expect("a search request")
        };
        let e = req(serde_json::json!({"query_text": "x", "search_type": "fuzzy"}))
            .into_query(Some(SearchMode::Text))
            .expect_err("fuzzy is no mode");
        assert_eq!(e.details["field"], "search_type");
        let (q, _) = req(serde_json::json!({"query_text": "x", "search_type": "hybrid"}))
            .into_query(Some(SearchMode::Text))
            .expect("a valid mode");
        assert_eq!(q.mode, SearchMode::Text, "the path wins");
    }

    #[test]
    fn embedding_overflowing_f32_is_refused() {
        let req = |v: &str| -> CreateMemory {
            serde_json::from_str(&format!(r#"{{"content": "x", "embedding": {v}}}"#))
                .expect("a create body")
        };
        assert!(req("[1e39]").into_new().is_err());
        assert!(req("[0.5, -1e30]").into_new().is_ok());
    }
}

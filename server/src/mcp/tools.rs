//! The MCP tools: their arguments (the JSON schemas come from these types), the descriptions a
//! model reads to decide when to call them, and what each runs. Every tool runs the same code as
//! its REST endpoint (`handlers::*::*_one`, `handlers::search::run`), so validation, namespace
//! limits, metrics and error codes are the REST API's.

use std::sync::Arc;

use engram_engine::search::SearchMode;
use engram_engine::{Memory, MAX_LIST_LIMIT};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::api::replies::{DeletedOut, HealthOut};
use crate::api::{
    self, CreateMemory, DateRange, MemoryOut, NumRange, PatchMemory, SearchRequest, TagFilter,
};
use crate::config::{parse_duration, ApiKey};
use crate::error::ApiError;
use crate::handlers::{history, memories, ops, search};
use crate::http::AppState;

/// Results `recall` returns when the call names no limit.
pub const RECALL_DEFAULT_LIMIT: u32 = 8;
/// Most results one `recall` returns: enough to choose from, few enough for a model's context.
pub const RECALL_MAX_LIMIT: u32 = 50;
/// Page size of `list_memories` when the call names none.
pub const LIST_DEFAULT_LIMIT: u32 = 20;
/// Largest `list_memories` page.
pub const LIST_MAX_LIMIT: u32 = 100;
const _: () = assert!(
    LIST_MAX_LIMIT as usize <= MAX_LIST_LIMIT,
    "within the engine's page limit"
);

/// One tool: its name, what a model reads about it, and its argument schema.
pub(crate) struct ToolSpec {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub schema: fn() -> Result<Arc<rmcp::model::JsonObject>, String>,
    pub read_only: bool,
    pub destructive: bool,
}

/// Every tool, in the order `tools/list` shows them.
pub(crate) const TOOLS: &[ToolSpec] = &[
    ToolSpec {
        name: "remember",
        title: "Remember",
        description: "Store a memory: a fact, preference, event or decision worth recalling later. \
            Call it when the user tells you something that should outlast this conversation. \
            Write the content as a self-contained sentence (who, what, when). Returns the memory's \
            id; storing content that is already remembered in the namespace is not an error: the \
            result says duplicate=true and gives the existing id. Content is at most 1 MiB; \
            importance (0-1, default 0.5) ranks it in recall and keeps it in the fast tiers longer; \
            ttl (\"7d\", \"12h\") or expires_at makes it expire.",
        schema: rmcp::handler::server::common::schema_for_input::<RememberArgs>,
        read_only: false,
        destructive: false,
    },
    ToolSpec {
        name: "recall",
        title: "Recall",
        description: "Find memories relevant to a query, by meaning and by words, weighted by \
            importance and freshness. Call it before answering anything that may depend on what \
            you were told earlier. Returns up to `limit` memories (default 8, at most 50), best \
            first: id, content, score, created_at, tags, tier, importance. Narrow with namespace, \
            tags, metadata filters ({\"key\": value} or {\"key\": {\"$gte\": 3}}), since/until \
            (RFC 3339) and min_importance. mode: hybrid (default), semantic or text.",
        schema: rmcp::handler::server::common::schema_for_input::<RecallArgs>,
        read_only: true,
        destructive: false,
    },
    ToolSpec {
        name: "get_memory",
        title: "Get a memory",
        description: "Read one memory by id, with all its fields (metadata, version, embedding \
            status, access count). Counts as an access.",
        schema: rmcp::handler::server::common::schema_for_input::<IdArgs>,
        read_only: true,
        destructive: false,
    },
    ToolSpec {
        name: "memory_history",
        title: "A memory's history",
        description: "How a memory changed: its versions, newest first, each with when it was \
            current (valid_from, valid_to), which fields changed, who changed it (actor) and the \
            content, tags and importance it had then. Use it when asked what was believed \
            before, when a fact was corrected, or who changed it. Older versions than the page \
            holds: pass next_cursor back as cursor. Counts no access.",
        schema: rmcp::handler::server::common::schema_for_input::<HistoryArgs>,
        read_only: true,
        destructive: false,
    },
    ToolSpec {
        name: "update_memory",
        title: "Update a memory",
        description: "Change some fields of a memory; fields left out keep their values. Use it \
            when a remembered fact changed (new content), matters more or less (importance), or \
            should expire (expires_at; null removes the expiry). Returns the updated memory; its \
            version goes up by one.",
        schema: rmcp::handler::server::common::schema_for_input::<UpdateArgs>,
        read_only: false,
        destructive: false,
    },
    ToolSpec {
        name: "forget",
        title: "Forget a memory",
        description: "Delete a memory by id. By default the deletion is soft (the memory stops \
            appearing in recall and lists); purge=true removes it for good and cannot be undone.",
        schema: rmcp::handler::server::common::schema_for_input::<ForgetArgs>,
        read_only: false,
        destructive: true,
    },
    ToolSpec {
        name: "list_memories",
        title: "List memories",
        description: "List memories in id (creation) order, a page at a time: pass the returned \
            next_cursor to get the next page (null when there is none). Filter by namespace, tag \
            or tier. Use recall to search; use this to browse or export.",
        schema: rmcp::handler::server::common::schema_for_input::<ListArgs>,
        read_only: true,
        destructive: false,
    },
    ToolSpec {
        name: "memory_status",
        title: "Memory status",
        description: "Engram's health: whether it accepts writes, memories per tier, the \
            embedding provider and how many memories wait for a vector, version and uptime.",
        schema: rmcp::handler::server::common::schema_for_input::<StatusArgs>,
        read_only: true,
        destructive: false,
    },
];

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
pub struct RememberArgs {
    /// What to remember, as a self-contained statement (at most 1 MiB).
    pub content: String,
    /// Namespace to store it in (default "default"): one per user, agent or project.
    pub namespace: Option<String>,
    /// How much it matters, 0 to 1 (default 0.5).
    pub importance: Option<f64>,
    /// Labels to filter on later, e.g. ["preference", "travel"].
    pub tags: Option<Vec<String>>,
    /// A JSON object of facts about the memory (source, speaker, ids), filterable in recall.
    pub metadata: Option<Map<String, Value>>,
    /// When it stops being true (RFC 3339); then it is forgotten. Not together with ttl.
    pub expires_at: Option<String>,
    /// How long it stays true, e.g. "30m", "12h", "7d". Not together with expires_at.
    pub ttl: Option<String>,
    /// When it happened (RFC 3339), if not now.
    pub created_at: Option<String>,
    /// Ids of memories this one corrects or replaces (same namespace): they stop showing in
    /// recall and lists, and stay readable by id with status "superseded".
    pub supersedes: Option<Vec<String>>,
}

/// How `recall` ranks.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecallMode {
    /// Meaning and words together, with importance and freshness (the default).
    Hybrid,
    /// Meaning only (vector similarity).
    Semantic,
    /// Words only (BM25 full-text).
    Text,
}

/// A storage tier.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TierName {
    Working,
    Warm,
    Cold,
}

impl TierName {
    fn as_str(self) -> &'static str {
        match self {
            TierName::Working => "working",
            TierName::Warm => "warm",
            TierName::Cold => "cold",
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecallArgs {
    /// What to look for, in natural language.
    pub query: String,
    /// Namespace to search (default "default").
    pub namespace: Option<String>,
    /// Most memories to return: 1 to 50, default 8.
    pub limit: Option<u32>,
    /// hybrid (default), semantic or text.
    pub mode: Option<RecallMode>,
    /// Only memories carrying every one of these tags.
    pub tags: Option<Vec<String>>,
    /// Only memories carrying at least one of these tags.
    pub any_tags: Option<Vec<String>>,
    /// Metadata conditions: {"key": value} for equality, or {"key": {"$gt"|"$gte"|"$lt"|"$lte": n}},
    /// {"key": {"$in": [a, b]}}.
    pub metadata: Option<Map<String, Value>>,
    /// Only memories created at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Only memories created at or before this time (RFC 3339).
    pub until: Option<String>,
    /// Only memories at least this important (0 to 1).
    pub min_importance: Option<f64>,
    /// Tiers to search (default working and warm; add "cold" for archived memories).
    pub tiers: Option<Vec<TierName>>,
    /// Also find memories that were superseded by newer ones (default false).
    pub include_superseded: Option<bool>,
    /// Search the memories as they were at this moment (RFC 3339): what was known then, with
    /// the contents it had then. Slower: every memory of the namespace is read.
    pub as_of: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryArgs {
    /// The memory's id.
    pub id: String,
    /// Most versions to return: 1 to 20, default 10.
    pub limit: Option<u32>,
    /// next_cursor from the previous page (older versions).
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdArgs {
    /// The memory's id (a UUID, as remember and recall return it).
    pub id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateArgs {
    /// The memory's id.
    pub id: String,
    /// New content (replaces the old; the memory is embedded again).
    pub content: Option<String>,
    /// New importance, 0 to 1.
    pub importance: Option<f64>,
    /// New tags (replace the old list).
    pub tags: Option<Vec<String>>,
    /// New metadata object (replaces the old one).
    pub metadata: Option<Map<String, Value>>,
    /// New expiry time (RFC 3339), or null to never expire.
    #[serde(default, deserialize_with = "nullable")]
    #[schemars(with = "Option<String>")]
    pub expires_at: Option<Option<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgetArgs {
    /// The memory's id.
    pub id: String,
    /// Remove it for good instead of a soft delete (default false).
    pub purge: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Namespace to list (required for API keys limited to namespaces).
    pub namespace: Option<String>,
    /// Only memories with this tag.
    pub tag: Option<String>,
    /// Only memories in this tier.
    pub tier: Option<TierName>,
    /// Page size: 1 to 100, default 20.
    pub limit: Option<u32>,
    /// next_cursor from the previous page.
    pub cursor: Option<String>,
    /// Also list memories that were superseded by newer ones (default false).
    pub include_superseded: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusArgs {}

/// A memory as tools return it in lists: what a model needs, nothing it does not.
#[derive(Debug, Serialize)]
pub struct MemoryBrief {
    pub id: String,
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    pub created_at: String,
    pub tags: Vec<String>,
    pub tier: &'static str,
    pub importance: f32,
}

impl MemoryBrief {
    fn new(m: MemoryOut, score: Option<f32>) -> MemoryBrief {
        MemoryBrief {
            id: m.id,
            content: m.content,
            score,
            created_at: m.created_at,
            tags: m.tags,
            tier: m.tier,
            importance: m.importance_score,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Remembered {
    pub id: String,
    pub namespace: String,
    /// The content was already remembered in this namespace; `id` is that memory.
    pub duplicate: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Recalled {
    pub memories: Vec<MemoryBrief>,
    pub count: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Listed {
    pub memories: Vec<MemoryBrief>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Status {
    #[serde(flatten)]
    pub health: HealthOut,
}

/// A tool's outcome before it becomes an MCP result: a JSON value, or the API error.
pub(crate) type ToolResult = Result<Value, ApiError>;

fn to_value(v: &impl Serialize) -> Value {
    serde_json::to_value(v).expect("tool results serialize")
}

/// Renames REST field names in an error to the tool's argument names.
pub(crate) fn rename_field(mut e: ApiError, renames: &[(&str, &str)]) -> ApiError {
    let Some(field) = e
        .details
        .get("field")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return e;
    };
    if let Some((_, to)) = renames.iter().find(|(from, _)| *from == field) {
        e.message = e.message.replacen(&field, to, 1);
        e.details["field"] = Value::from(*to);
    }
    e
}

pub(crate) async fn remember(
    state: &Arc<AppState>,
    key: Option<&ApiKey>,
    a: RememberArgs,
) -> ToolResult {
    let expires_at = match (a.expires_at, a.ttl) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "ttl",
                "cannot be combined with expires_at",
            ))
        }
        (Some(at), None) => Some(at),
        (None, Some(ttl)) => {
            let d = parse_duration(&ttl)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    ApiError::invalid(
                        "ttl",
                        format!("must be a duration like \"30m\", \"12h\" or \"7d\", got {ttl:?}"),
                    )
                })?;
            let us = i64::try_from(d.as_micros())
                .ok()
                .and_then(|d| state.engine.config().clock.now_us().checked_add(d))
                .ok_or_else(|| ApiError::invalid("ttl", "is too long"))?;
            Some(api::format_time(us))
        }
        (None, None) => None,
    };
    let req = CreateMemory {
        namespace: a.namespace,
        content: a.content,
        embedding: None,
        embedding_b64: None,
        importance_score: a.importance,
        metadata: a.metadata,
        tags: a.tags,
        parent_id: None,
        created_at: a.created_at,
        expires_at,
        supersedes: a.supersedes,
        actor: None,
    };
    let namespace = req
        .namespace
        .clone()
        .unwrap_or_else(|| engram_engine::DEFAULT_NAMESPACE.to_owned());
    match memories::create_one(state, req, key, false).await {
        Ok(m) => Ok(to_value(&Remembered {
            id: m.id.to_string(),
            namespace: m.namespace,
            duplicate: false,
            created_at: Some(api::format_time(m.created_at_us)),
            expires_at: m.expires_at_us.map(api::format_time),
        })),
        Err(e) if e.code == "DUPLICATE_CONTENT" => {
            let existing = e.details["existing_id"].as_str().unwrap_or_default();
            Ok(to_value(&Remembered {
                id: existing.to_owned(),
                namespace,
                duplicate: true,
                created_at: None,
                expires_at: None,
            }))
        }
        Err(e) => Err(rename_field(e, &[("importance_score", "importance")])),
    }
}

pub(crate) async fn recall(
    state: &Arc<AppState>,
    key: Option<&ApiKey>,
    a: RecallArgs,
) -> ToolResult {
    let limit = a.limit.unwrap_or(RECALL_DEFAULT_LIMIT);
    if !(1..=RECALL_MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be 1 to {RECALL_MAX_LIMIT}, got {limit}"),
        ));
    }
    if let Some(x) = a.min_importance {
        if !(x.is_finite() && (0.0..=1.0).contains(&x)) {
            return Err(ApiError::invalid(
                "min_importance",
                format!("must be between 0.0 and 1.0, got {x}"),
            ));
        }
    }
    let tags = (a.tags.is_some() || a.any_tags.is_some()).then_some(TagFilter {
        all_of: a.tags,
        any_of: a.any_tags,
    });
    let request = SearchRequest {
        query_text: Some(a.query),
        query_embedding: None,
        query_embedding_b64: None,
        search_type: None,
        namespace: a.namespace,
        tiers: a
            .tiers
            .map(|t| t.into_iter().map(|t| t.as_str().to_owned()).collect()),
        include_cold: None,
        tags,
        metadata_filters: a.metadata,
        importance_range: a.min_importance.map(|min| NumRange {
            min: Some(min),
            max: None,
        }),
        date_range: (a.since.is_some() || a.until.is_some()).then_some(DateRange {
            start: a.since,
            end: a.until,
        }),
        limit: Some(i64::from(limit)),
        offset: None,
        similarity_threshold: None,
        hybrid_weights: None,
        recency_half_life_hours: None,
        context_window_seconds: None,
        explain_score: None,
        include_metadata: Some(false),
        include_embedding: None,
        embedding_format: None,
        include_superseded: a.include_superseded,
        as_of: a.as_of,
    };
    let mode = a.mode.map(|m| match m {
        RecallMode::Hybrid => SearchMode::Hybrid,
        RecallMode::Semantic => SearchMode::Semantic,
        RecallMode::Text => SearchMode::Text,
    });
    let out = search::run(state, request, key, mode).await.map_err(|e| {
        rename_field(
            e,
            &[
                ("query_text", "query"),
                ("query_embedding", "query"),
                ("metadata_filters", "metadata"),
                ("date_range.start", "since"),
                ("date_range.end", "until"),
                ("date_range", "since"),
                ("importance_range.min", "min_importance"),
                ("tags", "tags"),
            ],
        )
    })?;
    let memories: Vec<MemoryBrief> = out
        .results
        .into_iter()
        .map(|h| MemoryBrief::new(h.memory, Some(h.score)))
        .collect();
    Ok(to_value(&Recalled {
        count: memories.len(),
        memories,
        warnings: out.warnings,
    }))
}

pub(crate) async fn get_memory(
    state: &Arc<AppState>,
    key: Option<&ApiKey>,
    a: IdArgs,
) -> ToolResult {
    let id = api::parse_id("id", &a.id)?;
    let m = memories::get_one(state, id, key).await?;
    Ok(to_value(&MemoryOut::new(m, None)))
}

/// One version as `memory_history` returns it.
#[derive(Debug, Serialize)]
pub struct VersionBrief {
    pub version: u64,
    pub valid_from: String,
    pub valid_to: Option<String>,
    pub changed: Option<Vec<&'static str>>,
    pub actor: Option<String>,
    pub content: String,
    pub tags: Vec<String>,
    pub importance: f32,
    pub status: &'static str,
}

/// Versions `memory_history` returns when the call names no limit.
pub const HISTORY_DEFAULT_LIMIT: u32 = 10;
/// Largest `memory_history` page.
pub const HISTORY_MAX_LIMIT: u32 = 20;

pub(crate) async fn memory_history(
    state: &Arc<AppState>,
    key: Option<&ApiKey>,
    a: HistoryArgs,
) -> ToolResult {
    let id = api::parse_id("id", &a.id)?;
    let limit = a.limit.unwrap_or(HISTORY_DEFAULT_LIMIT);
    if !(1..=HISTORY_MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be from 1 to {HISTORY_MAX_LIMIT}, got {limit}"),
        ));
    }
    let out =
        history::history_page(state, id, a.cursor.as_deref(), limit as usize, key, None).await?;
    let versions: Vec<VersionBrief> = out
        .versions
        .into_iter()
        .map(|v| VersionBrief {
            version: v.version,
            valid_from: v.valid_from,
            valid_to: v.valid_to,
            changed: v.changed,
            actor: v.actor,
            content: v.memory.content,
            tags: v.memory.tags,
            importance: v.memory.importance_score,
            status: v.memory.status,
        })
        .collect();
    Ok(serde_json::json!({
        "id": out.id,
        "versions": to_value(&versions),
        "next_cursor": out.next_cursor,
    }))
}

pub(crate) async fn update_memory(
    state: &Arc<AppState>,
    key: Option<&ApiKey>,
    a: UpdateArgs,
) -> ToolResult {
    let id = api::parse_id("id", &a.id)?;
    if a.content.is_none()
        && a.importance.is_none()
        && a.tags.is_none()
        && a.metadata.is_none()
        && a.expires_at.is_none()
    {
        return Err(ApiError::invalid(
            "arguments",
            "name no field to change: give content, importance, tags, metadata or expires_at",
        ));
    }
    let patch = PatchMemory {
        namespace: None,
        content: a.content,
        embedding: None,
        embedding_b64: None,
        importance_score: a.importance,
        metadata: a.metadata,
        tags: a.tags,
        status: None,
        tier: None,
        parent_id: None,
        expires_at: a.expires_at,
        actor: None,
    };
    let m: Memory = memories::update_one(state, id, patch, key, false)
        .await
        .map_err(|e| rename_field(e, &[("importance_score", "importance")]))?;
    Ok(to_value(&MemoryOut::new(m, None)))
}

pub(crate) async fn forget(
    state: &Arc<AppState>,
    key: Option<&ApiKey>,
    a: ForgetArgs,
) -> ToolResult {
    let id = api::parse_id("id", &a.id)?;
    let deleted: DeletedOut =
        memories::delete_one(state, id, a.purge.unwrap_or(false), key, None).await?;
    Ok(to_value(&deleted))
}

pub(crate) async fn list_memories(
    state: &Arc<AppState>,
    key: Option<&ApiKey>,
    a: ListArgs,
) -> ToolResult {
    let limit = a.limit.unwrap_or(LIST_DEFAULT_LIMIT);
    if !(1..=LIST_MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be 1 to {LIST_MAX_LIMIT}, got {limit}"),
        ));
    }
    let params = memories::ListParams {
        namespace: a.namespace,
        tier: a.tier.map(|t| t.as_str().to_owned()),
        status: None,
        tag: a.tag,
        limit: limit as usize,
        cursor: a.cursor,
        include_superseded: a.include_superseded.unwrap_or(false),
    };
    let page = memories::list_page(state, key, params).await?;
    Ok(to_value(&Listed {
        memories: page
            .memories
            .into_iter()
            .map(|m| MemoryBrief::new(MemoryOut::new(m, None), None))
            .collect(),
        next_cursor: page.next_after.map(api::encode_cursor),
    }))
}

pub(crate) fn memory_status(state: &Arc<AppState>) -> ToolResult {
    Ok(to_value(&Status {
        health: ops::health_report(state),
    }))
}

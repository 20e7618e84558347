//! Wire types of the embedding migrations (`/api/v1/admin/embedding/migrations`).

use engram_engine::{SpaceInfo, DEFAULT_NAMESPACE};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{format_time, vector, MemoryOut};
use crate::error::ApiError;
use crate::migrations::{MigrationSpec, WorkerStats};

/// `POST /api/v1/admin/embedding/migrations`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMigrationRequest {
    /// `local` (the built-in all-MiniLM-L6-v2), `ollama` or `openai` (any server speaking
    /// OpenAI's embeddings API).
    #[schemars(extend("enum" = ["local", "ollama", "openai"]))]
    pub provider: String,
    /// The model's name (`all-MiniLM-L6-v2` for `local`, the default there).
    pub model: Option<String>,
    /// Dimensions of the new space's vectors (may differ from the store's).
    #[schemars(range(min = 1, max = 4096))]
    pub dimensions: usize,
    /// The provider's base URL (`ollama`, `openai`).
    pub url: Option<String>,
    /// Environment variable of the daemon holding the API key (`openai`; default
    /// `OPENAI_API_KEY`). The key itself is never stored.
    pub api_key_env: Option<String>,
}

impl CreateMigrationRequest {
    pub fn into_spec(self) -> Result<MigrationSpec, ApiError> {
        let spec = MigrationSpec {
            model: self.model.unwrap_or_else(|| {
                if self.provider == "local" {
                    crate::migrations::LOCAL_MODEL.to_owned()
                } else {
                    String::new()
                }
            }),
            api_key_env: match self.provider.as_str() {
                "openai" => Some(
                    self.api_key_env
                        .unwrap_or_else(|| "OPENAI_API_KEY".to_owned()),
                ),
                _ => None,
            },
            provider: self.provider,
            dimensions: self.dimensions,
            url: self.url,
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// An embedding migration: the new vector space and how far it has got.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MigrationOut {
    pub id: u32,
    pub provider: String,
    pub model: String,
    pub dimensions: usize,
    /// `running` (embedding or waiting for changes), `paused`, or `ready` (every searchable
    /// memory has a vector of its current content; changes are still followed).
    #[schemars(extend("enum" = ["running", "paused", "ready"]))]
    pub state: String,
    pub created_at: String,
    /// When a full pass over the store first found nothing left to embed.
    pub backfilled_at: Option<String>,
    /// Memories with a vector in the new space.
    pub vectors: u64,
    /// Memories changed since their vector was computed (or not yet looked at again).
    pub pending_changes: u64,
    /// Memories a search can find: what the space covers when it is ready.
    pub searchable: u64,
    /// `vectors / searchable`, at most 1 (a rough measure while changes are pending).
    pub progress: f64,
    /// Vectors in the new space's HNSW graph (the rest are scanned exactly).
    pub indexed: u64,
    /// Vectors per second over the current stretch of work (0 when idle).
    pub rate_per_second: f64,
    /// Vectors stored by this daemon since it started.
    pub embedded: u64,
    pub failed_batches: u64,
    /// The last failure (embedding call or storage), cleared by the next success.
    pub last_error: Option<String>,
    /// The store's searches rank this space's vectors (`…/activate`).
    pub active: bool,
}

impl MigrationOut {
    pub fn new(info: &SpaceInfo, stats: &WorkerStats) -> MigrationOut {
        let spec: Option<MigrationSpec> = serde_json::from_str(&info.descriptor).ok();
        let state = if info.paused {
            "paused"
        } else if info.caught_up {
            "ready"
        } else {
            "running"
        };
        MigrationOut {
            id: info.id,
            provider: spec
                .as_ref()
                .map(|s| s.provider.clone())
                .unwrap_or_default(),
            model: spec.as_ref().map(|s| s.model.clone()).unwrap_or_default(),
            dimensions: info.dimensions as usize,
            state: state.to_owned(),
            created_at: format_time(info.created_at_us),
            backfilled_at: info.backfilled_at_us.map(format_time),
            vectors: info.vectors,
            pending_changes: info.dirty,
            searchable: info.searchable,
            progress: if info.searchable == 0 {
                1.0
            } else {
                (info.vectors as f64 / info.searchable as f64).min(1.0)
            },
            indexed: info.indexed,
            rate_per_second: stats.rate(),
            embedded: stats.embedded.load(std::sync::atomic::Ordering::Relaxed),
            failed_batches: stats
                .failed_batches
                .load(std::sync::atomic::Ordering::Relaxed),
            last_error: stats.last_error(),
            active: info.active,
        }
    }
}

/// `GET /api/v1/admin/embedding/migrations`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MigrationListOut {
    pub migrations: Vec<MigrationOut>,
}

/// `GET` and `DELETE /api/v1/admin/embedding/own-vectors`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OwnVectorsOut {
    /// The store's own vectors were given up for a migration's.
    pub dropped: bool,
    /// The migration whose space holds the store's vectors since.
    pub migration: Option<u32>,
    /// That migration's model, as reads name the vectors.
    pub model: Option<String>,
    /// The sweep is done: no working or warm memory, cold segment or kept version holds an
    /// old vector.
    pub swept: bool,
    /// Memories the sweep has rewritten since the daemon started.
    pub stripped: u64,
    /// Cold segments the sweep has rewritten since the daemon started.
    pub segments: u64,
    /// Kept past versions the sweep has rewritten since the daemon started.
    pub versions: u64,
}

impl OwnVectorsOut {
    pub fn new(own: &engram_engine::OwnVectors) -> OwnVectorsOut {
        OwnVectorsOut {
            dropped: own.dropped.is_some(),
            migration: own.dropped.as_ref().map(|d| d.space),
            model: own.dropped.as_ref().map(|d| d.model.clone()),
            swept: own.dropped.as_ref().is_some_and(|d| d.swept),
            stripped: own.stripped,
            segments: own.segments,
            versions: own.versions,
        }
    }
}

/// `DELETE /api/v1/admin/embedding/migrations/{id}`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MigrationDeletedOut {
    pub id: u32,
    pub deleted: bool,
}

/// `POST /api/v1/admin/embedding/migrations/{id}/search`: nearest neighbours in the new space
/// only, to judge it before it is used.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationSearchRequest {
    /// Embedded with the migration's model when no vector is given.
    pub query_text: Option<String>,
    /// A vector of the new space's dimensions.
    pub query_embedding: Option<Vec<f32>>,
    /// The same as base64 of little-endian 32-bit floats.
    pub query_embedding_b64: Option<String>,
    #[schemars(regex(pattern = r"^[A-Za-z0-9._:-]{1,128}$"))]
    pub namespace: Option<String>,
    /// 1 to 1000 (default 10).
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<i64>,
    pub include_superseded: Option<bool>,
}

/// A parsed [`MigrationSearchRequest`].
#[derive(Debug)]
pub struct MigrationSearch {
    pub text: Option<String>,
    pub embedding: Option<Vec<f32>>,
    pub namespace: String,
    pub limit: usize,
    pub include_superseded: bool,
}

impl MigrationSearchRequest {
    pub fn parse(self) -> Result<MigrationSearch, ApiError> {
        let embedding = vector::either(
            ("query_embedding", self.query_embedding),
            ("query_embedding_b64", self.query_embedding_b64),
        )?;
        let text = self.query_text.filter(|t| !t.trim().is_empty());
        if embedding.is_none() && text.is_none() {
            return Err(ApiError::invalid(
                "query_text",
                "or query_embedding is required",
            ));
        }
        if let Some(t) = &text {
            if t.len() > super::MAX_QUERY_TEXT_BYTES {
                return Err(ApiError::invalid(
                    "query_text",
                    format!(
                        "is {} bytes; the limit is {}",
                        t.len(),
                        super::MAX_QUERY_TEXT_BYTES
                    ),
                ));
            }
        }
        let limit = match self.limit {
            None => 10,
            Some(n @ 1..=1000) => n as usize,
            Some(n) => {
                return Err(ApiError::invalid(
                    "limit",
                    format!("must be between 1 and 1000, got {n}"),
                ))
            }
        };
        let namespace = self
            .namespace
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        super::check_namespace(&namespace)?;
        Ok(MigrationSearch {
            text,
            embedding,
            namespace,
            limit,
            include_superseded: self.include_superseded.unwrap_or(false),
        })
    }
}

/// One result of a migration search.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MigrationHitOut {
    pub memory: MemoryOut,
    /// Cosine similarity in the new space.
    pub similarity: f32,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct MigrationSearchOut {
    pub migration: u32,
    pub results: Vec<MigrationHitOut>,
    pub query_time_ms: f64,
}

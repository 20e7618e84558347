//! Typed replies of the v1 API: every body the server sends is one of these, so the wire
//! contract lives in types, not in `json!` calls.

use std::collections::BTreeMap;

use engram_engine::cold::ColdSegmentStats;
use engram_engine::search::{Component, SearchHit};
use engram_engine::snapshot::SnapshotManifest;
use engram_engine::{
    hex, CompactionReport, Deleted, EmbeddingStatus, Memory, MigrationConfig, MigrationReport,
    Tier, TierReport,
};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::vector::{self, VectorFormat};
use super::{format_time, SearchShape};
use crate::error::ApiError;

/// A memory as the API shows it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MemoryOut {
    pub id: String,
    pub namespace: String,
    pub content: String,
    pub content_hash: String,
    /// With `include_embedding` (the default `embedding_format=float`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
    /// With `include_embedding` and `embedding_format=base64`: base64 of little-endian f32s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_b64: Option<String>,
    pub has_embedding: bool,
    pub embedding_status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_error: Option<String>,
    pub embedding_model: Option<String>,
    pub tier: &'static str,
    pub status: &'static str,
    /// The stored `f32`, written in its shortest form (0.8 reads back as 0.8).
    pub importance_score: f32,
    pub access_count: u64,
    pub last_accessed_at: Option<String>,
    /// Left out of search results with `include_metadata: false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Map<String, Value>>")]
    pub metadata: Option<Box<RawValue>>,
    pub tags: Vec<String>,
    pub parent_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub expires_at: Option<String>,
    pub version: u64,
    /// The memory that replaced this one (status `superseded`).
    pub superseded_by: Option<String>,
    /// Who made this version, as its request said.
    pub actor: Option<String>,
}

impl MemoryOut {
    /// A memory read without its vector (`has_embedding` says whether it has one).
    pub fn without_vector(m: Memory, has_embedding: bool) -> MemoryOut {
        MemoryOut {
            has_embedding,
            ..MemoryOut::new(m, None)
        }
    }

    /// `embedding`: whether the vector is included, and in which form.
    pub fn new(m: Memory, embedding: Option<VectorFormat>) -> MemoryOut {
        let metadata = RawValue::from_string(m.metadata_json)
            .unwrap_or_else(|_| RawValue::from_string("{}".to_owned()).expect("{} is valid JSON"));
        MemoryOut {
            id: m.id.to_string(),
            namespace: m.namespace,
            content: m.content,
            content_hash: hex(&m.content_hash),
            has_embedding: m.embedding.is_some(),
            embedding_b64: match embedding {
                Some(VectorFormat::Base64) => m.embedding.as_deref().map(vector::to_base64),
                _ => None,
            },
            embedding: match embedding {
                Some(VectorFormat::Float) => m.embedding,
                _ => None,
            },
            embedding_status: m.embedding_status.as_str(),
            embedding_error: match m.embedding_status {
                EmbeddingStatus::Failed(reason) => Some(reason),
                _ => None,
            },
            embedding_model: m.embedding_model,
            tier: m.tier.as_str(),
            status: m.status.as_str(),
            importance_score: m.importance,
            access_count: m.access_count,
            last_accessed_at: m.last_accessed_at_us.map(format_time),
            metadata: Some(metadata),
            tags: m.tags,
            parent_id: m.parent_id.map(|p| p.to_string()),
            created_at: format_time(m.created_at_us),
            updated_at: format_time(m.updated_at_us),
            expires_at: m.expires_at_us.map(format_time),
            version: m.version,
            superseded_by: m.superseded_by.map(|p| p.to_string()),
            actor: m.actor,
        }
    }
}

/// `DELETE /api/v1/memories/{id}`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeletedOut {
    pub id: String,
    pub deleted_at: String,
    pub purged: bool,
}

impl From<Deleted> for DeletedOut {
    fn from(d: Deleted) -> DeletedOut {
        DeletedOut {
            id: d.id.to_string(),
            deleted_at: format_time(d.deleted_at_us),
            purged: d.purged,
        }
    }
}

/// `GET /api/v1/memories`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ListOut {
    pub memories: Vec<MemoryOut>,
    pub next_cursor: Option<String>,
}

/// The error of one batch item, in place of the memory.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ItemError {
    pub code: &'static str,
    pub message: String,
    pub details: serde_json::Value,
}

/// A write's reply under `Prefer: return=minimal` (or `?return=minimal`): what a client needs
/// to refer to the memory, without echoing it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MinimalOut {
    pub id: String,
    pub version: u64,
    pub status: &'static str,
}

impl MinimalOut {
    pub fn new(m: &Memory) -> MinimalOut {
        MinimalOut {
            id: m.id.to_string(),
            version: m.version,
            status: m.status.as_str(),
        }
    }
}

/// A single write's reply: the memory, or under `return=minimal` its id, version and status.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum WrittenOut {
    Memory(Box<MemoryOut>),
    Minimal(MinimalOut),
}

/// One item of a batch reply: the stored memory (whole, or minimal), or why it was not stored.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum BatchItem {
    Stored(Box<MemoryOut>),
    Minimal(MinimalOut),
    Failed { error: ItemError },
}

impl From<ApiError> for BatchItem {
    fn from(e: ApiError) -> BatchItem {
        BatchItem::Failed {
            error: ItemError {
                code: e.code,
                message: e.message,
                details: e.details,
            },
        }
    }
}

/// `POST /api/v1/memories/batch`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct BatchOut {
    pub results: Vec<BatchItem>,
}

/// One score component of an explanation.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ComponentOut {
    pub value: f32,
    pub weight: f32,
    pub contribution: f32,
}

impl From<&Component> for ComponentOut {
    fn from(c: &Component) -> ComponentOut {
        ComponentOut {
            value: c.value,
            weight: c.weight,
            contribution: c.contribution(),
        }
    }
}

/// Why a result scored what it did (`explain_score`).
#[derive(Debug, Serialize, JsonSchema)]
pub struct ExplanationOut {
    pub score: f32,
    pub semantic: ComponentOut,
    pub text: ComponentOut,
    pub importance: ComponentOut,
    pub recency: ComponentOut,
    /// The best base score among the memory's neighbours in time (hybrid).
    pub context: ComponentOut,
    pub similarity: Option<f32>,
    pub bm25: f32,
    pub recency_half_life_hours: f64,
}

/// One search result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SearchHitOut {
    pub memory: MemoryOut,
    pub score: f32,
    pub distance: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<ExplanationOut>,
}

impl SearchHitOut {
    pub fn new(hit: SearchHit, shape: SearchShape, half_life_hours: f64) -> SearchHitOut {
        let e = &hit.explanation;
        let explanation = shape.explain.then(|| ExplanationOut {
            score: hit.score,
            semantic: (&e.semantic).into(),
            text: (&e.text).into(),
            importance: (&e.importance).into(),
            recency: (&e.recency).into(),
            context: (&e.context).into(),
            similarity: e.similarity,
            bm25: e.bm25,
            recency_half_life_hours: half_life_hours,
        });
        let mut memory = MemoryOut::new(hit.memory, shape.embedding);
        if !shape.include_metadata {
            memory.metadata = None;
        }
        SearchHitOut {
            memory,
            score: hit.score,
            distance: hit.distance,
            explanation,
        }
    }
}

/// `POST /api/v1/search` and its `semantic` and `text` forms.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SearchOut {
    pub results: Vec<SearchHitOut>,
    pub total_count: usize,
    pub query_time_ms: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The embedding part of the health reply.
#[derive(Debug, Serialize, JsonSchema)]
pub struct HealthEmbedding {
    pub provider: &'static str,
    pub model: Option<String>,
    pub pending: usize,
}

/// Memories per tier.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TierCounts {
    pub working: u64,
    pub warm: u64,
    pub cold: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct HealthWal {
    pub durable_lsn: u64,
}

/// `GET /api/v1/health`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct HealthOut {
    pub status: &'static str,
    pub database_connected: bool,
    pub embedding_service_available: bool,
    pub embedding: HealthEmbedding,
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub tiers: TierCounts,
    pub wal: HealthWal,
}

/// A snapshot in the admin replies.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SnapshotOut {
    pub id: String,
    pub lsn: u64,
    pub commit_time: Option<String>,
    pub created_at: String,
    pub files: usize,
    pub bytes: u64,
    /// Only in the reply to a create.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub took_ms: Option<u64>,
}

impl From<&SnapshotManifest> for SnapshotOut {
    fn from(m: &SnapshotManifest) -> SnapshotOut {
        SnapshotOut {
            id: m.id.clone(),
            lsn: m.lsn.get(),
            commit_time: (m.commit_time_us > 0).then(|| format_time(m.commit_time_us)),
            created_at: format_time(m.created_at_us),
            files: m.files.len(),
            bytes: m.files.iter().map(|(_, b, _)| b).sum(),
            took_ms: None,
        }
    }
}

/// `GET /api/v1/admin/snapshots`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SnapshotListOut {
    pub snapshots: Vec<SnapshotOut>,
    /// The oldest moment a point-in-time restore can reach from this data directory: the
    /// oldest kept snapshot's commit time (the archived WAL since it is kept). `null` without
    /// snapshots.
    pub restorable_from: Option<String>,
    /// The archived WAL that replays from a snapshot to any later moment.
    pub archive: ArchiveOut,
}

/// `wal/archive` of the data directory.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ArchiveOut {
    /// Closed WAL segments kept.
    pub segments: usize,
    pub bytes: u64,
    /// How long they are kept (`wal.archive_retention`); `null`: forever.
    pub retention_seconds: Option<f64>,
}

/// `DELETE /api/v1/admin/snapshots/{id}`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SnapshotDeletedOut {
    pub id: String,
    pub deleted: bool,
}

/// Moves reported in full; beyond this only the counts.
pub const MAX_REPORTED_MOVES: usize = 1000;

/// One planned or made tier move.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MoveOut {
    pub id: String,
    pub from: &'static str,
    pub to: &'static str,
    pub retention: f64,
    pub reason: &'static str,
}

/// `POST /api/v1/admin/migrate`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MigrateOut {
    pub dry_run: bool,
    pub moved: usize,
    pub planned: usize,
    pub by_route: BTreeMap<String, u64>,
    pub skipped: usize,
    pub moves: Vec<MoveOut>,
    pub moves_truncated: bool,
    pub took_ms: u64,
}

impl From<MigrationReport> for MigrateOut {
    fn from(r: MigrationReport) -> MigrateOut {
        let mut by_route = BTreeMap::new();
        for m in &r.moves {
            *by_route
                .entry(format!("{}_to_{}", m.from.as_str(), m.to.as_str()))
                .or_default() += 1;
        }
        MigrateOut {
            dry_run: r.dry_run,
            moved: if r.dry_run { 0 } else { r.moves.len() },
            planned: r.moves.len(),
            by_route,
            skipped: r.skipped,
            moves_truncated: r.moves.len() > MAX_REPORTED_MOVES,
            moves: r
                .moves
                .iter()
                .take(MAX_REPORTED_MOVES)
                .map(|m| MoveOut {
                    id: m.id.to_string(),
                    from: m.from.as_str(),
                    to: m.to.as_str(),
                    retention: m.retention,
                    reason: m.reason,
                })
                .collect(),
            took_ms: r.took.as_millis() as u64,
        }
    }
}

/// `POST /api/v1/admin/compact`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CompactOut {
    pub segments_in: usize,
    pub segments_out: usize,
    pub live_kept: usize,
    pub dead_dropped: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub took_ms: u64,
}

impl From<CompactionReport> for CompactOut {
    fn from(r: CompactionReport) -> CompactOut {
        CompactOut {
            segments_in: r.segments_in,
            segments_out: r.segments_out,
            live_kept: r.live_kept,
            dead_dropped: r.dead_dropped,
            bytes_before: r.bytes_before,
            bytes_after: r.bytes_after,
            took_ms: r.took.as_millis() as u64,
        }
    }
}

/// One tier in `GET /api/v1/tiers`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TierOut {
    pub count: u64,
    pub bytes_on_disk: u64,
    pub avg_importance: f64,
    pub avg_access_count: f64,
    pub oldest_access: Option<String>,
    /// Cold only: live segments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<usize>,
}

/// `POST /api/v1/admin/test-clock`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TestClockOut {
    /// The engine's time of day after the move (RFC 3339).
    pub now: String,
    /// How far ahead of the system clock the engine's clock now runs, in milliseconds.
    pub ahead_ms: i64,
}

/// `GET /api/v1/tiers`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TiersOut {
    pub tiers: BTreeMap<&'static str, TierOut>,
    /// The live `[tier_migration]` settings, to draw the retention curve from.
    pub policy: PolicyOut,
    /// Every live cold segment, oldest first.
    pub cold_segments: Vec<ColdSegmentOut>,
}

/// The tier policy as configured (`[tier_migration]`), durations in seconds.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PolicyOut {
    pub enabled: bool,
    pub interval_seconds: f64,
    pub working_to_warm_after_seconds: f64,
    pub warm_to_cold_after_seconds: f64,
    pub min_importance_to_stay_warm: f32,
    pub promote_after_accesses: u64,
    /// S of a memory never accessed, of importance 0.
    pub strength_seconds: f64,
    pub access_weight: f64,
    pub importance_weight: f64,
    pub compact_dead_ratio: f64,
}

/// One cold segment.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ColdSegmentOut {
    pub id: u64,
    /// Memories written into it.
    pub entries: usize,
    /// Of those, the ones still current (the rest are dead: changed, moved or deleted since).
    pub live: usize,
    pub bytes: u64,
}

impl TiersOut {
    pub fn new(
        report: &[TierReport; 3],
        segments: &[ColdSegmentStats],
        policy: &MigrationConfig,
    ) -> TiersOut {
        let tiers = Tier::ALL
            .iter()
            .zip(report)
            .map(|(tier, r)| {
                let out = TierOut {
                    count: r.count,
                    bytes_on_disk: r.bytes_on_disk,
                    avg_importance: r.avg_importance,
                    avg_access_count: r.avg_access_count,
                    oldest_access: r.oldest_access_us.map(format_time),
                    segments: (*tier == Tier::Cold).then_some(segments.len()),
                };
                (tier.as_str(), out)
            })
            .collect();
        TiersOut {
            tiers,
            policy: PolicyOut {
                enabled: policy.enabled,
                interval_seconds: policy.interval.as_secs_f64(),
                working_to_warm_after_seconds: policy.working_to_warm_after.as_secs_f64(),
                warm_to_cold_after_seconds: policy.warm_to_cold_after.as_secs_f64(),
                min_importance_to_stay_warm: policy.min_importance_to_stay_warm,
                promote_after_accesses: policy.promote_after_accesses,
                strength_seconds: policy.strength.as_secs_f64(),
                access_weight: policy.access_weight,
                importance_weight: policy.importance_weight,
                compact_dead_ratio: policy.compact_dead_ratio,
            },
            cold_segments: segments
                .iter()
                .map(|s| ColdSegmentOut {
                    id: s.id.0,
                    entries: s.entries,
                    live: s.live,
                    bytes: s.bytes,
                })
                .collect(),
        }
    }
}

//! Wire types of a memory's history: `GET /api/v1/memories/{id}/history` and
//! `POST /api/v1/memories/{id}/revert`.

use engram_engine::history::{Field, Version};
use engram_engine::Uuid;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::vector::VectorFormat;
use super::{format_time, MemoryOut};
use crate::error::ApiError;

/// `POST /api/v1/memories/{id}/revert`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevertRequest {
    /// The version to make current again (as a new version: history is never rewritten).
    #[schemars(range(min = 1))]
    pub version: u64,
    /// Who reverts (or the `X-Engram-Actor` header).
    pub actor: Option<String>,
}

/// One version in a history.
#[derive(Debug, Serialize, JsonSchema)]
pub struct VersionOut {
    pub version: u64,
    /// When this version was written.
    pub valid_from: String,
    /// When the next version replaced it (`null`: the current version).
    pub valid_to: Option<String>,
    /// The fields this version changed from the one before (`null`: version 1, or the one
    /// before is no longer kept). Who made it is `actor`, not a change.
    pub changed: Option<Vec<&'static str>>,
    /// Who made it.
    pub actor: Option<String>,
    /// The memory as it was (`tier` and access counts are today's).
    pub memory: MemoryOut,
}

/// `GET /api/v1/memories/{id}/history`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct HistoryOut {
    pub id: String,
    /// Newest first.
    pub versions: Vec<VersionOut>,
    /// Pass back as `cursor` for older versions; `null` when no older version is kept.
    pub next_cursor: Option<String>,
}

impl HistoryOut {
    pub fn new(
        id: Uuid,
        versions: Vec<Version>,
        next_before: Option<u64>,
        embedding: Option<VectorFormat>,
    ) -> HistoryOut {
        HistoryOut {
            id: id.to_string(),
            versions: versions
                .into_iter()
                .map(|v| VersionOut {
                    version: v.memory.version,
                    valid_from: format_time(v.valid_from_us),
                    valid_to: v.valid_to_us.map(format_time),
                    // Who made a version is said beside it, not as a change of the memory.
                    changed: v.changed.map(|c| {
                        c.iter()
                            .filter(|f| *f != Field::Actor)
                            .map(Field::as_str)
                            .collect()
                    }),
                    actor: v.memory.actor.clone(),
                    memory: MemoryOut::new(v.memory, embedding),
                })
                .collect(),
            next_cursor: next_before.map(encode_history_cursor),
        }
    }
}

/// History cursors are opaque to clients: `v1_` and the version the next page lists below.
pub fn encode_history_cursor(before: u64) -> String {
    format!("v1_{before}")
}

pub fn decode_history_cursor(s: &str) -> Result<u64, ApiError> {
    s.strip_prefix("v1_")
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::invalid("cursor", "is not a cursor this server issued"))
}

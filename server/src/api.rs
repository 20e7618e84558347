//! JSON wire types of the v1 API and their conversion to and from engine types. Engine types are
//! never serialized directly: this module is the only place that knows the wire shape.

use engram_engine::{
    hex, Memory, MemoryPatch, NewMemory, Status, Tier, Uuid, DEFAULT_IMPORTANCE, DEFAULT_NAMESPACE,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::ApiError;

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn nullable<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateMemory {
    pub namespace: Option<String>,
    pub content: String,
    pub embedding: Option<Vec<f64>>,
    pub importance_score: Option<f64>,
    pub metadata: Option<Map<String, Value>>,
    pub tags: Option<Vec<String>>,
    pub parent_id: Option<String>,
    pub created_at: Option<String>,
    pub expires_at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchCreate {
    /// Kept as raw JSON so each item is parsed once, straight into [`CreateMemory`].
    pub memories: Vec<Box<RawValue>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchMemory {
    pub namespace: Option<String>,
    pub content: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub embedding: Option<Option<Vec<f64>>>,
    pub importance_score: Option<f64>,
    pub metadata: Option<Map<String, Value>>,
    pub tags: Option<Vec<String>>,
    pub status: Option<String>,
    pub tier: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub parent_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub expires_at: Option<Option<String>>,
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

fn embedding(field: &'static str, v: Vec<f64>) -> Result<Vec<f32>, ApiError> {
    v.into_iter()
        .enumerate()
        .map(|(i, x)| {
            let y = x as f32;
            if y.is_finite() {
                Ok(y)
            } else {
                Err(ApiError::invalid(
                    field,
                    format!("value at index {i} is not a finite 32-bit float"),
                ))
            }
        })
        .collect()
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
        Ok(NewMemory {
            namespace: self
                .namespace
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
            content: self.content,
            embedding: self
                .embedding
                .map(|v| embedding("embedding", v))
                .transpose()?,
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
            embedding: self
                .embedding
                .map(|e| e.map(|v| embedding("embedding", v)).transpose())
                .transpose()?,
            importance: self.importance_score.map(importance).transpose()?,
            metadata_json: self.metadata.map(metadata_text),
            tags: self.tags,
            status: self
                .status
                .map(|s| {
                    Status::parse(&s).ok_or_else(|| {
                        ApiError::invalid(
                            "status",
                            format!("must be active, archived or deleted, got {s:?}"),
                        )
                    })
                })
                .transpose()?,
            tier: self
                .tier
                .map(|s| {
                    Tier::parse(&s).ok_or_else(|| {
                        ApiError::invalid(
                            "tier",
                            format!("must be working, warm or cold, got {s:?}"),
                        )
                    })
                })
                .transpose()?,
            parent_id: self
                .parent_id
                .map(|p| p.map(|s| parse_id("parent_id", &s)).transpose())
                .transpose()?,
            expires_at_us: self
                .expires_at
                .map(|p| p.map(|s| parse_time("expires_at", &s)).transpose())
                .transpose()?,
        };
        if patch == MemoryPatch::default() && self.namespace.is_none() {
            return Err(ApiError::invalid("body", "names no field to update"));
        }
        Ok((patch, self.namespace))
    }
}

/// A memory as the API shows it.
#[derive(Debug, Serialize)]
pub struct MemoryOut {
    pub id: String,
    pub namespace: String,
    pub content: String,
    pub content_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
    pub has_embedding: bool,
    pub tier: &'static str,
    pub status: &'static str,
    pub importance_score: f32,
    pub access_count: u64,
    pub last_accessed_at: Option<String>,
    pub metadata: Box<RawValue>,
    pub tags: Vec<String>,
    pub parent_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub expires_at: Option<String>,
    pub version: u64,
}

impl MemoryOut {
    pub fn new(m: Memory, include_embedding: bool) -> MemoryOut {
        let metadata = RawValue::from_string(m.metadata_json)
            .unwrap_or_else(|_| RawValue::from_string("{}".to_owned()).expect("{} is valid JSON"));
        MemoryOut {
            id: m.id.to_string(),
            namespace: m.namespace,
            content: m.content,
            content_hash: hex(&m.content_hash),
            has_embedding: m.embedding.is_some(),
            embedding: if include_embedding { m.embedding } else { None },
            tier: m.tier.as_str(),
            status: m.status.as_str(),
            importance_score: m.importance,
            access_count: m.access_count,
            last_accessed_at: m.last_accessed_at_us.map(format_time),
            metadata,
            tags: m.tags,
            parent_id: m.parent_id.map(|p| p.to_string()),
            created_at: format_time(m.created_at_us),
            updated_at: format_time(m.updated_at_us),
            expires_at: m.expires_at_us.map(format_time),
            version: m.version,
        }
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
    fn embedding_overflowing_f32_is_refused() {
        assert!(embedding("embedding", vec![1e39]).is_err());
        assert!(embedding("embedding", vec![0.5, -1e30]).is_ok());
    }
}

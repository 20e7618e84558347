//! The API's wire types as the client reads and writes them (docs/api.md, docs/openapi.json).
//! Times stay RFC 3339 strings: the client adds no date library.

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

/// A memory to store (`POST /api/v1/memories`); fields left `None` take the daemon's defaults.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NewMemory {
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Sent as `embedding_b64` (base64 of little-endian f32s): exact, and no float parsing.
    #[serde(
        rename = "embedding_b64",
        serialize_with = "vector_b64",
        skip_serializing_if = "Option::is_none"
    )]
    pub embedding: Option<Vec<f32>>,
    #[serde(rename = "importance_score", skip_serializing_if = "Option::is_none")]
    pub importance: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl NewMemory {
    pub fn new(content: impl Into<String>) -> NewMemory {
        NewMemory {
            content: content.into(),
            ..NewMemory::default()
        }
    }

    pub fn namespace(mut self, ns: impl Into<String>) -> NewMemory {
        self.namespace = Some(ns.into());
        self
    }

    pub fn importance(mut self, x: f32) -> NewMemory {
        self.importance = Some(x);
        self
    }

    pub fn tags<S: Into<String>>(mut self, tags: impl IntoIterator<Item = S>) -> NewMemory {
        self.tags = Some(tags.into_iter().map(Into::into).collect());
        self
    }

    pub fn embedding(mut self, v: Vec<f32>) -> NewMemory {
        self.embedding = Some(v);
        self
    }
}

fn vector_b64<S: Serializer>(v: &Option<Vec<f32>>, s: S) -> Result<S::Ok, S::Error> {
    use base64::Engine as _;
    match v {
        Some(v) => {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        None => s.serialize_none(),
    }
}

/// A stored memory.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Memory {
    pub id: String,
    pub namespace: String,
    pub content: String,
    pub content_hash: String,
    #[serde(default)]
    pub embedding: Option<Vec<f32>>,
    pub has_embedding: bool,
    pub embedding_status: String,
    #[serde(default)]
    pub embedding_error: Option<String>,
    pub embedding_model: Option<String>,
    pub tier: String,
    pub status: String,
    #[serde(rename = "importance_score")]
    pub importance: f64,
    pub access_count: u64,
    pub last_accessed_at: Option<String>,
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    pub tags: Vec<String>,
    pub parent_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub expires_at: Option<String>,
    pub version: u64,
}

/// One search result.
#[derive(Debug, Clone, Deserialize)]
pub struct SearchHit {
    pub memory: Memory,
    pub score: f32,
    pub distance: Option<f32>,
    #[serde(default)]
    pub explanation: Option<Value>,
}

/// A search's results, best first.
#[derive(Debug, Clone, Deserialize)]
pub struct SearchResults {
    #[serde(rename = "results")]
    pub hits: Vec<SearchHit>,
    pub total_count: usize,
    pub query_time_ms: f64,
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Deleted {
    pub id: String,
    pub deleted_at: String,
    pub purged: bool,
}

/// One item of a batch answer: the stored memory, or why it was not stored.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum BatchItem {
    Stored(Box<Memory>),
    Failed { error: ItemError },
}

#[derive(Debug, Clone, Deserialize)]
pub struct ItemError {
    pub code: String,
    pub message: String,
    pub details: Value,
}

impl BatchItem {
    /// The stored memory's id, if it was stored.
    pub fn id(&self) -> Option<&str> {
        match self {
            BatchItem::Stored(m) => Some(&m.id),
            BatchItem::Failed { .. } => None,
        }
    }
}

/// What a list asks for (`GET /api/v1/memories`).
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub namespace: Option<String>,
    pub tier: Option<String>,
    pub status: Option<String>,
    pub tag: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

impl ListQuery {
    pub(crate) fn to_query_string(&self) -> String {
        let pairs: Vec<String> = [
            ("namespace", self.namespace.clone()),
            ("tier", self.tier.clone()),
            ("status", self.status.clone()),
            ("tag", self.tag.clone()),
            ("limit", self.limit.map(|n| n.to_string())),
            ("cursor", self.cursor.clone()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", encode(&v))))
        .collect();
        if pairs.is_empty() {
            String::new()
        } else {
            format!("?{}", pairs.join("&"))
        }
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Debug, Clone, Deserialize)]
pub struct ListPage {
    pub memories: Vec<Memory>,
    pub next_cursor: Option<String>,
}

/// The health report.
#[derive(Debug, Clone, Deserialize)]
pub struct Health {
    pub status: String,
    pub database_connected: bool,
    pub embedding_service_available: bool,
    pub version: String,
    pub uptime_seconds: u64,
    pub tiers: Map<String, Value>,
    pub embedding: Value,
    pub wal: Value,
}

/// An online snapshot.
#[derive(Debug, Clone, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub lsn: u64,
    pub commit_time: Option<String>,
    pub created_at: String,
    pub files: usize,
    pub bytes: u64,
    #[serde(default)]
    pub took_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_encode_values() {
        let q = ListQuery {
            namespace: Some("a b&c".into()),
            limit: Some(5),
            ..ListQuery::default()
        };
        assert_eq!(q.to_query_string(), "?namespace=a%20b%26c&limit=5");
        assert_eq!(ListQuery::default().to_query_string(), "");
    }
}

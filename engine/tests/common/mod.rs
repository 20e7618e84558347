//! Helpers shared by the engine's integration tests.

use engram_engine::NewMemory;

/// A memory in namespace `n` with importance 0.5 and no tags, metadata, parent or expiry.
pub fn plain_memory(content: String, embedding: Vec<f32>) -> NewMemory {
    NewMemory {
        namespace: "n".into(),
        content,
        embedding: Some(embedding),
        importance: 0.5,
        metadata_json: "{}".into(),
        tags: vec![],
        parent_id: None,
        created_at_us: None,
        expires_at_us: None,
    }
}

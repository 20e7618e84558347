//! Helpers shared by the engine's integration tests.
#![allow(
    dead_code,
    reason = "each test binary uses its own part of these helpers"
)]

use engram_engine::{Memory, NewMemory, Status};

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
        supersedes: vec![],
        actor: None,
    }
}

/// A memory as the fault tests' oracles follow it.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Live { content: String, importance: f32 },
    Deleted { content: String },
    Purged,
}

impl State {
    /// The state a read shows (`None`: not found).
    pub fn of(m: Option<&Memory>) -> State {
        match m {
            None => State::Purged,
            Some(m) if m.status == Status::Deleted => State::Deleted {
                content: m.content.clone(),
            },
            Some(m) => State::Live {
                content: m.content.clone(),
                importance: m.importance,
            },
        }
    }

    pub fn content(&self) -> Option<&str> {
        match self {
            State::Live { content, .. } | State::Deleted { content } => Some(content),
            State::Purged => None,
        }
    }
}

//! Field validation of memories about to be stored: one owner for every limit's check and its
//! message. Pure functions of their inputs (and the store's dimensions), so they are tested
//! here rather than through the daemon.

use crate::model::{
    is_valid_namespace, namespace_rule, MemoryPatch, Status, MAX_ACTOR_BYTES, MAX_CONTENT_BYTES,
    MAX_METADATA_BYTES, MAX_SUPERSEDES, MAX_TAGS, MAX_TAG_BYTES,
};
use crate::EngineError;

/// An embedding of the store's dimensions, every value finite, with a length cosine similarity
/// can use: not zero (no direction) and with a sum of squares that fits an `f32` (the index and
/// the exact scans compute it in `f32`; past that every distance is NaN).
pub(crate) fn embedding(embedding: &[f32], dimensions: usize) -> Result<(), EngineError> {
    if embedding.len() != dimensions {
        return Err(EngineError::Invalid {
            field: "embedding",
            message: format!(
                "has {} dimensions; this store uses {}",
                embedding.len(),
                dimensions
            ),
        });
    }
    if let Some(i) = embedding.iter().position(|x| !x.is_finite()) {
        return Err(EngineError::Invalid {
            field: "embedding",
            message: format!("value at index {i} is not a finite number"),
        });
    }
    let squares: f32 = embedding.iter().map(|x| x * x).sum();
    if squares == 0.0 {
        return Err(EngineError::Invalid {
            field: "embedding",
            message: "is all zeros (or too small for a 32-bit float): it has no direction to \
                      compare"
                .to_owned(),
        });
    }
    if !squares.is_finite() {
        return Err(EngineError::Invalid {
            field: "embedding",
            message: "is too long: the sum of its squares overflows a 32-bit float (scale it \
                      down; only its direction counts)"
                .to_owned(),
        });
    }
    Ok(())
}

/// The fields a new memory and a patch share; `None` is not checked.
fn common(
    dimensions: usize,
    content: Option<&str>,
    vector: Option<&[f32]>,
    importance: Option<f32>,
    metadata_json: Option<&str>,
    tags: Option<&[String]>,
) -> Result<(), EngineError> {
    if let Some(c) = content {
        if c.is_empty() {
            return Err(EngineError::Invalid {
                field: "content",
                message: "must not be empty".to_owned(),
            });
        }
        if c.len() > MAX_CONTENT_BYTES {
            return Err(EngineError::TooLarge {
                field: "content",
                message: format!("is {} bytes; the limit is {MAX_CONTENT_BYTES}", c.len()),
            });
        }
    }
    if let Some(v) = vector {
        embedding(v, dimensions)?;
    }
    if let Some(i) = importance {
        if !(0.0..=1.0).contains(&i) {
            return Err(EngineError::Invalid {
                field: "importance_score",
                message: format!("must be between 0.0 and 1.0, got {i}"),
            });
        }
    }
    if let Some(m) = metadata_json {
        if m.len() > MAX_METADATA_BYTES {
            return Err(EngineError::TooLarge {
                field: "metadata",
                message: format!(
                    "is {} bytes of JSON; the limit is {MAX_METADATA_BYTES}",
                    m.len()
                ),
            });
        }
    }
    if let Some(tags) = tags {
        if tags.len() > MAX_TAGS {
            return Err(EngineError::Invalid {
                field: "tags",
                message: format!("has {} tags; the limit is {MAX_TAGS}", tags.len()),
            });
        }
        for tag in tags {
            if tag.is_empty() || tag.len() > MAX_TAG_BYTES {
                return Err(EngineError::Invalid {
                    field: "tags",
                    message: format!("each tag must be 1 to {MAX_TAG_BYTES} bytes"),
                });
            }
        }
    }
    Ok(())
}

/// Every field of a memory about to be stored new (created or imported).
pub(crate) fn new_memory(
    dimensions: usize,
    namespace: &str,
    content: &str,
    vector: Option<&[f32]>,
    importance: f32,
    metadata_json: &str,
    tags: &[String],
) -> Result<(), EngineError> {
    if !is_valid_namespace(namespace) {
        return Err(EngineError::Invalid {
            field: "namespace",
            message: namespace_rule(),
        });
    }
    common(
        dimensions,
        Some(content),
        vector,
        Some(importance),
        Some(metadata_json),
        Some(tags),
    )
}

/// The fields a partial update sets.
pub(crate) fn patch(p: &MemoryPatch, dimensions: usize) -> Result<(), EngineError> {
    common(
        dimensions,
        p.content.as_deref(),
        p.embedding.as_ref().and_then(|e| e.as_deref()),
        p.importance,
        p.metadata_json.as_deref(),
        p.tags.as_deref(),
    )?;
    if p.status == Some(Status::Superseded) && !matches!(p.superseded_by, Some(Some(_))) {
        return Err(EngineError::Invalid {
            field: "status",
            message: "superseded is set by creating the memory that replaces it \
                      (`supersedes`), not by an update"
                .to_owned(),
        });
    }
    actor(p.actor.as_deref())
}

/// Who a request says makes a version: 1 to [`MAX_ACTOR_BYTES`] bytes without control
/// characters.
pub(crate) fn actor(actor: Option<&str>) -> Result<(), EngineError> {
    match actor {
        Some(a) if a.is_empty() || a.len() > MAX_ACTOR_BYTES || a.chars().any(char::is_control) => {
            Err(EngineError::Invalid {
                field: "actor",
                message: format!("must be 1 to {MAX_ACTOR_BYTES} bytes without control characters"),
            })
        }
        _ => Ok(()),
    }
}

/// The memories a create replaces: at most [`MAX_SUPERSEDES`].
pub(crate) fn supersedes(ids: &[uuid::Uuid]) -> Result<(), EngineError> {
    if ids.len() > MAX_SUPERSEDES {
        return Err(EngineError::Invalid {
            field: "supersedes",
            message: format!(
                "names {} memories; the limit is {MAX_SUPERSEDES}",
                ids.len()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(r: Result<(), EngineError>) -> &'static str {
        match r {
            Err(EngineError::Invalid { field, .. } | EngineError::TooLarge { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    fn new_ok(ns: &str, content: &str, tags: &[String]) -> Result<(), EngineError> {
        new_memory(3, ns, content, Some(&[0.1, 0.2, 0.3]), 0.5, "{}", tags)
    }

    #[test]
    fn a_valid_memory_passes() {
        new_ok("agent:1", "hello", &["a".to_owned()]).expect("valid");
        patch(&MemoryPatch::default(), 3).expect("an empty patch is valid");
    }

    #[test]
    fn each_limit_is_refused_one_past_it_naming_the_field() {
        let ns = "n".repeat(crate::MAX_NAMESPACE_BYTES + 1);
        assert_eq!(field_of(new_ok(&ns, "x", &[])), "namespace");
        assert_eq!(field_of(new_ok("", "x", &[])), "namespace");
        new_ok(&"n".repeat(crate::MAX_NAMESPACE_BYTES), "x", &[]).expect("at the limit");
        let content = "c".repeat(MAX_CONTENT_BYTES + 1);
        assert!(matches!(
            new_ok("ns", &content, &[]),
            Err(EngineError::TooLarge {
                field: "content",
                ..
            })
        ));
        new_ok("ns", &"c".repeat(MAX_CONTENT_BYTES), &[]).expect("at the limit");
        assert_eq!(field_of(new_ok("ns", "", &[])), "content");
        let tags: Vec<String> = (0..=MAX_TAGS).map(|i| i.to_string()).collect();
        assert_eq!(field_of(new_ok("ns", "x", &tags)), "tags");
        new_ok("ns", "x", &tags[..MAX_TAGS]).expect("at the limit");
        assert_eq!(
            field_of(new_ok("ns", "x", &["t".repeat(MAX_TAG_BYTES + 1)])),
            "tags"
        );
        assert_eq!(field_of(new_ok("ns", "x", &[String::new()])), "tags");
        let meta = format!("{{\"k\":\"{}\"}}", "m".repeat(MAX_METADATA_BYTES));
        let r = new_memory(3, "ns", "x", None, 0.5, &meta, &[]);
        assert!(matches!(
            r,
            Err(EngineError::TooLarge {
                field: "metadata",
                ..
            })
        ));
    }

    #[test]
    fn importance_and_embeddings_are_checked() {
        for bad in [-0.01, 1.01, f32::NAN] {
            let r = new_memory(3, "ns", "x", None, bad, "{}", &[]);
            assert_eq!(field_of(r), "importance_score", "{bad}");
        }
        assert_eq!(field_of(embedding(&[0.0; 4], 3)), "embedding");
        assert_eq!(field_of(embedding(&[0.0; 3], 3)), "embedding");
        assert_eq!(field_of(embedding(&[1e-30, 0.0, 0.0], 3)), "embedding");
        assert_eq!(field_of(embedding(&[2e19, 1.0, 1.0], 3)), "embedding");
        embedding(&[1e18, 1e-3, 0.0], 3).expect("long but fine");
        embedding(&[0.0, 0.0, 1e-12], 3).expect("short but fine");
        assert_eq!(
            field_of(embedding(&[0.0, f32::INFINITY, 0.0], 3)),
            "embedding"
        );
        let p = MemoryPatch {
            embedding: Some(Some(vec![1.0, 2.0])),
            ..MemoryPatch::default()
        };
        assert_eq!(field_of(patch(&p, 3)), "embedding");
        let p = MemoryPatch {
            content: Some(String::new()),
            ..MemoryPatch::default()
        };
        assert_eq!(field_of(patch(&p, 3)), "content");
    }
}

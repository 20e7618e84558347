//! API errors: one type, one exhaustive mapping from engine errors to HTTP status and code, and
//! the JSON shape `{"error":{"code","message","details","request_id"}}`.

use engram_engine::EngineError;
use hyper::StatusCode;
use serde_json::{json, Value};

/// An error as the API reports it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
    /// Seconds a client should wait (429).
    pub retry_after_seconds: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: json!({}),
            retry_after_seconds: None,
        }
    }

    /// 400 naming the offending field.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError {
            details: json!({ "field": field }),
            ..ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                format!("{field} {message}"),
            )
        }
    }

    /// 413 naming the field or `body`.
    pub fn too_large(field: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError {
            details: json!({ "field": field }),
            ..ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "CONTENT_TOO_LARGE",
                format!("{field} {message}"),
            )
        }
    }

    pub fn body(&self, request_id: &str) -> Value {
        json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "details": self.details,
                "request_id": request_id,
            }
        })
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::Invalid { field, message } => ApiError::invalid(field, message),
            EngineError::TooLarge { field, message } => ApiError::too_large(field, message),
            EngineError::NotFound(id) => ApiError {
                details: json!({ "id": id.to_string() }),
                ..ApiError::new(StatusCode::NOT_FOUND, "MEMORY_NOT_FOUND", format!("memory {id} not found"))
            },
            EngineError::Duplicate { existing } => ApiError {
                details: json!({ "existing_id": existing.to_string() }),
                ..ApiError::new(
                    StatusCode::CONFLICT,
                    "DUPLICATE_CONTENT",
                    format!("a memory with the same content already exists in this namespace: {existing}"),
                )
            },
            EngineError::StorageFull(message) => {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "INSUFFICIENT_STORAGE", message)
            }
            EngineError::Busy(message) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", message)
            }
            EngineError::Poisoned => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                "writes are stopped after a failed disk write or fsync; restart the daemon to recover from the WAL",
            ),
            // Corruption, broken invariants, I/O and anything a newer engine adds: the
            // operator must look.
            e => {
                tracing::error!(error = %e, "internal error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", e.to_string())
            }
        }
    }
}

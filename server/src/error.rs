//! API errors: one type, one exhaustive mapping from engine errors to HTTP status and code, and
//! the JSON shape `{"error":{"code","message","details","request_id"}}`.

use engram_engine::EngineError;
use hyper::StatusCode;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{json, Value};

/// The body of every error reply.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorDetail {
    /// Stable code, e.g. `INVALID_REQUEST`, `MEMORY_NOT_FOUND`.
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// `field` names the offending field where there is one; `existing_id` for
    /// `DUPLICATE_CONTENT`; `index` for a batch item.
    pub details: Value,
    /// The request's id (also the `X-Request-Id` header), for the daemon's log.
    pub request_id: String,
}

/// An error as the API reports it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
    /// Seconds a client should wait (429).
    pub retry_after_seconds: Option<u64>,
    /// The methods the path takes (405).
    pub allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: json!({}),
            retry_after_seconds: None,
            allow: None,
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

    pub fn body(&self, request_id: &str) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone(),
                details: self.details.clone(),
                request_id: request_id.to_owned(),
            },
        }
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
            EngineError::VersionNotFound { id, detail } => ApiError {
                details: json!({ "id": id.to_string() }),
                ..ApiError::new(
                    StatusCode::NOT_FOUND,
                    "VERSION_NOT_FOUND",
                    format!("memory {id} {detail}"),
                )
            },
            EngineError::SpaceNotFound(id) => ApiError {
                details: json!({ "id": id }),
                ..ApiError::new(
                    StatusCode::NOT_FOUND,
                    "MIGRATION_NOT_FOUND",
                    format!("embedding migration {id} not found"),
                )
            },
            EngineError::SpaceConflict { id, code, message } => ApiError {
                details: json!({ "id": id }),
                ..ApiError::new(
                    StatusCode::CONFLICT,
                    code,
                    if id == 0 {
                        message
                    } else {
                        format!("embedding migration {id}: {message}")
                    },
                )
            },
            EngineError::IdExists(id) => ApiError {
                details: json!({ "id": id.to_string() }),
                ..ApiError::new(StatusCode::CONFLICT, "ID_EXISTS", format!("memory {id} exists already"))
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

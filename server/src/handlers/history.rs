//! A memory's past: its history, a past version (`GET …/{id}?version=N` or `?as_of=`), and
//! revert. Reads rebuild versions from RocksDB on a blocking thread; they count no access.

use std::sync::Arc;

use engram_engine::{Memory, Uuid, MAX_HISTORY_LIMIT};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use crate::api::history::{decode_history_cursor, HistoryOut, RevertRequest};
use crate::api::{self, MemoryOut};
use crate::config::ApiKey;
use crate::error::ApiError;
use crate::handlers::memories::{after_write, authorized_read, count, embedding_view, WriteParams};
use crate::http::body::{blocking, parse_json, read_body, Query};
use crate::http::{json_reply, AppState, Reply};

/// Page size of a history that names none.
const DEFAULT_HISTORY_LIMIT: usize = 20;

/// Which past version a get asks for.
pub(crate) enum Past {
    Version(u64),
    AsOf(i64),
}

impl Past {
    /// `?version=N` or `?as_of=RFC3339` (not both); `None` for the current version.
    pub(crate) fn from_query(query: &Query) -> Result<Option<Past>, ApiError> {
        match (query.get("version"), query.get("as_of")) {
            (Some(_), Some(_)) => Err(ApiError::invalid(
                "as_of",
                "cannot be given together with version",
            )),
            (Some(v), None) => v
                .parse::<u64>()
                .ok()
                .filter(|v| *v > 0)
                .map(|v| Some(Past::Version(v)))
                .ok_or_else(|| {
                    ApiError::invalid("version", format!("must be a positive integer, got {v:?}"))
                }),
            (None, Some(t)) => Ok(Some(Past::AsOf(api::parse_time("as_of", t)?))),
            (None, None) => Ok(None),
        }
    }
}

/// A past version of `id`, checked against the key's namespaces.
pub(crate) async fn get_past(
    state: &Arc<AppState>,
    id: Uuid,
    past: Past,
    key: Option<&ApiKey>,
) -> Result<Memory, ApiError> {
    if key.is_some() {
        authorized_read(state, id, key).await?;
    }
    let engine = Arc::clone(&state.engine);
    let m = blocking(move || match past {
        Past::Version(v) => engine.get_version(&id, v),
        Past::AsOf(t) => engine.get_as_of(&id, t),
    })
    .await??;
    count(state, "get_version");
    Ok(m)
}

pub(crate) async fn history(
    state: &Arc<AppState>,
    id: &str,
    key: Option<&ApiKey>,
    query: &Query,
) -> Result<Reply, ApiError> {
    let id = api::parse_id("id", id)?;
    let embedding = embedding_view(query)?;
    let limit = match query.get("limit") {
        None => DEFAULT_HISTORY_LIMIT,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_HISTORY_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "limit",
                    format!("must be an integer from 1 to {MAX_HISTORY_LIMIT}, got {s:?}"),
                )
            })?,
    };
    let out = history_page(state, id, query.get("cursor"), limit, key, embedding).await?;
    Ok(json_reply(StatusCode::OK, &out))
}

/// A page of `id`'s versions, checked against the key's namespaces: the core of the history
/// endpoint and the MCP `memory_history` tool.
pub(crate) async fn history_page(
    state: &Arc<AppState>,
    id: Uuid,
    cursor: Option<&str>,
    limit: usize,
    key: Option<&ApiKey>,
    embedding: Option<crate::api::vector::VectorFormat>,
) -> Result<HistoryOut, ApiError> {
    let before = cursor.map(decode_history_cursor).transpose()?;
    if key.is_some() {
        authorized_read(state, id, key).await?;
    }
    let engine = Arc::clone(&state.engine);
    let page = blocking(move || engine.history(&id, before, limit)).await??;
    count(state, "history");
    Ok(HistoryOut::new(
        id,
        page.versions,
        page.next_before,
        embedding,
    ))
}

pub(crate) async fn revert(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    id: &str,
    key: Option<&ApiKey>,
    query: &Query,
) -> Result<Reply, ApiError> {
    let id = api::parse_id("id", id)?;
    let params = WriteParams::from_request(query, req.headers())?;
    let body = read_body(req, state.settings.max_body_bytes).await?;
    let RevertRequest { version, actor } = parse_json(&body)?;
    if version == 0 {
        return Err(ApiError::invalid(
            "version",
            "must be a positive integer, got 0",
        ));
    }
    let actor = actor.or_else(|| params.actor.clone());
    if key.is_some() {
        authorized_read(state, id, key).await?;
    }
    let engine = Arc::clone(&state.engine);
    let memory = blocking(move || engine.revert(&id, version, actor)).await??;
    count(state, "revert");
    let memory = after_write(state, memory, params.wait_for_embedding).await?;
    Ok(params.reply(StatusCode::OK, memory))
}

/// The reply of a past version: the memory as it was.
pub(crate) fn past_reply(memory: Memory, query: &Query) -> Result<Reply, ApiError> {
    Ok(json_reply(
        StatusCode::OK,
        &MemoryOut::new(memory, embedding_view(query)?),
    ))
}

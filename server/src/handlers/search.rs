//! `POST /api/v1/search` (and its `semantic` and `text` forms): the query's text is embedded on
//! a blocking thread when no vector is sent, then the engine ranks.

use std::sync::Arc;
use std::time::Instant;

use engram_engine::search::SearchMode;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use crate::api::replies::{SearchHitOut, SearchOut};
use crate::api::SearchRequest;
use crate::config::ApiKey;
use crate::error::ApiError;
use crate::http::auth::authorize;
use crate::http::body::{blocking, parse_json, read_body};
use crate::http::{json_reply, AppState, Reply};

pub(crate) async fn search(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    key: Option<&ApiKey>,
    forced: Option<SearchMode>,
) -> Result<Reply, ApiError> {
    let body = read_body(req, state.settings.max_body_bytes).await?;
    let out = run(state, parse_json(&body)?, key, forced).await?;
    Ok(json_reply(StatusCode::OK, &out))
}

/// Runs one search (REST search, MCP `recall`), embedding the query text if needed, and
/// counts it.
pub(crate) async fn run(
    state: &Arc<AppState>,
    request: SearchRequest,
    key: Option<&ApiKey>,
    forced: Option<SearchMode>,
) -> Result<SearchOut, ApiError> {
    let started = Instant::now();
    let (mut q, shape) = request.into_query(forced)?;
    authorize(key, &q.namespace)?;
    let mut warnings: Vec<String> = Vec::new();
    // With an active embedding migration, the present is ranked in its space: its model
    // embeds the query (the past keeps the store's own vectors and model, unless those were
    // dropped).
    let active = if q.as_of_us.is_none() || state.engine.own_vectors().dropped.is_some() {
        state.engine.active_space()
    } else {
        None
    };
    if let (Some((id, descriptor)), Some(text), true) = (
        active,
        q.text.clone(),
        q.mode != SearchMode::Text && q.embedding.is_none(),
    ) {
        match super::migrations::embed_query(state, id, descriptor, text).await? {
            Ok(v) => q.embedding = Some(v),
            Err(e) if q.mode == SearchMode::Semantic => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SERVICE_UNAVAILABLE",
                    format!("cannot embed query_text with the active migration's model: {e}"),
                ))
            }
            Err(e) => warnings.push(format!(
                "query_text could not be embedded ({e}); ranked without the semantic part"
            )),
        }
    }
    if q.mode != SearchMode::Text && q.embedding.is_none() && warnings.is_empty() {
        match (&state.query_embedder, &q.text) {
            (Some(queries), Some(text)) => match queries.embed(text.clone()).await {
                Ok(v) => q.embedding = Some(v),
                Err(e) if q.mode == SearchMode::Semantic => {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "SERVICE_UNAVAILABLE",
                        format!("cannot embed query_text: {e}"),
                    ))
                }
                Err(e) => warnings.push(format!(
                    "query_text could not be embedded ({e}); ranked without the semantic part"
                )),
            },
            _ if q.mode == SearchMode::Semantic => {
                return Err(ApiError::invalid(
                    "query_embedding",
                    "is required for a semantic search when no embedding provider is configured",
                ))
            }
            (_, None) => {
                return Err(ApiError::invalid(
                    "query_text",
                    "or query_embedding is required",
                ))
            }
            (None, Some(_)) => {}
        }
    }
    let half_life = q.recency_half_life_hours;
    let engine = Arc::clone(&state.engine);
    let results = blocking(move || engine.search(&q)).await??;
    state
        .metrics
        .operations
        .with_label_values(&["search"])
        .inc();
    Ok(SearchOut {
        results: results
            .hits
            .into_iter()
            .map(|h| SearchHitOut::new(h, shape, half_life))
            .collect(),
        total_count: results.total_count,
        query_time_ms: started.elapsed().as_secs_f64() * 1000.0,
        warnings,
    })
}

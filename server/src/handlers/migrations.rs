//! `/api/v1/admin/embedding/migrations`: start, watch, pause, resume and drop embedding
//! migrations, and search a migration's space on its own. Admin keys only (the router).

use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use crate::api::migrations::{
    CreateMigrationRequest, MigrationDeletedOut, MigrationHitOut, MigrationListOut, MigrationOut,
    MigrationSearchOut, MigrationSearchRequest, OwnVectorsOut,
};
use crate::api::MemoryOut;
use crate::error::ApiError;
use crate::http::body::{blocking, parse_json, read_body};
use crate::http::{json_reply, AppState, Reply};

/// Embeds a query text with migration `id`'s model, on a blocking thread.
pub(crate) async fn embed_query(
    state: &Arc<AppState>,
    id: u32,
    descriptor: String,
    text: String,
) -> Result<Result<Vec<f32>, String>, ApiError> {
    let s = Arc::clone(state);
    blocking(move || {
        let embedder = s
            .migrations
            .embedder(id, &descriptor, &s.settings, s.embedder.as_ref())?;
        embedder
            .embed(&[text.as_str()])
            .map_err(|e| e.to_string())
            .map(|mut v| v.pop().unwrap_or_default())
    })
    .await
}

fn parse_id(id: &str) -> Result<u32, ApiError> {
    id.parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::invalid("id", format!("must be a migration number, got {id:?}")))
}

fn out(state: &AppState, info: &engram_engine::SpaceInfo) -> MigrationOut {
    MigrationOut::new(info, &state.migrations.stats(info.id))
}

pub(crate) async fn create(
    state: &Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Reply, ApiError> {
    let body = read_body(req, state.settings.max_body_bytes).await?;
    let request: CreateMigrationRequest = parse_json(&body)?;
    let spec = request.into_spec()?;
    // The embedder is made (the local model loaded) before anything is registered, so a
    // migration that cannot run is refused rather than left behind.
    let embedder = {
        let (spec, settings, own) = (spec.clone(), state.settings.clone(), state.embedder.clone());
        blocking(move || spec.embedder(&settings, own.as_ref()))
            .await?
            .map_err(|e| ApiError::invalid("provider", e))?
    };
    if embedder.dimensions() != spec.dimensions {
        return Err(ApiError::invalid(
            "dimensions",
            format!(
                "{} makes {}-dimensional vectors, not {}",
                embedder.model_id(),
                embedder.dimensions(),
                spec.dimensions
            ),
        ));
    }
    if spec.provider != "local" {
        // A remote provider embeds one text before anything is registered: a URL that does
        // not answer, a key it refuses or a model of other dimensions is refused now, naming
        // the field, rather than left to fail in the background (and in every search of the
        // space, whose query texts it embeds).
        let probe = Arc::clone(&embedder);
        let answer =
            blocking(move || probe.embed(&["engram: a test of the embedding provider"])).await?;
        match answer.map(|v| v.first().map_or(0, Vec::len)) {
            Ok(n) if n == spec.dimensions => {}
            Ok(n) => {
                return Err(ApiError::invalid(
                    "dimensions",
                    format!(
                        "{} answered {n}-dimensional vectors, not {}",
                        embedder.model_id(),
                        spec.dimensions
                    ),
                ))
            }
            Err(e) => {
                return Err(ApiError::invalid(
                    "url",
                    format!("the provider did not embed a test text: {e}"),
                ))
            }
        }
    }
    let descriptor = serde_json::to_string(&spec).expect("a migration spec serializes");
    let engine = Arc::clone(&state.engine);
    let dimensions = spec.dimensions;
    let info = blocking(move || engine.create_space(dimensions, descriptor)).await??;
    state
        .migrations
        .remember_embedder(info.id, Arc::clone(&embedder));
    state
        .migrations
        .start(&state.engine, info.id, embedder, state.settings.embed_batch);
    tracing::info!(migration = info.id, provider = %spec.provider, model = %spec.model, dimensions, "embedding migration started");
    Ok(json_reply(StatusCode::CREATED, &out(state, &info)))
}

pub(crate) async fn list(state: &Arc<AppState>) -> Result<Reply, ApiError> {
    let engine = Arc::clone(&state.engine);
    let all = blocking(move || engine.spaces()).await??;
    Ok(json_reply(
        StatusCode::OK,
        &MigrationListOut {
            migrations: all.iter().map(|i| out(state, i)).collect(),
        },
    ))
}

pub(crate) async fn get(state: &Arc<AppState>, id: &str) -> Result<Reply, ApiError> {
    let id = parse_id(id)?;
    let engine = Arc::clone(&state.engine);
    let info = blocking(move || engine.space(id)).await??;
    Ok(json_reply(StatusCode::OK, &out(state, &info)))
}

pub(crate) async fn delete(state: &Arc<AppState>, id: &str) -> Result<Reply, ApiError> {
    let id = parse_id(id)?;
    let engine = Arc::clone(&state.engine);
    // Known first, so an unknown id is a 404 before any worker is touched.
    blocking({
        let engine = Arc::clone(&engine);
        move || engine.space(id)
    })
    .await??;
    let s = Arc::clone(state);
    blocking(move || s.migrations.forget(id)).await?;
    blocking(move || engine.drop_space(id)).await??;
    tracing::info!(migration = id, "embedding migration dropped");
    Ok(json_reply(
        StatusCode::OK,
        &MigrationDeletedOut { id, deleted: true },
    ))
}

/// `GET /api/v1/admin/embedding/own-vectors`.
pub(crate) async fn own_vectors(state: &Arc<AppState>) -> Result<Reply, ApiError> {
    Ok(json_reply(
        StatusCode::OK,
        &OwnVectorsOut::new(&state.engine.own_vectors()),
    ))
}

/// `DELETE /api/v1/admin/embedding/own-vectors`: the active migration's space holds the store's
/// vectors from now on, named by its model.
pub(crate) async fn drop_own_vectors(state: &Arc<AppState>) -> Result<Reply, ApiError> {
    let engine = Arc::clone(&state.engine);
    let own = blocking(move || engine.drop_own_vectors()).await??;
    Ok(json_reply(StatusCode::OK, &OwnVectorsOut::new(&own)))
}

pub(crate) async fn pause(
    state: &Arc<AppState>,
    id: &str,
    paused: bool,
) -> Result<Reply, ApiError> {
    let id = parse_id(id)?;
    let engine = Arc::clone(&state.engine);
    let info = blocking(move || engine.set_space_paused(id, paused)).await??;
    if paused {
        let s = Arc::clone(state);
        blocking(move || s.migrations.stop(id)).await?;
    } else {
        let embedder = {
            let (s, descriptor) = (Arc::clone(state), info.descriptor.clone());
            blocking(move || {
                s.migrations
                    .embedder(id, &descriptor, &s.settings, s.embedder.as_ref())
            })
            .await?
            .map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SERVICE_UNAVAILABLE",
                    format!("cannot make the migration's embedder: {e}"),
                )
            })?
        };
        state
            .migrations
            .start(&state.engine, id, embedder, state.settings.embed_batch);
    }
    Ok(json_reply(StatusCode::OK, &out(state, &info)))
}

pub(crate) async fn activate(
    state: &Arc<AppState>,
    id: &str,
    active: bool,
) -> Result<Reply, ApiError> {
    let id = parse_id(id)?;
    let engine = Arc::clone(&state.engine);
    let started = Instant::now();
    let info = blocking(move || {
        if active {
            engine.activate_space(id)
        } else {
            engine.deactivate_space(id)
        }
    })
    .await??;
    tracing::info!(
        migration = id,
        active,
        took_ms = started.elapsed().as_millis() as u64,
        "embedding migration {}",
        if active { "activated" } else { "deactivated" }
    );
    Ok(json_reply(StatusCode::OK, &out(state, &info)))
}

pub(crate) async fn search(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    id: &str,
) -> Result<Reply, ApiError> {
    let started = Instant::now();
    let id = parse_id(id)?;
    let body = read_body(req, state.settings.max_body_bytes).await?;
    let request: MigrationSearchRequest = parse_json(&body)?;
    let q = request.parse()?;
    let engine = Arc::clone(&state.engine);
    let info = blocking(move || engine.space(id)).await??;
    let embedding = match (q.embedding, &q.text) {
        (Some(v), _) => v,
        (None, Some(text)) => embed_query(state, id, info.descriptor.clone(), text.clone())
            .await?
            .map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SERVICE_UNAVAILABLE",
                    format!("cannot embed query_text with the migration's model: {e}"),
                )
            })?,
        (None, None) => unreachable!("parse requires a text or a vector"),
    };
    let engine = Arc::clone(&state.engine);
    let (namespace, limit, superseded) = (q.namespace, q.limit, q.include_superseded);
    let hits = blocking(move || engine.search_space(id, &embedding, &namespace, limit, superseded))
        .await??;
    state
        .metrics
        .operations
        .with_label_values(&["migration_search"])
        .inc();
    Ok(json_reply(
        StatusCode::OK,
        &MigrationSearchOut {
            migration: id,
            results: hits
                .into_iter()
                .map(|(m, similarity)| MigrationHitOut {
                    memory: MemoryOut::new(m, None),
                    similarity,
                })
                .collect(),
            query_time_ms: started.elapsed().as_secs_f64() * 1000.0,
        },
    ))
}

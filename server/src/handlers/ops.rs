//! Health and metrics: open endpoints for probes and scrapers.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use crate::api::replies::{HealthEmbedding, HealthOut, HealthWal, TierCounts};
use crate::http::{json_reply, AppState, Reply};

pub(crate) fn health(state: &AppState) -> Reply {
    let body = health_report(state);
    let status = if body.database_connected {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_reply(status, &body)
}

/// The health report (REST health, MCP `memory_status`).
pub(crate) fn health_report(state: &AppState) -> HealthOut {
    let stats = state.engine.stats();
    let healthy = !stats.poisoned;
    HealthOut {
        status: if healthy { "healthy" } else { "unhealthy" },
        database_connected: healthy,
        embedding_service_available: state
            .embed_worker
            .as_ref()
            .is_some_and(|w| w.stats.available.load(Ordering::Relaxed)),
        embedding: health_embedding(state),
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs(),
        tiers: TierCounts {
            working: stats.working,
            warm: stats.warm,
            cold: stats.cold,
        },
        wal: HealthWal {
            durable_lsn: stats.durable_lsn.get(),
        },
    }
}

/// The model whose vectors the store keeps: its own embedder's, or once its own vectors are
/// dropped, the active migration's.
fn health_embedding(state: &AppState) -> HealthEmbedding {
    if let Some(dropped) = state.engine.own_vectors().dropped {
        let provider = state
            .engine
            .active_space()
            .and_then(|(_, d)| serde_json::from_str::<crate::migrations::MigrationSpec>(&d).ok())
            .map_or("migration", |spec| match spec.provider.as_str() {
                "local" => "local",
                "ollama" => "ollama",
                "openai" => "openai",
                _ => "migration",
            });
        return HealthEmbedding {
            provider,
            model: Some(dropped.model),
            pending: state.engine.pending_embedding_count(),
        };
    }
    HealthEmbedding {
        provider: state
            .embedder
            .as_ref()
            .map_or("none", |_| state.settings.provider.name()),
        model: state.embedder.as_ref().map(|e| e.model_id().to_owned()),
        pending: state.engine.pending_embedding_count(),
    }
}

pub(crate) fn metrics(state: &AppState) -> Reply {
    // An unreadable space only leaves its series out of this scrape.
    if let Ok(spaces) = state.engine.spaces() {
        let observed: Vec<_> = spaces
            .into_iter()
            .map(|info| {
                let stats = state.migrations.stats(info.id);
                (info, stats)
            })
            .collect();
        state.metrics.observe_migrations(&observed);
    }
    let text = state.metrics.render(
        &state.engine,
        state.embed_worker.as_ref().map(|w| &*w.stats),
        state.started.elapsed().as_secs(),
    );
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// `GET /api/v1/openapi.json`: built once, from the server's types.
pub(crate) fn openapi() -> Reply {
    static DOCUMENT: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    let body = DOCUMENT.get_or_init(|| Bytes::from(crate::api::openapi::document_text()));
    let mut r = Response::new(Full::new(body.clone()));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

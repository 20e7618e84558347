//! The request path: request id and span, routing ([`route::Route`]), authentication and the
//! rate limit, then the handler; every error goes through [`ApiError`] and every request is
//! counted once.

pub(crate) mod auth;
pub(crate) mod body;
pub mod route;
pub(crate) mod stream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use engram_engine::Engine;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};

use crate::config::Settings;
use crate::embed::{EmbedWorker, Embedder};
use crate::error::ApiError;
use crate::handlers;
use crate::mcp::{Caller, McpEndpoint};
use crate::metrics::Metrics;
use crate::telemetry::{self, RequestTag};
use auth::RateLimiter;
use route::{Access, Route};

/// Longest client-supplied request id echoed back.
const MAX_REQUEST_ID_BYTES: usize = 128;

/// Everything a request handler needs.
#[derive(Debug)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub metrics: Metrics,
    pub settings: Settings,
    pub embedder: Option<Arc<dyn Embedder>>,
    /// Embeds search queries in batches (with the same embedder).
    pub query_embedder: Option<crate::query_embed::QueryEmbedder>,
    pub embed_worker: Option<EmbedWorker>,
    /// Embedding migrations' workers.
    pub migrations: crate::migrations::Migrations,
    pub started: Instant,
    /// One creator at a time watches the graph's backlog for room; the others queue here in
    /// order (tokio's semaphore is fair), so waiting creates are admitted first come, first
    /// served (see `handlers::memories::wait_for_graph`).
    pub(crate) graph_turn: tokio::sync::Semaphore,
    limiter: RateLimiter,
    mcp: McpEndpoint,
    request_seq: AtomicU64,
}

impl AppState {
    pub fn new(
        engine: Arc<Engine>,
        settings: Settings,
        metrics: Metrics,
        embedder: Option<Arc<dyn Embedder>>,
        embed_worker: Option<EmbedWorker>,
    ) -> AppState {
        AppState {
            query_embedder: embedder
                .as_ref()
                .map(|e| crate::query_embed::QueryEmbedder::start(Arc::clone(e))),
            embedder,
            embed_worker,
            migrations: Default::default(),
            limiter: RateLimiter::new(settings.rate_limit_per_second, settings.rate_limit_burst),
            mcp: McpEndpoint::new(settings.listen, settings.max_body_bytes),
            engine,
            metrics,
            settings,
            started: Instant::now(),
            graph_turn: tokio::sync::Semaphore::new(1),
            request_seq: AtomicU64::new(0),
        }
    }
}

pub(crate) type Reply = Response<Full<Bytes>>;
/// What the connection sends: a whole body, or a stream (MCP).
pub type ResponseBody = BoxBody<Bytes, Infallible>;

fn boxed(r: Reply) -> Response<ResponseBody> {
    r.map(BodyExt::boxed)
}

pub(crate) fn json_reply(status: StatusCode, value: &impl serde::Serialize) -> Reply {
    let body = serde_json::to_vec(value).expect("API values always serialize");
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error_reply(e: &ApiError, request_id: &str) -> Reply {
    let mut r = json_reply(e.status, &e.body(request_id));
    if let Some(secs) = e.retry_after_seconds {
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(allow) = e.allow {
        r.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
    }
    r
}

/// The client's `X-Request-Id` if it is sane, else a new one.
fn request_id(state: &AppState, req: &Request<Incoming>) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= MAX_REQUEST_ID_BYTES
                && s.bytes().all(|b| b.is_ascii_graphic())
        })
        .map_or_else(
            || {
                let n = state.request_seq.fetch_add(1, Ordering::Relaxed);
                format!("req-{n:x}")
            },
            str::to_owned,
        )
}

/// The entry point for every request.
pub async fn handle(
    state: Arc<AppState>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<ResponseBody>, Infallible> {
    let started = Instant::now();
    let request_id = request_id(&state, &req);
    // Every line the request's task logs, on whatever worker it runs, names the request.
    let tag = Arc::new(RequestTag {
        id: request_id,
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
    });
    // An error may be answered before the request's body is read (an unknown route, a missing
    // key, a rate limit): hyper then closes the connection, and says so, or a client that
    // pools connections would send its next request down a closed one.
    let has_body = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
        || req.headers().contains_key(hyper::header::TRANSFER_ENCODING);
    let (label, result) =
        telemetry::in_request(Arc::clone(&tag), dispatch(&state, req, peer)).await;
    let mut reply = match result {
        Ok(r) => r,
        Err(e) => {
            if e.status.is_server_error() {
                telemetry::with_request(Arc::clone(&tag), || {
                    tracing::warn!(route = label, status = e.status.as_u16(), message = %e.message, "request failed");
                });
            }
            let mut reply = boxed(error_reply(&e, &tag.id));
            if has_body {
                reply
                    .headers_mut()
                    .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
            }
            reply
        }
    };
    if let Ok(v) = HeaderValue::from_str(&tag.id) {
        reply.headers_mut().insert("x-request-id", v);
    }
    let status = reply.status();
    let status = status.as_str();
    state
        .metrics
        .http_duration
        .with_label_values(&[label, status])
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .http_requests
        .with_label_values(&[label, status])
        .inc();
    Ok(reply)
}

/// Routes, authenticates and runs one request: (the route's metrics label, the reply).
async fn dispatch(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> (&'static str, Result<Response<ResponseBody>, ApiError>) {
    let route = match Route::parse(req.method(), req.uri().path()) {
        Ok(r) => r,
        Err(e) => return ("unknown", Err(e)),
    };
    let label = route.label();
    // Boxed: a request's future holds the largest of its route's futures inline (~3 KB), and
    // the layers above (the span's `Instrumented`, hyper's dispatcher) each copy what they hold.
    (label, Box::pin(serve(state, route, req, peer)).await)
}

async fn serve(
    state: &Arc<AppState>,
    route: Route,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<ResponseBody>, ApiError> {
    // Probes and scrapers need no key and may add any query they like.
    match route {
        Route::Health => return Ok(boxed(handlers::ops::health(state))),
        Route::Metrics => return Ok(boxed(handlers::ops::metrics(state))),
        Route::OpenApi => return Ok(boxed(handlers::ops::openapi())),
        // Static files: the pages ask for the key themselves and call the API with it.
        Route::Console(file) if state.settings.console => {
            return crate::console::serve(&file, req.headers()).map(boxed)
        }
        Route::Console(file) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "ROUTE_NOT_FOUND",
                format!("no route for /console/{file} (console.enabled = false)"),
            ))
        }
        _ => {}
    }
    let access = route.access();
    let key = {
        let key = auth::authenticate(state, &req)?;
        let who = key.map_or_else(|| peer.ip().to_string(), |k| format!("key:{}", k.name));
        state.limiter.check(&who).map_err(|secs| ApiError {
            retry_after_seconds: Some(secs),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMIT_EXCEEDED",
                format!("rate limit exceeded; retry in {secs} s"),
            )
        })?;
        key.cloned()
    };
    let query = body::Query::parse(req.uri().query())?;
    query.only(route.query_parameters())?;
    auth::require(key.as_ref(), route.role(), || {
        format!("route {}", route.label())
    })?;
    if access == Access::Admin && key.as_ref().is_some_and(|k| !k.allows_all()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "admin endpoints need an API key that is not limited to namespaces",
        ));
    }
    if route == Route::Mcp {
        let caller = Caller {
            state: Arc::clone(state),
            key,
        };
        // Boxed: the MCP service's future is ~4 KB, and unboxed it would make every request's
        // future that large (copied as hyper moves it; 6% of a GET's CPU).
        return Box::pin(state.mcp.serve(req, caller)).await;
    }
    let key = key.as_ref();
    if let Route::ExportNamespace(ns) = &route {
        // Streamed: the only reply besides MCP's that is not one whole body.
        return handlers::transfer::export(state, ns, key, &query).await;
    }
    let reply = match route {
        Route::Health
        | Route::Metrics
        | Route::OpenApi
        | Route::Console(_)
        | Route::Mcp
        | Route::ExportNamespace(_) => {
            unreachable!("answered before authentication or above")
        }
        Route::CreateMemory => handlers::memories::create(state, req, key, &query).await,
        Route::BatchCreate => handlers::memories::batch(state, req, key, &query).await,
        Route::ListMemories => handlers::memories::list(state, key, &query).await,
        Route::GetMemory(id) => handlers::memories::get(state, &id, key, &query).await,
        Route::UpdateMemory(id) => handlers::memories::update(state, req, &id, key, &query).await,
        Route::DeleteMemory(id) => handlers::memories::delete(state, &req, &id, key, &query).await,
        Route::MemoryHistory(id) => handlers::history::history(state, &id, key, &query).await,
        Route::RevertMemory(id) => handlers::history::revert(state, req, &id, key, &query).await,
        Route::Search(forced) => handlers::search::search(state, req, key, forced).await,
        Route::ListNamespaces => handlers::namespaces::list(state, key).await,
        Route::GetNamespace(ns) => handlers::namespaces::get(state, &ns, key).await,
        Route::DeleteNamespace(ns) => {
            handlers::namespaces::delete(state, &req, &ns, key, &query).await
        }
        Route::ImportNamespace(ns) => {
            handlers::transfer::import(state, req, &ns, key, &query).await
        }
        Route::CreateSnapshot => handlers::admin::snapshot_create(state).await,
        Route::ListSnapshots => handlers::admin::snapshot_list(state).await,
        Route::DeleteSnapshot(id) => handlers::admin::snapshot_delete(state, id).await,
        Route::Migrate => handlers::admin::migrate(state, req).await,
        Route::Compact => handlers::admin::compact(state).await,
        Route::Tiers => handlers::admin::tiers(state).await,
        Route::TestClock => handlers::admin::test_clock(state, req).await,
        Route::CreateMigration => handlers::migrations::create(state, req).await,
        Route::ListMigrations => handlers::migrations::list(state).await,
        Route::GetMigration(id) => handlers::migrations::get(state, &id).await,
        Route::DeleteMigration(id) => handlers::migrations::delete(state, &id).await,
        Route::PauseMigration(id) => handlers::migrations::pause(state, &id, true).await,
        Route::ResumeMigration(id) => handlers::migrations::pause(state, &id, false).await,
        Route::SearchMigration(id) => handlers::migrations::search(state, req, &id).await,
        Route::ActivateMigration(id) => handlers::migrations::activate(state, &id, true).await,
        Route::DeactivateMigration(id) => handlers::migrations::activate(state, &id, false).await,
        Route::OwnVectors => handlers::migrations::own_vectors(state).await,
        Route::DropOwnVectors => handlers::migrations::drop_own_vectors(state).await,
    };
    reply.map(boxed)
}

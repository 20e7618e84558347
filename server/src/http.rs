//! Routing and handlers. Handlers are thin: parse and check the request, call the engine on a
//! blocking thread, shape the reply; every error goes through [`ApiError`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use engram_engine::search::SearchMode;
use engram_engine::{
    is_valid_namespace, EmbeddingStatus, Engine, ListFilter, Memory, NewMemory, Status, Tier, Uuid,
    MAX_BATCH_ITEMS,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::api::{self, BatchCreate, CreateMemory, MemoryOut, PatchMemory, SearchRequest};
use crate::config::{ApiKey, Settings};
use crate::embed::{EmbedWorker, Embedder};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Distinct rate-limit buckets kept; the oldest are dropped past this.
const MAX_RATE_BUCKETS: usize = 100_000;
/// Most bytes of an oversized body read and thrown away before answering 413.
const MAX_DRAIN_BYTES: u64 = 256 << 20;
/// Longest client-supplied request id echoed back.
const MAX_REQUEST_ID_BYTES: usize = 128;

/// Everything a request handler needs.
#[derive(Debug)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub metrics: Metrics,
    pub settings: Settings,
    pub embedder: Option<Arc<dyn Embedder>>,
    pub embed_worker: Option<EmbedWorker>,
    pub started: Instant,
    limiter: RateLimiter,
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
            embedder,
            embed_worker,
            limiter: RateLimiter::new(settings.rate_limit_per_second, settings.rate_limit_burst),
            engine,
            metrics,
            settings,
            started: Instant::now(),
            request_seq: AtomicU64::new(0),
        }
    }
}

/// Token buckets per API key (or client address when there are no keys).
#[derive(Debug)]
struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    fn new(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(per_second)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds to wait)` when the bucket is empty.
    fn check(&self, who: &str) -> Result<(), u64> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_RATE_BUCKETS && !buckets.contains_key(who) {
            buckets.clear();
        }
        let (tokens, at) = buckets.entry(who.to_owned()).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_second).ceil().max(1.0) as u64)
        }
    }
}

type Reply = Response<Full<Bytes>>;

fn json_reply(status: StatusCode, value: &impl serde::Serialize) -> Reply {
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
    r
}

/// The entry point for every request.
pub async fn handle(
    state: Arc<AppState>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Reply, Infallible> {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= MAX_REQUEST_ID_BYTES
                && s.bytes().all(|b| b.is_ascii_graphic())
        })
        .map_or_else(
            || {
                format!(
                    "req-{:x}",
                    state.request_seq.fetch_add(1, Ordering::Relaxed)
                )
            },
            str::to_owned,
        );
    let span = tracing::debug_span!("request", request_id = %request_id, method = %req.method(), path = %req.uri().path());
    let _enter = span.enter();
    let (route, result) = dispatch(&state, req, peer).await;
    let mut reply = match result {
        Ok(r) => r,
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!(route, status = e.status.as_u16(), message = %e.message, "request failed");
            }
            error_reply(&e, &request_id)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        reply.headers_mut().insert("x-request-id", v);
    }
    let status = reply.status().as_u16().to_string();
    state
        .metrics
        .http_duration
        .with_label_values(&[route, &status])
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .http_requests
        .with_label_values(&[route, &status])
        .inc();
    Ok(reply)
}

async fn dispatch(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> (&'static str, Result<Reply, ApiError>) {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let method = req.method().clone();
    let route: &'static str = match segments.as_slice() {
        ["api", "v1", "health"] => "health",
        ["metrics"] | ["api", "v1", "metrics"] => "metrics",
        ["api", "v1", "memories"] => {
            if method == Method::POST {
                "create"
            } else {
                "list"
            }
        }
        ["api", "v1", "memories", "batch"] => "batch",
        ["api", "v1", "search"] => "search",
        ["api", "v1", "search", "semantic"] => "search_semantic",
        ["api", "v1", "search", "text"] => "search_text",
        ["api", "v1", "admin", "snapshots"] => {
            if method == Method::POST {
                "snapshot_create"
            } else {
                "snapshot_list"
            }
        }
        ["api", "v1", "admin", "snapshots", _] => "snapshot_delete",
        ["api", "v1", "admin", "migrate"] => "admin_migrate",
        ["api", "v1", "admin", "compact"] => "admin_compact",
        ["api", "v1", "tiers"] => "tiers",
        ["api", "v1", "memories", _] => match method {
            Method::GET => "get",
            Method::DELETE => "delete",
            _ => "update",
        },
        _ => "unknown",
    };
    let allowed: &[Method] = match route {
        "health" | "metrics" => &[Method::GET],
        "create" | "list" => &[Method::GET, Method::POST],
        "batch" | "search" | "search_semantic" | "search_text" => &[Method::POST],
        "snapshot_create" | "snapshot_list" => &[Method::GET, Method::POST],
        "snapshot_delete" => &[Method::DELETE],
        "admin_migrate" | "admin_compact" => &[Method::POST],
        "tiers" => &[Method::GET],
        "get" | "update" | "delete" => &[Method::GET, Method::PATCH, Method::PUT, Method::DELETE],
        _ => {
            return (
                route,
                Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "ROUTE_NOT_FOUND",
                    format!("no route for {path}"),
                )),
            )
        }
    };
    if !allowed.contains(&method) {
        return (
            route,
            Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                format!("{method} is not allowed on {path}"),
            )),
        );
    }
    let result = async {
        match route {
            "health" => Ok(health(state)),
            "metrics" => Ok(metrics(state)),
            _ => {
                let key = authenticate(state, &req)?;
                let who = key.map_or_else(|| peer.ip().to_string(), |k| k.key.clone());
                state.limiter.check(&who).map_err(|secs| ApiError {
                    retry_after_seconds: Some(secs),
                    ..ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "RATE_LIMIT_EXCEEDED",
                        format!("rate limit exceeded; retry in {secs} s"),
                    )
                })?;
                let key = key.cloned();
                let query = Query::parse(req.uri().query())?;
                if route.starts_with("snapshot") || route.starts_with("admin") || route == "tiers" {
                    query.only(&[])?;
                    if key.as_ref().is_some_and(|k| !k.allows_all()) {
                        return Err(ApiError::new(
                            StatusCode::FORBIDDEN,
                            "FORBIDDEN",
                            "admin endpoints need an API key that is not limited to namespaces",
                        ));
                    }
                }
                match route {
                    "snapshot_create" => snapshot_create(state).await,
                    "snapshot_list" => snapshot_list(state).await,
                    "snapshot_delete" => snapshot_delete(state, segments[4]).await,
                    "admin_migrate" => admin_migrate(state, req).await,
                    "admin_compact" => admin_compact(state).await,
                    "tiers" => tiers(state).await,
                    "create" => create(state, req, key.as_ref(), &query).await,
                    "batch" => batch(state, req, key.as_ref(), &query).await,
                    "search" => search(state, req, key.as_ref(), &query, None).await,
                    "search_semantic" => {
                        search(state, req, key.as_ref(), &query, Some(SearchMode::Semantic)).await
                    }
                    "search_text" => {
                        search(state, req, key.as_ref(), &query, Some(SearchMode::Text)).await
                    }
                    "list" => list(state, key.as_ref(), &query),
                    _ => {
                        let id = api::parse_id("id", segments[3])?;
                        match route {
                            "get" => get(state, id, key.as_ref(), &query),
                            "delete" => delete(state, id, key.as_ref(), &query).await,
                            _ => update(state, req, id, key.as_ref(), &query).await,
                        }
                    }
                }
            }
        }
    }
    .await;
    (route, result)
}

fn authenticate<'a>(
    state: &'a AppState,
    req: &Request<Incoming>,
) -> Result<Option<&'a ApiKey>, ApiError> {
    if state.settings.api_keys.is_empty() {
        return Ok(None);
    }
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| req.headers().get("x-api-key").and_then(|v| v.to_str().ok()));
    let Some(presented) = presented else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "an API key is required: send Authorization: Bearer <key> or X-API-Key",
        ));
    };
    state
        .settings
        .api_keys
        .iter()
        .find(|k| constant_time_eq(k.key.as_bytes(), presented.as_bytes()))
        .map(Some)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "the API key is not valid",
            )
        })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorize(key: Option<&ApiKey>, namespace: &str) -> Result<(), ApiError> {
    match key {
        Some(k) if !k.allows(namespace) => Err(ApiError {
            details: json!({ "namespace": namespace }),
            ..ApiError::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                format!("this API key may not access namespace {namespace:?}"),
            )
        }),
        _ => Ok(()),
    }
}

/// Query parameters, each allowed at most once; unknown names are refused per route.
struct Query(HashMap<String, String>);

impl Query {
    fn parse(q: Option<&str>) -> Result<Query, ApiError> {
        let mut map = HashMap::new();
        for (k, v) in form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
            if map.insert(k.to_string(), v.to_string()).is_some() {
                return Err(ApiError::invalid(&k, "is given more than once"));
            }
        }
        Ok(Query(map))
    }

    fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(ApiError::invalid(
                k,
                format!(
                    "is not a query parameter here (allowed: {})",
                    allowed.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    fn flag(&self, k: &'static str) -> Result<bool, ApiError> {
        match self.get(k) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") | Some("") => Ok(true),
            Some(other) => Err(ApiError::invalid(
                k,
                format!("must be true or false, got {other:?}"),
            )),
        }
    }
}

/// Reads the body up to `limit` bytes. A larger body is read on and discarded (up to
/// [`MAX_DRAIN_BYTES`]) before the 413, so a client still sending gets the answer rather than a
/// reset connection.
async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = req.into_body();
    let mut buf =
        bytes::BytesMut::with_capacity(declared.map_or(8192, |d| d.min(limit as u64) as usize));
    let mut seen: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::invalid("body", format!("could not be read: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen += data.len() as u64;
            if seen <= limit as u64 {
                buf.extend_from_slice(&data);
            } else if seen > MAX_DRAIN_BYTES {
                break;
            }
        }
    }
    if seen > limit as u64 {
        let size = declared.unwrap_or(seen);
        return Err(ApiError::too_large(
            "body",
            format!("is {size} bytes; the limit is {limit}"),
        ));
    }
    Ok(buf.freeze())
}

/// Parses a JSON body. The fast path is plain serde_json; only a failing body is parsed again
/// with path tracking, to name the field in the error.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // "." is the whole body; "?" a position the path tracker could not name.
        let path = match e.path().to_string() {
            p if p == "?" => ".".to_owned(),
            p => p,
        };
        let inner = e.into_inner();
        if (inner.is_syntax() || inner.is_eof()) && path == "." {
            ApiError::invalid("body", format!("is not valid JSON: {inner}"))
        } else if inner.is_syntax() {
            ApiError::invalid(&path, format!("is not valid JSON: {inner}"))
        } else if path == "." {
            ApiError::invalid("body", inner)
        } else {
            ApiError::invalid(&path, inner)
        }
    })?;
    de.end().map_err(|e| {
        ApiError::invalid(
            "body",
            format!("has trailing characters after the JSON value: {e}"),
        )
    })?;
    Ok(value)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "engine task failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "engine task failed",
        )
    })
}

/// Longest a `?wait_for_embedding=true` write waits for its vector.
const EMBEDDING_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// After a write: wake the embedder for a pending memory, and with `wait` return the memory once
/// it is embedded (or failed, or the wait ran out: then still `pending`).
async fn after_write(state: &Arc<AppState>, m: Memory, wait: bool) -> Result<Memory, ApiError> {
    if m.embedding_status != EmbeddingStatus::Pending {
        return Ok(m);
    }
    let Some(worker) = &state.embed_worker else {
        return Ok(m);
    };
    worker.wake();
    if !wait {
        return Ok(m);
    }
    let state = Arc::clone(state);
    let id = m.id;
    blocking(move || {
        let deadline = Instant::now() + EMBEDDING_WAIT;
        let mut current = m;
        while current.embedding_status == EmbeddingStatus::Pending && Instant::now() < deadline {
            if let Some(w) = &state.embed_worker {
                w.wait_batch(std::time::Duration::from_millis(200));
            }
            match state.engine.get(&id)? {
                Some(m) => current = m,
                None => break,
            }
        }
        Ok::<Memory, engram_engine::EngineError>(current)
    })
    .await?
    .map_err(ApiError::from)
}

async fn search(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    key: Option<&ApiKey>,
    query: &Query,
    forced: Option<SearchMode>,
) -> Result<Reply, ApiError> {
    query.only(&[])?;
    let started = Instant::now();
    let body = read_body(req, state.settings.max_body_bytes).await?;
    let request: SearchRequest = parse_json(&body)?;
    let (mut q, shape) = request.into_query(forced)?;
    authorize(key, &q.namespace)?;
    let mut warnings: Vec<String> = Vec::new();
    if q.mode != SearchMode::Text && q.embedding.is_none() {
        match (&state.embedder, &q.text) {
            (Some(embedder), Some(text)) => {
                let embedder = Arc::clone(embedder);
                let text = text.clone();
                match blocking(move || embedder.embed(&[text.as_str()])).await? {
                    Ok(mut v) => q.embedding = v.pop(),
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
                }
            }
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
    let hits: Vec<Value> = results
        .hits
        .into_iter()
        .map(|h| api::search_hit_json(h, shape, half_life))
        .collect();
    let mut body = json!({
        "results": hits,
        "total_count": results.total_count,
        "query_time_ms": started.elapsed().as_secs_f64() * 1000.0,
    });
    if !warnings.is_empty() {
        body["warnings"] = json!(warnings);
    }
    Ok(json_reply(StatusCode::OK, &body))
}

/// Counts a completed single-memory write and answers with the memory.
fn memory_reply(
    state: &AppState,
    operation: &str,
    status: StatusCode,
    memory: Memory,
    include_embedding: bool,
) -> Reply {
    state
        .metrics
        .operations
        .with_label_values(&[operation])
        .inc();
    json_reply(status, &memory_json(memory, include_embedding))
}

fn memory_json(m: Memory, include_embedding: bool) -> Value {
    serde_json::to_value(MemoryOut::new(m, include_embedding)).expect("memories always serialize")
}

fn health(state: &AppState) -> Reply {
    let stats = state.engine.stats();
    let healthy = !stats.poisoned;
    let body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "database_connected": healthy,
        "embedding_service_available": state
            .embed_worker
            .as_ref()
            .is_some_and(|w| w.stats.available.load(Ordering::Relaxed)),
        "embedding": {
            "provider": state.embedder.as_ref().map_or("none", |_| match &state.settings.provider {
                crate::config::Provider::None => "none",
                crate::config::Provider::Local { .. } => "local",
                crate::config::Provider::Ollama { .. } => "ollama",
                crate::config::Provider::OpenAi { .. } => "openai",
            }),
            "model": state.embedder.as_ref().map(|e| e.model_id().to_owned()),
            "pending": state.engine.pending_embedding_count(),
        },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "tiers": { "working": stats.working, "warm": stats.warm, "cold": stats.cold },
        "wal": { "durable_lsn": stats.durable_lsn },
    });
    json_reply(
        if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        &body,
    )
}

fn metrics(state: &AppState) -> Reply {
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

fn check_create(req: CreateMemory, key: Option<&ApiKey>) -> Result<NewMemory, ApiError> {
    let new = req.into_new()?;
    if !is_valid_namespace(&new.namespace) {
        return Err(ApiError::invalid(
            "namespace",
            "must be 1 to 128 characters of A-Z a-z 0-9 . _ : -",
        ));
    }
    authorize(key, &new.namespace)?;
    Ok(new)
}

async fn create(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    key: Option<&ApiKey>,
    query: &Query,
) -> Result<Reply, ApiError> {
    query.only(&["include_embedding", "wait_for_embedding"])?;
    let include_embedding = query.flag("include_embedding")?;
    let wait = query.flag("wait_for_embedding")?;
    let body = read_body(req, state.settings.max_body_bytes).await?;
    let new = check_create(parse_json(&body)?, key)?;
    let engine = Arc::clone(&state.engine);
    let memory = blocking(move || engine.create(new)).await??;
    let memory = after_write(state, memory, wait).await?;
    Ok(memory_reply(
        state,
        "create",
        StatusCode::CREATED,
        memory,
        include_embedding,
    ))
}

async fn batch(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    key: Option<&ApiKey>,
    query: &Query,
) -> Result<Reply, ApiError> {
    query.only(&["include_embedding", "wait_for_embedding"])?;
    let include_embedding = query.flag("include_embedding")?;
    let wait = query.flag("wait_for_embedding")?;
    let body = read_body(req, state.settings.max_batch_body_bytes).await?;
    let req: BatchCreate = parse_json(&body)?;
    if req.memories.is_empty() || req.memories.len() > MAX_BATCH_ITEMS {
        return Err(ApiError::invalid(
            "memories",
            format!(
                "must hold 1 to {MAX_BATCH_ITEMS} memories, got {}",
                req.memories.len()
            ),
        ));
    }
    // Parse every item; items that fail stay as errors in place, the rest go to the engine.
    let mut parsed: Vec<Result<NewMemory, ApiError>> = Vec::with_capacity(req.memories.len());
    for (i, value) in req.memories.into_iter().enumerate() {
        parsed.push(
            parse_json::<CreateMemory>(value.get().as_bytes())
                .and_then(|req| check_create(req, key))
                .map_err(|e| locate(e, i)),
        );
    }
    let valid: Vec<NewMemory> = parsed
        .iter()
        .filter_map(|r| r.as_ref().ok().cloned())
        .collect();
    let engine = Arc::clone(&state.engine);
    let stored = blocking(move || engine.create_batch(valid)).await?;
    let mut stored = if wait {
        let mut out = Vec::with_capacity(stored.len());
        for r in stored {
            out.push(match r {
                Ok(m) => Ok(after_write(state, m, true).await?),
                Err(e) => Err(e),
            });
        }
        out.into_iter()
    } else {
        if let Some(w) = &state.embed_worker {
            w.wake();
        }
        stored.into_iter()
    };
    let mut results = Vec::with_capacity(parsed.len());
    let mut created = 0u64;
    for (i, item) in parsed.into_iter().enumerate() {
        let entry = match item {
            Err(e) => {
                json!({ "error": { "code": e.code, "message": e.message, "details": e.details } })
            }
            Ok(_) => match stored.next().expect("one engine result per valid item") {
                Ok(m) => {
                    created += 1;
                    memory_json(m, include_embedding)
                }
                Err(e) => {
                    let e = locate(ApiError::from(e), i);
                    json!({ "error": { "code": e.code, "message": e.message, "details": e.details } })
                }
            },
        };
        results.push(entry);
    }
    state
        .metrics
        .operations
        .with_label_values(&["create"])
        .inc_by(created);
    Ok(json_reply(StatusCode::OK, &json!({ "results": results })))
}

/// Points an error about one batch item at it: `field` becomes `memories[i].field`.
fn locate(mut e: ApiError, i: usize) -> ApiError {
    if let Some(field) = e.details.get("field").and_then(Value::as_str) {
        let field = format!("memories[{i}].{field}");
        e.details = json!({ "field": field, "index": i });
    } else {
        e.details["index"] = json!(i);
    }
    e
}

fn get(
    state: &Arc<AppState>,
    id: Uuid,
    key: Option<&ApiKey>,
    query: &Query,
) -> Result<Reply, ApiError> {
    query.only(&["include_embedding"])?;
    let include_embedding = query.flag("include_embedding")?;
    // Reads never wait on the WAL: a working-tier read is a lock-free slot copy, a warm read a
    // RocksDB point lookup, so it runs on the async thread.
    let memory = match key {
        Some(_) => {
            let m = state
                .engine
                .get(&id)?
                .ok_or(engram_engine::EngineError::NotFound(id))?;
            authorize(key, &m.namespace)?;
            state.engine.get_and_touch(&id)?
        }
        None => state.engine.get_and_touch(&id)?,
    };
    let memory = memory.ok_or(engram_engine::EngineError::NotFound(id))?;
    state.metrics.operations.with_label_values(&["get"]).inc();
    Ok(json_reply(
        StatusCode::OK,
        &memory_json(memory, include_embedding),
    ))
}

async fn update(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    id: Uuid,
    key: Option<&ApiKey>,
    query: &Query,
) -> Result<Reply, ApiError> {
    query.only(&["include_embedding", "wait_for_embedding"])?;
    let include_embedding = query.flag("include_embedding")?;
    let wait = query.flag("wait_for_embedding")?;
    let body = read_body(req, state.settings.max_body_bytes).await?;
    let patch: PatchMemory = parse_json(&body)?;
    let (patch, namespace) = patch.into_patch()?;
    // Read the memory first only when a key's namespaces or a sent namespace must be checked.
    if key.is_some() || namespace.is_some() {
        let current = state
            .engine
            .get(&id)?
            .ok_or(engram_engine::EngineError::NotFound(id))?;
        authorize(key, &current.namespace)?;
        if namespace.is_some_and(|ns| ns != current.namespace) {
            return Err(ApiError::invalid(
                "namespace",
                "cannot be changed; create a new memory in the other namespace",
            ));
        }
    }
    let engine = Arc::clone(&state.engine);
    let memory = blocking(move || engine.update(&id, patch)).await??;
    let memory = after_write(state, memory, wait).await?;
    Ok(memory_reply(
        state,
        "update",
        StatusCode::OK,
        memory,
        include_embedding,
    ))
}

async fn delete(
    state: &Arc<AppState>,
    id: Uuid,
    key: Option<&ApiKey>,
    query: &Query,
) -> Result<Reply, ApiError> {
    query.only(&["purge"])?;
    let purge = query.flag("purge")?;
    if key.is_some() {
        let current = state
            .engine
            .get(&id)?
            .ok_or(engram_engine::EngineError::NotFound(id))?;
        authorize(key, &current.namespace)?;
    }
    let engine = Arc::clone(&state.engine);
    let deleted = blocking(move || engine.delete(&id, purge)).await??;
    state
        .metrics
        .operations
        .with_label_values(&[if purge { "purge" } else { "delete" }])
        .inc();
    Ok(json_reply(
        StatusCode::OK,
        &json!({
            "id": deleted.id.to_string(),
            "deleted_at": api::format_time(deleted.deleted_at_us),
            "purged": deleted.purged,
        }),
    ))
}

fn list(state: &Arc<AppState>, key: Option<&ApiKey>, query: &Query) -> Result<Reply, ApiError> {
    query.only(&[
        "namespace",
        "tier",
        "status",
        "tag",
        "limit",
        "cursor",
        "include_embedding",
    ])?;
    let include_embedding = query.flag("include_embedding")?;
    let namespace = query.get("namespace").map(str::to_owned);
    if let Some(ns) = &namespace {
        if !is_valid_namespace(ns) {
            return Err(ApiError::invalid(
                "namespace",
                "must be 1 to 128 characters of A-Z a-z 0-9 . _ : -",
            ));
        }
        authorize(key, ns)?;
    } else if key.is_some_and(|k| !k.allows("*")) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "this API key is limited to some namespaces: name one with ?namespace=",
        ));
    }
    let tier = query
        .get("tier")
        .map(|s| {
            Tier::parse(s).ok_or_else(|| {
                ApiError::invalid("tier", format!("must be working, warm or cold, got {s:?}"))
            })
        })
        .transpose()?;
    let status = query
        .get("status")
        .map(|s| {
            Status::parse(s).ok_or_else(|| {
                ApiError::invalid(
                    "status",
                    format!("must be active, archived or deleted, got {s:?}"),
                )
            })
        })
        .transpose()?;
    let tag = query.get("tag").map(str::to_owned);
    let limit = match query.get("limit") {
        None => 100,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=engram_engine::MAX_LIST_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid(
                    "limit",
                    format!(
                        "must be an integer from 1 to {}, got {s:?}",
                        engram_engine::MAX_LIST_LIMIT
                    ),
                ))
            }
        },
    };
    let after = query.get("cursor").map(api::decode_cursor).transpose()?;
    let filter = ListFilter {
        namespace,
        tier,
        status,
        tag,
        include_deleted: false,
    };
    let page = state.engine.list(&filter, after, limit)?;
    state.metrics.operations.with_label_values(&["list"]).inc();
    let memories: Vec<Value> = page
        .memories
        .into_iter()
        .map(|m| memory_json(m, include_embedding))
        .collect();
    Ok(json_reply(
        StatusCode::OK,
        &json!({
            "memories": memories,
            "next_cursor": page.next_after.map(api::encode_cursor),
        }),
    ))
}

fn snapshot_json(m: &engram_engine::snapshot::SnapshotManifest) -> Value {
    json!({
        "id": m.id,
        "lsn": m.lsn,
        "commit_time": (m.commit_time_us > 0).then(|| api::format_time(m.commit_time_us)),
        "created_at": api::format_time(m.created_at_us),
        "files": m.files.len(),
        "bytes": m.files.iter().map(|(_, b, _)| b).sum::<u64>(),
    })
}

async fn snapshot_create(state: &Arc<AppState>) -> Result<Reply, ApiError> {
    let engine = Arc::clone(&state.engine);
    let started = Instant::now();
    let manifest = blocking(move || engine.create_snapshot()).await??;
    state
        .metrics
        .operations
        .with_label_values(&["snapshot"])
        .inc();
    let mut body = snapshot_json(&manifest);
    body["took_ms"] = json!(started.elapsed().as_millis() as u64);
    Ok(json_reply(StatusCode::CREATED, &body))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MigrateBody {
    dry_run: Option<bool>,
}

/// Moves reported in full; beyond this only the counts.
const MAX_REPORTED_MOVES: usize = 1000;

async fn admin_migrate(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let body = read_body(req, state.settings.max_body_bytes).await?;
    let dry_run = if body.iter().all(u8::is_ascii_whitespace) {
        false
    } else {
        parse_json::<MigrateBody>(&body)?.dry_run.unwrap_or(false)
    };
    let engine = Arc::clone(&state.engine);
    let report = blocking(move || engine.migrate(dry_run)).await??;
    let mut by_route: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for m in &report.moves {
        *by_route
            .entry(format!("{}_to_{}", m.from.as_str(), m.to.as_str()))
            .or_default() += 1;
    }
    let moves: Vec<Value> = report
        .moves
        .iter()
        .take(MAX_REPORTED_MOVES)
        .map(|m| {
            json!({
                "id": m.id.to_string(),
                "from": m.from.as_str(),
                "to": m.to.as_str(),
                "retention": m.retention,
                "reason": m.reason,
            })
        })
        .collect();
    Ok(json_reply(
        StatusCode::OK,
        &json!({
            "dry_run": report.dry_run,
            "moved": if report.dry_run { 0 } else { report.moves.len() },
            "planned": report.moves.len(),
            "by_route": by_route,
            "skipped": report.skipped,
            "moves": moves,
            "moves_truncated": report.moves.len() > MAX_REPORTED_MOVES,
            "took_ms": report.took.as_millis() as u64,
        }),
    ))
}

async fn admin_compact(state: &Arc<AppState>) -> Result<Reply, ApiError> {
    let engine = Arc::clone(&state.engine);
    let r = blocking(move || engine.compact()).await??;
    Ok(json_reply(
        StatusCode::OK,
        &json!({
            "segments_in": r.segments_in,
            "segments_out": r.segments_out,
            "live_kept": r.live_kept,
            "dead_dropped": r.dead_dropped,
            "bytes_before": r.bytes_before,
            "bytes_after": r.bytes_after,
            "took_ms": r.took.as_millis() as u64,
        }),
    ))
}

async fn tiers(state: &Arc<AppState>) -> Result<Reply, ApiError> {
    let engine = Arc::clone(&state.engine);
    let (report, stats) =
        blocking(move || engine.tier_report().map(|r| (r, engine.stats()))).await??;
    let mut body = serde_json::Map::new();
    for (tier, r) in Tier::ALL.iter().zip(report.iter()) {
        body.insert(
            tier.as_str().to_owned(),
            json!({
                "count": r.count,
                "bytes_on_disk": r.bytes_on_disk,
                "avg_importance": r.avg_importance,
                "avg_access_count": r.avg_access_count,
                "oldest_access": r.oldest_access_us.map(api::format_time),
            }),
        );
    }
    body["cold"]["segments"] = json!(stats.cold_segments);
    Ok(json_reply(StatusCode::OK, &json!({ "tiers": body })))
}

async fn snapshot_list(state: &Arc<AppState>) -> Result<Reply, ApiError> {
    let engine = Arc::clone(&state.engine);
    let all = blocking(move || engine.list_snapshots()).await??;
    let list: Vec<Value> = all.iter().map(snapshot_json).collect();
    Ok(json_reply(StatusCode::OK, &json!({ "snapshots": list })))
}

async fn snapshot_delete(state: &Arc<AppState>, id: &str) -> Result<Reply, ApiError> {
    let engine = Arc::clone(&state.engine);
    let owned = id.to_owned();
    if !blocking(move || engine.delete_snapshot(&owned)).await?? {
        return Err(ApiError {
            details: json!({ "id": id }),
            ..ApiError::new(
                StatusCode::NOT_FOUND,
                "SNAPSHOT_NOT_FOUND",
                format!("no snapshot {id}"),
            )
        });
    }
    Ok(json_reply(
        StatusCode::OK,
        &json!({ "id": id, "deleted": true }),
    ))
}

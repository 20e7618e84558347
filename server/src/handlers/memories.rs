//! The memory endpoints: create, batch create, get, update, delete and list. Engine calls run on
//! blocking threads — an update waits for its group commit, a list may read thousands of
//! memories, a cold read decompresses a block — except two that are answered on the async
//! worker: a get of a working or warm memory (a lock-free slot copy or a RocksDB point lookup; a
//! blocking hop halved GET throughput: 25–31k/s against 49–57k/s at 16 clients), and creates,
//! which are logged here and awaited while the engine's committer thread makes them durable (a
//! blocking thread per waiting create: 10.7k creates/s at 64 clients; awaited: 15.4k/s).

use std::sync::Arc;
use std::time::{Duration, Instant};

use engram_engine::{
    EmbeddingStatus, EngineError, ListFilter, Memory, NewMemory, Page, Status, Uuid,
    MAX_BATCH_ITEMS, MAX_LIST_LIMIT,
};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{HeaderMap, Request, StatusCode};
use serde_json::{json, Value};

use crate::api::replies::{BatchItem, BatchOut, DeletedOut, ListOut, MinimalOut, WrittenOut};
use crate::api::vector::VectorFormat;
use crate::api::{self, BatchCreate, CreateMemory, MemoryOut, PatchMemory};
use crate::config::ApiKey;
use crate::error::ApiError;
use crate::http::auth::authorize;
use crate::http::body::{blocking, parse_json, read_body, Query};
use crate::http::{json_reply, AppState, Reply};

/// How long one look at a pending memory waits for the embedder's next batch.
const EMBEDDING_POLL: Duration = Duration::from_millis(200);
/// How often a write waiting for the active embedding space looks again.
const SPACE_POLL: Duration = Duration::from_millis(5);
/// Page size of a list that names none.
const DEFAULT_LIST_LIMIT: usize = 100;

/// The flags every write takes.
pub(crate) struct WriteParams {
    /// Whether the reply carries the vector, and in which form.
    embedding: Option<VectorFormat>,
    pub(crate) wait_for_embedding: bool,
    /// Answer with id, version and status only (`Prefer: return=minimal` or `?return=minimal`).
    minimal: bool,
    /// `X-Engram-Actor`: who writes, for a body that does not say.
    pub(crate) actor: Option<String>,
}

impl WriteParams {
    pub(crate) fn from_request(
        query: &Query,
        headers: &HeaderMap,
    ) -> Result<WriteParams, ApiError> {
        let minimal = match query.get("return") {
            Some("minimal") => true,
            Some("representation") => false,
            Some(other) => {
                return Err(ApiError::invalid(
                    "return",
                    format!("must be minimal or representation, got {other:?}"),
                ))
            }
            None => prefers_minimal(headers),
        };
        Ok(WriteParams {
            embedding: embedding_view(query)?,
            wait_for_embedding: query.flag("wait_for_embedding")?,
            minimal,
            actor: actor_header(headers)?,
        })
    }

    /// The reply for one written memory.
    pub(crate) fn reply(&self, status: StatusCode, memory: Memory) -> Reply {
        let out = if self.minimal {
            WrittenOut::Minimal(MinimalOut::new(&memory))
        } else {
            WrittenOut::Memory(Box::new(MemoryOut::new(memory, self.embedding)))
        };
        self.applied(json_reply(status, &out))
    }

    /// Says so in the reply when `return=minimal` was honoured (RFC 7240).
    fn applied(&self, mut reply: Reply) -> Reply {
        if self.minimal {
            reply.headers_mut().insert(
                "preference-applied",
                HeaderValue::from_static("return=minimal"),
            );
        }
        reply
    }
}

/// `include_embedding` and `embedding_format` of a query.
pub(crate) fn embedding_view(query: &Query) -> Result<Option<VectorFormat>, ApiError> {
    api::embedding_view(
        query.flag("include_embedding")?,
        query.get("embedding_format"),
    )
}

/// Whether a `Prefer` header (RFC 7240) asks for `return=minimal`. Preferences are hints: one
/// the server does not know is ignored, not refused.
fn prefers_minimal(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| {
            let p = p.split(';').next().unwrap_or("").trim();
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("return")
                    && v.trim().trim_matches('"').eq_ignore_ascii_case("minimal")
            })
        })
}

/// After a write: wake the embedder for a pending memory, and with `wait` return the memory once
/// it is embedded (or failed, or the wait ran out: then still `pending`).
pub(crate) async fn after_write(
    state: &Arc<AppState>,
    m: Memory,
    wait: bool,
) -> Result<Memory, ApiError> {
    let mut out = after_writes(state, vec![m], wait).await?;
    Ok(out.pop().expect("one memory in, one out"))
}

/// [`after_write`] for many memories at once: one wait, one deadline for all of them. Each
/// memory is read again before any waiting, so those already embedded cost no wait at all
/// (waiting a poll per memory made a 300-item batch take a minute). With an embedding
/// migration active, its worker is woken too, and the wait also lasts until the active space
/// holds a vector of each memory's current content (so the memory is found by meaning).
async fn after_writes(
    state: &Arc<AppState>,
    memories: Vec<Memory>,
    wait: bool,
) -> Result<Vec<Memory>, ApiError> {
    let space = state.engine.active_space_id();
    if let Some(id) = space {
        state.migrations.wake(id);
    }
    let pending = |m: &Memory| m.embedding_status == EmbeddingStatus::Pending;
    let own = state
        .embed_worker
        .as_ref()
        .filter(|_| memories.iter().any(pending));
    if let Some(worker) = own {
        worker.wake();
    }
    if !wait || (own.is_none() && space.is_none()) {
        return Ok(memories);
    }
    let state = Arc::clone(state);
    blocking(move || {
        let deadline = Instant::now() + state.settings.embed_wait_timeout;
        let mut current = memories;
        // Without own vectors, `pending` is the active space's: read again as it catches up.
        let reread = state.embed_worker.is_some() || state.engine.own_vectors().dropped.is_some();
        loop {
            if reread {
                for m in current.iter_mut().filter(|m| pending(m)) {
                    if let Some(fresh) = state.engine.get(&m.id)? {
                        *m = fresh;
                    }
                }
            }
            let own_waits = state.embed_worker.is_some() && current.iter().any(pending);
            let mut space_waits = false;
            if let Some(id) = space {
                for m in current.iter().filter(|m| m.status != Status::Deleted) {
                    // A space dropped meanwhile has nothing to wait for.
                    if !state.engine.space_vector_current(id, &m.id).unwrap_or(true) {
                        space_waits = true;
                        break;
                    }
                }
            }
            if !(own_waits || space_waits) || Instant::now() >= deadline {
                return Ok::<Vec<Memory>, EngineError>(current);
            }
            match &state.embed_worker {
                Some(w) if own_waits => w.wait_batch(EMBEDDING_POLL),
                _ => std::thread::sleep(SPACE_POLL),
            }
        }
    })
    .await?
    .map_err(ApiError::from)
}

/// Counts a completed operation.
/// The `X-Engram-Actor` header: who makes a write (kept with the version it makes).
pub(crate) fn actor_header(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    headers
        .get("x-engram-actor")
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::invalid("X-Engram-Actor", "must be visible ASCII"))
        })
        .transpose()
}

pub(crate) fn count(state: &AppState, operation: &str) {
    state
        .metrics
        .operations
        .with_label_values(&[operation])
        .inc();
}

fn check_create(req: CreateMemory, key: Option<&ApiKey>) -> Result<NewMemory, ApiError> {
    let new = req.into_new()?;
    api::check_namespace(&new.namespace)?;
    authorize(key, &new.namespace)?;
    Ok(new)
}

/// Reads memory `id` (counting an access if `touch`): on this worker when it is working or
/// warm, on a blocking thread when it is cold.
async fn read(state: &Arc<AppState>, id: Uuid, touch: bool) -> Result<Memory, ApiError> {
    let m = match state.engine.get_unless_cold(&id, touch)? {
        Some(m) => m,
        None => {
            let engine = Arc::clone(&state.engine);
            blocking(move || {
                if touch {
                    engine.get_and_touch(&id)
                } else {
                    engine.get(&id)
                }
            })
            .await??
        }
    };
    Ok(m.ok_or(EngineError::NotFound(id))?)
}

/// Reads memory `id` for a key limited to namespaces, and refuses it outside them.
pub(crate) async fn authorized_read(
    state: &Arc<AppState>,
    id: Uuid,
    key: Option<&ApiKey>,
) -> Result<Memory, ApiError> {
    let m = read(state, id, false).await?;
    // Outside the key's namespaces a memory is answered as unknown: a 403 naming its namespace
    // would let the key probe which ids exist, and where.
    if key.is_some_and(|k| !k.allows(&m.namespace)) {
        return Err(EngineError::NotFound(id).into());
    }
    Ok(m)
}

pub(crate) async fn create(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    key: Option<&ApiKey>,
    query: &Query,
) -> Result<Reply, ApiError> {
    let params = WriteParams::from_request(query, req.headers())?;
    let body = read_body(req, state.settings.max_body_bytes).await?;
    let mut create: CreateMemory = parse_json(&body)?;
    create.actor = create.actor.or_else(|| params.actor.clone());
    let memory = create_one(state, create, key, params.wait_for_embedding).await?;
    Ok(params.reply(StatusCode::CREATED, memory))
}

/// New memories that would push others out of a full working tier wait while the vector
/// graph is `search.hnsw_max_lagging` behind (at most `GRAPH_WAIT_MAX` in all), holding no
/// thread. Waiters take turns in arrival order: the one holding `graph_turn` watches for
/// room, the rest queue behind it, and a newcomer joins the queue while anyone waits.
async fn wait_for_graph(state: &AppState, incoming: usize) {
    let engine = &state.engine;
    let queue_empty = state.graph_turn.available_permits() > 0;
    if queue_empty && !engine.should_wait_for_graph(incoming) {
        return;
    }
    let started = Instant::now();
    let max = engram_engine::GRAPH_WAIT_MAX;
    // The semaphore is never closed; on timeout the write goes ahead as after any wait.
    let _turn = tokio::time::timeout(max, state.graph_turn.acquire()).await;
    while started.elapsed() < max && engine.should_wait_for_graph(incoming) {
        tokio::time::sleep(engram_engine::GRAPH_WAIT_STEP).await;
    }
    engine.note_graph_wait(started.elapsed());
}

/// Stores one memory (REST create, MCP `remember`) and counts it.
pub(crate) async fn create_one(
    state: &Arc<AppState>,
    req: CreateMemory,
    key: Option<&ApiKey>,
    wait_for_embedding: bool,
) -> Result<Memory, ApiError> {
    let new = check_create(req, key)?;
    wait_for_graph(state, 1).await;
    // Logged here, committed by the engine's committer thread: no blocking thread waits.
    let memory = state
        .engine
        .create_batch_async(vec![new])
        .await
        .pop()
        .expect("one input gives one result")?;
    count(state, "create");
    after_write(state, memory, wait_for_embedding).await
}

pub(crate) async fn batch(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    key: Option<&ApiKey>,
    query: &Query,
) -> Result<Reply, ApiError> {
    let params = WriteParams::from_request(query, req.headers())?;
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
    let parsed: Vec<Result<NewMemory, ApiError>> = req
        .memories
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            parse_json::<CreateMemory>(value.get().as_bytes())
                .and_then(|mut req| {
                    req.actor = req.actor.or_else(|| params.actor.clone());
                    check_create(req, key)
                })
                .map_err(|e| locate(e, i))
        })
        .collect();
    let valid: Vec<NewMemory> = parsed
        .iter()
        .filter_map(|r| r.as_ref().ok().cloned())
        .collect();
    wait_for_graph(state, valid.len()).await;
    let stored = state.engine.create_batch_async(valid).await;
    // Wake the embedder once and, with the wait, wait once for every stored memory (in order).
    let mut memories = Vec::with_capacity(stored.len());
    let outcomes: Vec<Result<(), EngineError>> = stored
        .into_iter()
        .map(|r| r.map(|m| memories.push(m)))
        .collect();
    let mut embedded = after_writes(state, memories, params.wait_for_embedding)
        .await?
        .into_iter();
    let mut stored = outcomes
        .into_iter()
        .map(|r| r.map(|()| embedded.next().expect("one memory per stored item")));
    let mut results = Vec::with_capacity(parsed.len());
    let mut created = 0u64;
    for (i, item) in parsed.into_iter().enumerate() {
        results.push(match item {
            Err(e) => BatchItem::from(e),
            Ok(_) => match stored.next().expect("one engine result per valid item") {
                Ok(m) => {
                    created += 1;
                    if params.minimal {
                        BatchItem::Minimal(MinimalOut::new(&m))
                    } else {
                        BatchItem::Stored(Box::new(MemoryOut::new(m, params.embedding)))
                    }
                }
                Err(e) => BatchItem::from(locate(ApiError::from(e), i)),
            },
        });
    }
    state
        .metrics
        .operations
        .with_label_values(&["create"])
        .inc_by(created);
    Ok(params.applied(json_reply(StatusCode::OK, &BatchOut { results })))
}

/// Points an error about one batch item at it: `field` becomes `memories[i].field`.
fn locate(mut e: ApiError, i: usize) -> ApiError {
    if let Some(field) = e.details.get("field").and_then(Value::as_str) {
        let field = if field.starts_with('[') {
            format!("memories[{i}]{field}")
        } else {
            format!("memories[{i}].{field}")
        };
        e.details = json!({ "field": field, "index": i });
    } else {
        e.details["index"] = json!(i);
    }
    e
}

pub(crate) async fn get(
    state: &Arc<AppState>,
    id: &str,
    key: Option<&ApiKey>,
    query: &Query,
) -> Result<Reply, ApiError> {
    let id = api::parse_id("id", id)?;
    if let Some(past) = crate::handlers::history::Past::from_query(query)? {
        let memory = crate::handlers::history::get_past(state, id, past, key).await?;
        return crate::handlers::history::past_reply(memory, query);
    }
    let embedding = embedding_view(query)?;
    if embedding.is_none() && key.is_none() {
        // The reply leaves the vector out, so the read does too (unless the memory is cold).
        let found = state.engine.get_unless_cold_without_vector(&id, true)?;
        if let Some(found) = found {
            let (memory, has_embedding) = found.ok_or(EngineError::NotFound(id))?;
            count(state, "get");
            return Ok(json_reply(
                StatusCode::OK,
                &MemoryOut::without_vector(memory, has_embedding),
            ));
        }
    }
    let memory = get_one(state, id, key).await?;
    Ok(json_reply(
        StatusCode::OK,
        &MemoryOut::new(memory, embedding),
    ))
}

/// Reads one memory, counting an access (REST get, MCP `get_memory`).
pub(crate) async fn get_one(
    state: &Arc<AppState>,
    id: Uuid,
    key: Option<&ApiKey>,
) -> Result<Memory, ApiError> {
    if key.is_some() {
        authorized_read(state, id, key).await?;
    }
    let memory = read(state, id, true).await?;
    count(state, "get");
    Ok(memory)
}

pub(crate) async fn update(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    id: &str,
    key: Option<&ApiKey>,
    query: &Query,
) -> Result<Reply, ApiError> {
    let id = api::parse_id("id", id)?;
    let params = WriteParams::from_request(query, req.headers())?;
    let body = read_body(req, state.settings.max_body_bytes).await?;
    let mut patch: PatchMemory = parse_json(&body)?;
    patch.actor = patch.actor.or_else(|| params.actor.clone());
    let memory = update_one(state, id, patch, key, params.wait_for_embedding).await?;
    Ok(params.reply(StatusCode::OK, memory))
}

/// Applies a partial update (REST update, MCP `update_memory`) and counts it.
pub(crate) async fn update_one(
    state: &Arc<AppState>,
    id: Uuid,
    patch: PatchMemory,
    key: Option<&ApiKey>,
    wait_for_embedding: bool,
) -> Result<Memory, ApiError> {
    let (patch, namespace) = patch.into_patch()?;
    // Read the memory first only when a key's namespaces or a sent namespace must be checked.
    if key.is_some() || namespace.is_some() {
        let current = authorized_read(state, id, key).await?;
        if namespace.is_some_and(|ns| ns != current.namespace) {
            return Err(ApiError::invalid(
                "namespace",
                "cannot be changed; create a new memory in the other namespace",
            ));
        }
    }
    let engine = Arc::clone(&state.engine);
    let memory = blocking(move || engine.update(&id, patch)).await??;
    count(state, "update");
    after_write(state, memory, wait_for_embedding).await
}

pub(crate) async fn delete(
    state: &Arc<AppState>,
    req: &Request<Incoming>,
    id: &str,
    key: Option<&ApiKey>,
    query: &Query,
) -> Result<Reply, ApiError> {
    let id = api::parse_id("id", id)?;
    let purge = query.flag("purge")?;
    let actor = actor_header(req.headers())?;
    let deleted = delete_one(state, id, purge, key, actor).await?;
    Ok(json_reply(StatusCode::OK, &deleted))
}

/// Deletes one memory, softly or for good (REST delete, MCP `forget`), and counts it.
pub(crate) async fn delete_one(
    state: &Arc<AppState>,
    id: Uuid,
    purge: bool,
    key: Option<&ApiKey>,
    actor: Option<String>,
) -> Result<DeletedOut, ApiError> {
    if purge {
        crate::http::auth::require(key, crate::config::Role::Admin, || {
            "purging a memory".to_owned()
        })?;
    }
    if key.is_some() {
        authorized_read(state, id, key).await?;
    }
    let engine = Arc::clone(&state.engine);
    let deleted = blocking(move || engine.delete_by(&id, purge, actor.as_deref())).await??;
    count(state, if purge { "purge" } else { "delete" });
    Ok(DeletedOut::from(deleted))
}

pub(crate) async fn list(
    state: &Arc<AppState>,
    key: Option<&ApiKey>,
    query: &Query,
) -> Result<Reply, ApiError> {
    let embedding = embedding_view(query)?;
    let limit = match query.get("limit") {
        None => DEFAULT_LIST_LIMIT,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "limit",
                    format!("must be an integer from 1 to {MAX_LIST_LIMIT}, got {s:?}"),
                )
            })?,
    };
    let params = ListParams {
        namespace: query.get("namespace").map(str::to_owned),
        tier: query.get("tier").map(str::to_owned),
        status: query.get("status").map(str::to_owned),
        tag: query.get("tag").map(str::to_owned),
        limit,
        cursor: query.get("cursor").map(str::to_owned),
        include_superseded: query.flag("include_superseded")?,
    };
    let page = list_page(state, key, params).await?;
    let body = ListOut {
        memories: page
            .memories
            .into_iter()
            .map(|m| MemoryOut::new(m, embedding))
            .collect(),
        next_cursor: page.next_after.map(api::encode_cursor),
    };
    Ok(json_reply(StatusCode::OK, &body))
}

/// What a list asks for, as the client wrote it (REST query, MCP `list_memories`).
pub(crate) struct ListParams {
    pub namespace: Option<String>,
    pub tier: Option<String>,
    pub status: Option<String>,
    pub tag: Option<String>,
    pub limit: usize,
    pub cursor: Option<String>,
    pub include_superseded: bool,
}

/// One page of a list, checked against the key's namespaces, and counted.
pub(crate) async fn list_page(
    state: &Arc<AppState>,
    key: Option<&ApiKey>,
    params: ListParams,
) -> Result<Page, ApiError> {
    let namespace = params.namespace;
    if let Some(ns) = &namespace {
        api::check_namespace(ns)?;
        authorize(key, ns)?;
    } else if key.is_some_and(|k| !k.allows("*")) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "this API key is limited to some namespaces: name one with ?namespace=",
        ));
    }
    let tier = params
        .tier
        .as_deref()
        .map(|s| api::parse_name("tier", s))
        .transpose()?;
    let status = params
        .status
        .as_deref()
        .map(|s| api::parse_name("status", s))
        .transpose()?;
    let limit = params.limit;
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be an integer from 1 to {MAX_LIST_LIMIT}, got {limit}"),
        ));
    }
    let after = params
        .cursor
        .as_deref()
        .map(api::decode_cursor)
        .transpose()?;
    let filter = ListFilter {
        namespace,
        tier,
        status,
        tag: params.tag,
        include_deleted: false,
        include_superseded: params.include_superseded,
    };
    let engine = Arc::clone(&state.engine);
    let page = blocking(move || engine.list(&filter, after, limit)).await??;
    count(state, "list");
    Ok(page)
}

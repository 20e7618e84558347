//! Embedding migrations: re-embedding every memory into a new vector space in the background.
//!
//! The engine keeps the space (its rows, dirty marks, graph; `engine/src/engine/spaces.rs`); this
//! module owns what the engine does not know — the embedder the space's descriptor names — and
//! runs one worker thread per space that is not paused: ask the engine for memories to embed,
//! embed them in a batch, hand the vectors back, and wait for new work when caught up. A
//! restart resumes every space that was running (the pass starts again and skips what is
//! current). Searches of the store keep using its own vectors; a space is searched on its own
//! (`POST …/migrations/{id}/search`), never mixed into one ranking with another.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use engram_engine::{Engine, EngineError};
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use crate::config::{Provider, Settings};
use crate::embed::{self, Embedder};
use crate::error::ApiError;

/// What makes a space's vectors, kept as the space's descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationSpec {
    pub provider: String,
    pub model: String,
    pub dimensions: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Environment variable holding the API key (OpenAI); the key itself is never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
}

/// The local model's id and dimensions.
pub const LOCAL_MODEL: &str = "all-MiniLM-L6-v2";
const LOCAL_DIMENSIONS: usize = 384;

impl MigrationSpec {
    /// Checks a request's fields (each error names its field).
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.dimensions == 0 || self.dimensions > engram_engine::MAX_DIMENSIONS {
            return Err(ApiError::invalid(
                "dimensions",
                format!(
                    "must be between 1 and {}, got {}",
                    engram_engine::MAX_DIMENSIONS,
                    self.dimensions
                ),
            ));
        }
        match self.provider.as_str() {
            "local" => {
                if self.model != LOCAL_MODEL {
                    return Err(ApiError::invalid(
                        "model",
                        format!("the local provider has one model, {LOCAL_MODEL}"),
                    ));
                }
                if self.dimensions != LOCAL_DIMENSIONS {
                    return Err(ApiError::invalid(
                        "dimensions",
                        format!("{LOCAL_MODEL} makes {LOCAL_DIMENSIONS}-dimensional vectors"),
                    ));
                }
            }
            "ollama" | "openai" => {
                let url = self.url.as_deref().unwrap_or("");
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(ApiError::invalid(
                        "url",
                        format!("the {} provider needs an http(s) URL", self.provider),
                    ));
                }
                if self.model.is_empty() || self.model.len() > 256 {
                    return Err(ApiError::invalid("model", "must be 1 to 256 bytes"));
                }
            }
            other => {
                return Err(ApiError::invalid(
                    "provider",
                    format!("must be local, ollama or openai, got {other:?}"),
                ))
            }
        }
        Ok(())
    }

    /// The embedder this spec names: the store's own when it is the same model, else a new one.
    pub fn embedder(
        &self,
        settings: &Settings,
        own: Option<&Arc<dyn Embedder>>,
    ) -> Result<Arc<dyn Embedder>, String> {
        match self.provider.as_str() {
            "local" => {
                if let (Some(own), Provider::Local { .. }) = (own, &settings.provider) {
                    return Ok(Arc::clone(own));
                }
                let dir = match &settings.provider {
                    Provider::Local { model_dir } => model_dir.clone(),
                    _ => settings.model_dir.clone().ok_or_else(|| {
                        "the local model needs embedding.model_dir configured".to_owned()
                    })?,
                };
                embed::LocalEmbedder::load(&dir, settings.embed_threads)
                    .map(|e| Arc::new(e) as Arc<dyn Embedder>)
                    .map_err(|e| e.to_string())
            }
            "ollama" => Ok(Arc::new(embed::OllamaEmbedder::new(
                self.url.as_deref().unwrap_or_default(),
                &self.model,
                self.dimensions,
                settings.embed_timeout,
            ))),
            "openai" => Ok(Arc::new(embed::OpenAiEmbedder::new(
                self.url.as_deref().unwrap_or_default(),
                &self.model,
                self.dimensions,
                self.api_key_env
                    .as_deref()
                    .and_then(|v| std::env::var(v).ok()),
                settings.embed_timeout,
            ))),
            other => Err(format!("unknown provider {other:?}")),
        }
    }
}

/// What a worker counts, for the status reply and metrics.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub embedded: AtomicU64,
    pub failed_batches: AtomicU64,
    /// Vectors per second over the last stretch of work (f64 bits).
    rate_bits: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl WorkerStats {
    pub fn rate(&self) -> f64 {
        f64::from_bits(self.rate_bits.load(Ordering::Relaxed))
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }
}

struct Worker {
    stop: Arc<AtomicBool>,
    wake: Arc<(Mutex<u64>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

/// The running migration workers, by space id.
#[derive(Default)]
pub struct Migrations {
    workers: Mutex<HashMap<u32, Worker>>,
    /// Stats outlive a stopped worker (a paused migration still shows its rate and error).
    stats: Mutex<HashMap<u32, Arc<WorkerStats>>>,
    /// Each migration's embedder, made once (loading the local model takes a while).
    embedders: Mutex<HashMap<u32, Arc<dyn Embedder>>>,
}

impl std::fmt::Debug for Migrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migrations")
            .field("workers", &self.workers.lock().len())
            .finish()
    }
}

impl Migrations {
    pub fn stats(&self, id: u32) -> Arc<WorkerStats> {
        Arc::clone(self.stats.lock().entry(id).or_default())
    }

    /// Starts the worker of space `id` (no-op if it runs), embedding `batch` memories per call
    /// (`embedding.batch_size`, as the store's own embedder).
    pub fn start(&self, engine: &Arc<Engine>, id: u32, embedder: Arc<dyn Embedder>, batch: usize) {
        let mut workers = self.workers.lock();
        if workers.contains_key(&id) {
            return;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new((Mutex::new(0u64), Condvar::new()));
        let stats = self.stats(id);
        let (e, s, w, st) = (
            Arc::clone(engine),
            Arc::clone(&stop),
            Arc::clone(&wake),
            Arc::clone(&stats),
        );
        let thread = std::thread::Builder::new()
            .name(format!("engram-migrate-{id}"))
            .spawn(move || run(&e, id, embedder.as_ref(), batch.max(1), &s, &w, &st))
            .expect("spawning a migration thread");
        workers.insert(
            id,
            Worker {
                stop,
                wake,
                thread: Some(thread),
            },
        );
    }

    /// Stops the worker of space `id` and waits for its batch in flight.
    pub fn stop(&self, id: u32) {
        let worker = self.workers.lock().remove(&id);
        if let Some(mut w) = worker {
            w.stop.store(true, Ordering::Release);
            w.wake.1.notify_all();
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }

    pub fn forget(&self, id: u32) {
        self.stop(id);
        self.stats.lock().remove(&id);
        self.embedders.lock().remove(&id);
    }

    /// Keeps `embedder` as migration `id`'s.
    pub fn remember_embedder(&self, id: u32, embedder: Arc<dyn Embedder>) {
        self.embedders.lock().insert(id, embedder);
    }

    /// The embedder of migration `id`, made from its descriptor the first time.
    pub fn embedder(
        &self,
        id: u32,
        descriptor: &str,
        settings: &Settings,
        own: Option<&Arc<dyn Embedder>>,
    ) -> Result<Arc<dyn Embedder>, String> {
        if let Some(e) = self.embedders.lock().get(&id) {
            return Ok(Arc::clone(e));
        }
        let spec: MigrationSpec = serde_json::from_str(descriptor)
            .map_err(|e| format!("unreadable migration descriptor: {e}"))?;
        let made = spec.embedder(settings, own)?;
        Ok(Arc::clone(self.embedders.lock().entry(id).or_insert(made)))
    }

    /// Wakes the worker of space `id` if it waits for work (after writes it has to embed).
    pub fn wake(&self, id: u32) {
        if let Some(w) = self.workers.lock().get(&id) {
            *w.wake.0.lock() += 1;
            w.wake.1.notify_all();
        }
    }

    pub fn stop_all(&self) {
        let ids: Vec<u32> = self.workers.lock().keys().copied().collect();
        for id in ids {
            self.stop(id);
        }
    }

    pub fn running(&self, id: u32) -> bool {
        self.workers.lock().contains_key(&id)
    }

    /// Starts a worker for every space that is not paused (at startup).
    pub fn resume_all(
        &self,
        engine: &Arc<Engine>,
        settings: &Settings,
        own: Option<&Arc<dyn Embedder>>,
    ) {
        let spaces = match engine.spaces() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "listing embedding migrations failed");
                return;
            }
        };
        for space in spaces.into_iter().filter(|s| !s.paused) {
            match self.embedder(space.id, &space.descriptor, settings, own) {
                Ok(embedder) => self.start(engine, space.id, embedder, settings.embed_batch),
                Err(e) => {
                    tracing::error!(migration = space.id, error = %e, "cannot resume embedding migration");
                    *self.stats(space.id).last_error.lock() = Some(e);
                }
            }
        }
    }
}

/// How long an idle worker woken by a write waits for more before it looks for work.
const WAKE_COALESCE: Duration = Duration::from_millis(2);

fn run(
    engine: &Engine,
    id: u32,
    embedder: &dyn Embedder,
    batch: usize,
    stop: &AtomicBool,
    wake: &(Mutex<u64>, Condvar),
    stats: &WorkerStats,
) {
    let mut backoff = Duration::from_millis(200);
    // Vectors and time of the current stretch of work, for the rate.
    let mut stretch: Option<(Instant, u64)> = None;
    // `seen`: the wake count before the last look for work; a wake since then is not slept
    // through.
    let pause = |d: Duration, seen: Option<u64>| {
        let mut g = wake.0.lock();
        if !stop.load(Ordering::Acquire) && seen.is_none_or(|n| *g == n) {
            wake.1.wait_for(&mut g, d);
        }
    };
    while !stop.load(Ordering::Acquire) {
        let seen = *wake.0.lock();
        let jobs = match engine.space_work(id, batch) {
            Ok(j) => j,
            Err(EngineError::SpaceNotFound(_)) => return,
            Err(e) => {
                tracing::error!(migration = id, error = %e, "reading embedding-migration work failed");
                *stats.last_error.lock() = Some(e.to_string());
                pause(backoff, None);
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if jobs.is_empty() {
            stretch = None;
            stats.rate_bits.store(0f64.to_bits(), Ordering::Relaxed);
            pause(Duration::from_millis(500), Some(seen));
            // Woken by a write: let a burst of writes land before looking again, so a stream
            // of writes (most of them settled by their own vectors) costs a look per few ms,
            // not one per write.
            std::thread::sleep(WAKE_COALESCE);
            continue;
        }
        let texts: Vec<&str> = jobs.iter().map(|j| j.content.as_str()).collect();
        let result = embedder
            .embed(&texts)
            .map_err(|e| e.to_string())
            .and_then(|vectors| {
                engine
                    .store_space_vectors(id, &jobs, vectors)
                    .map_err(|e| e.to_string())
            });
        match result {
            Ok(n) => {
                backoff = Duration::from_millis(200);
                *stats.last_error.lock() = None;
                stats.embedded.fetch_add(n as u64, Ordering::Relaxed);
                let (since, done) = stretch.get_or_insert((Instant::now(), 0));
                *done += jobs.len() as u64;
                let secs = since.elapsed().as_secs_f64();
                if secs > 0.0 {
                    stats
                        .rate_bits
                        .store((*done as f64 / secs).to_bits(), Ordering::Relaxed);
                }
            }
            Err(e) => {
                tracing::warn!(migration = id, error = %e, "an embedding-migration batch failed; retrying");
                stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                *stats.last_error.lock() = Some(e);
                pause(backoff, None);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

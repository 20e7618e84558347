//! Embedding providers and the background embedding queue.
//!
//! Providers: `local` (all-MiniLM-L6-v2 run in-process with candle: BERT, mean pooling, L2
//! normalization), `ollama` (`POST /api/embed`) and `openai` (`POST /v1/embeddings`, any
//! OpenAI-compatible server). Writes never wait for a provider: the engine stores a memory
//! without a vector as `pending`, and [`EmbedWorker`] embeds pending memories in batches and
//! stores the vectors through the WAL. The queue is the engine's (persisted), so it survives
//! restarts.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use engram_engine::{EmbedResult, Engine, EngineError};
use parking_lot::{Condvar, Mutex};

/// Why an embedding could not be computed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    /// The provider could not be reached or answered 5xx: retry later, keep the work pending.
    #[error("embedding provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refused this input: mark the memories failed.
    #[error("{0}")]
    Refused(String),
}

/// Why the local model could not be loaded: the file, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", file.display())]
pub struct ModelLoadError {
    pub file: PathBuf,
    pub reason: String,
}

/// Something that turns texts into vectors.
pub trait Embedder: Send + Sync + std::fmt::Debug {
    /// Model id recorded with each vector.
    fn model_id(&self) -> &str;
    fn dimensions(&self) -> usize;
    /// One vector per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

mod local;
pub use local::LocalEmbedder;

// ---------------------------------------------------------------------------------------------
// HTTP providers.

fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(timeout).build()
}

fn http_error(e: ureq::Error) -> EmbedError {
    match e {
        ureq::Error::Status(code, resp) if (400..500).contains(&code) && code != 429 => {
            let body = resp.into_string().unwrap_or_default();
            EmbedError::Refused(format!(
                "provider answered {code}: {}",
                body.chars().take(300).collect::<String>()
            ))
        }
        ureq::Error::Status(code, _) => {
            EmbedError::Unavailable(format!("provider answered {code}"))
        }
        ureq::Error::Transport(t) => EmbedError::Unavailable(t.to_string()),
    }
}

fn check_vectors(
    vectors: Vec<Vec<f32>>,
    want: usize,
    dimensions: usize,
) -> Result<Vec<Vec<f32>>, EmbedError> {
    if vectors.len() != want {
        return Err(EmbedError::Refused(format!(
            "provider returned {} vectors for {want} texts",
            vectors.len()
        )));
    }
    if let Some(v) = vectors.iter().find(|v| v.len() != dimensions) {
        return Err(EmbedError::Refused(format!(
            "provider returned {} dimensions; this store uses {dimensions}",
            v.len()
        )));
    }
    Ok(vectors)
}

/// Ollama's `/api/embed`.
#[derive(Debug)]
pub struct OllamaEmbedder {
    url: String,
    model: String,
    dimensions: usize,
    agent: ureq::Agent,
}

impl OllamaEmbedder {
    pub fn new(
        base_url: &str,
        model: &str,
        dimensions: usize,
        timeout: Duration,
    ) -> OllamaEmbedder {
        OllamaEmbedder {
            url: format!("{}/api/embed", base_url.trim_end_matches('/')),
            model: model.to_owned(),
            dimensions,
            agent: http_agent(timeout),
        }
    }
}

#[derive(serde::Deserialize)]
struct OllamaReply {
    embeddings: Vec<Vec<f32>>,
}

impl Embedder for OllamaEmbedder {
    fn model_id(&self) -> &str {
        &self.model
    }
    fn dimensions(&self) -> usize {
        self.dimensions
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let reply: OllamaReply = self
            .agent
            .post(&self.url)
            .send_json(serde_json::json!({ "model": self.model, "input": texts }))
            .map_err(http_error)?
            .into_json()
            .map_err(|e| EmbedError::Refused(format!("unreadable provider reply: {e}")))?;
        check_vectors(reply.embeddings, texts.len(), self.dimensions)
    }
}

/// An OpenAI-compatible `/v1/embeddings`.
#[derive(Debug)]
pub struct OpenAiEmbedder {
    url: String,
    model: String,
    dimensions: usize,
    api_key: Option<String>,
    agent: ureq::Agent,
}

impl OpenAiEmbedder {
    pub fn new(
        base_url: &str,
        model: &str,
        dimensions: usize,
        api_key: Option<String>,
        timeout: Duration,
    ) -> OpenAiEmbedder {
        OpenAiEmbedder {
            url: format!("{}/v1/embeddings", base_url.trim_end_matches('/')),
            model: model.to_owned(),
            dimensions,
            api_key,
            agent: http_agent(timeout),
        }
    }
}

#[derive(serde::Deserialize)]
struct OpenAiItem {
    embedding: Vec<f32>,
    index: usize,
}

#[derive(serde::Deserialize)]
struct OpenAiReply {
    data: Vec<OpenAiItem>,
}

impl Embedder for OpenAiEmbedder {
    fn model_id(&self) -> &str {
        &self.model
    }
    fn dimensions(&self) -> usize {
        self.dimensions
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut req = self.agent.post(&self.url);
        if let Some(k) = &self.api_key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        let reply: OpenAiReply = req
            .send_json(serde_json::json!({ "model": self.model, "input": texts }))
            .map_err(http_error)?
            .into_json()
            .map_err(|e| EmbedError::Refused(format!("unreadable provider reply: {e}")))?;
        let mut items = reply.data;
        items.sort_by_key(|i| i.index);
        check_vectors(
            items.into_iter().map(|i| i.embedding).collect(),
            texts.len(),
            self.dimensions,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The background queue.

/// Counters the worker keeps for metrics and health.
#[derive(Debug, Default)]
pub struct EmbedStats {
    pub embedded: AtomicU64,
    pub failed: AtomicU64,
    /// The provider answered its last call (or the local model is loaded).
    pub available: AtomicBool,
}

/// Embeds pending memories in the background.
#[derive(Debug)]
pub struct EmbedWorker {
    wake: Arc<(Mutex<u64>, Condvar)>,
    done: Arc<(Mutex<u64>, Condvar)>,
    stop: Arc<AtomicBool>,
    pub stats: Arc<EmbedStats>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl EmbedWorker {
    pub fn start(engine: Arc<Engine>, embedder: Arc<dyn Embedder>, batch: usize) -> EmbedWorker {
        let wake = Arc::new((Mutex::new(0u64), Condvar::new()));
        let done = Arc::new((Mutex::new(0u64), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(EmbedStats::default());
        stats.available.store(true, Ordering::Relaxed);
        let (w, d, s, st) = (
            Arc::clone(&wake),
            Arc::clone(&done),
            Arc::clone(&stop),
            Arc::clone(&stats),
        );
        let thread = std::thread::Builder::new()
            .name("engram-embedder".to_owned())
            .spawn(move || run(&engine, embedder.as_ref(), batch.max(1), &w, &d, &s, &st))
            .expect("spawning the embedder thread");
        EmbedWorker {
            wake,
            done,
            stop,
            stats,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// New work may be waiting.
    pub fn wake(&self) {
        let (m, cv) = &*self.wake;
        *m.lock() += 1;
        cv.notify_one();
    }

    /// Blocks until the worker finishes a batch (or `timeout` passes).
    pub fn wait_batch(&self, timeout: Duration) {
        let (m, cv) = &*self.done;
        let mut g = m.lock();
        let seen = *g;
        let deadline = Instant::now() + timeout;
        while *g == seen {
            if cv.wait_until(&mut g, deadline).timed_out() {
                break;
            }
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

fn run(
    engine: &Engine,
    embedder: &dyn Embedder,
    batch: usize,
    wake: &(Mutex<u64>, Condvar),
    done: &(Mutex<u64>, Condvar),
    stop: &AtomicBool,
    stats: &EmbedStats,
) {
    let mut backoff = Duration::from_millis(200);
    while !stop.load(Ordering::Acquire) {
        let jobs = match engine.pending_embeddings(batch) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, "reading the embedding queue failed");
                Vec::new()
            }
        };
        if jobs.is_empty() {
            let (m, cv) = wake;
            let mut g = m.lock();
            cv.wait_for(&mut g, Duration::from_millis(500));
            continue;
        }
        let texts: Vec<&str> = jobs.iter().map(|j| j.content.as_str()).collect();
        let outcome = embedder.embed(&texts);
        let result = |j: &engram_engine::EmbedJob, outcome: Result<Vec<f32>, String>| EmbedResult {
            id: j.id,
            content_hash: j.content_hash,
            outcome,
            model: embedder.model_id().to_owned(),
        };
        let results: Vec<EmbedResult> = match outcome {
            Ok(vectors) => {
                stats.available.store(true, Ordering::Relaxed);
                backoff = Duration::from_millis(200);
                jobs.iter()
                    .zip(vectors)
                    .map(|(j, v)| result(j, Ok(v)))
                    .collect()
            }
            Err(EmbedError::Unavailable(reason)) => {
                if stats.available.swap(false, Ordering::Relaxed) {
                    tracing::warn!(%reason, "embedding provider unavailable; memories stay pending");
                }
                let (m, cv) = wake;
                let mut g = m.lock();
                cv.wait_for(&mut g, backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
            Err(EmbedError::Refused(reason)) if jobs.len() > 1 => {
                // One bad text fails the call: embed one at a time to find it.
                jobs.iter()
                    .map(|j| {
                        let one = embedder
                            .embed(&[j.content.as_str()])
                            .map(|mut v| v.pop().unwrap_or_default())
                            .map_err(|e| e.to_string());
                        result(j, one)
                    })
                    .inspect(|r| {
                        if r.outcome.is_err() {
                            tracing::warn!(id = %r.id, %reason, "embedding failed");
                        }
                    })
                    .collect()
            }
            Err(EmbedError::Refused(reason)) => jobs
                .iter()
                .map(|j| result(j, Err(reason.clone())))
                .collect(),
        };
        let failed = results.iter().filter(|r| r.outcome.is_err()).count() as u64;
        let n = results.len() as u64;
        let mut stored_any = false;
        for r in engine.set_embeddings(results) {
            match r {
                Ok(_) => stored_any = true,
                // Content changed meanwhile: it is pending again for the new content.
                Err(EngineError::Invalid { .. }) | Err(EngineError::NotFound(_)) => {}
                Err(e) => {
                    tracing::error!(error = %e, "storing embeddings failed");
                    std::thread::sleep(Duration::from_secs(1));
                    break;
                }
            }
        }
        if stored_any {
            stats.embedded.fetch_add(n - failed, Ordering::Relaxed);
            stats.failed.fetch_add(failed, Ordering::Relaxed);
        }
        let (m, cv) = done;
        *m.lock() += 1;
        cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_checks_name_the_problem() {
        assert!(check_vectors(vec![vec![0.0; 3]], 1, 3).is_ok());
        let e = check_vectors(vec![vec![0.0; 4]], 1, 3).expect_err("wrong dimensions");
        assert!(e.to_string().contains("4 dimensions"));
        assert!(check_vectors(vec![], 1, 3).is_err());
    }
}

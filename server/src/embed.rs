//! Embedding providers and the background embedding queue.
//!
//! Providers: `local` (all-MiniLM-L6-v2 run in-process with candle: BERT, mean pooling, L2
//! normalization), `ollama` (`POST /api/embed`) and `openai` (`POST /v1/embeddings`, any
//! OpenAI-compatible server). Writes never wait for a provider: the engine stores a memory
//! without a vector as `pending`, and [`EmbedWorker`] embeds pending memories in batches and
//! stores the vectors through the WAL. The queue is the engine's (persisted), so it survives
//! restarts.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
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

// ---------------------------------------------------------------------------------------------
// Local: all-MiniLM-L6-v2 with candle.

const MAX_TOKENS: usize = 256;
/// Padded tokens per forward pass. Texts are sorted by length and packed until the next would
/// pass this, so short texts go many to a pass and each pass pads little.
const LOCAL_BATCH_TOKENS: usize = 1024;

#[derive(Debug, serde::Deserialize)]
struct BertConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    type_vocab_size: usize,
    layer_norm_eps: f64,
    #[serde(default)]
    hidden_act: Option<String>,
}

#[derive(Debug)]
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

/// BERT encoder with mean pooling, run on the CPU.
pub struct LocalEmbedder {
    tokenizer: tokenizers::Tokenizer,
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
    model_id: String,
    device: Device,
    /// Model passes run in parallel, one per thread.
    threads: usize,
}

impl std::fmt::Debug for LocalEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEmbedder")
            .field("model", &self.model_id)
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

fn candle_err(e: candle_core::Error) -> EmbedError {
    EmbedError::Refused(format!("model error: {e}"))
}

/// The encoder's weights: word, position and token-type embeddings, their norm, and the layers.
type Weights = (Embedding, Embedding, Embedding, LayerNorm, Vec<Layer>);

fn weights(vb: &VarBuilder<'_>, config: &BertConfig) -> candle_core::Result<Weights> {
    let h = config.hidden_size;
    let eps = config.layer_norm_eps;
    let e = vb.pp("embeddings");
    let word = candle_nn::embedding(config.vocab_size, h, e.pp("word_embeddings"))?;
    let position = candle_nn::embedding(
        config.max_position_embeddings,
        h,
        e.pp("position_embeddings"),
    )?;
    let token_type =
        candle_nn::embedding(config.type_vocab_size, h, e.pp("token_type_embeddings"))?;
    let embed_norm = candle_nn::layer_norm(h, eps, e.pp("LayerNorm"))?;
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let l = vb.pp(format!("encoder.layer.{i}"));
        let a = l.pp("attention");
        layers.push(Layer {
            query: candle_nn::linear(h, h, a.pp("self.query"))?,
            key: candle_nn::linear(h, h, a.pp("self.key"))?,
            value: candle_nn::linear(h, h, a.pp("self.value"))?,
            attn_out: candle_nn::linear(h, h, a.pp("output.dense"))?,
            attn_norm: candle_nn::layer_norm(h, eps, a.pp("output.LayerNorm"))?,
            intermediate: candle_nn::linear(
                h,
                config.intermediate_size,
                l.pp("intermediate.dense"),
            )?,
            output: candle_nn::linear(config.intermediate_size, h, l.pp("output.dense"))?,
            out_norm: candle_nn::layer_norm(h, eps, l.pp("output.LayerNorm"))?,
        });
    }
    Ok((word, position, token_type, embed_norm, layers))
}

impl LocalEmbedder {
    /// Loads `model.safetensors`, `tokenizer.json` and `config.json` from `dir`; embeds with
    /// `threads` model passes in parallel.
    pub fn load(dir: &Path, threads: usize) -> Result<LocalEmbedder, ModelLoadError> {
        let fail = |name: &str, reason: String| ModelLoadError {
            file: dir.join(name),
            reason,
        };
        let read =
            |name: &str| std::fs::read(dir.join(name)).map_err(|e| fail(name, e.to_string()));
        let config: BertConfig = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| fail("config.json", e.to_string()))?;
        if config.hidden_act.as_deref().is_some_and(|a| a != "gelu") {
            return Err(fail(
                "config.json",
                "only gelu BERT models are supported".to_owned(),
            ));
        }
        let mut tokenizer = tokenizers::Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|e| fail("tokenizer.json", e.to_string()))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: MAX_TOKENS.min(config.max_position_embeddings),
                ..Default::default()
            }))
            .map_err(|e| fail("tokenizer.json", format!("truncation: {e}")))?;
        let device = Device::Cpu;
        let (word, position, token_type, embed_norm, layers) =
            VarBuilder::from_buffered_safetensors(read("model.safetensors")?, DType::F32, &device)
                .and_then(|vb| weights(&vb, &config))
                .map_err(|e| fail("model.safetensors", e.to_string()))?;
        let h = config.hidden_size;
        let model_id = std::fs::read_to_string(dir.join("MODEL_ID"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "all-MiniLM-L6-v2".to_owned());
        Ok(LocalEmbedder {
            tokenizer,
            word,
            position,
            token_type,
            embed_norm,
            layers,
            heads: config.num_attention_heads,
            hidden: h,
            model_id,
            device,
            threads: threads.max(1),
        })
    }

    /// One forward pass over texts already tokenized: `ids[i]` has `lens[i]` real tokens,
    /// padded to the longest.
    fn forward(&self, ids: &[Vec<u32>]) -> candle_core::Result<Vec<Vec<f32>>> {
        let batch = ids.len();
        let seq = ids.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut flat = Vec::with_capacity(batch * seq);
        let mut mask = Vec::with_capacity(batch * seq);
        for t in ids {
            flat.extend_from_slice(t);
            flat.extend(std::iter::repeat_n(0u32, seq - t.len()));
            mask.extend(std::iter::repeat_n(1f32, t.len()));
            mask.extend(std::iter::repeat_n(0f32, seq - t.len()));
        }
        let input = Tensor::from_vec(flat, (batch, seq), &self.device)?;
        let mask = Tensor::from_vec(mask, (batch, seq), &self.device)?;
        let positions = Tensor::arange(0u32, seq as u32, &self.device)?;
        let types = Tensor::zeros((batch, seq), DType::U32, &self.device)?;
        let x = self
            .word
            .forward(&input)?
            .broadcast_add(&self.position.forward(&positions)?)?
            .add(&self.token_type.forward(&types)?)?;
        let mut x = self.embed_norm.forward(&x)?;
        // Padding keys get a large negative score before the softmax.
        let bias = mask.affine(1e4, -1e4)?.reshape((batch, 1, 1, seq))?;
        let head_dim = self.hidden / self.heads;
        let scale = 1.0 / (head_dim as f64).sqrt();
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((batch, seq, self.heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        for layer in &self.layers {
            let q = split(layer.query.forward(&x)?)?;
            let k = split(layer.key.forward(&x)?)?;
            let v = split(layer.value.forward(&x)?)?;
            let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(&bias)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let ctx = probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((
                batch,
                seq,
                self.hidden,
            ))?;
            let attn = layer.attn_out.forward(&ctx)?;
            x = layer.attn_norm.forward(&(attn + &x)?)?;
            let inner = layer.intermediate.forward(&x)?.gelu_erf()?;
            let out = layer.output.forward(&inner)?;
            x = layer.out_norm.forward(&(out + &x)?)?;
        }
        // Mean over real tokens, then unit length.
        let m = mask.unsqueeze(2)?;
        let summed = x.broadcast_mul(&m)?.sum(1)?;
        let counts = m.sum(1)?.clamp(1.0, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        mean.broadcast_div(&norms)?.to_vec2::<f32>()
    }
}

/// Vectors with the index of the text they belong to.
type Placed = Vec<(usize, Vec<f32>)>;

impl Embedder for LocalEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimensions(&self) -> usize {
        self.hidden
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Refused(format!("tokenizer: {e}")))?;
        let ids: Vec<Vec<u32>> = encodings.iter().map(|e| e.get_ids().to_vec()).collect();
        // Shortest first, so texts of like length share a batch and little is padding.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut chunks: Vec<&[usize]> = Vec::new();
        let mut start = 0;
        while start < order.len() {
            // Sorted ascending: the last text of a chunk is its longest.
            let mut end = start + 1;
            while end < order.len()
                && (end + 1 - start) * ids[order[end]].len() <= LOCAL_BATCH_TOKENS
            {
                end += 1;
            }
            chunks.push(&order[start..end]);
            start = end;
        }
        // Deal the passes out to the threads, largest first, each to the least loaded thread.
        let threads = self.threads.min(chunks.len()).max(1);
        let mut lanes: Vec<(usize, Vec<&[usize]>)> = vec![(0, Vec::new()); threads];
        let mut by_cost = chunks.clone();
        by_cost.sort_by_key(|c| std::cmp::Reverse(c.len() * ids[c[c.len() - 1]].len()));
        for c in by_cost {
            let lane = lanes
                .iter_mut()
                .min_by_key(|(load, _)| *load)
                .expect("at least one lane");
            lane.0 += c.len() * ids[c[c.len() - 1]].len();
            lane.1.push(c);
        }
        let run = |lane: &[&[usize]]| -> Result<Placed, EmbedError> {
            let mut done = Vec::new();
            for chunk in lane {
                let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| ids[i].clone()).collect();
                let vectors = self.forward(&batch).map_err(candle_err)?;
                done.extend(chunk.iter().copied().zip(vectors));
            }
            Ok(done)
        };
        let results: Vec<Result<Placed, EmbedError>> = if threads == 1 {
            vec![run(&lanes[0].1)]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = lanes[1..]
                    .iter()
                    .map(|(_, lane)| s.spawn(|| run(lane)))
                    .collect();
                let mut all = vec![run(&lanes[0].1)];
                for h in handles {
                    all.push(h.join().unwrap_or_else(|_| {
                        Err(EmbedError::Refused("a model thread panicked".to_owned()))
                    }));
                }
                all
            })
        };
        let mut out = vec![Vec::new(); ids.len()];
        for r in results {
            for (i, v) in r? {
                out[i] = v;
            }
        }
        Ok(out)
    }
}

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

//! Search queries embedded in batches. Each search that needs its `query_text` embedded queues
//! the text and awaits the vector; one thread per core takes every query waiting when it comes
//! free and embeds them in one model call. Under load a call carries many short queries, and one
//! pass over a batch costs far less than a pass per query (the matrix products of a few tokens
//! leave the cores idle); an idle daemon embeds a lone query at once, as before.

use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::embed::{EmbedError, Embedder};

/// Most queries embedded in one model call.
const MAX_QUERY_BATCH: usize = 32;

type Job = (String, oneshot::Sender<Result<Vec<f32>, EmbedError>>);

/// The queue and its threads; the threads end when this is dropped.
pub struct QueryEmbedder {
    queue: Sender<Job>,
}

impl std::fmt::Debug for QueryEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEmbedder").finish_non_exhaustive()
    }
}

impl QueryEmbedder {
    /// Starts one batching thread per core.
    pub fn start(embedder: Arc<dyn Embedder>) -> QueryEmbedder {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        for i in 0..threads {
            let (rx, embedder) = (Arc::clone(&rx), Arc::clone(&embedder));
            if let Err(e) = std::thread::Builder::new()
                .name(format!("engramd-query-embed-{i}"))
                .spawn(move || run(&rx, embedder.as_ref()))
            {
                // With no thread at all, `embed` answers Unavailable and searches say so.
                tracing::error!(error = %e, "could not start a query-embedding thread");
            }
        }
        QueryEmbedder { queue: tx }
    }

    /// The vector of one query text.
    pub async fn embed(&self, text: String) -> Result<Vec<f32>, EmbedError> {
        let (tx, rx) = oneshot::channel();
        if self.queue.send((text, tx)).is_err() {
            return Err(EmbedError::Unavailable(
                "the query embedder has stopped".to_owned(),
            ));
        }
        rx.await.unwrap_or_else(|_| {
            Err(EmbedError::Unavailable(
                "the query embedder has stopped".to_owned(),
            ))
        })
    }
}

/// One batching thread: waits for a query, takes every other one already queued (up to
/// [`MAX_QUERY_BATCH`]), embeds them in one call, answers each.
fn run(rx: &Mutex<Receiver<Job>>, embedder: &dyn Embedder) {
    loop {
        let mut jobs = Vec::new();
        {
            let Ok(rx) = rx.lock() else { return };
            match rx.recv() {
                Ok(job) => jobs.push(job),
                Err(_) => return,
            }
            while jobs.len() < MAX_QUERY_BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
        }
        let texts: Vec<&str> = jobs.iter().map(|(t, _)| t.as_str()).collect();
        match embedder.embed(&texts) {
            Ok(vectors) if vectors.len() == jobs.len() => {
                for ((_, reply), v) in jobs.into_iter().zip(vectors) {
                    let _ = reply.send(Ok(v));
                }
            }
            Ok(vectors) => {
                let e = EmbedError::Refused(format!(
                    "the embedder returned {} vectors for {} queries",
                    vectors.len(),
                    jobs.len()
                ));
                for (_, reply) in jobs {
                    let _ = reply.send(Err(e.clone()));
                }
            }
            Err(e) => {
                for (_, reply) in jobs {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

//! `engram-server`: the `engramd` daemon — HTTP API (hyper on tokio), auth, metrics, config and
//! the daemon lifecycle.
//!
//! Invariants: handlers never block an async worker on the WAL (writes run on blocking threads);
//! every error reaches the client as `{"error":{…}}` with a code from [`error::ApiError`]; a
//! rejected request changes nothing stored.
//!
//! What it does not do: store anything itself (the engine does) or know byte formats.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod console;
pub mod embed;
pub mod error;
pub mod fuzzing;
mod handlers;
pub mod http;
pub mod mcp;
pub mod metrics;
pub mod migrations;
pub mod query_embed;
pub mod telemetry;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use engram_engine::{Engine, EngineError, FaultInjector, IoOp};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

pub use config::Settings;
pub use http::AppState;

/// File descriptors kept for the engine: RocksDB's table cache
/// ([`engram_engine::WARM_MAX_OPEN_FILES`]) plus WAL and cold segments, the vector index, the
/// working tier, snapshot copies and the embedder, with room to spare.
pub const ENGINE_DESCRIPTORS: u64 = 768;

/// Raises the soft open-file limit to the hard one, then returns how many connections fit
/// beside the engine's descriptors: `wanted`, or fewer when the limit is low (with a warning).
/// Past the budget, connections wait in the listen backlog instead of making the engine's own
/// opens fail with EMFILE.
pub fn connection_budget(wanted: usize) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    // Linux refuses "unlimited" for descriptors; 2^20 is its usual ceiling (fs.nr_open).
    let hard = limit.maximum.unwrap_or(1 << 20).min(1 << 20);
    let mut soft = limit.current.unwrap_or(hard);
    if soft < hard {
        match setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard),
                maximum: limit.maximum,
            },
        ) {
            Ok(()) => soft = hard,
            Err(e) => tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit"),
        }
    }
    let budget = if soft >= 2 * ENGINE_DESCRIPTORS {
        soft - ENGINE_DESCRIPTORS
    } else {
        soft / 4
    };
    let budget = usize::try_from(budget).unwrap_or(usize::MAX).max(1);
    if wanted > budget {
        tracing::warn!(
            limits_max_connections = wanted,
            open_file_limit = soft,
            serving = budget,
            "limits.max_connections is above what the open-file limit allows beside the engine; serving fewer at once"
        );
        budget
    } else {
        wanted
    }
}
/// A client has this long to send a request's headers, so idle or slow connections cannot hold
/// the connection slots for ever.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections on `listener` until `shutdown` resolves, then stops accepting and waits
/// (up to the configured timeout) for in-flight requests to finish.
pub async fn run(listener: TcpListener, state: Arc<AppState>, shutdown: impl Future<Output = ()>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(connection_budget(
        state.settings.max_connections,
    )));
    let mut accept_errors = AcceptErrors::default();
    tokio::pin!(shutdown);
    loop {
        // A free connection slot first, so a flood waits in the backlog, not in memory.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        drop(slot);
                        if let Some(pause) = accept_errors.failed(&e) {
                            tokio::select! {
                                () = tokio::time::sleep(pause) => {}
                                () = &mut shutdown => break,
                            }
                        }
                        continue;
                    }
                };
                accept_errors.succeeded();
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&state);
                let service = service_fn(move |req| http::handle(Arc::clone(&state), req, peer));
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                    drop(slot);
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let timeout = state.settings.shutdown_timeout;
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(timeout) => tracing::warn!(?timeout, "shutdown timeout: closing remaining connections"),
    }
}

/// Connections the kernel queues while every connection slot is taken (tokio's default is 128,
/// which a burst of clients overflows into SYN retries of a second or more).
pub const LISTEN_BACKLOG: u32 = 1024;

/// Binds `addr` with [`LISTEN_BACKLOG`] (the kernel caps it at `net.core.somaxconn`).
fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// What the accept loop does after a failed accept. Out of descriptors (EMFILE, ENFILE) or
/// memory, the same accept fails at once again: it pauses, 10 ms doubling up to 1 s, so the
/// loop neither spins a core nor floods the log (one line per 10 s, with a count). A client that
/// gave up (ECONNABORTED and the like) costs nothing.
#[derive(Default)]
struct AcceptErrors {
    pause: Option<Duration>,
    unlogged: u64,
    last_log: Option<std::time::Instant>,
}

impl AcceptErrors {
    const FIRST_PAUSE: Duration = Duration::from_millis(10);
    const MAX_PAUSE: Duration = Duration::from_secs(1);
    const LOG_EVERY: Duration = Duration::from_secs(10);

    fn failed(&mut self, e: &std::io::Error) -> Option<Duration> {
        const ENFILE: i32 = 23;
        const EMFILE: i32 = 24;
        const ENOBUFS: i32 = 105;
        const ENOMEM: i32 = 12;
        let exhausted = matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM));
        if !exhausted {
            tracing::debug!(error = %e, "accept failed");
            return None;
        }
        self.unlogged += 1;
        if self.last_log.is_none_or(|t| t.elapsed() >= Self::LOG_EVERY) {
            tracing::warn!(
                error = %e,
                failures = self.unlogged,
                "accept failed: out of descriptors or memory; pausing accepts (limits.max_connections)"
            );
            self.unlogged = 0;
            self.last_log = Some(std::time::Instant::now());
        }
        let pause = self
            .pause
            .map_or(Self::FIRST_PAUSE, |p| (p * 2).min(Self::MAX_PAUSE));
        self.pause = Some(pause);
        Some(pause)
    }

    fn succeeded(&mut self) {
        self.pause = None;
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}

/// Fault injection for drills and tests: after `n` successful fsyncs every fsync fails, as a
/// dying disk would. Set with `ENGRAM_FAULT_FSYNC_FAIL_AFTER`.
pub fn fsync_failure_after(n: u64) -> FaultInjector {
    let seen = Arc::new(AtomicU64::new(0));
    Arc::new(move |op| {
        if op == IoOp::Sync && seen.fetch_add(1, Ordering::SeqCst) >= n {
            Err(std::io::Error::other(
                "injected fsync failure (ENGRAM_FAULT_FSYNC_FAIL_AFTER)",
            ))
        } else {
            Ok(())
        }
    })
}

/// Why `engramd` could not start, or could not stop cleanly. Every variant names what it was
/// doing; `main` prints it and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("embedding.model_dir: cannot load the model: {0}")]
    Model(#[from] embed::ModelLoadError),
    #[error("invalid configuration: embedding.dimensions: the {model} model makes {made}-dimensional vectors, but embedding.dimensions is {configured}")]
    Dimensions {
        model: String,
        made: usize,
        configured: usize,
    },
    #[error("cannot open the store in {}: {source}", data_dir.display())]
    Open {
        data_dir: std::path::PathBuf,
        source: EngineError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("closing the store: {0}")]
    Close(EngineError),
    #[error("engine still in use after every connection closed")]
    StillInUse,
    #[error("the {0} task failed: {1}")]
    Task(&'static str, tokio::task::JoinError),
}

/// Builds the configured embedder; checks it makes vectors of the store's dimensions.
pub fn make_embedder(settings: &Settings) -> Result<Option<Arc<dyn embed::Embedder>>, ServeError> {
    use config::Provider;
    let embedder: Arc<dyn embed::Embedder> = match &settings.provider {
        Provider::None => return Ok(None),
        Provider::Local { model_dir } => Arc::new(embed::LocalEmbedder::load(
            model_dir,
            settings.embed_threads,
        )?),
        Provider::Ollama { url, model } => Arc::new(embed::OllamaEmbedder::new(
            url,
            model,
            settings.dimensions,
            settings.embed_timeout,
        )),
        Provider::OpenAi {
            url,
            model,
            api_key_env,
        } => Arc::new(embed::OpenAiEmbedder::new(
            url,
            model,
            settings.dimensions,
            std::env::var(api_key_env).ok(),
            settings.embed_timeout,
        )),
    };
    if embedder.dimensions() != settings.dimensions {
        return Err(ServeError::Dimensions {
            model: embedder.model_id().to_owned(),
            made: embedder.dimensions(),
            configured: settings.dimensions,
        });
    }
    Ok(Some(embedder))
}

/// Opens the store, serves until SIGTERM/SIGINT, then checkpoints and closes. Everything
/// `engramd` does after parsing its configuration.
pub async fn serve(settings: Settings, hooks: config::TestHooks) -> Result<(), ServeError> {
    let embedder = {
        let s = settings.clone();
        tokio::task::spawn_blocking(move || make_embedder(&s))
            .await
            .map_err(|e| ServeError::Task("embedder load", e))??
    };
    let mut engine_config = settings.engine_config();
    engine_config.fault_injector = hooks.fault;
    if let Some(clock) = hooks.clock {
        tracing::warn!("the engine runs on an adjustable test clock (ENGRAM_TEST_CLOCK)");
        engine_config.clock = clock;
    }
    let data_dir = settings.data_dir.clone();
    let (engine, report) = tokio::task::spawn_blocking(move || Engine::open(engine_config))
        .await
        .map_err(|e| ServeError::Task("engine open", e))?
        .map_err(|source| ServeError::Open { data_dir, source })?;
    tracing::info!(
        data_dir = %settings.data_dir.display(),
        replayed = report.records_replayed,
        last_lsn = report.last_lsn.get(),
        took_ms = report.took.as_millis() as u64,
        "store open"
    );
    if let Some((file, offset)) = &report.torn_tail {
        tracing::warn!(file = %file.display(), offset, "recovered from a torn WAL tail");
    }
    let engine = Arc::new(engine);
    let metrics = metrics::Metrics::new();
    let histogram = metrics.wal_fsync_duration.clone();
    engine.set_fsync_observer(Box::new(move |d| histogram.observe(d.as_secs_f64())));
    let listen_error = |source| ServeError::Listen {
        addr: settings.listen,
        source,
    };
    let listener = listen(settings.listen).map_err(listen_error)?;
    let local = listener.local_addr().map_err(listen_error)?;
    tracing::info!(listen = %local, "engramd serving");
    if settings.api_keys.is_empty() && !local.ip().is_loopback() {
        tracing::warn!(
            listen = %local,
            "serving WITHOUT API keys on an address other hosts can reach (auth.allow_unauthenticated = true)"
        );
    }
    let worker = embedder.as_ref().map(|e| {
        embed::EmbedWorker::start(Arc::clone(&engine), Arc::clone(e), settings.embed_batch)
    });
    let state = Arc::new(AppState::new(
        Arc::clone(&engine),
        settings,
        metrics,
        embedder,
        worker,
    ));
    {
        let s = Arc::clone(&state);
        tokio::task::spawn_blocking(move || {
            s.migrations
                .resume_all(&s.engine, &s.settings, s.embedder.as_ref())
        })
        .await
        .map_err(|e| ServeError::Task("migrations resume", e))?;
    }
    run(listener, Arc::clone(&state), shutdown_signal()).await;
    if let Some(w) = &state.embed_worker {
        w.stop();
    }
    {
        let s = Arc::clone(&state);
        tokio::task::spawn_blocking(move || s.migrations.stop_all())
            .await
            .map_err(|e| ServeError::Task("migrations stop", e))?;
    }
    drop(state);
    let engine = Arc::try_unwrap(engine).map_err(|_| ServeError::StillInUse)?;
    tokio::task::spawn_blocking(move || engine.close())
        .await
        .map_err(|e| ServeError::Task("engine close", e))?
        .map_err(ServeError::Close)?;
    tracing::info!("store closed cleanly");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_pauses_grow_when_out_of_descriptors_and_reset_on_success() {
        let mut errors = AcceptErrors::default();
        let emfile = std::io::Error::from_raw_os_error(24);
        let pauses: Vec<Duration> = (0..10)
            .map(|_| errors.failed(&emfile).expect("a pause"))
            .collect();
        assert_eq!(pauses[0], AcceptErrors::FIRST_PAUSE);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(pauses[9], AcceptErrors::MAX_PAUSE);
        errors.succeeded();
        assert_eq!(errors.failed(&emfile), Some(AcceptErrors::FIRST_PAUSE));
        let aborted = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
        assert_eq!(
            errors.failed(&aborted),
            None,
            "a client that gave up costs nothing"
        );
    }

    #[test]
    fn the_connection_budget_leaves_the_engine_its_descriptors() {
        let granted = connection_budget(usize::MAX);
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(1 << 20);
        assert!(granted as u64 + ENGINE_DESCRIPTORS <= soft.max(granted as u64 * 4));
        assert_eq!(connection_budget(3), 3);
    }
}

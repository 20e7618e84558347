//! A namespace out and in while the daemon serves: `GET /api/v1/namespaces/{ns}/export` streams
//! every memory with its kept versions as JSON lines (optionally zstd), and `POST …/import`
//! reads such a stream into the namespace. The line format is `engram_engine::transfer`'s, the
//! same `engramctl export` writes and `engramctl import` reads.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::time::Instant;

use engram_engine::transfer::{self, Exported, Line};
use engram_engine::{Engine, EngineError};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use crate::api::check_namespace;
use crate::api::namespaces::{ImportConflictOut, NamespaceImportOut};
use crate::api::vector::VectorFormat;
use crate::config::{ApiKey, Role};
use crate::error::ApiError;
use crate::handlers::memories::count;
use crate::http::auth::{authorize, require};
use crate::http::body::{blocking, drain, Query, BODY_READ_TIMEOUT};
use crate::http::stream::{channel_body, ChannelReader, CHANNEL_CHUNKS};
use crate::http::{json_reply, AppState, Reply, ResponseBody};

/// Memories per import group commit.
const IMPORT_BATCH: usize = engram_engine::MAX_BATCH_ITEMS;

/// The longest line an import reads: a memory with 20 versions of the largest content and a
/// vector each stays well below it.
const MAX_LINE_BYTES: usize = 64 << 20;

/// Conflicts an import reply lists (all are counted).
const LISTED_CONFLICTS: usize = 100;

fn namespace_not_found(namespace: &str) -> ApiError {
    ApiError {
        details: json!({ "namespace": namespace }),
        ..ApiError::new(
            StatusCode::NOT_FOUND,
            "NAMESPACE_NOT_FOUND",
            format!("namespace {namespace:?} holds no memory"),
        )
    }
}

/// `GET /api/v1/namespaces/{ns}/export[?compress=zstd][&embedding_format=base64]`: the answer
/// starts at once and is written while the namespace is read (a thread reads, another
/// formats). A failure after the first bytes ends the stream without its last line, which an
/// import reports as incomplete.
pub(crate) async fn export(
    state: &Arc<AppState>,
    namespace: &str,
    key: Option<&ApiKey>,
    query: &Query,
) -> Result<Response<ResponseBody>, ApiError> {
    check_namespace(namespace)?;
    authorize(key, namespace)?;
    let compress = match query.get("compress") {
        None | Some("none") => false,
        Some("zstd") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "compress",
                format!("must be zstd or none, not {other:?}"),
            ))
        }
    };
    let form = match query
        .get("embedding_format")
        .map(|f| VectorFormat::parse("embedding_format", f))
        .transpose()?
        .unwrap_or_default()
    {
        VectorFormat::Float => transfer::VectorForm::Float,
        VectorFormat::Base64 => transfer::VectorForm::Base64,
    };
    let engine = Arc::clone(&state.engine);
    let ns = namespace.to_owned();
    let exists = blocking(move || engine.namespace_counts(Some(&ns))).await??;
    if exists.is_empty() {
        return Err(namespace_not_found(namespace));
    }
    count(state, "namespace_export");
    let (sink, body) = channel_body();
    let engine = Arc::clone(&state.engine);
    let ns = namespace.to_owned();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let result = if compress {
            zstd::Encoder::new(sink, 3)
                .map_err(|e| EngineError::io(std::path::Path::new("<zstd>"), e))
                .and_then(|enc| write_namespace(&engine, &ns, form, enc))
                .and_then(|(enc, footer)| {
                    enc.finish()
                        .and_then(|mut sink| std::io::Write::flush(&mut sink))
                        .map_err(|e| EngineError::io(std::path::Path::new("<zstd>"), e))?;
                    Ok(footer)
                })
        } else {
            write_namespace(&engine, &ns, form, sink).map(|(_, footer)| footer)
        };
        match result {
            Ok(footer) => tracing::info!(
                namespace = ns,
                memories = footer.memories,
                versions = footer.versions,
                took_ms = started.elapsed().as_millis() as u64,
                "namespace exported"
            ),
            Err(e) => tracing::warn!(namespace = ns, error = %e, "namespace export stopped"),
        }
    });
    let mut r = Response::new(body.boxed());
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(if compress {
            "application/zstd"
        } else {
            "application/x-ndjson"
        }),
    );
    Ok(r)
}

fn write_namespace<W: std::io::Write + Send>(
    engine: &Engine,
    namespace: &str,
    form: transfer::VectorForm,
    out: W,
) -> Result<(W, transfer::Footer), EngineError> {
    transfer::write_export(
        out,
        engine.vector_dimensions()?,
        Some(namespace),
        form,
        |put| engine.export_namespace(namespace, put).map(|_| ()),
    )
}

/// What an import does with a memory whose id the store holds, or whose content the namespace
/// holds under another id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnConflict {
    /// Leave it out, count and list it, go on.
    Skip,
    /// Same id in this namespace: purge the stored one and store the imported one. Content
    /// held by another memory is still a conflict, left out.
    Replace,
    /// Stop at the first: 409, with what was imported before it.
    Fail,
}

/// `POST /api/v1/namespaces/{ns}/import[?on_conflict=skip|replace|fail]`: the body is an
/// export (JSON lines; `Content-Type: application/zstd` or `Content-Encoding: zstd` for a
/// compressed one), read as it arrives and stored a group commit per 1,000 memories into
/// `ns`, whatever namespace the lines name. Not atomic: on an error, what came before it
/// stays (`details.imported`); importing again with `on_conflict=skip` resumes.
pub(crate) async fn import(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    namespace: &str,
    key: Option<&ApiKey>,
    query: &Query,
) -> Result<Reply, ApiError> {
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    let compressed = header(CONTENT_ENCODING).as_deref() == Some("zstd")
        || header(CONTENT_TYPE).is_some_and(|t| t.starts_with("application/zstd"));
    let mut body = req.into_body();
    let checked = check_namespace(namespace)
        .and_then(|()| authorize(key, namespace))
        .and_then(|()| match query.get("on_conflict") {
            None | Some("skip") => Ok(OnConflict::Skip),
            // It purges what it replaces, with every version: a purge needs an admin key.
            Some("replace") => require(key, Role::Admin, || {
                "on_conflict=replace (it purges the memories it replaces)".to_owned()
            })
            .map(|()| OnConflict::Replace),
            Some("fail") => Ok(OnConflict::Fail),
            Some(other) => Err(ApiError::invalid(
                "on_conflict",
                format!("must be skip, replace or fail, not {other:?}"),
            )),
        });
    let on_conflict = match checked {
        Ok(c) => c,
        Err(e) => {
            drain(&mut body).await;
            return Err(e);
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_CHUNKS);
    let engine = Arc::clone(&state.engine);
    let ns = namespace.to_owned();
    let started = Instant::now();
    let worker = tokio::task::spawn_blocking(move || {
        import_stream(
            &engine,
            ChannelReader::new(rx),
            compressed,
            &ns,
            on_conflict,
        )
    });
    // The body is passed on as it arrives; a client that stops sending for BODY_READ_TIMEOUT
    // fails the import (408) with what was stored before.
    let mut timed_out = false;
    loop {
        let next = match tokio::time::timeout(BODY_READ_TIMEOUT, body.frame()).await {
            Err(_) => {
                timed_out = true;
                Some(Err(format!(
                    "no data for {} s",
                    BODY_READ_TIMEOUT.as_secs()
                )))
            }
            Ok(None) => None,
            Ok(Some(Err(e))) => Some(Err(format!("could not be read: {e}"))),
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => Some(Ok(data)),
                Err(_) => continue,
            },
        };
        let Some(next) = next else { break };
        if next.is_err() {
            let _ = tx.send(next).await;
            break;
        }
        if tx.send(next).await.is_err() {
            // The worker stopped on an error it reports: the rest is read and dropped, so the
            // client hears the answer.
            drain(&mut body).await;
            break;
        }
    }
    drop(tx);
    let mut out = worker.await.map_err(|e| {
        tracing::error!(error = %e, "import task failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "import task failed",
        )
    })?;
    if timed_out {
        if let Err(e) = &mut out {
            *e = ApiError {
                details: e.details.clone(),
                ..ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "REQUEST_TIMEOUT",
                    e.message.clone(),
                )
            };
        }
    }
    let mut out = out?;
    out.took_ms = started.elapsed().as_millis() as u64;
    count(state, "namespace_import");
    tracing::info!(
        namespace,
        imported = out.imported,
        skipped = out.skipped,
        took_ms = out.took_ms,
        "namespace imported"
    );
    Ok(json_reply(StatusCode::OK, &out))
}

/// An import's progress, for its reply and its errors.
struct Importer<'a> {
    engine: &'a Engine,
    on_conflict: OnConflict,
    out: NamespaceImportOut,
    batch: Vec<Exported>,
    /// Each batched memory's line.
    lines: Vec<usize>,
}

impl Importer<'_> {
    /// An error after `imported` memories were stored: the reply says how many.
    fn failed(&self, mut e: ApiError, line: usize) -> ApiError {
        if let Some(d) = e.details.as_object_mut() {
            d.insert("line".to_owned(), json!(line));
            d.insert("imported".to_owned(), json!(self.out.imported));
        }
        e
    }

    fn flush(&mut self) -> Result<(), ApiError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let versions: Vec<u64> = self.batch.iter().map(|e| e.versions.len() as u64).collect();
        let batch = std::mem::take(&mut self.batch);
        let lines = std::mem::take(&mut self.lines);
        let results = self
            .engine
            .import_batch(batch, self.on_conflict == OnConflict::Replace);
        for ((r, line), versions) in results.into_iter().zip(lines).zip(versions) {
            let (id, code, existing_id) = match r {
                Ok(done) => {
                    self.out.imported += 1;
                    self.out.versions += versions;
                    self.out.replaced += u64::from(done.replaced);
                    continue;
                }
                Err(EngineError::IdExists(id)) => (id, "ID_EXISTS", None),
                Err(EngineError::Duplicate { existing }) => {
                    (existing, "DUPLICATE_CONTENT", Some(existing.to_string()))
                }
                Err(EngineError::Invalid { field, message }) => {
                    return Err(self.failed(ApiError::invalid(field, message), line))
                }
                Err(e) => return Err(self.failed(ApiError::from(e), line)),
            };
            if self.on_conflict == OnConflict::Fail {
                let e = match code {
                    "ID_EXISTS" => EngineError::IdExists(id),
                    _ => EngineError::Duplicate { existing: id },
                };
                return Err(self.failed(ApiError::from(e), line));
            }
            self.out.skipped += 1;
            if self.out.conflicts.len() < LISTED_CONFLICTS {
                self.out.conflicts.push(ImportConflictOut {
                    line,
                    id: id.to_string(),
                    code,
                    existing_id,
                });
            }
        }
        Ok(())
    }
}

/// A batch of parsed memories and the line each came from.
struct Parsed {
    batch: Vec<Exported>,
    lines: Vec<usize>,
}

/// How the parse of a stream ended: its footer (if any) and the memories read, or an error at
/// a line.
type ParseEnd = Result<(Option<transfer::Footer>, u64), (ApiError, usize)>;

/// Reads and parses the stream (decompressing it), handing batches to `to_store`; stops
/// quietly if the storing side stopped.
fn parse_stream(
    reader: ChannelReader,
    compressed: bool,
    namespace: &str,
    dimensions: usize,
    to_store: &std::sync::mpsc::SyncSender<Parsed>,
) -> ParseEnd {
    let reader: Box<dyn Read> = if compressed {
        Box::new(
            zstd::Decoder::new(reader)
                .map_err(|e| (ApiError::invalid("body", format!("is not zstd: {e}")), 1))?,
        )
    } else {
        Box::new(reader)
    };
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let mut footer = None;
    let mut read = 0u64;
    let mut line = Vec::new();
    let mut n = 0usize;
    let mut next = Parsed {
        batch: Vec::with_capacity(IMPORT_BATCH),
        lines: Vec::with_capacity(IMPORT_BATCH),
    };
    loop {
        line.clear();
        let got = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| (ApiError::invalid("body", e), n + 1))?;
        if got == 0 {
            break;
        }
        n += 1;
        if line.len() > MAX_LINE_BYTES {
            return Err((
                ApiError::too_large("body", format!("line {n} is over {MAX_LINE_BYTES} bytes")),
                n,
            ));
        }
        let text = std::str::from_utf8(&line)
            .map_err(|e| (ApiError::invalid("body", format!("line {n}: {e}")), n))?
            .trim();
        if text.is_empty() {
            continue;
        }
        let parsed = transfer::parse_line(text, n).map_err(|e| {
            let field = if e.field.is_empty() { "body" } else { &e.field };
            (
                ApiError::invalid(field, format!("(line {n}): {}", e.message)),
                n,
            )
        })?;
        match parsed {
            Line::Header(h) => {
                if h.dimensions != dimensions {
                    return Err((
                        ApiError::invalid(
                            "dimensions",
                            format!(
                                "of the export are {}; this store's are {dimensions}",
                                h.dimensions
                            ),
                        ),
                        n,
                    ));
                }
            }
            Line::Footer(f) => footer = Some(f),
            Line::Memory(e) => {
                if footer.is_some() {
                    return Err((
                        ApiError::invalid(
                            "body",
                            format!("line {n} follows the export's last line"),
                        ),
                        n,
                    ));
                }
                let mut e = *e;
                // Into this namespace, whatever the export's was.
                e.memory.namespace = namespace.to_owned();
                for v in &mut e.versions {
                    v.namespace = namespace.to_owned();
                }
                read += 1;
                next.batch.push(e);
                next.lines.push(n);
                if next.batch.len() >= IMPORT_BATCH {
                    let full = std::mem::replace(
                        &mut next,
                        Parsed {
                            batch: Vec::with_capacity(IMPORT_BATCH),
                            lines: Vec::with_capacity(IMPORT_BATCH),
                        },
                    );
                    if to_store.send(full).is_err() {
                        // The storing side stopped on an error of its own.
                        return Ok((footer, read));
                    }
                }
            }
        }
    }
    if !next.batch.is_empty() {
        let _ = to_store.send(next);
    }
    Ok((footer, read))
}

/// Parses on one thread and stores on this one, so JSON parsing (every float) overlaps the
/// group commits.
fn import_stream(
    engine: &Engine,
    reader: ChannelReader,
    compressed: bool,
    namespace: &str,
    on_conflict: OnConflict,
) -> Result<NamespaceImportOut, ApiError> {
    let mut imp = Importer {
        engine,
        on_conflict,
        out: NamespaceImportOut {
            namespace: namespace.to_owned(),
            imported: 0,
            replaced: 0,
            versions: 0,
            skipped: 0,
            conflicts: Vec::new(),
            complete: false,
            took_ms: 0,
        },
        batch: Vec::new(),
        lines: Vec::new(),
    };
    let dimensions = engine.vector_dimensions()?;
    let (ended, stored) = std::thread::scope(|s| {
        let (to_store, storing) = std::sync::mpsc::sync_channel::<Parsed>(2);
        let parser =
            s.spawn(move || parse_stream(reader, compressed, namespace, dimensions, &to_store));
        let mut stored = Ok(());
        for parsed in storing.iter() {
            imp.batch = parsed.batch;
            imp.lines = parsed.lines;
            stored = imp.flush();
            if stored.is_err() {
                break;
            }
        }
        // Dropping the receiver stops a parser still sending.
        drop(storing);
        let ended = parser.join().unwrap_or_else(|_| {
            Err((
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL_ERROR",
                    "the import's parsing thread failed",
                ),
                0,
            ))
        });
        (ended, stored)
    });
    // The storing side's error came first if it stopped the parse.
    stored?;
    let (footer, read) = ended.map_err(|(e, line)| imp.failed(e, line))?;
    if read == 0 && footer.is_none() {
        return Err(ApiError::invalid(
            "body",
            "holds no export: send the lines GET /api/v1/namespaces/{ns}/export wrote",
        ));
    }
    imp.out.complete = footer.is_some_and(|f| f.memories == read);
    Ok(imp.out)
}

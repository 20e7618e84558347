//! `engramctl export` and `import`: every field of every memory as JSON lines, zstd-compressed
//! when the file name ends in `.zst`. Times are integer microseconds and vectors full f32, so a
//! round trip is lossless.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use engram_engine::{
    content_hash, hex, DataDir, EmbeddingStatus, Engine, EngineConfig, EngineError, Memory, Status,
    Tier, Uuid,
};
use engram_wal::Lsn;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

/// Memories per import group commit.
const IMPORT_BATCH: usize = 1000;

fn progress(json: bool, what: &str) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {pos} memories ({per_sec}, {elapsed})")
            .expect("static template"),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Opens a stopped store, with the layout it was made with (or `dimensions` for a new one).
pub fn open_offline(data_dir: &Path, dimensions: Option<usize>) -> anyhow::Result<Engine> {
    match DataDir::new(data_dir).lock() {
        Ok(lock) => drop(lock),
        Err(EngineError::Locked { .. }) => {
            bail!(
                "{} is in use by a running engramd: stop it first",
                data_dir.display()
            )
        }
        Err(e) => return Err(e.into()),
    }
    let mut config = EngineConfig::new(data_dir);
    config.search_structures = false;
    match engram_engine::stored_layout(data_dir)? {
        Some((d, capacity, heap_bytes)) => {
            if dimensions.is_some_and(|want| want != d) {
                bail!(
                    "{} holds {d}-dimensional embeddings, not {}",
                    data_dir.display(),
                    dimensions.unwrap_or(d)
                );
            }
            config.dimensions = d;
            config.working_capacity = capacity;
            config.working_heap_bytes = heap_bytes;
        }
        None => config.dimensions = dimensions.unwrap_or(384),
    }
    let (engine, _) =
        Engine::open(config).with_context(|| format!("opening {}", data_dir.display()))?;
    Ok(engine)
}

/// One exported memory, serialized straight from the engine's fields: vectors as f32 (shortest
/// round-trip form), metadata as its stored JSON text.
#[derive(serde::Serialize)]
struct ExportLine<'a> {
    id: String,
    namespace: &'a str,
    content: &'a str,
    content_hash: String,
    embedding: Option<&'a [f32]>,
    embedding_status: &'static str,
    embedding_error: Option<&'a str>,
    embedding_model: Option<&'a str>,
    tier: &'static str,
    status: &'static str,
    importance_score: f32,
    access_count: u64,
    last_accessed_at_us: Option<i64>,
    metadata: &'a serde_json::value::RawValue,
    tags: &'a [String],
    parent_id: Option<String>,
    created_at_us: i64,
    updated_at_us: i64,
    expires_at_us: Option<i64>,
    version: u64,
    superseded_by: Option<String>,
    actor: Option<&'a str>,
}

fn write_memory_line(out: &mut Vec<u8>, m: &Memory) -> anyhow::Result<()> {
    let empty: Box<serde_json::value::RawValue> =
        serde_json::value::RawValue::from_string("{}".to_owned()).expect("{} is JSON");
    let parsed: Box<serde_json::value::RawValue>;
    let metadata = match serde_json::from_str::<&serde_json::value::RawValue>(&m.metadata_json) {
        Ok(raw) => raw,
        Err(_) => {
            parsed = empty;
            &parsed
        }
    };
    let line = ExportLine {
        id: m.id.to_string(),
        namespace: &m.namespace,
        content: &m.content,
        content_hash: hex(&m.content_hash),
        embedding: m.embedding.as_deref(),
        embedding_status: m.embedding_status.as_str(),
        embedding_error: match &m.embedding_status {
            EmbeddingStatus::Failed(reason) => Some(reason),
            _ => None,
        },
        embedding_model: m.embedding_model.as_deref(),
        tier: m.tier.as_str(),
        status: m.status.as_str(),
        importance_score: m.importance,
        access_count: m.access_count,
        last_accessed_at_us: m.last_accessed_at_us,
        metadata,
        tags: &m.tags,
        parent_id: m.parent_id.map(|p| p.to_string()),
        created_at_us: m.created_at_us,
        updated_at_us: m.updated_at_us,
        expires_at_us: m.expires_at_us,
        version: m.version,
        superseded_by: m.superseded_by.map(|p| p.to_string()),
        actor: m.actor.as_deref(),
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.push(b'\n');
    Ok(())
}

/// One line of an export as import reads it: the mirror of [`ExportLine`]. Fields added to
/// exports later are optional, so older exports import too.
#[derive(serde::Deserialize)]
struct ImportLine {
    id: String,
    namespace: String,
    content: String,
    content_hash: Option<String>,
    embedding: Option<Vec<f32>>,
    /// Absent in exports written before embedding status existed.
    embedding_status: Option<String>,
    embedding_error: Option<String>,
    embedding_model: Option<String>,
    tier: String,
    status: String,
    importance_score: f32,
    access_count: u64,
    last_accessed_at_us: Option<i64>,
    metadata: Box<serde_json::value::RawValue>,
    tags: Vec<String>,
    parent_id: Option<String>,
    created_at_us: i64,
    updated_at_us: i64,
    expires_at_us: Option<i64>,
    version: u64,
    #[serde(default)]
    superseded_by: Option<String>,
    #[serde(default)]
    actor: Option<String>,
}

fn parse_line(line: &str, n: usize) -> anyhow::Result<Memory> {
    let mut de = serde_json::Deserializer::from_str(line);
    let l: ImportLine = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        anyhow::anyhow!("line {n}: {path}: {}", e.into_inner())
    })?;
    // An export's vector was the client's when the export predates embedding status.
    let embedding_status = match l.embedding_status.as_deref() {
        None if l.embedding.is_some() => EmbeddingStatus::Ready,
        None | Some("none") => EmbeddingStatus::None,
        Some("pending") => EmbeddingStatus::Pending,
        Some("ready") => EmbeddingStatus::Ready,
        Some("failed") => EmbeddingStatus::Failed(l.embedding_error.unwrap_or_default()),
        Some(other) => bail!("line {n}: embedding_status: unknown value {other:?}"),
    };
    let content_hash = content_hash(&l.content);
    if l.content_hash.is_some_and(|h| h != hex(&content_hash)) {
        bail!("line {n}: content_hash does not match the content");
    }
    let parse_id = |field: &str, s: &str| {
        Uuid::parse_str(s).with_context(|| format!("line {n}: {field}: not a UUID: {s:?}"))
    };
    Ok(Memory {
        id: parse_id("id", &l.id)?,
        namespace: l.namespace,
        content: l.content,
        content_hash,
        embedding: l.embedding,
        embedding_status,
        embedding_model: l.embedding_model,
        tier: l
            .tier
            .parse::<Tier>()
            .with_context(|| format!("line {n}: tier"))?,
        status: l
            .status
            .parse::<Status>()
            .with_context(|| format!("line {n}: status"))?,
        importance: l.importance_score,
        access_count: l.access_count,
        last_accessed_at_us: l.last_accessed_at_us,
        metadata_json: l.metadata.get().to_owned(),
        tags: l.tags,
        parent_id: l.parent_id.map(|p| parse_id("parent_id", &p)).transpose()?,
        created_at_us: l.created_at_us,
        updated_at_us: l.updated_at_us,
        expires_at_us: l.expires_at_us,
        version: l.version,
        superseded_by: l
            .superseded_by
            .map(|p| parse_id("superseded_by", &p))
            .transpose()?,
        actor: l.actor,
        lsn: Lsn::ZERO,
    })
}

/// Memories handed from the reading thread to the formatting one at a time.
const EXPORT_CHUNK: usize = 512;

pub fn export(
    data_dir: &Path,
    out: &Path,
    namespace: Option<&str>,
    as_json: bool,
) -> anyhow::Result<()> {
    let engine = open_offline(data_dir, None)?;
    let started = Instant::now();
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut writer: Box<dyn Write + Send> = if out.extension().is_some_and(|e| e == "zst") {
        Box::new(zstd::Encoder::new(BufWriter::with_capacity(1 << 20, file), 3)?.auto_finish())
    } else {
        Box::new(BufWriter::with_capacity(1 << 20, file))
    };
    // A header line makes the file self-describing: import creates a new store with these
    // dimensions even when the first memories have no embedding.
    let header = json!({"engram_export": 1, "dimensions": engine.config().dimensions});
    writeln!(writer, "{header}")?;
    let bar = progress(as_json, "exported");
    let mut count = 0u64;
    // Three stages on their own threads, in order: this one reads and decodes, one formats
    // JSON (the costliest part: every float), one writes (and compresses). Chunks keep the
    // file in scan order.
    let io_err = |e: std::io::Error| EngineError::io(out, e);
    std::thread::scope(|s| -> anyhow::Result<()> {
        let (to_format, formatting) = std::sync::mpsc::sync_channel::<Vec<Memory>>(4);
        let (to_write, writing) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let formatter = s.spawn(move || -> anyhow::Result<()> {
            for chunk in formatting {
                let mut buf = Vec::with_capacity(chunk.len() * 2048);
                for m in &chunk {
                    write_memory_line(&mut buf, m)?;
                }
                if to_write.send(buf).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let writer_thread = s.spawn(move || -> std::io::Result<()> {
            for buf in writing {
                writer.write_all(&buf)?;
            }
            writer.flush()
        });
        let mut chunk = Vec::with_capacity(EXPORT_CHUNK);
        let scanned = engine.scan_all(namespace, |m| {
            chunk.push(m);
            count += 1;
            if chunk.len() == EXPORT_CHUNK {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(EXPORT_CHUNK));
                // A closed channel means a later stage failed: its error is reported below.
                to_format
                    .send(full)
                    .map_err(|_| io_err(std::io::Error::other("export pipeline stopped")))?;
                bar.set_position(count);
            }
            Ok(())
        });
        if !chunk.is_empty() {
            let _ = to_format.send(chunk);
        }
        drop(to_format);
        let formatted = formatter
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the formatting thread panicked")));
        let written = writer_thread
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the writing thread panicked")));
        formatted?;
        written.with_context(|| format!("writing {}", out.display()))?;
        scanned?;
        Ok(())
    })?;
    bar.finish_and_clear();
    engine.close()?;
    let secs = started.elapsed().as_secs_f64();
    let report = json!({"exported": count, "file": out.display().to_string(), "seconds": secs, "per_second": count as f64 / secs});
    if as_json {
        println!("{report}");
    } else {
        println!(
            "exported {count} memories to {} in {secs:.2} s ({:.0}/s)",
            out.display(),
            count as f64 / secs
        );
    }
    Ok(())
}

pub fn import(
    data_dir: &Path,
    input: &Path,
    dimensions: Option<usize>,
    as_json: bool,
) -> anyhow::Result<()> {
    let file = File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let reader: Box<dyn Read> = if input.extension().is_some_and(|e| e == "zst") {
        Box::new(zstd::Decoder::new(file)?)
    } else {
        Box::new(file)
    };
    let mut lines = BufReader::with_capacity(1 << 20, reader).lines();
    // The header line (from `engramctl export`) gives the dimensions a new store needs; without
    // one, the first memory with an embedding does.
    let mut pending: Vec<Memory> = Vec::with_capacity(IMPORT_BATCH);
    let mut n = 0usize;
    let mut first_dimensions = None;
    while first_dimensions.is_none() && pending.len() < IMPORT_BATCH {
        let Some(line) = lines.next() else { break };
        n += 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        if n == 1 && line.contains("\"engram_export\"") {
            let header: Value = serde_json::from_str(&line).context("line 1: bad export header")?;
            first_dimensions = header["dimensions"].as_u64().map(|d| d as usize);
            continue;
        }
        let m = parse_line(&line, n)?;
        first_dimensions = m.embedding.as_ref().map(Vec::len);
        pending.push(m);
    }
    let engine = open_offline(data_dir, dimensions.or(first_dimensions))?;
    let started = Instant::now();
    let bar = progress(as_json, "imported");
    let mut imported = 0u64;
    let mut failed = 0u64;
    let mut first_error: Option<String> = None;
    let mut flush = |batch: Vec<Memory>, engine: &Engine| -> anyhow::Result<()> {
        for r in engine.import_batch(batch) {
            match r {
                Ok(_) => imported += 1,
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                    if !as_json {
                        bar.suspend(|| eprintln!("engramctl: skipped a memory: {e}"));
                    }
                }
            }
        }
        bar.set_position(imported);
        Ok(())
    };
    for line in lines {
        n += 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        pending.push(parse_line(&line, n)?);
        if pending.len() >= IMPORT_BATCH {
            flush(std::mem::take(&mut pending), &engine)?;
        }
    }
    if !pending.is_empty() {
        flush(pending, &engine)?;
    }
    bar.finish_and_clear();
    engine.close()?;
    let secs = started.elapsed().as_secs_f64();
    let report = json!({"imported": imported, "skipped": failed, "seconds": secs, "per_second": imported as f64 / secs});
    if as_json {
        println!("{report}");
    } else {
        println!(
            "imported {imported} memories ({failed} skipped) in {secs:.2} s ({:.0}/s)",
            imported as f64 / secs
        );
    }
    if failed > 0 {
        bail!(
            "{failed} memories could not be imported (the first: {})",
            first_error.unwrap_or_default()
        );
    }
    Ok(())
}

//! `engramctl export` and `import`: every field of every memory and its kept past versions as
//! JSON lines (`engram_engine::transfer`, the format the daemon's namespace export and import
//! speak too), zstd-compressed when the file name ends in `.zst`. Times are integer
//! microseconds and vectors full f32, so a round trip is lossless.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use engram_engine::transfer::{self, Exported, Line};
use engram_engine::{DataDir, Engine, EngineConfig, EngineError};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

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

pub fn export(
    data_dir: &Path,
    out: &Path,
    namespace: Option<&str>,
    form: transfer::VectorForm,
    as_json: bool,
) -> anyhow::Result<()> {
    let engine = open_offline(data_dir, None)?;
    let started = Instant::now();
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let writer: Box<dyn Write + Send> = if out.extension().is_some_and(|e| e == "zst") {
        Box::new(zstd::Encoder::new(BufWriter::with_capacity(1 << 20, file), 3)?.auto_finish())
    } else {
        Box::new(BufWriter::with_capacity(1 << 20, file))
    };
    let bar = progress(as_json, "exported");
    let (writer, footer) = transfer::write_export(
        writer,
        engine.vector_dimensions()?,
        namespace,
        form,
        |put| {
            let mut n = 0u64;
            let mut counted = |e: Exported| {
                n += 1;
                if n.is_multiple_of(512) {
                    bar.set_position(n);
                }
                put(e)
            };
            match namespace {
                // One namespace: read through its index, not by a walk of the whole store.
                Some(ns) => engine.export_namespace(ns, counted).map(|_| ()),
                None => engine
                    .scan_all(None, |memory| {
                        let versions = engine.past_versions(&memory)?;
                        counted(Exported { memory, versions })
                    })
                    .map(|_| ()),
            }
        },
    )
    .with_context(|| format!("writing {}", out.display()))?;
    // Dropping the encoder writes the end of the zstd frame.
    drop(writer);
    bar.finish_and_clear();
    engine.close()?;
    let secs = started.elapsed().as_secs_f64();
    let (count, versions) = (footer.memories, footer.versions);
    let report = json!({"exported": count, "versions": versions, "file": out.display().to_string(), "seconds": secs, "per_second": count as f64 / secs});
    if as_json {
        println!("{report}");
    } else {
        println!(
            "exported {count} memories ({versions} past versions) to {} in {secs:.2} s ({:.0}/s)",
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
    // The header line gives the dimensions a new store needs; without one, the first memory
    // with an embedding does.
    let mut pending: Vec<Exported> = Vec::with_capacity(IMPORT_BATCH);
    let mut n = 0usize;
    let mut first_dimensions = None;
    let mut footer = None;
    let mut read = 0u64;
    while first_dimensions.is_none() && pending.len() < IMPORT_BATCH {
        let Some(line) = lines.next() else { break };
        n += 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match transfer::parse_line(&line, n)? {
            Line::Header(h) => first_dimensions = Some(h.dimensions),
            Line::Footer(f) => footer = Some(f),
            Line::Memory(e) => {
                first_dimensions = e.memory.embedding.as_ref().map(Vec::len);
                read += 1;
                pending.push(*e);
            }
        }
    }
    let engine = open_offline(data_dir, dimensions.or(first_dimensions))?;
    let started = Instant::now();
    let bar = progress(as_json, "imported");
    let mut imported = 0u64;
    let mut failed = 0u64;
    let mut first_error: Option<String> = None;
    let mut flush = |batch: Vec<Exported>, engine: &Engine| {
        for r in engine.import_batch(batch, false) {
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
    };
    for line in lines {
        n += 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match transfer::parse_line(&line, n)? {
            Line::Header(_) => bail!("line {n}: a second export header"),
            Line::Footer(f) => footer = Some(f),
            Line::Memory(e) => {
                if footer.is_some() {
                    bail!("line {n}: a memory after the export's last line");
                }
                read += 1;
                pending.push(*e);
                if pending.len() >= IMPORT_BATCH {
                    flush(std::mem::take(&mut pending), &engine);
                }
            }
        }
    }
    if !pending.is_empty() {
        flush(pending, &engine);
    }
    bar.finish_and_clear();
    engine.close()?;
    let secs = started.elapsed().as_secs_f64();
    let complete = footer.map(|f| f.memories == read);
    let report = json!({"imported": imported, "skipped": failed, "complete": complete, "seconds": secs, "per_second": imported as f64 / secs});
    if as_json {
        println!("{report}");
    } else {
        println!(
            "imported {imported} memories ({failed} skipped) in {secs:.2} s ({:.0}/s)",
            imported as f64 / secs
        );
    }
    match footer {
        Some(f) if f.memories != read => bail!(
            "the export says it holds {} memories, the file {read}: it is damaged",
            f.memories
        ),
        // Exports written before the footer existed end without one.
        _ => {}
    }
    if failed > 0 {
        bail!(
            "{failed} memories could not be imported (the first: {})",
            first_error.unwrap_or_default()
        );
    }
    Ok(())
}

/// A directory removed when dropped (the scratch restore of `restore --namespace`).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How `engramctl restore --namespace NS --into URL` runs.
#[derive(Debug)]
pub struct NamespaceRestore<'a> {
    pub backup: &'a Path,
    pub namespace: &'a str,
    pub url: &'a str,
    pub api_key: Option<&'a str>,
    pub to_time: Option<&'a str>,
    pub to_lsn: Option<engram_wal::Lsn>,
    /// Where the backup is restored first (default: a scratch directory, removed after).
    pub target_dir: Option<&'a Path>,
    pub on_conflict: &'a str,
    pub as_json: bool,
}

/// One namespace of a backup, at a moment, into a running daemon: the backup is restored into
/// a scratch directory, the namespace exported from it (every version), and the export posted
/// to the daemon's namespace import.
pub fn restore_namespace(r: &NamespaceRestore<'_>) -> anyhow::Result<()> {
    let (target, _scratch) = match r.target_dir {
        Some(t) => (t.to_path_buf(), None),
        None => {
            let t = std::env::temp_dir().join(format!(
                "engramctl-restore-{}-{}",
                std::process::id(),
                rand::random::<u64>()
            ));
            (t.clone(), Some(Scratch(t)))
        }
    };
    let restored =
        crate::backup::restore_quietly(r.backup, &target, r.to_time, r.to_lsn, r.as_json)?;
    let engine = open_offline(&target, None)?;
    let bar = progress(r.as_json, "exported");
    let encoder = zstd::Encoder::new(Vec::new(), 3)?;
    let (encoder, footer) = transfer::write_export(
        encoder,
        engine.config().dimensions,
        Some(r.namespace),
        // The daemon it goes to reads base64 vectors, and they are half the bytes to post.
        transfer::VectorForm::Base64,
        |put| {
            let mut n = 0u64;
            engine.export_namespace(r.namespace, |e| {
                n += 1;
                if n.is_multiple_of(512) {
                    bar.set_position(n);
                }
                put(e)
            })?;
            Ok(())
        },
    )?;
    let body = encoder.finish()?;
    bar.finish_and_clear();
    engine.close()?;
    if footer.memories == 0 {
        bail!(
            "namespace {:?} holds no memory at LSN {} of {}: nothing to import",
            r.namespace,
            restored["restored_lsn"],
            r.backup.display()
        );
    }
    let mut client =
        engram_client::Client::new(r.url)?.with_timeout(std::time::Duration::from_secs(24 * 3600));
    if let Some(k) = r.api_key {
        client = client.with_api_key(k);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let imported = runtime
        .block_on(client.import_namespace(r.namespace, body, true, r.on_conflict))
        .map_err(|e| match e {
            engram_client::Error::Transport(t) => anyhow::anyhow!("cannot reach {}: {t}", r.url),
            e => anyhow::anyhow!("the daemon answered {e}"),
        })?;
    let out = json!({"restored": restored, "exported": footer.memories,
                     "exported_versions": footer.versions, "import": imported});
    if r.as_json {
        println!("{out}");
    } else {
        println!(
            "namespace {:?} at LSN {}: {} memories ({} past versions) into {}: {} imported, {} replaced, {} skipped",
            r.namespace,
            restored["restored_lsn"],
            footer.memories,
            footer.versions,
            r.url,
            imported["imported"],
            imported["replaced"],
            imported["skipped"]
        );
    }
    if imported["complete"] != json!(true) {
        bail!("the daemon did not read the whole export: {imported}");
    }
    Ok(())
}

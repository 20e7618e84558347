//! `engramctl`: Engram's offline tool: backups (incremental, from a stopped store or a running
//! daemon's fresh snapshot), verification, point-in-time restore, and WAL inspection; and
//! `engramctl mcp`, the stdio bridge from MCP clients to a running daemon.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use engram_engine::{decode_op, hex, Op, PutKind};
use engram_wal::segment::{self, ScanEnd};
use engram_wal::Lsn;
use serde_json::json;

mod backup;
mod mcp;
mod trace;
mod transfer;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(name = "engramctl", version, about = "Engram's offline tool")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Copy the newest snapshot and every WAL segment into a backup directory; files already
    /// there are not copied again.
    Backup {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Ask the daemon serving DATA_DIR at this URL for a fresh snapshot first. Without it
        /// the daemon must be stopped, and a snapshot is taken offline.
        #[arg(long)]
        url: Option<String>,
        /// API key for --url (also ENGRAM_API_KEY).
        #[arg(long, env = "ENGRAM_API_KEY")]
        api_key: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Check every checksum in a backup, each snapshot's manifest and the WAL's continuity.
    Verify {
        backup: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Build a data directory from a backup, at its newest state or at a moment. BACKUP may
    /// also be a stopped daemon's data directory: its kept snapshots and archived WAL.
    ///
    /// With --namespace NS --into URL: one namespace of the backup, at that moment, into the
    /// daemon running at URL (restored into a scratch directory, exported with every version,
    /// and imported over HTTP into NS).
    Restore {
        backup: PathBuf,
        /// Where the data directory is built (with --into: optional, a scratch directory
        /// removed afterwards by default).
        #[arg(long, required_unless_present = "into")]
        target_dir: Option<PathBuf>,
        /// Only this namespace, into the daemon at --into.
        #[arg(long, requires = "into")]
        namespace: Option<String>,
        /// The running daemon to import the namespace into.
        #[arg(long, requires = "namespace")]
        into: Option<String>,
        /// API key for --into (also ENGRAM_API_KEY).
        #[arg(long, env = "ENGRAM_API_KEY")]
        api_key: Option<String>,
        /// What the import does with memories the daemon holds already: skip, replace or fail.
        #[arg(long, default_value = "skip", value_parser = ["skip", "replace", "fail"])]
        on_conflict: String,
        /// Restore the state after the last write committed at or before this RFC 3339 time.
        #[arg(long, conflicts_with = "to_lsn")]
        to_time: Option<String>,
        /// Restore the state after WAL record N.
        #[arg(long)]
        to_lsn: Option<Lsn>,
        #[arg(long)]
        json: bool,
    },
    /// Check a stopped store: every checksum (WAL, working-tier slots and heap), every memory's
    /// fields, and records against indexes against tiers. Lists every problem; non-zero exit.
    ///
    /// With --find-namespace NS: instead, look for the namespace in every byte of the store
    /// (RocksDB and cold segments read through their formats, every other file raw): the proof
    /// of a purge. Non-zero exit if the live data holds it; snapshots and archived WAL
    /// segments that hold it are listed.
    Check {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        find_namespace: Option<String>,
        /// A string the namespace held (e.g. a text), looked for too (repeatable).
        #[arg(long, requires = "find_namespace")]
        find: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// After a namespace purge: give up the restorable past that still holds it. Takes a
    /// snapshot, deletes every older one and the archived WAL only they needed (their records
    /// cannot be cut out in place), then runs the proof again. The daemon must be stopped;
    /// backups copied elsewhere are not touched.
    Scrub {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        namespace: String,
        /// A string the namespace held, looked for too (repeatable).
        #[arg(long)]
        find: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Write every memory (every field, vectors included) as JSON lines; `.zst` compresses.
    Export {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        namespace: Option<String>,
        /// How vectors are written: `float` (an array, any build reads it) or `base64`
        /// (`embedding_b64`: smaller and faster both ways; read by builds from 2026-12 on).
        #[arg(long, default_value = "float", value_parser = ["float", "base64"])]
        embedding_format: String,
        #[arg(long)]
        json: bool,
    },
    /// Load an export into a stopped store (created if absent), keeping ids, versions and times.
    Import {
        #[arg(long)]
        data_dir: PathBuf,
        input: PathBuf,
        /// Embedding dimensions for a new store (default: from the export).
        #[arg(long)]
        dimensions: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Write-ahead log tools.
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
    /// Cold segment tools.
    Segment {
        #[command(subcommand)]
        command: SegmentCommand,
    },
    /// Speak MCP on stdin/stdout, forwarding every message to a running engramd's /mcp
    /// endpoint: for MCP clients that start a command rather than open a URL.
    Mcp {
        /// The daemon, e.g. http://127.0.0.1:3333.
        #[arg(long, env = "ENGRAM_URL", default_value = "http://127.0.0.1:3333")]
        url: String,
        /// API key (also ENGRAM_API_KEY).
        #[arg(long, env = "ENGRAM_API_KEY")]
        api_key: Option<String>,
        /// Namespace for remember, recall and list_memories calls that name none.
        #[arg(long, env = "ENGRAM_NAMESPACE")]
        namespace: Option<String>,
    },
    /// API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Print a new random API key and the `[[auth.keys]]` entry (its SHA-256, not the key) to
    /// paste into engramd's configuration file.
    New {
        /// Names the key in logs and errors.
        #[arg(long)]
        name: String,
        /// read (get, list, search), write (plus create, update, delete) or admin (plus purge,
        /// snapshots, migrate, compact).
        #[arg(long, default_value = "write")]
        role: String,
        /// Limit the key to these namespaces (repeatable); none: every namespace.
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum SegmentCommand {
    /// A cold segment's header, every block (offset, sizes, records, checksum) and id range;
    /// exits non-zero if any block or the quantized vectors are damaged, naming them.
    Inspect {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum WalCommand {
    /// Segments with their LSN and commit-time ranges, and where each one ends.
    Inspect {
        #[arg(long)]
        data_dir: PathBuf,
        /// Read the archive (closed segments kept for point-in-time restore) instead.
        #[arg(long)]
        archive: bool,
        #[arg(long)]
        json: bool,
    },
    /// Every record: LSN, commit time, operation.
    Dump {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        archive: bool,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`engramctl wal dump | head`): not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("engramctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Backup {
            data_dir,
            out,
            url,
            api_key,
            json,
        } => backup::backup(&data_dir, &out, url.as_deref(), api_key.as_deref(), json),
        Command::Verify { backup, json } => backup::verify(&backup, json),
        Command::Mcp {
            url,
            api_key,
            namespace,
        } => mcp::serve_stdio(&url, api_key, namespace),
        Command::Key {
            command:
                KeyCommand::New {
                    name,
                    role,
                    namespaces,
                    json,
                },
        } => new_key(&name, &role, &namespaces, json),
        Command::Check {
            data_dir,
            find_namespace: Some(ns),
            find,
            json,
        } => trace::find_namespace(&data_dir, &ns, &find, json),
        Command::Check { data_dir, json, .. } => check(&data_dir, json),
        Command::Scrub {
            data_dir,
            namespace,
            find,
            json,
        } => trace::scrub(&data_dir, &namespace, &find, json),
        Command::Export {
            data_dir,
            out,
            namespace,
            embedding_format,
            json,
        } => {
            let form = if embedding_format == "base64" {
                engram_engine::transfer::VectorForm::Base64
            } else {
                engram_engine::transfer::VectorForm::Float
            };
            transfer::export(&data_dir, &out, namespace.as_deref(), form, json)
        }
        Command::Import {
            data_dir,
            input,
            dimensions,
            json,
        } => transfer::import(&data_dir, &input, dimensions, json),
        Command::Restore {
            backup,
            target_dir,
            namespace,
            into,
            api_key,
            on_conflict,
            to_time,
            to_lsn,
            json,
        } => match (namespace, into, target_dir) {
            (Some(namespace), Some(url), target_dir) => {
                transfer::restore_namespace(&transfer::NamespaceRestore {
                    backup: &backup,
                    namespace: &namespace,
                    url: &url,
                    api_key: api_key.as_deref(),
                    to_time: to_time.as_deref(),
                    to_lsn,
                    target_dir: target_dir.as_deref(),
                    on_conflict: &on_conflict,
                    as_json: json,
                })
            }
            (_, _, Some(target_dir)) => {
                backup::restore(&backup, &target_dir, to_time.as_deref(), to_lsn, json)
            }
            _ => anyhow::bail!("restore needs --target-dir, or --namespace with --into"),
        },
        Command::Segment {
            command: SegmentCommand::Inspect { file, json },
        } => segment_inspect(&file, json),
        Command::Wal { command } => match command {
            WalCommand::Inspect {
                data_dir,
                archive,
                json,
            } => inspect(&wal_dir(&data_dir, archive)?, &data_dir, json),
            WalCommand::Dump {
                data_dir,
                archive,
                json,
            } => dump(&wal_dir(&data_dir, archive)?, json),
        },
    }
}

fn segment_inspect(file: &Path, json: bool) -> anyhow::Result<()> {
    let seg = engram_engine::cold::Segment::open(file)?;
    let info = seg.info().clone();
    let (blocks, quant_problem) = seg.inspect()?;
    let first = seg.ids().next();
    let last = seg.ids().last();
    let problems: Vec<String> = blocks
        .iter()
        .filter_map(|b| b.problem.clone())
        .chain(quant_problem.clone())
        .collect();
    if json {
        let out = serde_json::json!({
            "file": file.display().to_string(),
            "segment_id": info.segment_id,
            "dimensions": info.dimensions,
            "memories": info.memories,
            "bytes": info.bytes,
            "raw_bytes": info.raw_bytes,
            "first_id": first.map(|i| i.to_string()),
            "last_id": last.map(|i| i.to_string()),
            "blocks": blocks.iter().map(|b| serde_json::json!({
                "index": b.index, "offset": b.offset, "compressed_bytes": b.compressed_bytes,
                "raw_bytes": b.raw_bytes, "records": b.records, "ok": b.problem.is_none(),
                "problem": b.problem,
            })).collect::<Vec<_>>(),
            "quantized_vectors_ok": quant_problem.is_none(),
            "ok": problems.is_empty(),
        });
        println!("{out}");
    } else {
        println!(
            "{}: segment {} — {} memories, {}-d, {} blocks, {} bytes ({} uncompressed, {:.2}×)",
            file.display(),
            info.segment_id,
            info.memories,
            info.dimensions,
            info.blocks,
            info.bytes,
            info.raw_bytes,
            info.raw_bytes as f64 / info.bytes.max(1) as f64
        );
        if let (Some(a), Some(b)) = (first, last) {
            println!("ids {a} .. {b}");
        }
        for b in &blocks {
            println!(
                "block {:>5} @ {:>10}: {:>7} → {:>7} bytes, {:>5} records  {}",
                b.index,
                b.offset,
                b.raw_bytes,
                b.compressed_bytes,
                b.records,
                b.problem.as_deref().unwrap_or("ok")
            );
        }
        if let Some(p) = &quant_problem {
            println!("{p}");
        }
    }
    if !problems.is_empty() {
        bail!(
            "{} problem(s) in {}: {}",
            problems.len(),
            file.display(),
            problems.join("; ")
        );
    }
    Ok(())
}

fn wal_dir(data_dir: &Path, archive: bool) -> anyhow::Result<PathBuf> {
    if !data_dir.is_dir() {
        bail!("{} is not a directory", data_dir.display());
    }
    let layout = engram_engine::DataDir::new(data_dir);
    let dir = if archive {
        layout.archive()
    } else {
        layout.wal()
    };
    if !dir.is_dir() {
        bail!(
            "{} has no {} directory: is it an Engram data directory?",
            data_dir.display(),
            dir.file_name().and_then(|n| n.to_str()).unwrap_or("wal")
        );
    }
    Ok(dir)
}

/// What one segment holds.
struct SegmentSummary {
    records: u64,
    /// First and last LSN.
    lsns: Option<(Lsn, Lsn)>,
    /// First and last commit time, microseconds since the epoch.
    times: Option<(i64, i64)>,
    end: ScanEnd,
}

/// A new key: 32 random bytes as 64 hex digits after `egk_`, and its configuration entry.
fn new_key(name: &str, role: &str, namespaces: &[String], as_json: bool) -> anyhow::Result<()> {
    use rand::RngCore;
    use sha2::Digest;
    if !matches!(role, "read" | "write" | "admin") {
        anyhow::bail!("--role must be read, write or admin, got {role:?}");
    }
    if name.is_empty() || name.contains(['"', '\\', '\n']) {
        anyhow::bail!("--name must be a non-empty name without quotes, backslashes or newlines");
    }
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let key = format!("egk_{}", hex(&secret));
    let digest = hex(&sha2::Sha256::digest(key.as_bytes()));
    let namespaces_toml = if namespaces.is_empty() {
        String::new()
    } else {
        format!(
            "namespaces = [{}]\n",
            namespaces
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let entry = format!(
        "[[auth.keys]]\nname = {name:?}\nrole = \"{role}\"\n{namespaces_toml}sha256 = \"{digest}\"\n"
    );
    if as_json {
        println!(
            "{}",
            json!({"key": key, "name": name, "role": role, "namespaces": namespaces, "sha256": digest, "config": entry})
        );
    } else {
        println!(
            "key (shown once; give it to the client, keep it out of the configuration):\n  {key}\n"
        );
        println!("add to engramd's configuration file:\n\n{entry}");
    }
    Ok(())
}

/// Scans one segment, calling `visit` for each record with its offset.
fn scan_segment(
    index: u64,
    path: &Path,
    mut visit: impl FnMut(engram_wal::RecordRef<'_>, u64),
) -> anyhow::Result<SegmentSummary> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    segment::check_header(&bytes, index).map_err(|r| anyhow::anyhow!("{}: {r}", path.display()))?;
    let mut count = 0;
    let mut lsns: Option<(Lsn, Lsn)> = None;
    let mut times: Option<(i64, i64)> = None;
    let mut expected = None;
    let end = segment::scan(&bytes, &mut expected, |r, off| {
        count += 1;
        lsns = Some(lsns.map_or((r.lsn, r.lsn), |(a, _)| (a, r.lsn)));
        times = Some(
            times.map_or((r.commit_time_us, r.commit_time_us), |(a, _)| {
                (a, r.commit_time_us)
            }),
        );
        visit(r, off);
        Ok::<(), ()>(())
    })
    .map_err(|()| anyhow::anyhow!("scan failed"))?;
    Ok(SegmentSummary {
        records: count,
        lsns,
        times,
        end,
    })
}

fn inspect(dir: &Path, data_dir: &Path, as_json: bool) -> anyhow::Result<()> {
    let segments =
        segment::list_segments(dir).with_context(|| format!("listing {}", dir.display()))?;
    let mut rows = Vec::new();
    for (index, path) in &segments {
        let SegmentSummary {
            records: count,
            lsns,
            times,
            end,
        } = scan_segment(*index, path, |_, _| {})?;
        let (end_offset, problem) = match end {
            ScanEnd::Clean { end_offset } => (end_offset, None),
            ScanEnd::Bad { offset, reason } => (
                offset,
                Some(format!("bad record at offset {offset}: {reason}")),
            ),
        };
        rows.push(json!({
            "segment": path.file_name().and_then(|n| n.to_str()),
            "records": count,
            "first_lsn": lsns.map(|l| l.0),
            "last_lsn": lsns.map(|l| l.1),
            "first_commit_time_us": times.map(|t| t.0),
            "last_commit_time_us": times.map(|t| t.1),
            "end_offset": end_offset,
            "problem": problem,
        }));
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<24} {:>9} {:>12} {:>12} {:>12}  problem",
        "segment", "records", "first_lsn", "last_lsn", "end_offset"
    );
    for r in &rows {
        println!(
            "{:<24} {:>9} {:>12} {:>12} {:>12}  {}",
            r["segment"].as_str().unwrap_or("?"),
            r["records"],
            r["first_lsn"],
            r["last_lsn"],
            r["end_offset"],
            r["problem"].as_str().unwrap_or("")
        );
    }
    println!("{}", restorable_window(data_dir)?);
    Ok(())
}

/// The moments `engramctl restore DATA_DIR` can reach: from the oldest kept snapshot (the
/// archive keeps the WAL since it) to the newest record in the archive and the log.
fn restorable_window(data_dir: &Path) -> anyhow::Result<String> {
    let layout = engram_engine::DataDir::new(data_dir);
    let snapshots = engram_engine::snapshot::list_snapshots(&layout.snapshots())?;
    let Some((_, oldest)) = snapshots.first() else {
        return Ok(
            "restorable window: none (no snapshot is kept; take one to start it)".to_owned(),
        );
    };
    let (archive, wal) = (layout.archive(), layout.wal());
    let newest = engram_wal::export::summarize(&[&archive, &wal])?
        .iter()
        .filter_map(|s| s.times.map(|t| t.1))
        .max()
        .unwrap_or(oldest.commit_time_us)
        .max(oldest.commit_time_us);
    Ok(format!(
        "restorable window: {} (snapshot {}) to {} — engramctl restore {} --to-time T",
        backup::format_time(oldest.commit_time_us),
        oldest.id,
        backup::format_time(newest),
        data_dir.display()
    ))
}

fn describe(op: &Op) -> serde_json::Value {
    match op {
        Op::Put {
            kind,
            memory,
            previous_tier,
            ..
        } => json!({
            "op": match kind { PutKind::Create => "create", PutKind::Update => "update", PutKind::Move => "move", PutKind::Embed => "embed" },
            "id": memory.id.to_string(),
            "namespace": memory.namespace,
            "tier": memory.tier.as_str(),
            "previous_tier": previous_tier.map(|t| t.as_str()),
            "status": memory.status.as_str(),
            "version": memory.version,
            "content_hash": hex(&memory.content_hash),
            "content_bytes": memory.content.len(),
        }),
        Op::Purge {
            id,
            namespace,
            previous_tier,
            ..
        } => json!({
            "op": "purge", "id": id.to_string(), "namespace": namespace, "previous_tier": previous_tier.as_str(),
        }),
        Op::Access(deltas) => json!({ "op": "access", "memories": deltas.len() }),
        Op::ColdSeal { segment, memories } => json!({
            "op": "cold_seal", "segment": segment.0, "memories": memories.len(),
            "ids": memories.iter().map(|(m, _)| m.id.to_string()).collect::<Vec<_>>(),
        }),
        Op::ColdCompact {
            segment,
            sources,
            kept,
        } => json!({
            // `segment` is null when the compaction kept nothing.
            "op": "cold_compact", "segment": segment.map(|s| s.0),
            "sources": sources.iter().map(|s| s.0).collect::<Vec<_>>(), "kept": kept.len(),
        }),
        Op::SpaceVector {
            space, id, vector, ..
        } => json!({
            "op": "space_vector", "space": space, "id": id.to_string(), "dimensions": vector.len(),
        }),
        Op::DropOwnVectors { space, model } => {
            json!({ "op": "drop_own_vectors", "space": space, "model": model })
        }
    }
}

fn dump(dir: &Path, as_json: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (index, path) in segment::list_segments(dir)? {
        let mut failure = None;
        let mut write_error: Option<std::io::Error> = None;
        let summary = scan_segment(index, &path, |r, offset| {
            let op = match decode_op(r.payload, r.lsn) {
                Ok(op) => describe(&op),
                Err(e) => {
                    failure.get_or_insert_with(|| format!("LSN {}: {e}", r.lsn));
                    json!({ "op": "undecodable", "error": e.to_string() })
                }
            };
            let line = json!({ "lsn": r.lsn, "commit_time_us": r.commit_time_us, "segment": index, "offset": offset, "record": op });
            if write_error.is_some() {
                return;
            }
            let written = if as_json {
                writeln!(out, "{line}")
            } else {
                writeln!(
                    out,
                    "{:>10} {:>18} {}",
                    r.lsn, r.commit_time_us, line["record"]
                )
            };
            if let Err(e) = written {
                write_error = Some(e);
            }
        })?;
        if let Some(e) = write_error {
            return Err(e.into());
        }
        if let ScanEnd::Bad { offset, reason } = summary.end {
            eprintln!(
                "engramctl: {}: stops at offset {offset}: {reason}",
                path.display()
            );
        }
        if let Some(f) = failure {
            bail!("{}: {f}", path.display());
        }
    }
    out.flush()?;
    Ok(())
}

fn check(data_dir: &Path, as_json: bool) -> anyhow::Result<()> {
    if !data_dir.is_dir() {
        bail!("{} is not a directory", data_dir.display());
    }
    let mut problems = Vec::new();
    // Every WAL segment, archived ones included: checksums and continuity.
    let layout = engram_engine::DataDir::new(data_dir);
    let (wal, archive) = (layout.wal(), layout.archive());
    let mut previous: Option<Lsn> = None;
    for info in engram_wal::export::summarize(&[&archive, &wal])? {
        if let Some((offset, reason)) = &info.problem {
            problems.push(format!(
                "{}: bad record at offset {offset}: {reason}",
                info.path.display()
            ));
        }
        if let (Some(prev), Some((first, _))) = (previous, info.lsns) {
            if first != prev.next() {
                problems.push(format!(
                    "{}: starts at LSN {first}, the segment before ended at {prev}",
                    info.path.display()
                ));
            }
        }
        if let Some((_, last)) = info.lsns {
            previous = Some(last);
        }
    }
    // Opening checks slot and heap checksums and replays the WAL; then records ↔ indexes.
    match transfer::open_offline(data_dir, None) {
        Ok(engine) => {
            problems.extend(engine.check()?);
            let stats = engine.stats();
            engine.close()?;
            if as_json {
                println!(
                    "{}",
                    json!({"data_dir": data_dir.display().to_string(), "ok": problems.is_empty(), "problems": problems, "working": stats.working, "warm": stats.warm})
                );
            } else if problems.is_empty() {
                println!(
                    "{}: consistent ({} working, {} warm)",
                    data_dir.display(),
                    stats.working,
                    stats.warm
                );
            }
        }
        Err(e) => problems.push(format!("{e:#}")),
    }
    if !as_json {
        for p in &problems {
            eprintln!("{p}");
        }
    }
    if !problems.is_empty() {
        bail!("{} problem(s) in {}", problems.len(), data_dir.display());
    }
    Ok(())
}

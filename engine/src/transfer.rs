//! The export format, shared by `engramctl export`/`import` (offline) and
//! `GET /api/v1/namespaces/{ns}/export` / `POST …/import` (online): one JSON object per line.
//!
//! - the header, first: `{"engram_export":1,"dimensions":384,"namespace":"agent-7"}` (the
//!   namespace only when one was exported), so an import into a new store knows its dimensions
//!   even when the first memories have no vector;
//! - one line per memory, every field: times as integer microseconds, vectors as full f32
//!   (`embedding`, shortest round-trip form; or `embedding_b64`, base64 of the little-endian
//!   floats, when the export was asked for [`VectorForm::Base64`]), metadata as its stored
//!   JSON text, and `versions`, the kept past versions oldest first, each with the same fields
//!   (absent when there are none);
//! - the footer, last: `{"engram_export_end":true,"memories":N,"versions":V}`. A stream cut short
//!   has none; an import reports whether it saw one that agrees with what it read.
//!
//! A round trip is lossless: import rebuilds every kept version exactly.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::model::{content_hash, hex, EmbeddingStatus, Memory, Status, Tier};
use crate::EngineError;

/// The header's `engram_export` of an export with float vectors (every build reads it).
pub const FORMAT: u64 = 1;
/// The header's `engram_export` of an export with base64 vectors: a build that predates
/// `embedding_b64` refuses the file rather than importing it without its vectors.
pub const FORMAT_BASE64: u64 = 2;

/// How an export writes vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VectorForm {
    /// `embedding`: an array of floats, readable by any JSON tool.
    #[default]
    Float,
    /// `embedding_b64`: base64 of the little-endian f32s; about half the bytes, and far less
    /// work to write and to read (384 floats a memory were most of an export's formatting).
    Base64,
}

impl VectorForm {
    fn format(self) -> u64 {
        match self {
            VectorForm::Float => FORMAT,
            VectorForm::Base64 => FORMAT_BASE64,
        }
    }
}

/// The first line of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub engram_export: u64,
    pub dimensions: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The last line of a complete export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footer {
    pub engram_export_end: bool,
    /// Memory lines written.
    pub memories: u64,
    /// Past versions written inside them.
    #[serde(default)]
    pub versions: u64,
}

/// An exported memory: the memory as it is, and its kept past versions, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    pub memory: Memory,
    pub versions: Vec<Memory>,
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Header(Header),
    Memory(Box<Exported>),
    Footer(Footer),
}

/// A line that is not a valid export line: its number (1-based), the field (a JSON path like
/// `versions[2].status`; empty for the line as a whole) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {}{message}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct LineError {
    pub line: usize,
    pub field: String,
    pub message: String,
}

/// One memory line (or one version inside it), serialized straight from the engine's fields.
#[derive(Serialize)]
struct ExportLine<'a> {
    id: String,
    namespace: &'a str,
    content: &'a str,
    content_hash: String,
    /// `Some(None)` is a `null`: float exports always name the field.
    #[serde(skip_serializing_if = "Option::is_none")]
    embedding: Option<Option<&'a [f32]>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    embedding_b64: Option<String>,
    embedding_status: &'static str,
    embedding_error: Option<&'a str>,
    embedding_model: Option<&'a str>,
    tier: &'static str,
    status: &'static str,
    importance_score: f32,
    access_count: u64,
    last_accessed_at_us: Option<i64>,
    metadata: &'a RawValue,
    tags: &'a [String],
    parent_id: Option<String>,
    created_at_us: i64,
    updated_at_us: i64,
    expires_at_us: Option<i64>,
    version: u64,
    superseded_by: Option<String>,
    actor: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    versions: Vec<ExportLine<'a>>,
}

/// Stored metadata is always a JSON object; should it ever not parse, `{}` stands in.
fn raw_metadata(json: &str) -> &RawValue {
    serde_json::from_str::<&RawValue>(json)
        .unwrap_or_else(|_| serde_json::from_str::<&RawValue>("{}").expect("{} is JSON"))
}

/// Base64 of the little-endian bytes of `v` (`embedding_b64`, here and on the HTTP API).
pub fn vector_base64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    STANDARD.encode(bytes)
}

fn export_line<'a>(
    m: &'a Memory,
    form: VectorForm,
    versions: Vec<ExportLine<'a>>,
) -> ExportLine<'a> {
    let (embedding, embedding_b64) = match form {
        VectorForm::Float => (Some(m.embedding.as_deref()), None),
        VectorForm::Base64 => (None, m.embedding.as_deref().map(vector_base64)),
    };
    ExportLine {
        id: m.id.to_string(),
        namespace: &m.namespace,
        content: &m.content,
        content_hash: hex(&m.content_hash),
        embedding,
        embedding_b64,
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
        metadata: raw_metadata(&m.metadata_json),
        tags: &m.tags,
        parent_id: m.parent_id.map(|p| p.to_string()),
        created_at_us: m.created_at_us,
        updated_at_us: m.updated_at_us,
        expires_at_us: m.expires_at_us,
        version: m.version,
        superseded_by: m.superseded_by.map(|p| p.to_string()),
        actor: m.actor.as_deref(),
        versions,
    }
}

fn push_json(out: &mut Vec<u8>, value: &impl Serialize) {
    serde_json::to_writer(&mut *out, value).expect("export lines always serialize");
    out.push(b'\n');
}

/// Appends the header line.
pub fn write_header(
    out: &mut Vec<u8>,
    dimensions: usize,
    namespace: Option<&str>,
    form: VectorForm,
) {
    push_json(
        out,
        &Header {
            engram_export: form.format(),
            dimensions,
            namespace: namespace.map(str::to_owned),
        },
    );
}

/// Appends one memory's line, with its past versions (oldest first).
pub fn write_memory(out: &mut Vec<u8>, memory: &Memory, versions: &[Memory], form: VectorForm) {
    let past = versions
        .iter()
        .map(|v| export_line(v, form, Vec::new()))
        .collect();
    push_json(out, &export_line(memory, form, past));
}

/// Appends the footer line.
pub fn write_footer(out: &mut Vec<u8>, memories: u64, versions: u64) {
    push_json(
        out,
        &Footer {
            engram_export_end: true,
            memories,
            versions,
        },
    );
}

/// Memories handed from the reading thread to the formatting one at a time.
const FORMAT_CHUNK: usize = 512;

/// Writes a whole export to `out`: the header, every memory `read` hands to its callback, the
/// footer. Reading and formatting overlap: `read` runs on the calling thread, and the JSON
/// (every float: the costly part) is written to `out` on a thread of its own, chunk by chunk
/// in the order read. Returns `out` (flushed) and the footer written.
pub fn write_export<W: std::io::Write + Send>(
    out: W,
    dimensions: usize,
    namespace: Option<&str>,
    form: VectorForm,
    read: impl FnOnce(&mut dyn FnMut(Exported) -> Result<(), EngineError>) -> Result<(), EngineError>,
) -> Result<(W, Footer), EngineError> {
    let io = |e: std::io::Error| EngineError::io(std::path::Path::new("<export stream>"), e);
    let mut footer = Footer {
        engram_export_end: true,
        memories: 0,
        versions: 0,
    };
    let out = std::thread::scope(|s| -> Result<W, EngineError> {
        let (to_format, formatting) = std::sync::mpsc::sync_channel::<Vec<Exported>>(4);
        let formatter = s.spawn(move || -> std::io::Result<W> {
            let mut out = out;
            let mut buf = Vec::with_capacity(1 << 20);
            write_header(&mut buf, dimensions, namespace, form);
            for chunk in formatting {
                for e in &chunk {
                    write_memory(&mut buf, &e.memory, &e.versions, form);
                }
                out.write_all(&buf)?;
                buf.clear();
            }
            out.write_all(&buf)?;
            Ok(out)
        });
        let mut chunk = Vec::with_capacity(FORMAT_CHUNK);
        let read_all = read(&mut |e: Exported| {
            footer.memories += 1;
            footer.versions += e.versions.len() as u64;
            chunk.push(e);
            if chunk.len() == FORMAT_CHUNK {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(FORMAT_CHUNK));
                // A closed channel: the formatter stopped on a write error, reported below.
                to_format
                    .send(full)
                    .map_err(|_| io(std::io::Error::other("the export stream closed")))?;
            }
            Ok(())
        });
        if read_all.is_ok() && !chunk.is_empty() {
            let _ = to_format.send(chunk);
        }
        drop(to_format);
        let written = formatter
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the formatting thread panicked")));
        // A write error explains a stopped read: report it first.
        let out = written.map_err(io)?;
        read_all?;
        Ok(out)
    })?;
    let mut out = out;
    let mut tail = Vec::new();
    write_footer(&mut tail, footer.memories, footer.versions);
    out.write_all(&tail).map_err(io)?;
    out.flush().map_err(io)?;
    Ok((out, footer))
}

/// One memory line (or version) as an import reads it: the mirror of [`ExportLine`]. Fields
/// added to exports later are optional, so older exports import too.
#[derive(Deserialize)]
struct ImportLine {
    id: String,
    namespace: String,
    content: String,
    content_hash: Option<String>,
    embedding: Option<Vec<f32>>,
    /// Base64 of little-endian f32s, instead of `embedding` (format 2).
    #[serde(default)]
    embedding_b64: Option<String>,
    /// Absent in exports written before embedding status existed.
    embedding_status: Option<String>,
    embedding_error: Option<String>,
    embedding_model: Option<String>,
    tier: String,
    status: String,
    importance_score: f32,
    access_count: u64,
    last_accessed_at_us: Option<i64>,
    metadata: Box<RawValue>,
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
    #[serde(default)]
    versions: Vec<ImportLine>,
}

/// Parses line `n` (1-based) of an export.
pub fn parse_line(line: &str, n: usize) -> Result<Line, LineError> {
    let err = |field: &str, message: String| LineError {
        line: n,
        field: field.to_owned(),
        message,
    };
    // The header and footer are told apart by their first key; a memory whose text holds the
    // same words still parses as a memory.
    let head = line.trim_start();
    if head.starts_with("{\"engram_export_end\"") {
        let footer: Footer =
            serde_json::from_str(line).map_err(|e| err("", format!("bad footer: {e}")))?;
        return Ok(Line::Footer(footer));
    }
    if head.starts_with("{\"engram_export\"") {
        let header: Header =
            serde_json::from_str(line).map_err(|e| err("", format!("bad header: {e}")))?;
        if !(FORMAT..=FORMAT_BASE64).contains(&header.engram_export) {
            return Err(err(
                "engram_export",
                format!(
                    "export format {} (this build reads {FORMAT} to {FORMAT_BASE64})",
                    header.engram_export
                ),
            ));
        }
        return Ok(Line::Header(header));
    }
    // Plain serde first (path tracking costs a tenth of an import); a line that fails is parsed
    // again with it, to name the field.
    let mut l: ImportLine = match serde_json::from_str(line) {
        Ok(l) => l,
        Err(_) => {
            let mut de = serde_json::Deserializer::from_str(line);
            let l: ImportLine = serde_path_to_error::deserialize(&mut de)
                .map_err(|e| err(&e.path().to_string(), e.into_inner().to_string()))?;
            de.end()
                .map_err(|e| err("", format!("trailing characters: {e}")))?;
            l
        }
    };
    let past = std::mem::take(&mut l.versions);
    let memory = to_memory(l, "").map_err(|(f, m)| err(&f, m))?;
    let mut versions = Vec::with_capacity(past.len());
    for (i, v) in past.into_iter().enumerate() {
        let at = format!("versions[{i}].");
        if !v.versions.is_empty() {
            return Err(err(
                &format!("{at}versions"),
                "a version holds no versions".to_owned(),
            ));
        }
        versions.push(to_memory(v, &at).map_err(|(f, m)| err(&f, m))?);
    }
    Ok(Line::Memory(Box::new(Exported { memory, versions })))
}

/// The memory a line describes; errors name the field under `at`.
fn to_memory(l: ImportLine, at: &str) -> Result<Memory, (String, String)> {
    let field = |name: &str| format!("{at}{name}");
    let embedding = match (l.embedding, l.embedding_b64) {
        (Some(_), Some(_)) => {
            return Err((
                field("embedding_b64"),
                "a line gives embedding or embedding_b64, not both".to_owned(),
            ))
        }
        (None, Some(b64)) => {
            Some(vector_from_base64(&b64).map_err(|m| (field("embedding_b64"), m))?)
        }
        (floats, None) => floats,
    };
    // An export's vector was the client's when the export predates embedding status.
    let embedding_status = match l.embedding_status.as_deref() {
        None if embedding.is_some() => EmbeddingStatus::Ready,
        None | Some("none") => EmbeddingStatus::None,
        Some("pending") => EmbeddingStatus::Pending,
        Some("ready") => EmbeddingStatus::Ready,
        Some("failed") => EmbeddingStatus::Failed(l.embedding_error.unwrap_or_default()),
        Some(other) => {
            return Err((
                field("embedding_status"),
                format!("unknown value {other:?}"),
            ))
        }
    };
    let content_hash = content_hash(&l.content);
    if l.content_hash.is_some_and(|h| h != hex(&content_hash)) {
        return Err((
            field("content_hash"),
            "does not match the content".to_owned(),
        ));
    }
    let parse_id = |name: &str, s: &str| {
        Uuid::parse_str(s).map_err(|_| (field(name), format!("not a UUID: {s:?}")))
    };
    Ok(Memory {
        id: parse_id("id", &l.id)?,
        namespace: l.namespace,
        content: l.content,
        content_hash,
        embedding,
        embedding_status,
        embedding_model: l.embedding_model,
        tier: l
            .tier
            .parse::<Tier>()
            .map_err(|e| (field("tier"), e.to_string()))?,
        status: l
            .status
            .parse::<Status>()
            .map_err(|e| (field("status"), e.to_string()))?,
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
        lsn: engram_wal::Lsn::ZERO,
    })
}

/// The floats of an `embedding_b64` (here and on the HTTP API); the error says what is wrong
/// with it: not base64, not whole 4-byte floats, or a value that is not finite.
pub fn vector_from_base64(s: &str) -> Result<Vec<f32>, String> {
    let bytes = STANDARD
        .decode(s)
        .map_err(|e| format!("is not valid base64: {e}"))?;
    if bytes.len() % 4 != 0 {
        return Err(format!(
            "decodes to {} bytes, not a whole number of 4-byte floats",
            bytes.len()
        ));
    }
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(v),
        Some(i) => Err(format!("value at index {i} is not a finite 32-bit float")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_with_versions_round_trips_and_errors_name_the_field() {
        let current = crate::codec::tests::sample_memory();
        assert!(current.embedding.is_some());
        let older = Memory {
            version: current.version - 1,
            content: "an older text".into(),
            content_hash: content_hash("an older text"),
            updated_at_us: current.updated_at_us - 5,
            embedding: None,
            embedding_status: EmbeddingStatus::None,
            ..current.clone()
        };
        for form in [VectorForm::Float, VectorForm::Base64] {
            let mut out = Vec::new();
            write_header(&mut out, 4, Some("ns"), form);
            write_memory(&mut out, &current, std::slice::from_ref(&older), form);
            write_footer(&mut out, 1, 1);
            let text = String::from_utf8(out).expect("UTF-8");
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 3);
            let Ok(Line::Header(h)) = parse_line(lines[0], 1) else {
                panic!("a header");
            };
            assert_eq!((h.dimensions, h.engram_export), (4, form.format()));
            assert_eq!(
                lines[1].contains("\"embedding\":["),
                form == VectorForm::Float,
                "{}",
                lines[1]
            );
            assert_eq!(
                lines[1].contains("\"embedding_b64\":\""),
                form == VectorForm::Base64
            );
            let Ok(Line::Memory(m)) = parse_line(lines[1], 2) else {
                panic!("a memory line");
            };
            // Every bit of every float comes back, in either form.
            assert_eq!(
                m.memory,
                Memory {
                    lsn: m.memory.lsn,
                    ..current.clone()
                }
            );
            assert_eq!(m.versions.len(), 1);
            assert_eq!(m.versions[0].content, "an older text");
            assert_eq!(m.versions[0].embedding, None);
            assert_eq!(
                parse_line(lines[2], 3),
                Ok(Line::Footer(Footer {
                    engram_export_end: true,
                    memories: 1,
                    versions: 1
                }))
            );
            let bad = lines[1].replacen("\"status\":\"active\"", "\"status\":\"gone\"", 2);
            let e = parse_line(&bad, 7).expect_err("a bad status");
            assert_eq!(e.line, 7);
            assert!(
                e.field == "status" || e.field == "versions[0].status",
                "{e}"
            );
        }
        let e = parse_line("{\"id\":3}", 2).expect_err("a bad id");
        assert_eq!(e.field, "id");
    }

    #[test]
    fn a_bad_embedding_b64_is_refused_naming_it() {
        let mut out = Vec::new();
        let m = crate::codec::tests::sample_memory();
        write_memory(&mut out, &m, &[], VectorForm::Base64);
        let line = String::from_utf8(out).expect("UTF-8");
        let b64 = vector_base64(m.embedding.as_deref().expect("a vector"));
        let cases = [
            (b64.replacen(&b64[..4], "!!!!", 1), "not valid base64"),
            (STANDARD.encode([0u8; 6]), "not a whole number"),
            (
                STANDARD.encode(f32::NAN.to_le_bytes()),
                "index 0 is not a finite",
            ),
        ];
        for (bad, says) in cases {
            let e = parse_line(&line.replacen(&b64, &bad, 1), 4).expect_err(says);
            assert_eq!(e.field, "embedding_b64", "{e}");
            assert!(e.message.contains(says), "{e}");
        }
        let both = line.replacen(
            "\"embedding_b64\"",
            "\"embedding\":[1,2,3,4],\"embedding_b64\"",
            1,
        );
        let e = parse_line(&both, 5).expect_err("both forms");
        assert_eq!(e.field, "embedding_b64", "{e}");
        let future = "{\"engram_export\":3,\"dimensions\":4}";
        assert_eq!(
            parse_line(future, 1).expect_err("format 3").field,
            "engram_export"
        );
    }
}

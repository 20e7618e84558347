//! Binary encoding of memory images and WAL operations (little endian, length-prefixed strings).
//! The byte layout is documented in `docs/format.md`; bump [`IMAGE_VERSION`] or [`OP_VERSION`] on
//! any change.

use engram_wal::Lsn;
use uuid::Uuid;

use crate::model::{EmbeddingStatus, Memory, SegmentId, Status, Tier, MAX_DIMENSIONS};

/// Version byte at the start of every memory image.
pub const IMAGE_VERSION: u8 = 3;
/// Version byte at the start of every WAL operation payload.
pub const OP_VERSION: u8 = 2;

const OP_PUT: u8 = 1;
const OP_PURGE: u8 = 2;
const OP_ACCESS: u8 = 3;
const OP_COLD_SEAL: u8 = 4;
const OP_COLD_COMPACT: u8 = 5;
const OP_SPACE_VECTOR: u8 = 6;
const OP_DROP_OWN_VECTORS: u8 = 7;
/// How a `ColdCompact` record writes "no output segment" (segment ids start at 1).
const NO_SEGMENT_CODE: u64 = 0;

/// Why does a record produce a new image?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutKind {
    Create,
    Update,
    /// A tier move: same version, new tier.
    Move,
    /// The background embedder's vector (or failure) for the memory's current content: same
    /// version.
    Embed,
}

/// One access-statistics delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessDelta {
    pub id: Uuid,
    pub count: u64,
    pub last_accessed_at_us: i64,
}

/// A WAL operation. Each is self-contained: applying it reads nothing from other tiers, so every
/// tier can replay exactly the suffix of the log its durable image is missing.
// Put, the common variant, is the large one: boxing it would add an allocation to nearly every
// operation to shrink the rare ones.
#[expect(
    clippy::large_enum_variant,
    reason = "Put is the common variant; boxing it costs an allocation per operation"
)]
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Store this full image in `memory.tier`, removing any copy from other tiers.
    Put {
        kind: PutKind,
        memory: Memory,
        /// Tier the memory was in before this record, if it existed.
        previous_tier: Option<Tier>,
        /// The content hash this memory held in the dedup index before this record (`None` if
        /// it held none: new, or soft-deleted). Released when the content changes or the memory
        /// is deleted.
        previous_hash: Option<[u8; 32]>,
        /// Versions kept in the memory's history, oldest first: the one an update replaces
        /// (one delta), or an imported memory's past (as many as it brings; none otherwise).
        history: Vec<crate::history::VersionDelta>,
    },
    /// Remove the memory from every tier and index.
    Purge {
        id: Uuid,
        namespace: String,
        /// The content hash to drop from the dedup index: set only when this memory held it
        /// (a soft-deleted memory already released it, and another may have claimed it since).
        release_hash: Option<[u8; 32]>,
        previous_tier: Tier,
    },
    /// Soft state: access counts and times, batched.
    Access(Vec<AccessDelta>),
    /// Move these memories (full images, `tier` cold, each with the LSN of its last change and
    /// the tier it leaves) into the new cold segment `segment`. The images make the record
    /// self-contained: recovery and point-in-time restore rebuild the segment from them if its
    /// file is missing.
    ColdSeal {
        segment: SegmentId,
        memories: Vec<(Memory, Tier)>,
    },
    /// Replace the cold segments `sources` by `segment`, which holds exactly the memories
    /// `kept` (read from the sources, where they are live); every other entry of the sources
    /// is dead. `segment` is `None` when nothing was kept. The cold tier's own state before
    /// this record is enough to rebuild it.
    ColdCompact {
        segment: Option<SegmentId>,
        sources: Vec<SegmentId>,
        kept: Vec<Uuid>,
    },
    /// A client-supplied vector of memory `id` in embedding space `space` (the active one when
    /// it was written), for the content with hash `content_hash`. Logged right after the put
    /// that stores the memory; the space's worker leaves the row alone until the content
    /// changes. A space dropped since is skipped.
    SpaceVector {
        space: u32,
        id: Uuid,
        content_hash: [u8; 32],
        vector: Vec<f32>,
    },
    /// The store's own vectors are given up for those of embedding space `space` (the active
    /// one when it was written): from this record on, searches, reads and exports take every
    /// vector from that space, no write stores an own vector, and the own graph and codes are
    /// gone. The records written before it lose their own vectors to a sweep that follows.
    DropOwnVectors {
        space: u32,
        /// The space's model, as reads name the vectors from now on.
        model: String,
    },
}

/// A decode failure: the bytes are not what this version wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {what}: {reason}")]
pub struct DecodeError {
    pub what: &'static str,
    pub reason: String,
}

pub(crate) struct Writer<'a>(pub(crate) &'a mut Vec<u8>);

impl Writer<'_> {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn f32(&mut self, v: f32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    pub(crate) fn str(&mut self, v: &str) {
        self.u32(u32::try_from(v.len()).expect("strings are bounded well below 4 GiB"));
        self.bytes(v.as_bytes());
    }
    pub(crate) fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.i64(v);
            }
            None => self.u8(0),
        }
    }
    pub(crate) fn opt_uuid(&mut self, v: Option<Uuid>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.bytes(v.as_bytes());
            }
            None => self.u8(0),
        }
    }
}

pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn err(&self, reason: impl Into<String>) -> DecodeError {
        DecodeError {
            what: self.what,
            reason: reason.into(),
        }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(self.err(format!("needs {n} more bytes, {} left", self.buf.len())));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    pub(crate) fn f32(&mut self) -> Result<f32, DecodeError> {
        Ok(f32::from_le_bytes(self.array()?))
    }
    pub(crate) fn str(&mut self) -> Result<String, DecodeError> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.err("string is not UTF-8"))
    }
    pub(crate) fn uuid(&mut self) -> Result<Uuid, DecodeError> {
        Ok(Uuid::from_bytes(self.array()?))
    }
    pub(crate) fn flag(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.err(format!("flag byte {other}"))),
        }
    }
    pub(crate) fn opt_i64(&mut self) -> Result<Option<i64>, DecodeError> {
        Ok(if self.flag()? {
            Some(self.i64()?)
        } else {
            None
        })
    }
    pub(crate) fn opt_uuid(&mut self) -> Result<Option<Uuid>, DecodeError> {
        Ok(if self.flag()? {
            Some(self.uuid()?)
        } else {
            None
        })
    }
    pub(crate) fn tier(&mut self) -> Result<Tier, DecodeError> {
        let code = self.u8()?;
        Tier::from_code(code).ok_or_else(|| self.err(format!("tier code {code}")))
    }
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.err(format!("{} trailing bytes", self.buf.len())))
        }
    }
}

/// Appends the image of `memory` (embedding included when `with_embedding`; the LSN is not part
/// of the image: the tier stores it beside).
pub fn encode_memory(out: &mut Vec<u8>, memory: &Memory, with_embedding: bool) {
    let mut w = Writer(out);
    w.u8(IMAGE_VERSION);
    w.bytes(memory.id.as_bytes());
    w.str(&memory.namespace);
    w.str(&memory.content);
    w.bytes(&memory.content_hash);
    w.u8(memory.tier.code());
    w.u8(memory.status.code());
    w.f32(memory.importance);
    w.u64(memory.access_count);
    w.opt_i64(memory.last_accessed_at_us);
    w.str(&memory.metadata_json);
    w.u32(u32::try_from(memory.tags.len()).expect("tags are bounded"));
    for tag in &memory.tags {
        w.str(tag);
    }
    w.opt_uuid(memory.parent_id);
    w.i64(memory.created_at_us);
    w.i64(memory.updated_at_us);
    w.opt_i64(memory.expires_at_us);
    w.u64(memory.version);
    match (&memory.embedding, with_embedding) {
        (Some(v), true) => {
            w.u8(1);
            w.u32(u32::try_from(v.len()).expect("dimensions are bounded"));
            for x in v {
                w.f32(*x);
            }
        }
        _ => w.u8(0),
    }
    w.u8(memory.embedding_status.code());
    if let EmbeddingStatus::Failed(reason) = &memory.embedding_status {
        w.str(reason);
    }
    match &memory.embedding_model {
        Some(m) => {
            w.u8(1);
            w.str(m);
        }
        None => w.u8(0),
    }
    w.opt_uuid(memory.superseded_by);
    match &memory.actor {
        Some(a) => {
            w.u8(1);
            w.str(a);
        }
        None => w.u8(0),
    }
}

fn read_memory(r: &mut Reader<'_>, lsn: Lsn) -> Result<Memory, DecodeError> {
    let image_version = r.u8()?;
    if !(1..=IMAGE_VERSION).contains(&image_version) {
        return Err(r.err(format!("image version {image_version}")));
    }
    let id = r.uuid()?;
    let namespace = r.str()?;
    let content = r.str()?;
    let content_hash = r.array()?;
    let tier = r.tier()?;
    let status_code = r.u8()?;
    let status =
        Status::from_code(status_code).ok_or_else(|| r.err(format!("status {status_code}")))?;
    let importance = r.f32()?;
    let access_count = r.u64()?;
    let last_accessed_at_us = r.opt_i64()?;
    let metadata_json = r.str()?;
    let tag_count = r.u32()? as usize;
    if tag_count > crate::model::MAX_TAGS {
        return Err(r.err(format!("{tag_count} tags")));
    }
    let mut tags = Vec::with_capacity(tag_count);
    for _ in 0..tag_count {
        tags.push(r.str()?);
    }
    let parent_id = r.opt_uuid()?;
    let created_at_us = r.i64()?;
    let updated_at_us = r.i64()?;
    let expires_at_us = r.opt_i64()?;
    let version = r.u64()?;
    let has_embedding = r.flag()?;
    let embedding = if has_embedding {
        let dimensions = r.u32()? as usize;
        if dimensions > MAX_DIMENSIONS {
            return Err(r.err(format!("{dimensions} dimensions")));
        }
        let mut v = Vec::with_capacity(dimensions);
        for _ in 0..dimensions {
            v.push(r.f32()?);
        }
        Some(v)
    } else {
        None
    };
    // Version 1 images predate embedding status: a vector there was the client's.
    let (embedding_status, embedding_model) = if image_version == 1 {
        let status = if has_embedding {
            EmbeddingStatus::Ready
        } else {
            EmbeddingStatus::None
        };
        (status, None)
    } else {
        let status = match r.u8()? {
            0 => EmbeddingStatus::None,
            1 => EmbeddingStatus::Pending,
            2 => EmbeddingStatus::Ready,
            3 => EmbeddingStatus::Failed(r.str()?),
            other => return Err(r.err(format!("embedding status {other}"))),
        };
        let model = if r.flag()? { Some(r.str()?) } else { None };
        (status, model)
    };
    // Version 3 added who made the version and what superseded it.
    let (superseded_by, actor) = if image_version >= 3 {
        let by = r.opt_uuid()?;
        let actor = if r.flag()? { Some(r.str()?) } else { None };
        (by, actor)
    } else {
        (None, None)
    };
    Ok(Memory {
        id,
        namespace,
        content,
        content_hash,
        embedding,
        embedding_status,
        embedding_model,
        tier,
        status,
        importance,
        access_count,
        last_accessed_at_us,
        metadata_json,
        tags,
        parent_id,
        created_at_us,
        updated_at_us,
        expires_at_us,
        version,
        superseded_by,
        actor,
        lsn,
    })
}

/// Decodes a memory image written by [`encode_memory`], giving it `lsn`.
pub fn decode_memory(bytes: &[u8], lsn: Lsn) -> Result<Memory, DecodeError> {
    let mut r = Reader {
        buf: bytes,
        what: "memory image",
    };
    let memory = read_memory(&mut r, lsn)?;
    r.finish()?;
    Ok(memory)
}

/// What the search index keeps of a searchable warm memory, stored beside its record so it is
/// rebuilt without reading every record: also the memory's distinct terms, so the text postings
/// can be removed when it changes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AttrRow {
    pub namespace: String,
    pub importance: f32,
    pub created_at_us: i64,
    pub expires_at_us: Option<i64>,
    pub tags: Vec<String>,
    pub doc_len: u32,
    /// CRC32 of the vector's bytes, if it has one.
    pub vector_crc: Option<u32>,
    /// Status `superseded` (version 2 rows; version 1 rows are all active).
    pub superseded: bool,
    pub terms: Vec<(String, u32)>,
}

const ATTR_ROW_VERSION: u8 = 2;

pub(crate) fn encode_attr_row(row: &AttrRow) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + row.terms.len() * 12);
    let mut w = Writer(&mut out);
    w.u8(ATTR_ROW_VERSION);
    w.str(&row.namespace);
    w.f32(row.importance);
    w.i64(row.created_at_us);
    w.opt_i64(row.expires_at_us);
    w.u32(u32::try_from(row.tags.len()).expect("tags are bounded"));
    for t in &row.tags {
        w.str(t);
    }
    w.u32(row.doc_len);
    match row.vector_crc {
        Some(c) => {
            w.u8(1);
            w.u32(c);
        }
        None => w.u8(0),
    }
    w.u32(u32::try_from(row.terms.len()).expect("terms are bounded by content size"));
    for (t, tf) in &row.terms {
        w.str(t);
        w.u32(*tf);
    }
    w.u8(u8::from(row.superseded));
    out
}

pub(crate) fn decode_attr_row(bytes: &[u8]) -> Result<AttrRow, DecodeError> {
    let mut r = Reader {
        buf: bytes,
        what: "search attributes",
    };
    let version = r.u8()?;
    if !(1..=ATTR_ROW_VERSION).contains(&version) {
        return Err(r.err(format!("version {version}")));
    }
    let namespace = r.str()?;
    let importance = r.f32()?;
    let created_at_us = r.i64()?;
    let expires_at_us = r.opt_i64()?;
    let n = r.u32()? as usize;
    if n > crate::model::MAX_TAGS {
        return Err(r.err(format!("{n} tags")));
    }
    let mut tags = Vec::with_capacity(n);
    for _ in 0..n {
        tags.push(r.str()?);
    }
    let doc_len = r.u32()?;
    let vector_crc = if r.flag()? { Some(r.u32()?) } else { None };
    let n = r.u32()? as usize;
    if n > r.buf.len() / 8 {
        return Err(r.err(format!("{n} terms in {} bytes", r.buf.len())));
    }
    let mut terms = Vec::with_capacity(n);
    for _ in 0..n {
        terms.push((r.str()?, r.u32()?));
    }
    let superseded = version >= 2 && r.flag()?;
    r.finish()?;
    Ok(AttrRow {
        namespace,
        importance,
        created_at_us,
        expires_at_us,
        tags,
        doc_len,
        vector_crc,
        superseded,
        terms,
    })
}

/// Encodes a WAL operation payload.
pub fn encode_op(op: &Op) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    {
        let mut w = Writer(&mut out);
        w.u8(OP_VERSION);
        match op {
            Op::Put {
                kind,
                previous_tier,
                previous_hash,
                ..
            } => {
                w.u8(OP_PUT);
                w.u8(match kind {
                    PutKind::Create => 1,
                    PutKind::Update => 2,
                    PutKind::Move => 3,
                    PutKind::Embed => 4,
                });
                w.u8(previous_tier.map_or(0, Tier::code));
                match previous_hash {
                    Some(h) => {
                        w.u8(1);
                        w.bytes(h);
                    }
                    None => w.u8(0),
                }
            }
            Op::Purge {
                id,
                namespace,
                release_hash,
                previous_tier,
            } => {
                w.u8(OP_PURGE);
                w.bytes(id.as_bytes());
                w.str(namespace);
                match release_hash {
                    Some(h) => {
                        w.u8(1);
                        w.bytes(h);
                    }
                    None => w.u8(0),
                }
                w.u8(previous_tier.code());
            }
            Op::Access(deltas) => {
                w.u8(OP_ACCESS);
                w.u32(u32::try_from(deltas.len()).expect("access batches are bounded"));
                for d in deltas {
                    w.bytes(d.id.as_bytes());
                    w.u64(d.count);
                    w.i64(d.last_accessed_at_us);
                }
            }
            Op::ColdSeal { segment, memories } => {
                w.u8(OP_COLD_SEAL);
                w.u64(segment.0);
                w.u32(u32::try_from(memories.len()).expect("seals are bounded"));
                for (m, from) in memories {
                    w.u8(from.code());
                    w.u64(m.lsn.get());
                    encode_memory(w.0, m, true);
                }
            }
            Op::ColdCompact {
                segment,
                sources,
                kept,
            } => {
                w.u8(OP_COLD_COMPACT);
                w.u64(segment.map_or(NO_SEGMENT_CODE, |s| s.0));
                w.u32(u32::try_from(sources.len()).expect("compactions are bounded"));
                for s in sources {
                    w.u64(s.0);
                }
                w.u32(u32::try_from(kept.len()).expect("compactions are bounded"));
                for id in kept {
                    w.bytes(id.as_bytes());
                }
            }
            Op::SpaceVector {
                space,
                id,
                content_hash,
                vector,
            } => {
                w.u8(OP_SPACE_VECTOR);
                w.u32(*space);
                w.bytes(id.as_bytes());
                w.bytes(content_hash);
                w.u32(u32::try_from(vector.len()).expect("dimensions are bounded"));
                for x in vector {
                    w.f32(*x);
                }
            }
            Op::DropOwnVectors { space, model } => {
                w.u8(OP_DROP_OWN_VECTORS);
                w.u32(*space);
                w.str(model);
            }
        }
    }
    if let Op::Put {
        memory, history, ..
    } = op
    {
        encode_memory(&mut out, memory, true);
        // 0: no delta, 1: one (what an update writes), 2: a counted list (an import).
        match history.as_slice() {
            [] => out.push(0),
            [d] => {
                out.push(1);
                d.encode(&mut out);
            }
            many => {
                out.push(2);
                out.extend_from_slice(
                    &u32::try_from(many.len())
                        .expect("versions are bounded")
                        .to_le_bytes(),
                );
                for d in many {
                    d.encode(&mut out);
                }
            }
        }
    }
    out
}

/// Decodes a WAL operation payload; `lsn` is the record's LSN, given to any image inside.
pub fn decode_op(bytes: &[u8], lsn: Lsn) -> Result<Op, DecodeError> {
    let mut r = Reader {
        buf: bytes,
        what: "WAL operation",
    };
    let version = r.u8()?;
    if !(1..=OP_VERSION).contains(&version) {
        return Err(r.err(format!("operation version {version}")));
    }
    let op = match r.u8()? {
        OP_PUT => {
            let kind = match r.u8()? {
                1 => PutKind::Create,
                2 => PutKind::Update,
                3 => PutKind::Move,
                4 => PutKind::Embed,
                other => return Err(r.err(format!("put kind {other}"))),
            };
            let previous_tier = match r.u8()? {
                0 => None,
                code => Some(Tier::from_code(code).ok_or_else(|| r.err(format!("tier {code}")))?),
            };
            let previous_hash = if r.flag()? { Some(r.array()?) } else { None };
            let memory = read_memory(&mut r, lsn)?;
            // Version 1 records predate history.
            let history = if version < 2 {
                Vec::new()
            } else {
                match r.u8()? {
                    0 => Vec::new(),
                    1 => vec![crate::history::VersionDelta::read(&mut r)?],
                    2 => {
                        let n = r.u32()? as usize;
                        // A delta takes at least 27 bytes: refuse counts the buffer cannot
                        // hold before allocating.
                        if n > r.buf.len() / 27 {
                            return Err(r.err(format!("{n} versions in {} bytes", r.buf.len())));
                        }
                        (0..n)
                            .map(|_| crate::history::VersionDelta::read(&mut r))
                            .collect::<Result<_, _>>()?
                    }
                    other => return Err(r.err(format!("history flag {other}"))),
                }
            };
            Op::Put {
                kind,
                memory,
                previous_tier,
                previous_hash,
                history,
            }
        }
        OP_PURGE => Op::Purge {
            id: r.uuid()?,
            namespace: r.str()?,
            release_hash: if r.flag()? { Some(r.array()?) } else { None },
            previous_tier: r.tier()?,
        },
        OP_ACCESS => {
            let n = r.u32()? as usize;
            // Each delta takes 32 bytes: refuse counts the buffer cannot hold before allocating.
            if n > r.buf.len() / 32 {
                return Err(r.err(format!("{n} access deltas in {} bytes", r.buf.len())));
            }
            let mut deltas = Vec::with_capacity(n);
            for _ in 0..n {
                deltas.push(AccessDelta {
                    id: r.uuid()?,
                    count: r.u64()?,
                    last_accessed_at_us: r.i64()?,
                });
            }
            Op::Access(deltas)
        }
        OP_COLD_SEAL => {
            let segment = SegmentId(r.u64()?);
            let n = r.u32()? as usize;
            // An image takes well over 32 bytes: refuse counts the buffer cannot hold.
            if n > r.buf.len() / 32 {
                return Err(r.err(format!("{n} sealed memories in {} bytes", r.buf.len())));
            }
            let mut memories = Vec::with_capacity(n);
            for _ in 0..n {
                let from = r.tier()?;
                let image_lsn = Lsn::new(r.u64()?);
                let mut m = read_memory(&mut r, image_lsn)?;
                m.tier = Tier::Cold;
                memories.push((m, from));
            }
            Op::ColdSeal { segment, memories }
        }
        OP_COLD_COMPACT => {
            let segment = Some(r.u64()?)
                .filter(|s| *s != NO_SEGMENT_CODE)
                .map(SegmentId);
            let n = r.u32()? as usize;
            if n > r.buf.len() / 8 {
                return Err(r.err(format!("{n} sources in {} bytes", r.buf.len())));
            }
            let sources = (0..n)
                .map(|_| r.u64().map(SegmentId))
                .collect::<Result<Vec<_>, _>>()?;
            let n = r.u32()? as usize;
            if n > r.buf.len() / 16 {
                return Err(r.err(format!("{n} kept ids in {} bytes", r.buf.len())));
            }
            let kept = (0..n).map(|_| r.uuid()).collect::<Result<Vec<_>, _>>()?;
            Op::ColdCompact {
                segment,
                sources,
                kept,
            }
        }
        OP_SPACE_VECTOR => {
            let space = r.u32()?;
            let id = r.uuid()?;
            let content_hash = r.array()?;
            let n = r.u32()? as usize;
            if n > r.buf.len() / 4 {
                return Err(r.err(format!("{n} dimensions in {} bytes", r.buf.len())));
            }
            let vector = (0..n).map(|_| r.f32()).collect::<Result<Vec<_>, _>>()?;
            Op::SpaceVector {
                space,
                id,
                content_hash,
                vector,
            }
        }
        OP_DROP_OWN_VECTORS => Op::DropOwnVectors {
            space: r.u32()?,
            model: r.str()?,
        },
        other => return Err(r.err(format!("operation tag {other}"))),
    };
    r.finish()?;
    Ok(op)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_memory() -> Memory {
        Memory {
            id: Uuid::now_v7(),
            namespace: "agent:7".into(),
            content: "Caroline went to the support group 🌈".into(),
            content_hash: crate::model::content_hash("Caroline went to the support group 🌈"),
            embedding: Some(vec![0.25, -1.5, f32::MIN_POSITIVE]),
            embedding_status: EmbeddingStatus::Ready,
            embedding_model: Some("all-MiniLM-L6-v2".into()),
            tier: Tier::Working,
            status: Status::Active,
            importance: 0.75,
            access_count: 3,
            last_accessed_at_us: Some(1_700_000_000_000_001),
            metadata_json: r#"{"speaker":"Caroline"}"#.into(),
            tags: vec!["a".into(), "b c".into()],
            parent_id: Some(Uuid::now_v7()),
            created_at_us: -5,
            updated_at_us: 1_700_000_000_000_000,
            expires_at_us: None,
            version: 4,
            superseded_by: None,
            actor: Some("agent-7".into()),
            lsn: Lsn::new(99),
        }
    }

    #[test]
    fn version_1_and_2_images_still_decode() {
        let mut m = sample_memory();
        m.version = 1;
        m.embedding_model = None;
        m.actor = None;
        let mut bytes = Vec::new();
        encode_memory(&mut bytes, &m, true);
        // The same memory in image version 1: no embedding status (2), model flag (0),
        // superseded-by flag (0) or actor flag (0); version 2 has the first two of those.
        assert_eq!(&bytes[bytes.len() - 4..], &[2, 0, 0, 0]);
        let mut v1 = bytes[..bytes.len() - 4].to_vec();
        v1[0] = 1;
        assert_eq!(decode_memory(&v1, m.lsn).expect("decodes"), m);
        let mut v2 = bytes[..bytes.len() - 2].to_vec();
        v2[0] = 2;
        assert_eq!(decode_memory(&v2, m.lsn).expect("decodes"), m);
        m.embedding = None;
        m.embedding_status = EmbeddingStatus::None;
        let mut bytes = Vec::new();
        encode_memory(&mut bytes, &m, true);
        let mut v1 = bytes[..bytes.len() - 4].to_vec();
        v1[0] = 1;
        assert_eq!(decode_memory(&v1, m.lsn).expect("decodes"), m);
        // A memory whose own version is 1 is not mistaken for an old image.
        m.embedding_status = EmbeddingStatus::Pending;
        m.superseded_by = Some(Uuid::now_v7());
        m.actor = Some("importer".into());
        let mut bytes = Vec::new();
        encode_memory(&mut bytes, &m, true);
        assert_eq!(decode_memory(&bytes, m.lsn).expect("decodes"), m);
    }

    #[test]
    fn version_1_puts_still_decode() {
        let op = Op::Put {
            kind: PutKind::Create,
            memory: sample_memory(),
            previous_tier: None,
            previous_hash: None,
            history: Vec::new(),
        };
        let mut bytes = encode_op(&op);
        // Version 1: no history flag after the image.
        assert_eq!(bytes.pop(), Some(0));
        bytes[0] = 1;
        assert_eq!(decode_op(&bytes, Lsn::new(99)).expect("decodes"), op);
    }

    #[test]
    fn ops_round_trip() {
        let memory = sample_memory();
        let ops = vec![
            Op::Put {
                kind: PutKind::Update,
                memory: memory.clone(),
                previous_tier: Some(Tier::Warm),
                previous_hash: Some([7; 32]),
                history: vec![crate::history::VersionDelta::between(
                    &Memory {
                        version: 3,
                        importance: 0.1,
                        ..memory.clone()
                    },
                    &memory,
                )],
            },
            Op::Put {
                kind: PutKind::Create,
                memory: memory.clone(),
                previous_tier: None,
                previous_hash: None,
                history: vec![
                    crate::history::VersionDelta::between(
                        &Memory {
                            version: 2,
                            content: "older".into(),
                            ..memory.clone()
                        },
                        &Memory {
                            version: 3,
                            importance: 0.1,
                            ..memory.clone()
                        },
                    ),
                    crate::history::VersionDelta::between(
                        &Memory {
                            version: 3,
                            importance: 0.1,
                            ..memory.clone()
                        },
                        &memory,
                    ),
                ],
            },
            Op::Put {
                kind: PutKind::Embed,
                memory: Memory {
                    embedding: None,
                    embedding_status: EmbeddingStatus::Failed("model said no".into()),
                    embedding_model: None,
                    ..memory.clone()
                },
                previous_tier: Some(Tier::Working),
                previous_hash: None,
                history: Vec::new(),
            },
            Op::Purge {
                id: memory.id,
                namespace: "x".into(),
                release_hash: Some([1; 32]),
                previous_tier: Tier::Warm,
            },
            Op::Access(vec![AccessDelta {
                id: memory.id,
                count: 2,
                last_accessed_at_us: 5,
            }]),
            Op::ColdSeal {
                segment: SegmentId(7),
                memories: vec![
                    (
                        Memory {
                            tier: Tier::Cold,
                            ..memory.clone()
                        },
                        Tier::Warm,
                    ),
                    (
                        Memory {
                            id: Uuid::now_v7(),
                            tier: Tier::Cold,
                            embedding: None,
                            embedding_status: EmbeddingStatus::None,
                            lsn: Lsn::new(12),
                            ..memory.clone()
                        },
                        Tier::Working,
                    ),
                ],
            },
            Op::ColdCompact {
                segment: Some(SegmentId(9)),
                sources: vec![SegmentId(7), SegmentId(8)],
                kept: vec![memory.id],
            },
            Op::SpaceVector {
                space: 3,
                id: memory.id,
                content_hash: memory.content_hash,
                vector: vec![0.25, -1.5, 3.0],
            },
            Op::DropOwnVectors {
                space: 3,
                model: "nomic-embed-text".to_owned(),
            },
        ];
        for op in ops {
            let bytes = encode_op(&op);
            assert_eq!(decode_op(&bytes, Lsn::new(99)).expect("decodes"), op);
            // Every strict prefix is an error, never a panic or a wrong value.
            for cut in 0..bytes.len() {
                assert!(decode_op(&bytes[..cut], Lsn::new(99)).is_err());
            }
        }
    }

    #[test]
    fn image_without_embedding() {
        let memory = sample_memory();
        let mut bytes = Vec::new();
        encode_memory(&mut bytes, &memory, false);
        let back = decode_memory(&bytes, Lsn::new(99)).expect("decodes");
        assert_eq!(back.embedding, None);
        assert_eq!(back.content, memory.content);
    }
}

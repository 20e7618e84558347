//! Cold segments: immutable files of memories, the building block of the cold tier.
//!
//! A segment holds blocks of memory images (all fields, the f32 vector included) compressed
//! with zstd, each with a CRC32 of its compressed bytes checked on every read; a section of
//! i8-quantized vectors (one scale per vector) for scanning without decompressing; a footer
//! indexing every id to its block. Layout in `docs/format.md`. A damaged block is reported as
//! corruption naming the segment and the block, never returned as data.
//!
//! Written once (temp file, fsync, rename, directory fsync), then only read.

use engram_wal::Lsn;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::codec;
use crate::model::{Memory, Tier};
use crate::vector::{as_i8, i8_dot_norm, quantize};
use crate::EngineError;

const MAGIC: &[u8; 8] = b"ENGRMCLD";
const TRAILER_MAGIC: &[u8; 8] = b"ENGRMCLE";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 32;
const BLOCK_HEADER_BYTES: usize = 16;
const TRAILER_BYTES: usize = 48;
/// Uncompressed bytes a block collects before it is closed.
pub const BLOCK_TARGET_BYTES: usize = 64 * 1024;
/// Bytes of one footer entry: id, block, record within the block.
const FOOTER_ENTRY_BYTES: usize = 24;
/// A block is closed once it passes [`BLOCK_TARGET_BYTES`], so it holds at most that plus one
/// record, and a record (an image that fit in a WAL record, with its LSN) is bounded too.
const MAX_BLOCK_RAW_BYTES: usize = BLOCK_TARGET_BYTES + 12 + engram_wal::MAX_RECORD_BYTES;

/// What a segment holds, from its header and footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub path: PathBuf,
    pub segment_id: u64,
    pub dimensions: usize,
    pub memories: usize,
    pub blocks: usize,
    pub bytes: u64,
    /// Uncompressed bytes of all blocks.
    pub raw_bytes: u64,
}

/// One block as `inspect` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockReport {
    pub index: usize,
    pub offset: u64,
    pub compressed_bytes: u32,
    pub raw_bytes: u32,
    pub records: u32,
    /// `None`: intact; else what is wrong.
    pub problem: Option<String>,
}

fn corrupt(path: &Path, detail: impl Into<String>) -> EngineError {
    EngineError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// An `f32` ordered by `total_cmp`, for heaps.
#[derive(Debug, Clone, Copy, PartialEq)]
struct OrdF32(f32);
impl Eq for OrdF32 {}
impl PartialOrd for OrdF32 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdF32 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The block being filled, and where the closed ones went.
struct Blocks {
    level: i32,
    raw: Vec<u8>,
    records: u32,
    offsets: Vec<u64>,
    raw_total: u64,
}

impl Blocks {
    /// Compresses the open block onto `out` (nothing if it is empty).
    fn close(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        if self.records == 0 {
            return Ok(());
        }
        let compressed = zstd::bulk::compress(&self.raw, self.level)?;
        self.offsets.push(out.len() as u64);
        out.extend_from_slice(
            &u32::try_from(compressed.len())
                .expect("blocks are small")
                .to_le_bytes(),
        );
        out.extend_from_slice(
            &u32::try_from(self.raw.len())
                .expect("blocks are small")
                .to_le_bytes(),
        );
        out.extend_from_slice(&self.records.to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&compressed).to_le_bytes());
        out.extend_from_slice(&compressed);
        self.raw_total += self.raw.len() as u64;
        self.raw.clear();
        self.records = 0;
        Ok(())
    }
}

/// Writes `memories` (all with `dimensions`-long vectors or none) as segment `segment_id` at
/// `path`, durably: temp file, fsync, rename, directory fsync.
pub fn write_segment(
    path: &Path,
    segment_id: u64,
    dimensions: usize,
    zstd_level: i32,
    memories: &[Memory],
) -> Result<SegmentInfo, EngineError> {
    let io = |e: std::io::Error| EngineError::io(path, e);
    let mut out: Vec<u8> = Vec::with_capacity(HEADER_BYTES + memories.len() * 512);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(
        &u32::try_from(dimensions)
            .expect("dimensions are bounded")
            .to_le_bytes(),
    );
    out.extend_from_slice(&segment_id.to_le_bytes());
    out.extend_from_slice(&zstd_level.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);

    let mut order: Vec<&Memory> = memories.iter().collect();
    order.sort_by_key(|m| m.id);
    let mut footer: Vec<(Uuid, u32, u32)> = Vec::with_capacity(order.len());
    let mut blocks = Blocks {
        level: zstd_level,
        raw: Vec::with_capacity(BLOCK_TARGET_BYTES * 2),
        records: 0,
        offsets: Vec::new(),
        raw_total: 0,
    };
    for m in &order {
        if m.embedding.as_ref().is_some_and(|v| v.len() != dimensions) {
            return Err(EngineError::Invalid {
                field: "embedding",
                message: format!("memory {} does not have {dimensions} dimensions", m.id),
            });
        }
        let mut image = Vec::with_capacity(m.content.len() + dimensions * 4 + 256);
        image.extend_from_slice(&m.lsn.to_le_bytes());
        codec::encode_memory(&mut image, m, true);
        footer.push((m.id, blocks.offsets.len() as u32, blocks.records));
        blocks.raw.extend_from_slice(
            &u32::try_from(image.len())
                .expect("images are bounded")
                .to_le_bytes(),
        );
        blocks.raw.extend_from_slice(&image);
        blocks.records += 1;
        if blocks.raw.len() >= BLOCK_TARGET_BYTES {
            blocks.close(&mut out).map_err(io)?;
        }
    }
    blocks.close(&mut out).map_err(io)?;
    let Blocks {
        offsets: block_offsets,
        raw_total,
        ..
    } = blocks;

    // Quantized vectors: id, scale, codes; only memories with a vector.
    let quant_offset = out.len() as u64;
    for m in &order {
        if let Some(v) = &m.embedding {
            let (scale, codes) = quantize(v);
            out.extend_from_slice(m.id.as_bytes());
            out.extend_from_slice(&scale.to_le_bytes());
            out.extend(codes.iter().map(|c| *c as u8));
        }
    }
    let quant_len = out.len() as u64 - quant_offset;
    let quant_crc = crc32fast::hash(&out[quant_offset as usize..]);

    let footer_offset = out.len() as u64;
    out.extend_from_slice(&(footer.len() as u64).to_le_bytes());
    for (id, block, record) in &footer {
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&block.to_le_bytes());
        out.extend_from_slice(&record.to_le_bytes());
    }
    out.extend_from_slice(&(block_offsets.len() as u64).to_le_bytes());
    for o in &block_offsets {
        out.extend_from_slice(&o.to_le_bytes());
    }
    let footer_len = out.len() as u64 - footer_offset;
    let footer_crc = crc32fast::hash(&out[footer_offset as usize..]);
    out.extend_from_slice(&footer_offset.to_le_bytes());
    out.extend_from_slice(&footer_len.to_le_bytes());
    out.extend_from_slice(&quant_offset.to_le_bytes());
    out.extend_from_slice(&quant_len.to_le_bytes());
    out.extend_from_slice(&quant_crc.to_le_bytes());
    out.extend_from_slice(&footer_crc.to_le_bytes());
    out.extend_from_slice(TRAILER_MAGIC);

    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(&out).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    engram_wal::durable::rename_durable(&tmp, path).map_err(io)?;
    Ok(SegmentInfo {
        path: path.to_path_buf(),
        segment_id,
        dimensions,
        memories: order.len(),
        blocks: block_offsets.len(),
        bytes: out.len() as u64,
        raw_bytes: raw_total,
    })
}

/// An open segment: its footer in memory, blocks read (and checked) on demand.
#[derive(Debug)]
pub struct Segment {
    file: File,
    info: SegmentInfo,
    /// Sorted by id: (id, block, record within the block).
    index: Vec<(Uuid, u32, u32)>,
    block_offsets: Vec<u64>,
    quant_offset: u64,
    quant_len: u64,
    quant_crc: u32,
}

impl Segment {
    /// Opens `path`, checking the header, the trailer and the footer's checksum.
    pub fn open(path: &Path) -> Result<Segment, EngineError> {
        let io = |e: std::io::Error| EngineError::io(path, e);
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < (HEADER_BYTES + TRAILER_BYTES) as u64 {
            return Err(corrupt(
                path,
                format!("{len} bytes: too short for a cold segment"),
            ));
        }
        let mut header = [0u8; HEADER_BYTES];
        file.read_exact_at(&mut header, 0).map_err(io)?;
        if &header[..8] != MAGIC {
            return Err(corrupt(path, "not a cold segment (bad magic)"));
        }
        if u32_at(&header, 8) != VERSION {
            return Err(corrupt(
                path,
                format!("segment version {}", u32_at(&header, 8)),
            ));
        }
        let dimensions = u32_at(&header, 12) as usize;
        let segment_id = u64_at(&header, 16);
        let mut trailer = [0u8; TRAILER_BYTES];
        file.read_exact_at(&mut trailer, len - TRAILER_BYTES as u64)
            .map_err(io)?;
        if &trailer[40..] != TRAILER_MAGIC {
            return Err(corrupt(path, "trailer damaged (bad magic)"));
        }
        let footer_offset = u64_at(&trailer, 0);
        let footer_len = u64_at(&trailer, 8);
        let quant_offset = u64_at(&trailer, 16);
        let quant_len = u64_at(&trailer, 24);
        let quant_crc = u32_at(&trailer, 32);
        let footer_crc = u32_at(&trailer, 36);
        // Checked arithmetic: the offsets are read from the file and may be anything.
        let fits = footer_offset
            .checked_add(footer_len)
            .and_then(|end| end.checked_add(TRAILER_BYTES as u64))
            == Some(len)
            && quant_offset.checked_add(quant_len) == Some(footer_offset)
            && quant_offset >= HEADER_BYTES as u64;
        if !fits {
            return Err(corrupt(path, "trailer offsets do not fit the file"));
        }
        let mut footer = vec![0u8; footer_len as usize];
        file.read_exact_at(&mut footer, footer_offset).map_err(io)?;
        if crc32fast::hash(&footer) != footer_crc {
            return Err(corrupt(path, "footer checksum mismatch"));
        }
        let bad_footer = || corrupt(path, "footer is malformed");
        let count = usize::try_from(u64_at(&footer, 0)).map_err(|_| bad_footer())?;
        let entries_end = 8 + count
            .checked_mul(FOOTER_ENTRY_BYTES)
            .ok_or_else(bad_footer)?;
        if footer.len() < entries_end + 8 {
            return Err(bad_footer());
        }
        let mut index = Vec::with_capacity(count);
        for e in footer[8..entries_end].chunks_exact(FOOTER_ENTRY_BYTES) {
            let id = Uuid::from_slice(&e[..16]).map_err(|_| bad_footer())?;
            index.push((id, u32_at(e, 16), u32_at(e, 20)));
        }
        let blocks = usize::try_from(u64_at(&footer, entries_end)).map_err(|_| bad_footer())?;
        if Some(footer.len())
            != blocks
                .checked_mul(8)
                .and_then(|b| b.checked_add(entries_end + 8))
        {
            return Err(bad_footer());
        }
        let block_offsets: Vec<u64> = footer[entries_end + 8..]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        if index.iter().any(|(_, b, _)| *b as usize >= blocks) {
            return Err(bad_footer());
        }
        // Blocks lie, in order, between the header and the quantized section.
        let mut block_start = HEADER_BYTES as u64;
        for &offset in &block_offsets {
            if offset < block_start
                || offset.saturating_add(BLOCK_HEADER_BYTES as u64) > quant_offset
            {
                return Err(bad_footer());
            }
            block_start = offset + BLOCK_HEADER_BYTES as u64;
        }
        let mut seg = Segment {
            file,
            info: SegmentInfo {
                path: path.to_path_buf(),
                segment_id,
                dimensions,
                memories: count,
                blocks,
                bytes: len,
                raw_bytes: 0,
            },
            index,
            block_offsets,
            quant_offset,
            quant_len,
            quant_crc,
        };
        seg.info.raw_bytes = (0..blocks)
            .map(|b| seg.block_header(b).map(|h| u64::from(h.1)))
            .sum::<Result<u64, EngineError>>()?;
        Ok(seg)
    }

    pub fn info(&self) -> &SegmentInfo {
        &self.info
    }

    /// Whether the segment has an entry for `id`.
    pub fn contains(&self, id: &Uuid) -> bool {
        self.index.binary_search_by_key(id, |(i, _, _)| *i).is_ok()
    }

    /// Every id in the segment, sorted.
    pub fn ids(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.index.iter().map(|(id, _, _)| *id)
    }

    /// (compressed length, raw length, records, crc) of block `b`.
    fn block_header(&self, b: usize) -> Result<(u32, u32, u32, u32), EngineError> {
        let mut h = [0u8; BLOCK_HEADER_BYTES];
        self.file
            .read_exact_at(&mut h, self.block_offsets[b])
            .map_err(|e| EngineError::io(&self.info.path, e))?;
        Ok((u32_at(&h, 0), u32_at(&h, 4), u32_at(&h, 8), u32_at(&h, 12)))
    }

    /// Block `b` decompressed, after checking its CRC.
    fn read_block(&self, b: usize) -> Result<Vec<u8>, EngineError> {
        let path = &self.info.path;
        let (clen, rlen, _, crc) = self.block_header(b)?;
        // Both lengths come from the file: bound them before allocating.
        let start = self.block_offsets[b] + BLOCK_HEADER_BYTES as u64;
        if start + u64::from(clen) > self.quant_offset {
            return Err(corrupt(
                path,
                format!("block {b}: {clen} bytes run past the blocks section"),
            ));
        }
        if rlen as usize > MAX_BLOCK_RAW_BYTES {
            return Err(corrupt(
                path,
                format!("block {b}: {rlen} raw bytes is more than a block can hold"),
            ));
        }
        let mut compressed = vec![0u8; clen as usize];
        self.file
            .read_exact_at(&mut compressed, start)
            .map_err(|e| corrupt(path, format!("block {b}: cannot read {clen} bytes: {e}")))?;
        if crc32fast::hash(&compressed) != crc {
            return Err(corrupt(path, format!("block {b}: checksum mismatch")));
        }
        let raw = zstd::bulk::decompress(&compressed, rlen as usize)
            .map_err(|e| corrupt(path, format!("block {b}: cannot decompress: {e}")))?;
        if raw.len() != rlen as usize {
            return Err(corrupt(
                path,
                format!("block {b}: {} bytes, header says {rlen}", raw.len()),
            ));
        }
        Ok(raw)
    }

    /// The records of block `b`, decoded.
    fn block_memories(&self, b: usize) -> Result<Vec<Memory>, EngineError> {
        let path = &self.info.path;
        let raw = self.read_block(b)?;
        let mut out = Vec::new();
        let mut at = 0usize;
        while at < raw.len() {
            let bad = || {
                corrupt(
                    path,
                    format!("block {b}: record {} is malformed", out.len()),
                )
            };
            if raw.len() < at + 4 {
                return Err(bad());
            }
            let n = u32_at(&raw, at) as usize;
            at += 4;
            if raw.len() < at + n || n < 8 {
                return Err(bad());
            }
            let lsn = Lsn::new(u64_at(&raw, at));
            let mut m = codec::decode_memory(&raw[at + 8..at + n], lsn)
                .map_err(|e| corrupt(path, format!("block {b}: {e}")))?;
            m.tier = Tier::Cold;
            out.push(m);
            at += n;
        }
        Ok(out)
    }

    /// The memory `id`, if this segment holds it.
    pub fn get(&self, id: &Uuid) -> Result<Option<Memory>, EngineError> {
        let Ok(pos) = self.index.binary_search_by_key(id, |(i, _, _)| *i) else {
            return Ok(None);
        };
        let (_, b, r) = self.index[pos];
        let memories = self.block_memories(b as usize)?;
        memories
            .into_iter()
            .nth(r as usize)
            .filter(|m| m.id == *id)
            .map(Some)
            .ok_or_else(|| {
                corrupt(
                    &self.info.path,
                    format!("block {b}: record {r} is not {id}"),
                )
            })
    }

    /// Every memory, block by block (export, compaction, checks).
    pub fn for_each(
        &self,
        mut f: impl FnMut(Memory) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        for b in 0..self.info.blocks {
            for m in self.block_memories(b)? {
                f(m)?;
            }
        }
        Ok(())
    }

    /// The `k` memories whose quantized vectors are most similar (cosine) to `query`, among
    /// those `accept` allows, re-ranked with their f32 vectors: (id, similarity), best first.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        accept: impl Fn(&Uuid) -> bool,
    ) -> Result<Vec<(Uuid, f32)>, EngineError> {
        if query.len() != self.info.dimensions || k == 0 {
            return Ok(Vec::new());
        }
        let (_, codes) = quantize(query);
        let mut rough = self.rough(&codes, k * 4, accept)?;
        rough.sort_by_key(|(_, id)| *id);
        let ids: Vec<Uuid> = rough.into_iter().map(|(_, id)| id).collect();
        let mut exact = self.exact(query, &ids)?;
        exact.sort_by(|a, b| b.1.total_cmp(&a.1));
        exact.truncate(k);
        Ok(exact)
    }

    /// First pass: cosine of the i8 codes against the query's codes (integer multiply-adds),
    /// for every entry `accept` allows; the best `n` as (approximate similarity, id).
    pub fn rough(
        &self,
        query_codes: &[i8],
        n: usize,
        accept: impl Fn(&Uuid) -> bool,
    ) -> Result<Vec<(f32, Uuid)>, EngineError> {
        let path = &self.info.path;
        let dimensions = self.info.dimensions;
        if query_codes.len() != dimensions || n == 0 {
            return Ok(Vec::new());
        }
        let entry = 16 + 4 + dimensions;
        let q_norm = (i8_dot_norm(query_codes, query_codes).0 as f32)
            .sqrt()
            .max(f32::MIN_POSITIVE);
        // Read in chunks of whole entries, so memory stays bounded for large segments; the
        // checksum covers the whole section.
        let chunk_entries = ((1 << 20) / entry).max(1);
        let mut buf = vec![0u8; chunk_entries * entry];
        let mut crc = crc32fast::Hasher::new();
        let mut top: std::collections::BinaryHeap<std::cmp::Reverse<(OrdF32, Uuid)>> =
            std::collections::BinaryHeap::with_capacity(n + 1);
        let mut at = 0u64;
        while at < self.quant_len {
            let len = (self.quant_len - at).min(buf.len() as u64) as usize;
            let chunk = &mut buf[..len];
            self.file
                .read_exact_at(chunk, self.quant_offset + at)
                .map_err(|e| EngineError::io(path, e))?;
            crc.update(chunk);
            at += len as u64;
            for e in chunk.chunks_exact(entry) {
                let codes: &[i8] = as_i8(&e[20..]);
                let (dot, norm) = i8_dot_norm(codes, query_codes);
                let s = if norm > 0 {
                    dot as f32 / ((norm as f32).sqrt() * q_norm)
                } else {
                    0.0
                };
                // Score first: the filter (hash lookups) runs only for entries good enough to
                // enter the top, which once it is full is a small share of them.
                let full = top.len() >= n;
                if full && top.peek().is_some_and(|w| s <= w.0 .0 .0) {
                    continue;
                }
                let id = Uuid::from_slice(&e[..16])
                    .map_err(|_| corrupt(path, "quantized vectors: bad id"))?;
                if !accept(&id) {
                    continue;
                }
                if full {
                    top.pop();
                }
                top.push(std::cmp::Reverse((OrdF32(s), id)));
            }
        }
        if crc.finalize() != self.quant_crc {
            return Err(corrupt(path, "quantized vectors: checksum mismatch"));
        }
        Ok(top.into_iter().map(|r| (r.0 .0 .0, r.0 .1)).collect())
    }

    /// Second pass: exact cosine with the f32 originals of `ids` (sorted), block by block.
    pub fn exact(&self, query: &[f32], ids: &[Uuid]) -> Result<Vec<(Uuid, f32)>, EngineError> {
        let qn = query
            .iter()
            .map(|x| x * x)
            .sum::<f32>()
            .sqrt()
            .max(f32::MIN_POSITIVE);
        let mut by_block: std::collections::BTreeMap<u32, Vec<Uuid>> =
            std::collections::BTreeMap::new();
        for id in ids {
            if let Ok(pos) = self.index.binary_search_by_key(id, |(i, _, _)| *i) {
                by_block.entry(self.index[pos].1).or_default().push(*id);
            }
        }
        let mut exact = Vec::with_capacity(ids.len());
        for (b, ids) in by_block {
            for m in self.block_memories(b as usize)? {
                if let (true, Some(v)) = (ids.contains(&m.id), &m.embedding) {
                    let vn = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                    let dot: f32 = v.iter().zip(query).map(|(a, b)| a * b).sum();
                    exact.push((m.id, if vn > 0.0 { dot / (vn * qn) } else { 0.0 }));
                }
            }
        }
        Ok(exact)
    }

    /// Checks every block and the quantized section; one report per block.
    pub fn inspect(&self) -> Result<(Vec<BlockReport>, Option<String>), EngineError> {
        let mut reports = Vec::with_capacity(self.info.blocks);
        for b in 0..self.info.blocks {
            let (clen, rlen, records, _) = self.block_header(b)?;
            let problem = match self.block_memories(b) {
                Ok(m) if m.len() == records as usize => None,
                Ok(m) => Some(format!("holds {} records, header says {records}", m.len())),
                Err(e) => Some(e.to_string()),
            };
            reports.push(BlockReport {
                index: b,
                offset: self.block_offsets[b],
                compressed_bytes: clen,
                raw_bytes: rlen,
                records,
                problem,
            });
        }
        let mut quant = vec![0u8; self.quant_len as usize];
        self.file
            .read_exact_at(&mut quant, self.quant_offset)
            .map_err(|e| EngineError::io(&self.info.path, e))?;
        let quant_problem = (crc32fast::hash(&quant) != self.quant_crc)
            .then(|| "quantized vectors: checksum mismatch".to_owned());
        Ok((reports, quant_problem))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{content_hash, EmbeddingStatus, Status};

    fn memory(i: u64, dimensions: usize) -> Memory {
        let content = format!(
            "Cold memory number {i}: the orchard by the river, apples and pears in autumn."
        );
        Memory {
            id: Uuid::now_v7(),
            namespace: "cold-test".into(),
            content_hash: content_hash(&content),
            content,
            embedding: (!i.is_multiple_of(5)).then(|| {
                (0..dimensions)
                    .map(|d| ((i * 31 + d as u64) % 17) as f32 - 8.0)
                    .collect()
            }),
            embedding_status: if !i.is_multiple_of(5) {
                EmbeddingStatus::Ready
            } else {
                EmbeddingStatus::None
            },
            embedding_model: None,
            tier: Tier::Cold,
            status: Status::Active,
            importance: 0.25,
            access_count: i,
            last_accessed_at_us: Some(1_700_000_000_000_000 + i as i64),
            metadata_json: format!(r#"{{"n":{i},"speaker":"Mel"}}"#),
            tags: vec!["cold".into(), format!("t{}", i % 3)],
            parent_id: None,
            created_at_us: 1_600_000_000_000_000,
            updated_at_us: 1_600_000_000_000_001,
            expires_at_us: None,
            version: 3,
            superseded_by: None,
            actor: None,
            lsn: Lsn::new(1000 + i),
        }
    }

    #[test]
    fn round_trip_every_field_and_compression() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0000000000000001.cold");
        let memories: Vec<Memory> = (0..2000).map(|i| memory(i, 16)).collect();
        let info = write_segment(&path, 1, 16, 3, &memories).expect("write");
        assert_eq!(info.memories, 2000);
        assert!(info.blocks > 1, "{info:?}");
        assert!(info.bytes < info.raw_bytes, "compressed: {info:?}");
        let seg = Segment::open(&path).expect("open");
        assert_eq!(seg.info(), &info);
        for m in &memories {
            assert_eq!(seg.get(&m.id).expect("read").as_ref(), Some(m));
        }
        assert_eq!(seg.get(&Uuid::now_v7()).expect("read"), None);
        let mut n = 0;
        seg.for_each(|_| {
            n += 1;
            Ok(())
        })
        .expect("scan");
        assert_eq!(n, 2000);
        let (blocks, quant) = seg.inspect().expect("inspect");
        assert!(blocks.iter().all(|b| b.problem.is_none()) && quant.is_none());
    }

    #[test]
    fn quantized_search_then_exact_rerank_finds_the_nearest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seg.cold");
        let memories: Vec<Memory> = (0..1000).map(|i| memory(i, 16)).collect();
        write_segment(&path, 2, 16, 3, &memories).expect("write");
        let seg = Segment::open(&path).expect("open");
        for m in memories
            .iter()
            .filter(|m| m.embedding.is_some())
            .step_by(50)
        {
            let q = m.embedding.clone().expect("vector");
            let hits = seg.search(&q, 5, |_| true).expect("search");
            assert!((hits[0].1 - 1.0).abs() < 1e-5, "{hits:?}");
            // Identical vectors repeat in this data; the memory itself must be among the ties.
            let best: Vec<Uuid> = hits
                .iter()
                .filter(|h| (h.1 - 1.0).abs() < 1e-5)
                .map(|h| h.0)
                .collect();
            let twins = memories
                .iter()
                .filter(|x| x.embedding.as_ref() == Some(&q))
                .count();
            assert!(best.contains(&m.id) || twins > 5, "{hits:?}");
        }
        let only = memories[1].id;
        let hits = seg
            .search(&memories[1].embedding.clone().expect("v"), 5, |id| {
                *id == only
            })
            .expect("search");
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![only]);
    }

    #[test]
    fn a_flipped_bit_is_corruption_naming_segment_and_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seg.cold");
        let memories: Vec<Memory> = (0..2000).map(|i| memory(i, 16)).collect();
        write_segment(&path, 3, 16, 3, &memories).expect("write");
        let seg = Segment::open(&path).expect("open");
        let target = seg.block_offsets[1] + BLOCK_HEADER_BYTES as u64 + 10;
        drop(seg);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[target as usize] ^= 0x10;
        std::fs::write(&path, &bytes).expect("write");
        let seg = Segment::open(&path).expect("footer intact");
        let in_block_1 = seg.index.iter().find(|(_, b, _)| *b == 1).expect("entry").0;
        let err = seg.get(&in_block_1).expect_err("corrupt");
        let text = err.to_string();
        assert!(
            text.contains("seg.cold") && text.contains("block 1") && text.contains("checksum"),
            "{text}"
        );
        let (blocks, _) = seg.inspect().expect("inspect");
        assert!(blocks[1].problem.is_some() && blocks[0].problem.is_none());
        // A damaged footer refuses to open.
        let mut bytes = std::fs::read(&path).expect("read");
        let n = bytes.len();
        bytes[n - TRAILER_BYTES - 3] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        assert!(Segment::open(&path)
            .expect_err("footer")
            .to_string()
            .contains("footer"));
    }

    #[test]
    fn quantization_error_is_small() {
        let v: Vec<f32> = (0..384)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let (scale, codes) = quantize(&v);
        for (x, c) in v.iter().zip(&codes) {
            assert!((x - f32::from(*c) * scale).abs() <= scale / 2.0 + 1e-6);
        }
        assert_eq!(quantize(&[0.0; 4]), (0.0, vec![0; 4]));
    }
}

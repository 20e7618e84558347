//! The cold tier: immutable segments (see [`segment`]) listed by a manifest, and the map of
//! which segment holds each cold memory's live copy.
//!
//! - A segment is written whole before the WAL record that seals it (`ColdSeal`) or compacts
//!   into it (`ColdCompact`); applying the record only registers the file. If the file is
//!   missing at replay (a crash before it was written, or a point-in-time restore past the
//!   snapshot), it is rebuilt from the record: a seal carries full images, a compaction names
//!   the ids it keeps from segments the cold tier already has.
//! - The manifest (`cold/MANIFEST`, JSON, replaced atomically) lists the live segments and the
//!   LSN the list reflects. A segment dropped by compaction is unlinked only after a manifest
//!   without it is durable.
//! - Which segment holds the live copy of a memory is in RocksDB (`cold_loc`, written in the
//!   same batch that removes the warm copy), mirrored here in memory. An entry of a segment that
//!   is not its id's location is dead: updates, deletes and promotions leave such tombstones,
//!   and compaction drops them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use engram_wal::Lsn;
use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

pub(crate) mod segment;

use crate::idhash::IdMap;
use crate::model::{Memory, SegmentId, Tier};
use crate::EngineError;
use segment::{write_segment, Segment};

const MANIFEST: &str = "MANIFEST";
const MANIFEST_FORMAT: u64 = 1;

/// One live segment, as listed for `GET /api/v1/tiers` and compaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColdSegmentStats {
    pub id: SegmentId,
    pub entries: usize,
    pub live: usize,
    pub bytes: u64,
}

#[derive(Default)]
struct State {
    segments: BTreeMap<SegmentId, Arc<Segment>>,
    /// Live entries per segment.
    live: HashMap<SegmentId, usize>,
    /// Changed since the manifest was last written.
    dirty: bool,
}

pub(crate) struct ColdTier {
    dir: PathBuf,
    dimensions: usize,
    zstd_level: i32,
    state: RwLock<State>,
    locations: RwLock<IdMap<Uuid, SegmentId>>,
    /// Serializes manifest writes; holds the LSN of the last one.
    manifest_lsn: Mutex<Lsn>,
    next_id: AtomicU64,
    /// Test hook: consulted before a segment file is written.
    faults: Option<engram_wal::FaultInjector>,
    /// The store's own vectors were dropped: segments are written without them.
    strip_vectors: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for ColdTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColdTier")
            .field("dir", &self.dir)
            .field("segments", &self.state.read().segments.len())
            .finish_non_exhaustive()
    }
}

pub(crate) fn cold_segment_file_name(id: SegmentId) -> String {
    format!("{:016}.cold", id.0)
}

fn segment_id_of(name: &str) -> Option<SegmentId> {
    name.strip_suffix(".cold")?.parse().ok().map(SegmentId)
}

/// Reads a manifest: (LSN, segment ids). `None` if there is none.
pub(crate) fn read_manifest(dir: &Path) -> Result<Option<(Lsn, Vec<SegmentId>)>, EngineError> {
    let path = dir.join(MANIFEST);
    match std::fs::read(&path) {
        Ok(bytes) => parse_manifest(&bytes, &path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EngineError::io(&path, e)),
    }
}

/// Parses the bytes of the manifest at `path`: (LSN, segment ids).
pub(crate) fn parse_manifest(
    bytes: &[u8],
    path: &Path,
) -> Result<Option<(Lsn, Vec<SegmentId>)>, EngineError> {
    let corrupt = |detail: &str| EngineError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.to_owned(),
    };
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|_| corrupt("not valid JSON"))?;
    if v["format"].as_u64() != Some(MANIFEST_FORMAT) {
        return Err(corrupt("unknown format"));
    }
    let lsn = Lsn::new(v["lsn"].as_u64().ok_or_else(|| corrupt("no lsn"))?);
    let ids = v["segments"]
        .as_array()
        .ok_or_else(|| corrupt("no segment list"))?
        .iter()
        .map(|s| {
            s["id"]
                .as_u64()
                .map(SegmentId)
                .ok_or_else(|| corrupt("segment without id"))
        })
        .collect::<Result<Vec<SegmentId>, _>>()?;
    let body_crc = v["crc32"].as_u64();
    let expected = crc32fast::hash(
        serde_json::to_string(&v["segments"])
            .unwrap_or_default()
            .as_bytes(),
    );
    if body_crc != Some(u64::from(expected)) {
        return Err(corrupt("segment list checksum mismatch"));
    }
    Ok(Some((lsn, ids)))
}

fn manifest_bytes(state: &State, lsn: Lsn) -> Vec<u8> {
    manifest_json(
        lsn,
        state
            .segments
            .iter()
            .map(|(id, s)| (*id, s.info().memories, s.info().bytes)),
    )
}

/// The manifest listing `segments` (id, memories, bytes) as of `lsn`.
pub(crate) fn manifest_json(
    lsn: Lsn,
    segments: impl IntoIterator<Item = (SegmentId, usize, u64)>,
) -> Vec<u8> {
    let list: Vec<serde_json::Value> = segments
        .into_iter()
        .map(|(id, memories, bytes)| {
            serde_json::json!({
                "id": id.0,
                "file": cold_segment_file_name(id),
                "memories": memories,
                "bytes": bytes,
            })
        })
        .collect();
    let segments = serde_json::Value::Array(list);
    let crc = crc32fast::hash(
        serde_json::to_string(&segments)
            .unwrap_or_default()
            .as_bytes(),
    );
    let body = serde_json::json!({
        "format": MANIFEST_FORMAT,
        "lsn": lsn,
        "segments": segments,
        "crc32": crc,
    });
    serde_json::to_vec_pretty(&body).unwrap_or_default()
}

impl ColdTier {
    /// Opens the cold tier in `dir`: the manifest's segments; returns the LSN it reflects
    /// (`None` without a manifest: no segment was ever applied, so the tier needs no record
    /// the other tiers do not).
    pub(crate) fn open(
        dir: &Path,
        dimensions: usize,
        zstd_level: i32,
    ) -> Result<(ColdTier, Option<Lsn>), EngineError> {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
        let manifest = read_manifest(dir)?;
        let lsn = manifest.as_ref().map(|(l, _)| *l);
        let ids = manifest.map(|(_, ids)| ids).unwrap_or_default();
        let mut state = State::default();
        let mut max_id = 0;
        for id in ids {
            let seg = Segment::open(&dir.join(cold_segment_file_name(id)))?;
            state.live.insert(id, seg.info().memories);
            state.segments.insert(id, Arc::new(seg));
            max_id = max_id.max(id.0);
        }
        // Files not (yet) listed may be named by WAL records still to replay: never reuse an id.
        for entry in std::fs::read_dir(dir).map_err(|e| EngineError::io(dir, e))? {
            let entry = entry.map_err(|e| EngineError::io(dir, e))?;
            if let Some(id) = entry.file_name().to_str().and_then(segment_id_of) {
                max_id = max_id.max(id.0);
            }
        }
        Ok((
            ColdTier {
                dir: dir.to_path_buf(),
                dimensions,
                zstd_level,
                state: RwLock::new(state),
                locations: RwLock::new(IdMap::default()),
                manifest_lsn: Mutex::new(lsn.unwrap_or(Lsn::ZERO)),
                next_id: AtomicU64::new(max_id + 1),
                faults: None,
                strip_vectors: std::sync::atomic::AtomicBool::new(false),
            },
            lsn,
        ))
    }

    /// Removes the file of a segment written but never logged: no record names it, so nothing
    /// else refers to it (best effort; a file left over is removed as an orphan at open).
    pub(crate) fn discard_unlogged(&self, segment: SegmentId) {
        let _ = std::fs::remove_file(self.dir.join(cold_segment_file_name(segment)));
    }

    /// Loads the persisted locations (after replay) and counts each segment's live entries.
    pub(crate) fn load_locations(&self, locations: Vec<(Uuid, SegmentId)>) {
        let mut state = self.state.write();
        let mut live: HashMap<SegmentId, usize> =
            state.segments.keys().map(|id| (*id, 0)).collect();
        let mut map = IdMap::default();
        map.reserve(locations.len());
        for (id, seg) in locations {
            *live.entry(seg).or_default() += 1;
            map.insert(id, seg);
        }
        state.live = live;
        *self.locations.write() = map;
    }

    /// Deletes segment files the manifest does not list and leftover temp files. Called once
    /// replay has registered every segment the log names.
    pub(crate) fn remove_orphans(&self) -> Result<usize, EngineError> {
        let state = self.state.read();
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir).map_err(|e| EngineError::io(&self.dir, e))? {
            let entry = entry.map_err(|e| EngineError::io(&self.dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let orphan = match segment_id_of(name) {
                Some(id) => !state.segments.contains_key(&id),
                None => name.ends_with(".tmp"),
            };
            if orphan {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(|e| EngineError::io(&path, e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// A fresh segment id (never one a file or the manifest used).
    pub(crate) fn allocate_id(&self) -> SegmentId {
        SegmentId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Installs the test hook that fails segment writes.
    pub(crate) fn set_fault_injector(&mut self, faults: Option<engram_wal::FaultInjector>) {
        self.faults = faults;
    }

    /// Writes `memories` as segment `id` (before its WAL record is logged).
    pub(crate) fn write(&self, id: SegmentId, memories: &[Memory]) -> Result<(), EngineError> {
        if let Some(f) = &self.faults {
            f(engram_wal::IoOp::SegmentWrite).map_err(|e| EngineError::io(&self.dir, e))?;
        }
        let stripped: Vec<Memory>;
        let memories = if self
            .strip_vectors
            .load(std::sync::atomic::Ordering::Acquire)
            && memories.iter().any(|m| m.embedding.is_some())
        {
            stripped = memories
                .iter()
                .map(|m| Memory {
                    embedding: None,
                    embedding_status: crate::model::EmbeddingStatus::None,
                    embedding_model: None,
                    ..m.clone()
                })
                .collect();
            &stripped
        } else {
            memories
        };
        write_segment(
            &self.dir.join(cold_segment_file_name(id)),
            id.0,
            self.dimensions,
            self.zstd_level,
            memories,
        )?;
        Ok(())
    }

    /// From now on segments are written without the store's own vectors (they were dropped).
    pub(crate) fn strip_vectors(&self) {
        self.strip_vectors
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// The segment file `id` if it exists and holds exactly `expected` entries.
    fn open_existing(&self, id: SegmentId, expected: usize) -> Option<Segment> {
        let path = self.dir.join(cold_segment_file_name(id));
        match Segment::open(&path) {
            Ok(seg) if seg.info().segment_id == id.0 && seg.info().memories == expected => {
                Some(seg)
            }
            Ok(_) => None,
            Err(e) => {
                if path.exists() {
                    tracing::warn!(error = %e, "rebuilding a cold segment from the log");
                }
                None
            }
        }
    }

    /// Applies a seal: registers segment `id`, rebuilding it from `memories` if its file is
    /// missing or incomplete. Idempotent.
    pub(crate) fn apply_seal(
        &self,
        id: SegmentId,
        memories: &[(Memory, Tier)],
    ) -> Result<(), EngineError> {
        if self.state.read().segments.contains_key(&id) {
            return Ok(());
        }
        // The manifest follows at the next checkpoint (or compaction): until then a crash
        // replays this record, which finds the segment file and registers it again. The images
        // are copied only when the file must be rebuilt.
        self.register(id, memories.len(), || {
            Ok(memories.iter().map(|(m, _)| m.clone()).collect())
        })
    }

    /// Registers segment `id`: its file if it holds `expected` entries, else one written from
    /// `build()`.
    fn register(
        &self,
        id: SegmentId,
        expected: usize,
        build: impl FnOnce() -> Result<Vec<Memory>, EngineError>,
    ) -> Result<(), EngineError> {
        let seg = match self.open_existing(id, expected) {
            Some(seg) => seg,
            None => {
                self.write(id, &build()?)?;
                Segment::open(&self.dir.join(cold_segment_file_name(id)))?
            }
        };
        self.next_id.fetch_max(id.0 + 1, Ordering::Relaxed);
        let mut state = self.state.write();
        state.live.entry(id).or_insert(0);
        state.segments.insert(id, Arc::new(seg));
        state.dirty = true;
        Ok(())
    }

    /// Applies a compaction, first half: registers segment `id` (rebuilt from `sources` if its
    /// file is missing or holds other entries). The sources stay until [`Self::drop_segments`],
    /// so a reader holding an old location still finds the memory. Idempotent.
    pub(crate) fn register_compacted(
        &self,
        id: Option<SegmentId>,
        sources: &[SegmentId],
        kept: &[Uuid],
    ) -> Result<(), EngineError> {
        let Some(id) = id.filter(|id| !self.state.read().segments.contains_key(id)) else {
            return Ok(());
        };
        self.register(id, kept.len(), || self.collect(sources, kept))
    }

    /// Second half: forgets `sources`, writes the manifest, then unlinks their files.
    pub(crate) fn drop_segments(&self, lsn: Lsn, sources: &[SegmentId]) -> Result<(), EngineError> {
        {
            let mut state = self.state.write();
            for s in sources {
                state.segments.remove(s);
                state.live.remove(s);
            }
            state.dirty = true;
        }
        self.write_manifest(lsn)?;
        for s in sources {
            let path = self.dir.join(cold_segment_file_name(*s));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(EngineError::io(&path, e)),
            }
        }
        Ok(())
    }

    /// The memories `kept` from segments `sources`, in id order.
    pub(crate) fn collect(
        &self,
        sources: &[SegmentId],
        kept: &[Uuid],
    ) -> Result<Vec<Memory>, EngineError> {
        let want: HashSet<Uuid> = kept.iter().copied().collect();
        let segments: Vec<Arc<Segment>> = {
            let state = self.state.read();
            sources
                .iter()
                .map(|s| {
                    state
                        .segments
                        .get(s)
                        .cloned()
                        .ok_or_else(|| EngineError::Corrupt {
                            path: self.dir.join(cold_segment_file_name(*s)),
                            detail: "a compaction names a segment the cold tier does not have"
                                .to_owned(),
                        })
                })
                .collect::<Result<_, _>>()?
        };
        // An id may have entries in several sources (it left cold and came back): the live
        // copy is the newest, as every return to cold follows a change that raised its LSN.
        let mut newest: HashMap<Uuid, Memory> = HashMap::with_capacity(kept.len());
        for seg in segments {
            seg.for_each(|m| {
                if want.contains(&m.id) && newest.get(&m.id).is_none_or(|o| o.lsn < m.lsn) {
                    newest.insert(m.id, m);
                }
                Ok(())
            })?;
        }
        let mut out: Vec<Memory> = newest.into_values().collect();
        if out.len() != kept.len() {
            return Err(EngineError::Corrupt {
                path: self.dir.clone(),
                detail: format!(
                    "a compaction keeps {} memories, its sources hold {}",
                    kept.len(),
                    out.len()
                ),
            });
        }
        out.sort_by_key(|m| m.id);
        Ok(out)
    }

    /// Records that segment `segment` holds the live copy of `id` (replacing any older one).
    pub(crate) fn set_location(&self, id: Uuid, segment: SegmentId) {
        let old = self.locations.write().insert(id, segment);
        let mut state = self.state.write();
        if let Some(old) = old {
            if let Some(n) = state.live.get_mut(&old) {
                *n = n.saturating_sub(1);
            }
        }
        *state.live.entry(segment).or_default() += 1;
    }

    /// `id` left the cold tier: its entry is dead.
    pub(crate) fn remove_location(&self, id: &Uuid) {
        let old = self.locations.write().remove(id);
        if let Some(old) = old {
            if let Some(n) = self.state.write().live.get_mut(&old) {
                *n = n.saturating_sub(1);
            }
        }
    }

    pub(crate) fn location(&self, id: &Uuid) -> Option<SegmentId> {
        self.locations.read().get(id).copied()
    }

    pub(crate) fn contains(&self, id: &Uuid) -> bool {
        self.locations.read().contains_key(id)
    }

    /// `id`'s share of the segment holding it: the segment's bytes on disk divided by the
    /// entries it was written with. `None` if it is not in this tier.
    pub(crate) fn stored_bytes(&self, id: &Uuid) -> Option<u64> {
        let seg = self.location(id)?;
        let state = self.state.read();
        let info = state.segments.get(&seg)?.info();
        Some(info.bytes / info.memories.max(1) as u64)
    }

    pub(crate) fn len(&self) -> usize {
        self.locations.read().len()
    }

    /// Ids whose live copy is in `segment`.
    pub(crate) fn live_ids(&self, segments: &[SegmentId]) -> Vec<Uuid> {
        let set: HashSet<SegmentId> = segments.iter().copied().collect();
        let mut ids: Vec<Uuid> = self
            .locations
            .read()
            .iter()
            .filter(|(_, s)| set.contains(s))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The live cold copy of `id` (image as sealed; access state is overlaid by the caller).
    pub(crate) fn get(&self, id: &Uuid) -> Result<Option<Memory>, EngineError> {
        let Some(seg_id) = self.location(id) else {
            return Ok(None);
        };
        let Some(seg) = self.state.read().segments.get(&seg_id).cloned() else {
            return Ok(None);
        };
        seg.get(id)
    }

    /// The `k` most similar live cold memories that `accept` allows: (id, exact cosine). One
    /// i8 pass over every segment keeps the best `4k` overall; only those are re-ranked with
    /// their f32 originals.
    pub(crate) fn search(
        &self,
        query: &[f32],
        k: usize,
        accept: impl Fn(&Uuid) -> bool,
    ) -> Result<Vec<(Uuid, f32)>, EngineError> {
        if query.len() != self.dimensions || k == 0 {
            return Ok(Vec::new());
        }
        let segments = self.live_segments();
        let (_, codes) = crate::vector::quantize(query);
        let pool = k * 4;
        let mut rough: Vec<(f32, Uuid, usize)> = Vec::new();
        {
            for (i, (seg_id, seg)) in segments.iter().enumerate() {
                // The location map is read-locked per segment, not for the whole scan: seals and
                // promotions apply in between.
                let locations = self.locations.read();
                let hits = seg.rough(&codes, pool, |id| {
                    locations.get(id) == Some(seg_id) && accept(id)
                })?;
                drop(locations);
                rough.extend(hits.into_iter().map(|(s, id)| (s, id, i)));
                if rough.len() > pool * 4 {
                    rough.select_nth_unstable_by(pool - 1, |a, b| b.0.total_cmp(&a.0));
                    rough.truncate(pool);
                }
            }
        }
        if rough.len() > pool {
            rough.select_nth_unstable_by(pool - 1, |a, b| b.0.total_cmp(&a.0));
            rough.truncate(pool);
        }
        let mut by_segment: BTreeMap<usize, Vec<Uuid>> = BTreeMap::new();
        for (_, id, i) in rough {
            by_segment.entry(i).or_default().push(id);
        }
        let mut all = Vec::with_capacity(pool);
        for (i, mut ids) in by_segment {
            ids.sort_unstable();
            all.extend(segments[i].1.exact(query, &ids)?);
        }
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        all.truncate(k);
        Ok(all)
    }

    /// The live segments as of now (a compaction may drop some while the caller reads them:
    /// the `Arc` keeps their files open).
    fn live_segments(&self) -> Vec<(SegmentId, Arc<Segment>)> {
        self.state
            .read()
            .segments
            .iter()
            .map(|(id, s)| (*id, Arc::clone(s)))
            .collect()
    }

    /// Every live segment.
    pub(crate) fn segment_stats(&self) -> Vec<ColdSegmentStats> {
        let state = self.state.read();
        state
            .segments
            .iter()
            .map(|(id, s)| ColdSegmentStats {
                id: *id,
                entries: s.info().memories,
                live: state.live.get(id).copied().unwrap_or(0),
                bytes: s.info().bytes,
            })
            .collect()
    }

    /// Every live memory, segment by segment (each segment's live entries in id order).
    pub(crate) fn scan(
        &self,
        mut f: impl FnMut(Memory) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let segments = self.live_segments();
        for (seg_id, seg) in segments {
            seg.for_each(|m| {
                if self.location(&m.id) == Some(seg_id) {
                    f(m)
                } else {
                    Ok(())
                }
            })?;
        }
        Ok(())
    }

    /// The live entries of segment `seg` among `want` (those whose live copy it still holds).
    /// A segment compacted away meanwhile gives nothing: the caller reads those ids again.
    pub(crate) fn scan_some(
        &self,
        seg: SegmentId,
        want: &HashSet<Uuid>,
        mut f: impl FnMut(Memory) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let Some(segment) = self.state.read().segments.get(&seg).cloned() else {
            return Ok(());
        };
        segment.for_each(|m| {
            if want.contains(&m.id) && self.location(&m.id) == Some(seg) {
                f(m)
            } else {
                Ok(())
            }
        })
    }

    /// Writes the manifest for `lsn` (and the current segment list), if anything changed.
    pub(crate) fn write_manifest(&self, lsn: Lsn) -> Result<(), EngineError> {
        let mut last = self.manifest_lsn.lock();
        let bytes = {
            let mut state = self.state.write();
            if !state.dirty && lsn <= *last {
                return Ok(());
            }
            state.dirty = false;
            manifest_bytes(&state, lsn.max(*last))
        };
        let path = self.dir.join(MANIFEST);
        engram_wal::durable::write_atomic(&path, &bytes).map_err(|e| EngineError::io(&path, e))?;
        *last = lsn.max(*last);
        Ok(())
    }

    /// Hard-links every live segment into `dest` (a snapshot) and writes a manifest there
    /// listing exactly them, for `lsn` (an LSN every cold change up to which is applied).
    pub(crate) fn link_into(&self, dest: &Path, lsn: Lsn) -> Result<Vec<PathBuf>, EngineError> {
        std::fs::create_dir_all(dest).map_err(|e| EngineError::io(dest, e))?;
        let state = self.state.read();
        let mut files = Vec::new();
        for id in state.segments.keys() {
            let name = cold_segment_file_name(*id);
            let to = dest.join(&name);
            std::fs::hard_link(self.dir.join(&name), &to).map_err(|e| EngineError::io(&to, e))?;
            files.push(to);
        }
        let to = dest.join(MANIFEST);
        let bytes = manifest_bytes(&state, lsn);
        drop(state);
        engram_wal::durable::write_atomic(&to, &bytes).map_err(|e| EngineError::io(&to, e))?;
        files.push(to);
        Ok(files)
    }

    /// Total bytes of live segment files.
    pub(crate) fn disk_bytes(&self) -> u64 {
        self.state
            .read()
            .segments
            .values()
            .map(|s| s.info().bytes)
            .sum()
    }

    /// (id, segment) of every location, for checks.
    pub(crate) fn locations(&self) -> Vec<(Uuid, SegmentId)> {
        self.locations
            .read()
            .iter()
            .map(|(i, s)| (*i, *s))
            .collect()
    }

    /// Whether segment `seg` is live and has an entry for `id`.
    pub(crate) fn segment_has(&self, seg: SegmentId, id: &Uuid) -> bool {
        self.state
            .read()
            .segments
            .get(&seg)
            .is_some_and(|s| s.contains(id))
    }
}

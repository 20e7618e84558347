//! Vector spaces beside the store's own: the vectors an embedding migration computes with
//! another model, kept apart from the tiers' vectors so the two are never ranked together.
//!
//! - `space_vectors`: `space u32 BE | id` → `content sha256 | crc u32 | f32 LE…`: the memory's
//!   vector in that space and the hash of the content it was computed from;
//! - `space_dirty`: `space u32 BE | id` → `lsn u64 LE`: a memory created or updated since the
//!   space was registered, written in the apply batch of the change (so replay restores it);
//! - `meta`: `space/ | space u32 BE` → the space's [`SpaceRecord`] (JSON);
//! - `meta`: `own_vectors_dropped` → [`OwnDropped`] (JSON), once the store's own vectors were
//!   given up for a space's (`Op::DropOwnVectors`, written in the batch of its LSN).
//!
//! The rows the worker computes are derived data: they are written outside Engram's WAL (with
//! RocksDB's own WAL off), so a crash loses the rows written since the last flush, and the
//! worker computes them again (a row names the content it embeds; a mismatch is work). A row a
//! client sent with a write while the space was active comes from a WAL record
//! (`Op::SpaceVector`), applied in the batch of its LSN, so replay restores it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{rocks_err, WarmBatch, WarmTier, CF_META, CF_NS_INDEX};
use crate::EngineError;

pub(super) const CF_SPACE_VECTORS: &str = "space_vectors";
pub(super) const CF_SPACE_DIRTY: &str = "space_dirty";
const KEY_SPACE_PREFIX: &[u8] = b"space/";

/// A registered vector space, as kept in `meta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpaceRecord {
    pub id: u32,
    pub dimensions: u32,
    /// What makes its vectors, opaque to the engine (the server's provider description).
    pub descriptor: String,
    pub paused: bool,
    pub created_at_us: i64,
    /// When a full pass over the store first found nothing left to embed.
    #[serde(default)]
    pub backfilled_at_us: Option<i64>,
    /// The store's searches rank this space's vectors instead of its own.
    #[serde(default)]
    pub active: bool,
}

/// One stored row of a space.
#[derive(Debug, Clone, PartialEq)]
pub struct SpaceRow {
    pub content_hash: [u8; 32],
    pub crc: u32,
    pub vector: Vec<f32>,
}

/// A row to write (`Some`: the content hash and vector) or remove (`None`).
pub type RowUpdate<'a> = (Uuid, Option<([u8; 32], &'a [f32])>);

fn row_key(space: u32, id: &Uuid) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..4].copy_from_slice(&space.to_be_bytes());
    k[4..].copy_from_slice(id.as_bytes());
    k
}

/// The first and last keys a space's rows and marks can have.
fn space_range(space: u32) -> ([u8; 20], [u8; 20]) {
    (row_key(space, &Uuid::nil()), row_key(space, &Uuid::max()))
}

const KEY_OWN_DROPPED: &[u8] = b"own_vectors_dropped";

/// The store's own vectors were dropped for those of a space (see `Op::DropOwnVectors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnDropped {
    pub space: u32,
    /// The space's model: reads name the vectors by it.
    pub model: String,
    /// Every record has lost its own vector (the sweep after the drop is done).
    #[serde(default)]
    pub swept: bool,
}

fn record_key(space: u32) -> Vec<u8> {
    let mut k = KEY_SPACE_PREFIX.to_vec();
    k.extend_from_slice(&space.to_be_bytes());
    k
}

fn encode_row(content_hash: &[u8; 32], vector: &[f32]) -> Vec<u8> {
    let mut v = Vec::with_capacity(36 + vector.len() * 4);
    v.extend_from_slice(content_hash);
    v.extend_from_slice(&crate::vector::vector_crc(vector).to_le_bytes());
    for x in vector {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

fn decode_row(bytes: &[u8]) -> Option<SpaceRow> {
    if bytes.len() < 36 || !(bytes.len() - 36).is_multiple_of(4) {
        return None;
    }
    let content_hash: [u8; 32] = bytes[..32].try_into().ok()?;
    let crc = u32::from_le_bytes(bytes[32..36].try_into().ok()?);
    let vector = bytes[36..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    Some(SpaceRow {
        content_hash,
        crc,
        vector,
    })
}

fn id_of(key: &[u8]) -> Option<Uuid> {
    Some(Uuid::from_bytes(key.get(4..20)?.try_into().ok()?))
}

impl WarmBatch<'_> {
    /// The store's own vectors are dropped for space `space`'s (the sweep still to come).
    pub fn drop_own_vectors(&mut self, space: u32, model: &str) {
        let value = OwnDropped {
            space,
            model: model.to_owned(),
            swept: false,
        };
        self.batch.put_cf(
            self.tier.cf(CF_META),
            KEY_OWN_DROPPED,
            serde_json::to_vec(&value).expect("serializes"),
        );
    }

    /// `id` changed at `lsn`: every live space must look at it again.
    pub fn mark_space_dirty(&mut self, id: &Uuid, lsn: u64) {
        for space in self.tier.spaces.read().iter() {
            self.staged_marks.insert((*space, *id), lsn);
        }
    }

    /// Writes the marks this batch set and nothing cancelled (see `staged_marks`).
    pub(super) fn write_space_marks(&mut self) {
        for ((space, id), lsn) in std::mem::take(&mut self.staged_marks) {
            self.batch.put_cf(
                self.tier.cf(CF_SPACE_DIRTY),
                row_key(space, &id),
                lsn.to_le_bytes(),
            );
        }
    }

    /// A client's vector of `id` in `space` (see `Op::SpaceVector`): the row, and the space's
    /// dirty mark of `id` cleared, since the row answers the change that set it. Nothing for a
    /// space that is gone.
    pub fn put_space_vector(
        &mut self,
        space: u32,
        id: &Uuid,
        content_hash: &[u8; 32],
        vector: &[f32],
    ) {
        if !self.tier.spaces.read().contains(&space) {
            return;
        }
        self.batch.put_cf(
            self.tier.cf(CF_SPACE_VECTORS),
            row_key(space, id),
            encode_row(content_hash, vector),
        );
        self.staged_marks.remove(&(space, *id));
        // A mark an earlier batch wrote is deleted; one this batch set was cancelled above.
        if !matches!(self.tier.space_dirty_mark(space, id), Ok(None)) {
            self.batch
                .delete_cf(self.tier.cf(CF_SPACE_DIRTY), row_key(space, id));
        }
    }

    /// `id` is purged: its vectors in every space go with it.
    pub fn delete_space_rows(&mut self, id: &Uuid) {
        for space in self.tier.spaces.read().iter() {
            self.staged_marks.remove(&(*space, *id));
            self.batch
                .delete_cf(self.tier.cf(CF_SPACE_VECTORS), row_key(*space, id));
            self.batch
                .delete_cf(self.tier.cf(CF_SPACE_DIRTY), row_key(*space, id));
        }
    }
}

impl WarmTier {
    /// Whether (and for which space) the store's own vectors were dropped.
    pub fn own_dropped(&self) -> Result<Option<OwnDropped>, EngineError> {
        let v = self
            .db
            .get_cf(self.cf(CF_META), KEY_OWN_DROPPED)
            .map_err(|e| rocks_err(&self.path, e))?;
        v.map(|v| {
            serde_json::from_slice(&v).map_err(|e| EngineError::Corrupt {
                path: self.path.clone(),
                detail: format!("own_vectors_dropped: {e}"),
            })
        })
        .transpose()
    }

    /// The sweep after a drop of the own vectors is done: recorded durably (a flush).
    pub fn set_own_swept(&self, dropped: &OwnDropped) -> Result<(), EngineError> {
        let value = OwnDropped {
            swept: true,
            ..dropped.clone()
        };
        let result = self
            .db
            .put_cf_opt(
                self.cf(CF_META),
                KEY_OWN_DROPPED,
                serde_json::to_vec(&value).expect("serializes"),
                &self.write_opts,
            )
            .map_err(|e| rocks_err(&self.path, e));
        self.note(&result);
        result?;
        self.flush()
    }

    /// Compacts the column families that held the store's own vectors (the tiers' and the
    /// kept versions') to their bottom level, so the vectors a drop removed stop taking disk
    /// space (a flush first).
    pub fn compact_own_vectors(&self) -> Result<(), EngineError> {
        self.flush()?;
        let mut opts = rocksdb::CompactOptions::default();
        opts.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        for cf in [super::CF_VECTORS, super::CF_HISTORY] {
            self.db
                .compact_range_cf_opt(self.cf(cf), None::<&[u8]>, None::<&[u8]>, &opts);
        }
        Ok(())
    }

    /// Every registered space, by id.
    pub fn space_records(&self) -> Result<Vec<SpaceRecord>, EngineError> {
        let mut out = Vec::new();
        let mut it = self.db.raw_iterator_cf(self.cf(CF_META));
        it.seek(KEY_SPACE_PREFIX);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(KEY_SPACE_PREFIX) {
                break;
            }
            let record: SpaceRecord =
                serde_json::from_slice(v).map_err(|e| EngineError::Corrupt {
                    path: self.path.clone(),
                    detail: format!("space record {k:?}: {e}"),
                })?;
            out.push(record);
            it.next();
        }
        it.status().map_err(|e| rocks_err(&self.path, e))?;
        Ok(out)
    }

    /// The spaces whose rows the apply path keeps (set at open and by [`Self::put_space_record`]
    /// and [`Self::drop_space`]).
    pub fn set_live_spaces(&self, spaces: Vec<u32>) {
        *self.spaces.write() = spaces;
    }

    /// Registers or changes a space and makes it durable (a flush: RocksDB's WAL is off).
    pub fn put_space_record(&self, record: &SpaceRecord) -> Result<(), EngineError> {
        let value = serde_json::to_vec(record).expect("a space record serializes");
        {
            let mut live = self.spaces.write();
            if !live.contains(&record.id) {
                live.push(record.id);
            }
        }
        let result = self
            .db
            .put_cf_opt(
                self.cf(CF_META),
                record_key(record.id),
                value,
                &self.write_opts,
            )
            .map_err(|e| rocks_err(&self.path, e));
        self.note(&result);
        result?;
        self.flush()
    }

    /// Removes a space: its record, rows and dirty marks, durably (range deletes and a flush;
    /// [`Self::compact_space`] then frees the space they took).
    pub fn drop_space(&self, space: u32) -> Result<(), EngineError> {
        self.spaces.write().retain(|s| *s != space);
        let mut batch = rocksdb::WriteBatch::default();
        let (from, to) = space_range(space);
        for cf in [CF_SPACE_VECTORS, CF_SPACE_DIRTY] {
            batch.delete_range_cf(self.cf(cf), from, to);
            batch.delete_cf(self.cf(cf), to);
        }
        batch.delete_cf(self.cf(CF_META), record_key(space));
        let result = self
            .db
            .write_opt(batch, &self.write_opts)
            .map_err(|e| rocks_err(&self.path, e));
        self.note(&result);
        result?;
        self.flush()
    }

    /// Compacts what a dropped space's rows and marks took.
    pub fn compact_space(&self, space: u32) {
        let (from, to) = space_range(space);
        for cf in [CF_SPACE_VECTORS, CF_SPACE_DIRTY] {
            self.db
                .compact_range_cf(self.cf(cf), Some(&from[..]), Some(&to[..]));
        }
    }

    /// `id`'s row in `space`.
    pub fn space_row(&self, space: u32, id: &Uuid) -> Result<Option<SpaceRow>, EngineError> {
        let v = self
            .db
            .get_pinned_cf(self.cf(CF_SPACE_VECTORS), row_key(space, id))
            .map_err(|e| rocks_err(&self.path, e))?;
        Ok(v.and_then(|v| decode_row(&v)))
    }

    /// The rows of `ids` in `space`, in order (one batched lookup; `ids` sorted is faster).
    pub fn space_rows(
        &self,
        space: u32,
        ids: &[Uuid],
    ) -> Result<Vec<Option<SpaceRow>>, EngineError> {
        let keys: Vec<[u8; 20]> = ids.iter().map(|id| row_key(space, id)).collect();
        let sorted = keys.windows(2).all(|w| w[0] <= w[1]);
        self.db
            .batched_multi_get_cf(self.cf(CF_SPACE_VECTORS), keys.iter(), sorted)
            .into_iter()
            .map(|r| {
                r.map(|v| v.and_then(|bytes| decode_row(&bytes)))
                    .map_err(|e| rocks_err(&self.path, e))
            })
            .collect()
    }

    /// Calls `f` with every row of `space`.
    pub fn for_each_space_row(
        &self,
        space: u32,
        mut f: impl FnMut(Uuid, SpaceRow),
    ) -> Result<(), EngineError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_SPACE_VECTORS));
        it.seek(space.to_be_bytes());
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(&space.to_be_bytes()) {
                break;
            }
            if let (Some(id), Some(row)) = (id_of(k), decode_row(v)) {
                f(id, row);
            }
            it.next();
        }
        it.status().map_err(|e| rocks_err(&self.path, e))
    }

    /// Up to `max` memories marked dirty in `space`, with the LSN each mark carries.
    pub fn space_dirty(&self, space: u32, max: usize) -> Result<Vec<(Uuid, u64)>, EngineError> {
        let mut out = Vec::new();
        let mut it = self.db.raw_iterator_cf(self.cf(CF_SPACE_DIRTY));
        it.seek(space.to_be_bytes());
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(&space.to_be_bytes()) || out.len() >= max {
                break;
            }
            if let (Some(id), Ok(lsn)) = (id_of(k), <[u8; 8]>::try_from(v)) {
                out.push((id, u64::from_le_bytes(lsn)));
            }
            it.next();
        }
        it.status().map_err(|e| rocks_err(&self.path, e))?;
        Ok(out)
    }

    /// How many memories are marked dirty in `space`.
    pub fn space_dirty_count(&self, space: u32) -> Result<u64, EngineError> {
        let mut n = 0;
        let mut it = self.db.raw_iterator_cf(self.cf(CF_SPACE_DIRTY));
        it.seek(space.to_be_bytes());
        while let Some(k) = it.key() {
            if !k.starts_with(&space.to_be_bytes()) {
                break;
            }
            n += 1;
            it.next();
        }
        it.status().map_err(|e| rocks_err(&self.path, e))?;
        Ok(n)
    }

    /// The dirty mark's LSN of `id` in `space`, if it has one.
    pub fn space_dirty_mark(&self, space: u32, id: &Uuid) -> Result<Option<u64>, EngineError> {
        let v = self
            .db
            .get_pinned_cf(self.cf(CF_SPACE_DIRTY), row_key(space, id))
            .map_err(|e| rocks_err(&self.path, e))?;
        Ok(v.and_then(|v| <[u8; 8]>::try_from(&v[..]).ok().map(u64::from_le_bytes)))
    }

    /// Writes rows of `space` (`None`: the memory has none any more) and clears the dirty marks
    /// in `cleared`. The caller holds the apply lock, so no mark changes meanwhile.
    pub fn write_space_rows(
        &self,
        space: u32,
        rows: &[RowUpdate<'_>],
        cleared: &[Uuid],
    ) -> Result<(), EngineError> {
        let mut batch = rocksdb::WriteBatch::default();
        for (id, row) in rows {
            match row {
                Some((hash, v)) => batch.put_cf(
                    self.cf(CF_SPACE_VECTORS),
                    row_key(space, id),
                    encode_row(hash, v),
                ),
                None => batch.delete_cf(self.cf(CF_SPACE_VECTORS), row_key(space, id)),
            }
        }
        for id in cleared {
            batch.delete_cf(self.cf(CF_SPACE_DIRTY), row_key(space, id));
        }
        let result = self
            .db
            .write_opt(batch, &self.write_opts)
            .map_err(|e| rocks_err(&self.path, e));
        self.note(&result);
        result
    }

    /// Up to `max` ids of the namespace index after `cursor` (a key it returned; empty: from
    /// the start), with the key to continue from. Every stored memory of every tier is there.
    pub fn ns_index_after(
        &self,
        cursor: &[u8],
        max: usize,
    ) -> Result<(Vec<Uuid>, Option<Vec<u8>>), EngineError> {
        let mut out = Vec::new();
        let mut last = None;
        let mut it = self.db.raw_iterator_cf(self.cf(CF_NS_INDEX));
        it.seek(cursor);
        if it.key() == Some(cursor) && !cursor.is_empty() {
            it.next();
        }
        while let Some(k) = it.key() {
            if out.len() >= max {
                break;
            }
            if let Some(id) = k
                .len()
                .checked_sub(16)
                .and_then(|at| <[u8; 16]>::try_from(&k[at..]).ok())
            {
                out.push(Uuid::from_bytes(id));
            }
            last = Some(k.to_vec());
            it.next();
        }
        it.status().map_err(|e| rocks_err(&self.path, e))?;
        Ok((out, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_refuse_bad_lengths() {
        let hash = [7u8; 32];
        let v = [0.25f32, -1.0, 3.5];
        let row = decode_row(&encode_row(&hash, &v)).expect("decodes");
        assert_eq!(row.content_hash, hash);
        assert_eq!(row.vector, v);
        assert_eq!(row.crc, crate::vector::vector_crc(&v));
        assert!(decode_row(&[0u8; 35]).is_none());
        assert!(decode_row(&[0u8; 38]).is_none());
    }
}

//! The `history` column family: `id | version u64 big-endian` → a [`VersionDelta`], every
//! replaced version of every memory (whatever the memory's tier), newest last in key order.

use uuid::Uuid;

use super::{rocks_err, WarmBatch, WarmTier, CF_HISTORY};
use crate::history::{decode_delta, VersionDelta};
use crate::EngineError;

/// The key of version `version` of `id`.
fn key(id: &Uuid, version: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(id.as_bytes());
    k[16..].copy_from_slice(&version.to_be_bytes());
    k
}

/// What a history sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistorySweep {
    pub versions_removed: u64,
    pub versions_kept: u64,
}

impl WarmBatch<'_> {
    /// Keeps `delta` (a replaced version of `id`) and drops the version that falls out of the
    /// newest `keep_versions`.
    pub fn put_version(&mut self, id: &Uuid, delta: &VersionDelta, keep_versions: u64) {
        let mut value = Vec::with_capacity(64);
        delta.encode(&mut value);
        self.batch
            .put_cf(self.tier.cf(CF_HISTORY), key(id, delta.version), value);
        if let Some(dropped) = delta.version.checked_sub(keep_versions) {
            self.batch
                .delete_cf(self.tier.cf(CF_HISTORY), key(id, dropped));
        }
    }

    /// Removes every kept version of `id` (a purge).
    pub fn delete_versions(&mut self, id: &Uuid) {
        self.batch
            .delete_range_cf(self.tier.cf(CF_HISTORY), key(id, 0), key(id, u64::MAX));
    }
}

impl WarmTier {
    /// Kept versions of `id` older than `below`, newest first, at most `limit`.
    pub fn versions(
        &self,
        id: &Uuid,
        below: u64,
        limit: usize,
    ) -> Result<Vec<VersionDelta>, EngineError> {
        let mut out = Vec::new();
        if below == 0 || limit == 0 {
            return Ok(out);
        }
        let mut it = self.db.raw_iterator_cf(self.cf(CF_HISTORY));
        it.seek_for_prev(key(id, below - 1));
        while it.valid() && out.len() < limit {
            let k = it.key().expect("valid iterator has a key");
            if k.len() != 24 || &k[..16] != id.as_bytes() {
                break;
            }
            let delta =
                decode_delta(it.value().expect("valid iterator has a value")).map_err(|e| {
                    EngineError::Corrupt {
                        path: self.path.clone(),
                        detail: format!("a version of {id}: {e}"),
                    }
                })?;
            out.push(delta);
            it.prev();
        }
        it.status().map_err(|e| rocks_err(&self.path, e))?;
        Ok(out)
    }

    /// Removes versions past the retention bounds: more than `keep_versions` per memory (the
    /// oldest go), or replaced before `replaced_before_us`. Written directly, not logged: a
    /// version that replay brings back is removed again by the next sweep.
    pub fn sweep_history(
        &self,
        keep_versions: u64,
        replaced_before_us: Option<i64>,
    ) -> Result<HistorySweep, EngineError> {
        let mut report = HistorySweep::default();
        let mut doomed: Vec<Box<[u8]>> = Vec::new();
        // Walk backwards so each memory's newest versions come first and are counted.
        let mut it = self.db.raw_iterator_cf(self.cf(CF_HISTORY));
        it.seek_to_last();
        let mut current: Option<[u8; 16]> = None;
        let mut seen = 0u64;
        while it.valid() {
            let k = it.key().expect("valid iterator has a key");
            let id: Option<[u8; 16]> = k.get(..16).and_then(|s| s.try_into().ok());
            if id != current {
                current = id;
                seen = 0;
            }
            seen += 1;
            let old = match decode_delta(it.value().expect("valid iterator has a value")) {
                Ok(d) => replaced_before_us.is_some_and(|t| d.valid_to_us < t),
                Err(_) => true,
            };
            if seen > keep_versions || old || id.is_none() {
                doomed.push(Box::from(k));
            } else {
                report.versions_kept += 1;
            }
            it.prev();
        }
        it.status().map_err(|e| rocks_err(&self.path, e))?;
        report.versions_removed = doomed.len() as u64;
        for chunk in doomed.chunks(4096) {
            let mut batch = rocksdb::WriteBatch::default();
            for k in chunk {
                batch.delete_cf(self.cf(CF_HISTORY), k);
            }
            self.db
                .write_opt(batch, &self.write_opts)
                .map_err(|e| rocks_err(&self.path, e))?;
        }
        Ok(report)
    }

    /// Rewrites every kept version that holds a vector of the store's own without it (they
    /// were dropped). Written directly, like the retention sweep; returns how many.
    pub fn strip_history_vectors(&self) -> Result<u64, EngineError> {
        let write = |batch: rocksdb::WriteBatch| {
            self.db
                .write_opt(batch, &self.write_opts)
                .map_err(|e| rocks_err(&self.path, e))
        };
        let mut rewritten = 0u64;
        let mut batch = rocksdb::WriteBatch::default();
        // The iterator reads the state of its creation: the rewrites do not disturb it.
        let mut it = self.db.raw_iterator_cf(self.cf(CF_HISTORY));
        it.seek_to_first();
        while it.valid() {
            if let Ok(mut delta) = decode_delta(it.value().expect("valid iterator has a value")) {
                if delta.strip_embedding() {
                    let mut value = Vec::new();
                    delta.encode(&mut value);
                    let key = it.key().expect("valid iterator has a key");
                    batch.put_cf(self.cf(CF_HISTORY), key, value);
                    rewritten += 1;
                    if batch.len() >= 4096 {
                        write(std::mem::take(&mut batch))?;
                    }
                }
            }
            it.next();
        }
        it.status().map_err(|e| rocks_err(&self.path, e))?;
        if !batch.is_empty() {
            write(batch)?;
        }
        Ok(rewritten)
    }

    /// Bytes of `column_family` in table files plus memtables (an estimate RocksDB keeps).
    pub fn column_family_bytes(&self, column_family: &str) -> u64 {
        let Some(cf) = self.db.cf_handle(column_family) else {
            return 0;
        };
        let prop = |name: &str| {
            self.db
                .property_int_value_cf(cf, name)
                .ok()
                .flatten()
                .unwrap_or(0)
        };
        prop("rocksdb.live-sst-files-size") + prop("rocksdb.cur-size-all-mem-tables")
    }
}

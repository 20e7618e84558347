//! Whole-store walks of the warm tier's column families: at open (search attributes, vectors,
//! the embed queue, cold locations), for lists (ids in order), exports, reports and `check`.

use rocksdb::{Direction, IteratorMode, ReadOptions};
use uuid::Uuid;

use super::{
    ns_key, posting_prefix, rocks_err, WarmTier, CF_ACCESS, CF_COLD_LOC, CF_EMBED_QUEUE,
    CF_HASH_INDEX, CF_NS_INDEX, CF_POSTINGS, CF_RECORDS, CF_SEARCH_ATTRS, CF_VECTORS,
};
use crate::codec::{self, AttrRow};
use crate::model::{Memory, SegmentId};
use crate::EngineError;

impl WarmTier {
    /// Every active warm memory's search attributes, in id order.
    pub(crate) fn scan_attrs(
        &self,
        mut f: impl FnMut(Uuid, AttrRow) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_SEARCH_ATTRS));
        it.seek_to_first();
        while it.valid() {
            let key = it.key().expect("valid iterator has a key");
            let id = Uuid::from_slice(key).map_err(|_| EngineError::Corrupt {
                path: self.path.clone(),
                detail: "search attribute key is not an id".to_owned(),
            })?;
            let row = codec::decode_attr_row(it.value().expect("valid iterator has a value"))
                .map_err(|e| EngineError::Corrupt {
                    path: self.path.clone(),
                    detail: format!("search attributes of {id}: {e}"),
                })?;
            f(id, row)?;
            it.next();
        }
        it.status().map_err(|e| rocks_err(&self.path, e))
    }

    /// Postings of `term` in `namespace`: (id, term frequency, document length).
    pub fn postings(
        &self,
        namespace: &str,
        term: &str,
    ) -> Result<Vec<(Uuid, u32, u32)>, EngineError> {
        let prefix = posting_prefix(namespace, term);
        let mut out = Vec::new();
        let mut it = self.db.raw_iterator_cf(self.cf(CF_POSTINGS));
        it.seek(&prefix);
        while it.valid() {
            let key = it.key().expect("valid iterator has a key");
            if !key.starts_with(&prefix) {
                break;
            }
            let value = it.value().expect("valid iterator has a value");
            if let (Ok(id), Ok(v)) = (
                Uuid::from_slice(&key[prefix.len()..]),
                <[u8; 8]>::try_from(value),
            ) {
                let tf = u32::from_le_bytes(v[..4].try_into().expect("4 bytes"));
                let len = u32::from_le_bytes(v[4..].try_into().expect("4 bytes"));
                out.push((id, tf, len));
            }
            it.next();
        }
        it.status().map_err(|e| rocks_err(&self.path, e))?;
        Ok(out)
    }

    /// Every warm vector, in id order (one sequential pass).
    pub fn scan_vectors(&self, mut f: impl FnMut(Uuid, &[f32])) -> Result<(), EngineError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_VECTORS));
        it.seek_to_first();
        let mut buf: Vec<f32> = Vec::new();
        while it.valid() {
            let key = it.key().expect("valid iterator has a key");
            let value = it.value().expect("valid iterator has a value");
            if let Ok(id) = Uuid::from_slice(key) {
                buf.clear();
                buf.extend(
                    value
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))),
                );
                f(id, &buf);
            }
            it.next();
        }
        it.status().map_err(|e| rocks_err(&self.path, e))
    }

    /// Ids waiting for the background embedder, in id (so creation) order.
    pub fn embed_queue(&self) -> Result<Vec<Uuid>, EngineError> {
        let mut out = Vec::new();
        let mut it = self.db.raw_iterator_cf(self.cf(CF_EMBED_QUEUE));
        it.seek_to_first();
        while it.valid() {
            if let Ok(id) = Uuid::from_slice(it.key().expect("valid iterator has a key")) {
                out.push(id);
            }
            it.next();
        }
        it.status().map_err(|e| rocks_err(&self.path, e))?;
        Ok(out)
    }

    /// Ids after `after` in id order: all memories in `namespace` (any tier) when given, else
    /// the warm and cold memories (both keep their access state here). At most `limit`.
    pub fn ids_after(
        &self,
        namespace: Option<&str>,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Uuid>, EngineError> {
        let mut out = Vec::with_capacity(limit.min(4096));
        match namespace {
            Some(ns) => {
                let prefix = ns_key(ns, &[]);
                let start = match after {
                    Some(id) => {
                        let mut k = ns_key(ns, id.as_bytes());
                        k.push(0); // strictly after `id`
                        k
                    }
                    None => prefix.clone(),
                };
                let mut ro = ReadOptions::default();
                let mut upper = prefix.clone();
                *upper.last_mut().expect("prefix ends in 0x00") = 1;
                ro.set_iterate_upper_bound(upper);
                let iter = self.db.iterator_cf_opt(
                    self.cf(CF_NS_INDEX),
                    ro,
                    IteratorMode::From(&start, Direction::Forward),
                );
                for item in iter {
                    let (key, _) = item.map_err(|e| rocks_err(&self.path, e))?;
                    let Ok(bytes) = <[u8; 16]>::try_from(&key[prefix.len()..]) else {
                        return Err(EngineError::Corrupt {
                            path: self.path.clone(),
                            detail: "namespace index key has a bad id".to_owned(),
                        });
                    };
                    out.push(Uuid::from_bytes(bytes));
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            None => {
                let start = after.map(|id| {
                    let mut k = id.as_bytes().to_vec();
                    k.push(0);
                    k
                });
                let mode = match &start {
                    Some(k) => IteratorMode::From(k, Direction::Forward),
                    None => IteratorMode::Start,
                };
                for item in self.db.iterator_cf(self.cf(CF_ACCESS), mode) {
                    let (key, _) = item.map_err(|e| rocks_err(&self.path, e))?;
                    let Ok(bytes) = <[u8; 16]>::try_from(&key[..]) else {
                        return Err(EngineError::Corrupt {
                            path: self.path.clone(),
                            detail: "record key is not an id".to_owned(),
                        });
                    };
                    out.push(Uuid::from_bytes(bytes));
                    if out.len() >= limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every warm memory in id order, read with one sequential iterator per column family
    /// (records, vectors, access) instead of a point lookup each: for exports and checks.
    pub fn scan(
        &self,
        mut f: impl FnMut(Memory) -> Result<(), EngineError>,
    ) -> Result<u64, EngineError> {
        let mut records = self.db.raw_iterator_cf(self.cf(CF_RECORDS));
        let mut vectors = self.db.raw_iterator_cf(self.cf(CF_VECTORS));
        let mut access = self.db.raw_iterator_cf(self.cf(CF_ACCESS));
        records.seek_to_first();
        vectors.seek_to_first();
        access.seek_to_first();
        let mut n = 0;
        while records.valid() {
            let key = records.key().expect("valid iterator has a key");
            let id = Uuid::from_slice(key).map_err(|_| EngineError::Corrupt {
                path: self.path.clone(),
                detail: "record key is not an id".to_owned(),
            })?;
            // The other column families hold a subset of the ids: advance them to this key.
            while vectors.valid() && vectors.key().is_some_and(|k| k < key) {
                vectors.next();
            }
            while access.valid() && access.key().is_some_and(|k| k < key) {
                access.next();
            }
            let vector = (vectors.valid() && vectors.key() == Some(key))
                .then(|| vectors.value())
                .flatten();
            let acc = (access.valid() && access.key() == Some(key))
                .then(|| access.value())
                .flatten();
            let memory = self.decode(
                &id,
                records.value().expect("valid iterator has a value"),
                vector,
                acc,
            )?;
            f(memory)?;
            n += 1;
            records.next();
        }
        for it in [&records, &vectors, &access] {
            it.status().map_err(|e| rocks_err(&self.path, e))?;
        }
        Ok(n)
    }

    /// Every namespace that holds a memory, in byte order: a skip-scan of the namespace index
    /// (one seek per namespace, not one step per memory).
    pub(crate) fn namespaces(&self) -> Result<Vec<String>, EngineError> {
        let mut out = Vec::new();
        let mut it = self.db.raw_iterator_cf(self.cf(CF_NS_INDEX));
        it.seek_to_first();
        while it.valid() {
            let key = it.key().expect("valid iterator has a key");
            let name = key
                .iter()
                .position(|&b| b == 0)
                .and_then(|at| std::str::from_utf8(&key[..at]).ok())
                .ok_or_else(|| EngineError::Corrupt {
                    path: self.path.clone(),
                    detail: "malformed namespace index key".to_owned(),
                })?
                .to_owned();
            // Keys are `namespace 0x00 id`: the next namespace starts at `namespace 0x01`.
            let mut next = ns_key(&name, &[]);
            *next.last_mut().expect("ends in 0x00") = 1;
            out.push(name);
            it.seek(&next);
        }
        it.status().map_err(|e| rocks_err(&self.path, e))?;
        Ok(out)
    }

    /// Every key of the namespace index as (namespace, id), and of the dedup index as
    /// (namespace, hash, id): for consistency checks.
    #[expect(
        clippy::type_complexity,
        reason = "two lists of index keys, for check only"
    )]
    pub fn index_entries(
        &self,
    ) -> Result<(Vec<(String, Uuid)>, Vec<(String, [u8; 32], Uuid)>), EngineError> {
        let split = |key: &[u8]| -> Option<(String, Vec<u8>)> {
            let at = key.iter().position(|&b| b == 0)?;
            Some((
                String::from_utf8(key[..at].to_vec()).ok()?,
                key[at + 1..].to_vec(),
            ))
        };
        let corrupt = |what: &str| EngineError::Corrupt {
            path: self.path.clone(),
            detail: format!("malformed {what} key"),
        };
        let mut ns = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_NS_INDEX), IteratorMode::Start)
        {
            let (key, _) = item.map_err(|e| rocks_err(&self.path, e))?;
            let (n, rest) = split(&key).ok_or_else(|| corrupt("namespace index"))?;
            ns.push((
                n,
                Uuid::from_slice(&rest).map_err(|_| corrupt("namespace index"))?,
            ));
        }
        let mut hashes = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_HASH_INDEX), IteratorMode::Start)
        {
            let (key, value) = item.map_err(|e| rocks_err(&self.path, e))?;
            let (n, rest) = split(&key).ok_or_else(|| corrupt("dedup index"))?;
            let hash: [u8; 32] = rest.try_into().map_err(|_| corrupt("dedup index"))?;
            hashes.push((
                n,
                hash,
                Uuid::from_slice(&value).map_err(|_| corrupt("dedup index"))?,
            ));
        }
        Ok((ns, hashes))
    }

    /// Every access state: (id, count, last access), warm and cold memories.
    pub fn scan_access(
        &self,
        mut f: impl FnMut(Uuid, u64, Option<i64>),
    ) -> Result<(), EngineError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_ACCESS));
        it.seek_to_first();
        while it.valid() {
            if let (Some(k), Some(v)) = (it.key(), it.value()) {
                if let (Ok(k), true) = (<[u8; 16]>::try_from(k), v.len() == 16) {
                    let count = u64::from_le_bytes(v[..8].try_into().expect("8 bytes"));
                    let last = i64::from_le_bytes(v[8..].try_into().expect("8 bytes"));
                    f(
                        Uuid::from_bytes(k),
                        count,
                        (last != i64::MIN).then_some(last),
                    );
                }
            }
            it.next();
        }
        it.status().map_err(|e| rocks_err(&self.path, e))
    }

    /// Every cold location: (id, segment), in id order.
    pub fn cold_locations(&self) -> Result<Vec<(Uuid, SegmentId)>, EngineError> {
        let mut out = Vec::new();
        let mut it = self.db.raw_iterator_cf(self.cf(CF_COLD_LOC));
        it.seek_to_first();
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            match (<[u8; 16]>::try_from(k), <[u8; 8]>::try_from(v)) {
                (Ok(k), Ok(v)) => out.push((Uuid::from_bytes(k), SegmentId(u64::from_le_bytes(v)))),
                _ => {
                    return Err(EngineError::Corrupt {
                        path: self.path.clone(),
                        detail: "malformed cold location".to_owned(),
                    })
                }
            }
            it.next();
        }
        it.status().map_err(|e| rocks_err(&self.path, e))?;
        Ok(out)
    }

    /// Exact number of warm records (a key-only scan; used at open).
    pub fn count_records(&self) -> Result<u64, EngineError> {
        let mut n = 0;
        let mut iter = self.db.raw_iterator_cf(self.cf(CF_RECORDS));
        iter.seek_to_first();
        while iter.valid() {
            n += 1;
            iter.next();
        }
        iter.status().map_err(|e| rocks_err(&self.path, e))?;
        Ok(n)
    }
}

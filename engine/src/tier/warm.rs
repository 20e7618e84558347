//! The warm tier and the store-wide indexes, in RocksDB.
//!
//! Column families:
//! - `records`: id → `lsn u64 | memory image without embedding` (warm memories only);
//! - `vectors`: id → f32 little-endian (warm memories with an embedding);
//! - `access`: id → `count u64 | last_accessed_at_us i64` (warm memories' soft access state);
//! - `ns_index`: `namespace 0x00 id` → empty, for every stored memory whatever its tier;
//! - `hash_index`: `namespace 0x00 sha256` → id, for every memory that is not deleted;
//! - `postings`: `namespace 0x00 term 0x00 id` → `tf u32 | doc_len u32`: BM25 postings of active
//!   warm memories;
//! - `search_attrs`: id → the search attributes of an active warm memory (namespace, importance,
//!   times, tags, vector CRC, distinct terms), read at open to rebuild the in-memory filter table;
//! - `embed_queue`: id → empty, for every memory (any tier) waiting for the background embedder;
//! - `meta`: `applied_lsn` → u64, written in the same WriteBatch as the change it covers.
//!
//! RocksDB's own WAL is off: Engram's WAL is the truth. Flushes are atomic across column families,
//! so the durable image is always the state after exactly `applied_lsn`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rocksdb::{
    ColumnFamilyDescriptor, Direction, FlushOptions, IteratorMode, Options, ReadOptions,
    WriteBatch, WriteOptions, DB,
};
use uuid::Uuid;

use crate::codec::{self, AttrRow};
use crate::model::{EmbeddingStatus, Memory, Status, Tier};
use crate::text::Analyzer;
use crate::EngineError;

const CF_RECORDS: &str = "records";
const CF_VECTORS: &str = "vectors";
const CF_ACCESS: &str = "access";
const CF_NS_INDEX: &str = "ns_index";
const CF_HASH_INDEX: &str = "hash_index";
const CF_META: &str = "meta";
const CF_POSTINGS: &str = "postings";
const CF_SEARCH_ATTRS: &str = "search_attrs";
const CF_EMBED_QUEUE: &str = "embed_queue";
const CF_COLD_LOC: &str = "cold_loc";
const ALL_CFS: [&str; 10] = [
    CF_RECORDS,
    CF_VECTORS,
    CF_ACCESS,
    CF_NS_INDEX,
    CF_HASH_INDEX,
    CF_META,
    CF_POSTINGS,
    CF_SEARCH_ATTRS,
    CF_EMBED_QUEUE,
    CF_COLD_LOC,
];
const KEY_APPLIED_LSN: &[u8] = b"applied_lsn";

/// The RocksDB part of the store.
pub struct WarmTier {
    db: DB,
    path: PathBuf,
    write_opts: WriteOptions,
    analyzer: Analyzer,
}

impl std::fmt::Debug for WarmTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmTier")
            .field("path", &self.path)
            .finish()
    }
}

fn rocks_err(path: &Path, e: rocksdb::Error) -> EngineError {
    EngineError::Rocks {
        path: path.to_path_buf(),
        message: e.into_string(),
    }
}

/// `namespace 0x00 suffix`.
pub(crate) fn ns_key(namespace: &str, suffix: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(namespace.len() + 1 + suffix.len());
    k.extend_from_slice(namespace.as_bytes());
    k.push(0);
    k.extend_from_slice(suffix);
    k
}

/// A set of changes applied atomically with the LSN they reflect.
pub struct WarmBatch<'a> {
    tier: &'a WarmTier,
    batch: WriteBatch,
    /// Search attribute rows written by this batch (`None`: deleted), so a later change to the
    /// same memory in the batch sees them.
    staged_attrs: HashMap<Uuid, Option<AttrRow>>,
}

/// `namespace 0x00 term 0x00` (then the id).
fn posting_prefix(namespace: &str, term: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(namespace.len() + term.len() + 18);
    k.extend_from_slice(namespace.as_bytes());
    k.push(0);
    k.extend_from_slice(term.as_bytes());
    k.push(0);
    k
}

impl std::fmt::Debug for WarmBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmBatch")
            .field("ops", &self.batch.len())
            .finish()
    }
}

impl WarmBatch<'_> {
    /// Stores a warm memory: record, vector and access state.
    pub fn put_record(&mut self, memory: &Memory) {
        let mut value = Vec::with_capacity(memory.content.len() + memory.metadata_json.len() + 160);
        value.extend_from_slice(&memory.lsn.to_le_bytes());
        codec::encode_memory(&mut value, memory, false);
        self.batch
            .put_cf(self.tier.cf(CF_RECORDS), memory.id.as_bytes(), value);
        match &memory.embedding {
            Some(v) => {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                self.batch
                    .put_cf(self.tier.cf(CF_VECTORS), memory.id.as_bytes(), bytes);
            }
            None => self
                .batch
                .delete_cf(self.tier.cf(CF_VECTORS), memory.id.as_bytes()),
        }
        let mut access = Vec::with_capacity(16);
        access.extend_from_slice(&memory.access_count.to_le_bytes());
        access.extend_from_slice(&memory.last_accessed_at_us.unwrap_or(i64::MIN).to_le_bytes());
        self.batch
            .put_cf(self.tier.cf(CF_ACCESS), memory.id.as_bytes(), access);
    }

    /// Removes a memory's warm record, vector and access state (no-op if absent).
    pub fn delete_record(&mut self, id: &Uuid) {
        self.batch
            .delete_cf(self.tier.cf(CF_RECORDS), id.as_bytes());
        self.batch
            .delete_cf(self.tier.cf(CF_VECTORS), id.as_bytes());
        self.batch.delete_cf(self.tier.cf(CF_ACCESS), id.as_bytes());
    }

    /// Removes a warm memory's record and vector but keeps what the cold tier shares with it
    /// (access state, postings, search attributes): the memory is moving to a cold segment.
    pub fn delete_warm_body(&mut self, id: &Uuid) {
        self.batch
            .delete_cf(self.tier.cf(CF_RECORDS), id.as_bytes());
        self.batch
            .delete_cf(self.tier.cf(CF_VECTORS), id.as_bytes());
    }

    /// The cold segment holding the live copy of `id`.
    pub fn put_cold_location(&mut self, id: &Uuid, segment: u64) {
        self.batch.put_cf(
            self.tier.cf(CF_COLD_LOC),
            id.as_bytes(),
            segment.to_le_bytes(),
        );
    }

    /// `id`'s entry in its cold segment is dead from now on (a tombstone).
    pub fn delete_cold_location(&mut self, id: &Uuid) {
        self.batch
            .delete_cf(self.tier.cf(CF_COLD_LOC), id.as_bytes());
        self.batch.delete_cf(self.tier.cf(CF_ACCESS), id.as_bytes());
    }

    pub fn put_access(&mut self, id: &Uuid, count: u64, last_accessed_at_us: i64) {
        let mut access = Vec::with_capacity(16);
        access.extend_from_slice(&count.to_le_bytes());
        access.extend_from_slice(&last_accessed_at_us.to_le_bytes());
        self.batch
            .put_cf(self.tier.cf(CF_ACCESS), id.as_bytes(), access);
    }

    pub fn index_namespace(&mut self, namespace: &str, id: &Uuid) {
        self.batch.put_cf(
            self.tier.cf(CF_NS_INDEX),
            ns_key(namespace, id.as_bytes()),
            [],
        );
    }

    pub fn unindex_namespace(&mut self, namespace: &str, id: &Uuid) {
        self.batch
            .delete_cf(self.tier.cf(CF_NS_INDEX), ns_key(namespace, id.as_bytes()));
    }

    pub fn index_hash(&mut self, namespace: &str, hash: &[u8; 32], id: &Uuid) {
        self.batch.put_cf(
            self.tier.cf(CF_HASH_INDEX),
            ns_key(namespace, hash),
            id.as_bytes(),
        );
    }

    pub fn unindex_hash(&mut self, namespace: &str, hash: &[u8; 32]) {
        self.batch
            .delete_cf(self.tier.cf(CF_HASH_INDEX), ns_key(namespace, hash));
    }

    /// Keeps the search side of a memory's new image: text postings and search attributes when
    /// it is an active warm or cold memory, nothing otherwise (stale postings of an earlier image are
    /// removed either way); and its place in the embedding queue, whatever its tier.
    pub fn index_for_search(
        &mut self,
        memory: &Memory,
        previous_tier: Option<Tier>,
    ) -> Result<(), EngineError> {
        if matches!(previous_tier, Some(Tier::Warm | Tier::Cold)) {
            self.unindex_for_search(&memory.id)?;
        }
        if memory.embedding_status == EmbeddingStatus::Pending && memory.status != Status::Deleted {
            self.batch
                .put_cf(self.tier.cf(CF_EMBED_QUEUE), memory.id.as_bytes(), []);
        } else if previous_tier.is_some() {
            // Only a memory that existed can be queued: a new one needs no tombstone.
            self.batch
                .delete_cf(self.tier.cf(CF_EMBED_QUEUE), memory.id.as_bytes());
        }
        if memory.tier == Tier::Working || memory.status != Status::Active {
            return Ok(());
        }
        let (terms, doc_len) = self.tier.analyzer.frequencies(&memory.content);
        for (term, tf) in &terms {
            let mut key = posting_prefix(&memory.namespace, term);
            key.extend_from_slice(memory.id.as_bytes());
            let mut value = [0u8; 8];
            value[..4].copy_from_slice(&tf.to_le_bytes());
            value[4..].copy_from_slice(&doc_len.to_le_bytes());
            self.batch.put_cf(self.tier.cf(CF_POSTINGS), key, value);
        }
        let row = AttrRow {
            namespace: memory.namespace.clone(),
            importance: memory.importance,
            created_at_us: memory.created_at_us,
            expires_at_us: memory.expires_at_us,
            tags: memory.tags.clone(),
            doc_len,
            vector_crc: memory.embedding.as_deref().map(crate::vector::vector_crc),
            terms,
        };
        self.batch.put_cf(
            self.tier.cf(CF_SEARCH_ATTRS),
            memory.id.as_bytes(),
            codec::encode_attr_row(&row),
        );
        self.staged_attrs.insert(memory.id, Some(row));
        Ok(())
    }

    /// Removes a memory's text postings and search attributes (no-op if it has none), and its
    /// place in the embedding queue.
    pub fn unindex_for_search(&mut self, id: &Uuid) -> Result<(), EngineError> {
        self.batch
            .delete_cf(self.tier.cf(CF_EMBED_QUEUE), id.as_bytes());
        let row = match self.staged_attrs.get(id) {
            Some(staged) => staged.clone(),
            None => self.tier.attr_row(id)?,
        };
        let Some(row) = row else {
            return Ok(());
        };
        for (term, _) in &row.terms {
            let mut key = posting_prefix(&row.namespace, term);
            key.extend_from_slice(id.as_bytes());
            self.batch.delete_cf(self.tier.cf(CF_POSTINGS), key);
        }
        self.batch
            .delete_cf(self.tier.cf(CF_SEARCH_ATTRS), id.as_bytes());
        self.staged_attrs.insert(*id, None);
        Ok(())
    }

    /// Writes the batch together with the LSN it brings the tier to.
    pub fn commit(mut self, lsn: u64) -> Result<(), EngineError> {
        self.batch
            .put_cf(self.tier.cf(CF_META), KEY_APPLIED_LSN, lsn.to_le_bytes());
        self.tier
            .db
            .write_opt(self.batch, &self.tier.write_opts)
            .map_err(|e| rocks_err(&self.tier.path, e))
    }
}

impl WarmTier {
    /// Opens or creates the database at `path`; returns it with the LSN its durable image
    /// reflects.
    pub fn open(
        path: &Path,
        block_cache_bytes: usize,
        stemming: bool,
    ) -> Result<(WarmTier, u64), EngineError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Our WAL is the truth; flushes must keep every column family at the same LSN.
        opts.set_atomic_flush(true);
        opts.set_max_background_jobs(2);
        opts.set_bytes_per_sync(1 << 20);
        let mut table = rocksdb::BlockBasedOptions::default();
        let cache = rocksdb::Cache::new_lru_cache(block_cache_bytes);
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&table);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let cfs: Vec<ColumnFamilyDescriptor> = ALL_CFS
            .iter()
            .map(|name| {
                let mut cf_opts = Options::default();
                cf_opts.set_compression_type(if *name == CF_VECTORS {
                    rocksdb::DBCompressionType::None
                } else {
                    rocksdb::DBCompressionType::Lz4
                });
                cf_opts.set_block_based_table_factory(&table);
                ColumnFamilyDescriptor::new(*name, cf_opts)
            })
            .collect();
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| rocks_err(path, e))?;
        let mut write_opts = WriteOptions::default();
        write_opts.disable_wal(true);
        let tier = WarmTier {
            db,
            path: path.to_path_buf(),
            write_opts,
            analyzer: Analyzer::new(stemming),
        };
        let lsn = tier.applied_lsn()?;
        Ok((tier, lsn))
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every column family is created at open")
    }

    /// LSN of the last batch written (durable only after [`WarmTier::flush`]).
    pub fn applied_lsn(&self) -> Result<u64, EngineError> {
        let value = self
            .db
            .get_cf(self.cf(CF_META), KEY_APPLIED_LSN)
            .map_err(|e| rocks_err(&self.path, e))?;
        match value {
            None => Ok(0),
            Some(v) if v.len() == 8 => Ok(u64::from_le_bytes(v[..].try_into().expect("8 bytes"))),
            Some(v) => Err(EngineError::Corrupt {
                path: self.path.clone(),
                detail: format!("applied_lsn is {} bytes", v.len()),
            }),
        }
    }

    pub fn batch(&self) -> WarmBatch<'_> {
        WarmBatch {
            tier: self,
            batch: WriteBatch::default(),
            staged_attrs: HashMap::new(),
        }
    }

    fn attr_row(&self, id: &Uuid) -> Result<Option<AttrRow>, EngineError> {
        let value = self
            .db
            .get_cf(self.cf(CF_SEARCH_ATTRS), id.as_bytes())
            .map_err(|e| rocks_err(&self.path, e))?;
        value
            .map(|v| {
                codec::decode_attr_row(&v).map_err(|e| EngineError::Corrupt {
                    path: self.path.clone(),
                    detail: format!("search attributes of {id}: {e}"),
                })
            })
            .transpose()
    }

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

    /// A warm memory's vector.
    pub fn vector(&self, id: &Uuid) -> Result<Option<Vec<f32>>, EngineError> {
        let value = self
            .db
            .get_cf(self.cf(CF_VECTORS), id.as_bytes())
            .map_err(|e| rocks_err(&self.path, e))?;
        Ok(value.map(|v| {
            v.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect()
        }))
    }

    /// Many warm memories' vectors in one batched lookup (`None` where there is none), in the
    /// order asked.
    pub fn vectors(&self, ids: &[Uuid]) -> Result<Vec<Option<Vec<f32>>>, EngineError> {
        let cf = self.cf(CF_VECTORS);
        let sorted = ids.windows(2).all(|w| w[0] <= w[1]);
        self.db
            .batched_multi_get_cf(cf, ids.iter().map(Uuid::as_bytes), sorted)
            .into_iter()
            .map(|r| {
                r.map(|v| {
                    v.map(|bytes| {
                        bytes
                            .chunks_exact(4)
                            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                            .collect()
                    })
                })
                .map_err(|e| rocks_err(&self.path, e))
            })
            .collect()
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

    /// Reads a warm memory with its vector and access state.
    pub fn get(&self, id: &Uuid) -> Result<Option<Memory>, EngineError> {
        let keys = [
            (self.cf(CF_RECORDS), id.as_bytes()),
            (self.cf(CF_VECTORS), id.as_bytes()),
            (self.cf(CF_ACCESS), id.as_bytes()),
        ];
        let mut values = self.db.multi_get_cf(keys).into_iter();
        let mut next = || -> Result<Option<Vec<u8>>, EngineError> {
            values
                .next()
                .expect("three keys give three values")
                .map_err(|e| rocks_err(&self.path, e))
        };
        let Some(record) = next()? else {
            return Ok(None);
        };
        let vector = next()?;
        let access = next()?;
        self.decode(id, &record, vector.as_deref(), access.as_deref())
            .map(Some)
    }

    /// Reads several warm memories with one batched lookup per column family.
    pub fn get_many(&self, ids: &[Uuid]) -> Result<Vec<Option<Memory>>, EngineError> {
        let mut keys = Vec::with_capacity(ids.len() * 3);
        for cf in [CF_RECORDS, CF_VECTORS, CF_ACCESS] {
            let cf = self.cf(cf);
            keys.extend(ids.iter().map(|id| (cf, id.as_bytes())));
        }
        let values = self
            .db
            .multi_get_cf(keys)
            .into_iter()
            .collect::<Result<Vec<Option<Vec<u8>>>, _>>()
            .map_err(|e| rocks_err(&self.path, e))?;
        let n = ids.len();
        ids.iter()
            .enumerate()
            .map(|(i, id)| match &values[i] {
                None => Ok(None),
                Some(record) => self
                    .decode(
                        id,
                        record,
                        values[n + i].as_deref(),
                        values[2 * n + i].as_deref(),
                    )
                    .map(Some),
            })
            .collect()
    }

    fn decode(
        &self,
        id: &Uuid,
        record: &[u8],
        vector: Option<&[u8]>,
        access: Option<&[u8]>,
    ) -> Result<Memory, EngineError> {
        let corrupt = |detail: String| EngineError::Corrupt {
            path: self.path.clone(),
            detail: format!("warm memory {id}: {detail}"),
        };
        if record.len() < 8 {
            return Err(corrupt("record shorter than its LSN".to_owned()));
        }
        let lsn = u64::from_le_bytes(record[..8].try_into().expect("8 bytes"));
        let mut memory =
            codec::decode_memory(&record[8..], lsn).map_err(|e| corrupt(e.to_string()))?;
        memory.tier = Tier::Warm;
        if let Some(v) = vector {
            if v.len() % 4 != 0 {
                return Err(corrupt(format!("vector of {} bytes", v.len())));
            }
            memory.embedding = Some(
                v.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect(),
            );
            if memory.embedding_status == EmbeddingStatus::None {
                memory.embedding_status = EmbeddingStatus::Ready;
            }
        }
        if let Some(a) = access {
            if a.len() != 16 {
                return Err(corrupt(format!("access state of {} bytes", a.len())));
            }
            memory.access_count = u64::from_le_bytes(a[..8].try_into().expect("8 bytes"));
            let last = i64::from_le_bytes(a[8..].try_into().expect("8 bytes"));
            memory.last_accessed_at_us = (last != i64::MIN).then_some(last);
        }
        Ok(memory)
    }

    /// Current access state of a warm memory.
    pub fn access(&self, id: &Uuid) -> Result<Option<(u64, Option<i64>)>, EngineError> {
        let value = self
            .db
            .get_cf(self.cf(CF_ACCESS), id.as_bytes())
            .map_err(|e| rocks_err(&self.path, e))?;
        Ok(value.filter(|a| a.len() == 16).map(|a| {
            let count = u64::from_le_bytes(a[..8].try_into().expect("8 bytes"));
            let last = i64::from_le_bytes(a[8..].try_into().expect("8 bytes"));
            (count, (last != i64::MIN).then_some(last))
        }))
    }

    /// The memory holding `hash` in `namespace`, if any (not deleted).
    pub fn find_hash(&self, namespace: &str, hash: &[u8; 32]) -> Result<Option<Uuid>, EngineError> {
        let value = self
            .db
            .get_cf(self.cf(CF_HASH_INDEX), ns_key(namespace, hash))
            .map_err(|e| rocks_err(&self.path, e))?;
        Ok(value.and_then(|v| {
            <[u8; 16]>::try_from(v.as_slice())
                .ok()
                .map(Uuid::from_bytes)
        }))
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
    pub fn cold_locations(&self) -> Result<Vec<(Uuid, u64)>, EngineError> {
        let mut out = Vec::new();
        let mut it = self.db.raw_iterator_cf(self.cf(CF_COLD_LOC));
        it.seek_to_first();
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            match (<[u8; 16]>::try_from(k), <[u8; 8]>::try_from(v)) {
                (Ok(k), Ok(v)) => out.push((Uuid::from_bytes(k), u64::from_le_bytes(v))),
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

    /// Compacts every column family fully, so the space of deleted and moved memories is
    /// reclaimed now rather than when RocksDB gets to it.
    pub fn compact_all(&self) {
        for name in ALL_CFS {
            self.db
                .compact_range_cf(self.cf(name), None::<&[u8]>, None::<&[u8]>);
        }
    }

    /// Makes everything written so far durable (atomic across column families).
    pub fn flush(&self) -> Result<(), EngineError> {
        let mut fo = FlushOptions::default();
        fo.set_wait(true);
        let cfs: Vec<&rocksdb::ColumnFamily> = ALL_CFS.iter().map(|n| self.cf(n)).collect();
        self.db
            .flush_cfs_opt(&cfs, &fo)
            .map_err(|e| rocks_err(&self.path, e))
    }

    /// A RocksDB checkpoint in `dest` (which must not exist): memtables flushed, SST files
    /// hard-linked. It holds every batch committed before the call, with its applied LSN.
    ///
    /// Seen once on a 1M-memory store under compaction: the checkpoint failed linking an SST
    /// file a compaction had just deleted. Such a failure leaves nothing behind that matters
    /// (the staging directory is removed), so it is retried a few times.
    pub fn checkpoint_to(&self, dest: &Path) -> Result<(), EngineError> {
        let cp =
            rocksdb::checkpoint::Checkpoint::new(&self.db).map_err(|e| rocks_err(&self.path, e))?;
        let mut attempt = 0;
        loop {
            match cp.create_checkpoint(dest) {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 3 && e.kind() == rocksdb::ErrorKind::IOError => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "RocksDB checkpoint failed; retrying");
                    for dir in [dest.to_path_buf(), dest.with_extension("tmp")] {
                        if dir.exists() {
                            std::fs::remove_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
                        }
                    }
                }
                Err(e) => return Err(rocks_err(dest, e)),
            }
        }
    }

    /// Total bytes of live SST files, every column family.
    pub fn disk_bytes(&self) -> u64 {
        ALL_CFS
            .iter()
            .filter_map(|name| {
                self.db
                    .property_int_value_cf(self.cf(name), rocksdb::properties::TOTAL_SST_FILES_SIZE)
                    .ok()
                    .flatten()
            })
            .sum()
    }

    /// The LSN of each id's warm record (`None`: not warm), one batched read.
    pub fn record_lsns(&self, ids: &[Uuid]) -> Result<Vec<Option<u64>>, EngineError> {
        let cf = self.cf(CF_RECORDS);
        self.db
            .multi_get_cf(ids.iter().map(|id| (cf, id.as_bytes())))
            .into_iter()
            .map(|r| {
                r.map(|v| {
                    v.filter(|v| v.len() >= 8)
                        .map(|v| u64::from_le_bytes(v[..8].try_into().expect("8 bytes")))
                })
                .map_err(|e| rocks_err(&self.path, e))
            })
            .collect()
    }
}

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
//! - `history`: `id version(u64 BE)` → a replaced version of the memory (a reverse delta, see
//!   `crate::history`), whatever the memory's tier;
//! - `meta`: `applied_lsn` → u64, written in the same WriteBatch as the change it covers;
//! - `space_vectors`, `space_dirty`: vector spaces beside the store's own (see [`space`]).
//!
//! RocksDB's own WAL is off: Engram's WAL is the truth. Flushes are atomic across column families,
//! so the durable image is always the state after exactly `applied_lsn`.

use engram_wal::Lsn;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rocksdb::{ColumnFamilyDescriptor, FlushOptions, Options, WriteOptions, DB};
use uuid::Uuid;

use crate::codec::{self, AttrRow};
use crate::model::{EmbeddingStatus, Memory, Tier};
use crate::text::Analyzer;
use crate::EngineError;

mod batch;
mod history;
mod scan;
pub mod space;

pub use batch::WarmBatch;

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
pub(crate) const CF_HISTORY: &str = "history";
const ALL_CFS: [&str; 13] = [
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
    CF_HISTORY,
    space::CF_SPACE_VECTORS,
    space::CF_SPACE_DIRTY,
];
const KEY_APPLIED_LSN: &[u8] = b"applied_lsn";
/// Written (with its value unchanged) to learn whether RocksDB takes writes again.
const KEY_SPACE_PROBE: &[u8] = b"space_probe";
/// Most table files RocksDB keeps open (its default keeps every one open).
pub const WARM_MAX_OPEN_FILES: i32 = 512;
/// Each column family's memtable (RocksDB's default, set here because the ballast is sized by
/// it): after a flush fails on a full disk, RocksDB resumes only once this much is free.
pub const WARM_WRITE_BUFFER_BYTES: usize = 64 << 20;
/// The hash index's memtable bloom filter, as a share of the memtable's bytes (64 MiB: 1.3 MiB,
/// ~17 bits for each of its ~600,000 keys).
const MEMTABLE_BLOOM_RATIO: f64 = 0.02;

/// The RocksDB part of the store.
pub struct WarmTier {
    db: DB,
    path: PathBuf,
    write_opts: WriteOptions,
    analyzer: Analyzer,
    /// A write or flush failed for want of disk space. RocksDB then refuses every write until
    /// it has recovered by itself (it polls for free space), so the engine refuses new writes
    /// with 507 before logging them, until a probe write succeeds.
    out_of_space: AtomicBool,
    /// The block cache, for its usage in the metrics.
    cache: rocksdb::Cache,
    /// Registered vector spaces (see [`space`]): an apply marks a changed memory dirty in each.
    spaces: parking_lot::RwLock<Vec<u32>>,
}

/// What RocksDB holds in memory, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WarmMemory {
    /// Memtables of every column family, flushed ones not yet released included.
    pub memtables: u64,
    /// Index and filter blocks of open SST files (outside the block cache).
    pub table_readers: u64,
    pub block_cache: u64,
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

/// `namespace 0x00 term 0x00` (then the id).
fn posting_prefix(namespace: &str, term: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(namespace.len() + term.len() + 18);
    k.extend_from_slice(namespace.as_bytes());
    k.push(0);
    k.extend_from_slice(term.as_bytes());
    k.push(0);
    k
}

impl WarmTier {
    /// Opens or creates the database at `path`; returns it with the LSN its durable image
    /// reflects.
    pub fn open(
        path: &Path,
        block_cache_bytes: usize,
        stemming: bool,
    ) -> Result<(WarmTier, Lsn), EngineError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Our WAL is the truth; flushes must keep every column family at the same LSN.
        opts.set_atomic_flush(true);
        opts.set_max_background_jobs(2);
        // A bounded table cache, so the daemon can budget its file descriptors
        // (`WARM_MAX_OPEN_FILES` + the engine's own + one per connection).
        opts.set_max_open_files(WARM_MAX_OPEN_FILES);
        opts.set_bytes_per_sync(1 << 20);
        // RocksDB preallocates 4 MiB for each new MANIFEST, one per open: on a full disk that
        // is half the ballast a restart has to open with (see `DataDir::ballast`).
        opts.set_manifest_preallocation_size(64 << 10);
        let mut table = rocksdb::BlockBasedOptions::default();
        // HyperClockCache: lock-free lookups (the LRU cache's shard mutexes and hash probes
        // were 7% of a search's CPU); 0 lets RocksDB size its table as entries arrive.
        let cache = rocksdb::Cache::new_hyper_clock_cache(block_cache_bytes, 0);
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&table);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let cfs: Vec<ColumnFamilyDescriptor> = ALL_CFS
            .iter()
            .map(|name| {
                let mut cf_opts = Options::default();
                cf_opts.set_compression_type(
                    if *name == CF_VECTORS || *name == space::CF_SPACE_VECTORS {
                        rocksdb::DBCompressionType::None
                    } else {
                        rocksdb::DBCompressionType::Lz4
                    },
                );
                cf_opts.set_block_based_table_factory(&table);
                cf_opts.set_write_buffer_size(WARM_WRITE_BUFFER_BYTES);
                if *name == CF_HASH_INDEX {
                    // Every create looks its content up here, and a new text is found in no
                    // memtable: a bloom filter over the memtable's keys answers that without
                    // walking its skip list (which was 9% of the HTTP workers' CPU).
                    cf_opts.set_memtable_prefix_bloom_ratio(MEMTABLE_BLOOM_RATIO);
                    cf_opts.set_memtable_whole_key_filtering(true);
                }
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
            out_of_space: AtomicBool::new(false),
            cache,
            spaces: parking_lot::RwLock::new(Vec::new()),
        };
        let spaces = tier.space_records()?.iter().map(|r| r.id).collect();
        tier.set_live_spaces(spaces);
        let lsn = tier.applied_lsn()?;
        Ok((tier, lsn))
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every column family is created at open")
    }

    /// LSN of the last batch written (durable only after [`WarmTier::flush`]).
    pub fn applied_lsn(&self) -> Result<Lsn, EngineError> {
        let value = self
            .db
            .get_cf(self.cf(CF_META), KEY_APPLIED_LSN)
            .map_err(|e| rocks_err(&self.path, e))?;
        match value {
            None => Ok(Lsn::ZERO),
            Some(v) if v.len() == 8 => Ok(Lsn::from_le_bytes(v[..].try_into().expect("8 bytes"))),
            Some(v) => Err(EngineError::Corrupt {
                path: self.path.clone(),
                detail: format!("applied_lsn is {} bytes", v.len()),
            }),
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

    /// Bytes each memory's record and vector take as written (before RocksDB's block
    /// compression; 0 for one not here), in the order asked: two batched lookups, values
    /// pinned in the block cache rather than copied.
    pub fn stored_bytes(&self, ids: &[Uuid]) -> Result<Vec<u64>, EngineError> {
        let sorted = ids.windows(2).all(|w| w[0] <= w[1]);
        let mut bytes = vec![0u64; ids.len()];
        for cf in [CF_RECORDS, CF_VECTORS] {
            let found =
                self.db
                    .batched_multi_get_cf(self.cf(cf), ids.iter().map(Uuid::as_bytes), sorted);
            for (b, v) in bytes.iter_mut().zip(found) {
                *b += v
                    .map_err(|e| rocks_err(&self.path, e))?
                    .map_or(0, |v| v.len() as u64);
            }
        }
        Ok(bytes)
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
        let lsn = Lsn::from_le_bytes(record[..8].try_into().expect("8 bytes"));
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

    /// Flushes, then compacts every column family into its last level, rewriting even files
    /// already there: deleted keys and their values leave the live files (the files they were
    /// in are deleted once no reader holds them; hard links in snapshots keep theirs).
    pub fn compact_all_to_bottom(&self) -> Result<(), EngineError> {
        self.flush()?;
        let mut opts = rocksdb::CompactOptions::default();
        opts.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        opts.set_exclusive_manual_compaction(true);
        for name in ALL_CFS {
            self.db
                .compact_range_cf_opt(self.cf(name), None::<&[u8]>, None::<&[u8]>, &opts);
        }
        Ok(())
    }

    /// Makes everything written so far durable (atomic across column families).
    pub fn flush(&self) -> Result<(), EngineError> {
        let mut fo = FlushOptions::default();
        fo.set_wait(true);
        let cfs: Vec<&rocksdb::ColumnFamily> = ALL_CFS.iter().map(|n| self.cf(n)).collect();
        let result = self
            .db
            .flush_cfs_opt(&cfs, &fo)
            .map_err(|e| rocks_err(&self.path, e));
        self.note(&result);
        result
    }

    /// Records whether a write or flush met a full disk.
    pub(crate) fn note(&self, result: &Result<(), EngineError>) {
        match result {
            Err(e) if e.is_out_of_space() => self.out_of_space.store(true, Ordering::Release),
            Ok(()) => self.out_of_space.store(false, Ordering::Release),
            Err(_) => {}
        }
    }

    /// Whether RocksDB takes writes: after a failure for want of disk space, a probe write
    /// tells (RocksDB refuses every write until it has recovered from the failed flush).
    pub fn writable(&self) -> bool {
        if !self.out_of_space.load(Ordering::Acquire) {
            return true;
        }
        let result = self
            .db
            .put_cf_opt(self.cf(CF_META), KEY_SPACE_PROBE, [], &self.write_opts)
            .map_err(|e| rocks_err(&self.path, e));
        self.note(&result);
        result.is_ok()
    }

    /// A RocksDB checkpoint in `dest` (which must not exist): memtables flushed, SST files
    /// hard-linked. It holds every batch committed before the call, with its applied LSN.
    ///
    /// Seen once on a 1M-memory store under compaction: the checkpoint failed linking an SST
    /// file a compaction had just deleted. Such a failure leaves nothing behind that matters
    /// (the staging directory is removed), so it is retried a few times.
    pub fn rocksdb_checkpoint_to(&self, dest: &Path) -> Result<(), EngineError> {
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
    /// What RocksDB holds in memory now.
    /// Bytes in the memtables of every column family (flushed ones not yet released
    /// included): about what their flushes will write to disk.
    pub fn memtable_bytes(&self) -> u64 {
        ALL_CFS
            .iter()
            .filter_map(|name| {
                self.db
                    .property_int_value_cf(self.cf(name), "rocksdb.cur-size-all-mem-tables")
                    .ok()
                    .flatten()
            })
            .sum()
    }

    pub fn memory(&self) -> WarmMemory {
        let sum = |property: &str| -> u64 {
            ALL_CFS
                .iter()
                .filter_map(|name| {
                    self.db
                        .property_int_value_cf(self.cf(name), property)
                        .ok()
                        .flatten()
                })
                .sum()
        };
        WarmMemory {
            memtables: sum("rocksdb.cur-size-all-mem-tables"),
            table_readers: sum("rocksdb.estimate-table-readers-mem"),
            block_cache: self.cache.get_usage() as u64,
        }
    }

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
    pub fn record_lsns(&self, ids: &[Uuid]) -> Result<Vec<Option<Lsn>>, EngineError> {
        let cf = self.cf(CF_RECORDS);
        self.db
            .multi_get_cf(ids.iter().map(|id| (cf, id.as_bytes())))
            .into_iter()
            .map(|r| {
                r.map(|v| {
                    v.filter(|v| v.len() >= 8)
                        .map(|v| Lsn::from_le_bytes(v[..8].try_into().expect("8 bytes")))
                })
                .map_err(|e| rocks_err(&self.path, e))
            })
            .collect()
    }
}

//! [`WarmBatch`]: the changes of one apply group, written to RocksDB atomically with the LSN
//! they reflect.

use engram_wal::Lsn;
use std::collections::HashMap;

use rocksdb::WriteBatch;
use uuid::Uuid;

use super::{
    ns_key, posting_prefix, rocks_err, WarmTier, CF_ACCESS, CF_COLD_LOC, CF_EMBED_QUEUE,
    CF_HASH_INDEX, CF_META, CF_NS_INDEX, CF_POSTINGS, CF_RECORDS, CF_SEARCH_ATTRS, CF_VECTORS,
    KEY_APPLIED_LSN,
};
use crate::codec::{self, AttrRow};
use crate::model::{EmbeddingStatus, Memory, SegmentId, Status, Tier};
use crate::EngineError;

/// A set of changes applied atomically with the LSN they reflect.
pub struct WarmBatch<'a> {
    pub(super) tier: &'a WarmTier,
    pub(super) batch: WriteBatch,
    /// Search attribute rows written by this batch (`None`: deleted), so a later change to the
    /// same memory in the batch sees them.
    staged_attrs: HashMap<Uuid, Option<AttrRow>>,
    /// Dirty marks of vector spaces set by this batch, written at [`WarmBatch::write`]: a
    /// client's vector later in the batch cancels its memory's mark instead of writing a
    /// tombstone over it (a scan of the marks steps over every tombstone until compaction).
    pub(super) staged_marks: HashMap<(u32, Uuid), u64>,
}

impl WarmTier {
    /// An empty batch; [`WarmBatch::write`] writes it.
    pub fn batch(&self) -> WarmBatch<'_> {
        WarmBatch {
            tier: self,
            batch: WriteBatch::default(),
            staged_attrs: HashMap::new(),
            staged_marks: HashMap::new(),
        }
    }
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
    pub fn put_cold_location(&mut self, id: &Uuid, segment: SegmentId) {
        self.batch.put_cf(
            self.tier.cf(CF_COLD_LOC),
            id.as_bytes(),
            segment.0.to_le_bytes(),
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
        if memory.tier == Tier::Working || !memory.status.is_searchable() {
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
            superseded: memory.status == Status::Superseded,
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
    pub fn write(mut self, lsn: Lsn) -> Result<(), EngineError> {
        self.write_space_marks();
        self.batch
            .put_cf(self.tier.cf(CF_META), KEY_APPLIED_LSN, lsn.to_le_bytes());
        let result = self
            .tier
            .db
            .write_opt(self.batch, &self.tier.write_opts)
            .map_err(|e| rocks_err(&self.tier.path, e));
        self.tier.note(&result);
        result
    }
}

//! The raw configuration: what the merged TOML table holds, before validation. Unknown keys are
//! refused by name.

use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) listen: Option<String>,
    pub(super) data_dir: Option<String>,
    pub(super) log_level: Option<String>,
    pub(super) log_format: Option<String>,
    #[serde(default)]
    pub(super) embedding: RawEmbedding,
    #[serde(default)]
    pub(super) wal: RawWal,
    #[serde(default)]
    pub(super) working: RawWorking,
    #[serde(default)]
    pub(super) storage: RawStorage,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) auth: RawAuth,
    #[serde(default)]
    pub(super) backup: RawBackup,
    #[serde(default)]
    pub(super) history: RawHistory,
    #[serde(default)]
    pub(super) rate_limit: RawRateLimit,
    #[serde(default)]
    pub(super) search: RawSearch,
    #[serde(default)]
    pub(super) tier_migration: RawTierMigration,
    #[serde(default)]
    pub(super) console: RawConsole,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsole {
    pub(super) enabled: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTierMigration {
    pub(super) enabled: Option<bool>,
    pub(super) interval: Option<String>,
    pub(super) working_capacity: Option<i64>,
    pub(super) working_to_warm_after: Option<String>,
    pub(super) warm_to_cold_after: Option<String>,
    pub(super) min_importance_to_stay_warm: Option<f64>,
    pub(super) promote_after_accesses: Option<i64>,
    pub(super) strength: Option<String>,
    pub(super) access_weight: Option<f64>,
    pub(super) importance_weight: Option<f64>,
    pub(super) compact_dead_ratio: Option<f64>,
    pub(super) zstd_level: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSearch {
    pub(super) stemming: Option<bool>,
    pub(super) hnsw_connectivity: Option<i64>,
    pub(super) hnsw_expansion_add: Option<i64>,
    pub(super) hnsw_expansion_search: Option<i64>,
    pub(super) hnsw_quantization: Option<String>,
    pub(super) max_concurrent: Option<i64>,
    pub(super) index_save_changes: Option<i64>,
    pub(super) exact_candidates_max: Option<i64>,
    pub(super) hnsw_max_lagging: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHistory {
    pub(super) keep_versions: Option<i64>,
    pub(super) keep_for: Option<String>,
    pub(super) keep_vectors: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackup {
    pub(super) snapshot_interval: Option<String>,
    pub(super) snapshots_kept: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEmbedding {
    pub(super) dimensions: Option<i64>,
    pub(super) provider: Option<String>,
    pub(super) model_dir: Option<String>,
    pub(super) url: Option<String>,
    pub(super) model: Option<String>,
    pub(super) api_key_env: Option<String>,
    pub(super) batch_size: Option<i64>,
    pub(super) threads: Option<i64>,
    pub(super) timeout: Option<String>,
    pub(super) wait_timeout: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWal {
    pub(super) sync: Option<String>,
    pub(super) sync_interval: Option<String>,
    pub(super) segment_bytes: Option<i64>,
    pub(super) archive: Option<bool>,
    pub(super) archive_retention: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorking {
    pub(super) capacity: Option<i64>,
    pub(super) heap_bytes: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    pub(super) block_cache_bytes: Option<i64>,
    pub(super) min_free_disk_bytes: Option<i64>,
    pub(super) checkpoint_interval: Option<String>,
    pub(super) checkpoint_wal_bytes: Option<i64>,
    pub(super) access_flush_interval: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_body_bytes: Option<i64>,
    pub(super) max_connections: Option<i64>,
    pub(super) max_batch_body_bytes: Option<i64>,
    pub(super) shutdown_timeout: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    /// Plain keys (all namespaces) or `key:ns1|ns2` entries.
    pub(super) api_keys: Option<Vec<String>>,
    /// `[[auth.keys]]` tables: named keys with a role, stored as SHA-256 (file only).
    pub(super) keys: Option<Vec<RawKey>>,
    pub(super) allow_unauthenticated: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKey {
    pub(super) name: String,
    pub(super) role: String,
    pub(super) namespaces: Option<Vec<String>>,
    pub(super) sha256: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub(super) requests_per_second: Option<i64>,
    pub(super) burst: Option<i64>,
}

//! The key table: every configuration key, its type and its default, written once. The
//! validator reads its defaults here, `--print-config-keys` prints it, and README's table is
//! checked against it; plus how a key's string value (environment, flags) enters the table.

use std::time::Duration;

use super::{err, ConfigError};

/// Every settable key, its TOML type, and its default, in the order the docs list them.
pub const KEYS: &[(&str, Kind, &str)] = &[
    ("listen", Kind::Str, "127.0.0.1:3333"),
    ("data_dir", Kind::Str, "./engram-data"),
    ("log_level", Kind::Str, "info"),
    ("log_format", Kind::Str, "text"),
    ("embedding.dimensions", Kind::Int, "384"),
    ("embedding.provider", Kind::Str, "none"),
    ("embedding.model_dir", Kind::Str, ""),
    ("embedding.url", Kind::Str, ""),
    ("embedding.model", Kind::Str, ""),
    ("embedding.api_key_env", Kind::Str, "OPENAI_API_KEY"),
    ("embedding.batch_size", Kind::Int, "256"),
    ("embedding.threads", Kind::Int, "0"),
    ("embedding.timeout", Kind::Str, "30s"),
    ("embedding.wait_timeout", Kind::Str, "30s"),
    ("search.stemming", Kind::Bool, "true"),
    ("search.hnsw_connectivity", Kind::Int, "16"),
    ("search.hnsw_expansion_add", Kind::Int, "128"),
    ("search.hnsw_expansion_search", Kind::Int, "256"),
    ("search.hnsw_quantization", Kind::Str, "i8"),
    ("search.max_concurrent", Kind::Int, "32"),
    ("search.index_save_changes", Kind::Int, "50000"),
    ("search.exact_candidates_max", Kind::Int, "20000"),
    ("search.hnsw_max_lagging", Kind::Int, "100000"),
    ("wal.sync", Kind::Str, "always"),
    ("wal.sync_interval", Kind::Str, "10ms"),
    ("wal.segment_bytes", Kind::Int, "67108864"),
    ("wal.archive", Kind::Bool, "true"),
    ("wal.archive_retention", Kind::Str, "7d"),
    ("working.capacity", Kind::Int, "100000"),
    ("working.heap_bytes", Kind::Int, "8589934592"),
    ("storage.block_cache_bytes", Kind::Int, "268435456"),
    ("storage.min_free_disk_bytes", Kind::Int, "67108864"),
    ("storage.checkpoint_interval", Kind::Str, "60s"),
    ("storage.checkpoint_wal_bytes", Kind::Int, "268435456"),
    ("storage.access_flush_interval", Kind::Str, "1s"),
    ("limits.max_body_bytes", Kind::Int, "8388608"),
    ("limits.max_batch_body_bytes", Kind::Int, "67108864"),
    ("limits.shutdown_timeout", Kind::Str, "30s"),
    ("limits.max_connections", Kind::Int, "4096"),
    ("auth.api_keys", Kind::List, ""),
    ("auth.allow_unauthenticated", Kind::Bool, "false"),
    ("backup.snapshot_interval", Kind::Str, "off"),
    ("backup.snapshots_kept", Kind::Int, "7"),
    ("history.keep_versions", Kind::Int, "20"),
    ("history.keep_for", Kind::Str, "90d"),
    ("history.keep_vectors", Kind::Bool, "true"),
    ("rate_limit.requests_per_second", Kind::Int, "0"),
    ("rate_limit.burst", Kind::Int, "0"),
    ("tier_migration.enabled", Kind::Bool, "true"),
    ("tier_migration.interval", Kind::Str, "1m"),
    ("tier_migration.working_capacity", Kind::Int, "100000"),
    ("tier_migration.working_to_warm_after", Kind::Str, "1d"),
    ("tier_migration.warm_to_cold_after", Kind::Str, "30d"),
    (
        "tier_migration.min_importance_to_stay_warm",
        Kind::Float,
        "0.8",
    ),
    ("tier_migration.promote_after_accesses", Kind::Int, "3"),
    ("tier_migration.strength", Kind::Str, "1d"),
    ("tier_migration.access_weight", Kind::Float, "1.0"),
    ("tier_migration.importance_weight", Kind::Float, "1.0"),
    ("tier_migration.compact_dead_ratio", Kind::Float, "0.3"),
    ("tier_migration.zstd_level", Kind::Int, "3"),
    ("console.enabled", Kind::Bool, "true"),
];

/// The TOML type of a key, for reading it from the environment or a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Int,
    Float,
    Bool,
    /// Comma-separated in the environment and flags.
    List,
}

/// Parses durations written like `250ms`, `10s`, `5m`, `12h`, `7d`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(Duration::from_millis(n.checked_mul(unit_ms)?))
}

pub(super) fn kind_of(key: &str) -> Option<Kind> {
    KEYS.iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, kind, _)| *kind)
}

/// Sets `key` (dotted) in `table` from a string, typed by [`KEYS`].
pub(super) fn set_key(
    table: &mut toml::Table,
    key: &str,
    value: &str,
    source: &str,
) -> Result<(), ConfigError> {
    let kind = kind_of(key).ok_or_else(|| err(key, format!("unknown key (from {source})")))?;
    let parsed = match kind {
        Kind::Str => toml::Value::String(value.to_owned()),
        Kind::Int => toml::Value::Integer(value.trim().parse().map_err(|_| {
            err(
                key,
                format!("expected an integer, got {value:?} (from {source})"),
            )
        })?),
        Kind::Float => toml::Value::Float(value.trim().parse().map_err(|_| {
            err(
                key,
                format!("expected a number, got {value:?} (from {source})"),
            )
        })?),
        Kind::Bool => toml::Value::Boolean(match value.trim() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => {
                return Err(err(
                    key,
                    format!("expected true or false, got {value:?} (from {source})"),
                ))
            }
        }),
        Kind::List => toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
    };
    let mut parts = key.split('.').peekable();
    let mut current = table;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            current.insert(part.to_owned(), parsed);
            break;
        }
        let entry = current
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| err(key, format!("{part} is not a table")))?;
    }
    Ok(())
}

/// The environment variable for a key: `wal.sync` → `ENGRAM_WAL_SYNC`.
pub fn env_name(key: &str) -> String {
    format!("ENGRAM_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// The default of `key`, from [`KEYS`] (the one place defaults are written).
///
/// # Panics
/// If `key` is not in the table: a key the validator reads must be listed.
pub fn default_of(key: &str) -> &'static str {
    KEYS.iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, _, default)| *default)
        .unwrap_or_else(|| panic!("{key} is read by the validator but not listed in KEYS"))
}

//! From [`RawConfig`] to [`Settings`]: every value checked against its range, defaults from
//! [`KEYS`](super::KEYS), every error naming its key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use engram_engine::search::{Quantization, SearchConfig};
use engram_engine::{MigrationConfig, SyncMode, MAX_DIMENSIONS};

use super::keys::{default_of, parse_duration};
use super::raw::RawConfig;
use super::{err, ApiKey, ConfigError, Provider, Role, Settings};

fn default_bool(key: &str) -> bool {
    default_of(key) == "true"
}

fn positive(key: &str, v: Option<i64>, min: i64, max: i64) -> Result<i64, ConfigError> {
    let v = match v {
        Some(v) => v,
        None => default_of(key)
            .parse()
            .unwrap_or_else(|_| panic!("the default of {key} is an integer")),
    };
    if v < min || v > max {
        return Err(err(
            key,
            format!("must be between {min} and {max}, got {v}"),
        ));
    }
    Ok(v)
}

fn fraction(key: &str, v: Option<f64>, max: f64) -> Result<f64, ConfigError> {
    let v = match v {
        Some(v) => v,
        None => default_of(key)
            .parse()
            .unwrap_or_else(|_| panic!("the default of {key} is a number")),
    };
    if !(0.0..=max).contains(&v) {
        return Err(err(key, format!("must be between 0 and {max}, got {v}")));
    }
    Ok(v)
}

fn duration(key: &str, v: Option<String>) -> Result<Duration, ConfigError> {
    let s = v.unwrap_or_else(|| default_of(key).to_owned());
    parse_duration(&s).ok_or_else(|| {
        err(
            key,
            format!("expected a duration like 250ms, 10s, 5m, 12h or 7d, got {s:?}"),
        )
    })
}

pub(super) fn validate(raw: RawConfig) -> Result<Settings, ConfigError> {
    let listen_s = raw
        .listen
        .unwrap_or_else(|| default_of("listen").to_owned());
    let listen: SocketAddr = listen_s
        .parse()
        .map_err(|_| err("listen", format!("expected ADDRESS:PORT, got {listen_s:?}")))?;
    let data_dir = raw
        .data_dir
        .unwrap_or_else(|| default_of("data_dir").to_owned());
    if data_dir.is_empty() {
        return Err(err("data_dir", "must not be empty"));
    }
    let log_level = raw
        .log_level
        .unwrap_or_else(|| default_of("log_level").to_owned());
    if !["error", "warn", "info", "debug", "trace"].contains(&log_level.as_str()) {
        return Err(err(
            "log_level",
            format!("expected error, warn, info, debug or trace, got {log_level:?}"),
        ));
    }
    let log_json = match raw
        .log_format
        .as_deref()
        .unwrap_or(default_of("log_format"))
    {
        "text" => false,
        "json" => true,
        other => {
            return Err(err(
                "log_format",
                format!("expected text or json, got {other:?}"),
            ))
        }
    };
    let dimensions = positive(
        "embedding.dimensions",
        raw.embedding.dimensions,
        1,
        MAX_DIMENSIONS as i64,
    )?;
    let non_empty = |key: &str, v: Option<String>| -> Result<String, ConfigError> {
        v.filter(|s| !s.trim().is_empty())
            .ok_or_else(|| err(key, "must be set for this embedding.provider"))
    };
    let model_dir = raw
        .embedding
        .model_dir
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(PathBuf::from);
    let provider = match raw
        .embedding
        .provider
        .as_deref()
        .unwrap_or(default_of("embedding.provider"))
    {
        "none" => Provider::None,
        "local" => Provider::Local {
            model_dir: PathBuf::from(non_empty("embedding.model_dir", raw.embedding.model_dir)?),
        },
        "ollama" => Provider::Ollama {
            url: non_empty("embedding.url", raw.embedding.url)?,
            model: non_empty("embedding.model", raw.embedding.model)?,
        },
        "openai" => Provider::OpenAi {
            url: non_empty("embedding.url", raw.embedding.url)?,
            model: non_empty("embedding.model", raw.embedding.model)?,
            api_key_env: raw
                .embedding
                .api_key_env
                .unwrap_or_else(|| default_of("embedding.api_key_env").to_owned()),
        },
        other => {
            return Err(err(
                "embedding.provider",
                format!("expected none, local, ollama or openai, got {other:?}"),
            ))
        }
    };
    let embed_batch = positive("embedding.batch_size", raw.embedding.batch_size, 1, 1024)?;
    let embed_timeout = duration("embedding.timeout", raw.embedding.timeout)?;
    let embed_wait_timeout = duration("embedding.wait_timeout", raw.embedding.wait_timeout)?;
    if embed_wait_timeout > Duration::from_secs(600) {
        return Err(err(
            "embedding.wait_timeout",
            "must be at most 10m (a client waits that long for its answer)",
        ));
    }
    // 0: one per CPU.
    let embed_threads = match positive("embedding.threads", raw.embedding.threads, 0, 256)? {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        n => n as usize,
    };
    let quantization_s = raw
        .search
        .hnsw_quantization
        .unwrap_or_else(|| default_of("search.hnsw_quantization").to_owned());
    let quantization = Quantization::parse(&quantization_s).ok_or_else(|| {
        err(
            "search.hnsw_quantization",
            format!("expected f32, bf16 or i8, got {quantization_s:?}"),
        )
    })?;
    let search = SearchConfig {
        stemming: raw
            .search
            .stemming
            .unwrap_or(default_bool("search.stemming")),
        connectivity: positive(
            "search.hnsw_connectivity",
            raw.search.hnsw_connectivity,
            2,
            256,
        )? as usize,
        expansion_add: positive(
            "search.hnsw_expansion_add",
            raw.search.hnsw_expansion_add,
            1,
            4096,
        )? as usize,
        expansion_search: positive(
            "search.hnsw_expansion_search",
            raw.search.hnsw_expansion_search,
            1,
            4096,
        )? as usize,
        quantization,
        threads: positive("search.max_concurrent", raw.search.max_concurrent, 1, 1024)? as usize,
        save_after_changes: positive(
            "search.index_save_changes",
            raw.search.index_save_changes,
            1,
            i64::MAX,
        )? as u64,
        exact_candidates_max: positive(
            "search.exact_candidates_max",
            raw.search.exact_candidates_max,
            0,
            10_000_000,
        )? as usize,
        max_lagging: positive(
            "search.hnsw_max_lagging",
            raw.search.hnsw_max_lagging,
            0,
            100_000_000,
        )? as usize,
    };
    let sync_interval = duration("wal.sync_interval", raw.wal.sync_interval)?;
    if sync_interval.is_zero() {
        return Err(err("wal.sync_interval", "must be above zero"));
    }
    let sync_mode = match raw.wal.sync.as_deref().unwrap_or(default_of("wal.sync")) {
        "always" => SyncMode::Always,
        "interval" => SyncMode::Interval(sync_interval),
        "none" => SyncMode::NoSync,
        other => {
            return Err(err(
                "wal.sync",
                format!("expected always, interval or none, got {other:?}"),
            ))
        }
    };
    let wal_segment_bytes = positive(
        "wal.segment_bytes",
        raw.wal.segment_bytes,
        16 << 20,
        1 << 32,
    )?;
    let wal_archive_retention = match raw
        .wal
        .archive_retention
        .as_deref()
        .or(Some(default_of("wal.archive_retention")))
    {
        Some("forever") => None,
        other => Some(duration("wal.archive_retention", other.map(str::to_owned))?),
    };
    if let (Some(a), Some(b)) = (raw.working.capacity, raw.tier_migration.working_capacity) {
        if a != b {
            return Err(err(
                "tier_migration.working_capacity",
                format!("is {b}, but working.capacity (its older name) is {a}: set one"),
            ));
        }
    }
    let working_capacity = positive(
        "tier_migration.working_capacity",
        raw.tier_migration.working_capacity.or(raw.working.capacity),
        1,
        100_000_000,
    )?;
    let tm = raw.tier_migration;
    let migration = MigrationConfig {
        enabled: tm.enabled.unwrap_or(default_bool("tier_migration.enabled")),
        interval: duration("tier_migration.interval", tm.interval)?,
        working_to_warm_after: duration(
            "tier_migration.working_to_warm_after",
            tm.working_to_warm_after,
        )?,
        warm_to_cold_after: duration("tier_migration.warm_to_cold_after", tm.warm_to_cold_after)?,
        min_importance_to_stay_warm: fraction(
            "tier_migration.min_importance_to_stay_warm",
            tm.min_importance_to_stay_warm,
            1.0,
        )? as f32,
        promote_after_accesses: positive(
            "tier_migration.promote_after_accesses",
            tm.promote_after_accesses,
            0,
            i64::MAX,
        )? as u64,
        strength: duration("tier_migration.strength", tm.strength)?,
        access_weight: fraction("tier_migration.access_weight", tm.access_weight, 1e6)?,
        importance_weight: fraction(
            "tier_migration.importance_weight",
            tm.importance_weight,
            1e6,
        )?,
        compact_dead_ratio: fraction(
            "tier_migration.compact_dead_ratio",
            tm.compact_dead_ratio,
            1.0,
        )?,
        zstd_level: positive("tier_migration.zstd_level", tm.zstd_level, 1, 19)? as i32,
    };
    if migration.interval.is_zero() || migration.strength.is_zero() {
        return Err(err(
            "tier_migration.interval",
            "interval and strength must be above zero",
        ));
    }
    let working_heap_bytes = positive(
        "working.heap_bytes",
        raw.working.heap_bytes,
        1 << 24,
        1 << 44,
    )?;
    let block_cache_bytes = positive(
        "storage.block_cache_bytes",
        raw.storage.block_cache_bytes,
        1 << 20,
        1 << 40,
    )?;
    let min_free_disk_bytes = positive(
        "storage.min_free_disk_bytes",
        raw.storage.min_free_disk_bytes,
        0,
        i64::MAX,
    )?;
    let checkpoint_interval = duration(
        "storage.checkpoint_interval",
        raw.storage.checkpoint_interval,
    )?;
    let checkpoint_wal_bytes = positive(
        "storage.checkpoint_wal_bytes",
        raw.storage.checkpoint_wal_bytes,
        1 << 20,
        1 << 40,
    )?;
    let access_flush_interval = duration(
        "storage.access_flush_interval",
        raw.storage.access_flush_interval,
    )?;
    let max_body_bytes = positive(
        "limits.max_body_bytes",
        raw.limits.max_body_bytes,
        2 << 20,
        1 << 30,
    )?;
    let max_batch_body_bytes = positive(
        "limits.max_batch_body_bytes",
        raw.limits.max_batch_body_bytes,
        2 << 20,
        1 << 32,
    )?;
    let shutdown_timeout = duration("limits.shutdown_timeout", raw.limits.shutdown_timeout)?;
    let max_connections = positive(
        "limits.max_connections",
        raw.limits.max_connections,
        1,
        1_000_000,
    )?;
    let snapshot_interval = match raw
        .backup
        .snapshot_interval
        .as_deref()
        .or(Some(default_of("backup.snapshot_interval")))
    {
        None | Some("off") => None,
        other => Some(duration(
            "backup.snapshot_interval",
            other.map(str::to_owned),
        )?),
    };
    let snapshots_kept = positive(
        "backup.snapshots_kept",
        raw.backup.snapshots_kept,
        1,
        10_000,
    )?;
    let history_keep_versions = positive(
        "history.keep_versions",
        raw.history.keep_versions,
        0,
        1_000_000,
    )?;
    let history_keep_for = match raw
        .history
        .keep_for
        .as_deref()
        .or(Some(default_of("history.keep_for")))
    {
        Some("forever") => None,
        other => Some(duration("history.keep_for", other.map(str::to_owned))?),
    };
    let mut api_keys = Vec::new();
    for (i, entry) in raw
        .auth
        .api_keys
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let (key, namespaces): (&str, Vec<String>) = match entry.split_once(':') {
            Some((k, ns)) => (k, ns.split('|').map(str::to_owned).collect()),
            None => (&entry, Vec::new()),
        };
        if key.len() < 8 {
            return Err(err(
                "auth.api_keys",
                "each key must be at least 8 characters",
            ));
        }
        // A plain key is an admin key when it may use every namespace, a write key otherwise
        // (what every key could do before roles).
        let role = if namespaces.is_empty() {
            Role::Admin
        } else {
            Role::Write
        };
        api_keys.push(ApiKey {
            name: format!("api_keys[{i}]"),
            role,
            sha256: sha256(key.as_bytes()),
            namespaces,
        });
    }
    for (i, k) in raw.auth.keys.unwrap_or_default().into_iter().enumerate() {
        let field = |f: &str| format!("auth.keys[{i}].{f}");
        if k.name.is_empty() || api_keys.iter().any(|o: &ApiKey| o.name == k.name) {
            return Err(err(&field("name"), "must be given and unique"));
        }
        let role = Role::parse(&k.role).ok_or_else(|| {
            err(
                &field("role"),
                format!("expected read, write or admin, got {:?}", k.role),
            )
        })?;
        let sha256 = parse_sha256(&k.sha256).ok_or_else(|| {
            err(
                &field("sha256"),
                "expected the key's SHA-256 as 64 hex digits (engramctl key new prints it)",
            )
        })?;
        if api_keys.iter().any(|o| o.sha256 == sha256) {
            return Err(err(&field("sha256"), "is the digest of another key"));
        }
        api_keys.push(ApiKey {
            name: k.name,
            role,
            sha256,
            namespaces: k.namespaces.unwrap_or_default(),
        });
    }
    let allow_unauthenticated = raw
        .auth
        .allow_unauthenticated
        .unwrap_or(default_bool("auth.allow_unauthenticated"));
    if api_keys.is_empty() && !listen.ip().is_loopback() && !allow_unauthenticated {
        return Err(err(
            "listen",
            format!(
                "is {listen}, which other hosts can reach, and auth.api_keys is empty: anyone \
                 could read, write, delete and snapshot every memory. Set auth.api_keys, listen \
                 on a loopback address, or set auth.allow_unauthenticated = true to serve \
                 without keys on purpose"
            ),
        ));
    }
    let rate_limit_per_second = positive(
        "rate_limit.requests_per_second",
        raw.rate_limit.requests_per_second,
        0,
        10_000_000,
    )?;
    let rate_limit_burst = positive("rate_limit.burst", raw.rate_limit.burst, 0, 10_000_000)?;
    Ok(Settings {
        listen,
        data_dir: PathBuf::from(data_dir),
        log_level,
        log_json,
        dimensions: dimensions as usize,
        provider,
        model_dir,
        embed_batch: embed_batch as usize,
        embed_threads,
        embed_timeout,
        embed_wait_timeout,
        search,
        migration,
        sync_mode,
        wal_segment_bytes: wal_segment_bytes as u64,
        wal_archive: raw.wal.archive.unwrap_or(default_bool("wal.archive")),
        wal_archive_retention,
        working_capacity: working_capacity as usize,
        working_heap_bytes: working_heap_bytes as u64,
        block_cache_bytes: block_cache_bytes as usize,
        min_free_disk_bytes: min_free_disk_bytes as u64,
        checkpoint_interval,
        checkpoint_wal_bytes: checkpoint_wal_bytes as u64,
        access_flush_interval,
        max_body_bytes: max_body_bytes as usize,
        max_connections: max_connections as usize,
        max_batch_body_bytes: max_batch_body_bytes as usize,
        shutdown_timeout,
        api_keys,
        allow_unauthenticated,
        snapshot_interval,
        snapshots_kept: snapshots_kept as usize,
        history_keep_versions: history_keep_versions as u64,
        history_keep_for,
        history_keep_vectors: raw
            .history
            .keep_vectors
            .unwrap_or(default_bool("history.keep_vectors")),
        rate_limit_per_second: rate_limit_per_second as u32,
        rate_limit_burst: (rate_limit_burst as u32).max(rate_limit_per_second as u32),
        console: raw
            .console
            .enabled
            .unwrap_or(default_bool("console.enabled")),
    })
}

/// SHA-256 of `bytes`: how keys are kept and compared.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

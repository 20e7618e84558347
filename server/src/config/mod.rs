//! Configuration in two stages: a raw TOML table merged from the file, then `ENGRAM_*`
//! environment variables, then `--set key=value` / named flags; then validated [`Settings`]. An
//! invalid value refuses to start with a message naming its key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use engram_engine::search::{Quantization, SearchConfig};
use engram_engine::{EngineConfig, MigrationConfig, SyncMode, MAX_DIMENSIONS};
use serde::Deserialize;

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
    ("search.stemming", Kind::Bool, "true"),
    ("search.hnsw_connectivity", Kind::Int, "16"),
    ("search.hnsw_expansion_add", Kind::Int, "128"),
    ("search.hnsw_expansion_search", Kind::Int, "256"),
    ("search.hnsw_quantization", Kind::Str, "bf16"),
    ("search.max_concurrent", Kind::Int, "32"),
    ("search.index_save_changes", Kind::Int, "50000"),
    ("search.exact_candidates_max", Kind::Int, "20000"),
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
    ("auth.api_keys", Kind::List, ""),
    ("backup.snapshot_interval", Kind::Str, "off"),
    ("backup.snapshots_kept", Kind::Int, "7"),
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

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// One API key and the namespaces it may touch (`*` or empty: all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub key: String,
    pub namespaces: Vec<String>,
}

impl ApiKey {
    /// Whether the key is not limited to some namespaces (needed for admin endpoints).
    pub fn allows_all(&self) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == "*")
    }

    pub fn allows(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == "*" || n == namespace)
    }
}

/// Which embedder computes vectors for memories stored without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    None,
    /// Built-in all-MiniLM-L6-v2 loaded from this directory.
    Local {
        model_dir: PathBuf,
    },
    Ollama {
        url: String,
        model: String,
    },
    OpenAi {
        url: String,
        model: String,
        /// Environment variable holding the API key (read at start).
        api_key_env: String,
    },
}

impl Provider {
    /// The provider's name, as `embedding.provider` spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Provider::None => "none",
            Provider::Local { .. } => "local",
            Provider::Ollama { .. } => "ollama",
            Provider::OpenAi { .. } => "openai",
        }
    }
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub log_level: String,
    pub log_json: bool,
    pub dimensions: usize,
    pub provider: Provider,
    pub embed_batch: usize,
    /// Parallel model passes of the local embedder.
    pub embed_threads: usize,
    pub embed_timeout: Duration,
    pub search: SearchConfig,
    pub migration: MigrationConfig,
    pub sync_mode: SyncMode,
    pub wal_segment_bytes: u64,
    pub wal_archive: bool,
    /// `None`: archived segments are kept forever.
    pub wal_archive_retention: Option<Duration>,
    pub working_capacity: usize,
    pub working_heap_bytes: u64,
    pub block_cache_bytes: usize,
    pub min_free_disk_bytes: u64,
    pub checkpoint_interval: Duration,
    pub checkpoint_wal_bytes: u64,
    pub access_flush_interval: Duration,
    pub max_body_bytes: usize,
    pub max_batch_body_bytes: usize,
    pub shutdown_timeout: Duration,
    /// Empty: no authentication.
    pub api_keys: Vec<ApiKey>,
    /// `None`: snapshots only on request.
    pub snapshot_interval: Option<Duration>,
    pub snapshots_kept: usize,
    /// 0: no rate limit.
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
}

impl Settings {
    pub fn engine_config(&self) -> EngineConfig {
        let mut c = EngineConfig::new(&self.data_dir);
        c.dimensions = self.dimensions;
        c.working_capacity = self.working_capacity;
        c.working_heap_bytes = self.working_heap_bytes;
        c.wal_segment_bytes = self.wal_segment_bytes;
        c.sync_mode = self.sync_mode;
        c.wal_archive = self.wal_archive;
        c.wal_archive_retention = self.wal_archive_retention;
        c.block_cache_bytes = self.block_cache_bytes;
        c.checkpoint_interval = self.checkpoint_interval;
        c.checkpoint_wal_bytes = self.checkpoint_wal_bytes;
        c.access_flush_interval = self.access_flush_interval;
        c.min_free_disk_bytes = self.min_free_disk_bytes;
        c.snapshot_interval = self.snapshot_interval;
        c.snapshots_kept = self.snapshots_kept;
        c.auto_embed = self.provider != Provider::None;
        c.search = self.search.clone();
        c.migration = self.migration.clone();
        c
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    data_dir: Option<String>,
    log_level: Option<String>,
    log_format: Option<String>,
    #[serde(default)]
    embedding: RawEmbedding,
    #[serde(default)]
    wal: RawWal,
    #[serde(default)]
    working: RawWorking,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    backup: RawBackup,
    #[serde(default)]
    rate_limit: RawRateLimit,
    #[serde(default)]
    search: RawSearch,
    #[serde(default)]
    tier_migration: RawTierMigration,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTierMigration {
    enabled: Option<bool>,
    interval: Option<String>,
    working_capacity: Option<i64>,
    working_to_warm_after: Option<String>,
    warm_to_cold_after: Option<String>,
    min_importance_to_stay_warm: Option<f64>,
    promote_after_accesses: Option<i64>,
    strength: Option<String>,
    access_weight: Option<f64>,
    importance_weight: Option<f64>,
    compact_dead_ratio: Option<f64>,
    zstd_level: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSearch {
    stemming: Option<bool>,
    hnsw_connectivity: Option<i64>,
    hnsw_expansion_add: Option<i64>,
    hnsw_expansion_search: Option<i64>,
    hnsw_quantization: Option<String>,
    max_concurrent: Option<i64>,
    index_save_changes: Option<i64>,
    exact_candidates_max: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBackup {
    snapshot_interval: Option<String>,
    snapshots_kept: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEmbedding {
    dimensions: Option<i64>,
    provider: Option<String>,
    model_dir: Option<String>,
    url: Option<String>,
    model: Option<String>,
    api_key_env: Option<String>,
    batch_size: Option<i64>,
    threads: Option<i64>,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWal {
    sync: Option<String>,
    sync_interval: Option<String>,
    segment_bytes: Option<i64>,
    archive: Option<bool>,
    archive_retention: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWorking {
    capacity: Option<i64>,
    heap_bytes: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    block_cache_bytes: Option<i64>,
    min_free_disk_bytes: Option<i64>,
    checkpoint_interval: Option<String>,
    checkpoint_wal_bytes: Option<i64>,
    access_flush_interval: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_body_bytes: Option<i64>,
    max_batch_body_bytes: Option<i64>,
    shutdown_timeout: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    /// Plain keys (all namespaces) or `key:ns1|ns2` entries.
    api_keys: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    requests_per_second: Option<i64>,
    burst: Option<i64>,
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

fn kind_of(key: &str) -> Option<Kind> {
    KEYS.iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, kind, _)| *kind)
}

/// Sets `key` (dotted) in `table` from a string, typed by [`KEYS`].
fn set_key(
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

/// What the command line says about configuration.
#[derive(Debug, Clone, Default)]
pub struct CommandLine {
    /// `--config FILE` (or `ENGRAM_CONFIG`).
    pub config: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<String>,
    /// `--set KEY=VALUE`, in order.
    pub set: Vec<String>,
}

/// The settings of this process: the file, then `ENGRAM_*` variables, then the command line;
/// an `ENGRAM_*` variable that is no key is refused (a typo must not be silently ignored).
/// Also the fault injector `ENGRAM_FAULT_FSYNC_FAIL_AFTER` asks for, for drills and tests.
pub fn from_process(
    cli: &CommandLine,
) -> Result<(Settings, Option<engram_engine::FaultInjector>), ConfigError> {
    let mut overrides = Vec::new();
    if let Some(l) = &cli.listen {
        overrides.push(("listen".to_owned(), l.clone()));
    }
    if let Some(d) = &cli.data_dir {
        overrides.push(("data_dir".to_owned(), d.clone()));
    }
    for s in &cli.set {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| err(&format!("--set {s}"), "expected KEY=VALUE"))?;
        overrides.push((k.trim().to_owned(), v.to_owned()));
    }
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("ENGRAM_"))
        .collect();
    if let Some((name, _)) = env.iter().find(|(k, _)| {
        k != "ENGRAM_CONFIG"
            && !k.starts_with("ENGRAM_FAULT_")
            && !KEYS.iter().any(|(key, _, _)| env_name(key) == **k)
    }) {
        return Err(err(
            name,
            "not a configuration variable (see --print-config-keys)",
        ));
    }
    let settings = load(cli.config.as_deref(), &env, &overrides)?;
    let fault = match std::env::var("ENGRAM_FAULT_FSYNC_FAIL_AFTER") {
        Ok(v) => Some(crate::fsync_failure_after(v.parse().map_err(|_| {
            err("ENGRAM_FAULT_FSYNC_FAIL_AFTER", "expected an integer")
        })?)),
        Err(_) => None,
    };
    Ok((settings, fault))
}

/// Merges file, environment and overrides (in that order of precedence, lowest first) and
/// validates the result.
pub fn load(
    file: Option<&std::path::Path>,
    env: &[(String, String)],
    overrides: &[(String, String)],
) -> Result<Settings, ConfigError> {
    let mut table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| err("--config", format!("cannot read {}: {e}", path.display())))?;
            text.parse::<toml::Table>().map_err(|e| {
                err(
                    "--config",
                    format!("{} is not valid TOML: {e}", path.display()),
                )
            })?
        }
        None => toml::Table::new(),
    };
    for (key, _, _) in KEYS {
        let name = env_name(key);
        if let Some((_, value)) = env.iter().find(|(k, _)| *k == name) {
            set_key(&mut table, key, value, &name)?;
        }
    }
    for (key, value) in overrides {
        set_key(&mut table, key, value, "command line")?;
    }
    let raw: RawConfig =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let path = e.path().to_string();
            err(&path, e.into_inner().to_string())
        })?;
    validate(raw)
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

fn validate(raw: RawConfig) -> Result<Settings, ConfigError> {
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
    let mut api_keys = Vec::new();
    for entry in raw.auth.api_keys.unwrap_or_default() {
        let (key, namespaces) = match entry.split_once(':') {
            Some((k, ns)) => (k.to_owned(), ns.split('|').map(str::to_owned).collect()),
            None => (entry.clone(), Vec::new()),
        };
        if key.len() < 8 {
            return Err(err(
                "auth.api_keys",
                "each key must be at least 8 characters",
            ));
        }
        api_keys.push(ApiKey { key, namespaces });
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
        embed_batch: embed_batch as usize,
        embed_threads,
        embed_timeout,
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
        max_batch_body_bytes: max_batch_body_bytes as usize,
        shutdown_timeout,
        api_keys,
        snapshot_interval,
        snapshots_kept: snapshots_kept as usize,
        rate_limit_per_second: rate_limit_per_second as u32,
        rate_limit_burst: (rate_limit_burst as u32).max(rate_limit_per_second as u32),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let s = load(None, &[], &[]).expect("defaults are valid");
        assert_eq!(s.listen.to_string(), "127.0.0.1:3333");
        assert_eq!(s.dimensions, 384);
        assert_eq!(s.sync_mode, SyncMode::Always);
    }

    #[test]
    fn precedence_file_then_env_then_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("engram.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\n[working]\ncapacity = 10\n",
        )
        .expect("write");
        let env = vec![("ENGRAM_LISTEN".to_owned(), "127.0.0.1:2".to_owned())];
        let s = load(Some(&path), &env, &[]).expect("valid");
        assert_eq!(s.listen.port(), 2);
        assert_eq!(s.working_capacity, 10);
        let s = load(
            Some(&path),
            &env,
            &[("listen".to_owned(), "127.0.0.1:3".to_owned())],
        )
        .expect("valid");
        assert_eq!(s.listen.port(), 3);
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, &str, &str)] = &[
            ("wal.sync", "sometimes", "wal.sync"),
            ("embedding.dimensions", "0", "embedding.dimensions"),
            ("embedding.dimensions", "4097", "embedding.dimensions"),
            ("listen", "nope", "listen"),
            (
                "storage.checkpoint_interval",
                "soon",
                "storage.checkpoint_interval",
            ),
            ("working.capacity", "abc", "working.capacity"),
        ];
        for (key, value, named) in cases {
            let e = load(None, &[], &[((*key).to_owned(), (*value).to_owned())]).expect_err(key);
            assert_eq!(e.key, *named, "{e}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[wal]\nsnyc = \"always\"\n").expect("write");
        let e = load(Some(&path), &[], &[]).expect_err("unknown key");
        assert!(e.to_string().contains("snyc"), "{e}");
    }

    #[test]
    fn every_default_round_trips_and_matches_the_engine() {
        let defaults = load(None, &[], &[]).expect("defaults are valid");
        for (key, _, default) in KEYS {
            if default.is_empty() {
                continue;
            }
            let set = [((*key).to_owned(), (*default).to_owned())];
            let explicit = load(None, &[], &set).unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_eq!(
                format!("{explicit:?}"),
                format!("{defaults:?}"),
                "setting {key} to its listed default changes the settings"
            );
        }
        // The engine's own defaults (for library users and the offline tools) are the same.
        let ours = defaults.engine_config();
        let engine = EngineConfig::new(&defaults.data_dir);
        assert_eq!(ours.search, engine.search);
        assert_eq!(ours.migration, engine.migration);
        assert_eq!(ours.search, SearchConfig::default());
        assert_eq!(ours.migration, MigrationConfig::default());
        let pairs: [(&str, String, String); 14] = [
            (
                "dimensions",
                ours.dimensions.to_string(),
                engine.dimensions.to_string(),
            ),
            (
                "working_capacity",
                ours.working_capacity.to_string(),
                engine.working_capacity.to_string(),
            ),
            (
                "working_heap_bytes",
                ours.working_heap_bytes.to_string(),
                engine.working_heap_bytes.to_string(),
            ),
            (
                "wal_segment_bytes",
                ours.wal_segment_bytes.to_string(),
                engine.wal_segment_bytes.to_string(),
            ),
            (
                "sync_mode",
                format!("{:?}", ours.sync_mode),
                format!("{:?}", engine.sync_mode),
            ),
            (
                "wal_archive",
                ours.wal_archive.to_string(),
                engine.wal_archive.to_string(),
            ),
            (
                "wal_archive_retention",
                format!("{:?}", ours.wal_archive_retention),
                format!("{:?}", engine.wal_archive_retention),
            ),
            (
                "block_cache_bytes",
                ours.block_cache_bytes.to_string(),
                engine.block_cache_bytes.to_string(),
            ),
            (
                "checkpoint_interval",
                format!("{:?}", ours.checkpoint_interval),
                format!("{:?}", engine.checkpoint_interval),
            ),
            (
                "checkpoint_wal_bytes",
                ours.checkpoint_wal_bytes.to_string(),
                engine.checkpoint_wal_bytes.to_string(),
            ),
            (
                "access_flush_interval",
                format!("{:?}", ours.access_flush_interval),
                format!("{:?}", engine.access_flush_interval),
            ),
            (
                "min_free_disk_bytes",
                ours.min_free_disk_bytes.to_string(),
                engine.min_free_disk_bytes.to_string(),
            ),
            (
                "snapshot_interval",
                format!("{:?}", ours.snapshot_interval),
                format!("{:?}", engine.snapshot_interval),
            ),
            (
                "snapshots_kept",
                ours.snapshots_kept.to_string(),
                engine.snapshots_kept.to_string(),
            ),
        ];
        for (field, a, b) in pairs {
            assert_eq!(
                a, b,
                "EngineConfig::{field}: the key table says {a}, the engine {b}"
            );
        }
    }

    #[test]
    fn the_readme_lists_every_key_with_its_default() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let readme = std::fs::read_to_string(&path).expect("README.md");
        let rows: Vec<Vec<&str>> = readme
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| l.trim_matches('|').split(" | ").map(str::trim).collect())
            .filter(|cells: &Vec<&str>| cells.len() >= 3 && cells[1].starts_with("`ENGRAM_"))
            .collect();
        assert_eq!(
            rows.len(),
            KEYS.len(),
            "README's configuration table has one row per key"
        );
        for (key, _, default) in KEYS {
            let row = rows
                .iter()
                .find(|r| r[0] == format!("`{key}`"))
                .unwrap_or_else(|| panic!("README does not list {key}"));
            assert_eq!(row[1], format!("`{}`", env_name(key)), "{key}");
            if default.is_empty() {
                assert_eq!(row[2], "(none)", "{key}");
            } else {
                assert!(
                    row[2].starts_with(&format!("`{default}`")),
                    "README gives {key} the default {}, the table {default}",
                    row[2]
                );
            }
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("1.5s"), None);
        assert_eq!(parse_duration("s"), None);
    }
}

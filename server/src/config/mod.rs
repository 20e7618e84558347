//! Configuration in two stages: a raw TOML table merged from the file, then `ENGRAM_*`
//! environment variables, then `--set key=value` / named flags; then validated [`Settings`]. An
//! invalid value refuses to start with a message naming its key.

mod keys;
mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use engram_engine::search::SearchConfig;
use engram_engine::{EngineConfig, MigrationConfig, SyncMode};

use keys::set_key;
pub use keys::{default_of, env_name, parse_duration, Kind, KEYS};
use raw::RawConfig;
pub use validate::sha256;
use validate::validate;

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
    /// Names the key in logs and the rate limiter (never the key itself).
    pub name: String,
    pub role: Role,
    /// SHA-256 of the key: the daemon keeps no key in the clear.
    pub sha256: [u8; 32],
    pub namespaces: Vec<String>,
}

/// What a key may do; each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Get, list and search (MCP: recall, get_memory, list_memories, memory_status).
    Read,
    /// Plus create, update and soft delete (MCP: remember, update_memory, forget).
    Write,
    /// Plus purge, snapshots, migrate, compact and the tier report; admin endpoints also need
    /// a key not limited to namespaces.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl ApiKey {
    /// Whether the key's role covers `needed`.
    pub fn can(&self, needed: Role) -> bool {
        self.role >= needed
    }

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
    /// `embedding.model_dir` whatever the provider: an embedding migration to the local model
    /// loads it from here.
    pub model_dir: Option<PathBuf>,
    pub embed_batch: usize,
    /// Parallel model passes of the local embedder.
    pub embed_threads: usize,
    pub embed_timeout: Duration,
    /// Longest a `?wait_for_embedding=true` write waits before answering with what is still
    /// `pending`.
    pub embed_wait_timeout: Duration,
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
    /// Most connections served at once (lowered at start to what the descriptor limit allows).
    pub max_connections: usize,
    pub max_batch_body_bytes: usize,
    pub shutdown_timeout: Duration,
    /// Empty: no authentication.
    pub api_keys: Vec<ApiKey>,
    /// Serving without keys on an address other hosts can reach was asked for explicitly.
    pub allow_unauthenticated: bool,
    /// `None`: snapshots only on request.
    pub snapshot_interval: Option<Duration>,
    pub snapshots_kept: usize,
    /// Replaced versions kept per memory (0: none).
    pub history_keep_versions: u64,
    /// `None`: versions are removed only by `history_keep_versions`.
    pub history_keep_for: Option<Duration>,
    /// `false`: a replaced version keeps no vector.
    pub history_keep_vectors: bool,
    /// 0: no rate limit.
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    /// Serve the web console at `/console`.
    pub console: bool,
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
        c.history_keep_versions = self.history_keep_versions;
        c.history_keep_for = self.history_keep_for;
        c.history_keep_vectors = self.history_keep_vectors;
        c.auto_embed = self.provider != Provider::None;
        c.search = self.search.clone();
        c.migration = self.migration.clone();
        c
    }
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
/// What a test or a drill may switch on from the environment; never set by a configuration
/// file, and off unless its variable is set.
#[derive(Default)]
pub struct TestHooks {
    /// `ENGRAM_FAULT_FSYNC_FAIL_AFTER=N`: every fsync after the first N fails.
    pub fault: Option<engram_engine::FaultInjector>,
    /// `ENGRAM_TEST_CLOCK=adjustable`: the engine reads an adjustable clock, moved forward by
    /// `POST /api/v1/admin/test-clock`.
    pub clock: Option<engram_engine::Clock>,
}

impl std::fmt::Debug for TestHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestHooks")
            .field("fault", &self.fault.is_some())
            .field("clock", &self.clock)
            .finish()
    }
}

/// The environment variables of [`TestHooks`].
const HOOK_VARIABLES: [&str; 2] = ["ENGRAM_FAULT_FSYNC_FAIL_AFTER", "ENGRAM_TEST_CLOCK"];

pub fn from_process(cli: &CommandLine) -> Result<(Settings, TestHooks), ConfigError> {
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
        if k.trim().starts_with("auth.api_keys") {
            // Logging is not up yet; this goes where configuration errors go.
            eprintln!(
                "engramd: warning: --set {} puts API keys on the command line, where `ps` shows \
                 them to every user; use the configuration file ([[auth.keys]], stored as \
                 SHA-256) or ENGRAM_AUTH_API_KEYS",
                k.trim()
            );
        }
        overrides.push((k.trim().to_owned(), v.to_owned()));
    }
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("ENGRAM_"))
        .collect();
    if let Some((name, _)) = env.iter().find(|(k, _)| {
        k != "ENGRAM_CONFIG"
            && !HOOK_VARIABLES.contains(&k.as_str())
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
    let clock = match std::env::var("ENGRAM_TEST_CLOCK").as_deref() {
        Ok("adjustable") => Some(engram_engine::Clock::adjustable()),
        Ok(_) => return Err(err("ENGRAM_TEST_CLOCK", "expected \"adjustable\"")),
        Err(_) => None,
    };
    Ok((settings, TestHooks { fault, clock }))
}

/// Merges file, environment and overrides (in that order of precedence, lowest first) and
/// validates the result.
pub fn load(
    file: Option<&std::path::Path>,
    env: &[(String, String)],
    overrides: &[(String, String)],
) -> Result<Settings, ConfigError> {
    let table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| err("--config", format!("cannot read {}: {e}", path.display())))?;
            parse_file(&text, &path.display().to_string())?
        }
        None => toml::Table::new(),
    };
    merge(table, env, overrides)
}

/// The settings a configuration file's text gives on its own (no environment, no flags);
/// `name` names the file in errors.
pub fn from_toml_str(text: &str, name: &str) -> Result<Settings, ConfigError> {
    merge(parse_file(text, name)?, &[], &[])
}

fn parse_file(text: &str, name: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|e| err("--config", format!("{name} is not valid TOML: {e}")))
}

fn merge(
    mut table: toml::Table,
    env: &[(String, String)],
    overrides: &[(String, String)],
) -> Result<Settings, ConfigError> {
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
    fn keys_have_roles_and_are_kept_as_digests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys.toml");
        let digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"; // "test"
        std::fs::write(
            &path,
            format!(
                "[auth]\napi_keys = [\"admin-0123456789\", \"agent-abcdefgh:team-a\"]\n\
                 [[auth.keys]]\nname = \"reader\"\nrole = \"read\"\nnamespaces = [\"team-a\"]\nsha256 = \"{digest}\"\n"
            ),
        )
        .expect("write");
        let s = load(Some(&path), &[], &[]).expect("valid");
        let roles: Vec<(&str, Role)> = s
            .api_keys
            .iter()
            .map(|k| (k.name.as_str(), k.role))
            .collect();
        assert_eq!(
            roles,
            [
                ("api_keys[0]", Role::Admin),
                ("api_keys[1]", Role::Write),
                ("reader", Role::Read)
            ]
        );
        assert_eq!(s.api_keys[2].sha256, sha256(b"test"));
        assert_eq!(s.api_keys[0].sha256, sha256(b"admin-0123456789"));
        for (entry, field) in [
            (
                "name = \"\"\nrole = \"read\"\nsha256 = \"{d}\"",
                "auth.keys[0].name",
            ),
            (
                "name = \"x\"\nrole = \"owner\"\nsha256 = \"{d}\"",
                "auth.keys[0].role",
            ),
            (
                "name = \"x\"\nrole = \"read\"\nsha256 = \"abc\"",
                "auth.keys[0].sha256",
            ),
        ] {
            std::fs::write(
                &path,
                format!("[[auth.keys]]\n{}\n", entry.replace("{d}", digest)),
            )
            .expect("write");
            let e = load(Some(&path), &[], &[]).expect_err(field);
            assert_eq!(e.key, field, "{e}");
        }
    }

    #[test]
    fn a_reachable_address_needs_keys_or_an_explicit_yes() {
        let with = |pairs: &[(&str, &str)]| {
            let overrides: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            load(None, &[], &overrides)
        };
        for wide in ["0.0.0.0:3333", "[::]:3333", "192.0.2.7:3333"] {
            let e = with(&[("listen", wide)]).expect_err(wide);
            assert_eq!(e.key, "listen", "{e}");
            assert!(e.to_string().contains("auth.allow_unauthenticated"), "{e}");
            with(&[("listen", wide), ("auth.api_keys", "0123456789")]).expect("with a key");
            let s = with(&[("listen", wide), ("auth.allow_unauthenticated", "true")])
                .expect("allowed on purpose");
            assert!(s.allow_unauthenticated && s.api_keys.is_empty());
        }
        for local in ["127.0.0.1:3333", "127.3.2.1:80", "[::1]:3333"] {
            with(&[("listen", local)]).expect(local);
        }
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
        let pairs: [(&str, String, String); 17] = [
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
            (
                "history_keep_versions",
                ours.history_keep_versions.to_string(),
                engine.history_keep_versions.to_string(),
            ),
            (
                "history_keep_for",
                format!("{:?}", ours.history_keep_for),
                format!("{:?}", engine.history_keep_for),
            ),
            (
                "history_keep_vectors",
                ours.history_keep_vectors.to_string(),
                engine.history_keep_vectors.to_string(),
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

    /// The fuzz target's committed corpus (and any crash reproducer added to it): every file
    /// gives settings or an error naming a key; the defaults file gives exactly the defaults.
    #[test]
    fn fuzz_seed_corpus() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/config_toml");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("fuzz/seeds/config_toml") {
            let path = entry.expect("dir entry").path();
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            match from_toml_str(&text, "seed.toml") {
                Ok(_) => {}
                Err(e) => assert!(
                    !e.key.is_empty(),
                    "{}: an error names its key",
                    path.display()
                ),
            }
            seen += 1;
        }
        assert!(seen >= 3);
        let defaults = std::fs::read_to_string(dir.join("defaults.toml")).expect("defaults.toml");
        // Settings has no PartialEq; its Debug form shows every field.
        assert_eq!(
            format!(
                "{:?}",
                from_toml_str(&defaults, "defaults.toml").expect("the defaults file is valid")
            ),
            format!("{:?}", load(None, &[], &[]).expect("defaults"))
        );
        let bad = std::fs::read_to_string(dir.join("bad-key.toml")).expect("bad-key.toml");
        let e = from_toml_str(&bad, "bad-key.toml").expect_err("a bad duration is refused");
        assert_eq!(e.key, "tier_migration.working_to_warm_after");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("1.5s"), None);
        assert_eq!(parse_duration("s"), None);
    }
}

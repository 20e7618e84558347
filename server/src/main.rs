//! `engramd`: parses configuration and hands over to `engram_server::serve`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Engram: a database daemon for AI-agent memories.
#[derive(Debug, Parser)]
#[command(name = "engramd", version)]
struct Cli {
    /// TOML configuration file (also ENGRAM_CONFIG).
    #[arg(long, env = "ENGRAM_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, ADDRESS:PORT (key `listen`).
    #[arg(long)]
    listen: Option<String>,
    /// Data directory (key `data_dir`).
    #[arg(long)]
    data_dir: Option<String>,
    /// Any configuration key, e.g. --set wal.sync=interval (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print every configuration key with its environment variable and default, then exit.
    #[arg(long)]
    print_config_keys: bool,
}

fn main() -> ExitCode {
    // Before any thread starts: the built-in embedder runs one single-threaded model pass per
    // worker thread (`embedding.threads` of them), which beats splitting every small matrix
    // product across the cores. candle and rayon read this variable when they run.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    let cli = Cli::parse();
    if cli.print_config_keys {
        for (key, _, default) in engram_server::config::KEYS {
            println!(
                "{key:32} {:40} default: {default}",
                engram_server::config::env_name(key)
            );
        }
        return ExitCode::SUCCESS;
    }
    let mut overrides = Vec::new();
    if let Some(l) = cli.listen {
        overrides.push(("listen".to_owned(), l));
    }
    if let Some(d) = cli.data_dir {
        overrides.push(("data_dir".to_owned(), d));
    }
    for s in &cli.set {
        match s.split_once('=') {
            Some((k, v)) => overrides.push((k.trim().to_owned(), v.to_owned())),
            None => {
                eprintln!("engramd: invalid configuration: --set {s}: expected KEY=VALUE");
                return ExitCode::from(2);
            }
        }
    }
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("ENGRAM_"))
        .collect();
    let known: Vec<String> = engram_server::config::KEYS
        .iter()
        .map(|(k, _, _)| engram_server::config::env_name(k))
        .collect();
    if let Some((name, _)) = env.iter().find(|(k, _)| {
        !known.contains(k) && k != "ENGRAM_CONFIG" && !k.starts_with("ENGRAM_FAULT_")
    }) {
        eprintln!("engramd: invalid configuration: {name}: not a configuration variable (see --print-config-keys)");
        return ExitCode::from(2);
    }
    let settings = match engram_server::config::load(cli.config.as_deref(), &env, &overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("engramd: {e}");
            return ExitCode::from(2);
        }
    };
    let fault = match std::env::var("ENGRAM_FAULT_FSYNC_FAIL_AFTER") {
        Ok(v) => match v.parse() {
            Ok(n) => Some(engram_server::fsync_failure_after(n)),
            Err(_) => {
                eprintln!("engramd: invalid configuration: ENGRAM_FAULT_FSYNC_FAIL_AFTER: expected an integer");
                return ExitCode::from(2);
            }
        },
        Err(_) => None,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.log_level));
    if settings.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("engramd-worker")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("engramd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(engram_server::serve(settings, fault)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("engramd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

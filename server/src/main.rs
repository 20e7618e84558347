//! `engramd`: parses the command line and configuration, starts logging, and hands over to
//! `engram_server::serve`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use engram_server::config::{self, CommandLine};

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
    /// Print the API's OpenAPI 3.1 document (as served at /api/v1/openapi.json), then exit.
    #[arg(long)]
    print_openapi: bool,
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
        for (key, _, default) in config::KEYS {
            println!("{key:32} {:40} default: {default}", config::env_name(key));
        }
        return ExitCode::SUCCESS;
    }
    if cli.print_openapi {
        print!("{}", engram_server::api::openapi::document_text());
        return ExitCode::SUCCESS;
    }
    let command_line = CommandLine {
        config: cli.config,
        listen: cli.listen,
        data_dir: cli.data_dir,
        set: cli.set,
    };
    let (settings, hooks) = match config::from_process(&command_line) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("engramd: {e}");
            return ExitCode::from(2);
        }
    };
    engram_server::telemetry::init(&settings);
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
    match runtime.block_on(engram_server::serve(settings, hooks)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("engramd: {e}");
            ExitCode::FAILURE
        }
    }
}

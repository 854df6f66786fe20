//! The `ifmatch` command-line tool, as a library so its parts can be tested.
//!
//! The binary (`src/main.rs`) only calls [`main`]. Commands: `get`, `put`,
//! `head`, `rm`, `ls`, `doctor`, `bench`, `serve`, `gc`, and the primitives' groups
//! `lease`, `idem`, `user`, `snapshot` and `db`, over any store URL (`--store`, or the
//! `IFMATCH_STORE` environment variable; default `file://./ifmatch-data`).
//!
//! Exit codes (see [`exit`]):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | error: store unavailable, outcome unknown, I/O error, a doctor check failed |
//! | 2 | usage: bad arguments, an invalid key, metadata or store URL |
//! | 3 | conflict: an `--if-match` or `--if-absent` condition did not hold, a lease is held by another (or you are not its owner), a user exists, an idempotency key is in progress or was used for another payload |
//! | 4 | not found: the key, lease, idempotency record, user, snapshot or snapshot version does not exist |
//!
//! Errors print as one line on standard error (`ifmatch: conflict on key 'k': ...`),
//! never as a panic or a backtrace.

#![warn(missing_docs)]

pub mod bench;
pub mod cli;
pub mod commands;
pub mod db;
pub mod doctor;
pub mod exit;
pub mod gc;
pub mod idem;
pub mod lease;
pub mod snapshot;
pub mod user;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

use crate::cli::{Cli, Command, LogFormat};
use crate::exit::Failure;

/// Parses the command line, runs the command and returns the process exit code.
pub fn main() -> ExitCode {
    // One line instead of a panic message and a backtrace, should a bug panic.
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("ifmatch: internal error{at}: {}", exit::one_line(&what));
    }));
    match std::panic::catch_unwind(run_main) {
        Ok(code) => code,
        Err(_) => ExitCode::from(exit::ERROR),
    }
}

fn run_main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = e.print();
            let _ = std::io::stdout().flush();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Failure::io("cannot start the async runtime", e).report(),
    };
    match runtime.block_on(execute(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(),
    }
}

/// Logs go to standard error; the level comes from `RUST_LOG`, default `warn`.
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::WARN.into())
        .from_env_lossy();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Opens the store named by `--store` and runs the command.
pub async fn execute(cli: &Cli) -> Result<(), Failure> {
    let store = ifmatch::store::open(&cli.store).await?;
    tracing::debug!(store = %store.describe(), "store opened");
    match &cli.command {
        Command::Get(a) => commands::get(&store, a).await,
        Command::Put(a) => commands::put(&store, a).await,
        Command::Head(a) => commands::head(&store, a).await,
        Command::Rm(a) => commands::rm(&store, a).await,
        Command::Ls(a) => commands::ls(&store, a).await,
        Command::Doctor(a) => {
            let report = doctor::run(store).await;
            let text = if a.json {
                let mut s = serde_json::to_string_pretty(&report).map_err(|e| {
                    Failure::Store(ifmatch::Error::msg(format!(
                        "cannot render the report: {e}"
                    )))
                })?;
                s.push('\n');
                s
            } else {
                report.render_table()
            };
            commands::write_stdout(text.as_bytes())?;
            if report.passed {
                Ok(())
            } else {
                Err(Failure::Reported(exit::ERROR))
            }
        }
        Command::Lease(c) => lease::run(&store, c).await,
        Command::Idem(c) => idem::run(&store, c).await,
        Command::User(c) => user::run(&store, c).await,
        Command::Snapshot(c) => snapshot::run(&store, c).await,
        Command::Db(c) => db::run(&store, c).await,
        Command::Bench(a) => {
            let text = bench::run(store, a).await?;
            commands::write_stdout(text.as_bytes())
        }
        Command::Gc(a) => gc::run(&store, a).await,
        Command::Serve(a) => serve(store, &cli.store, a).await,
    }
}

/// `ifmatch serve`: the HTTP server on the opened store, until SIGTERM or ctrl-c.
async fn serve(store: ifmatch::DynStore, url: &str, a: &cli::ServeArgs) -> Result<(), Failure> {
    // Without --db-cache, a private directory that goes away with the server.
    let (db_cache, temporary) = match &a.db_cache {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("ifmatch-serve-db-{}", std::process::id())),
            true,
        ),
    };
    let defaults = ifmatch_server::ServerConfig::default();
    let hash_workers = a.hash_workers.map_or(defaults.hash_workers, |n| n as usize);
    let hash_queue = a.hash_queue.map_or(hash_workers * 8, |n| n as usize);
    let login_throttle = ifmatch::accounts::ThrottleConfig {
        per_username: ifmatch::accounts::Backoff {
            free_failures: a.login_free_failures,
            max: std::time::Duration::from_secs(a.login_max_backoff_user),
            ..defaults.login_throttle.per_username
        },
        per_address: ifmatch::accounts::Backoff {
            free_failures: a.login_free_failures_address,
            max: std::time::Duration::from_secs(a.login_max_backoff_address),
            ..defaults.login_throttle.per_address
        },
        ..defaults.login_throttle
    };
    let client_ip_header = match &a.client_ip_header {
        Some(h) => Some(
            http::HeaderName::try_from(h.as_str())
                .map_err(|e| Failure::Usage(format!("--client-ip-header {h:?}: {e}")))?,
        ),
        None => None,
    };
    // DynamoDB removes expired records by TTL: no sweeper there unless asked.
    let gc_interval = a.gc_interval.unwrap_or(if url.starts_with("dynamodb://") {
        0
    } else {
        60
    });
    let gc = (gc_interval > 0).then(|| ifmatch_server::sweeper::GcSchedule {
        interval: std::time::Duration::from_secs(gc_interval),
        budget: a.gc_budget as usize,
    });
    let config = ifmatch_server::ServerConfig {
        api_key: a.api_key.clone(),
        require_preconditions: a.require_preconditions,
        body_limit: a.body_limit,
        request_timeout: std::time::Duration::from_secs(a.request_timeout),
        open_registration: a.open_registration,
        user_prefixes: a.user_prefixes,
        session_ttl: std::time::Duration::from_secs(a.session_ttl),
        db_cache_dir: Some(db_cache.clone()),
        sandbox: ifmatch::tenantdb::Sandbox {
            time_limit: std::time::Duration::from_millis(a.sql_time_limit),
            max_rows: a.sql_max_rows,
            ..defaults.sandbox.clone()
        },
        hash_workers,
        hash_queue,
        login_throttle,
        client_ip_header,
        gc,
        db_max_commit_bytes: a.db_max_commit_bytes,
        db_max_bytes: a.db_max_bytes,
        ..defaults
    };
    let server_failure = |e: ifmatch_server::ServerError| match e {
        ifmatch_server::ServerError::Bind { source, .. }
        | ifmatch_server::ServerError::Serve(source) => Failure::io("server", source),
        other => Failure::Usage(other.to_string()),
    };
    let state = ifmatch_server::AppState::new(store, config.clone()).map_err(server_failure)?;
    let result = async {
        let listener = ifmatch_server::bind(a.listen, &config)
            .await
            .map_err(server_failure)?;
        let addr = listener
            .local_addr()
            .map_err(|e| Failure::io("server address", e))?;
        eprintln!(
            "ifmatch: serving {} on http://{addr}",
            state.store().describe()
        );
        ifmatch_server::serve(listener, state, ifmatch_server::shutdown_signal())
            .await
            .map_err(server_failure)
    }
    .await;
    if temporary {
        let _ = std::fs::remove_dir_all(&db_cache);
    }
    result
}

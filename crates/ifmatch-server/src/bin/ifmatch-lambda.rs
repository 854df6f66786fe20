//! The ifmatch HTTP server as an AWS Lambda function (`bootstrap` of a custom runtime).
//!
//! Configured by `IFMATCH_STORE`, `IFMATCH_API_KEY` and optionally
//! `IFMATCH_REQUIRE_PRECONDITIONS=1`, `IFMATCH_OPEN_REGISTRATION=1`,
//! `IFMATCH_USER_PREFIXES=1` and `IFMATCH_DB_CACHE` (see
//! `ifmatch_server::lambda`); logs go to standard error (CloudWatch).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .json()
        .with_writer(std::io::stderr)
        .try_init();
    match ifmatch_server::lambda::run_from_env().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ifmatch-lambda: {e}");
            ExitCode::FAILURE
        }
    }
}

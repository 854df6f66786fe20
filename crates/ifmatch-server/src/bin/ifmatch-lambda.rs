//! The ifmatch HTTP server as an AWS Lambda function (`bootstrap` of a custom runtime).
//!
//! Configured by `IFMATCH_STORE` and `IFMATCH_API_KEY_SECRET_ARN` (the
//! operator key's Secrets Manager secret, read at cold start; or
//! `IFMATCH_API_KEY` for local runs) and optionally
//! `IFMATCH_REQUIRE_PRECONDITIONS=1`, `IFMATCH_OPEN_REGISTRATION=1`,
//! `IFMATCH_USER_PREFIXES=1`, `IFMATCH_DB_CACHE` and `IFMATCH_METRICS_NAMESPACE`
//! (see `ifmatch_server::lambda`). Logs go to standard error as JSON, metrics
//! to standard output as CloudWatch Embedded Metric Format lines; CloudWatch
//! Logs keeps both. `deploy/aws/` builds and deploys it.

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

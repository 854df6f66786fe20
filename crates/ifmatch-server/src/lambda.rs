//! The same router as an AWS Lambda function behind API Gateway (HTTP API, payload v2),
//! through `lambda_http` (feature `lambda`, off by default).
//!
//! A Lambda function URL or API Gateway endpoint is reachable from anywhere,
//! so [`run`] refuses to start without an operator key. Configuration comes
//! from the environment in [`config_from_env`]: `IFMATCH_STORE` (the store URL),
//! `IFMATCH_API_KEY` (the operator key) and, optionally,
//! `IFMATCH_REQUIRE_PRECONDITIONS=1`, `IFMATCH_OPEN_REGISTRATION=1`,
//! `IFMATCH_USER_PREFIXES=1` and `IFMATCH_DB_CACHE` (the tenant database
//! cache directory; default `/tmp/ifmatch-db-cache`, Lambda's writable disk).
//!
//! The failed-login back-off takes the client's address from
//! `X-Forwarded-For` (its last address, the one API Gateway appends). Its
//! counts live in each instance's memory, so they are per instance. No
//! background sweeper runs between invocations: expired records are removed
//! by DynamoDB's TTL or by a scheduled `ifmatch gc`.

use ifmatch::DynStore;

use crate::{AppState, ServerConfig, ServerError, router};

/// Why the Lambda function could not start.
#[derive(Debug, thiserror::Error)]
pub enum LambdaError {
    /// No operator key: a Lambda endpoint is not loopback.
    #[error("refusing to run as a Lambda function without an operator key (IFMATCH_API_KEY)")]
    NoKey,
    /// `IFMATCH_STORE` is not set.
    #[error("IFMATCH_STORE is not set: give the store URL, e.g. s3://bucket/prefix")]
    NoStore,
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] ifmatch::Error),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ServerError),
    /// The Lambda runtime failed.
    #[error("lambda runtime: {0}")]
    Runtime(lambda_http::Error),
}

/// The server configuration from the environment (see the module docs).
pub fn config_from_env() -> ServerConfig {
    let flag =
        |name: &str| std::env::var(name).is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "yes"));
    let db_cache = std::env::var("IFMATCH_DB_CACHE")
        .ok()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/tmp/ifmatch-db-cache".to_string());
    ServerConfig {
        api_key: std::env::var("IFMATCH_API_KEY")
            .ok()
            .filter(|k| !k.is_empty()),
        require_preconditions: flag("IFMATCH_REQUIRE_PRECONDITIONS"),
        open_registration: flag("IFMATCH_OPEN_REGISTRATION"),
        user_prefixes: flag("IFMATCH_USER_PREFIXES"),
        db_cache_dir: Some(db_cache.into()),
        client_ip_header: Some(http::HeaderName::from_static("x-forwarded-for")),
        ..ServerConfig::default()
    }
}

/// Opens `IFMATCH_STORE` and serves Lambda invocations until the runtime stops.
pub async fn run_from_env() -> Result<(), LambdaError> {
    let url = std::env::var("IFMATCH_STORE").map_err(|_| LambdaError::NoStore)?;
    let store = ifmatch::store::open(&url).await?;
    run(store, config_from_env()).await
}

/// Serves Lambda invocations with the router on `store`.
pub async fn run(store: DynStore, config: ServerConfig) -> Result<(), LambdaError> {
    if config.api_key.is_none() {
        return Err(LambdaError::NoKey);
    }
    let state = AppState::new(store, config)?;
    lambda_http::run(router(state))
        .await
        .map_err(LambdaError::Runtime)
}

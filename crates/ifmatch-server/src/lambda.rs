//! The same router as an AWS Lambda function behind API Gateway (HTTP API, payload v2),
//! through `lambda_http` (feature `lambda`, off by default).
//!
//! A Lambda function URL or API Gateway endpoint is reachable from anywhere,
//! so [`run`] refuses to start without an operator key.
//!
//! # Configuration (environment, read once at cold start)
//!
//! - `IFMATCH_STORE`: the store URL (required);
//! - `IFMATCH_API_KEY_SECRET_ARN`: the ARN of a Secrets Manager secret whose
//!   string is the operator key, fetched once per cold start with
//!   `secretsmanager:GetSecretValue` ([`operator_key_from_secret`]) while the
//!   store opens, so the key never sits in the function's configuration;
//!   otherwise `IFMATCH_API_KEY` (the key itself: for local runs);
//! - optionally `IFMATCH_REQUIRE_PRECONDITIONS=1`, `IFMATCH_OPEN_REGISTRATION=1`,
//!   `IFMATCH_USER_PREFIXES=1` and `IFMATCH_DB_CACHE` (the tenant database
//!   cache directory; default `/tmp/ifmatch-db-cache`, Lambda's writable disk);
//! - `IFMATCH_METRICS_NAMESPACE`: the CloudWatch namespace of the metrics
//!   (default `ifmatch`); every metric carries the dimension `FunctionName`
//!   (from `AWS_LAMBDA_FUNCTION_NAME`).
//!
//! The failed-login back-off takes the client's address from
//! `X-Forwarded-For` (its last address, the one API Gateway appends). Its
//! counts live in each instance's memory, so they are per instance. No
//! background sweeper runs between invocations: expired records are removed
//! by DynamoDB's TTL or by a scheduled `ifmatch gc`.
//!
//! # Metrics
//!
//! [`run_from_env`] installs the [`crate::emf`] recorder, and after every
//! invocation [`invoke`] writes the metrics of that invocation to stdout as
//! CloudWatch Embedded Metric Format lines (logs go to stderr), which
//! CloudWatch Logs turns into metrics without any API call from the function.

use std::io::Write;

use axum::Router;
use axum::response::Response;
use ifmatch::DynStore;
use ifmatch::clock::DynClock;
use lambda_http::Service;

use crate::emf::{EmfConfig, EmfHandle, EmfRecorder};
use crate::{AppState, ServerConfig, ServerError, router};

/// The environment variable naming the operator key's Secrets Manager secret.
pub const SECRET_ARN_ENV: &str = "IFMATCH_API_KEY_SECRET_ARN";

/// Why the Lambda function could not start.
#[derive(Debug, thiserror::Error)]
pub enum LambdaError {
    /// No operator key: a Lambda endpoint is not loopback.
    #[error(
        "refusing to run as a Lambda function without an operator key (IFMATCH_API_KEY_SECRET_ARN or IFMATCH_API_KEY)"
    )]
    NoKey,
    /// `IFMATCH_STORE` is not set.
    #[error("IFMATCH_STORE is not set: give the store URL, e.g. s3://bucket/prefix")]
    NoStore,
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] ifmatch::Error),
    /// The operator key could not be read from Secrets Manager.
    #[error("cannot read the operator key from secret {arn}: {message}")]
    Secret {
        /// The secret's ARN (or name).
        arn: String,
        /// Why.
        message: String,
    },
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ServerError),
    /// The Lambda runtime failed.
    #[error("lambda runtime: {0}")]
    Runtime(lambda_http::Error),
}

/// The server configuration from the environment (see the module docs); the
/// operator key is `IFMATCH_API_KEY` here, replaced by the secret in [`run_from_env`].
pub fn config_from_env() -> ServerConfig {
    let flag =
        |name: &str| std::env::var(name).is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "yes"));
    let db_cache = std::env::var("IFMATCH_DB_CACHE")
        .ok()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/tmp/ifmatch-db-cache".to_string());
    ServerConfig {
        api_key: non_empty_env("IFMATCH_API_KEY"),
        require_preconditions: flag("IFMATCH_REQUIRE_PRECONDITIONS"),
        open_registration: flag("IFMATCH_OPEN_REGISTRATION"),
        user_prefixes: flag("IFMATCH_USER_PREFIXES"),
        db_cache_dir: Some(db_cache.into()),
        client_ip_header: Some(http::HeaderName::from_static("x-forwarded-for")),
        ..ServerConfig::default()
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Reads the operator key from the Secrets Manager secret `arn` (its
/// `SecretString`, surrounding whitespace removed) with the credentials and
/// region of `sdk` (on Lambda: the function's role). An empty secret is an error.
pub async fn operator_key_from_secret(
    sdk: &aws_config::SdkConfig,
    arn: &str,
) -> Result<String, LambdaError> {
    let fail = |message: String| LambdaError::Secret {
        arn: arn.to_string(),
        message,
    };
    let client = aws_sdk_secretsmanager::Client::new(sdk);
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| fail(aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string()))?;
    let key = out
        .secret_string()
        .ok_or_else(|| fail("the secret has no string value".into()))?
        .trim();
    if key.is_empty() {
        return Err(fail("the secret's string is empty".into()));
    }
    Ok(key.to_string())
}

/// The operator key: from the secret named by `IFMATCH_API_KEY_SECRET_ARN`
/// if set, else `IFMATCH_API_KEY`, else `None`.
pub async fn operator_key_from_env() -> Result<Option<String>, LambdaError> {
    match non_empty_env(SECRET_ARN_ENV) {
        Some(arn) => {
            let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .load()
                .await;
            operator_key_from_secret(&sdk, &arn).await.map(Some)
        }
        None => Ok(non_empty_env("IFMATCH_API_KEY")),
    }
}

/// Opens `IFMATCH_STORE` and reads the operator key (at the same time), installs
/// the EMF metrics recorder and serves Lambda invocations until the runtime stops.
pub async fn run_from_env() -> Result<(), LambdaError> {
    let started = std::time::Instant::now();
    let url = std::env::var("IFMATCH_STORE").map_err(|_| LambdaError::NoStore)?;
    let (store, key) = tokio::try_join!(
        async { ifmatch::store::open(&url).await.map_err(LambdaError::from) },
        operator_key_from_env(),
    )?;
    let mut config = config_from_env();
    config.api_key = key;
    let mut emf_config = EmfConfig::default().with_dimension(
        "FunctionName",
        non_empty_env("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|| "ifmatch".into()),
    );
    if let Some(ns) = non_empty_env("IFMATCH_METRICS_NAMESPACE") {
        emf_config.namespace = ns;
    }
    let emf = match EmfRecorder::install(emf_config) {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(error = %e, "cannot install the EMF metrics recorder; no metrics");
            None
        }
    };
    tracing::info!(
        store = %store.describe(),
        init_ms = started.elapsed().as_secs_f64() * 1000.0,
        "ready"
    );
    serve(store, config, emf).await
}

/// Serves Lambda invocations with the router on `store` (no metrics flushing).
pub async fn run(store: DynStore, config: ServerConfig) -> Result<(), LambdaError> {
    serve(store, config, None).await
}

/// Serves Lambda invocations with the router on `store`, flushing `emf` to
/// stdout after each one.
pub async fn serve(
    store: DynStore,
    config: ServerConfig,
    emf: Option<EmfHandle>,
) -> Result<(), LambdaError> {
    if config.api_key.is_none() {
        return Err(LambdaError::NoKey);
    }
    let clock = config.clock.clone();
    let state = AppState::new(store, config)?;
    let app = router(state);
    let handler = lambda_http::service_fn(move |req: lambda_http::Request| {
        let app = app.clone();
        let emf = emf.clone();
        let clock = clock.clone();
        async move {
            let resp = invoke(&app, emf.as_ref(), &clock, req, &mut std::io::stdout()).await;
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    lambda_http::run(handler)
        .await
        .map_err(LambdaError::Runtime)
}

/// Answers one request with `app`, then writes the metrics recorded since the
/// last flush to `out` as EMF lines stamped with `clock`'s time. A failed
/// write is logged, never the request's failure.
pub async fn invoke(
    app: &Router,
    emf: Option<&EmfHandle>,
    clock: &DynClock,
    req: lambda_http::Request,
    out: &mut impl Write,
) -> Response {
    let mut app = app.clone();
    let resp = match app.call(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    if let Some(emf) = emf
        && let Err(e) = emf.flush(clock.now_ms(), out)
    {
        tracing::warn!(error = %e, "cannot write the EMF metrics");
    }
    resp
}

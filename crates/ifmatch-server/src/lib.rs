//! # ifmatch-server
//!
//! The HTTP interface of ifmatch: conditional GET / HEAD / PUT / PATCH /
//! DELETE of versioned keys over any store, with standard HTTP preconditions
//! (RFC 9110 §13: `ETag`, `If-Match`, `If-None-Match`), so a browser, a
//! script or a Lambda function gets compare-and-swap with plain HTTP.
//!
//! The interface is thin: a handler parses the request, calls one function of
//! [`objects`] (which maps preconditions onto the store's conditional writes
//! and the update loop) and renders the answer.
//!
//! ## Routes
//!
//! | method | path | what |
//! |---|---|---|
//! | GET, HEAD | `/v1/objects/{key}` | the value with its strong `ETag`; 304 on a matching `If-None-Match` |
//! | PUT | `/v1/objects/{key}` | write; 201 (created) or 200 (updated) with the new `ETag` |
//! | PATCH | `/v1/objects/{key}` | merge-patch or JSON patch; 200 with the new value and `ETag` |
//! | DELETE | `/v1/objects/{key}` | delete; 204 |
//! | GET | `/healthz` | liveness |
//! | GET | `/metrics` | Prometheus text format |
//! | GET | `/openapi.json` | the OpenAPI document of these routes |
//!
//! Every `/v1` route requires `Authorization: Bearer <operator key>` when the
//! server has one ([`ServerConfig::api_key`]); without one it only listens on
//! a loopback address ([`bind`]). Errors are JSON ([`error`]).
//!
//! With the `lambda` feature, [`lambda::run`] serves the same router as an
//! AWS Lambda function behind API Gateway (HTTP API, payload v2).

#![warn(missing_docs)]

pub mod auth;
pub mod error;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod precondition;
pub mod routes;
pub mod telemetry;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ifmatch::DynStore;
use ifmatch::retry::RetryPolicy;
use tokio::net::TcpListener;

pub use routes::router;

/// The default request body limit: 16 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// The default request timeout: 30 seconds.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How the server behaves.
#[derive(Clone)]
pub struct ServerConfig {
    /// The operator key every `/v1` request must present as a bearer token
    /// (`None`: no authentication, allowed on loopback addresses only).
    pub api_key: Option<String>,
    /// Refuse (428) a PUT or DELETE of an existing key without `If-Match` / `If-None-Match`.
    pub require_preconditions: bool,
    /// The largest request body accepted, in bytes (413 beyond).
    pub body_limit: usize,
    /// The longest a request may take (504 beyond).
    pub request_timeout: Duration,
    /// The retry budget of the update loop behind PATCH without `If-Match`.
    pub retry: RetryPolicy,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            api_key: None,
            require_preconditions: false,
            body_limit: DEFAULT_BODY_LIMIT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            // Many concurrent patches of one key are the point of the loop:
            // a larger attempt budget than the library's, within the request timeout.
            retry: RetryPolicy::default()
                .with_max_attempts(64)
                .with_delays(Duration::from_millis(2), Duration::from_millis(250))
                .with_deadline(Some(Duration::from_secs(20))),
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("require_preconditions", &self.require_preconditions)
            .field("body_limit", &self.body_limit)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No operator key, and the address is reachable from other machines.
    #[error(
        "refusing to listen on {0} without an operator key: set --api-key or IFMATCH_API_KEY, or listen on a loopback address such as 127.0.0.1"
    )]
    NoKeyOffLoopback(SocketAddr),
    /// The operator key is empty.
    #[error("the operator key is empty")]
    EmptyKey,
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// What every handler shares: the store and the configuration.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: DynStore,
    config: ServerConfig,
    key: Option<auth::OperatorKey>,
}

impl AppState {
    /// The state of a server on `store` with `config`.
    pub fn new(store: DynStore, config: ServerConfig) -> Result<Self, ServerError> {
        let key = match &config.api_key {
            Some(k) if k.is_empty() => return Err(ServerError::EmptyKey),
            Some(k) => Some(auth::OperatorKey::new(k)),
            None => None,
        };
        Ok(AppState {
            inner: Arc::new(Inner { store, config, key }),
        })
    }
    /// The store.
    pub fn store(&self) -> &DynStore {
        &self.inner.store
    }
    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }
    /// The operator key, if any.
    pub fn operator_key(&self) -> Option<&auth::OperatorKey> {
        self.inner.key.as_ref()
    }
}

/// Binds `addr`, refusing a non-loopback address when there is no operator key
/// (and saying so in the log when there is none on loopback).
pub async fn bind(addr: SocketAddr, config: &ServerConfig) -> Result<TcpListener, ServerError> {
    if config.api_key.is_none() {
        if !addr.ip().is_loopback() {
            return Err(ServerError::NoKeyOffLoopback(addr));
        }
        tracing::warn!(
            %addr,
            "no operator key (--api-key / IFMATCH_API_KEY): /v1 is open to every local process; listening on loopback only"
        );
    }
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Serves `state` on `listener` until `shutdown` completes, then stops accepting
/// connections and returns once the requests in flight have been answered.
///
/// HTTP/1.1 only. A client must send its whole request head within
/// [`ServerConfig::request_timeout`] (also while a kept-alive connection is
/// idle), or the connection is closed: a slow client (slowloris) cannot hold
/// a connection forever. (`axum::serve` sets no timer, which leaves hyper's
/// header timeout off.)
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let head_timeout = state.config().request_timeout;
    let app = router(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors, say: wait instead of spinning.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(head_timeout)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Completes on ctrl-c (SIGINT) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing the requests in flight");
}
